"""Theorem 3.1 bounds (log space) and Lemma D.1 / D.2 / Theorem 4.1 estimators."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.thm31 import check_theorem31, log_expm1, theorem31_bounds
from theory.thm41 import (
    clopper_pearson,
    lemma_d2_guarantees_instability,
    lemma_d2_log_threshold,
    log_Lambda_density_ratio,
    log_standard_normal_density,
    theorem41_from_samples,
    theorem41_lower_bound,
)


def test_theorem31_closed_form_small_L() -> None:
    L, M, N, kappa = 0.7, 2.0, 50, 3.0
    h = 1 / N
    b = theorem31_bounds(L, M, N=N, kappa=kappa)
    assert math.exp(b.log_noise_error) == pytest.approx(h * M / (2 * L) * math.expm1(L), rel=1e-14)
    assert math.exp(b.log_noise_error_discrete) == pytest.approx(h * M / (2 * L) * ((1 + h * L) ** N - 1), rel=1e-13)
    assert math.exp(b.log_reconstruction_error) == pytest.approx(kappa * math.exp(b.log_noise_error), rel=1e-14)
    assert math.exp(b.log_gronwall_error) == pytest.approx(math.exp(L) * math.exp(b.log_noise_error), rel=1e-14)


def test_theorem31_no_overflow_for_huge_L() -> None:
    b = theorem31_bounds(5000.0, 1.0, N=1000)
    assert math.isfinite(b.log_gronwall_error)
    assert b.log_gronwall_error == pytest.approx(5000 + 5000 + math.log(1e-3 / 1e4), rel=1e-12)


def test_theorem31_recursion_is_sharper_and_matches_simulated_worst_case() -> None:
    """Iterate e_{k+1} = (1 + hL) e_k + h^2 M / 2 directly: equals the discrete bound, below part 1."""
    L, M, N = 3.0, 1.5, 200
    h = 1 / N
    e = 0.0
    for _ in range(N):
        e = (1 + h * L) * e + h * h * M / 2
    b = theorem31_bounds(L, M, N=N)
    assert math.log(e) == pytest.approx(b.log_noise_error_discrete, rel=1e-12)
    assert b.log_noise_error_discrete <= b.log_noise_error


@settings(max_examples=100, deadline=None)
@given(L=st.floats(1e-6, 800.0), M=st.floats(1e-6, 1e6), N=st.integers(1, 10**6))
def test_theorem31_ordering(L, M, N) -> None:
    b = theorem31_bounds(L, M, N=N, kappa=math.exp(min(L, 700.0)) * 0.5)
    assert b.log_noise_error_discrete <= b.log_noise_error + 1e-12 * max(1.0, abs(b.log_noise_error))
    assert b.log_reconstruction_error <= b.log_gronwall_error + 1e-12 * max(1.0, abs(b.log_gronwall_error))
    assert all(math.isfinite(v) for v in (b.log_noise_error, b.log_gronwall_error, b.log_noise_error_discrete))


def test_log_expm1() -> None:
    x = np.array([1e-8, 0.5, 29.0, 31.0, 800.0])
    assert log_expm1(x)[:3] == pytest.approx(np.log(np.expm1(x[:3])), rel=1e-14)
    assert log_expm1(800.0) == pytest.approx(800.0)


def test_check_theorem31_flags_a_violation() -> None:
    ok = check_theorem31(1e-4, 2e-4, L=1.0, M=1.0, N=100, kappa=2.5)
    assert ok.noise_bound_holds and ok.reconstruction_bound_holds and ok.gronwall_bound_holds
    assert ok.kappa_bound_holds and ok.amplification_holds and ok.tightness_noise < 0
    bad = check_theorem31(1.0, 2e-4, L=1.0, M=1.0, N=100, kappa=3.0)  # kappa > e^L, noise error too big
    assert not bad.noise_bound_holds and not bad.kappa_bound_holds


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"L": 0.0, "M": 1.0, "N": 10}, "L"),
        ({"L": 1.0, "M": -1.0, "N": 10}, "M"),
        ({"L": 1.0, "M": 1.0, "N": 0}, "N"),
        ({"L": 1.0, "M": 1.0, "h": 2.0}, "h"),
        ({"L": 1.0, "M": 1.0}, "N or h"),
        ({"L": 1.0, "M": 1.0, "N": 10, "kappa": 0.0}, "kappa"),
        ({"L": float("nan"), "M": 1.0, "N": 10}, "L"),
    ],
)
def test_theorem31_bad_input(kwargs, name) -> None:
    with pytest.raises(ValueError, match=rf"^{name}"):
        theorem31_bounds(**kwargs)


def test_lemma_d1_single_gaussian() -> None:
    """G(z) = mu + s z pushes N(0, I) to N(mu, s^2 I): Lambda = s exactly via the density ratio."""
    rng = np.random.default_rng(1)
    n, s = 6, 0.4
    z = rng.normal(size=(50, n))
    x = 2.0 + s * z
    log_pg = log_standard_normal_density((x - 2.0) / s) - n * math.log(s)
    ll = log_Lambda_density_ratio(log_standard_normal_density(z), log_pg, n)
    np.testing.assert_allclose(ll, math.log(s), rtol=1e-12)
    np.testing.assert_allclose(log_standard_normal_density(sq_norm=(z**2).sum(1), n=n), log_standard_normal_density(z))


def test_lemma_d2_threshold_and_guarantee() -> None:
    n, tau, c = 4, 0.5, 6.0
    thr = float(lemma_d2_log_threshold(n, tau, c))
    assert thr == pytest.approx(-2 * math.log(2 * math.pi) - 3.0 - 4 * math.log(0.5))
    # a sample meeting both hypotheses: n log Lambda = log phi(z) - log p_g(x) > n log tau
    sq, lpg = 5.0, thr - 0.1
    assert lemma_d2_guarantees_instability([sq], [lpg], n, tau, c)[0]
    log_lambda = (float(log_standard_normal_density(sq_norm=sq, n=n)) - lpg) / n
    assert log_lambda > math.log(tau)


def test_theorem41_pointwise_consistency_and_ranges() -> None:
    """With log Lambda from the density ratio, Lemma D.2 holds sample by sample: no violations."""
    rng = np.random.default_rng(2)
    n, B = 8, 4000
    sq = rng.chisquare(n, size=B) * rng.uniform(0.5, 1.5, size=B)
    lpg = rng.normal(-10, 4, size=B)
    ll = (log_standard_normal_density(sq_norm=sq, n=n) - lpg) / n
    est = theorem41_from_samples(ll, lpg, sq, n, tau=1.0, c=1.1 * n)
    assert est.lemma_d2_violations == 0 and est.holds and est.holds_within_intervals
    for p in (est.p_inst, est.p1, est.p2):
        assert 0 <= p.lower <= p.estimate <= p.upper <= 1
    assert est.p_inst.estimate >= est.lower_bound


def test_theorem41_exact_zero_and_one() -> None:
    n = 3
    ll = np.full(100, 5.0)  # Lambda = e^5 > tau: P_inst = 1
    est = theorem41_from_samples(ll, np.full(100, -50.0), np.full(100, 0.1), n, tau=1.0, c=3.3)
    assert est.p_inst.estimate == 1.0 and est.p1.estimate == 0.0 and est.p2.estimate == 0.0
    assert est.p_inst.lower == pytest.approx(1 - 0.0362, abs=2e-4)  # Clopper-Pearson (0.025)^(1/100)
    est0 = theorem41_from_samples(np.full(10, -5.0), np.full(10, 50.0), np.full(10, 100.0), n, tau=1.0, c=3.3)
    assert est0.p_inst.estimate == 0.0 and est0.lower_bound == -1.0 and est0.holds


def test_clopper_pearson_known_values() -> None:
    ci = clopper_pearson(0, 10)
    assert ci.lower == 0.0 and ci.upper == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-10)
    with pytest.raises(ValueError, match="^successes"):
        clopper_pearson(11, 10)


def test_theorem41_from_bounds() -> None:
    assert float(theorem41_lower_bound(0.1, 0.2)) == pytest.approx(0.7)
    assert float(theorem41_lower_bound(0.8, 0.9)) == 0.0
    with pytest.raises(ValueError, match="^p1"):
        theorem41_lower_bound(1.2, 0.0)


def test_theorem41_bad_input() -> None:
    with pytest.raises(ValueError, match="^log_Lambda"):
        theorem41_from_samples([1.0, 2.0], [1.0], [1.0, 2.0], 2, 1.0, 2.0)
    with pytest.raises(ValueError, match="^tau"):
        theorem41_from_samples([1.0], [1.0], [1.0], 2, 0.0, 2.0)
    with pytest.raises(ValueError, match="^log_pg_x"):
        theorem41_from_samples([1.0], [float("nan")], [1.0], 2, 1.0, 2.0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), frac=st.floats(0.0, 1.0), conf=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999]))
def test_clopper_pearson_equals_scipy_root_search(n: int, frac: float, conf: float) -> None:
    """The beta-quantile closed form agrees with scipy's exact binomial interval (found by root search)."""
    from scipy import stats

    k = min(n, int(round(frac * n)))
    ci = clopper_pearson(k, n, conf)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=conf, method="exact")
    assert ci.lower == pytest.approx(ref.low, rel=1e-9, abs=1e-12)
    assert ci.upper == pytest.approx(ref.high, rel=1e-9, abs=1e-12)
