"""Correlation between instability and reconstruction error, with bootstrap uncertainty.

The paper's large-model evidence (Fig. 4c, Fig. A1) is a rank correlation between the averaged
instability coefficient of an image and its reconstruction error over a few hundred images. A
single number says little at that sample size, so :func:`correlate` reports Pearson's r and
Spearman's rho with their p-values *and* paired-bootstrap confidence intervals
(``scipy.stats.bootstrap``, BCa by default), and :func:`linear_fit_loglog` gives the power-law
slope of error against instability with a t-interval.

Results are plain dicts of floats, ints, strings and tuples, ready for ``json.dump``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

CIMethod = Literal["BCa", "percentile", "basic"]

#: at most this many float64 values per bootstrap batch (bounds memory for large n)
_BATCH_ELEMENTS = 20_000_000


def finite_pairs(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs where either value is NaN or infinite.

    Args:
        x: first sample (1-D).
        y: second sample, same length.

    Returns:
        ``(x, y, n_dropped)`` as float64 arrays.

    Raises:
        ValueError: if the inputs are not 1-D or differ in length.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x and y must be 1-D, got shapes {xa.shape} and {ya.shape}")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep], int(xa.size - keep.sum())


def pearson_vectorized(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis`` (NaN where a sample is constant); the bootstrap statistic."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=axis) / np.sqrt((xc * xc).sum(axis=axis) * (yc * yc).sum(axis=axis))
    return np.clip(r, -1.0, 1.0)


def spearman_vectorized(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis``: Pearson's r of the (average-tie) ranks."""
    return pearson_vectorized(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis=axis)


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: CIMethod = "BCa",
) -> dict[str, Any]:
    """Pearson and Spearman correlation with p-values and paired-bootstrap confidence intervals.

    Pairs with a NaN or infinite value are dropped first (counted in ``n_dropped``). The intervals
    come from ``scipy.stats.bootstrap`` resampling ``(x_i, y_i)`` pairs together. When the chosen
    interval cannot be computed (BCa is undefined when every resample gives the same value, as for
    perfectly monotone data, and small samples produce constant resamples whose correlation is
    NaN), the interval falls back to percentiles of the finite bootstrap values, and the method
    recorded for that statistic says so.

    Args:
        x: first sample, e.g. averaged instability coefficients.
        y: second sample, e.g. reconstruction errors.
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling.
        confidence: confidence level of the intervals, in (0, 1).
        method: ``"BCa"`` (default), ``"percentile"`` or ``"basic"``.

    Returns:
        A dict with ``n``, ``n_dropped``, ``confidence``, ``n_boot``, ``seed``, ``pearson_r``,
        ``pearson_p``, ``pearson_ci`` (low, high), ``pearson_ci_method``, ``spearman_rho``,
        ``spearman_p``, ``spearman_ci``, ``spearman_ci_method`` and ``reason``: ``None``, or why
        the numbers are NaN (a constant sample).

    Raises:
        ValueError: if fewer than 3 finite pairs remain, or for bad ``n_boot`` / ``confidence``.
    """
    _check_options(n_boot, confidence)
    xf, yf, dropped = finite_pairs(x, y)
    if xf.size < 3:
        raise ValueError(f"need at least 3 finite (x, y) pairs, got {xf.size} ({dropped} dropped)")
    result: dict[str, Any] = {
        "n": int(xf.size), "n_dropped": dropped, "confidence": float(confidence),
        "n_boot": int(n_boot), "seed": int(seed), "reason": _constant_reason(xf, yf),
    }
    if result["reason"] is not None:
        nan_ci = (float("nan"), float("nan"))
        result.update(pearson_r=float("nan"), pearson_p=float("nan"), pearson_ci=nan_ci, pearson_ci_method="none",
                      spearman_rho=float("nan"), spearman_p=float("nan"), spearman_ci=nan_ci,
                      spearman_ci_method="none")
        return result
    pearson = sps.pearsonr(xf, yf)
    spearman = sps.spearmanr(xf, yf)
    p_ci, p_method = bootstrap_ci(xf, yf, pearson_vectorized, n_boot=n_boot, seed=seed, confidence=confidence,
                                  method=method)
    s_ci, s_method = bootstrap_ci(xf, yf, spearman_vectorized, n_boot=n_boot, seed=seed, confidence=confidence,
                                  method=method)
    result.update(
        pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue), pearson_ci=p_ci,
        pearson_ci_method=p_method,
        spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue), spearman_ci=s_ci,
        spearman_ci_method=s_method,
    )
    return result


def bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    statistic: Callable[..., np.ndarray],
    *,
    n_boot: int,
    seed: int,
    confidence: float,
    method: CIMethod = "BCa",
) -> tuple[tuple[float, float], str]:
    """Paired-bootstrap confidence interval of a vectorized two-sample statistic.

    Args:
        x: first sample (finite, 1-D).
        y: second sample, same length.
        statistic: ``statistic(x, y, axis=-1)``, vectorized over leading axes.
        n_boot: number of resamples.
        seed: seed of the resampling.
        confidence: confidence level.
        method: interval method passed to ``scipy.stats.bootstrap``.

    Returns:
        ``((low, high), method_used)``; ``method_used`` is ``method``, or ``"percentile
        (finite resamples)"`` when the fallback described in :func:`correlate` was needed
        (``(nan, nan)`` if no resample was finite).
    """
    with warnings.catch_warnings():
        # BCa's "cannot be calculated" (degenerate) warning: handled by the fallback below
        warnings.simplefilter("ignore", category=sps.DegenerateDataWarning)
        # and its 0/0 in the acceleration estimate when every jackknife value is equal
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = sps.bootstrap(
            (x, y), statistic, paired=True, vectorized=True, n_resamples=n_boot, confidence_level=confidence,
            method=method, batch=max(1, _BATCH_ELEMENTS // max(x.size, 1)), **_rng_kwargs(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(low) and np.isfinite(high):
        return (low, high), method
    return _percentile_fallback(np.asarray(res.bootstrap_distribution), confidence)


def _percentile_fallback(distribution: np.ndarray, confidence: float) -> tuple[tuple[float, float], str]:
    """Percentile interval from the finite bootstrap values (degenerate or NaN-containing distributions)."""
    finite = distribution[np.isfinite(distribution)]
    label = f"percentile (finite resamples: {finite.size}/{distribution.size})"
    if finite.size == 0:
        return (float("nan"), float("nan")), label
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return (float(low), float(high)), label


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
    _check_options(1, confidence)
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


def _constant_reason(x: np.ndarray, y: np.ndarray) -> str | None:
    """Why a correlation is undefined (a constant sample), or ``None``."""
    x_const, y_const = np.ptp(x) == 0.0, np.ptp(y) == 0.0
    if x_const and y_const:
        return "x and y are constant"
    if x_const:
        return "x is constant"
    if y_const:
        return "y is constant"
    return None


def _check_options(n_boot: int, confidence: float) -> None:
    """Validate the resample count and confidence level."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _rng_kwargs(seed: int) -> dict[str, Any]:
    """The seeding keyword of ``scipy.stats.bootstrap``: ``rng`` (SciPy >= 1.15) or ``random_state``."""
    generator = np.random.default_rng(seed)
    if "rng" in inspect.signature(sps.bootstrap).parameters:
        return {"rng": generator}
    return {"random_state": generator}
