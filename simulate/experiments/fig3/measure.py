r"""Measurements of the Fig. 3 experiment: the 2-D mixture, the map ``G`` and its four parts (units).

``G`` is the generation map (docs/theory.md §4.3) of the mixture's exact field, solved by
``opts.solver``. The units (:data:`PARTS`, :func:`compute_unit`):

* ``"expansion"`` -- the image of the green square, traced through the image of its boundary
  (:func:`trace_image_boundary`; ``G`` is a diffeomorphism, so the image of the boundary is the
  boundary of the image): extent ratios along x and y, area ratio (:func:`polygon_area`);
* ``"lambda_map"`` -- ``lambda_G(z, e_x) = ||J_G(z) e_x||`` (docs/theory.md §2.1) on a grid by
  central finite differences (:func:`fd_jacobian_2d`) and the paper's grid-neighbour estimator;
* ``"line"`` -- along ``z2 = line_z2``: ``lambda_x``, ``lambda_y``, ``||J_G||_2``, ``mu_G(z, s e_x)``
  (§2.2) and the Proposition 2.1 check ``mu_G(z, s v_1) -> ||J_G(z)||_2`` as ``s -> 0`` (§2.4);
* ``"jvp_check"`` -- ``lambda_x`` by JVP through the solve (§9.1) against the finite differences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simulate.fields import GaussianMixture
from simulate.instability import lambda_G
from simulate.maps import generate

from simulate.experiments.fig3.options import Fig3Options

__all__ = ["DT", "PARTS", "build_field", "fd_jacobian_2d", "trace_image_boundary", "polygon_area", "green_grid",
           "compute_unit"]

DT = torch.float64
PARTS = ("expansion", "lambda_map", "line", "jvp_check")


def build_field(opts: Any) -> GaussianMixture:
    """The Gaussian mixture of ``opts`` (``means``, ``stds``, ``weights``; docs/theory.md §3.3)."""
    return GaussianMixture(
        torch.as_tensor(np.asarray(opts.means, dtype=float), dtype=DT),
        torch.as_tensor(np.asarray(opts.stds, dtype=float), dtype=DT),
        torch.as_tensor(np.asarray(opts.weights, dtype=float), dtype=DT),
    )


def solve_kwargs(opts: Fig3Options) -> dict[str, Any]:
    """The solver arguments of ``G``."""
    return {"solver": opts.solver, "steps": int(opts.steps), "rtol": float(opts.rtol), "atol": float(opts.atol)}


def generate_x(field: Any, z: Tensor, opts: Fig3Options) -> Tensor:
    """``G(z)`` (docs/theory.md §4.3), no gradients."""
    with torch.no_grad():
        return generate(field, z, **solve_kwargs(opts)).x


def fd_jacobian_2d(field: Any, z: Tensor, opts: Fig3Options, with_center: bool = True,
                   fd_step: float | None = None) -> tuple[Tensor, Tensor | None]:
    """Central-difference Jacobian ``J[b] = [dG/dz1, dG/dz2]`` (``(B, 2, 2)``) and ``G(z)``.

    ``J[b, :, j] = (G(z_b + h e_j) - G(z_b - h e_j)) / (2 h)`` with ``h = fd_step`` (default
    ``opts.fd_step``); all ``4 B`` shifted copies (and the ``B`` centres) go through one batched solve.
    Not :func:`.oracles.fd_jacobian`: that orders the batch differently and solves the centres
    apart, which moves dopri5's results by ~1e-11 (relative), and Fig. 3's numbers are kept exactly.
    """
    h = float(opts.fd_step if fd_step is None else fd_step)
    B = z.shape[0]
    ex = torch.tensor([h, 0.0], dtype=z.dtype)
    ey = torch.tensor([0.0, h], dtype=z.dtype)
    parts = [z + ex, z - ex, z + ey, z - ey] + ([z] if with_center else [])
    out = generate_x(field, torch.cat(parts), opts)
    px, mx, py, my = (out[i * B : (i + 1) * B] for i in range(4))
    J = torch.stack([(px - mx) / (2 * h), (py - my) / (2 * h)], dim=-1)
    return J, (out[4 * B :] if with_center else None)


def _square_point(s: np.ndarray, center: tuple[float, float], half: float) -> np.ndarray:
    """Perimeter parameter ``s in [0, 4)`` -> point on the square (counter-clockwise from the lower-left)."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=float)
    k = np.clip(np.floor(s).astype(int), 0, 3)
    f = (s - k)[:, None]
    p = corners[k] * (1 - f) + corners[k + 1] * f
    return np.asarray(center, dtype=float) + half * p


