"""Theorem 4.3's bounds: closed-form pieces, ranges, monotonicity, asymptotics, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulate.testing.strategies import theorem43_params
from theory import BOUND_KEYS, instability_bounds, log_chi2_sf, log_steiner_volume
from theory.highdim.thm43 import asymptotic_verdict, c_schedule, p1_bound_rate, p2_bound_rate, r_star, r_star_squared

log_uniform = lambda lo, hi: st.floats(math.log(lo), math.log(hi)).map(math.exp)  # noqa: E731


def test_r_star_solves_the_kernel_equation() -> None:
    n, sigma, tau, c = 7, 0.3, 0.8, 9.0
    r2 = float(r_star_squared(n, sigma, tau, c))
    log_kernel = -0.5 * n * math.log(2 * math.pi * sigma**2) - r2 / (2 * sigma**2)
    log_threshold = -0.5 * n * math.log(2 * math.pi) - c / 2 - n * math.log(tau)
    assert log_kernel == pytest.approx(log_threshold, rel=1e-13)


def test_bounds_assemble_from_their_parts() -> None:
    b = instability_bounds(50, 3, 0.1, 0.2, 1.0, 55.0, rho_max=2.0, density_ratio=1.5)
    assert set(b) == set(BOUND_KEYS)
    rs = math.sqrt(0.01 * (55.0 + 100 * math.log(10.0)))
    assert b["r_star"] == pytest.approx(rs, rel=1e-14)
    assert b["log_steiner_volume"] == pytest.approx(float(log_steiner_volume(50, 0.2, rs)), rel=1e-14)
    assert b["log_p1_bound"] == pytest.approx(min(0.0, math.log(2.0 * 3) + b["log_steiner_volume"]), rel=1e-14)
    assert b["log_p2_bound"] == pytest.approx(min(0.0, math.log(1.5) + float(log_chi2_sf(50, 55.0))), rel=1e-14)
    assert b["p_inst_lower_bound"] == pytest.approx(max(0.0, 1 - b["p1_bound"] - b["p2_bound"]))


def test_negative_r_star_squared_gives_p1_zero() -> None:
    b = instability_bounds(100, 5, 10.0, 0.5, 1.0, 110.0)  # c + 2 n ln(tau/sigma) < 0
    assert b["r_star_squared"] < 0 and b["r_star"] == 0.0
    assert b["p1_bound"] == 0.0 and b["log_p1_bound"] == -math.inf


def test_vectorised_over_n() -> None:
    n = np.array([1, 10, 1000, 10**7])
    b = instability_bounds(n, 10, 0.05, 0.05, 1.0, c_schedule(n))
    assert b["p1_bound"].shape == (4,)
    for i, n_i in enumerate(n):
        s = instability_bounds(int(n_i), 10, 0.05, 0.05, 1.0, 1.1 * n_i)
        assert s["p_inst_lower_bound"] == pytest.approx(b["p_inst_lower_bound"][i], rel=1e-12, abs=1e-300)


def test_paper_claim_at_default_parameters() -> None:
    """Bound-level: p1, p2 -> 0 and the P_inst bound -> 1 at n = 10^7 with c_n = 1.1 n."""
    b = instability_bounds(10**7, 10, 0.05, 0.05, 1.0, 1.1e7)
    assert b["log_p1_bound"] < -1e6 and b["log_p2_bound"] < -1e4
    assert b["p_inst_lower_bound"] == 1.0
    v = asymptotic_verdict(1.1, 0.05, 0.05, 1.0)
    assert v.p1_to_zero and v.p2_to_zero and v.p_inst_to_one
    assert v.p1_rate == pytest.approx(b["log_p1_bound"] / 1e7, abs=1e-5)


def test_p1_bound_trivial_when_rate_positive() -> None:
    """Wide supports and large sigma: the Steiner rate is positive and the p1 bound is 1 for large n."""
    assert float(p1_bound_rate(1.1, 0.5, 1.0, 1.0)) > 0
    b = instability_bounds(10**5, 10, 0.5, 1.0, 1.0, 1.1e5)
    assert b["p1_bound"] == 1.0 and b["p_inst_lower_bound"] == 0.0


def test_p2_rate_is_cramer() -> None:
    n = 10**7
    assert float(log_chi2_sf(n, 1.1 * n)) / n == pytest.approx(float(p2_bound_rate(1.1)), abs=1e-5)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 10**7),
    m=st.integers(1, 1000),
    sigma=log_uniform(1e-6, 10.0),
    side=st.floats(0.0, 10.0),
    tau=log_uniform(1e-3, 1e3),
    c_ratio=log_uniform(1e-2, 1e2),
    rho=log_uniform(1e-2, 1e6),
    k=st.floats(1.0, 1e6),
)
def test_bounds_are_probabilities(n, m, sigma, side, tau, c_ratio, rho, k) -> None:
    b = instability_bounds(n, m, sigma, side, tau, c_ratio * n, rho, k)
    for key in ("p1_bound", "p2_bound", "p_inst_lower_bound"):
        assert 0.0 <= b[key] <= 1.0, key
        assert not math.isnan(b[key])
    for key in ("log_p1_bound", "log_p2_bound", "log_chi2_sf"):
        assert not math.isnan(b[key]) and b[key] <= 0.0
    assert math.isfinite(b["log_chi2_sf"])


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 10**7),
    sigma=log_uniform(1e-6, 10.0),
    side=st.floats(0.0, 10.0),
    tau=log_uniform(1e-3, 1e3),
    tau_factor=st.floats(1.0, 10.0),
    c_ratio=log_uniform(1e-2, 1e2),
    c_factor=st.floats(1.0, 10.0),
)
def test_monotonicity(n, sigma, side, tau, tau_factor, c_ratio, c_factor) -> None:
    """p1 bound non-decreasing in tau and in c; p2 bound non-increasing in c."""
    c = c_ratio * n

    def tol(x: float) -> float:
        return 1e-10 * max(1.0, abs(x)) if math.isfinite(x) else 0.0

    base = instability_bounds(n, 10, sigma, side, tau, c)
    more_tau = instability_bounds(n, 10, sigma, side, tau * tau_factor, c)
    more_c = instability_bounds(n, 10, sigma, side, tau, c * c_factor)
    assert more_tau["log_p1_bound"] >= base["log_p1_bound"] - tol(base["log_p1_bound"])
    assert more_c["log_p1_bound"] >= base["log_p1_bound"] - tol(base["log_p1_bound"])
    assert more_c["log_p2_bound"] <= base["log_p2_bound"] + tol(base["log_p2_bound"])
    assert more_tau["p1_bound"] >= base["p1_bound"] * (1 - 1e-9)
    assert more_c["p2_bound"] <= base["p2_bound"] * (1 + 1e-9)


@pytest.mark.parametrize(
    "override, name",
    [
        ({"n": 0}, "n"),
        ({"n": -3}, "n"),
        ({"m": 0}, "m"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"tau": 0.0}, "tau"),
        ({"c": 0.0}, "c"),
        ({"c": -5.0}, "c"),
        ({"side": -0.1}, "side"),
        ({"rho_max": 0.0}, "rho_max"),
        ({"density_ratio": 0.9}, "density_ratio"),
        ({"sigma": float("nan")}, "sigma"),
        ({"tau": float("inf")}, "tau"),
        ({"c": float("nan")}, "c"),
    ],
)
def test_bad_input_names_the_parameter(override: dict, name: str) -> None:
    params = {"n": 10, "m": 3, "sigma": 0.1, "side": 0.1, "tau": 1.0, "c": 11.0, "rho_max": 1.0, "density_ratio": 1.0}
    params.update(override)
    with pytest.raises(ValueError, match=rf"^{name} "):
        instability_bounds(**params)


def test_r_star_clips_at_zero() -> None:
    assert float(r_star(10, 10.0, 1.0, 1.0)) == 0.0


@settings(max_examples=40, deadline=None)
@given(params=theorem43_params(max_n=10**6))
def test_bounds_valid_via_the_public_testing_module(params) -> None:
    """The same properties through ``simulate.testing`` (what a user's test of their own bounds calls):
    probabilities in [0, 1], ``P_inst = max(0, 1 - p1 - p2)``, monotone in ``tau`` and ``c``."""
    from simulate.testing import assert_theorem43_bounds_valid

    assert_theorem43_bounds_valid(**params)
