r"""Proposition 2.1 on the generation map: ``mu(s u) -> lambda(u)`` and ``max mu >= ||J||_2 - eps``.

docs/theory.md §2.4. For the generation map ``G`` (fixed-step RK4 solve of the exact PF-ODE, a
smooth map) of

* the 2-D three-component Gaussian mixture (:func:`simulate.experiments.lemma_d1.paper_gmm_2d`),
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

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``line_points``, ``random_points``,
``rk4_steps``, ``box_n`` (``None``: no box unit), ``box_points``, ``box_rk4_steps``, ``eps``,
``min_scale``, ``fig_scales``, ``field`` (``"gmm"`` or ``"gaussian"`` for the 2-D units; the
Gaussian's field is linear in ``x``, so its RK4 map is affine: ``mu = lambda = ||J|| ~ s`` at every
scale), ``gaussian_std``.

``result.json`` numbers: ``units`` (per group ``line_x``, ``line_y``, ``random``, ``box``: ``points``, ``converged_fraction``, ``holds_fraction``,
``min_error_median/max``, ``order_median/min/max``, ``worst_gap_b`` = max of ``||J||_2 - max_mu``,
``unstable_points``, ``guaranteed_unstable_points``), ``line`` (x, lambda_x, lambda_y, spectral
norm, mu at ``fig_scales``), ``jacobian_ad_vs_fd``, ``errors`` (per group, points x scales),
``seconds_per_unit``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from simulate.maps import generate
from simulate.solvers import rk4
from theory.prop21 import check_proposition_21

from .common import ExperimentResult, RecordStore, Verdict, progress_iter, savefig, write_result
from .lemma_d1 import _generator, build_field, fd_jacobian, graded_grid, resolve_options

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "FAST", "FULL", "run", "LinearizedMap", "ad_jacobian", "compute_unit"]

NAME = "prop21"
DESCRIPTION = "Proposition 2.1: mu(s u) -> lambda(u) and max mu >= ||J||_2 - eps on the generation map (Fig. 3(c))"
CLAIM_IDS = ["prop21"]

DT = torch.float64

FAST: dict[str, Any] = {
    "field": "gmm",
    "gaussian_std": 0.3,
    "line_points": 81,
    "random_points": 16,
    "rk4_steps": 50,
    "box_n": 8,
    "box_points": 6,
    "box_rk4_steps": 40,
    "eps": 1e-3,
    "min_scale": 1e-8,
    "fig_scales": (0.5, 0.1, 0.02),
}
FULL: dict[str, Any] = FAST | {"line_points": 161, "random_points": 64, "box_points": 24, "rk4_steps": 100, "box_rk4_steps": 100}


def ad_jacobian(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Jacobian ``(B, n_out, n)`` of a row-wise map by reverse-mode AD (one backward pass per output)."""
    with torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        y = fn(zz)
        rows = [torch.autograd.grad(y[:, d].sum(), zz, retain_graph=d < y.shape[1] - 1)[0] for d in range(y.shape[1])]
    return torch.stack(rows, 1).detach()


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


def _map_2d(opts: dict[str, Any]) -> tuple[Any, Callable[[Tensor], Tensor]]:
    field = build_field(opts["field"], 2, 0, gaussian_std=opts["gaussian_std"])
    steps = int(opts["rk4_steps"])
    return field, (lambda p: generate(field, p, solver="rk4", steps=steps).x)


def _scales(min_scale: float) -> list[float]:
    k = int(round(2 * (-1.0 - math.log10(min_scale)))) + 1
    return [10.0 ** (-1.0 - 0.5 * i) for i in range(k)]


def _summary(check: Any, J: Tensor, rows: slice) -> dict[str, Any]:
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


