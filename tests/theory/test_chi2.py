"""Chi-square log-tails: closed forms (also far below double precision), mpmath, Chernoff."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from theory.highdim.chi2 import log_chi2_sf, log_chi2_sf_chernoff
from theory.highprec import log_chi2_sf_mp


def _close(value: float, ref: float, rtol: float = 1e-10) -> bool:
    if abs(ref) < 1e-300:  # Q within 1e-300 of one: the log underflows to -0.0 in float64
        return abs(value - ref) < 1e-300
    return abs(value - ref) <= rtol * abs(ref)


@pytest.mark.parametrize("c", [1e-3, 0.5, 2.0, 10.0, 100.0, 1e3, 1e4, 1e6])
def test_closed_forms_small_n(c: float) -> None:
    # n = 2: P = exp(-c/2); n = 4: P = exp(-c/2)(1 + c/2); n = 1: P = 2 Phi(-sqrt(c))
    assert log_chi2_sf(2, c) == pytest.approx(-c / 2, rel=1e-13, abs=1e-15)
    assert log_chi2_sf(4, c) == pytest.approx(-c / 2 + math.log1p(c / 2), rel=1e-13, abs=1e-15)
    assert log_chi2_sf(1, c) == pytest.approx(math.log(2) + special.log_ndtr(-math.sqrt(c)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 33, 100, 1000, 10**4, 10**5, 10**6, 10**7])
@pytest.mark.parametrize("ratio", [0.001, 0.3, 0.9, 0.97, 0.99, 1.0, 1.01, 1.03, 1.1, 1.5, 3.0, 30.0, 1000.0])
def test_agrees_with_mpmath(n: int, ratio: float) -> None:
    c = ratio * n
    assert _close(float(log_chi2_sf(n, c)), float(log_chi2_sf_mp(n, c)))


def test_deep_tail_is_finite_where_scipy_underflows() -> None:
    n = np.array([10**6, 10**7])
    value = log_chi2_sf(n, 1.1 * n)
    assert np.all(np.isfinite(value)) and np.all(value < -700)
    assert special.gammaincc(n[-1] / 2, 1.1 * n[-1] / 2) == 0.0  # scipy alone gives 0


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 10**7), ratio=st.floats(1.0001, 100.0))
def test_below_the_chernoff_bound(n: int, ratio: float) -> None:
    c = ratio * n
    assert float(log_chi2_sf(n, c)) <= float(log_chi2_sf_chernoff(n, c)) + 1e-12 * n


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 10**7), c1=st.floats(1e-3, 1e8), factor=st.floats(1.0, 3.0))
def test_non_increasing_in_c(n: int, c1: float, factor: float) -> None:
    a, b = float(log_chi2_sf(n, c1)), float(log_chi2_sf(n, c1 * factor))
    assert np.isfinite(a) and np.isfinite(b) and a <= 0.0
    assert b <= a + 1e-12 * max(1.0, abs(a))


@pytest.mark.parametrize("n, c, name", [(0, 1.0, "n"), (1.5, 1.0, "n"), (3, 0.0, "c"), (3, -1.0, "c"), (3, float("nan"), "c")])
def test_bad_input(n, c, name) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        log_chi2_sf(n, c)
