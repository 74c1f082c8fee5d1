r"""Learned vs exact flows on known mixtures: does a trained network inherit the instability of its data law?

Ground truth is known here, which no study on SD3.5 can offer (docs/theory.md §10.8). Three cells of the
Theorem 4.3 experiment's geometry (:mod:`simulate.experiments.thm43.geometry`; boxes of side ``side``):

* ``sparse``: two boxes on the diagonal, per-coordinate gap ``g = 8 sigma``, ``sigma = 0.05`` (the exact
  flow is unstable at ``x ~ p_r = U[0, 1]^n``: ``P_inst(1) -> 1``, §11.5);
* ``undetermined``: the same with ``g = 2 sigma`` (§11.5's undetermined cells);
* ``single``: the single-box control at ``sigma = 0.1`` (``P_inst(1) = 0`` at every ``n``).

Per regime and dimension ``n``: the exact field ``p_g`` (:class:`simulate.fields.BoxMixture`, float64); a small
MLP velocity net trained on samples of ``p_g`` at each training budget (:mod:`.training`, cached and resumable;
shipped with the package at the quick scale, :mod:`.shipped`);
and the negative control, the exact field with ``sigma`` multiplied by ``control_sigma_factor`` posing as the
learned model (in the ``control_regime`` only). At the same points -- ``points`` draws of ``p_r = U[0, 1]^n``
(Theorem 4.3's law, where the exact instability lives) and ``points`` held-out draws of ``p_g`` -- and the same
noise, each field is measured by :func:`.measure.measure_field` (reconstruction errors at ``N`` Euler steps,
``lambda`` by JVP, ``mu_bar``, ``(1/n) log Lambda_G(F(x))``, log density). One unit of work per
``(regime, n, model)`` is recorded in ``records.jsonl`` (:class:`simulate.store.RecordStore`): a rerun resumes.
:mod:`.judge` decides, :mod:`.figures` draws.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.thm43.geometry import Cell, boxes_for
from theory._validate import require_int

from largemodel.experiments.learned_vs_exact.training import NetSpec

__all__ = ["NAME", "CLAIM_IDS", "REGIMES", "LAWS", "LearnedOptions", "FAST", "FULL", "make_options", "exact_field",
           "data_points", "model_names", "compute_unit", "run"]

NAME = "learned_vs_exact"
CLAIM_IDS = ["learned_vs_exact"]

#: the regimes: a cell of the Theorem 4.3 geometry each
REGIMES: dict[str, Cell] = {
    "sparse": Cell("diagonal", 0.05, 2, 8.0),
    "undetermined": Cell("diagonal", 0.05, 2, 2.0),
    "single": Cell("single", 0.1, 1),
}
#: the two point laws: Theorem 4.3's ``p_r = U[0, 1]^n`` and held-out draws of ``p_g``
LAWS = ("p_r", "p_g")
#: option fields that do not change any unit's record (left out of the store's signature)
_JUDGE_ONLY = ("regimes", "ns", "threads", "n_boot", "level", "tau")


@dataclass(frozen=True)
class LearnedOptions:
    """Options of the learned-vs-exact experiment (validated on construction).

    Grid: ``regimes`` (names of :data:`REGIMES`), ``ns``, ``side`` (box side). Points: ``points`` per law.
    Measurement: ``steps`` (Euler ``N`` of the reconstructions; the first also for ``lambda`` and ``mu_bar``),
    ``perturbations`` (``K``), ``eps_rms`` (``||D|| = eps_rms sqrt(n)``), ``rtol`` / ``atol`` (dopri5 of ``F``).
    Learned net (:class:`.training.NetSpec`): ``width``, ``freqs``, ``budgets`` (training steps, nested),
    ``batch_size``, ``lr``, ``warmup``, ``ema_decay``, ``sigma_sampling``, ``seed``. Control: ``control_regime``,
    ``control_sigma_factor``. Judge: ``tau``, ``level`` (:mod:`simulate.decide`), ``n_boot``. ``threads``: torch
    CPU threads during the run (0 keeps torch's).
    """

    regimes: tuple[str, ...] = ("sparse", "undetermined", "single")
    ns: tuple[int, ...] = (16, 64)
    side: float = 0.1
    points: int = 20
    steps: tuple[int, ...] = (50,)
    perturbations: int = 8
    eps_rms: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-7
    width: int = 96
    freqs: int = 8
    budgets: tuple[int, ...] = (200, 800)
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 50
    ema_decay: float = 0.99
    sigma_sampling: str = "uniform"
    seed: int = 0
    control_regime: str = "sparse"
    control_sigma_factor: float = 3.0
    tau: float = 1.0
    level: float = 0.2
    n_boot: int = 500
    threads: int = 1

    def __post_init__(self) -> None:
        from largemodel.training.options import SIGMA_SAMPLINGS

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        unknown = [r for r in self.regimes if r not in REGIMES]
        if not self.regimes or unknown:
            raise ValueError(f"regimes must name some of {', '.join(REGIMES)}, got {self.regimes!r}")
        put("regimes", tuple(r for r in REGIMES if r in self.regimes))
        if self.control_regime not in self.regimes:
            raise ValueError(f"control_regime must be one of the regimes {self.regimes}, got {self.control_regime!r}")
        for name in ("ns", "steps", "budgets"):
            values = tuple(sorted({require_int(name, v) for v in getattr(self, name)}))
            if not values:
                raise ValueError(f"{name} must name at least one positive integer")
            put(name, values)
        for name, low in (("points", 3), ("perturbations", 1), ("width", 1), ("freqs", 1), ("batch_size", 1),
                          ("warmup", 0), ("seed", 0), ("n_boot", 100), ("threads", 0)):
            put(name, require_int(name, getattr(self, name), low))
        for name in ("side", "eps_rms", "rtol", "atol", "lr", "tau", "control_sigma_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
            put(name, float(value))
        if not self.side < 0.5:
            raise ValueError(f"side must lie in (0, 0.5) (boxes in the unit cube), got {self.side}")
        if self.control_sigma_factor == 1.0:
            raise ValueError("control_sigma_factor must differ from 1 (the control is the exact field with a wrong sigma)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not 0.0 < float(self.level) < 0.5:
            raise ValueError(f"level must lie in (0, 0.5), got {self.level!r}")
        if self.sigma_sampling not in SIGMA_SAMPLINGS:
            raise ValueError(f"sigma_sampling must be one of {', '.join(SIGMA_SAMPLINGS)}, got {self.sigma_sampling!r}")

    def net_spec(self) -> NetSpec:
        """The training configuration of the learned nets."""
        return NetSpec(width=self.width, freqs=self.freqs, budgets=self.budgets, batch_size=self.batch_size,
                       lr=self.lr, warmup=self.warmup, ema_decay=float(self.ema_decay),
                       sigma_sampling=self.sigma_sampling, seed=self.seed)


#: the quick scale: the nets are shipped with the package (:mod:`.shipped`: nothing is trained on a first run), the
#: reconstructions use ``N = 50`` only (``N = 500`` enters no verdict, table row or figure; its Euler solves took
#: about 19 of the section's 70 CPU seconds) and dopri5 runs at rtol 1e-5 / atol 1e-7 (no ``ell`` moves by more than
#: 2.6e-4; docs/theory.md §10.8); the full scale keeps ``N = 50, 500`` and rtol 1e-6 / atol 1e-8
FAST = LearnedOptions()
FULL = dataclasses.replace(FAST, ns=(16, 64, 256), points=64, steps=(50, 500), rtol=1e-6, atol=1e-8, width=256,
                           budgets=(500, 2000, 8000), batch_size=256, n_boot=2000)


def make_options(full: bool = False, **overrides: Any) -> LearnedOptions:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def exact_field(regime: str, n: int, opts: LearnedOptions, sigma_factor: float = 1.0) -> Any:
    """The exact ``p_g`` of ``regime`` in dimension ``n`` (float64 :class:`simulate.fields.BoxMixture`), with
    ``sigma`` multiplied by ``sigma_factor`` (the negative control; the boxes stay where they are)."""
    import numpy as np

    from simulate.fields import BoxMixture

    cell = REGIMES[regime]
    boxes = boxes_for(cell, n, opts.side, np.random.default_rng(0))  # diagonal / single: no randomness
    m = cell.m
    return BoxMixture(torch.as_tensor(boxes.lower), torch.as_tensor(boxes.upper), torch.full((m,), 1.0 / m),
                      cell.sigma * sigma_factor, dtype=torch.float64)


def _seed(opts: LearnedOptions, regime: str, n: int) -> int:
    return 1_000_003 * opts.seed + 10_007 * list(REGIMES).index(regime) + n


def data_points(regime: str, n: int, opts: LearnedOptions) -> torch.Tensor:
    """The points of ``(regime, n)``: ``points`` rows ``x ~ U[0, 1]^n`` (``p_r``), then ``points`` held-out
    rows ``x ~ p_g`` (a generator of their own: independent of the training samples), float64."""
    gen = torch.Generator().manual_seed(_seed(opts, regime, n))
    x_r = torch.rand(opts.points, n, generator=gen, dtype=torch.float64)
    return torch.cat([x_r, exact_field(regime, n, opts).sample(opts.points, gen)])


def model_names(regime: str, n: int, opts: LearnedOptions) -> list[str]:
    """``exact``, ``learned@<budget>`` per budget, and ``control`` in the control regime at the largest ``n``
    (where the judge reads it)."""
    control = regime == opts.control_regime and n == max(opts.ns)
    return ["exact", *(f"learned@{b}" for b in opts.budgets), *(["control"] if control else [])]


def compute_unit(regime: str, n: int, model: str, opts: LearnedOptions) -> dict[str, Any]:
    """The record of one ``(regime, n, model)``: :func:`.measure.measure_field` at :func:`data_points`, with the
    same seeds for every model; the exact field by the density ratio, the others by the divergence integral."""
    from largemodel.experiments.learned_vs_exact.measure import measure_field
    from largemodel.experiments.learned_vs_exact.model import NetField
    from largemodel.experiments.learned_vs_exact.training import trained_nets

    x = data_points(regime, n, opts)
    extra: dict[str, Any] = {}
    if model == "exact":
        field, how = exact_field(regime, n, opts), "density_ratio"
    elif model == "control":
        field, how = exact_field(regime, n, opts, opts.control_sigma_factor), "divergence"
    else:
        budget = int(model.split("@", 1)[1])
        nets, meta = trained_nets(exact_field(regime, n, opts), opts.net_spec(), regime)
        field, how = NetField(nets[budget], n), "divergence"
        extra = {"budget": budget, "train_loss": meta["loss_at_budget"][str(budget)],
                 "train_seconds": meta["train_seconds"]}
    rec = measure_field(field, x, log_lambda=how, steps=opts.steps, perturbations=opts.perturbations,
                        eps_rms=opts.eps_rms, rtol=opts.rtol, atol=opts.atol, seed=_seed(opts, regime, n) + 7)
    return {"regime": regime, "n": n, "model": model, "points": opts.points, **extra, **rec}


def unit_key(regime: str, n: int, model: str) -> str:
    return f"{regime}:n={n}:{model}"


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        **overrides: Any) -> ExperimentResult:
    """Measure (resuming), judge, draw, write ``out_dir / "result.json"``; return the result.

    ``numbers`` (:func:`.judge.judge`): per regime and ``n`` the ``P_inst`` of every model with its interval,
    the paired gaps and Spearman correlations, the density error; ``claim_verdicts``: ``learned_vs_exact``.

    Raises:
        ValueError: a bad override (before anything runs).
    """
    from simulate.experiments.runner import sweep

    from largemodel.experiments.learned_vs_exact.figures import draw_figures
    from largemodel.experiments.learned_vs_exact.judge import judge

    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    root = Path(out_dir)
    t0 = time.perf_counter()
    params = {k: v for k, v in dataclasses.asdict(opts).items() if k not in _JUDGE_ONLY}
    store = RecordStore(root, {"experiment": NAME, **params})
    units = [(unit_key(r, n, m), partial(compute_unit, r, n, m, opts))
             for r in opts.regimes for n in opts.ns for m in model_names(r, n, opts)]
    step(f"learned_vs_exact: {len(units)} units ({', '.join(opts.regimes)}; n = {', '.join(map(str, opts.ns))}; "
         f"budgets {', '.join(map(str, opts.budgets))} steps)")
    sweep(store, units, desc=NAME, progress=False, threads=opts.threads)
    records = {r: {n: {m: store.get(unit_key(r, n, m)) for m in model_names(r, n, opts)} for n in opts.ns}
               for r in opts.regimes}
    judged = judge(opts, records)
    figures = draw_figures(root, opts, judged.numbers)
    judged.numbers["claim_figures"] = {"learned_vs_exact": list(figures)}
    result = ExperimentResult(
        name=NAME, claim_ids=list(CLAIM_IDS), verdict=judged.overall, params={"full": full, **dataclasses.asdict(opts)},
        numbers=judged.numbers, figures=list(figures), seconds=time.perf_counter() - t0,
        claim_verdicts=dict(judged.claims))
    write_result(root, result)
    return result
