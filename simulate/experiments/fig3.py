r"""Fig. 3 (Section 3.1, Appendix E.1): the 2-D generation map expands a region along the x-axis.

The paper's setting (three-component 2-D Gaussian mixture, RK45 generation, finite differences
over a uniform grid of initial noises) with its exact component parameters unrecoverable from
the text. The mixture used here (stated in ``result.json``):

* means ``(-2, -1)``, ``(2, -1)``, ``(0, 2)`` (a triangle), common std ``0.25``, weights
  ``(0.4, 0.4, 0.2)``. The noise plane splits into three basins (the noises each component
  collects); the boundary between the two lower components' basins is the half-line
  ``z1 = 0, z2 < ~0.3`` which passes through the origin. Noises just left / right of it go to
  opposite components 4 apart, so ``G`` stretches a neighbourhood of the origin along ``x``
  (the paper's "green region" expanded into the "red region") while contracting along ``y``.

Generation is ``dopri5`` (the RK45 pair) with ``rtol = 1e-9``, ``atol = 1e-11``.

Measurements:

(a) ``p_g`` on a grid (the field's exact ``log_prob(x, 1)``); the green region is the square
    ``green_center +- green_half``; its image ``G(green)`` (red) is traced through the image of the
    square's boundary, refined adaptively (each flagged segment cut in 8, at most
    ``boundary_rounds`` rounds, down to a parameter width ``boundary_min_width``) wherever two
    neighbouring boundary points land more than ``boundary_gap`` apart (``G`` is a diffeomorphism,
    so the image of the boundary is the boundary of the image). Reported: ``x_extent_ratio`` = x-extent of the red region / x-extent of the green
    square, the same along y, and ``area_ratio`` = area(red) / area(green) (shoelace on the traced
    boundary).
(b) ``lambda_x(z) = lambda_G(z, e_x) = ||J_G(z) e_x||`` on a ``grid_n x grid_n`` grid of
    ``[-grid_lim, grid_lim]^2`` by central finite differences with step ``fd_step`` (all grid points
    and their shifted copies in one batched solve), and the paper's estimator over grid neighbours
    ``||G(z_{i+1,j}) - G(z_{i,j})|| / ||z_{i+1,j} - z_{i,j}||`` (forward difference; backward on the
    last column). Reported: max, fraction of the grid with ``lambda_x > 1`` (both estimators), the
    values over the green square, and a JVP (AD through the solve) check of the finite differences
    at ``jvp_points`` points of the dashed line plus at the green centre.
    Note: on the basin boundary ``lambda_x`` is enormous (``G`` maps it into the near-empty gap
    between two components, where ``|det J_G| = phi(z) / p_g(G(z))`` is huge: at the origin the JVP
    gives ~1e13 for the default mixture). Grid maxima are therefore limited by the finite
    difference step / the grid spacing; the fraction of the grid with ``lambda_x > 1`` is the
    robust number. For the same reason single line points exactly on the ridge (``z1 = 0``) can show
    spurious finite-difference values of ``lambda_y`` (rounding of order 1e-17 amplified ~1e13).
(c) along the dashed line ``z2 = line_z2``: ``lambda_x``, ``lambda_y``, ``||J_G||_2`` (from the 2x2
    finite-difference Jacobian) and ``mu_G(z, s e_x) = ||G(z + s e_x) - G(z)|| / s`` for the
    ``s_values``; Prop. 2.1 check: ``mu_G(z, s v_1)`` along the top right-singular vector ``v_1``
    tends to ``||J_G(z)||_2`` as ``s -> 0`` (relative gaps reported for each ``s`` in
    ``prop21_s``) and the maximum of ``mu_G(z, s d)`` over ``n_dirs`` directions at
    ``s = prop21_s[-1]``, over the line points where the finite-difference Jacobian is resolved
    (steps ``h`` and ``10 h`` agree to 1e-3; the few points on the basin-boundary ridge are not).
    The paper's remark that ``mu`` at a larger input difference is "lower bounded by" ``lambda`` is
    reported descriptively (``fraction_mu_ge_lambda_x``); it is not a theorem.

Verdict on "the generation map expands a region along the x-axis (lambda > 1 there)":
:func:`classify_expansion` -- ``verified`` if ``lambda_x > 1`` on at least ``min_region_points`` grid
points (a region, not a single point) and the green square's image is longer along ``x`` than the
square (``x_extent_ratio > 1``); ``holds in regime ...`` if only one of the two holds; ``refuted``
if ``lambda_x <= 1`` on the whole grid and the image is not longer along x.

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``means``, ``stds``, ``weights``,
``grid_n``, ``grid_lim``, ``fd_step``, ``green_center``, ``green_half``, ``green_n``,
``boundary_points``, ``boundary_gap``, ``boundary_rounds``, ``boundary_min_width``, ``line_z2``, ``line_n``, ``s_values``,
``prop21_s``, ``n_dirs``, ``jvp_points``, ``min_region_points``, ``solver``, ``steps``, ``rtol``,
``atol``, ``density_n``.

``result.json`` numbers (keys):

* ``field``: ``means``, ``stds``, ``weights``;
* ``expansion``: ``green_center``, ``green_half``, ``x_extent_ratio``, ``y_extent_ratio``,
  ``area_ratio``, ``red_bbox`` (``[xmin, xmax, ymin, ymax]``), ``boundary_points`` (after
  refinement), ``max_boundary_gap`` (largest remaining image gap);
* ``lambda_map``: ``grid_n``, ``grid_lim``, ``spacing``, ``max_lambda_x``, ``argmax_z``,
  ``fraction_lambda_x_gt_1``, ``points_lambda_x_gt_1``, ``max_lambda_x_grid_fd``,
  ``fraction_lambda_x_gt_1_grid_fd``, ``max_lambda_y``, ``fraction_lambda_y_gt_1``,
  ``green_lambda_x_min``, ``green_lambda_x_max``, ``green_fraction_lambda_x_gt_1``,
  ``jvp_check`` (``z``, ``lambda_fd``, ``lambda_jvp``, ``max_rel_diff`` over the off-ridge points),
  ``lambda_x_jvp_at_green_center``;
* ``line``: ``z2``, ``z1`` (list), ``lambda_x``, ``lambda_y``, ``spectral_norm``, ``mu`` (``{s: list}``),
  ``fraction_lambda_x_gt_1``, ``fraction_lambda_y_gt_1``, ``max_lambda_x``, ``max_lambda_y``,
  ``fraction_mu_ge_lambda_x`` (``{s: fraction}``), ``fd_resolved_points``, ``prop21_rel_gap``
  (``{s: max over resolved z of |mu(z, s v_1) - ||J||_2| / ||J||_2}``),
  ``prop21_rel_gap_median_all`` (median over all line points), ``prop21_max_dirs_over_norm_min``
  (min over resolved z of ``max_d mu(z, s d) / ||J||_2``), ``prop21_max_dirs_over_norm_median_all``;
* ``timings``: seconds per part.

Figures: ``fig3a_density.png`` (density, green square, red image), ``fig3b_lambda_x.png``
(``log10 lambda_x`` map, ``lambda_x = 1`` contour, green square, dashed line; the grid-neighbour
estimator beside it), ``fig3c_line.png`` (curves along the dashed line).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simulate.fields import GaussianMixture
from simulate.instability import lambda_G
from simulate.maps import generate

from .common import ExperimentResult, Verdict, savefig, write_result, resolve_options

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "FAST",
    "FULL",
    "run",
    "build_field",
    "resolve_options",
    "fd_jacobian_2d",
    "trace_image_boundary",
    "polygon_area",
    "classify_expansion",
]

NAME = "fig3"
DESCRIPTION = "Fig. 3: the 2-D generation map expands a region along the x-axis (lambda_x > 1 there)"
CLAIM_IDS = ["fig3"]

DT = torch.float64

FAST: dict[str, Any] = {
    "means": ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0)),
    "stds": 0.25,
    "weights": (0.4, 0.4, 0.2),
    "grid_n": 101,
    "grid_lim": 3.0,
    "fd_step": 1e-5,
    "green_center": (0.0, 0.0),
    "green_half": 0.1,
    "green_n": 21,
    "boundary_points": 400,
    "boundary_gap": 0.02,
    "boundary_rounds": 20,
    "boundary_min_width": 1e-10,
    "line_z2": 0.0,
    "line_n": 121,
    "s_values": (0.01, 0.1, 0.5),
    "prop21_s": (1e-2, 1e-3),
    "n_dirs": 32,
    "jvp_points": 3,
    "min_region_points": 3,
    "solver": "dopri5",
    "steps": 200,
    "rtol": 1e-9,
    "atol": 1e-11,
    "density_n": 200,
}
FULL: dict[str, Any] = FAST | {
    "grid_n": 201,
    "green_n": 41,
    "boundary_points": 1000,
    "line_n": 301,
    "n_dirs": 64,
    "jvp_points": 7,
    "density_n": 300,
}


# ------------------------------------------------------------------------------ helpers


def build_field(opts: dict[str, Any]) -> GaussianMixture:
    """The Gaussian mixture of ``opts`` (``means``, ``stds``, ``weights``)."""
    return GaussianMixture(
        torch.as_tensor(np.asarray(opts["means"], dtype=float), dtype=DT),
        torch.as_tensor(np.asarray(opts["stds"], dtype=float), dtype=DT),
        torch.as_tensor(np.asarray(opts["weights"], dtype=float), dtype=DT),
    )


def _solve_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    return {"solver": opts["solver"], "steps": int(opts["steps"]), "rtol": float(opts["rtol"]), "atol": float(opts["atol"])}


def _G(field: Any, z: Tensor, opts: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return generate(field, z, **_solve_kwargs(opts)).x


def fd_jacobian_2d(field: Any, z: Tensor, opts: dict[str, Any], with_center: bool = True) -> tuple[Tensor, Tensor | None]:
    """Central-difference Jacobian ``J[b] = [dG/dz1, dG/dz2]`` (``(B, 2, 2)``) and ``G(z)``.

    All ``4 B`` shifted copies (and the ``B`` centres) go through one batched solve.
    """
    h = float(opts["fd_step"])
    B = z.shape[0]
    ex = torch.tensor([h, 0.0], dtype=z.dtype)
    ey = torch.tensor([0.0, h], dtype=z.dtype)
    parts = [z + ex, z - ex, z + ey, z - ey] + ([z] if with_center else [])
    out = _G(field, torch.cat(parts), opts)
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


def trace_image_boundary(field: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """Image of the green square's boundary, adaptively refined where image points are far apart.

    Returns the perimeter parameters ``s``, the boundary points ``z`` and their images ``x`` (closed
    polygon in order), the number of rounds and the largest remaining image gap.
    """
    center, half = tuple(opts["green_center"]), float(opts["green_half"])
    s = np.linspace(0.0, 4.0, int(opts["boundary_points"]), endpoint=False)
    x = _G(field, torch.as_tensor(_square_point(s, center, half), dtype=DT), opts).numpy()
    gap_tol = float(opts["boundary_gap"])
    min_width = float(opts["boundary_min_width"])
    pieces = 8
    rounds = 0
    for rounds in range(1, int(opts["boundary_rounds"]) + 1):
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
        x_new = _G(field, torch.as_tensor(_square_point(s_new, center, half), dtype=DT), opts).numpy()
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


def classify_expansion(lambda_x: np.ndarray, x_extent_ratio: float, *, min_region_points: int = 3) -> tuple[str, str]:
    """Verdict status and one-line reason for "G expands a region along x (lambda_x > 1 there)".

    ``lambda_x``: values over a grid of noises; ``x_extent_ratio``: red / green extent along x.
    """
    lam = np.asarray(lambda_x, dtype=float).ravel()
    n_gt = int(np.sum(lam > 1.0))
    region = n_gt >= int(min_region_points)
    expanded = bool(x_extent_ratio > 1.0)
    frac = n_gt / max(lam.size, 1)
    if region and expanded:
        return "verified", f"lambda_x > 1 on {n_gt} grid points ({frac:.1%}); green square expanded {x_extent_ratio:.3g}x along x"
    if region:
        return (
            "holds in regime: lambda_x > 1 on part of the grid, but the chosen green region is not expanded along x",
            f"lambda_x > 1 on {n_gt} grid points ({frac:.1%}); x-extent ratio {x_extent_ratio:.3g} <= 1",
        )
    if expanded:
        return (
            "holds in regime: the green region is expanded along x at finite size, yet lambda_x <= 1 on (almost) the whole grid",
            f"lambda_x > 1 on {n_gt} grid points (< {min_region_points}); x-extent ratio {x_extent_ratio:.3g}",
        )
    return "refuted", f"lambda_x <= 1 on the grid (max {np.nanmax(lam):.3g}, {n_gt} points > 1); x-extent ratio {x_extent_ratio:.3g} <= 1"


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


# ------------------------------------------------------------------------------ parts
def _lambda_map(field: Any, opts: dict[str, Any]) -> dict[str, Any]:
    n, lim = int(opts["grid_n"]), float(opts["grid_lim"])
    g = torch.linspace(-lim, lim, n, dtype=DT)
    Z = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)  # row j (z2), column i (z1)
    J, X = fd_jacobian_2d(field, Z, opts)
    lam_x = torch.linalg.vector_norm(J[:, :, 0], dim=-1).reshape(n, n).numpy()
    lam_y = torch.linalg.vector_norm(J[:, :, 1], dim=-1).reshape(n, n).numpy()
    Xg = X.reshape(n, n, 2).numpy()
    dz = float(g[1] - g[0])
    fwd = np.linalg.norm(Xg[:, 1:, :] - Xg[:, :-1, :], axis=-1) / dz
    lam_grid = np.concatenate([fwd, fwd[:, -1:]], axis=1)
    return {"g": g.numpy(), "lam_x": lam_x, "lam_y": lam_y, "lam_grid": lam_grid, "spacing": dz}


def _line(field: Any, opts: dict[str, Any]) -> dict[str, Any]:
    lim, n = float(opts["grid_lim"]), int(opts["line_n"])
    z1 = torch.linspace(-lim, lim, n, dtype=DT)
    Z = torch.stack([z1, torch.full_like(z1, float(opts["line_z2"]))], -1)
    J, GZ = fd_jacobian_2d(field, Z, opts)
    lam_x = torch.linalg.vector_norm(J[:, :, 0], dim=-1)
    lam_y = torch.linalg.vector_norm(J[:, :, 1], dim=-1)
    U, S, Vh = torch.linalg.svd(J)
    norm2 = S[:, 0]
    v1 = Vh[:, 0, :]
    s_values = [float(s) for s in opts["s_values"]]
    p_s = [float(s) for s in opts["prop21_s"]]
    nd = int(opts["n_dirs"])
    ang = torch.arange(nd, dtype=DT) * (2 * math.pi / nd)
    dirs = torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    ex = torch.tensor([1.0, 0.0], dtype=DT)
    batch = [Z + s * ex for s in s_values] + [Z + s * v1 for s in p_s]
    batch.append((Z[:, None, :] + p_s[-1] * dirs[None]).reshape(-1, 2))
    out = _G(field, torch.cat(batch), opts)
    mu: dict[str, list[float]] = {}
    k = 0
    for s in s_values:
        mu[f"{s:g}"] = (torch.linalg.vector_norm(out[k : k + n] - GZ, dim=-1) / s).tolist()
        k += n
    # points where the finite-difference Jacobian is resolved (step h and 10 h agree to 1e-3): off
    # the basin-boundary ridge, where lambda ~ 1e13 cannot be resolved by any practical step
    J10, _ = fd_jacobian_2d(field, Z, opts | {"fd_step": 10.0 * float(opts["fd_step"])}, with_center=False)
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
        "z2": float(opts["line_z2"]),
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


def _density(field: Any, opts: dict[str, Any], box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(opts["density_n"])
    xs = torch.linspace(box[0], box[1], n, dtype=DT)
    ys = torch.linspace(box[2], box[3], n, dtype=DT)
    P = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = field.log_prob(P, 1.0).reshape(n, n)
    return xs.numpy(), ys.numpy(), lp.exp().numpy()


# ------------------------------------------------------------------------------ figures
def _figures(out_dir: Path, opts: dict[str, Any], field: Any, bnd: dict[str, Any], green_img: np.ndarray,
             lmap: dict[str, Any], line: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    means = np.asarray(opts["means"], dtype=float).reshape(-1, 2)
    stds = float(np.max(np.asarray(opts["stds"], dtype=float)))
    lo = np.minimum(means.min(0) - 4 * stds, bnd["x"].min(0)) - 0.3
    hi = np.maximum(means.max(0) + 4 * stds, bnd["x"].max(0)) + 0.3
    lo, hi = np.minimum(lo, -1.0), np.maximum(hi, 1.0)
    xs, ys, dens = _density(field, opts, (lo[0], hi[0], lo[1], hi[1]))
    c, a = opts["green_center"], float(opts["green_half"])
    figs = []

    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.pcolormesh(xs, ys, dens, shading="auto", cmap="Blues")
    fig.colorbar(im, ax=ax, label="p_g(x)")
    ax.add_patch(Polygon(bnd["x"], closed=True, fc="red", ec="red", alpha=0.45, lw=1.0, label="G(green) (red)"))
    ax.scatter(green_img[:, 0], green_img[:, 1], s=2, c="darkred")
    ax.add_patch(Rectangle((c[0] - a, c[1] - a), 2 * a, 2 * a, fc="limegreen", ec="green", alpha=0.8, label="green region (noise)"))
    ax.set(xlabel="x", ylabel="y", title="Fig. 3(a): p_g, green square and its image G(green)", aspect="equal",
           xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]))
    ax.legend(loc="upper right", fontsize=8)
    figs.append(savefig(fig, out_dir, "fig3a_density.png"))

    g = lmap["g"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, lam, title in ((axes[0], lmap["lam_x"], f"central FD, h={opts['fd_step']:g}"),
                           (axes[1], lmap["lam_grid"], f"grid neighbours, dz={lmap['spacing']:.3g}")):
        im = ax.pcolormesh(g, g, np.log10(np.maximum(lam, 1e-3)), shading="auto", cmap="viridis", vmin=-1.0, vmax=2.0)
        fig.colorbar(im, ax=ax, label="log10 lambda_x (clipped to [-1, 2])")
        if np.nanmax(lam) > 1 > np.nanmin(lam):
            ax.contour(g, g, lam, levels=[1.0], colors="white", linewidths=1.0)
        ax.add_patch(Rectangle((c[0] - a, c[1] - a), 2 * a, 2 * a, fc="none", ec="limegreen", lw=1.5))
        ax.axhline(float(opts["line_z2"]), color="w", ls="--", lw=1.0)
        ax.set(xlabel="z1", ylabel="z2", title=f"Fig. 3(b): lambda_x ({title})\nwhite: lambda_x = 1; green: green region", aspect="equal")
    figs.append(savefig(fig, out_dir, "fig3b_lambda_x.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    z1 = line["z1"]
    ax.plot(z1, line["spectral_norm"], "k-", lw=2.2, label="||J_G||_2 (Prop. 2.1 bound)")
    ax.plot(z1, line["lambda_x"], "C0-", label="lambda_G(z, e_x)")
    ax.plot(z1, line["lambda_y"], "C1-", label="lambda_G(z, e_y)")
    for i, (s, m) in enumerate(line["mu"].items()):
        ax.plot(z1, m, ls=":", color=f"C{i + 2}", label=f"mu_G(z, {s} e_x)")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(yscale="log", xlabel="z1", ylabel="coefficient", title=f"Fig. 3(c): along z2 = {line['z2']:g}")
    ax.legend(fontsize=8)
    figs.append(savefig(fig, out_dir, "fig3c_line.png"))
    return figs


# ------------------------------------------------------------------------------ run
def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Fig. 3 study; see the module docstring for the options and outputs (deterministic: ``seed`` is recorded only)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    field = build_field(opts)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    bnd = trace_image_boundary(field, opts)
    c, a, gn = opts["green_center"], float(opts["green_half"]), int(opts["green_n"])
    q1 = torch.linspace(c[0] - a, c[0] + a, gn, dtype=DT)
    q2 = torch.linspace(c[1] - a, c[1] + a, gn, dtype=DT)
    green = torch.stack(torch.meshgrid(q1, q2, indexing="xy"), -1).reshape(-1, 2)
    green_img = _G(field, green, opts).numpy()
    bx = bnd["x"]
    red_bbox = [float(bx[:, 0].min()), float(bx[:, 0].max()), float(bx[:, 1].min()), float(bx[:, 1].max())]
    expansion = {
        "green_center": list(c),
        "green_half": a,
        "x_extent_ratio": (red_bbox[1] - red_bbox[0]) / (2 * a),
        "y_extent_ratio": (red_bbox[3] - red_bbox[2]) / (2 * a),
        "area_ratio": polygon_area(bx) / (2 * a) ** 2,
        "red_bbox": red_bbox,
        "boundary_points": int(len(bx)),
        "boundary_rounds": int(bnd["rounds"]),
        "max_boundary_gap": bnd["max_gap"],
    }
    timings["expansion"] = time.perf_counter() - t

    t = time.perf_counter()
    lmap = _lambda_map(field, opts)
    g = lmap["g"]
    lam_x, lam_grid = lmap["lam_x"], lmap["lam_grid"]
    Zx, Zy = np.meshgrid(g, g, indexing="xy")
    in_green = (np.abs(Zx - c[0]) <= a + 1e-12) & (np.abs(Zy - c[1]) <= a + 1e-12)
    amax = np.unravel_index(int(np.argmax(lam_x)), lam_x.shape)
    timings["lambda_map"] = time.perf_counter() - t

    t = time.perf_counter()
    line = _line(field, opts)
    timings["line"] = time.perf_counter() - t

    # JVP (AD through the solve) check of the finite differences: points of the line, off the ridge
    t = time.perf_counter()
    lim = float(opts["grid_lim"])
    npts = int(opts["jvp_points"])
    zj = torch.stack([torch.linspace(-0.8 * lim, 0.8 * lim, npts, dtype=DT) + 0.137, torch.full((npts,), float(opts["line_z2"]), dtype=DT)], -1)
    zj = torch.cat([zj, torch.tensor([list(c)], dtype=DT)])
    ex = torch.tensor([[1.0, 0.0]], dtype=DT).expand(zj.shape[0], 2)
    lam_jvp = lambda_G(field, zj, ex, method="jvp", **_solve_kwargs(opts)).numpy()
    J, _ = fd_jacobian_2d(field, zj, opts, with_center=False)
    lam_fd = torch.linalg.vector_norm(J[:, :, 0], dim=-1).numpy()
    rel = np.abs(lam_fd[:-1] - lam_jvp[:-1]) / np.abs(lam_jvp[:-1])
    timings["jvp_check"] = time.perf_counter() - t

    lambda_numbers = {
        "grid_n": int(opts["grid_n"]),
        "grid_lim": lim,
        "spacing": lmap["spacing"],
        "max_lambda_x": float(lam_x.max()),
        "argmax_z": [float(g[amax[1]]), float(g[amax[0]])],
        "fraction_lambda_x_gt_1": float(np.mean(lam_x > 1)),
        "points_lambda_x_gt_1": int(np.sum(lam_x > 1)),
        "max_lambda_x_grid_fd": float(lam_grid.max()),
        "fraction_lambda_x_gt_1_grid_fd": float(np.mean(lam_grid > 1)),
        "max_lambda_y": float(lmap["lam_y"].max()),
        "fraction_lambda_y_gt_1": float(np.mean(lmap["lam_y"] > 1)),
        "green_lambda_x_min": float(lam_x[in_green].min()) if in_green.any() else None,
        "green_lambda_x_max": float(lam_x[in_green].max()) if in_green.any() else None,
        "green_fraction_lambda_x_gt_1": float(np.mean(lam_x[in_green] > 1)) if in_green.any() else None,
        "jvp_check": {"z": zj[:-1].numpy(), "lambda_fd": lam_fd[:-1], "lambda_jvp": lam_jvp[:-1],
                      "max_rel_diff": float(rel.max()) if rel.size else None},
        "lambda_x_jvp_at_green_center": float(lam_jvp[-1]),
        "lambda_x_fd_at_green_center": float(lam_fd[-1]),
    }

    status, reason = classify_expansion(lam_x, expansion["x_extent_ratio"], min_region_points=int(opts["min_region_points"]))
    key = (f"max lambda_x = {lambda_numbers['max_lambda_x']:.3g} on the grid (JVP at the green centre "
           f"{lambda_numbers['lambda_x_jvp_at_green_center']:.3g}); lambda_x > 1 on "
           f"{lambda_numbers['fraction_lambda_x_gt_1']:.1%} of the grid; x-extent ratio red/green "
           f"{expansion['x_extent_ratio']:.3g}")
    evidence = (
        f"{reason}. 2-D mixture means {np.asarray(opts['means']).tolist()}, std {opts['stds']}, weights "
        f"{list(opts['weights'])}; {opts['solver']} generation (rtol {opts['rtol']:g}, atol {opts['atol']:g}). "
        f"(a) green square centre {tuple(c)}, half-side {a:g}: its image spans {expansion['x_extent_ratio']:.3g}x its "
        f"width along x and {expansion['y_extent_ratio']:.3g}x along y, area ratio {expansion['area_ratio']:.3g} "
        f"(traced boundary, {expansion['boundary_points']} points, max image gap {expansion['max_boundary_gap']:.2g}). "
        f"(b) {opts['grid_n']}^2 grid on [-{lim:g}, {lim:g}]^2: lambda_x (central FD, h={opts['fd_step']:g}) max "
        f"{lambda_numbers['max_lambda_x']:.3g} at z={tuple(round(v, 3) for v in lambda_numbers['argmax_z'])}, "
        f"> 1 on {lambda_numbers['fraction_lambda_x_gt_1']:.2%} of the grid; grid-neighbour estimator (paper) max "
        f"{lambda_numbers['max_lambda_x_grid_fd']:.3g}, > 1 on {lambda_numbers['fraction_lambda_x_gt_1_grid_fd']:.2%}; "
        f"on the green square lambda_x in [{lambda_numbers['green_lambda_x_min']:.3g}, {lambda_numbers['green_lambda_x_max']:.3g}]; "
        f"FD vs JVP max relative difference {lambda_numbers['jvp_check']['max_rel_diff']:.1e} off the ridge. "
        f"(c) along z2={line['z2']:g}: lambda_x > 1 on {line['fraction_lambda_x_gt_1']:.1%}, lambda_y > 1 on "
        f"{line['fraction_lambda_y_gt_1']:.1%} of the line; Prop. 2.1 at the {line['fd_resolved_points']}/{len(line['z1'])} "
        f"line points where the FD Jacobian is resolved: max |mu(z, s v1) - ||J||_2| / ||J||_2 "
        + ", ".join(f"s={s}: {_fmt(v, '.1e')}" for s, v in line["prop21_rel_gap"].items())
        + f"; max over {opts['n_dirs']} directions of mu / ||J||_2 >= {_fmt(line['prop21_max_dirs_over_norm_min'], '.4f')}."
    )
    verdict = Verdict(status, key, evidence)
    figures = _figures(out_dir, opts, field, bnd, green_img, lmap, line)
    params = {"full": full, "seed": seed, **opts}
    numbers = {
        "field": {"means": opts["means"], "stds": opts["stds"], "weights": opts["weights"]},
        "expansion": expansion,
        "lambda_map": lambda_numbers,
        "line": line,
        "timings": timings,
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
