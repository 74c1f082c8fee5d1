r"""Judge of the Fig. 3 experiment: does ``G`` expand a region along x (``lambda_x > 1`` there)?

``lambda_x(z) = lambda_G(z, e_x) = ||J_G(z) e_x||`` (docs/theory.md §2.1; findings in §11.7).
:func:`classify_expansion` decides from the grid of ``lambda_x`` and the green square's image:
``verified`` if ``lambda_x > 1`` on at least ``min_region_points`` grid points (a region, not a
single point) and the image is longer along x than the square (``x_extent_ratio > 1``); ``holds in
regime ...`` if only one of the two holds; ``refuted`` if neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from theory.thm41 import clopper_pearson

from simulate.experiments.common import Judged, Verdict
from simulate.experiments.fig3.options import Fig3Options

__all__ = ["classify_expansion", "judge"]


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


def judge(opts: Fig3Options, lam_x: np.ndarray, expansion: dict[str, Any], lambda_numbers: dict[str, Any],
          line: dict[str, Any]) -> Judged:
    """The Fig. 3 verdict (:func:`classify_expansion`) with its key number and evidence."""
    status, reason = classify_expansion(lam_x, expansion["x_extent_ratio"], min_region_points=int(opts.min_region_points))
    lam = np.asarray(lam_x, dtype=float).ravel()
    share = clopper_pearson(int(np.sum(lam > 1.0)), max(lam.size, 1))  # the grid's points as a sample of the square
    c, a, lim = opts.green_center, float(opts.green_half), float(opts.grid_lim)
    key = (f"max lambda_x = {lambda_numbers['max_lambda_x']:.3g} on the grid (JVP at the green centre "
           f"{lambda_numbers['lambda_x_jvp_at_green_center']:.3g}); lambda_x > 1 on "
           f"{lambda_numbers['fraction_lambda_x_gt_1']:.1%} of the grid (95% Clopper-Pearson [{share.lower:.1%}, "
           f"{share.upper:.1%}] of the square, {lam.size} grid points); x-extent ratio red/green "
           f"{expansion['x_extent_ratio']:.3g}")
    evidence = (
        f"{reason}. 2-D mixture means {np.asarray(opts.means).tolist()}, std {opts.stds}, weights "
        f"{list(opts.weights)}; {opts.solver} generation (rtol {opts.rtol:g}, atol {opts.atol:g}). "
        f"(a) green square centre {tuple(c)}, half-side {a:g}: its image spans {expansion['x_extent_ratio']:.3g}x its "
        f"width along x and {expansion['y_extent_ratio']:.3g}x along y, area ratio {expansion['area_ratio']:.3g} "
        f"(traced boundary, {expansion['boundary_points']} points, max image gap {expansion['max_boundary_gap']:.2g}). "
        f"(b) {opts.grid_n}^2 grid on [-{lim:g}, {lim:g}]^2: lambda_x (central FD, h={opts.fd_step:g}) max "
        f"{lambda_numbers['max_lambda_x']:.3g} at z={tuple(round(v, 3) for v in lambda_numbers['argmax_z'])}, "
        f"> 1 on {lambda_numbers['fraction_lambda_x_gt_1']:.2%} of the grid; grid-neighbour estimator (paper) max "
        f"{lambda_numbers['max_lambda_x_grid_fd']:.3g}, > 1 on {lambda_numbers['fraction_lambda_x_gt_1_grid_fd']:.2%}; "
        f"on the green square lambda_x in [{lambda_numbers['green_lambda_x_min']:.3g}, {lambda_numbers['green_lambda_x_max']:.3g}]; "
        f"FD vs JVP max relative difference {lambda_numbers['jvp_check']['max_rel_diff']:.1e} off the ridge. "
        f"(c) along z2={line['z2']:g}: lambda_x > 1 on {line['fraction_lambda_x_gt_1']:.1%}, lambda_y > 1 on "
        f"{line['fraction_lambda_y_gt_1']:.1%} of the line; Prop. 2.1 at the {line['fd_resolved_points']}/{len(line['z1'])} "
        f"line points where the FD Jacobian is resolved: max |mu(z, s v1) - ||J||_2| / ||J||_2 "
        + ", ".join(f"s={s}: {_fmt(v, '.1e')}" for s, v in line["prop21_rel_gap"].items())
        + f"; max over {opts.n_dirs} directions of mu / ||J||_2 >= {_fmt(line['prop21_max_dirs_over_norm_min'], '.4f')}."
    )
    return Judged(Verdict(status, key, evidence))
