r"""Lemma D.1: ``Lambda_G`` by density ratio, divergence integral and slogdet agree (docs/theory.md §6.1).

``G`` pushes ``phi = N(0, I_n)`` to ``p_g``, so ``n log Lambda_G(z) = log |det J_G(z)|`` can be
computed three independent ways:

* density ratio: ``log phi(z) - log p_g(G(z))`` (one dopri5 solve, the field's exact ``log p_g``);
* divergence integral: ``int_0^1 div v(x_t, t) dt`` accumulated along a separate dopri5 solve;
* slogdet: ``log |det J|`` of the Jacobian of the generation map, by central finite differences
  (step ``fd_step``) of an RK4 map on a grid refined towards ``t = 1`` (``rk4_steps`` steps,
  ``t_k = 1 - (1 - k/N)^grid_power``); ``2 n`` perturbed solves, all batched; ``n <= slogdet_max_n``.

For each field kind (a Gaussian mixture and a box mixture; a single Gaussian for the closed-form
check ``Lambda = s``) and each dimension ``n`` the experiment draws ``points`` noises ``z ~ N(0, I)``
and records ``max_z |log Lambda_a(z) - log Lambda_b(z)|`` for every pair of methods. The
tolerance is tied to the solver accuracy: ``tol = tol_factor * rtol`` (``1e-6`` by default,
dopri5 ``rtol = 1e-8``, ``atol = 1e-10``). The slogdet route is additionally checked for its own
RK4 error (Richardson: ``|slogdet(N) - slogdet(N/2)| / 15``, reported per unit). ``fd_step = 1e-6``
comes from a step study on the box mixture (``1e-5`` leaves a ``~1e-6`` truncation error in
``log Lambda`` there; ``1e-6`` and ``2e-6`` agree to ``~3e-8``). A sweep over ``rtol`` at one
dimension (``sweep_n``) measures how the density-ratio / divergence gap scales with the solver
tolerance (a positive log-log slope: solver error, not a systematic difference).

Options: :class:`LemmaD1Options` (keyword overrides of :func:`run`; tests use them for tiny runs):
``fields`` (tuple of ``"gmm"``, ``"box"``, ``"gaussian"``), ``dims``, ``points``, ``slogdet_max_n``,
``rtol``, ``atol``, ``tol_factor``, ``rk4_steps``, ``grid_power``, ``fd_step``, ``sweep_n`` (``None``: no sweep),
``sweep_rtols``, ``gaussian_std``.

``result.json`` numbers: ``units`` (per field and n: ``max_diff`` per method pair, ``mean_log_Lambda``
per method, ``slogdet_error_estimate``), ``max_diff_by_pair`` (over everything), ``tol``, ``sweep``
(per field: rtol -> max gap), ``sweep_slopes`` (log-log slope of the gap against rtol), ``failures``.
Verdict: :func:`.lemma_d1_judge.judge`. Figure: ``lemma_d1.png`` (:mod:`.lemma_d1_figures`: log Lambda
by method vs n; max |difference| vs n with the tolerance).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theory._validate import require_int
from simulate.instability import log_Lambda_G
from simulate.maps import generate
from simulate.solvers import rk4

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.lemma_d1.judge import PAIRS, judge, verdict_from_units
from simulate.experiments.oracles import DT, build_field, fd_jacobian, graded_grid, paper_gmm_2d, seeded_generator
from simulate.experiments.runner import Unit, sweep

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "LemmaD1Options",
    "FAST",
    "FULL",
    "make_options",
    "run",
    "compute_unit",
    "compute_sweep",
    "verdict_from_units",
    "build_field",
    "fd_jacobian",
    "graded_grid",
    "paper_gmm_2d",
]

NAME = "lemma-d1"
DESCRIPTION = "Lemma D.1: log Lambda_G by density ratio, divergence integral and slogdet agree to solver accuracy"
CLAIM_IDS = ["lemma_d1"]
FIELD_KINDS = ("gmm", "box", "gaussian")


@dataclass(frozen=True)
class LemmaD1Options:
    """Options of the Lemma D.1 experiment (see the module docstring; validated on construction)."""

    fields: tuple[str, ...] = ("gmm", "box")
    dims: tuple[int, ...] = (2, 4, 8, 32, 128, 256)
    points: int = 8
    slogdet_max_n: int = 8
    rtol: float = 1e-8
    atol: float = 1e-10
    tol_factor: float = 100.0
    rk4_steps: int = 400
    grid_power: float = 2.0
    fd_step: float = 1e-6
    sweep_n: int | None = 8
    sweep_rtols: tuple[float, ...] = (1e-4, 1e-6, 1e-8, 1e-10)
    gaussian_std: float = 0.3

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("fields", tuple(str(k) for k in self.fields))
        put("dims", tuple(require_int("dims", n) for n in self.dims))
        put("sweep_rtols", tuple(float(r) for r in self.sweep_rtols))
        for name, low in (("points", 1), ("slogdet_max_n", 1), ("rk4_steps", 2)):
            put(name, require_int(name, getattr(self, name), low))
        for name in ("rtol", "atol", "tol_factor", "grid_power", "fd_step", "gaussian_std"):
            put(name, float(getattr(self, name)))
        if self.sweep_n is not None:
            put("sweep_n", require_int("sweep_n", self.sweep_n))
        bad = [k for k in self.fields if k not in FIELD_KINDS]
        if not self.fields or bad:
            raise ValueError(f"fields must be a non-empty tuple of {', '.join(FIELD_KINDS)}, got {self.fields}")
        if not self.dims:
            raise ValueError("dims must be non-empty positive integers, got ()")
        if not (self.rtol > 0 and self.atol > 0 and self.tol_factor > 0 and self.fd_step > 0 and self.grid_power > 0
                and self.gaussian_std > 0):
            raise ValueError("rtol, atol, tol_factor, fd_step, grid_power and gaussian_std must be > 0")
        if self.sweep_n is not None and (not self.sweep_rtols or min(self.sweep_rtols) <= 0):
            raise ValueError(f"sweep_rtols must be non-empty and > 0 with sweep_n, got {self.sweep_rtols}")

    @property
    def tol(self) -> float:
        """The agreement tolerance ``tol = tol_factor * rtol`` on ``max_z |log Lambda_a - log Lambda_b|``."""
        return self.tol_factor * self.rtol


FAST = LemmaD1Options()
FULL = LemmaD1Options(dims=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), points=32)


def make_options(full: bool = False, **overrides: Any) -> LemmaD1Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def compute_unit(kind: str, n: int, opts: LemmaD1Options, seed: int) -> dict[str, Any]:
    """Lemma D.1 (docs/theory.md §6.1), ``n log Lambda_G(z) = log |det J_G(z)| = log phi(z) - log p_g(G(z))``,
    by three methods at ``points`` noises ``z`` in dimension ``n`` for field ``kind``."""
    t0 = time.perf_counter()
    field = build_field(kind, n, seed, gaussian_std=opts.gaussian_std)
    z = torch.randn(opts.points, n, generator=seeded_generator(seed, n, 7), dtype=DT)
    tight = {"solver": "dopri5", "rtol": opts.rtol, "atol": opts.atol}
    with torch.no_grad():
        vals: dict[str, np.ndarray] = {
            "density_ratio": log_Lambda_G(field, z, method="density_ratio", **tight).numpy(),
            "divergence": (generate(field, z, logdet=True, **tight).logdet / n).numpy(),
        }
    slog_err = None
    if n <= opts.slogdet_max_n:
        steps, h = opts.rk4_steps, opts.fd_step

        def slog(k: int, step: float) -> np.ndarray:
            ts = graded_grid(k, opts.grid_power)
            J = fd_jacobian(lambda p: rk4(field, p, ts).x, z, step)
            return (torch.linalg.slogdet(J).logabsdet / n).numpy()

        fine = slog(steps, h)
        vals["slogdet"] = fine
        # Richardson estimate of the RK4 error of the slogdet route (order 4: |S - S/2| / 15)
        slog_err = float(np.max(np.abs(fine - slog(steps // 2, h))) / 15.0)
    max_diff = {f"{a}-{b}": float(np.max(np.abs(vals[a] - vals[b]))) for a, b in PAIRS if a in vals and b in vals}
    return {
        "field": kind,
        "n": n,
        "points": int(z.shape[0]),
        "log_Lambda": {k: v.tolist() for k, v in vals.items()},
        "mean_log_Lambda": {k: float(np.mean(v)) for k, v in vals.items()},
        "max_diff": max_diff,
        "slogdet_error_estimate": slog_err,
        "seconds": time.perf_counter() - t0,
    }


def compute_sweep(kind: str, n: int, opts: LemmaD1Options, seed: int) -> dict[str, Any]:
    """Density-ratio / divergence gap as a function of the dopri5 tolerance (solver error check)."""
    field = build_field(kind, n, seed, gaussian_std=opts.gaussian_std)
    z = torch.randn(opts.points, n, generator=seeded_generator(seed, n, 7), dtype=DT)
    gaps = {}
    with torch.no_grad():
        for rtol in opts.sweep_rtols:
            kw = {"solver": "dopri5", "rtol": rtol, "atol": rtol * 1e-2}
            ratio = log_Lambda_G(field, z, method="density_ratio", **kw)
            div = generate(field, z, logdet=True, **kw).logdet / n
            gaps[f"{rtol:g}"] = float((ratio - div).abs().max())
    return {"field": kind, "n": n, "gaps": gaps}


def _units(opts: LemmaD1Options, seed: int) -> tuple[list[Unit], list[Unit]]:
    """The (field, n) units and the rtol-sweep units (looked up on this module when run)."""
    units = [(f"unit:{k}:n={n}", partial(compute_unit, k, n, opts, seed)) for k in opts.fields for n in opts.dims]
    sweeps = [] if opts.sweep_n is None else [
        (f"sweep:{k}:n={opts.sweep_n}", partial(compute_sweep, k, opts.sweep_n, opts, seed)) for k in opts.fields]
    return units, sweeps


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Lemma D.1 check (sweep, judge, figure, ``result.json``); see the module docstring."""
    from simulate.experiments.lemma_d1.figures import draw_figures

    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    params = {"full": full, "seed": seed, **asdict(opts)}
    store = RecordStore(out_dir, params)
    units, sweeps = _units(opts, seed)
    sweep(store, units + sweeps, desc="lemma-d1", progress=progress)
    unit_recs = [store.get(key) for key, _ in units]
    sweep_recs = [store.get(key) for key, _ in sweeps]
    judged = judge(opts, unit_recs, sweep_recs)
    figures = draw_figures(out_dir, opts, unit_recs)
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, judged.numbers, figures,
                              time.perf_counter() - start)
    write_result(out_dir, result)
    return result
