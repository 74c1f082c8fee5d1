r"""Theorem 4.3 measured: where do ``p1 -> 0``, ``p2 -> 0`` and ``P_inst -> 1`` hold as ``n`` grows?

Setting (docs/theory.md §8, measured in §11.5): ``p_r = U[0, 1]^n`` (``rho_max = 1``); ``p_g`` an equal-weight
mixture of ``m`` Gaussian neighbours ``U(B_i) * N(0, sigma^2 I_n)`` with cubes ``B_i`` of side ``l``;
``c = c_n = (1 + eps) n``. The regime is decided by the per-coordinate gap ``g`` between modes in
kernel widths, ``g / sigma``: the grid (:class:`Thm43Options`) crosses controlled diagonal rows of
boxes (``g / sigma`` from below 1 to far above), the single-box control and random placement
(:mod:`.thm43_geometry`) with ``sigma`` and ``m``, over a log grid of ``n``.

One unit ``(cell, n)`` (:func:`compute_unit`) inverts ``num_points`` points ``x ~ p_r`` by one dopri5
pass and takes ``(1/n) log Lambda_G`` at ``z = F(x)`` from that pass (Lemma D.1 at ``x``, §6.1,
:func:`simulate.instability.log_Lambda_G_at_inverse`; regenerating ``G(z)`` would be wrong where
``G`` is unstable). It records, with 95% Clopper-Pearson intervals:

* ``P_inst(tau) = P[(1/n) log Lambda_G(F(x)) > log tau]``;
* ``p1(tau) = P[log p_g(x) >= -(n/2) log 2 pi - c/2 - n log tau]`` on ``num_points_p1`` points (no solve);
* ``p2 = P[||F(x)||^2 >= c]``;

(§6.3, §9.5) and the mean of ``||F(x)||^2 / n``, the distribution of ``(1/n) log Lambda`` (mean, quantiles), the
hypothesis of the p2 bound: ``(1/n) log sup_x p_r / p_g`` on the samples (all of them, and those with
``||F||^2 >= c``; ``p_r / p_g = 1 / p_g`` on the cube), Theorem 4.3's bounds and a Theorem 4.1 /
Lemma D.2 consistency check. :mod:`.thm43_trend` classifies each cell's sequence over ``n`` as holds /
fails / undetermined, :mod:`.thm43_judge` turns the classes into verdicts that name the grid, and
:mod:`.thm43_figures` draws the regime map.

Cost: for ``m >= 2`` with ``g / sigma`` large the backward flow slides along the separatrix between
modes and dopri5's evaluations grow like ``n`` (cost ``n^2``); ``max_unit_nfe`` stops a cell's ``n``
sweep where the next unit is predicted (from the last one, ``nfe ~ n``) to exceed that many
evaluations, and the verdicts name the largest ``n`` reached. The fast default (54 cells, ``n`` to
512, cap 3600) takes about 95 s of one CPU core; ``--full`` (no cap, ``n`` to 4096, 64 points) takes
many hours on a CPU (a stiff cell at ``n = 4096`` needs ~10^5 evaluations per unit). Units are recorded in
``records.jsonl`` (:class:`.common.RecordStore`) as they finish: a rerun resumes; the store's
signature covers only what changes a unit's result, so extending the grid reuses recorded units.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from theory._validate import require_int
from simulate.fields import BoxMixture
from simulate.instability import log_Lambda_G_at_inverse
from theory.thm41 import lemma_d2_log_threshold

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.runner import Unit, sweep
from simulate.experiments.thm43.geometry import Cell, boxes_for
from simulate.experiments.thm43.lln import lln_limits
from simulate.experiments.thm43.sequential import points_to_add, summarize

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "Thm43Options", "FAST", "FULL", "make_options", "compute_unit", "run"]

NAME = "thm43"
DESCRIPTION = (
    "Theorem 4.3 measured: p1 -> 0, p2 -> 0, P_inst -> 1 as n grows (uniform p_r, box mixtures); "
    "regime map over g/sigma (gap between modes in kernel widths), sigma and m"
)
CLAIM_IDS = ["thm43_p1", "thm43_p2", "thm43_pinst"]
_VERSION = 3


@dataclass(frozen=True)
class Thm43Options:
    """Options of the Theorem 4.3 experiment (validated and normalised on construction).

    Grid: ``ns`` (dimensions), ``sigmas``, ``ms`` (``1`` = the single-box control), ``gap_ratios``
    (``g / sigma`` of the diagonal rows), ``random_placement`` (also random boxes for each
    ``m >= 2``), ``side`` (box side ``l``). Measurement: ``taus``, ``eps`` (``c = (1 + eps) n``),
    ``num_points`` (inverted points per unit), ``num_points_p1`` (points for p1, no solve),
    ``rtol`` / ``atol`` (dopri5), ``max_placement_tries``, ``lln_nodes`` (quadrature of the m = 1
    limit; 0 skips it), ``level`` (a claim "q -> 0" holds at a cell when q's 95% interval at its largest
    n lies below it, :mod:`simulate.decide`), sequential sampling at the largest n (:mod:`.sequential`):
    ``max_points`` inverted points in all, ``max_cell_cost`` (dopri5 evaluations x points),
    ``max_rounds``; ``max_unit_nfe`` (cost cap per unit,
    0 = none), ``threads`` (torch CPU threads during the run; 0 keeps torch's), ``device``.
    """

    ns: tuple[int, ...] = (2, 8, 32, 128, 512)
    sigmas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.3, 1.0, 2.0)
    ms: tuple[int, ...] = (1, 2, 4)
    gap_ratios: tuple[float, ...] = (0.5, 2.0, 8.0)
    random_placement: bool = True
    side: float = 0.1
    taus: tuple[float, ...] = (0.5, 1.0, 2.0)
    eps: float = 0.1
    num_points: int = 8
    num_points_p1: int = 512
    rtol: float = 1e-6
    atol: float = 1e-8
    max_placement_tries: int = 200
    lln_nodes: int = 800
    level: float = 0.2
    max_points: int = 64
    max_cell_cost: int = 50000
    max_rounds: int = 4
    max_unit_nfe: int = 3600
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("ns", tuple(sorted({require_int("ns", n) for n in self.ns})))
        put("ms", tuple(sorted({require_int("ms", m) for m in self.ms})))
        for name in ("sigmas", "gap_ratios", "taus"):
            put(name, tuple(sorted({float(v) for v in getattr(self, name)})))
        if not self.ns or not self.ms:
            raise ValueError(f"ns and ms must be non-empty positive integers, got {self.ns}, {self.ms}")
        if not self.sigmas or self.sigmas[0] <= 0:
            raise ValueError(f"sigmas must be non-empty and > 0, got {self.sigmas}")
        if any(r <= 0 for r in self.gap_ratios):
            raise ValueError(f"gap_ratios (g/sigma) must be > 0, got {self.gap_ratios}")
        if not 0 <= float(self.side) < 0.5:
            raise ValueError(f"side must lie in [0, 0.5) (random boxes of side >= 1/2 always overlap), got {self.side}")
        if not self.taus or self.taus[0] <= 0:
            raise ValueError(f"taus must be non-empty and > 0, got {self.taus}")
        if not float(self.eps) > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not 0 < float(self.level) < 0.5:
            raise ValueError(f"level must lie in (0, 0.5), got {self.level}")
        if int(self.max_points) < int(self.num_points):
            raise ValueError(f"need max_points >= num_points, got {self.max_points} < {self.num_points}")
        for name, low in (("num_points", 2), ("num_points_p1", 1), ("max_placement_tries", 1), ("lln_nodes", 0),
                          ("max_unit_nfe", 0), ("threads", 0), ("max_points", 2), ("max_cell_cost", 0),
                          ("max_rounds", 0)):
            put(name, require_int(name, getattr(self, name), low))
        for name in ("side", "eps", "rtol", "atol", "level"):
            put(name, float(getattr(self, name)))

    @property
    def tau_main(self) -> float:
        """The ``tau`` the verdicts are stated at: 1 if on the grid, else the first."""
        return 1.0 if 1.0 in self.taus else self.taus[0]

    def cells(self) -> list[Cell]:
        """The grid's cells: per sigma the single box, then per ``m >= 2`` the diagonal rows and random."""
        out: list[Cell] = []
        for s in self.sigmas:
            for m in self.ms:
                if m == 1:
                    out.append(Cell("single", s, 1))
                    continue
                out += [Cell("diagonal", s, m, r) for r in self.gap_ratios]
                if self.random_placement:
                    out.append(Cell("random", s, m))
        return out

    def unit_signature(self) -> dict[str, Any]:
        """What changes a unit's result (the record store's signature); the grid and the caps do not."""
        keys = ("side", "eps", "taus", "num_points", "num_points_p1", "rtol", "atol", "max_placement_tries", "lln_nodes")
        return {k: getattr(self, k) for k in keys}


FAST = Thm43Options()
FULL = Thm43Options(
    ns=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    gap_ratios=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    num_points=64,
    num_points_p1=4096,
    level=0.05,
    max_points=512,
    max_cell_cost=0,
    lln_nodes=4000,
    max_unit_nfe=0,
)


def make_options(full: bool = False, **overrides: Any) -> Thm43Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def _unit_key(cell: Cell, n: int) -> str:
    return f"{cell.label}|n={n}"


def compute_unit(cell: Cell, n: int, opts: Thm43Options, seed: int = 0, round: int = 0, points: int = 0) -> dict[str, Any]:
    """One round of points of the unit ``(cell, n)``: per inverted point ``(1/n) log Lambda``, ``||F(x)||^2``
    and ``log p_g``; the p1 points' counts and moments (no solve). :func:`.sequential.summarize` merges rounds.

    Round 0 has ``num_points`` inverted points (``num_points_p1`` for p1) drawn from ``(seed, n)`` only
    (common random numbers across cells); a later round ``r`` (sequential sampling, :mod:`.sequential`)
    has ``points`` inverted points (and ``num_points_p1 / num_points`` times as many for p1) drawn from
    ``(seed, n, r)``. Random boxes depend on ``(seed, m, n)``. ``log Lambda`` comes from the inversion
    pass (Lemma D.1 at ``x``), never from regenerating ``G(F(x))``.
    """
    t0 = time.perf_counter()
    c = (1.0 + opts.eps) * n
    boxes = boxes_for(cell, n, opts.side, np.random.default_rng([seed, 1, cell.m, n]), opts.max_placement_tries)
    device = torch.device(opts.device)
    field = BoxMixture(boxes.lower, boxes.upper, np.full(cell.m, 1.0 / cell.m), cell.sigma, dtype=torch.float64, device=device)
    if round == 0:
        k_inv, k_p1, rng = opts.num_points, opts.num_points_p1, np.random.default_rng([seed, 2, n])
    else:
        k_inv = int(points)
        k_p1, rng = max(1, k_inv * opts.num_points_p1 // opts.num_points), np.random.default_rng([seed, 2, n, int(round)])
    x_all = torch.from_numpy(rng.random((max(k_inv, k_p1), n))).to(device)
    with torch.no_grad():
        log_pg_all = field.log_prob(x_all, 1.0).cpu().numpy()
        inv = log_Lambda_G_at_inverse(field, x_all[:k_inv], method="density_ratio", solver="dopri5",
                                      rtol=opts.rtol, atol=opts.atol)
    log_pg_p1 = log_pg_all[:k_p1]
    thresholds = {f"{tau:g}": float(lemma_d2_log_threshold(n, tau, c)) for tau in opts.taus}  # the p1 level (Lemma D.2)
    return {
        "cell": cell.label,
        "n": n,
        "round": int(round),
        "c": c,
        "separation": boxes.separation,
        "separated": boxes.separated,
        "mean_coordinate_gap": boxes.mean_coordinate_gap,
        "points": {"log_Lambda": inv.log_Lambda.cpu().numpy().tolist(), "sq_norm": inv.sq_norm.cpu().numpy().tolist(),
                   "log_pg": log_pg_all[:k_inv].tolist()},
        "p1_points": {"count": int(k_p1), "sum": float((log_pg_p1 / n).sum()), "sumsq": float(((log_pg_p1 / n) ** 2).sum()),
                      "max_neg_log_pg_over_n": float((-log_pg_p1).max() / n),
                      "successes": {tl: int((log_pg_p1 >= thr).sum()) for tl, thr in thresholds.items()}},
        "nfe": int(inv.inversion.nfe),
        "seconds": time.perf_counter() - t0,
    }


def _round_key(cell: Cell, n: int, rnd: int, points: int) -> str:
    return f"{cell.label}|n={n}|round={rnd}|points={points}"


def _lln_key(sigma: float) -> str:
    return f"lln|s={sigma:g}"


def _cost_cap(opts: Thm43Options, store: RecordStore, stopped: dict[Cell, int]) -> Callable[[str], bool]:
    """The sweep's ``skip`` hook: the cost cap ``max_unit_nfe`` (0 = none).

    A cell's unit at ``n`` is skipped, and so are all its larger ``n``, when the previous unit of the
    cell (recorded: the sweep runs ``n``-major) predicts ``nfe(n) ~ nfe(n_prev) n / n_prev`` above the
    cap; ``stopped`` collects ``cell -> first n skipped``.
    """
    by_key = {_unit_key(cell, n): (cell, i) for cell in opts.cells() for i, n in enumerate(opts.ns)}

    def skip(key: str) -> bool:
        cell, i = by_key[key]
        if cell in stopped:
            return True
        if opts.max_unit_nfe and i > 0:
            n_prev, n = opts.ns[i - 1], opts.ns[i]
            if store.get(_unit_key(cell, n_prev))["nfe"] * n / n_prev > opts.max_unit_nfe:
                stopped[cell] = n
                return True
        return False

    return skip


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Sweep the grid (resuming), classify each cell's trend, judge the claims, write ``result.json`` and figures.

    Overrides: any field of :class:`Thm43Options`. Units (:func:`.runner.sweep`): the ``m = 1``
    limits per sigma, then the cells ``n``-major (every cell at the smallest ``n`` first), so an
    interrupted sweep covers the whole grid at the dimensions it reached; the cost cap is the
    sweep's ``skip`` hook.
    """
    from simulate.experiments.thm43.figures import draw_figures
    from simulate.experiments.thm43.judge import judge

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    store = RecordStore(out_dir, {"seed": seed, **opts.unit_signature(), "version": _VERSION})
    cells = opts.cells()
    limits: list[Unit] = []
    if opts.lln_nodes > 0 and 1 in opts.ms:
        limits = [(_lln_key(s), partial(lln_limits, s, opts.side, eps=opts.eps, taus=opts.taus, nodes=opts.lln_nodes))
                  for s in opts.sigmas]
    units: list[Unit] = [(_unit_key(cell, n), partial(compute_unit, cell, n, opts, seed)) for n in opts.ns for cell in cells]
    stopped: dict[Cell, int] = {}
    sweep(store, limits, desc="thm43 m=1 limits", progress=False, threads=opts.threads)
    stats = sweep(store, units, desc="thm43", progress=progress, threads=opts.threads, skip=_cost_cap(opts, store, stopped),
                  skip_lag=len(cells))  # the cap reads the cell's previous n: one n-wave (all cells) earlier
    raw = {cell: {n: [store.get(_unit_key(cell, n))] for n in opts.ns if store.done(_unit_key(cell, n))} for cell in cells}
    added: dict[str, list[int]] = {}
    for rnd in range(1, opts.max_rounds + 1):  # sequential sampling at each cell's largest n
        more: list[Unit] = []
        for cell in cells:
            if raw[cell]:
                n_last = max(raw[cell])
                k = points_to_add(summarize(cell, n_last, opts, raw[cell][n_last]), opts)
                if k:
                    more.append((_round_key(cell, n_last, rnd, k), partial(compute_unit, cell, n_last, opts, seed, rnd, k)))
        if not more:
            break
        stats = dataclasses.replace(stats, computed=stats.computed + sweep(
            store, more, desc=f"thm43 round {rnd}", progress=progress, threads=opts.threads).computed)
        for key, _ in more:
            rec = store.get(key)
            cell = next(c for c in cells if c.label == rec["cell"])
            raw[cell][rec["n"]].append(rec)
            added.setdefault(cell.label, []).append(len(rec["points"]["sq_norm"]))
    records = {cell: [summarize(cell, n, opts, raw[cell][n]) for n in sorted(raw[cell])] for cell in cells}
    lln = {s: store.get(_lln_key(s)) for s in opts.sigmas if store.done(_lln_key(s))}
    judged = judge(opts, cells, records, lln)
    figures = draw_figures(out_dir, opts, cells, records, judged)
    numbers = {
        **judged.numbers,
        "units": [r for cell in cells for r in records[cell]],
        "lln_limit_m1": list(lln.values()),
        "units_computed_this_run": stats.computed,
        "cost_capped_cells": {cell.label: n for cell, n in stopped.items()},
        "sequential_points_added": added,
        "points_inverted": sum(r["points"] for cell in cells for r in records[cell]),
    }
    result = ExperimentResult(
        name=NAME,
        claim_ids=list(CLAIM_IDS),
        verdict=judged.overall,
        params={"full": full, "seed": seed, **dataclasses.asdict(opts)},
        numbers=numbers,
        figures=figures,
        seconds=time.perf_counter() - t_start,
        claim_verdicts=dict(judged.claims),
    )
    write_result(out_dir, result)
    return result
