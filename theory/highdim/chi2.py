r"""Chi-square upper tails in log space, accurate far into the tail.

The p2 bound of Theorem 4.3 is ``K * P[chi2_n >= c] = K * Q(n/2, c/2)`` with ``Q`` the regularized
upper incomplete gamma function. For the schedule ``c_n = (1 + eps) n`` this probability is about
``exp(-n (eps - log(1 + eps)) / 2)``: it underflows double precision from ``n ~ 10^5`` on, so the
project evaluates its logarithm directly.

Method (vectorised, float64):

* within three standard deviations of the mean (``|x - a| < 3 sqrt(a)`` or ``|x - a| < 10``,
  with ``a = n/2``, ``x = c/2``) scipy's ``gammaincc`` / ``gammainc`` are used, through
  ``log1p(-P)`` when ``Q`` is close to one so that its tiny log keeps its relative accuracy;
* farther out (where scipy loses accuracy for large ``a`` and underflows) the exact representation
  ``Gamma(a, x) = x^a e^{-x} / beta * int_0^inf e^{-s} h(s / beta) ds``, ``beta = x - a + 1``,
  ``h(u) = exp((a - 1)(log1p(u) - u))``, obtained from ``t = x (1 + u)``, is integrated by 64-point
  Gauss-Laguerre quadrature (and its mirror image for ``P`` below the mean). There
  ``beta^2 / a >= 9``, so ``h(s / beta)`` is smooth on the scale of ``s`` and the rule is accurate to
  ~1e-13 relative; the prefactor is
  assembled as ``-a (lam - 1 - log lam) + (log a - log 2 pi) / 2 - stirling(a)`` to avoid the
  cancellation of ``a log x - x - lgamma(a)``.

``theory.highprec.log_chi2_sf_mp`` is the mpmath reference the tests compare against.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from theory._special import LOG_2PI, stirlerr
from theory._validate import as_int_array, require_positive

__all__ = ["log_chi2_sf", "log_chi2_sf_chernoff", "log_gammaincc"]

_LAGUERRE_NODES, _LAGUERRE_WEIGHTS = np.polynomial.laguerre.laggauss(64)


def _log_prefactor(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a log x - x - lgamma(a)`` without its large-``a`` cancellation."""
    delta = (x - a) / a
    rate = a * (delta - np.log1p(delta))  # a (lam - 1 - log lam), lam = x / a
    return -rate + 0.5 * (np.log(a) - LOG_2PI) - stirlerr(a)


def _log_tail_laguerre(a: np.ndarray, x: np.ndarray, upper: bool) -> np.ndarray:
    """``log Q(a, x)`` (``upper``, ``x > a``) or ``log P(a, x)`` (``x < a - 1``) by quadrature.

    ``Gamma(a, x) = x^a e^{-x} / beta int_0^inf e^{-s} h(s / beta) ds`` with ``beta = x - a + 1``,
    ``h(u) = exp((a - 1)(log1p(u) - u))``; ``gamma(a, x)`` likewise with ``beta = a - 1 - x`` and
    ``h(u) = exp((a - 1)(log1p(-u) + u))`` on ``u < 1`` (zero beyond). Accurate to ~1e-13 where
    ``beta >= 10`` and ``beta^2 / a >= 9`` (checked against mpmath in the tests).
    """
    beta = (x - a + 1.0) if upper else (a - 1.0 - x)
    u = _LAGUERRE_NODES[None, :] / beta[:, None]
    if upper:
        log_h = (a[:, None] - 1.0) * (np.log1p(u) - u)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_h = np.where(u < 1.0, (a[:, None] - 1.0) * (np.log1p(-np.minimum(u, 1.0)) + u), -np.inf)
    log_integral = special.logsumexp(log_h, b=_LAGUERRE_WEIGHTS[None, :], axis=1) - np.log(beta)
    return _log_prefactor(a, x) + log_integral


def log_gammaincc(a: ArrayLike, x: ArrayLike) -> np.ndarray:
    """``log Q(a, x)``, the log of the regularized upper incomplete gamma function.

    Args:
        a: shape parameter(s), ``> 0``.
        x: argument(s), ``>= 0``; broadcast against ``a``.

    Returns:
        float64 array of ``log Q(a, x) <= 0``. Where ``Q`` is within ``1e-308`` of one the result
        underflows to ``-0.0`` (the exact value is ``-P``, below the smallest double).
    """
    a_arr, x_arr = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    shape = a_arr.shape
    a_flat, x_flat = a_arr.ravel(), x_arr.ravel()
    out = np.empty_like(a_flat)
    gap = x_flat - a_flat
    far = (np.abs(gap) >= 10.0) & (gap * gap >= 9.0 * a_flat)
    upper_far = far & (gap > 0)
    lower_far = far & (gap < 0) & (a_flat - 1.0 - x_flat >= 10.0)
    if np.any(upper_far):
        out[upper_far] = _log_tail_laguerre(a_flat[upper_far], x_flat[upper_far], upper=True)
    if np.any(lower_far):
        log_p = _log_tail_laguerre(a_flat[lower_far], x_flat[lower_far], upper=False)
        out[lower_far] = np.log1p(-np.exp(log_p))
    near = ~(upper_far | lower_far)
    if np.any(near):
        an, xn = a_flat[near], x_flat[near]
        p = special.gammainc(an, xn)
        q = special.gammaincc(an, xn)
        with np.errstate(divide="ignore"):
            out[near] = np.where(p < 0.5, np.log1p(-np.minimum(p, 0.5)), np.log(q))
    return out.reshape(shape)


def log_chi2_sf(n: ArrayLike, c: ArrayLike) -> np.ndarray:
    r"""``log P[chi2_n >= c] = log Q(n/2, c/2)`` (docs/theory.md §8.4, the p2 bound).

    Accurate to about 1e-13 relative on the log from ``n = 1`` to ``10^7`` and beyond, including
    tails far below the smallest double (``log P`` of order ``-10^5``).

    Args:
        n: degrees of freedom, integers ``>= 1`` (array-like).
        c: thresholds, ``> 0`` (array-like, broadcast against ``n``).

    Raises:
        ValueError: ``n`` not an integer ``>= 1``, ``c <= 0`` or non-finite values.
    """
    n_arr = as_int_array("n", n).astype(np.float64)
    c_arr = require_positive("c", c)
    return log_gammaincc(0.5 * n_arr, 0.5 * c_arr)


def log_chi2_sf_chernoff(n: ArrayLike, c: ArrayLike) -> np.ndarray:
    r"""Chernoff bound on the chi-square tail, in log space.

    ``P[chi2_n >= c] <= min_{0 < theta < 1/2} (1 - 2 theta)^{-n/2} e^{-theta c}
    = exp(-(c - n)/2 + (n/2) log(c/n))`` for ``c > n`` (``theta* = (1 - n/c)/2``); for
    ``c <= n`` the bound is the trivial ``1`` (log ``0``). Derived symbolically in
    ``theory.symbolic.derivations``.
    """
    n_arr = as_int_array("n", n).astype(np.float64)
    c_arr = require_positive("c", c)
    delta = c_arr / n_arr - 1.0
    bound = -0.5 * n_arr * (delta - np.log1p(delta))
    return np.where(c_arr > n_arr, bound, 0.0)
