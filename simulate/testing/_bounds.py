r"""Assertions on Theorem 4.1 (samples) and Theorem 4.3 (the bounds themselves).

Part of :mod:`simulate.testing`; see :mod:`simulate.testing.assertions` for the conventions.
"""

from __future__ import annotations

import math

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from theory.thm41 import Theorem41Estimate, lemma_d2_guarantees_instability, theorem41_from_samples
from theory.highdim.thm43 import instability_bounds

__all__ = ["assert_theorem41", "assert_theorem43_bounds_valid"]


def assert_theorem41(
    log_Lambda: ArrayLike,
    log_pg: ArrayLike,
    z_norm2: ArrayLike,
    *,
    n: int,
    tau: float,
    c: float,
    confidence: float = 0.95,
    pointwise_atol: float | None = 1e-9,
) -> Theorem41Estimate:
    r"""Assert Theorem 4.1 on samples ``x_b ~ p_r``: ``P_inst(tau) >= 1 - p1(tau, c) - p2(c)``.

    With ``P_inst = P[Lambda_G(F(x)) > tau]``, ``p1 = P[p_g(x) >= (2 pi)^{-n/2} e^{-c/2} tau^{-n}]``,
    ``p2 = P[||F(x)||^2 >= c]`` estimated from the samples (:func:`theory.theorem41_from_samples`).
    Fails when the violation is significant: the Clopper-Pearson upper end of ``P_inst`` lies
    below the lower end of the bound's interval (each at ``confidence``; Bonferroni for the bound).
    With ``pointwise_atol`` (default ``1e-9``) it also fails where Lemma D.2 is broken sample by
    sample: ``||F(x)||^2 < c`` and ``p_g(x)`` below the threshold but
    ``log Lambda <= log tau - pointwise_atol`` (the three inputs then disagree with Lemma D.1);
    ``None`` skips that check (e.g. when ``log_Lambda`` comes from another model than ``log_pg``).

    Args:
        log_Lambda: ``log Lambda_G(F(x_b))`` per sample (per dimension).
        log_pg: ``log p_g(x_b)`` per sample.
        z_norm2: ``||F(x_b)||^2`` per sample.
        n: dimension; tau, c: the thresholds (``> 0``); confidence: in (0, 1).
    """
    if pointwise_atol is not None and not (np.isfinite(pointwise_atol) and pointwise_atol >= 0):
        raise ValueError(f"pointwise_atol must be None or finite and >= 0, got {pointwise_atol!r}")
    z2 = np.asarray(z_norm2, dtype=np.float64).ravel()
    if z2.size == 0:
        raise ValueError("z_norm2 must hold at least one sample")
    if np.isnan(z2).any() or (z2 < 0).any():
        raise ValueError(f"z_norm2 must be >= 0 (a squared norm), got {float(z2[np.isnan(z2) | (z2 < 0)][0])!r}")
    est = theorem41_from_samples(log_Lambda, log_pg, z_norm2, n, tau, c, confidence)
    msgs = []
    if not est.holds_within_intervals:
        msgs.append(
            f"P_inst(tau) = {est.p_inst.estimate:.4g} (CI [{est.p_inst.lower:.4g}, {est.p_inst.upper:.4g}], "
            f"{est.p_inst.successes}/{est.p_inst.trials} samples with Lambda > tau) < bound 1 - p1 - p2 = "
            f"{est.lower_bound:.4g} (CI [{est.lower_bound_interval[0]:.4g}, {est.lower_bound_interval[1]:.4g}]; "
            f"p1 = {est.p1.estimate:.4g}, p2 = {est.p2.estimate:.4g}) at confidence {confidence:g}"
        )
    if pointwise_atol is not None:
        ll = np.asarray(log_Lambda, dtype=np.float64).ravel()
        hyp = lemma_d2_guarantees_instability(z_norm2, log_pg, est.n, est.tau, est.c)
        bad = np.flatnonzero(hyp & (ll <= np.log(est.tau) - pointwise_atol))
        if bad.size:
            b = int(bad[np.argmin(ll[bad])])
            msgs.append(
                f"Lemma D.2 broken at {bad.size} samples (first worst: sample {b}): ||F(x)||^2 = "
                f"{float(np.ravel(z_norm2)[b]):.4g} < c and log p_g(x) = {float(np.ravel(log_pg)[b]):.4g} below the "
                f"threshold, yet log Lambda = {ll[b]:.4g} <= log tau = {np.log(est.tau):.4g}"
            )
    if msgs:
        raise AssertionError(
            f"Theorem 4.1 violated (n = {est.n}, tau = {est.tau:g}, c = {est.c:g}, {est.p_inst.trials} samples):\n  "
            + "\n  ".join(msgs)
            + "\n  log Lambda, log p_g and ||F(x)||^2 must come from the same map G (Lemma D.1): a biased "
              "log Lambda or a p_g that is not G's push-forward shows up here."
        )
    return est


def _monotone(arr: np.ndarray, axis: int, increasing: bool, slack: float) -> tuple[bool, tuple[int, ...] | None]:
    with np.errstate(invalid="ignore"):
        d = np.diff(arr, axis=axis)  # -inf - -inf is NaN: both ends -inf is monotone, excluded below
        bad = (d < -slack) if increasing else (d > slack)
    bad &= ~(np.isneginf(np.take(arr, range(arr.shape[axis] - 1), axis=axis)) & np.isneginf(
        np.take(arr, range(1, arr.shape[axis]), axis=axis)))
    if bad.any():
        return False, tuple(int(i) for i in np.argwhere(bad)[0])
    return True, None