def trace_image_boundary(field: Any, opts: Fig3Options) -> dict[str, Any]:
    """Image of the green square's boundary, adaptively refined where image points are far apart.

    Returns the perimeter parameters ``s``, the boundary points ``z`` and their images ``x`` (closed
    polygon in order), the number of rounds and the largest remaining image gap.
    """
    center, half = tuple(opts.green_center), float(opts.green_half)
    s = np.linspace(0.0, 4.0, int(opts.boundary_points), endpoint=False)
    x = generate_x(field, torch.as_tensor(_square_point(s, center, half), dtype=DT), opts).numpy()
    gap_tol = float(opts.boundary_gap)
    min_width = float(opts.boundary_min_width)
    pieces = 8
    rounds = 0
    for rounds in range(1, int(opts.boundary_rounds) + 1):
        nxt = np.roll(x, -1, axis=0)
        gaps = np.linalg.norm(nxt - x, axis=1)
        s_next = np.roll(s, -1)
        s_next[-1] += 4.0
        width = s_next - s
        split = (gaps > gap_tol) & (width > min_width)
        if not split.any():
            break
        # each flagged segment is cut into ``pieces`` (a handful of rounds resolves the steep ridge)
        frac = np.arange(1, pieces) / pieces
        s_new = np.mod((s[split][:, None] + width[split][:, None] * frac[None]).ravel(), 4.0)
        x_new = generate_x(field, torch.as_tensor(_square_point(s_new, center, half), dtype=DT), opts).numpy()
        s = np.concatenate([s, s_new])
        x = np.concatenate([x, x_new])
        order = np.argsort(s, kind="stable")
        s, x = s[order], x[order]
    gaps = np.linalg.norm(np.roll(x, -1, axis=0) - x, axis=1)
    return {"s": s, "z": _square_point(s, center, half), "x": x, "rounds": rounds, "max_gap": float(gaps.max())}


def polygon_area(p: np.ndarray) -> float:
    """Area of a closed polygon (vertices in order) by the shoelace formula."""
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def green_grid(opts: Fig3Options) -> Tensor:
    """The ``green_n x green_n`` grid of noises over the green square (rows of ``(z1, z2)``)."""
    c, a, gn = opts.green_center, float(opts.green_half), int(opts.green_n)
    q1 = torch.linspace(c[0] - a, c[0] + a, gn, dtype=DT)
    q2 = torch.linspace(c[1] - a, c[1] + a, gn, dtype=DT)
    return torch.stack(torch.meshgrid(q1, q2, indexing="xy"), -1).reshape(-1, 2)


def _expansion(field: Any, opts: Fig3Options) -> dict[str, Any]:
    bnd = trace_image_boundary(field, opts)
    a = float(opts.green_half)
    green_img = generate_x(field, green_grid(opts), opts).numpy()
    bx = bnd["x"]
    red_bbox = [float(bx[:, 0].min()), float(bx[:, 0].max()), float(bx[:, 1].min()), float(bx[:, 1].max())]
    numbers = {
        "green_center": list(opts.green_center),
        "green_half": a,
        "x_extent_ratio": (red_bbox[1] - red_bbox[0]) / (2 * a),
        "y_extent_ratio": (red_bbox[3] - red_bbox[2]) / (2 * a),
        "area_ratio": polygon_area(bx) / (2 * a) ** 2,
        "red_bbox": red_bbox,
        "boundary_points": int(len(bx)),
        "boundary_rounds": int(bnd["rounds"]),
        "max_boundary_gap": bnd["max_gap"],
    }
    return {"numbers": numbers, "boundary": bnd, "green_image": green_img}


