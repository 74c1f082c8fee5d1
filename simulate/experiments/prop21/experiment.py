r"""Proposition 2.1 on the generation map: ``mu(s u) -> lambda(u)`` and ``max mu >= ||J||_2 - eps``.

docs/theory.md §2.4. For the generation map ``G`` (fixed-step RK4 solve of the exact PF-ODE, a
smooth map) of

* the 2-D three-component Gaussian mixture (:func:`simulate.experiments.oracles.paper_gmm_2d`),
  along the line of initial noises ``z = (x, 0)``, ``x in [-2, 2]`` (the paper's Fig. 3(c)) with
  ``u = e_x`` and ``u = e_y``, and at random noises ``z ~ N(0, I)`` with random ``u``;
* one higher-dimensional box mixture (``n = box_n``, RK4 on a grid refined towards ``t = 1``),

the experiment runs :func:`theory.prop21.check_proposition_21` (one batched call per unit: ``gmm2d``
holds the groups ``line_x``, ``line_y``, ``random``; ``box`` the box points). Proposition 2.1 is
about any C^1 map, so the discrete RK4 map (``rk4_steps`` uniform steps in 2-D,
``box_rk4_steps`` graded steps for the box) is itself the map under test; its accuracy as an
approximation of the exact flow does not matter here. The check: part (a) ``mu_G(z, s u) ->
lambda_G(z, u)`` over scales ``s`` from ``1e-1`` to ``min_scale`` (half decades, relative to
``max(||z||, 1)``), with the checker's floating-point model (``converged``: smallest error
``<= tol = 100 sqrt(eps) max(1, lambda)`` and decreasing; ``order``: slope of log error vs
log s over the truncation-dominated scales, 1 for a smooth nonlinear map); part (b)
``max_s mu_G(z, s v1) >= ||J_G(z)||_2 - eps`` (``v1`` by power iteration).

Cost. ``check_proposition_21`` differentiates its map with ``torch.func`` (forward-mode JVPs and
power iteration), about 25x the cost of a plain solve per product. The map handed to it is
therefore :class:`LinearizedMap`: its values are plain solves of ``G``; its derivative at the
check points is the Jacobian of the same discrete RK4 map computed once by reverse-mode AD
(``n`` backward passes), so every JVP/VJP is a matrix-vector product. The checker only
differentiates at the check points (``torch.func.jvp(f, (x,), ...)``, ``torch.func.vjp(f, x)``);
under a transform the map returns the cached ``G(x0)`` plus the linear term, so it must not be
differentiated anywhere else (it refuses any call at another batch shape). The AD Jacobian is
cross-checked against central finite differences of ``G`` (``numbers.jacobian_ad_vs_fd``).

Figure ``prop21.png`` (Fig. 3(c) idea): along ``z = (x, 0)``: ``lambda`` along the x-axis and the
y-axis, ``||J_G||_2`` and ``mu`` along the x-axis for finite ``s`` (log y-axis, the level 1
marked), and ``|mu(s u) - lambda(u)|`` against ``s`` at a few points (log-log).

Options: :class:`Prop21Options` (keyword overrides of :func:`run`): ``line_points``, ``random_points``,
``rk4_steps``, ``box_n`` (``None``: no box unit), ``box_points``, ``box_rk4_steps``, ``eps``,
``min_scale``, ``fig_scales``, ``field`` (``"gmm"`` or ``"gaussian"`` for the 2-D units; the
Gaussian's field is linear in ``x``, so its RK4 map is affine: ``mu = lambda = ||J|| ~ s`` at every
scale), ``gaussian_std``.

``result.json`` numbers: ``units`` (per group ``line_x``, ``line_y``, ``random``, ``box``: ``points``, ``converged_fraction``, ``holds_fraction``,
``min_error_median/max``, ``order_median/min/max``, ``worst_gap_b`` = max of ``||J||_2 - max_mu``,
``unstable_points``, ``guaranteed_unstable_points``), ``line`` (x, lambda_x, lambda_y, spectral
norm, mu at ``fig_scales``), ``jacobian_ad_vs_fd``, ``errors`` (per group, points x scales),
``seconds_per_unit``. Verdict: :func:`.prop21_judge.judge`; figure: :mod:`.prop21_figures`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from theory._validate import require_int
from simulate.maps import generate
from simulate.solvers import rk4
from theory.prop21 import check_proposition_21

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.oracles import DT, ad_jacobian, build_field, fd_jacobian, graded_grid, seeded_generator
from simulate.experiments.prop21.judge import groups_of, judge
from simulate.experiments.runner import sweep

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "Prop21Options", "FAST", "FULL", "make_options", "run", "LinearizedMap",
           "ad_jacobian", "compute_unit", "summarize_check"]

NAME = "prop21"
DESCRIPTION = "Proposition 2.1: mu(s u) -> lambda(u) and max mu >= ||J||_2 - eps on the generation map (Fig. 3(c))"
CLAIM_IDS = ["prop21"]


@dataclass(frozen=True)
class Prop21Options:
    """Options of the Proposition 2.1 experiment (see the module docstring; validated on construction)."""

    field: str = "gmm"
    gaussian_std: float = 0.3
    line_points: int = 81
    random_points: int = 16
    rk4_steps: int = 50
    box_n: int | None = 8
    box_points: int = 6
    box_rk4_steps: int = 40
    eps: float = 1e-3
    min_scale: float = 1e-8
    fig_scales: tuple[float, ...] = (0.5, 0.1, 0.02)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name, low in (("line_points", 2), ("random_points", 1), ("rk4_steps", 1), ("box_points", 1),
                          ("box_rk4_steps", 1)):
            put(name, require_int(name, getattr(self, name), low))
        for name in ("gaussian_std", "eps", "min_scale"):
            put(name, float(getattr(self, name)))
        put("fig_scales", tuple(float(s) for s in self.fig_scales))
        if self.box_n is not None:
            put("box_n", require_int("box_n", self.box_n))
        if self.field not in ("gmm", "gaussian"):
            raise ValueError(f"field must be gmm or gaussian, got {self.field!r}")
        if not (self.gaussian_std > 0 and self.eps > 0 and 0 < self.min_scale <= 0.1):
            raise ValueError(f"gaussian_std and eps must be > 0 and min_scale in (0, 0.1], got "
                             f"{self.gaussian_std}, {self.eps}, {self.min_scale}")
        if not self.fig_scales or min(self.fig_scales) <= 0:
            raise ValueError(f"fig_scales must be non-empty and > 0, got {self.fig_scales}")

    def unit_names(self) -> list[str]:
        """The units: ``gmm2d`` (groups ``line_x``, ``line_y``, ``random``) and ``box`` unless ``box_n`` is None."""
        return ["gmm2d"] + (["box"] if self.box_n is not None else [])


FAST = Prop21Options()
FULL = Prop21Options(line_points=161, random_points=64, box_points=24, rk4_steps=100, box_rk4_steps=100)


def make_options(full: bool = False, **overrides: Any) -> Prop21Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def _is_transformed(t: Tensor) -> bool:
    try:
        from torch._C._functorch import is_functorch_wrapped_tensor
    except ImportError:  # pragma: no cover - older torch
        return False
    return bool(is_functorch_wrapped_tensor(t))


class LinearizedMap:
    """``G`` with its AD Jacobian at the check points ``x0`` precomputed (see the module docstring).

    ``f(z)`` is a plain (no-grad) solve ``G(z)`` plus ``J0 (z - z.detach())``, which is zero in value
    and gives the derivative ``J0 = J_G(x0)``. Under a ``torch.func`` transform (the checker's JVPs
    and VJPs, taken at ``x0`` only) the value is the cached ``G(x0)`` so that no solve runs on
    wrapped tensors (which is what makes ``torch.func`` slow here).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], x0: Tensor) -> None:
        self.fn = fn
        self.x0 = x0.detach().clone()
        self.J0 = ad_jacobian(fn, self.x0)
        with torch.no_grad():
            self.y0 = fn(self.x0).detach()
        self.transform_calls = 0

    def __call__(self, z: Tensor) -> Tensor:
        if tuple(z.shape) != tuple(self.x0.shape):
            raise ValueError(f"LinearizedMap: batch shape {tuple(z.shape)} differs from the check points {tuple(self.x0.shape)}")
        zd = z.detach()
        if _is_transformed(z):
            self.transform_calls += 1
            y = self.y0
        else:
            with torch.no_grad():
                y = self.fn(zd)
        if not (z.requires_grad or _is_transformed(z)):
            return y
        return y + torch.einsum("bij,bj->bi", self.J0, z - zd)


