"""Correlation between instability and reconstruction error, with bootstrap uncertainty.

The paper's large-model evidence (Fig. 4c, Fig. A1) is a rank correlation between the averaged
instability coefficient of an image and its reconstruction error over a few hundred images. A
single number says little at that sample size, so :func:`correlate` reports Pearson's r and
Spearman's rho with their p-values *and* paired-bootstrap confidence intervals
(``scipy.stats.bootstrap``, BCa by default), and :func:`linear_fit_loglog` gives the power-law
slope of error against instability with a t-interval.

The correlation and bootstrap code is the one implementation in :mod:`simulate.stats` (shared with
Fig. 4(b), docs/theory.md §9.6), re-exported here; this module adds the log-log fit and the legend text.
Results are plain dicts of floats, ints, strings and tuples, ready for ``json.dump``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from simulate.stats import (
    CIMethod,
    bootstrap_ci,
    check_options,
    correlate,
    finite_pairs,
    pearson_vectorized,
    spearman_vectorized,
)

__all__ = [
    "CIMethod",
    "finite_pairs",
    "pearson_vectorized",
    "spearman_vectorized",
    "correlate",
    "bootstrap_ci",
    "linear_fit_loglog",
    "format_correlation",
]


def linear_fit_loglog(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Least-squares line of ``log10 y`` against ``log10 x`` (a power law ``y = 10**a * x**slope``).

    Pairs that are not finite or not positive are dropped (counted in ``n_dropped``). Intervals
    are Student-t intervals from the standard errors of ``scipy.stats.linregress``.

    Args:
        x: positive sample, e.g. averaged instability coefficients.
        y: positive sample, e.g. reconstruction errors.
        confidence: confidence level of the intervals.

    Returns:
        A dict with ``slope``, ``slope_ci``, ``intercept`` (of ``log10 y`` at ``log10 x = 0``),
        ``intercept_ci``, ``r`` (Pearson's r of the logs), ``p`` (two-sided p-value of slope 0),
        ``slope_stderr``, ``n``, ``n_dropped``, ``confidence`` and ``reason`` (``None``, or why the
        numbers are NaN: all ``x`` equal).

    Raises:
        ValueError: if fewer than 3 usable pairs remain or ``confidence`` is not in (0, 1).
    """
    check_options(1, confidence)
    xf, yf, dropped = finite_pairs(x, y)
    positive = (xf > 0) & (yf > 0)
    lx, ly = np.log10(xf[positive]), np.log10(yf[positive])
    dropped += int(xf.size - positive.sum())
    if lx.size < 3:
        raise ValueError(f"need at least 3 positive finite (x, y) pairs, got {lx.size} ({dropped} dropped)")
    result: dict[str, Any] = {"n": int(lx.size), "n_dropped": dropped, "confidence": float(confidence), "reason": None}
    if np.ptp(lx) == 0.0:
        nan, nan_ci = float("nan"), (float("nan"), float("nan"))
        result.update(slope=nan, slope_ci=nan_ci, intercept=nan, intercept_ci=nan_ci, r=nan, p=nan, slope_stderr=nan,
                      reason="x is constant")
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # exact fits: zero stderr, r = +-1
        fit = sps.linregress(lx, ly)
    t = float(sps.t.ppf(0.5 + confidence / 2.0, lx.size - 2))
    result.update(
        slope=float(fit.slope), slope_ci=(float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)),
        intercept=float(fit.intercept),
        intercept_ci=(float(fit.intercept - t * fit.intercept_stderr), float(fit.intercept + t * fit.intercept_stderr)),
        r=float(fit.rvalue), p=float(fit.pvalue), slope_stderr=float(fit.stderr),
    )
    return result


def format_correlation(result: dict[str, Any], *, digits: int = 2) -> str:
    """One line for a plot legend or a report, e.g. ``"Spearman ρ=0.41 [0.30, 0.51], Pearson r=0.35 [0.22, 0.47] (n=200)"``."""
    if result.get("reason"):
        return f"no correlation: {result['reason']} (n={result['n']})"

    def one(name: str, value: float, ci: tuple[float, float]) -> str:
        return f"{name}={value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    level = round(100 * result["confidence"])
    return (f"{one('Spearman ρ', result['spearman_rho'], result['spearman_ci'])}, "
            f"{one('Pearson r', result['pearson_r'], result['pearson_ci'])} ({level}% CI, n={result['n']})")