def _lambda_map(field: Any, opts: Fig3Options) -> dict[str, Any]:
    n, lim = int(opts.grid_n), float(opts.grid_lim)
    g = torch.linspace(-lim, lim, n, dtype=DT)
    Z = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)  # row j (z2), column i (z1)
    J, X = fd_jacobian_2d(field, Z, opts)
    lam_x = torch.linalg.vector_norm(J[:, :, 0], dim=-1).reshape(n, n).numpy()
    lam_y = torch.linalg.vector_norm(J[:, :, 1], dim=-1).reshape(n, n).numpy()
    Xg = X.reshape(n, n, 2).numpy()
    dz = float(g[1] - g[0])
    fwd = np.linalg.norm(Xg[:, 1:, :] - Xg[:, :-1, :], axis=-1) / dz
    lam_grid = np.concatenate([fwd, fwd[:, -1:]], axis=1)
    gn = g.numpy()
    c, a = opts.green_center, float(opts.green_half)
    Zx, Zy = np.meshgrid(gn, gn, indexing="xy")
    in_green = (np.abs(Zx - c[0]) <= a + 1e-12) & (np.abs(Zy - c[1]) <= a + 1e-12)
    amax = np.unravel_index(int(np.argmax(lam_x)), lam_x.shape)
    numbers = {
        "grid_n": n,
        "grid_lim": lim,
        "spacing": dz,
        "max_lambda_x": float(lam_x.max()),
        "argmax_z": [float(gn[amax[1]]), float(gn[amax[0]])],
        "fraction_lambda_x_gt_1": float(np.mean(lam_x > 1)),
        "points_lambda_x_gt_1": int(np.sum(lam_x > 1)),
        "max_lambda_x_grid_fd": float(lam_grid.max()),
        "fraction_lambda_x_gt_1_grid_fd": float(np.mean(lam_grid > 1)),
        "max_lambda_y": float(lam_y.max()),
        "fraction_lambda_y_gt_1": float(np.mean(lam_y > 1)),
        "green_lambda_x_min": float(lam_x[in_green].min()) if in_green.any() else None,
        "green_lambda_x_max": float(lam_x[in_green].max()) if in_green.any() else None,
        "green_fraction_lambda_x_gt_1": float(np.mean(lam_x[in_green] > 1)) if in_green.any() else None,
    }
    return {"numbers": numbers, "g": gn, "lam_x": lam_x, "lam_y": lam_y, "lam_grid": lam_grid, "spacing": dz}


