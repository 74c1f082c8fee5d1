"""Steiner formula in log space: closed forms, mpmath agreement, limits, the large-n rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.highprec import log_steiner_volume_mp
from theory.highdim.steiner import log_ball_volume, log_steiner_volume, steiner_rate, steiner_rate_argmax


def _close(value: float, ref: float, rtol: float = 1e-10) -> bool:
    """Relative agreement on logs (absolute below |log| = 1, where the relative measure is meaningless)."""
    return abs(value - ref) <= rtol * max(1.0, abs(ref))


@pytest.mark.parametrize("side, r", [(1.0, 0.5), (0.05, 0.3), (3.0, 1e-4), (1e-3, 10.0)])
def test_closed_forms_n2_n3(side: float, r: float) -> None:
    s2 = side**2 + 4 * side * r + math.pi * r**2
    s3 = side**3 + 6 * side**2 * r + 3 * math.pi * side * r**2 + 4 / 3 * math.pi * r**3
    assert log_steiner_volume(2, side, r) == pytest.approx(math.log(s2), rel=1e-14, abs=1e-14)
    assert log_steiner_volume(3, side, r) == pytest.approx(math.log(s3), rel=1e-14, abs=1e-14)


def test_n1_is_segment_plus_two_radii() -> None:
    assert log_steiner_volume(1, 2.0, 0.25) == pytest.approx(math.log(2.5), rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100, 1000, 10_000])
@pytest.mark.parametrize("side, rbar", [(0.05, 0.13), (1.0, 1e-3), (0.5, 1.0), (2.0, 0.3), (1e-3, 0.05)])
def test_agrees_with_mpmath(n: int, side: float, rbar: float) -> None:
    r = rbar * math.sqrt(n)
    ref = float(log_steiner_volume_mp(n, side, r))
    assert _close(float(log_steiner_volume(n, side, r)), ref)


def test_agrees_with_mpmath_at_n_1e5() -> None:
    n, side, r = 100_000, 0.05, 0.13 * math.sqrt(100_000)
    ref = float(log_steiner_volume_mp(n, side, r))
    assert _close(float(log_steiner_volume(n, side, r)), ref)


@pytest.mark.slow
@pytest.mark.parametrize("side, rbar", [(1.0, 1e-3), (0.5, 1.0)])
def test_agrees_with_mpmath_at_n_1e5_more(side: float, rbar: float) -> None:
    n = 100_000
    ref = float(log_steiner_volume_mp(n, side, rbar * math.sqrt(n)))
    assert _close(float(log_steiner_volume(n, side, rbar * math.sqrt(n))), ref)


def test_degenerate_limits() -> None:
    assert log_steiner_volume(5, 0.3, 0.0) == pytest.approx(5 * math.log(0.3))
    assert log_steiner_volume(4, 0.0, 2.0) == pytest.approx(math.log(math.pi**2 / 2 * 2.0**4))
    assert log_steiner_volume(3, 0.0, 0.0) == -np.inf
    # ball volumes: omega_2 = pi, omega_3 = 4 pi / 3
    assert log_ball_volume(2) == pytest.approx(math.log(math.pi))
    assert log_ball_volume(3, 2.0) == pytest.approx(math.log(4 / 3 * math.pi * 8))


def test_vectorised_over_n_matches_scalar_calls() -> None:
    ns = np.array([1, 5, 50, 5000, 10**6, 10**7])
    r = 0.13 * np.sqrt(ns)
    vec = log_steiner_volume(ns, 0.05, r)
    assert vec.shape == ns.shape
    for n_i, r_i, v in zip(ns, r, vec):
        assert float(log_steiner_volume(int(n_i), 0.05, r_i)) == pytest.approx(v, rel=1e-13)
    assert np.all(np.isfinite(vec))


def test_large_n_rate_is_the_limit() -> None:
    side, rbar = 0.05, 0.13
    n = np.array([10**5, 10**6, 10**7])
    finite = log_steiner_volume(n, side, rbar * np.sqrt(n)) / n
    rate = float(steiner_rate(side, rbar))
    gaps = np.abs(finite - rate)
    assert gaps[-1] < 1e-5
    assert np.all(np.diff(gaps) < 0)  # converges as O(log n / n)


def test_rate_argmax_is_stationary() -> None:
    side, rbar = 0.3, 0.2
    k = float(steiner_rate_argmax(side, rbar))
    from theory.highdim.steiner import _rate_objective

    ball = math.log(2 * math.pi * math.e * rbar**2)
    h = 1e-6
    deriv = (_rate_objective(k + h, math.log(side), ball) - _rate_objective(k - h, math.log(side), ball)) / (2 * h)
    assert abs(deriv) < 1e-6
    grid = np.linspace(1e-6, 1 - 1e-6, 2001)
    assert _rate_objective(k, math.log(side), ball) >= np.max(_rate_objective(grid, math.log(side), ball)) - 1e-12


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 10**7),
    side=st.floats(1e-4, 10.0),
    r1=st.floats(1e-4, 1e3),
    factor=st.floats(1.0, 10.0),
)
def test_monotone_in_radius_and_finite(n: int, side: float, r1: float, factor: float) -> None:
    a = float(log_steiner_volume(n, side, r1))
    b = float(log_steiner_volume(n, side, r1 * factor))
    assert np.isfinite(a) and np.isfinite(b)
    assert b >= a - 1e-12 * max(1.0, abs(a))
    # the parallel body contains the cube and the ball
    assert a >= n * math.log(side) - 1e-9 * max(1.0, abs(a))
    assert a >= float(log_ball_volume(n, r1)) - 1e-9 * max(1.0, abs(a))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n": 0, "side": 1.0, "r": 1.0}, "n"),
        ({"n": 2.5, "side": 1.0, "r": 1.0}, "n"),
        ({"n": 3, "side": -1.0, "r": 1.0}, "side"),
        ({"n": 3, "side": 1.0, "r": -0.1}, "r"),
        ({"n": 3, "side": float("nan"), "r": 1.0}, "side"),
        ({"n": 3, "side": 1.0, "r": float("inf")}, "r"),
    ],
)
def test_bad_input_names_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        log_steiner_volume(**kwargs)


def test_window_sums_are_batched_without_changing_a_bit_and_large_n_is_refused():
    """Many large-n elements are summed in bounded batches (same values bit for bit); n above
    N_MAX (the CLI's bound too) is refused where the series must be summed, not where it is closed-form."""
    from reports.cli_checks import STEINER_N_MAX
    from theory.highdim import steiner

    assert steiner.N_MAX == STEINER_N_MAX
    n = np.array([10**4, 3 * 10**5, 10**6, 7 * 10**6, 10**7], dtype=np.int64)
    side, r = np.full(5, 0.05), 0.05 * np.sqrt(1.1 * n)
    whole = steiner.log_steiner_volume(n, side, r)
    k = steiner._peak_index(n, side, r)
    start, stop = np.maximum(k - 3000, 0), np.minimum(k + 3000, n) + 1
    one = steiner._window_log_sum(n, side, r, start, stop)
    for cap in (1, 2500, 9000, 20_000):
        assert np.array_equal(steiner._window_log_sum(n, side, r, start, stop, max_terms=cap), one)
    assert np.all(np.isfinite(whole))
    with pytest.raises(ValueError, match="n must be <="):
        steiner.log_steiner_volume(steiner.N_MAX + 1, 0.05, 1.0)
    assert np.isfinite(steiner.log_steiner_volume(10**12, 0.05, 0.0))  # r = 0: n log l, no series