def compute_unit(name: str, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """One unit, one batched check: ``gmm2d`` (groups ``line_x``, ``line_y``: the Fig. 3(c) line
    with ``u = e_x`` / ``e_y``; ``random``: ``z, u ~ N(0, I)``) or ``box`` (``n = box_n``)."""
    t0 = time.perf_counter()
    scales = _scales(float(opts["min_scale"]))
    groups: dict[str, slice] = {}
    if name == "gmm2d":
        field, G = _map_2d(opts)
        k = int(opts["line_points"])
        xs = torch.linspace(-2.0, 2.0, k, dtype=DT)
        line = torch.stack([xs, torch.zeros_like(xs)], 1)
        ex = torch.tensor([1.0, 0.0], dtype=DT).expand(k, 2)
        ey = torch.tensor([0.0, 1.0], dtype=DT).expand(k, 2)
        g = _generator(seed, 2, 11)
        zr = torch.randn(int(opts["random_points"]), 2, generator=g, dtype=DT)
        ur = torch.randn(zr.shape, generator=g, dtype=DT)
        z = torch.cat([line, line, zr])
        u = torch.cat([ex, ey, ur])
        groups = {"line_x": slice(0, k), "line_y": slice(k, 2 * k), "random": slice(2 * k, 2 * k + zr.shape[0])}
    elif name == "box":
        n = int(opts["box_n"])
        field = build_field("box", n, seed)
        ts = graded_grid(int(opts["box_rk4_steps"]))
        G = lambda p: rk4(field, p, ts).x  # noqa: E731
        g = _generator(seed, n, 12)
        z = torch.randn(int(opts["box_points"]), n, generator=g, dtype=DT)
        u = torch.randn(z.shape, generator=g, dtype=DT)
        groups = {"box": slice(0, z.shape[0])}
    else:
        raise ValueError(f"unknown unit {name!r}")
    lin = LinearizedMap(G, z)
    check = check_proposition_21(lin, z, u, scales=scales, eps=float(opts["eps"]), seed=seed)
    J_fd = fd_jacobian(G, z, 1e-6)
    ad_vs_fd = float((torch.linalg.matrix_norm(lin.J0 - J_fd) / torch.linalg.matrix_norm(lin.J0)).max())
    summaries = {}
    for gname, rows in groups.items():
        summ = _summary(check, lin.J0, rows)
        summ.update({"unit": gname, "n": int(z.shape[1]), "jacobian_ad_vs_fd_max_rel": ad_vs_fd})
        summaries[gname] = summ
    if name == "gmm2d":  # the figure's curves: lambda along x and y, ||J||_2, mu along x at finite s
        rows = groups["line_x"]
        J = lin.J0[rows]
        with torch.no_grad():
            zl = z[rows]
            gz = lin.y0[rows]
            mus = {}
            for s in opts["fig_scales"]:
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


def _verdict(units: list[dict[str, Any]], eps: float) -> Verdict:
    total = sum(u["points"] for u in units)
    bad = [(u["unit"], i) for u in units for i in u["failed_points"]]
    orders = [o for u in units for o in u["order"] if o is not None]
    key = (
        f"{total - len(bad)}/{total} points pass (a) and (b); median order {np.median(orders):.2f}"
        if orders else f"{total - len(bad)}/{total} points pass (a) and (b)"
    )
    parts = []
    for u in units:
        parts.append(
            f"{u['unit']} (n={u['n']}, {u['points']} pts): converged {u['converged_fraction']:.0%}, "
            f"(b) holds {u['holds_fraction']:.0%}, min error median {u['min_error_median']:.1e} / max "
            f"{u['min_error_max']:.1e} (tol 100 sqrt(eps_64) max(1, lambda) ~ 1.5e-6 relative), order "
            + (f"{u['order_median']:.2f} [{u['order_min']:.2f}, {u['order_max']:.2f}]" if u["order_median"] is not None else "n/a (affine)")
            + f", max(||J||_2 - max mu) = {u['worst_gap_b']:.1e} (eps {eps:g}), ||J||_2 > 1 at {u['guaranteed_unstable_points']}, "
            f"instability found at {u['unstable_points']}"
        )
    evidence = "; ".join(parts)
    if not bad:
        return Verdict("verified", key, evidence)
    ok_units = [u["unit"] for u in units if not u["failed_points"]]
    if ok_units:
        return Verdict(f"holds in regime: units {', '.join(ok_units)} (fails at {len(bad)} points elsewhere)", key,
                       evidence + f"; failing points: {bad[:10]}")
    return Verdict("refuted", key, evidence + f"; failing points: {bad[:10]}")


def _figure(units: dict[str, dict[str, Any]], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    line = units.get("line_x", {}).get("curves", {})
    ax = axes[0]
    if line:
        x = line["x"]
        ax.plot(x, line["lambda_x"], lw=2, label="lambda along x-axis")
        ax.plot(x, line["lambda_y"], lw=2, label="lambda along y-axis")
        ax.plot(x, line["spectral_norm"], "k--", lw=1.5, label="||J_G||_2")
        for s, mu in line["mu_x"].items():
            ax.plot(x, mu, lw=1, alpha=0.8, label=f"mu along x, s={s}")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="x  (initial noise z = (x, 0))", ylabel="coefficient", title="Fig. 3(c): coefficients along z=(x,0)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, u in units.items():
        errs = np.array(u["errors"])
        sc = np.array(u["scales"])
        pick = np.unique(np.linspace(0, errs.shape[0] - 1, min(4, errs.shape[0])).astype(int))
        for i in pick:
            ax.plot(sc, np.maximum(errs[i], 1e-17), marker=".", lw=1, label=f"{name} #{i}")
    if units:
        sc = np.array(next(iter(units.values()))["scales"])
        ax.plot(sc, sc, "k:", lw=1, label="slope 1")
    ax.set(xscale="log", yscale="log", xlabel="s", ylabel="|mu(s u) - lambda(u)|", title="part (a): convergence as s -> 0")
    ax.legend(fontsize=6, ncol=2)
    return savefig(fig, out_dir, "prop21.png")


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Proposition 2.1 check; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    params = {"full": full, "seed": seed, **opts}
    store = RecordStore(out_dir, params)
    names = ["gmm2d"] + (["box"] if opts["box_n"] is not None else [])
    for name in progress_iter(names, "prop21", progress):
        if not store.done(name):
            store.add(name, compute_unit(name, opts, seed))
    records = {name: store.get(name) for name in names}
    units = {g: summ for rec in records.values() for g, summ in rec["groups"].items()}
    verdict = _verdict(list(units.values()), float(opts["eps"]))
    figures = [_figure(units, out_dir)]
    numbers = {
        "units": {k: {kk: vv for kk, vv in u.items() if kk not in ("errors", "curves")} for k, u in units.items()},
        "line": units["line_x"].get("curves", {}),
        "jacobian_ad_vs_fd": {k: u["jacobian_ad_vs_fd_max_rel"] for k, u in units.items()},
        "errors": {k: u["errors"] for k, u in units.items()},
        "seconds_per_unit": {k: rec["seconds"] for k, rec in records.items()},
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
