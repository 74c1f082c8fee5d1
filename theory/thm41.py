r"""Lemma D.1, Lemma D.2 and Theorem 4.1 (probability lower bound of instability).

docs/theory.md §6. ``G`` pushes ``phi = N(0, I_n)`` to ``p_g``, so (Lemma D.1)

    n log Lambda_G(z) = log |det J_G(z)| = log phi(z) - log p_g(G(z)).

Lemma D.2: if ``||F(x)||^2 < c`` and ``p_g(x) < (2 pi)^{-n/2} e^{-c/2} tau^{-n}`` then
``Lambda_G(F(x)) > tau``. A union bound gives Theorem 4.1:

    P_inst(tau) = P_{x ~ p_r}[Lambda_G(F(x)) > tau] >= 1 - p1(tau, c) - p2(c),
    p1 = P[p_g(x) >= (2 pi)^{-n/2} e^{-c/2} tau^{-n}],   p2 = P[||F(x)||^2 >= c].

This module evaluates these from per-sample quantities (``log Lambda``, ``log p_g(x)``,
``||F(x)||^2``), with exact (Clopper-Pearson) confidence intervals, or from supplied bounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from theory._special import LOG_2PI
from theory._validate import as_float_array, as_int_array, require_positive, require_probability

__all__ = [
    "log_standard_normal_density",
    "log_Lambda_density_ratio",
    "lemma_d2_log_threshold",
    "lemma_d2_guarantees_instability",
    "ProportionEstimate",
    "clopper_pearson",
    "Theorem41Estimate",
    "theorem41_from_samples",
    "theorem41_lower_bound",
]


def _float_values(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a float array; a torch tensor passes through unchanged (same arithmetic, its own dtype
    and device), so the simulator and the large-model code use these formulas on their tensors."""
    if type(value).__module__.split(".")[0] == "torch":
        return value  # type: ignore[return-value]
    return as_float_array(name, value)


def log_standard_normal_density(z: ArrayLike | None = None, *, sq_norm: ArrayLike | None = None, n: int | None = None) -> np.ndarray:
    r"""``log phi(z) = -(n/2) log(2 pi) - ||z||^2 / 2`` for rows of ``z`` (shape ``(B, n)``), docs/theory.md §6.1.

    Give either ``z`` or both ``sq_norm = ||z||^2`` and ``n`` (``sq_norm`` may be a torch tensor:
    the result is then a tensor of its dtype).
    """
    if z is not None:
        z_arr = as_float_array("z", z)
        if z_arr.ndim == 1:
            z_arr = z_arr[None, :]
        sq = np.sum(z_arr.reshape(z_arr.shape[0], -1) ** 2, axis=-1)
        dim = int(np.prod(z_arr.shape[1:]))
    else:
        if sq_norm is None or n is None:
            raise ValueError("z: give z, or both sq_norm and n")
        sq = _float_values("sq_norm", sq_norm)
        dim = int(as_int_array("n", n))
    return -0.5 * dim * LOG_2PI - 0.5 * sq


def log_Lambda_density_ratio(log_phi_z: ArrayLike, log_pg_x: ArrayLike, n: int) -> np.ndarray:
    r"""Lemma D.1 (docs/theory.md §6.1): ``log Lambda_G(z) = (log phi(z) - log p_g(G(z))) / n``.

    Torch tensors pass through (the result is then a tensor).
    """
    n_val = float(as_int_array("n", n))
    return (_float_values("log_phi_z", log_phi_z) - _float_values("log_pg_x", log_pg_x)) / n_val


def lemma_d2_log_threshold(n: ArrayLike, tau: ArrayLike, c: ArrayLike) -> np.ndarray:
    r"""``log[(2 pi)^{-n/2} e^{-c/2} tau^{-n}] = -(n/2) log(2 pi) - c/2 - n log tau`` (Lemma D.2, the p1 level)."""
    n_arr = as_int_array("n", n).astype(np.float64)
    tau_arr = require_positive("tau", tau)
    c_arr = require_positive("c", c)
    return -0.5 * n_arr * LOG_2PI - 0.5 * c_arr - n_arr * np.log(tau_arr)


def lemma_d2_guarantees_instability(sq_norm_F: ArrayLike, log_pg_x: ArrayLike, n: int, tau: float, c: float) -> np.ndarray:
    r"""Lemma D.2's hypotheses per sample: ``||F(x)||^2 < c`` and ``log p_g(x) < log threshold``.

    Where this is True, ``Lambda_G(F(x)) > tau`` must hold (a pointwise consequence of Lemma D.1).
    """
    sq = as_float_array("sq_norm_F", sq_norm_F)
    lpg = as_float_array("log_pg_x", log_pg_x)
    return (sq < float(require_positive("c", c))) & (lpg < lemma_d2_log_threshold(n, tau, c))


