"""The one decision rule (simulate.decide) against exact binomial computations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from simulate.decide import decide_proportion, decide_slope, points_to_settle


def _exact_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """Clopper-Pearson upper end by the binomial CDF: the p where P[X <= k] = alpha/2 (beta quantile)."""
    return 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))


def _exact_lower(k: int, n: int, alpha: float = 0.05) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0, 1), level=st.floats(0.01, 0.5))
def test_decision_matches_exact_binomial_tails(n: int, frac: float, level: float) -> None:
    k = int(round(frac * n))
    d = decide_proportion(k, n, level)
    lo, hi = _exact_lower(k, n), _exact_upper(k, n)
    assert d.lower == pytest.approx(lo, abs=1e-9) and d.upper == pytest.approx(hi, abs=1e-9)
    # the interval's ends are where the exact binomial tails equal 2.5%
    if k < n:
        assert stats.binom.cdf(k, n, d.upper) == pytest.approx(0.025, abs=1e-6)
    if k > 0:
        assert stats.binom.sf(k - 1, n, d.lower) == pytest.approx(0.025, abs=1e-6)
    expected = "holds" if hi < level else "fails" if lo > level else "undetermined"
    assert d.status == expected


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), frac=st.floats(0, 1))
def test_target_one_is_the_complement(n: int, frac: float) -> None:
    k = int(round(frac * n))
    one, zero = decide_proportion(k, n, 0.1, target="one"), decide_proportion(n - k, n, 0.1)
    assert one == zero


def test_zero_of_n_needs_the_exact_count_to_hold() -> None:
    # 0/N clears 0.05 exactly when 1 - 0.025**(1/N) < 0.05, i.e. N >= 72
    n_star = math.ceil(math.log(0.025) / math.log(0.95))
    assert n_star == 72
    assert decide_proportion(0, n_star - 1, 0.05).status == "undetermined"
    assert decide_proportion(0, n_star, 0.05).status == "holds"
    assert decide_proportion(0, 8, 0.05).settle_at == n_star
    assert decide_proportion(8, 8, 0.05).status == "fails"  # 8/8: lower 0.63 > 0.05


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 100), frac=st.floats(0, 1), level=st.floats(0.02, 0.4))
def test_points_to_settle_decides_there(n: int, frac: float, level: float) -> None:
    k = int(round(frac * n))
    at = points_to_settle(k, n, level)
    if at is None:
        return
    assert at >= n
    assert decide_proportion(int(round(at * k / n)), at, level).status != "undetermined"
    if at > n:
        assert decide_proportion(k, n, level).status == "undetermined"


def test_estimate_on_the_level_never_settles() -> None:
    assert points_to_settle(1, 10, 0.1) is None


def test_slope_direction_needs_its_interval_to_exclude_zero() -> None:
    assert decide_slope(32, 128, 0.0, 0.1, 0.01, 0.01).direction == "rising"
    assert decide_slope(32, 128, 0.0, 0.1, 0.1, 0.1).direction == "flat"  # 0.1 over 0.14 se: inside the noise
    assert decide_slope(32, 128, 0.1, 0.0, 0.01, 0.01).direction == "falling"
    assert decide_slope(32, 128, 0.0, 0.1, math.inf, 0.01).direction == "flat"
    with pytest.raises(ValueError, match="n_prev"):
        decide_slope(128, 32, 0, 0, 1, 1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        decide_proportion(1, 2, 0.0)
    with pytest.raises(ValueError, match="successes"):
        decide_proportion(3, 2, 0.1)
    with pytest.raises(ValueError, match="target"):
        decide_proportion(1, 2, 0.1, target="half")