def _line(field: Any, opts: Fig3Options) -> dict[str, Any]:
    lim, n = float(opts.grid_lim), int(opts.line_n)
    z1 = torch.linspace(-lim, lim, n, dtype=DT)
    Z = torch.stack([z1, torch.full_like(z1, float(opts.line_z2))], -1)
    J, GZ = fd_jacobian_2d(field, Z, opts)
    lam_x = torch.linalg.vector_norm(J[:, :, 0], dim=-1)
    lam_y = torch.linalg.vector_norm(J[:, :, 1], dim=-1)
    _, S, Vh = torch.linalg.svd(J)
    norm2 = S[:, 0]
    v1 = Vh[:, 0, :]
    s_values = [float(s) for s in opts.s_values]
    p_s = [float(s) for s in opts.prop21_s]
    nd = int(opts.n_dirs)
    ang = torch.arange(nd, dtype=DT) * (2 * math.pi / nd)
    dirs = torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    ex = torch.tensor([1.0, 0.0], dtype=DT)
    batch = [Z + s * ex for s in s_values] + [Z + s * v1 for s in p_s]
    batch.append((Z[:, None, :] + p_s[-1] * dirs[None]).reshape(-1, 2))
    out = generate_x(field, torch.cat(batch), opts)
    mu: dict[str, list[float]] = {}
    k = 0
    for s in s_values:
        mu[f"{s:g}"] = (torch.linalg.vector_norm(out[k : k + n] - GZ, dim=-1) / s).tolist()
        k += n
    # points where the finite-difference Jacobian is resolved (step h and 10 h agree to 1e-3): off
    # the basin-boundary ridge, where lambda ~ 1e13 cannot be resolved by any practical step
    J10, _ = fd_jacobian_2d(field, Z, opts, with_center=False, fd_step=10.0 * float(opts.fd_step))
    norm10 = torch.linalg.svdvals(J10)[:, 0]
    resolved = ((norm10 - norm2).abs() / norm2 < 1e-3).numpy()
    prop_gap, prop_gap_median = {}, {}
    for s in p_s:
        m = torch.linalg.vector_norm(out[k : k + n] - GZ, dim=-1) / s
        gap = ((m - norm2).abs() / norm2).numpy()
        prop_gap[f"{s:g}"] = float(gap[resolved].max()) if resolved.any() else None
        prop_gap_median[f"{s:g}"] = float(np.median(gap))
        k += n
    md = (torch.linalg.vector_norm(out[k:].reshape(n, nd, 2) - GZ[:, None], dim=-1) / p_s[-1]).max(1).values
    ratio_dirs = (md / norm2).numpy()
    lx = lam_x.numpy()
    return {
        "z2": float(opts.line_z2),
        "z1": z1.numpy(),
        "lambda_x": lx,
        "lambda_y": lam_y.numpy(),
        "spectral_norm": norm2.numpy(),
        "mu": mu,
        "fraction_lambda_x_gt_1": float(np.mean(lx > 1)),
        "fraction_lambda_y_gt_1": float(np.mean(lam_y.numpy() > 1)),
        "max_lambda_x": float(lx.max()),
        "max_lambda_y": float(lam_y.max()),
        "fraction_mu_ge_lambda_x": {s: float(np.mean(np.asarray(v) >= lx * (1 - 1e-6))) for s, v in mu.items()},
        "fd_resolved_points": int(resolved.sum()),
        "prop21_rel_gap": prop_gap,
        "prop21_rel_gap_median_all": prop_gap_median,
        "prop21_max_dirs_over_norm_min": float(ratio_dirs[resolved].min()) if resolved.any() else None,
        "prop21_max_dirs_over_norm_median_all": float(np.median(ratio_dirs)),
    }


def _jvp_check(field: Any, opts: Fig3Options) -> dict[str, Any]:
    """JVP (AD through the solve) check of the finite differences: points of the line, off the ridge, and the green centre."""
    lim = float(opts.grid_lim)
    npts = int(opts.jvp_points)
    zj = torch.stack([torch.linspace(-0.8 * lim, 0.8 * lim, npts, dtype=DT) + 0.137,
                      torch.full((npts,), float(opts.line_z2), dtype=DT)], -1)
    zj = torch.cat([zj, torch.tensor([list(opts.green_center)], dtype=DT)])
    ex = torch.tensor([[1.0, 0.0]], dtype=DT).expand(zj.shape[0], 2)
    lam_jvp = lambda_G(field, zj, ex, method="jvp", **solve_kwargs(opts)).numpy()
    J, _ = fd_jacobian_2d(field, zj, opts, with_center=False)
    lam_fd = torch.linalg.vector_norm(J[:, :, 0], dim=-1).numpy()
    rel = np.abs(lam_fd[:-1] - lam_jvp[:-1]) / np.abs(lam_jvp[:-1])
    return {
        "jvp_check": {"z": zj[:-1].numpy(), "lambda_fd": lam_fd[:-1], "lambda_jvp": lam_jvp[:-1],
                      "max_rel_diff": float(rel.max()) if rel.size else None},
        "lambda_x_jvp_at_green_center": float(lam_jvp[-1]),
        "lambda_x_fd_at_green_center": float(lam_fd[-1]),
    }


_COMPUTE = {"expansion": _expansion, "lambda_map": _lambda_map, "line": _line, "jvp_check": _jvp_check}


def compute_unit(part: str, field: Any, opts: Fig3Options) -> dict[str, Any]:
    """Measure one part of :data:`PARTS` (deterministic: no random numbers)."""
    if part not in _COMPUTE:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    return _COMPUTE[part](field, opts)
