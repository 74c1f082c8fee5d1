r"""Theorem 3.1: Euler-inversion error, reconstruction error and their bounds (docs/theory.md §5).

For each field (the 2-D three-component Gaussian mixture and a 2-D box mixture; a single
Gaussian for closed-form checks) and a batch of data points ``x`` (half sampled from ``p_g``,
half uniform on a box around the data), the experiment measures per point:

* ``z = F(x)``: exact inversion by dopri5 (``rtol = 1e-11``, ``atol = 1e-13``);
* the exact inversion path ``x(t)``, ``t`` from 1 to 0, by RK4 on a uniform grid of ``path_steps``
  steps (its end point is compared with the dopri5 ``z``: ``path_end_error``);
* ``L_path = max_k ||J_v(x(t_k), t_k)||_2`` over the grid (``J_v`` by autograd, exact for the
  closed-form field, 2-norm by SVD), and ``L_tube``: the same on the segments between the Euler
  iterates ``y_k`` and the exact states ``x(t_k)`` (points at 1/4, 1/2, 3/4, 1 of each segment,
  every ``N``), the region where the error recursion ``e_{k+1} <= (1 + h L) e_k + h^2 M/2`` uses
  the Lipschitz constant. ``L = max(L_path, L_tube)`` is the constant used for the bounds (the
  theorem's hypothesis is a Lipschitz bound wherever the iterates go); the bounds with ``L_path``
  alone are reported too;
* ``M = max_k ||x''(t_k)||`` with ``x'' = dv/dt = d_t v + J_v v`` (``d_t v`` by central differences in
  ``t``, step ``1e-6``), cross-checked against central differences of ``v`` along the path
  (``M_crosscheck_rel``);
* for each ``N``: Euler inversion ``z~`` (``y_{k+1} = y_k - h v(y_k, t_k)``), ``||z~ - z||``, the
  reconstruction error ``||G(z~) - x||`` with exact (dopri5) regeneration, and
  ``kappa = max_j ||J_G(w_j)||_2`` over ``kappa_samples`` equispaced points ``w_j`` of the segment
  ``[z, z~]`` (``J_G`` by central differences, step ``1e-6``, of an RK4 map on a grid refined
  towards ``t = 1``, ``kappa_rk4_steps`` steps; 2-norm by SVD).

:func:`theory.thm31.check_theorem31` then compares the measurements with the three bounds
(round-off slack ``rtol = 1e-9``): (1) ``||z~ - z|| <= (h M / 2L)(e^L - 1)``, (2) ``||x^ - x|| <=
kappa (h M / 2L)(e^L - 1)``, (3) ``||x^ - x|| <= (h M / 2L) e^L (e^L - 1)``, and also
``||x^ - x|| <= kappa ||z~ - z||`` and ``kappa <= e^L``. Tightness is ``log(measured / bound)``
(``<= 0`` when a bound holds; near 0 when it is tight).

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``fields`` (tuple of ``"gmm"``,
``"box"``, ``"gaussian"``), ``steps`` (the ``N`` values; every one must divide ``path_steps``),
``points`` (per field, half from ``p_g``, half uniform), ``path_steps``, ``kappa_samples``,
``kappa_rk4_steps``, ``gaussian_std``.

``result.json`` numbers: ``per_field`` -> per ``N``: ``noise_error_median``, ``recon_error_median``,
``holds_fraction`` (``noise``, ``reconstruction``, ``gronwall``, ``amplification``, ``kappa``,
``*_Lpath`` with ``L_path``), ``tightness`` (median and min of ``log(measured/bound)`` per bound),
``kappa_median``; and per field ``L``, ``L_path``, ``L_tube``, ``M`` (per point), ``slope``
(least squares of ``log median ||z~ - z||`` vs ``log N``), ``slope_per_point_median``,
``path_end_error``, ``M_crosscheck_rel``. Figure ``thm31.png``: measured errors and bounds vs
``N`` (log-log), one panel per field.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simulate.maps import generate, invert
from simulate.solvers import euler, rk4, time_grid
from theory.thm31 import check_theorem31

from .common import ExperimentResult, RecordStore, Verdict, progress_iter, savefig, write_result
from .lemma_d1 import _generator, build_field, fd_jacobian, graded_grid, resolve_options

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "FAST", "FULL", "run", "velocity_jacobian", "compute_field"]

NAME = "thm31"
DESCRIPTION = "Theorem 3.1: Euler-inversion and reconstruction errors against their bounds (h M / 2L)(e^L - 1), kappa x that, Gronwall"
CLAIM_IDS = ["thm31"]

DT = torch.float64
EXACT = {"solver": "dopri5", "rtol": 1e-11, "atol": 1e-13}
BOUNDS = ("noise", "reconstruction", "gronwall")

FAST: dict[str, Any] = {
    "fields": ("gmm", "box"),
    "steps": (10, 30, 100, 300),
    "points": 12,
    "path_steps": 1200,
    "kappa_samples": 7,
    "kappa_rk4_steps": 200,
    "gaussian_std": 0.3,
}
FULL: dict[str, Any] = FAST | {"steps": (10, 30, 100, 300, 1000), "points": 48, "path_steps": 3000, "kappa_samples": 11,
                              "kappa_rk4_steps": 400}

_CHUNK = 8192


def velocity_jacobian(field: Any, X: Tensor, T: Tensor) -> tuple[Tensor, Tensor]:
    """``(v(X, T), J_v(X, T))`` per row by reverse-mode autograd, chunked; shapes ``(R, n)``, ``(R, n, n)``."""
    vs, js = [], []
    n = X.shape[1]
    for r0 in range(0, X.shape[0], _CHUNK):
        with torch.enable_grad():
            xx = X[r0 : r0 + _CHUNK].detach().clone().requires_grad_(True)
            v = field.velocity(xx, T[r0 : r0 + _CHUNK])
            rows = [torch.autograd.grad(v[:, d].sum(), xx, retain_graph=d < n - 1)[0] for d in range(n)]
        vs.append(v.detach())
        js.append(torch.stack(rows, 1).detach())
    return torch.cat(vs), torch.cat(js)


def _velocity(field: Any, X: Tensor, T: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([field.velocity(X[r : r + _CHUNK], T[r : r + _CHUNK]) for r in range(0, X.shape[0], _CHUNK)])


def _data_points(field: Any, kind: str, k: int, seed: int) -> Tensor:
    g = _generator(seed, 2, 31)
    half = k // 2
    xs = field.sample(half, generator=g)
    n = field.n
    if kind == "gmm":
        lo, hi = -3.0, 3.0
    else:  # box mixtures live in [0, 1]^n; Gaussian: mean 0.5
        lo, hi = -0.25, 1.25
    xu = lo + (hi - lo) * torch.rand(k - half, n, generator=g, dtype=DT)
    return torch.cat([xs, xu])


def _path(field: Any, x: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """Exact inversion path by RK4 on the uniform grid ``t_k = 1 - k/K``: times ``(K+1,)``, states ``(K+1, B, n)``."""
    ts = time_grid(K, 1.0, 0.0)
    states = [x]
    rk4(field, x, ts, callback=lambda info: states.append(info["x"]))
    return ts, torch.stack(states)


def _second_derivative(field: Any, X: Tensor, T: Tensor, V: Tensor, J: Tensor, dt: float = 1e-6) -> Tensor:
    """``x'' = d_t v + J_v v`` per row (``d_t v`` by central differences in ``t``, one-sided at 0 and 1)."""
    t_hi = torch.clamp(T + dt, max=1.0)
    t_lo = torch.clamp(T - dt, min=0.0)
    dvdt = (_velocity(field, X, t_hi) - _velocity(field, X, t_lo)) / (t_hi - t_lo)[:, None]
    return dvdt + torch.einsum("rij,rj->ri", J, V)


def compute_field(kind: str, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything for one field: path quantities, then every ``N`` (one resumable unit)."""
    t0 = time.perf_counter()
    field = build_field(kind, 2, seed, gaussian_std=opts["gaussian_std"])
    n = field.n
    x = _data_points(field, kind, int(opts["points"]), seed)
    B = x.shape[0]
    K = int(opts["path_steps"])
    Ns = [int(N) for N in opts["steps"]]
    for N in Ns:
        if K % N:
            raise ValueError(f"path_steps={K} must be a multiple of every N (got N={N})")
    with torch.no_grad():
        z = invert(field, x, **EXACT).x
        ts, path = _path(field, x, K)
    path_end_error = float(torch.linalg.vector_norm(path[-1] - z, dim=1).max())

    # L_path and M along the exact path
    R = (K + 1) * B
    X = path.reshape(R, n)
    T = ts[:, None].expand(K + 1, B).reshape(R)
    V, J = velocity_jacobian(field, X, T)
    jn = torch.linalg.matrix_norm(J, ord=2).reshape(K + 1, B)
    L_path = jn.max(0).values
    acc = _second_derivative(field, X, T, V, J).reshape(K + 1, B, n)
    acc_norm = torch.linalg.vector_norm(acc, dim=2)
    M = acc_norm.max(0).values
    # cross-check x'' by central differences of v along the path (interior grid points)
    Vp = V.reshape(K + 1, B, n)
    dt = (ts[2:] - ts[:-2])[:, None, None]
    acc_fd = (Vp[2:] - Vp[:-2]) / dt
    M_fd = torch.linalg.vector_norm(acc_fd, dim=2).max(0).values
    m_cross = float(((M_fd - M).abs() / M.clamp(min=1e-300)).max())

    # Euler inversions, L_tube, errors, kappa
    L_tube = torch.zeros(B, dtype=DT)
    per_N: dict[int, dict[str, Any]] = {}
    fracs = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=DT)
    kappa_ts = graded_grid(int(opts["kappa_rk4_steps"]))
    G_smooth = lambda p: rk4(field, p, kappa_ts).x  # noqa: E731
    a = torch.linspace(0.0, 1.0, int(opts["kappa_samples"]), dtype=DT)
    z_tilde: dict[int, Tensor] = {}
    for N in Ns:
        grid = time_grid(N, 1.0, 0.0)
        iterates = [x]
        with torch.no_grad():
            z_tilde[N] = euler(field, x, grid, callback=lambda info: iterates.append(info["x"])).x
        Y = torch.stack(iterates)  # (N+1, B, n)
        exact = path[:: K // N]  # (N+1, B, n) at the Euler times
        seg = exact[None] + fracs[:, None, None, None] * (Y - exact)[None]  # (4, N+1, B, n)
        Tseg = grid[None, :, None].expand(4, N + 1, B).reshape(-1)
        _, Jseg = velocity_jacobian(field, seg.reshape(-1, n), Tseg)
        L_tube = torch.maximum(L_tube, torch.linalg.matrix_norm(Jseg, ord=2).reshape(4 * (N + 1), B).max(0).values)
    # all N at once: exact regeneration and the Jacobians of G on the segments [z, z~]
    S = a.shape[0]
    with torch.no_grad():
        zt_all = torch.cat([z_tilde[N] for N in Ns])
        x_hat_all = generate(field, zt_all, **EXACT).x.reshape(len(Ns), B, n)
        w = torch.cat([(z[None] + a[:, None, None] * (z_tilde[N] - z)[None]).reshape(-1, n) for N in Ns])
        Jg = fd_jacobian(G_smooth, w, 1e-6)
    kappa_all = torch.linalg.matrix_norm(Jg, ord=2).reshape(len(Ns), S, B).max(1).values
    for i, N in enumerate(Ns):
        per_N[N] = {
            "noise_error": torch.linalg.vector_norm(z_tilde[N] - z, dim=1),
            "recon_error": torch.linalg.vector_norm(x_hat_all[i] - x, dim=1),
            "kappa": kappa_all[i],
        }
    L = torch.maximum(L_path, L_tube)

    out_N: dict[str, Any] = {}
    for N in Ns:
        d = per_N[N]
        rows = []
        for b in range(B):
            noise, recon, kap = float(d["noise_error"][b]), float(d["recon_error"][b]), float(d["kappa"][b])
            c = check_theorem31(noise, recon, float(L[b]), float(M[b]), N, kappa=kap)
            cp = check_theorem31(noise, recon, float(L_path[b]), float(M[b]), N, kappa=kap)
            rows.append({
                "noise_error": noise, "recon_error": recon, "kappa": kap,
                "holds": {"noise": c.noise_bound_holds, "reconstruction": c.reconstruction_bound_holds,
                          "gronwall": c.gronwall_bound_holds, "amplification": c.amplification_holds,
                          "kappa": c.kappa_bound_holds, "noise_Lpath": cp.noise_bound_holds,
                          "reconstruction_Lpath": cp.reconstruction_bound_holds, "gronwall_Lpath": cp.gronwall_bound_holds},
                "tightness": {"noise": c.tightness_noise, "reconstruction": c.tightness_reconstruction,
                              "gronwall": c.tightness_gronwall,
                              "noise_discrete": math.log(noise) - c.bounds.log_noise_error_discrete if noise > 0 else None},
                "log_bounds": c.bounds.as_dict(),
            })
        out_N[str(N)] = {"rows": rows}
    return {
        "field": kind,
        "n": n,
        "x": x.numpy().tolist(),
        "z": z.numpy().tolist(),
        "L": L.numpy().tolist(),
        "L_path": L_path.numpy().tolist(),
        "L_tube": L_tube.numpy().tolist(),
        "M": M.numpy().tolist(),
        "M_crosscheck_rel": m_cross,
        "path_end_error": path_end_error,
        "per_N": out_N,
        "seconds": time.perf_counter() - t0,
    }


def _slope(Ns: list[int], values: list[float]) -> float | None:
    v = np.asarray(values, dtype=float)
    ok = v > 0
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(Ns, dtype=float)[ok]), np.log(v[ok]), 1)[0])


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    """Per-``N`` medians, holds fractions and tightness of one field's record; slopes vs ``N``."""
    Ns = sorted(int(k) for k in rec["per_N"])
    out: dict[str, Any] = {"by_N": {}}
    med_noise = []
    per_point = []
    for N in Ns:
        rows = rec["per_N"][str(N)]["rows"]
        noise = np.array([r["noise_error"] for r in rows])
        recon = np.array([r["recon_error"] for r in rows])
        med_noise.append(float(np.median(noise)))
        per_point.append(noise)
        holds = {k: float(np.mean([bool(r["holds"][k]) for r in rows])) for k in rows[0]["holds"]}
        tight = {}
        for k in ("noise", "reconstruction", "gronwall", "noise_discrete"):
            vals = np.array([r["tightness"][k] for r in rows if r["tightness"][k] is not None], dtype=float)
            tight[k] = {"median": float(np.median(vals)), "min": float(vals.min()), "max": float(vals.max())} if vals.size else None
        med_bounds = {k: float(np.median([r["log_bounds"][k] for r in rows]))
                      for k in ("log_noise_error", "log_reconstruction_error", "log_gronwall_error")}
        out["by_N"][str(N)] = {
            "noise_error_median": float(np.median(noise)),
            "noise_error_max": float(noise.max()),
            "recon_error_median": float(np.median(recon)),
            "recon_error_max": float(recon.max()),
            "kappa_median": float(np.median([r["kappa"] for r in rows])),
            "amplification_median": float(np.median(recon / noise)),
            "holds_fraction": holds,
            "tightness": tight,
            "median_log_bounds": med_bounds,
        }
    out["slope"] = _slope(Ns, med_noise)
    pts = np.array(per_point)  # (len(N), B)
    slopes = [s for s in (_slope(Ns, pts[:, b].tolist()) for b in range(pts.shape[1])) if s is not None]
    out["slope_per_point_median"] = float(np.median(slopes)) if slopes else None
    for key in ("L", "L_path", "L_tube", "M"):
        arr = np.array(rec[key])
        out[f"{key}_median"] = float(np.median(arr))
        out[f"{key}_max"] = float(arr.max())
    out["L_tube_over_path_max"] = float(np.max(np.array(rec["L_tube"]) / np.array(rec["L_path"])))
    out["path_end_error"] = rec["path_end_error"]
    out["M_crosscheck_rel"] = rec["M_crosscheck_rel"]
    return out


