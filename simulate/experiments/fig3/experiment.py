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

Options: :class:`Fig3Options` (:data:`FAST`, :data:`FULL`, :func:`make_options`); the units are the four
parts of :mod:`.fig3_measure`, :mod:`.fig3_judge` decides, :mod:`.fig3_figures` draws.

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

import dataclasses
import time
from pathlib import Path
from typing import Any

from simulate.experiments.common import ExperimentResult, write_result
from simulate.experiments.fig3.figures import draw_figures
from simulate.experiments.fig3.judge import classify_expansion, judge
from simulate.experiments.fig3.measure import (
    PARTS,
    build_field,
    compute_unit,
    fd_jacobian_2d,
    polygon_area,
    trace_image_boundary,
)
from simulate.experiments.fig3.options import FAST, FULL, Fig3Options, make_options

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "Fig3Options",
    "FAST",
    "FULL",
    "make_options",
    "compute_unit",
    "run",
    "build_field",
    "fd_jacobian_2d",
    "trace_image_boundary",
    "polygon_area",
    "classify_expansion",
]

NAME = "fig3"
DESCRIPTION = "Fig. 3: the 2-D generation map expands a region along the x-axis (lambda_x > 1 there)"
CLAIM_IDS = ["fig3"]


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Measure the four parts, judge, draw, write ``result.json`` (deterministic: ``seed`` is recorded only).

    Overrides: any field of :class:`Fig3Options`. The parts take seconds each, so they are not
    recorded for resuming.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    field = build_field(opts)
    units: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for part in PARTS:
        t = time.perf_counter()
        units[part] = compute_unit(part, field, opts)
        timings[part] = time.perf_counter() - t
    expansion, lmap, line = units["expansion"], units["lambda_map"], units["line"]
    lambda_numbers = {**lmap["numbers"], **units["jvp_check"]}
    judged = judge(opts, lmap["lam_x"], expansion["numbers"], lambda_numbers, line)
    figures = draw_figures(out_dir, opts, field, expansion, lmap, line)
    numbers = {
        "field": {"means": opts.means, "stds": opts.stds, "weights": opts.weights},
        "expansion": expansion["numbers"],
        "lambda_map": lambda_numbers,
        "line": line,
        "timings": timings,
    }
    params = {"full": full, "seed": seed, **dataclasses.asdict(opts)}
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