def _map_2d(opts: Prop21Options) -> tuple[Any, Callable[[Tensor], Tensor]]:
    field = build_field(opts.field, 2, 0, gaussian_std=opts.gaussian_std)
    steps = opts.rk4_steps
    return field, (lambda p: generate(field, p, solver="rk4", steps=steps).x)


def _scales(min_scale: float) -> list[float]:
    k = int(round(2 * (-1.0 - math.log10(min_scale)))) + 1
    return [10.0 ** (-1.0 - 0.5 * i) for i in range(k)]


def summarize_check(check: Any, J: Tensor, rows: slice) -> dict[str, Any]:
    """The judge's per-group summary of a :func:`theory.prop21.check_proposition_21` result (rows ``rows``;
    ``J`` the Jacobians at those points, for the SVD cross-check of ``||J||_2``)."""
    conv = check.converged[rows].numpy()
    holds = check.holds[rows].numpy()
    order = check.order[rows].numpy()
    fin = np.isfinite(order)
    sn = check.spectral_norm[rows].numpy()
    sn_svd = torch.linalg.matrix_norm(J[rows], ord=2).numpy()
    min_err = check.min_error[rows].numpy()
    return {
        "points": int(conv.size),
        "converged_fraction": float(conv.mean()),
        "holds_fraction": float(holds.mean()),
        "min_error": min_err.tolist(),
        "min_error_median": float(np.median(min_err)),
        "min_error_max": float(min_err.max()),
        "tol": check.tol[rows].numpy().tolist(),
        "order": [None if not math.isfinite(o) else float(o) for o in order],
        "order_median": float(np.median(order[fin])) if fin.any() else None,
        "order_min": float(order[fin].min()) if fin.any() else None,
        "order_max": float(order[fin].max()) if fin.any() else None,
        "lambda_u": check.lambda_u[rows].numpy().tolist(),
        "spectral_norm": sn.tolist(),
        "spectral_norm_svd": sn_svd.tolist(),
        "power_vs_svd_max_rel": float(np.max(np.abs(sn - sn_svd) / sn_svd)),
        "max_mu": check.max_mu[rows].numpy().tolist(),
        "worst_gap_b": float((check.spectral_norm[rows] - check.max_mu[rows]).max()),
        "eps": check.eps,
        "unstable_points": int(check.unstable[rows].sum()),
        "guaranteed_unstable_points": int(check.guaranteed_unstable[rows].sum()),
        "errors": check.errors[rows].numpy().tolist(),
        "scales": check.scales.numpy().tolist(),
        "failed_points": [int(i) for i in np.nonzero(~(conv & holds))[0]],
    }