def _verdict(summaries: dict[str, dict[str, Any]]) -> Verdict:
    fails = []
    parts = []
    for kind, s in summaries.items():
        for N, d in s["by_N"].items():
            for b in ("noise", "reconstruction", "gronwall", "amplification", "kappa"):
                if d["holds_fraction"][b] < 1.0:
                    fails.append(f"{kind} N={N} {b}: holds at {d['holds_fraction'][b]:.0%}")
        tight = ", ".join(
            f"N={N}: " + "/".join(f"{d['tightness'][b]['median']:.1f}" for b in BOUNDS) for N, d in s["by_N"].items()
        )
        mins = "/".join(f"{max(d['tightness'][b]['max'] for d in s['by_N'].values()):.2f}" for b in BOUNDS)
        lpath = min(min(d["holds_fraction"][f"{b}_Lpath"] for b in BOUNDS) for d in s["by_N"].values())
        parts.append(
            f"{kind}: L median {s['L_median']:.2f} (path {s['L_path_median']:.2f}, tube/path max {s['L_tube_over_path_max']:.3f}), "
            f"M median {s['M_median']:.3g}; slope of log median ||z~-z|| vs log N = {s['slope']:.3f} "
            f"(per-point median {s['slope_per_point_median']:.3f}); median log(measured/bound) noise/recon(kappa)/gronwall: {tight}; "
            f"largest log(measured/bound) {mins} (<= 0 means holds); with L_path alone the bounds hold at >= {lpath:.0%}"
        )
    total = sum(len(s["by_N"]) for s in summaries.values())
    key = (f"bounds (1)-(3), kappa <= e^L and ||x^-x|| <= kappa ||z~-z|| hold at 100% of points for all {total} (field, N) cases"
           if not fails else f"{len(fails)} bound failures")
    evidence = "Checked per point by theory.thm31.check_theorem31 (slack 1e-9); " + "; ".join(parts)
    if fails:
        return Verdict("refuted", key, evidence + "; failures: " + "; ".join(fails[:10]))
    return Verdict("verified", key, evidence)


