r"""Targets, approximants and the sample distance of the Theorem 4.2 experiment (docs/theory.md §7).

* :func:`target_density`, :func:`sample_target`: the 2-D Gaussian ring
  ``p(x) ~ exp(-(|x| - R)^2 / (2 w^2))`` (normalised in closed form,
  ``Z = 2 pi (w^2 exp(-R^2/(2 w^2)) + w sqrt(2 pi) Phi(R/w))``) or the uniform annulus
  ``R - a <= |x| <= R + a``;
* :func:`box_mixture_approximant`: the mixture of Gaussian neighbours ``p_m = sum_i w_i U(B_i) *
  N(0, sigma_m^2 I)`` (§1.3, §3.5) on the ``k x k`` tiling of ``[-L, L]^2`` with target-mass weights;
* :func:`sliced_w1`: the sliced 1-Wasserstein distance of two equal-size samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr

from simulate.fields import BoxMixture

from simulate.experiments.thm42.options import Thm42Options

__all__ = ["DT", "target_density", "sample_target", "box_mixture_approximant", "sliced_w1"]

DT = torch.float64


def target_density(P: np.ndarray, opts: Thm42Options) -> np.ndarray:
    """The target density at points ``P`` of shape ``(..., 2)`` (closed form, normalised)."""
    r = np.linalg.norm(P, axis=-1)
    R = float(opts.radius)
    if opts.target == "ring":
        w = float(opts.width)
        # Z = 2 pi int_0^inf r exp(-(r - R)^2 / 2 w^2) dr = 2 pi (w^2 exp(-R^2 / 2 w^2) + R w sqrt(2 pi) Phi(R / w))
        Z = 2.0 * math.pi * (w * w * math.exp(-R * R / (2 * w * w)) + R * w * math.sqrt(2 * math.pi) * float(ndtr(R / w)))
        return np.exp(-((r - R) ** 2) / (2 * w * w)) / Z
    a = float(opts.annulus_half_width)
    r1, r2 = max(R - a, 0.0), R + a
    return ((r >= r1) & (r <= r2)).astype(float) / (math.pi * (r2 * r2 - r1 * r1))


def sample_target(n: int, opts: Thm42Options, rng: np.random.Generator) -> np.ndarray:
    """``n`` exact samples of the target (radius by rejection for the ring, inverse CDF for the annulus)."""
    R = float(opts.radius)
    if opts.target == "ring":
        w = float(opts.width)
        # radial density ~ r exp(-(r - R)^2 / 2 w^2) on r >= 0: propose N(R, w^2), accept with prob r / r_max
        r_max = R + 10 * w
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            r = rng.normal(R, w, size=2 * n)
            keep = (r > 0) & (rng.random(2 * n) < np.clip(r / r_max, 0, 1))
            out.append(r[keep])
            have += int(keep.sum())
        r = np.concatenate(out)[:n]
    else:
        a = float(opts.annulus_half_width)
        r1, r2 = max(R - a, 0.0), R + a
        r = np.sqrt(r1 * r1 + (r2 * r2 - r1 * r1) * rng.random(n))
    th = rng.uniform(0, 2 * math.pi, size=n)
    return np.stack([r * np.cos(th), r * np.sin(th)], -1)


def box_mixture_approximant(m: int, opts: Thm42Options) -> tuple[BoxMixture, dict[str, Any]]:
    """The ``k x k`` box tiling of ``[-L, L]^2`` with target-mass weights and ``sigma = sigma_factor * side``.

    Box weights: target mass of the box by midpoint quadrature on a ``quad_n x quad_n`` grid (rounded
    down to a multiple of ``k``), renormalised; boxes with zero mass are dropped (``m_effective``).
    """
    k = math.isqrt(int(m))
    L = float(opts.half_extent)
    F = int(opts.quad_n)
    F = max(k, F // k * k)  # a multiple of k: each box holds (F / k)^2 quadrature cells
    hq = 2 * L / F
    c = (np.arange(F) + 0.5) * hq - L
    X, Y = np.meshgrid(c, c, indexing="xy")
    cell = target_density(np.stack([X, Y], -1), opts) * hq * hq
    q = F // k
    mass = cell.reshape(k, q, k, q).sum(axis=(1, 3))  # [box row (y), box column (x)]
    side = 2 * L / k
    lo = -L + side * np.arange(k)
    LX, LY = np.meshgrid(lo, lo, indexing="xy")
    lower = np.stack([LX.ravel(), LY.ravel()], -1)
    w = mass.ravel()
    keep = w > 0
    lower, w = lower[keep], w[keep] / w[keep].sum()
    sigma = float(opts.sigma_factor) * side
    field = BoxMixture(torch.as_tensor(lower, dtype=DT), torch.as_tensor(lower + side, dtype=DT),
                       torch.as_tensor(w, dtype=DT), sigma)
    return field, {"m": int(m), "k": k, "m_effective": int(keep.sum()), "side": side, "sigma": sigma,
                   "mass_in_square": float(cell.sum())}


def sliced_w1(a: np.ndarray, b: np.ndarray, n_projections: int, rng: np.random.Generator) -> float:
    """Sliced 1-Wasserstein distance between two equal-size 2-D samples (random directions).

    ``SW1 = mean over directions theta of (1/N) sum_i |sort(a . theta)_i - sort(b . theta)_i|``.
    """
    if a.shape != b.shape:
        raise ValueError(f"samples must have the same shape, got {a.shape} and {b.shape}")
    th = rng.uniform(0, math.pi, size=n_projections)
    D = np.stack([np.cos(th), np.sin(th)], 0)  # (2, P)
    pa, pb = np.sort(a @ D, axis=0), np.sort(b @ D, axis=0)
    return float(np.mean(np.abs(pa - pb)))
