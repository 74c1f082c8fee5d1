r"""Correlations with paired-bootstrap intervals: the one implementation (docs/theory.md §9.6).

Fig. 4(b) (:mod:`simulate.experiments.fig4.experiment`) and Fig. 4(c) / A1 (:mod:`largemodel`) report the same
statistic: Pearson's ``r`` and Spearman's ``rho`` of ``(x_i, y_i)`` pairs with their p-values
(``scipy.stats.pearsonr`` / ``spearmanr``) and paired-bootstrap confidence intervals
(``scipy.stats.bootstrap``: pairs resampled together, BCa by default, ``n_boot`` resamples from
``numpy.random.default_rng(seed)``). :func:`correlation` computes one coefficient with its interval;
:func:`correlate` (the generic dict of :mod:`largemodel.study.stats`) and :func:`correlation_summary` (the
Fig. 4(b) dict) are two output formats of it.

The two formats differ in these documented choices (each an explicit argument of
:func:`correlation` / :func:`bootstrap_ci`, so both keep their numbers exactly):

* where the logs are taken: :func:`correlate` correlates the values it is given;
  :func:`correlation_summary` takes Pearson on ``log x, log y`` when all values are positive;
* bootstrap seeds: :func:`correlate` uses ``seed`` for both intervals, :func:`correlation_summary`
  ``seed`` for Pearson and ``seed + 1`` for Spearman;
* ``clip``: :func:`correlate`'s resampled coefficients are clipped to ``[-1, 1]`` (rounding can give
  ``1 + 2^-52`` on perfectly linear resamples); :func:`correlation_summary`'s are not;
* ``fallback``: when the BCa interval is not finite (every resample equal, or NaN resamples),
  :func:`correlate` falls back to percentiles of the finite resamples and says so in the method;
  :func:`correlation_summary` reports ``None`` for the undefined end;
* degenerate input: :func:`correlate` drops non-finite pairs (counted), raises ``ValueError`` below 3
  pairs and gives NaN with a ``reason`` for a constant sample; :func:`correlation_summary` drops
  non-finite pairs silently and gives ``None`` below 3 pairs or for a constant sample.

``bootstrap_ci``'s ``batch`` (memory bound) does not change the numbers: the resamples are drawn
from one generator in order, so batches give the same index stream as one draw.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

__all__ = [
    "CIMethod",
    "Correlation",
    "finite_pairs",
    "pearson_vectorized",
    "spearman_vectorized",
    "bootstrap_ci",
    "correlation",
    "correlate",
    "correlation_summary",
    "classify_correlation",
    "check_options",
]

CIMethod = Literal["BCa", "percentile", "basic"]

#: at most this many float64 values per bootstrap batch (bounds memory for large n)
_BATCH_ELEMENTS = 20_000_000


def finite_pairs(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs where either value is NaN or infinite.

    Returns ``(x, y, n_dropped)`` as float64 arrays; ``ValueError`` if the inputs are not 1-D or differ
    in length.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x and y must be 1-D, got shapes {xa.shape} and {ya.shape}")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep], int(xa.size - keep.sum())


def pearson_vectorized(x: np.ndarray, y: np.ndarray, axis: int = -1, *, clip: bool = True) -> np.ndarray:
    """Pearson's ``r = sum (x - xbar)(y - ybar) / sqrt(sum (x - xbar)^2 sum (y - ybar)^2)`` along ``axis``.

    NaN where a sample is constant; clipped to ``[-1, 1]`` when ``clip``. The bootstrap statistic.
    """
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=axis) / np.sqrt((xc * xc).sum(axis=axis) * (yc * yc).sum(axis=axis))
    return np.clip(r, -1.0, 1.0) if clip else r


def spearman_vectorized(x: np.ndarray, y: np.ndarray, axis: int = -1, *, clip: bool = True) -> np.ndarray:
    """Spearman's rho along ``axis``: Pearson's r of the (average-tie) ranks."""
    return pearson_vectorized(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis=axis, clip=clip)


def bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    statistic: Callable[..., np.ndarray],
    *,
    n_boot: int,
    seed: int,
    confidence: float,
    method: CIMethod = "BCa",
    fallback: bool = True,
) -> tuple[tuple[float, float], str]:
    """Paired-bootstrap confidence interval of a vectorized two-sample statistic (docs/theory.md §9.6).

    ``statistic(x, y, axis=-1)`` is vectorized over leading axes; the ``(x_i, y_i)`` pairs are
    resampled together ``n_boot`` times from ``numpy.random.default_rng(seed)``. Returns
    ``((low, high), method_used)``. When the interval is not finite: with ``fallback`` the percentile
    interval of the finite resamples (``method_used`` = ``"percentile (finite resamples: k/n)"``,
    ``(nan, nan)`` if none is finite), else scipy's interval as it is (NaN ends) and ``method``.
    """
    with warnings.catch_warnings():
        # BCa's "cannot be calculated" (degenerate) warning: handled by the caller / the fallback
        warnings.simplefilter("ignore", category=sps.DegenerateDataWarning)
        # and its 0/0 in the acceleration estimate when every jackknife value is equal
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = sps.bootstrap(
            (x, y), statistic, paired=True, vectorized=True, n_resamples=int(n_boot), confidence_level=float(confidence),
            method=method, batch=max(1, _BATCH_ELEMENTS // max(x.size, 1)), **_rng_kwargs(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not fallback or (np.isfinite(low) and np.isfinite(high)):
        return (low, high), method
    return _percentile_fallback(np.asarray(res.bootstrap_distribution), confidence)


@dataclass(frozen=True)
class Correlation:
    """One coefficient (``kind`` = ``"pearson"`` or ``"spearman"``) with its p-value and interval."""

    kind: str
    estimate: float
    pvalue: float
    ci: tuple[float, float]
    ci_method: str


def correlation(
    x: np.ndarray,
    y: np.ndarray,
    kind: Literal["pearson", "spearman"],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: CIMethod = "BCa",
    clip: bool = True,
    fallback: bool = True,
) -> Correlation:
    """Pearson's r or Spearman's rho of finite, non-constant 1-D samples, p-value and bootstrap interval.

    The estimate and two-sided p-value come from ``scipy.stats.pearsonr`` / ``spearmanr``; the
    interval from :func:`bootstrap_ci` with :func:`pearson_vectorized` / :func:`spearman_vectorized`
    (``clip`` passed on) as the statistic (docs/theory.md §9.6).
    """
    if kind == "pearson":
        test, stat = sps.pearsonr, pearson_vectorized
    elif kind == "spearman":
        test, stat = sps.spearmanr, spearman_vectorized
    else:
        raise ValueError(f"kind must be 'pearson' or 'spearman', got {kind!r}")
    res = test(x, y)
    ci, used = bootstrap_ci(x, y, stat if clip else functools.partial(stat, clip=False), n_boot=n_boot, seed=seed,
                            confidence=confidence, method=method, fallback=fallback)
    return Correlation(kind, float(res.statistic), float(res.pvalue), ci, used)


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: CIMethod = "BCa",
) -> dict[str, Any]:
    """Pearson and Spearman correlation of the values given, with p-values and bootstrap intervals.

    Pairs with a NaN or infinite value are dropped first (``n_dropped``). Both intervals use ``seed``,
    clip the resampled coefficients to ``[-1, 1]`` and fall back to percentiles of the finite
    resamples where the chosen interval cannot be computed (BCa is undefined when every resample
    gives the same value; small samples give constant resamples whose correlation is NaN); the
    method recorded per statistic says so.

    Returns a dict with ``n``, ``n_dropped``, ``confidence``, ``n_boot``, ``seed``, ``pearson_r``,
    ``pearson_p``, ``pearson_ci`` (low, high), ``pearson_ci_method``, ``spearman_rho``,
    ``spearman_p``, ``spearman_ci``, ``spearman_ci_method`` and ``reason``: ``None``, or why the
    numbers are NaN (a constant sample). ``ValueError`` if fewer than 3 finite pairs remain, or for
    bad ``n_boot`` / ``confidence``.
    """
    check_options(n_boot, confidence)
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
    kw: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "confidence": confidence, "method": method}
    p = correlation(xf, yf, "pearson", **kw)
    s = correlation(xf, yf, "spearman", **kw)
    result.update(
        pearson_r=p.estimate, pearson_p=p.pvalue, pearson_ci=p.ci, pearson_ci_method=p.ci_method,
        spearman_rho=s.estimate, spearman_p=s.pvalue, spearman_ci=s.ci, spearman_ci_method=s.ci_method,
    )
    return result


def correlation_summary(x: Any, y: Any, *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95,
                        log_pearson: bool = True) -> dict[str, Any]:
    """The Fig. 4(b) summary: Pearson (on logs) and Spearman with p-values and BCa bootstrap intervals.

    Non-finite pairs are dropped. Pearson is taken on ``log x``, ``log y`` when ``log_pearson`` and
    both are positive (the log-log scatter of Fig. 4(b)); Spearman on the values (rank-based). The
    intervals are paired BCa intervals (:func:`correlation` with ``clip=False``, ``fallback=False``;
    seeds ``seed`` for Pearson, ``seed + 1`` for Spearman); an undefined end is ``None``.
    ``positive`` / ``negative``: Spearman's interval lies entirely above / below 0. Fewer than 3
    pairs or a constant sample: every coefficient ``None``.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    logged = bool(log_pearson and np.all(x > 0) and np.all(y > 0))
    px, py = (np.log(x), np.log(y)) if logged else (x, y)
    out: dict[str, Any] = {"n": int(x.size), "pearson_on_logs": logged}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        out.update(pearson_r=None, pearson_p=None, pearson_ci=[None, None], spearman_rho=None, spearman_p=None,
                   spearman_ci=[None, None], positive=False, negative=False)
        return out
    kw: dict[str, Any] = {"n_boot": n_resamples, "confidence": confidence, "clip": False, "fallback": False}
    p = correlation(px, py, "pearson", seed=seed, **kw)
    s = correlation(x, y, "spearman", seed=seed + 1, **kw)
    out["pearson_r"], out["pearson_p"] = p.estimate, p.pvalue
    out["spearman_rho"], out["spearman_p"] = s.estimate, s.pvalue
    out["pearson_ci"] = [v if math.isfinite(v) else None for v in p.ci]
    out["spearman_ci"] = [v if math.isfinite(v) else None for v in s.ci]
    lo, hi = out["spearman_ci"]
    out["positive"] = bool(out["spearman_rho"] > 0 and lo is not None and lo > 0)
    out["negative"] = bool(out["spearman_rho"] < 0 and hi is not None and hi < 0)
    return out


def classify_correlation(summary: dict[str, Any]) -> str:
    """``"positive"``, ``"negative"`` or ``"none"`` from a :func:`correlation_summary` dict."""
    if summary.get("positive"):
        return "positive"
    if summary.get("negative"):
        return "negative"
    return "none"


def check_options(n_boot: int, confidence: float) -> None:
    """``ValueError`` unless ``n_boot >= 1`` and ``0 < confidence < 1``."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _percentile_fallback(distribution: np.ndarray, confidence: float) -> tuple[tuple[float, float], str]:
    """Percentile interval from the finite bootstrap values (degenerate or NaN-containing distributions)."""
    finite = distribution[np.isfinite(distribution)]
    label = f"percentile (finite resamples: {finite.size}/{distribution.size})"
    if finite.size == 0:
        return (float("nan"), float("nan")), label
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return (float(low), float(high)), label


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


def _rng_kwargs(seed: int) -> dict[str, Any]:
    """The seeding keyword of ``scipy.stats.bootstrap``: ``rng`` (SciPy >= 1.15) or ``random_state``."""
    generator = np.random.default_rng(seed)
    if "rng" in inspect.signature(sps.bootstrap).parameters:
        return {"rng": generator}
    return {"random_state": generator}