def compute_unit(name: str, opts: Prop21Options, seed: int) -> dict[str, Any]:
    """One unit, one batched check of Proposition 2.1 (docs/theory.md §2.4): ``gmm2d`` (groups ``line_x``, ``line_y``: the Fig. 3(c) line
    with ``u = e_x`` / ``e_y``; ``random``: ``z, u ~ N(0, I)``) or ``box`` (``n = box_n``)."""
    t0 = time.perf_counter()
    scales = _scales(opts.min_scale)
    groups: dict[str, slice] = {}
    if name == "gmm2d":
        field, G = _map_2d(opts)
        k = opts.line_points
        xs = torch.linspace(-2.0, 2.0, k, dtype=DT)
        line = torch.stack([xs, torch.zeros_like(xs)], 1)
        ex = torch.tensor([1.0, 0.0], dtype=DT).expand(k, 2)
        ey = torch.tensor([0.0, 1.0], dtype=DT).expand(k, 2)
        g = seeded_generator(seed, 2, 11)
        zr = torch.randn(opts.random_points, 2, generator=g, dtype=DT)
        ur = torch.randn(zr.shape, generator=g, dtype=DT)
        z = torch.cat([line, line, zr])
        u = torch.cat([ex, ey, ur])
        groups = {"line_x": slice(0, k), "line_y": slice(k, 2 * k), "random": slice(2 * k, 2 * k + zr.shape[0])}
    elif name == "box":
        n = opts.box_n
        field = build_field("box", n, seed)
        ts = graded_grid(opts.box_rk4_steps)
        G = lambda p: rk4(field, p, ts).x  # noqa: E731
        g = seeded_generator(seed, n, 12)
        z = torch.randn(opts.box_points, n, generator=g, dtype=DT)
        u = torch.randn(z.shape, generator=g, dtype=DT)
        groups = {"box": slice(0, z.shape[0])}
    else:
        raise ValueError(f"unknown unit {name!r}")
    lin = LinearizedMap(G, z)
    check = check_proposition_21(lin, z, u, scales=scales, eps=opts.eps, seed=seed)
    J_fd = fd_jacobian(G, z, 1e-6)
    ad_vs_fd = float((torch.linalg.matrix_norm(lin.J0 - J_fd) / torch.linalg.matrix_norm(lin.J0)).max())
    summaries = {}
    for gname, rows in groups.items():
        summ = summarize_check(check, lin.J0, rows)
        summ.update({"unit": gname, "n": int(z.shape[1]), "jacobian_ad_vs_fd_max_rel": ad_vs_fd})
        summaries[gname] = summ
    if name == "gmm2d":  # the figure's curves: lambda along x and y, ||J||_2, mu along x at finite s
        rows = groups["line_x"]
        J = lin.J0[rows]
        with torch.no_grad():
            zl = z[rows]
            gz = lin.y0[rows]
            mus = {}
            for s in opts.fig_scales:
                shifted = zl.clone()
                shifted[:, 0] += s
                mus[f"{s:g}"] = (torch.linalg.vector_norm(G(shifted) - gz, dim=1) / s).numpy().tolist()
        summaries["line_x"]["curves"] = {
            "x": zl[:, 0].numpy().tolist(),
            "lambda_x": torch.linalg.vector_norm(J[:, :, 0], dim=1).numpy().tolist(),
            "lambda_y": torch.linalg.vector_norm(J[:, :, 1], dim=1).numpy().tolist(),
            "spectral_norm": torch.linalg.matrix_norm(J, ord=2).numpy().tolist(),
            "mu_x": mus,
        }
    return {"groups": summaries, "seconds": time.perf_counter() - t0, "transform_calls": lin.transform_calls}


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Proposition 2.1 check (sweep, judge, figure, ``result.json``); see the module docstring."""
    from simulate.experiments.prop21.figures import draw_figures

    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    params = {"full": full, "seed": seed, **asdict(opts)}
    store = RecordStore(out_dir, params)
    names = opts.unit_names()
    sweep(store, [(name, partial(compute_unit, name, opts, seed)) for name in names], desc="prop21", progress=progress)
    records = {name: store.get(name) for name in names}
    judged = judge(opts, records)
    figures = draw_figures(out_dir, groups_of(records))
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, judged.numbers, figures,
                              time.perf_counter() - start)
    write_result(out_dir, result)
    return result
