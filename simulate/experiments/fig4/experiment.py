r"""Fig. 4(a, b) (Section 3.2, Appendix E.1): reconstruction error correlates with the instability coefficient.

The paper's numeric study, with its unrecoverable details fixed here (all recorded in ``result.json``):

* generation distribution (Fig. 4(a)): the 2-D mixture of three Gaussians with means ``(-2, -1)``,
  ``(2, -1)``, ``(0, 2)``, weights ``(0.4, 0.4, 0.2)`` and common std ``0.5`` (the Fig. 3 arrangement
  with a wider std, so that the fixed-point "exact inversion" of a 50-step scheme converges);
* data ``x`` uniform on the box covering the mixture: ``[min mean - box_margin * std,
  max mean + box_margin * std]`` per coordinate (``box_margin = 2``);
* reconstruction: inversion ``z~ = F~(x)`` by the scheme integrated backward, regeneration
  ``x^ = G~(z~)`` by the same scheme, ``N = steps = 50`` uniform steps each (the paper's ``N`` is not
  recoverable); error ``e = ||x^ - x||``;
* averaged instability coefficient (App. E.1 step 4) of the regeneration map at the inverted noise:
  ``mu_bar(z~) = (1/K) sum_k ||G~(z~ + eps d_k) - G~(z~)|| / eps``, ``d_k`` uniform on the unit circle,
  ``K = num_perturbations = 16``, ``eps = 1e-3``.

Pipelines (``pipelines`` option):

* ``"euler"``: Euler inversion + Euler regeneration (the paper's Fig. 4(b));
* ``"heun"``: Heun inversion + Heun regeneration (the paper's App. B.1 variant);
* ``"euler_exact"``: Euler inversion + exact (dopri5, ``rtol = 1e-9``) regeneration -- the setting
  of Theorem 3.1 -- with ``mu_bar`` of the exact map.

For the two same-scheme pipelines the **exact inversion baseline** is the fixed-point inversion of
the discrete scheme (``invert(..., method="fixed_point")``) followed by the same regeneration:
its error collapses to the fixed-point tolerance (reported as ``exact_inversion``), so the
reconstruction error of the plain pipelines is entirely due to the inverted-noise discrepancy.

**Decomposition** ``e = ||z~ - z_ref|| x amplification``: with ``z_ref`` the noise that the
regeneration map sends exactly to ``x`` (the fixed-point inverse ``G~^{-1}(x)`` for same-scheme
regeneration, the dopri5 inverse ``z* = F(x)`` for exact regeneration), ``e = mu_G~(z_ref, z~ -
z_ref) ||z~ - z_ref||`` exactly. Reported per pipeline: Spearman of the amplification
``e / ||z~ - z_ref||`` with ``mu_bar``; correlations of ``log e`` with ``log ||z~ - z_ref||``, with
``log ||z~ - z*||`` (the dopri5 reference, for every pipeline) and with ``log mu_bar``; and the
variance of ``log e`` explained (R^2) by least squares on ``log ||z~ - z_ref||`` alone, on
``log mu_bar`` alone and on both.

Statistics (:func:`simulate.stats.correlation_summary`, the correlation code shared with Fig. 4(c),
docs/theory.md §9.6): Pearson (on ``log e`` vs ``log mu_bar``) and Spearman (``scipy.stats``) with
p-values and 95% bootstrap intervals (``scipy.stats.bootstrap``, paired, BCa, ``n_resamples`` seeded
resamples).

Verdict (:func:`simulate.stats.classify_correlation` per pipeline): a pipeline shows a positive correlation when
Spearman > 0 and the lower end of its 95% bootstrap interval is > 0. ``verified`` if both the Euler
and the Heun pipelines do; ``holds in regime: Euler ...`` if only Euler does; ``refuted`` otherwise.

Options: :class:`Fig4Options` (:data:`FAST`, :data:`FULL`, :func:`make_options`). Units: the pipelines
(:func:`.fig4_pipeline.compute_unit`; they share one generator stream for the ``mu_bar`` directions,
so they run in order and are not recorded for resuming); :mod:`.fig4_judge` decides,
:mod:`.fig4_figures` draws.

``result.json`` numbers (keys):

* ``field`` (``means``, ``stds``, ``weights``), ``box`` (``[[x_lo, x_hi], [y_lo, y_hi]]``);
* ``pipelines``: per pipeline name: ``inv_solver``, ``gen_solver``, ``steps``, ``error`` (``median``,
  ``max``, ``min``), ``mu_bar`` (``median``, ``max``, ``min``), ``correlation`` (the
  :func:`correlation_summary` dict: ``n``, ``pearson_r``, ``pearson_p``, ``pearson_ci``,
  ``spearman_rho``, ``spearman_p``, ``spearman_ci``, ``positive``, ``negative``), ``decomposition``
  (``reference``, ``spearman_amplification_mu_bar``, ``pearson_log_error_log_disc``,
  ``pearson_log_error_log_disc_dopri5``, ``pearson_log_error_log_mu_bar``, ``r2_disc``,
  ``r2_mu_bar``, ``r2_both``, ``coef_both``, ``disc_median``), ``exact_inversion`` (same-scheme
  pipelines: ``max_error``, ``median_error``, ``converged``, ``max_residual``);
* ``per_point``: ``x``, and per pipeline ``error``, ``mu_bar``, ``disc_ref``, ``disc_dopri5``;
* ``timings``.

Figures: ``fig4a_density.png`` (``p_g`` and the data box), ``fig4b_scatter.png`` (log-log error vs
``mu_bar`` per pipeline with the exact-inversion errors; below: amplification vs ``mu_bar``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from simulate.stats import classify_correlation, correlation_summary

from simulate.experiments.common import ExperimentResult, write_result
from simulate.experiments.fig3.measure import build_field
from simulate.experiments.fig4.figures import draw_figures
from simulate.experiments.fig4.judge import judge
from simulate.experiments.fig4.options import FAST, FULL, PIPELINES, Fig4Options, make_options
from simulate.experiments.fig4.pipeline import compute_unit, data_box, draw_data, exact_inverse, r_squared

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "Fig4Options",
    "FAST",
    "FULL",
    "PIPELINES",
    "make_options",
    "compute_unit",
    "data_box",
    "run",
    "build_field",
    "correlation_summary",
    "classify_correlation",
    "r_squared",
]

NAME = "fig4"
DESCRIPTION = "Fig. 4(a, b): 2-D reconstruction error correlates with the averaged instability coefficient"
CLAIM_IDS = ["fig4b"]


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Draw ``x``, run the pipelines in order, judge, draw, write ``result.json``.

    Overrides: any field of :class:`Fig4Options`. ``seed`` seeds ``x``, the ``mu_bar`` directions
    (one generator, in pipeline order) and the bootstrap intervals.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    field = build_field(opts)
    box = data_box(opts)
    gen = torch.Generator().manual_seed(int(seed))
    x = draw_data(box, int(opts.points), gen)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    zstar = exact_inverse(field, x, opts)
    timings["dopri5_inversion"] = time.perf_counter() - t
    summaries: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for name in opts.pipelines:
        t = time.perf_counter()
        summaries[name], points[name] = compute_unit(name, field, x, zstar, opts, gen, seed)
        timings[name] = time.perf_counter() - t
    judged = judge(opts, box, summaries)
    figures = draw_figures(out_dir, opts, field, box, x.numpy(), summaries, points)
    numbers = {
        "field": {"means": opts.means, "stds": opts.stds, "weights": opts.weights},
        "box": box,
        "pipelines": summaries,
        **judged.numbers,
        "per_point": {"x": x.numpy(), **points},
        "timings": timings,
    }
    params = {"full": full, "seed": seed, **dataclasses.asdict(opts)}
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