@dataclass(frozen=True)
class ProportionEstimate:
    """A binomial proportion with its exact (Clopper-Pearson) confidence interval."""

    estimate: float
    lower: float
    upper: float
    successes: int
    trials: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> ProportionEstimate:
    """Clopper-Pearson interval for ``successes`` ``k`` out of ``trials`` ``n`` at level ``1 - alpha``.

    The exact binomial interval in its closed form by beta quantiles: lower ``B^{-1}(alpha/2; k, n - k + 1)``
    (0 when ``k = 0``), upper ``B^{-1}(1 - alpha/2; k + 1, n - k)`` (1 when ``k = n``); the same interval as
    scipy's ``binomtest(k, n).proportion_ci(method="exact")``, which finds it by root search (tested to agree),
    at a fraction of the cost (the Theorem 4.3 judge calls it thousands of times).
    """
    k = int(as_int_array("successes", successes, minimum=0))
    n = int(as_int_array("trials", trials, minimum=1))
    if k > n:
        raise ValueError(f"successes must be <= trials, got {k} > {n}")
    conf = float(require_probability("confidence", confidence))
    alpha = 1.0 - conf
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return ProportionEstimate(k / n, low, high, k, n, conf)


@dataclass(frozen=True)
class Theorem41Estimate:
    """Monte Carlo estimates of Theorem 4.1's quantities from the same samples ``x ~ p_r``.

    ``lower_bound`` is ``1 - p1 - p2`` (estimate) with the interval
    ``[1 - p1.upper - p2.upper, 1 - p1.lower - p2.lower]`` (Bonferroni: confidence at least
    ``2 * confidence - 1``). ``holds`` compares the point estimates (always true up to round-off
    in ``log Lambda``: Lemma D.2 holds sample by sample); ``holds_within_intervals`` compares
    ``p_inst.upper`` with the lower end of the bound's interval. ``lemma_d2_violations`` counts
    samples meeting Lemma D.2's hypotheses with ``Lambda <= tau`` (a numerical-error detector).
    """

    n: int
    tau: float
    c: float
    p_inst: ProportionEstimate
    p1: ProportionEstimate
    p2: ProportionEstimate
    lower_bound: float
    lower_bound_interval: tuple[float, float]
    holds: bool
    holds_within_intervals: bool
    lemma_d2_violations: int

    def as_dict(self) -> dict:
        out = asdict(self)
        out["lower_bound_interval"] = list(self.lower_bound_interval)
        return out


def theorem41_from_samples(
    log_Lambda: ArrayLike,
    log_pg_x: ArrayLike,
    sq_norm_F: ArrayLike,
    n: int,
    tau: float,
    c: float,
    confidence: float = 0.95,
) -> Theorem41Estimate:
    r"""Estimate ``P_inst(tau)``, ``p1(tau, c)``, ``p2(c)`` from per-sample values (Theorem 4.1).

    Args:
        log_Lambda: ``log Lambda_G(F(x_b))`` per sample (any method: density ratio, divergence
            integral, slogdet).
        log_pg_x: ``log p_g(x_b)`` per sample.
        sq_norm_F: ``||F(x_b)||^2`` per sample.
        n: dimension.
        tau: threshold on ``Lambda_G`` (``> 0``).
        c: threshold on ``||F(x)||^2`` (``> 0``).
        confidence: level of the Clopper-Pearson intervals.
    """
    ll = as_float_array("log_Lambda", log_Lambda).ravel()
    lpg = as_float_array("log_pg_x", log_pg_x).ravel()
    sq = as_float_array("sq_norm_F", sq_norm_F).ravel()
    if not (ll.size == lpg.size == sq.size) or ll.size == 0:
        raise ValueError(
            f"log_Lambda, log_pg_x and sq_norm_F must be non-empty with equal sizes, got {ll.size}, {lpg.size}, {sq.size}"
        )
    tau_val = float(require_positive("tau", tau))
    c_val = float(require_positive("c", c))
    n_val = int(as_int_array("n", n))
    unstable = ll > np.log(tau_val)
    high_density = lpg >= lemma_d2_log_threshold(n_val, tau_val, c_val)
    far = sq >= c_val
    trials = ll.size
    p_inst = clopper_pearson(int(unstable.sum()), trials, confidence)
    p1 = clopper_pearson(int(high_density.sum()), trials, confidence)
    p2 = clopper_pearson(int(far.sum()), trials, confidence)
    bound = 1.0 - p1.estimate - p2.estimate
    interval = (max(0.0, 1.0 - p1.upper - p2.upper), max(0.0, 1.0 - p1.lower - p2.lower))
    violations = int(np.sum(~high_density & ~far & ~unstable))
    return Theorem41Estimate(
        n=n_val,
        tau=tau_val,
        c=c_val,
        p_inst=p_inst,
        p1=p1,
        p2=p2,
        lower_bound=bound,
        lower_bound_interval=interval,
        holds=bool(p_inst.estimate >= bound - 1e-12),
        holds_within_intervals=bool(p_inst.upper >= interval[0]),
        lemma_d2_violations=violations,
    )


def theorem41_lower_bound(p1: ArrayLike, p2: ArrayLike) -> np.ndarray:
    """Theorem 4.1 from supplied bounds: ``P_inst >= max(0, 1 - p1 - p2)`` with ``p1, p2`` in [0, 1]."""
    return np.maximum(0.0, 1.0 - require_probability("p1", p1) - require_probability("p2", p2))