def assert_theorem43_bounds_valid(
    n: int,
    m: int,
    sigma: float,
    side: float,
    tau: ArrayLike,
    c: ArrayLike,
    rho_max: float = 1.0,
    density_ratio: float = 1.0,
    *,
    bounds: Callable[..., dict[str, Any]] = instability_bounds,
    slack: float = 1e-12,
) -> dict[str, Any]:
    r"""Assert that Theorem 4.3's bounds are valid probabilities, monotone in ``tau`` and ``c``.

    ``bounds`` (default :func:`theory.instability_bounds`; give your own implementation to test it)
    is evaluated on the grid ``tau x c`` (a scalar ``tau`` or ``c`` is spread over
    ``x [1/2, 4/5, 1, 5/4, 2]``). Checks: ``p1``, ``p2``, ``P_inst >= 1 - p1 - p2`` in ``[0, 1]`` (logs
    ``<= 0``, no NaN); ``P_inst = max(0, 1 - p1 - p2)``; the ``p1`` bound non-decreasing in ``tau``
    and in ``c`` (``r*^2 = sigma^2 (c + 2 n ln(tau/sigma))`` grows with both), the ``p2`` bound
    non-increasing in ``c`` and constant in ``tau``, hence ``P_inst``'s bound non-increasing in
    ``tau``. Returns the evaluated grid.
    """
    if not (isinstance(slack, (int, float)) and math.isfinite(slack) and slack >= 0):
        raise ValueError(f"slack must be finite and >= 0, got {slack!r}")
    if not callable(bounds):
        raise ValueError(f"bounds must be a callable like theory.instability_bounds, got {bounds!r}")
    taus = np.unique(np.asarray(tau, dtype=np.float64).ravel())
    cs = np.unique(np.asarray(c, dtype=np.float64).ravel())
    for name, grid in (("tau", taus), ("c", cs)):
        if grid.size == 0:
            raise ValueError(f"{name} must hold at least one value (an empty grid checks nothing)")
        if not (np.isfinite(grid).all() and (grid > 0).all()):
            raise ValueError(f"{name} must be finite and > 0, got {grid[~(np.isfinite(grid) & (grid > 0))][0]!r}")
    spread = np.array([0.5, 0.8, 1.0, 1.25, 2.0])
    taus = taus * spread if taus.size == 1 else taus
    cs = cs * spread if cs.size == 1 else cs
    out = bounds(n, m, sigma, side, taus[:, None], cs[None, :], rho_max, density_ratio)
    needed = ("log_p1_bound", "log_p2_bound", "p1_bound", "p2_bound", "p_inst_lower_bound")
    if not isinstance(out, dict) or any(k not in out for k in needed):
        have = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ValueError(f"bounds must return a dict with keys {', '.join(needed)}; got {have}")
    where = f"(n = {n}, m = {m}, sigma = {sigma:g}, side = {side:g}, rho_max = {rho_max:g}, K = {density_ratio:g})"
    shape = (taus.size, cs.size)
    msgs = []
    arrs = {k: np.broadcast_to(np.asarray(out[k], dtype=np.float64), shape)
            for k in ("log_p1_bound", "log_p2_bound", "p1_bound", "p2_bound", "p_inst_lower_bound")}
    for k, a in arrs.items():
        is_log = k.startswith("log_")
        bad = np.isnan(a) | ((a > slack) if is_log else ((a < -slack) | (a > 1 + slack)))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            msgs.append(f"{k} = {a[i, j]:.6g} outside {'[-inf, 0]' if is_log else '[0, 1]'} at tau = {taus[i]:g}, c = {cs[j]:g}")
    expect = np.maximum(0.0, 1.0 - arrs["p1_bound"] - arrs["p2_bound"])
    if not np.allclose(arrs["p_inst_lower_bound"], expect, rtol=0, atol=1e-12):
        i, j = np.argwhere(~np.isclose(arrs["p_inst_lower_bound"], expect, rtol=0, atol=1e-12))[0]
        msgs.append(f"p_inst_lower_bound = {arrs['p_inst_lower_bound'][i, j]:.6g} != max(0, 1 - p1 - p2) = "
                    f"{expect[i, j]:.6g} at tau = {taus[i]:g}, c = {cs[j]:g}")
    for key, axis, increasing, what in (
        ("log_p1_bound", 0, True, "non-decreasing in tau"),
        ("log_p1_bound", 1, True, "non-decreasing in c"),
        ("log_p2_bound", 1, False, "non-increasing in c"),
        ("p_inst_lower_bound", 0, False, "non-increasing in tau"),
    ):
        ok, idx = _monotone(arrs[key], axis, increasing, slack)
        if not ok:
            i, j = idx
            i2, j2 = (i + 1, j) if axis == 0 else (i, j + 1)
            msgs.append(f"{key} not {what}: {arrs[key][i, j]:.6g} at (tau = {taus[i]:g}, c = {cs[j]:g}) then "
                        f"{arrs[key][i2, j2]:.6g} at (tau = {taus[i2]:g}, c = {cs[j2]:g})")
    lp2 = arrs["log_p2_bound"]
    if not np.all((lp2 == lp2[:1]) | np.isclose(lp2, lp2[:1], rtol=0, atol=slack)):
        msgs.append("log_p2_bound depends on tau (Theorem 4.3's p2 bound is min(1, K P[chi2_n >= c]))")
    if msgs:
        raise AssertionError(f"Theorem 4.3 bounds invalid {where}:\n  " + "\n  ".join(msgs[:6]))
    return out
