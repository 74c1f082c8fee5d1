r"""Theorem 4.2 (docs/theory.md §7): mixtures of Gaussian neighbours approximate a target density as ``m`` grows.

Target (``target`` option): ``"ring"`` -- the 2-D Gaussian ring ``p(x) ~ exp(-(|x| - R)^2 / (2 w^2))``
with radius ``R = 1`` and radial width ``w = 0.1`` (normalised in closed form:
``Z = 2 pi (w^2 exp(-R^2/(2 w^2)) + w sqrt(2 pi) Phi(R/w))``), or ``"annulus"`` -- uniform on
``R - a <= |x| <= R + a`` with ``a = annulus_half_width``.

Approximants: for each ``m = k^2`` in ``ms`` (default 4, 16, 64, 256) the square ``[-L, L]^2``
(``L = half_extent = 1.5``, which holds all but ~3e-7 of the ring's mass) is tiled by ``k x k``
equal boxes of side ``2 L / k``; box ``i`` gets the weight ``w_i`` = target mass of the box
(midpoint quadrature on a ``quad_n x quad_n`` grid, then renormalised; boxes with zero mass are
dropped, so ``m_effective <= m``), and the mixture of Gaussian neighbours is
``p_m = sum_i w_i U(B_i) * N(0, sigma_m^2 I)`` (:class:`simulate.fields.BoxMixture`) with
``sigma_m = sigma_factor * side`` -- box size and ``sigma`` shrink together as ``m`` grows.

Distances:

* ``L1 = int |p_m - p|`` on a grid of spacing ``eval_spacing`` covering
  ``[-L - 5 sigma_m, L + 5 sigma_m]^2`` (midpoint rule; target and tiling are symmetric under
  ``x -> -x``, ``y -> -y``, so only the quadrant ``x, y > 0`` is evaluated, times 4), with ``p_m`` the field's exact
  ``log_prob(x, 1.0)`` (the density of ``x_1 ~ p_g``) and ``p`` the target's closed form; the grid's
  captured masses of ``p_m`` and ``p`` are reported (both ~1). Since the Levy-Prokhorov distance of
  Theorem 4.2 is at most the total variation distance, ``LP(p_m, p) <= TV = L1 / 2``
  (``lp_upper_bound``).
* sliced 1-Wasserstein distance from ``n_samples`` samples of each (``n_projections`` random
  directions; sorted projections), with the sampling noise floor = the same distance between two
  independent target samples (informational; the verdict does not use it).

Verdict (:func:`.thm42_judge.classify_monotone` on the L1 sequence): ``verified`` if the L1 distance
decreases strictly with each ``m``; ``holds in regime m <= ...`` if it decreases up to some ``m``
and then stalls; ``refuted`` otherwise.

Options: :class:`Thm42Options` (:data:`FAST`, :data:`FULL`, :func:`make_options`). Units: one per ``m``
(:func:`compute_unit`; a second each, so not recorded for resuming); :mod:`.thm42_targets` holds the
target, approximant and distance code, :mod:`.thm42_judge` decides, :mod:`.thm42_figures` draws.

``result.json`` numbers (keys): ``target`` (``kind``, ``radius``, ``width`` / ``annulus_half_width``,
``mass_in_square``), ``rows`` (per ``m``: ``m``, ``k``, ``m_effective``, ``side``, ``sigma``, ``l1``,
``lp_upper_bound``, ``mass_mixture``, ``mass_target``, ``sliced_w1``, ``eval_points``, ``seconds``),
``l1`` (list over ``ms``), ``sliced_w1`` (list), ``sliced_w1_noise_floor``, ``l1_monotone``,
``sliced_w1_monotone``, ``l1_ratio_last_first``.

Figures: ``thm42_densities.png`` (target and each approximant), ``thm42_distances.png`` (L1 and
sliced W1 vs ``m``, log-log).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulate.fields import BoxMixture

from simulate.experiments.common import ExperimentResult, write_result
from simulate.experiments.thm42.figures import draw_figures
from simulate.experiments.thm42.judge import classify_monotone, is_monotone_decreasing, judge
from simulate.experiments.thm42.options import FAST, FULL, Thm42Options, make_options
from simulate.experiments.thm42.targets import (
    DT,
    box_mixture_approximant,
    sample_target,
    sliced_w1,
    target_density,
)

__all__ = [
    "NAME",
    "DESCRIPTION",
    "CLAIM_IDS",
    "Thm42Options",
    "FAST",
    "FULL",
    "make_options",
    "compute_unit",
    "run",
    "target_density",
    "sample_target",
    "box_mixture_approximant",
    "sliced_w1",
    "is_monotone_decreasing",
    "classify_monotone",
]

NAME = "thm42"
DESCRIPTION = "Thm. 4.2: mixtures of Gaussian neighbours approximate a 2-D ring density (L1 decreasing in m)"
CLAIM_IDS = ["thm42"]


def compute_unit(m: int, opts: Thm42Options, target_sample: np.ndarray, seed: int) -> tuple[dict[str, Any], BoxMixture]:
    """The row of one ``m`` (Theorem 4.2, docs/theory.md §7) and its approximant ``p_m``.

    ``L1 = int |p_m - p|`` by the midpoint rule on a grid of spacing ``<= eval_spacing`` over
    ``[-L - 5 sigma_m, L + 5 sigma_m]^2`` (the quadrant ``x, y > 0`` times 4: target and tiling are
    symmetric under ``x -> -x``, ``y -> -y``); ``LP <= TV = L1 / 2``; sliced W1 of ``n_samples``
    samples of ``p_m`` (torch generator ``seed * 1000 + m``) against ``target_sample``.
    """
    t = time.perf_counter()
    field, info = box_mixture_approximant(int(m), opts)
    L = float(opts.half_extent)
    lim = L + 5 * info["sigma"]
    half = int(math.ceil(lim / float(opts.eval_spacing)))
    he = lim / half
    # the grid is symmetric, no cell on an axis
    c = (np.arange(half) + 0.5) * he
    X, Y = np.meshgrid(c, c, indexing="xy")
    P = np.stack([X.ravel(), Y.ravel()], -1)
    with torch.no_grad():
        pm = field.log_prob(torch.as_tensor(P, dtype=DT), 1.0).exp().numpy()
    pt = target_density(P, opts)
    w4 = 4.0 * he * he
    l1 = float(np.abs(pm - pt).sum() * w4)
    n = 2 * half
    gen = torch.Generator().manual_seed(int(seed) * 1000 + int(m))
    xs = field.sample(int(opts.n_samples), generator=gen).numpy()
    sw = sliced_w1(xs, target_sample, int(opts.n_projections), np.random.default_rng(seed + 1))
    row = info | {"l1": l1, "lp_upper_bound": 0.5 * l1, "mass_mixture": float(pm.sum() * w4),
                  "mass_target": float(pt.sum() * w4), "sliced_w1": sw, "eval_points": int(n * n),
                  "seconds": time.perf_counter() - t}
    return row, field


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Sample the target, compute each ``m``'s row, judge, draw, write ``result.json``.

    Overrides: any field of :class:`Thm42Options`. ``seed`` seeds the target samples
    (``default_rng(seed)``), the projections (``default_rng(seed + 1)``) and each ``p_m``'s samples.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    rng = np.random.default_rng(seed)
    ns = int(opts.n_samples)
    target_a = sample_target(ns, opts, rng)
    target_b = sample_target(ns, opts, rng)
    floor = sliced_w1(target_a, target_b, int(opts.n_projections), np.random.default_rng(seed + 1))
    rows: list[dict[str, Any]] = []
    fields: list[BoxMixture] = []
    for m in opts.ms:
        row, field = compute_unit(int(m), opts, target_a, seed)
        rows.append(row)
        fields.append(field)
    mass_in_square = rows[-1]["mass_in_square"]  # the finest quadrature's (the last m's)
    for row in rows:
        del row["mass_in_square"]
    judged = judge(opts, rows, floor)
    figures = draw_figures(out_dir, opts, fields, rows, floor)
    params = {"full": full, "seed": seed, **dataclasses.asdict(opts)}
    numbers = {
        "target": {"kind": opts.target, "radius": opts.radius,
                   **({"width": opts.width} if opts.target == "ring" else {"annulus_half_width": opts.annulus_half_width}),
                   "mass_in_square": mass_in_square},
        "rows": rows,
        **judged.numbers,
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
