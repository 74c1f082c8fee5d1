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

Options: :class:`Thm31Options` (keyword overrides of :func:`run`): ``fields`` (tuple of ``"gmm"``,
``"box"``, ``"gaussian"``), ``steps`` (the ``N`` values; every one must divide ``path_steps``),
``points`` (per field, half from ``p_g``, half uniform), ``path_steps``, ``kappa_samples``,
``kappa_rk4_steps``, ``gaussian_std``.

``result.json`` numbers: ``per_field`` -> per ``N``: ``noise_error_median``, ``recon_error_median``,
``holds_fraction`` (``noise``, ``reconstruction``, ``gronwall``, ``amplification``, ``kappa``,
``*_Lpath`` with ``L_path``), ``tightness`` (median and min of ``log(measured/bound)`` per bound),
``kappa_median``; and per field ``L``, ``L_path``, ``L_tube``, ``M`` (per point), ``slope``
(least squares of ``log median ||z~ - z||`` vs ``log N``), ``slope_per_point_median``,
``path_end_error``, ``M_crosscheck_rel``. Figure ``thm31.png``: measured errors and bounds vs
``N`` (log-log), one panel per field (:mod:`.thm31_figures`); summaries and verdict: :mod:`.thm31_judge`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from theory._validate import require_int
from simulate.maps import generate, invert
from simulate.solvers import euler, rk4, time_grid
from theory.thm31 import check_theorem31

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.oracles import DT, build_field, fd_jacobian, graded_grid, seeded_generator, velocity_jacobian
from simulate.experiments.runner import sweep
from simulate.experiments.thm31.judge import BOUNDS, judge, summarize

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "Thm31Options", "FAST", "FULL", "EXACT", "BOUNDS", "make_options", "run",
           "velocity_jacobian", "compute_unit", "summarize"]

NAME = "thm31"
DESCRIPTION = "Theorem 3.1: Euler-inversion and reconstruction errors against their bounds (h M / 2L)(e^L - 1), kappa x that, Gronwall"
CLAIM_IDS = ["thm31"]

EXACT = {"solver": "dopri5", "rtol": 1e-11, "atol": 1e-13}
FIELD_KINDS = ("gmm", "box", "gaussian")
_CHUNK = 8192


@dataclass(frozen=True)
class Thm31Options:
    """Options of the Theorem 3.1 experiment (see the module docstring; validated on construction)."""

    fields: tuple[str, ...] = ("gmm", "box")
    steps: tuple[int, ...] = (10, 30, 100, 300)
    points: int = 12
    path_steps: int = 1200
    kappa_samples: int = 7
    kappa_rk4_steps: int = 200
    gaussian_std: float = 0.3

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("fields", tuple(str(k) for k in self.fields))
        put("steps", tuple(require_int("steps", N) for N in self.steps))
        for name, low in (("points", 2), ("path_steps", 1), ("kappa_samples", 2), ("kappa_rk4_steps", 1)):
            put(name, require_int(name, getattr(self, name), low))
        put("gaussian_std", float(self.gaussian_std))
        bad = [k for k in self.fields if k not in FIELD_KINDS]
        if not self.fields or bad:
            raise ValueError(f"fields must be a non-empty tuple of {', '.join(FIELD_KINDS)}, got {self.fields}")
        if not self.steps:
            raise ValueError("steps must be non-empty positive integers, got ()")
        for N in self.steps:
            if self.path_steps % N:
                raise ValueError(f"path_steps={self.path_steps} must be a multiple of every N (got N={N})")
        if not self.gaussian_std > 0:
            raise ValueError(f"gaussian_std must be > 0, got {self.gaussian_std}")


FAST = Thm31Options()
FULL = Thm31Options(steps=(10, 30, 100, 300, 1000), points=48, path_steps=3000, kappa_samples=11, kappa_rk4_steps=400)


def make_options(full: bool = False, **overrides: Any) -> Thm31Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def _velocity(field: Any, X: Tensor, T: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([field.velocity(X[r : r + _CHUNK], T[r : r + _CHUNK]) for r in range(0, X.shape[0], _CHUNK)])


def _data_points(field: Any, kind: str, k: int, seed: int) -> Tensor:
    g = seeded_generator(seed, 2, 31)
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


def check_row(noise: float, recon: float, L: float, L_path: float, M: float, N: int, kappa: float) -> dict[str, Any]:
    """One point's record: Theorem 3.1's bounds checked (:func:`theory.thm31.check_theorem31`, docs/theory.md §5.1)
    with ``L`` (path and tube) and with ``L_path`` alone, the tightness ``log(measured / bound)`` and the bounds."""
    c = check_theorem31(noise, recon, L, M, N, kappa=kappa)
    cp = check_theorem31(noise, recon, L_path, M, N, kappa=kappa)
    return {
        "noise_error": noise, "recon_error": recon, "kappa": kappa,
        "holds": {"noise": c.noise_bound_holds, "reconstruction": c.reconstruction_bound_holds,
                  "gronwall": c.gronwall_bound_holds, "amplification": c.amplification_holds,
                  "kappa": c.kappa_bound_holds, "noise_Lpath": cp.noise_bound_holds,
                  "reconstruction_Lpath": cp.reconstruction_bound_holds, "gronwall_Lpath": cp.gronwall_bound_holds},
        "tightness": {"noise": c.tightness_noise, "reconstruction": c.tightness_reconstruction,
                      "gronwall": c.tightness_gronwall,
                      "noise_discrete": math.log(noise) - c.bounds.log_noise_error_discrete if noise > 0 else None},
        "log_bounds": c.bounds.as_dict(),
    }


def compute_unit(kind: str, opts: Thm31Options, seed: int) -> dict[str, Any]:
    """Everything for one field (one resumable unit): the path quantities ``L``, ``M`` of Theorem 3.1
    (docs/theory.md §5.1), then per ``N`` the Euler inversion, reconstruction and ``kappa``, checked per point."""
    t0 = time.perf_counter()
    field = build_field(kind, 2, seed, gaussian_std=opts.gaussian_std)
    n = field.n
    x = _data_points(field, kind, opts.points, seed)
    B = x.shape[0]
    K = opts.path_steps
    Ns = list(opts.steps)
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
    kappa_ts = graded_grid(opts.kappa_rk4_steps)
    G_smooth = lambda p: rk4(field, p, kappa_ts).x  # noqa: E731
    a = torch.linspace(0.0, 1.0, opts.kappa_samples, dtype=DT)
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
        rows = [check_row(float(d["noise_error"][b]), float(d["recon_error"][b]), float(L[b]), float(L_path[b]), float(M[b]), N,
                          float(d["kappa"][b])) for b in range(B)]
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



def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Theorem 3.1 check (sweep, judge, figure, ``result.json``); see the module docstring."""
    from simulate.experiments.thm31.figures import draw_figures

    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    params = {"full": full, "seed": seed, **asdict(opts), "exact_solver": EXACT}
    store = RecordStore(out_dir, params)
    sweep(store, [(kind, partial(compute_unit, kind, opts, seed)) for kind in opts.fields], desc="thm31", progress=progress)
    records = {kind: store.get(kind) for kind in opts.fields}
    judged = judge(opts, records)
    figures = draw_figures(out_dir, judged.numbers["per_field"])
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, judged.numbers, figures,
                              time.perf_counter() - start)
    write_result(out_dir, result)
    return result
