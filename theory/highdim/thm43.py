r"""Theorem 4.3 (asymptotic instability) as bounds to evaluate (docs/theory.md §8).

Assumptions: the real distribution ``p_r`` lives on ``[0, 1]^n`` with density ``<= rho_max``
(4.1, 4.2); the generation distribution is a mixture of ``m`` Gaussian neighbours
``p_g = sum_i w_i (q_i * K_sigma)`` (4.3) whose supports ``Omega_i`` each lie in a cube of side
``l`` (4.4). Theorem 4.1 gives ``P_inst(tau) >= 1 - p1(tau, c) - p2(c)``; here

* ``K_sigma(r*) = (2 pi)^{-n/2} e^{-c/2} tau^{-n}`` gives ``r*^2 = sigma^2 (c + 2 n ln(tau/sigma))``
  (``p1 = 0`` when this is negative, since then ``p_g <= K_sigma(0)`` is below the threshold);
* ``p1 <= min(1, rho_max m S_n(l, r*))`` with ``S_n`` the Steiner volume of the cube's parallel
  body (:mod:`theory.highdim.steiner`);
* ``p2 <= min(1, K P[chi2_n >= c])`` under the hypothesis ``p_r <= K p_g`` on the region concerned
  (``K`` = ``density_ratio``, an explicit parameter: the paper argues it stays bounded, it is not
  proved);
* ``P_inst >= max(0, 1 - p1_bound - p2_bound)``.

Everything is evaluated in log space; probabilities are reported both as logs and as values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from theory._validate import as_int_array, require_at_least, require_nonnegative, require_positive
from theory.highdim.chi2 import log_chi2_sf
from theory.highdim.steiner import log_steiner_volume, steiner_rate

__all__ = [
    "BOUND_KEYS",
    "r_star_squared",
    "r_star",
    "log_p1_bound",
    "log_p2_bound",
    "instability_bounds",
    "c_schedule",
    "asymptotic_rbar_squared",
    "p1_bound_rate",
    "p2_bound_rate",
    "AsymptoticVerdict",
    "asymptotic_verdict",
]

#: Keys of :func:`instability_bounds` (and of ``pfode theory bound --json``).
BOUND_KEYS = (
    "n",
    "m",
    "sigma",
    "side",
    "tau",
    "c",
    "rho_max",
    "density_ratio",
    "r_star_squared",
    "r_star",
    "log_steiner_volume",
    "log_chi2_sf",
    "log_p1_bound",
    "log_p2_bound",
    "p1_bound",
    "p2_bound",
    "p_inst_lower_bound",
)


def r_star_squared(n: ArrayLike, sigma: ArrayLike, tau: ArrayLike, c: ArrayLike) -> np.ndarray:
    r"""``r*^2 = sigma^2 (c + 2 n ln(tau / sigma))`` solving ``K_sigma(r*) = (2 pi)^{-n/2} e^{-c/2} tau^{-n}``.

    May be negative: then no point has ``p_g`` above the threshold and ``p1 = 0``.
    """
    n_arr = as_int_array("n", n).astype(np.float64)
    sigma_arr = require_positive("sigma", sigma)
    tau_arr = require_positive("tau", tau)
    c_arr = require_positive("c", c)
    return sigma_arr**2 * (c_arr + 2.0 * n_arr * np.log(tau_arr / sigma_arr))


def r_star(n: ArrayLike, sigma: ArrayLike, tau: ArrayLike, c: ArrayLike) -> np.ndarray:
    """``r* = sqrt(max(r*^2, 0))`` (``0`` where ``r*^2 < 0``, the case ``p1 = 0``)."""
    return np.sqrt(np.maximum(r_star_squared(n, sigma, tau, c), 0.0))


def log_p1_bound(
    n: ArrayLike,
    m: ArrayLike,
    sigma: ArrayLike,
    side: ArrayLike,
    tau: ArrayLike,
    c: ArrayLike,
    rho_max: ArrayLike = 1.0,
) -> np.ndarray:
    r"""``log min(1, rho_max m S_n(l, r*))``, ``-inf`` where ``r*^2 < 0`` (Theorem 4.3, p1)."""
    r2 = r_star_squared(n, sigma, tau, c)
    m_arr = as_int_array("m", m).astype(np.float64)
    side_arr = require_nonnegative("side", side)
    rho_arr = require_positive("rho_max", rho_max)
    n_b, m_b, side_b, rho_b, r2_b = np.broadcast_arrays(np.asarray(n, dtype=np.float64), m_arr, side_arr, rho_arr, r2)
    log_vol = log_steiner_volume(n_b, side_b, np.sqrt(np.maximum(r2_b, 0.0)))
    return _log_p1_from_volume(r2_b, np.log(rho_b), np.log(m_b), log_vol)


def log_p2_bound(n: ArrayLike, c: ArrayLike, density_ratio: ArrayLike = 1.0) -> np.ndarray:
    r"""``log min(1, K P[chi2_n >= c])`` with ``K >= 1`` the density-ratio constant (Theorem 4.3, p2)."""
    k_arr = require_at_least("density_ratio", density_ratio, 1.0)
    return _log_p2_from_tail(log_chi2_sf(n, c), k_arr)


def _log_p1_from_volume(r2: np.ndarray, log_rho: np.ndarray, log_m: np.ndarray, log_vol: np.ndarray) -> np.ndarray:
    """``log min(1, rho_max m S_n(l, r*))``, ``-inf`` where ``r*^2 < 0``."""
    return np.where(r2 >= 0, np.minimum(0.0, log_rho + log_m + log_vol), -np.inf)


def _log_p2_from_tail(log_tail: np.ndarray, density_ratio: np.ndarray) -> np.ndarray:
    """``log min(1, K P[chi2_n >= c])``."""
    return np.minimum(0.0, np.log(density_ratio) + log_tail)


def instability_bounds(
    n: ArrayLike,
    m: ArrayLike,
    sigma: ArrayLike,
    side: ArrayLike,
    tau: ArrayLike,
    c: ArrayLike,
    rho_max: ArrayLike = 1.0,
    density_ratio: ArrayLike = 1.0,
) -> dict[str, Any]:
    r"""Theorem 4.3's bounds on ``p1``, ``p2`` and the lower bound on ``P_inst`` (docs/theory.md §8.2, §8.4).

    All arguments broadcast together (``n`` may be an array of dimensions).

    Args:
        n: dimension, integer ``>= 1``.
        m: number of mixture components, integer ``>= 1``.
        sigma: Gaussian neighbour width ``sigma > 0``.
        side: side ``l >= 0`` of the cube containing each support ``Omega_i``.
        tau: instability threshold on ``Lambda_G``, ``tau > 0``.
        c: threshold on ``||F(x)||^2``, ``c > 0``.
        rho_max: bound on the density of ``p_r`` on ``[0, 1]^n``, ``> 0``.
        density_ratio: ``K >= 1`` with ``p_r <= K p_g`` where ``||F(x)||^2 >= c``.

    Returns:
        dict with the keys :data:`BOUND_KEYS`: the inputs, ``r_star_squared``, ``r_star``,
        ``log_steiner_volume`` (of one cube's parallel body at ``r*``), ``log_chi2_sf``
        (``log P[chi2_n >= c]``), ``log_p1_bound``, ``log_p2_bound``, ``p1_bound``, ``p2_bound``
        and ``p_inst_lower_bound = max(0, 1 - p1_bound - p2_bound)``. Scalars for scalar input,
        arrays otherwise. Probabilities lie in ``[0, 1]``; logs are ``<= 0`` (``-inf`` for 0).

    Raises:
        ValueError: naming the first invalid parameter (``n < 1``, ``sigma <= 0``, ``tau <= 0``,
            ``c <= 0``, ``side < 0``, ``rho_max <= 0``, ``density_ratio < 1``, non-finite values).
    """
    n_arr = as_int_array("n", n)
    m_arr = as_int_array("m", m)
    sigma_arr = require_positive("sigma", sigma)
    side_arr = require_nonnegative("side", side)
    tau_arr = require_positive("tau", tau)
    c_arr = require_positive("c", c)
    rho_arr = require_positive("rho_max", rho_max)
    k_arr = require_at_least("density_ratio", density_ratio, 1.0)
    arrays = np.broadcast_arrays(n_arr, m_arr, sigma_arr, side_arr, tau_arr, c_arr, rho_arr, k_arr)
    n_b, m_b, sigma_b, side_b, tau_b, c_b, rho_b, k_b = arrays
    r2 = r_star_squared(n_b, sigma_b, tau_b, c_b)
    rs = np.sqrt(np.maximum(r2, 0.0))
    log_vol = log_steiner_volume(n_b, side_b, rs)
    log_tail = log_chi2_sf(n_b, c_b)
    lp1 = _log_p1_from_volume(r2, np.log(rho_b), np.log(m_b), log_vol)
    lp2 = _log_p2_from_tail(log_tail, k_b)
    p1 = np.exp(lp1)
    p2 = np.exp(lp2)
    result = {
        "n": n_b,
        "m": m_b,
        "sigma": sigma_b,
        "side": side_b,
        "tau": tau_b,
        "c": c_b,
        "rho_max": rho_b,
        "density_ratio": k_b,
        "r_star_squared": r2,
        "r_star": rs,
        "log_steiner_volume": log_vol,
        "log_chi2_sf": log_tail,
        "log_p1_bound": lp1,
        "log_p2_bound": lp2,
        "p1_bound": p1,
        "p2_bound": p2,
        "p_inst_lower_bound": np.maximum(0.0, 1.0 - p1 - p2),
    }
    if n_b.ndim == 0:
        return {key: value.item() for key, value in result.items()}
    return result


def c_schedule(n: ArrayLike, eps: float = 0.1) -> np.ndarray:
    """The schedule ``c_n = (1 + eps) n`` of Theorem 4.3 (``(c_n - n)/sqrt(n) -> inf``, ``c_n/n -> 1 + eps``)."""
    n_arr = as_int_array("n", n).astype(np.float64)
    eps_val = float(require_positive("eps", eps))
    return (1.0 + eps_val) * n_arr


def asymptotic_rbar_squared(gamma: ArrayLike, sigma: ArrayLike, tau: ArrayLike) -> np.ndarray:
    """``rbar^2 = lim r*^2 / n = sigma^2 (gamma + 2 ln(tau / sigma))`` for ``c_n / n -> gamma``."""
    gamma_arr = require_at_least("gamma", gamma, 1.0)
    sigma_arr = require_positive("sigma", sigma)
    tau_arr = require_positive("tau", tau)
    return sigma_arr**2 * (gamma_arr + 2.0 * np.log(tau_arr / sigma_arr))


def p1_bound_rate(
    gamma: ArrayLike, sigma: ArrayLike, side: ArrayLike, tau: ArrayLike, log_rho_per_dim: ArrayLike = 0.0
) -> np.ndarray:
    r"""``lim (1/n) log(rho_max m S_n(l, r*))``: the exponential rate of the p1 bound.

    Equals ``steiner_rate(l, rbar) + log_rho_per_dim`` with ``rbar`` from
    :func:`asymptotic_rbar_squared` (fixed ``m`` and ``rho_max = exp(n log_rho_per_dim)``);
    ``-inf`` when ``rbar^2 < 0`` (then ``p1 = 0`` for large ``n``). The p1 bound tends to 0
    (exponentially) when the rate is negative and is eventually the trivial bound 1 when positive.
    """
    rbar2 = asymptotic_rbar_squared(gamma, sigma, tau)
    side_arr = require_positive("side", side)
    extra = np.asarray(require_nonnegative("log_rho_per_dim", log_rho_per_dim), dtype=np.float64)
    rbar2_b, side_b, extra_b = np.broadcast_arrays(rbar2, side_arr, extra)
    out = np.full(rbar2_b.shape, -np.inf)
    pos = rbar2_b > 0
    if np.any(pos):
        out[pos] = steiner_rate(side_b[pos], np.sqrt(rbar2_b[pos])) + extra_b[pos]
    return out


def p2_bound_rate(gamma: ArrayLike) -> np.ndarray:
    r"""``lim (1/n) log P[chi2_n >= gamma n] = -(gamma - 1 - ln gamma) / 2`` (Cramer; 0 for ``gamma = 1``)."""
    gamma_arr = require_at_least("gamma", gamma, 1.0)
    return -0.5 * (gamma_arr - 1.0 - np.log(gamma_arr))


@dataclass(frozen=True)
class AsymptoticVerdict:
    """What the bounds of Theorem 4.3 say as ``n -> inf`` for ``c_n = gamma n`` (fixed parameters)."""

    p1_rate: float
    p2_rate: float
    p1_to_zero: bool
    p2_to_zero: bool
    p_inst_to_one: bool


def asymptotic_verdict(
    gamma: float, sigma: float, side: float, tau: float, log_rho_per_dim: float = 0.0
) -> AsymptoticVerdict:
    """Whether the p1 and p2 bounds vanish as ``n -> inf`` (so that ``P_inst -> 1`` follows).

    The p2 bound vanishes for every ``gamma > 1`` (with ``K`` bounded); the p1 bound vanishes iff
    its rate (:func:`p1_bound_rate`) is negative. A bound that does not vanish leaves the claim
    ``P_inst -> 1`` unsupported by Theorem 4.3 (it does not refute it).
    """
    p1 = float(p1_bound_rate(gamma, sigma, side, tau, log_rho_per_dim))
    p2 = float(p2_bound_rate(gamma))
    return AsymptoticVerdict(
        p1_rate=p1, p2_rate=p2, p1_to_zero=p1 < 0, p2_to_zero=p2 < 0, p_inst_to_one=(p1 < 0) and (p2 < 0)
    )