def _figure(summaries: dict[str, dict[str, Any]], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, len(summaries))
    fig, axes = plt.subplots(1, k, figsize=(5.5 * k, 4.2), squeeze=False)
    for ax, (kind, s) in zip(axes[0], summaries.items()):
        Ns = sorted(int(N) for N in s["by_N"])
        d = [s["by_N"][str(N)] for N in Ns]
        ax.plot(Ns, [r["noise_error_median"] for r in d], "o-", color="C0", label="||z~ - z|| (median)")
        ax.plot(Ns, [r["noise_error_max"] for r in d], "o:", color="C0", alpha=0.6, label="||z~ - z|| (max)")
        ax.plot(Ns, [r["recon_error_median"] for r in d], "s-", color="C1", label="||G(z~) - x|| (median)")
        ax.plot(Ns, [r["recon_error_max"] for r in d], "s:", color="C1", alpha=0.6, label="||G(z~) - x|| (max)")
        for b, st, c in (("log_noise_error", "--", "C0"), ("log_reconstruction_error", "--", "C1"), ("log_gronwall_error", "-.", "C3")):
            vals = [math.exp(min(r["median_log_bounds"][b], 700.0)) for r in d]
            ax.plot(Ns, vals, st, color=c, label=f"bound {b[4:]} (median)")
        ref = d[0]["noise_error_median"] * Ns[0] / np.array(Ns, dtype=float)
        ax.plot(Ns, ref, "k:", lw=0.8, label="slope -1")
        ax.set(xscale="log", yscale="log", xlabel="Euler steps N", ylabel="error", title=f"Theorem 3.1: {kind}")
        ax.legend(fontsize=6)
    return savefig(fig, out_dir, "thm31.png")


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Theorem 3.1 check; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    params = {"full": full, "seed": seed, **opts, "exact_solver": EXACT}
    store = RecordStore(out_dir, params)
    for kind in progress_iter(opts["fields"], "thm31", progress):
        if not store.done(kind):
            store.add(kind, compute_field(kind, opts, seed))
    records = {kind: store.get(kind) for kind in opts["fields"]}
    summaries = {kind: summarize(rec) for kind, rec in records.items()}
    verdict = _verdict(summaries)
    figures = [_figure(summaries, out_dir)]
    numbers = {
        "per_field": summaries,
        "per_point": {k: {"L": r["L"], "L_path": r["L_path"], "L_tube": r["L_tube"], "M": r["M"],
                          "per_N": r["per_N"]} for k, r in records.items()},
        "seconds_per_field": {k: r["seconds"] for k, r in records.items()},
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
