"""Tests of simulate.fields.truncnorm against mpmath (docs/theory.md §3.6 numerics)."""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from simulate.fields.truncnorm import (
    NARROW_THRESHOLD,
    interval_stats,
    log_normal_interval_mass,
    truncated_normal_moments,
    upper_tail_moments,
)

F64 = torch.float64


def _ref_interval(c: float, h: float) -> tuple[float, float, float]:
    """mpmath reference of (log mean density, rel_mean, rel_var), reflected to c >= 0."""
    sign = 1.0 if c >= 0 else -1.0
    digits = 40 + (int(4 * math.log10(max(abs(c) + h, 1.0) / min(h, 1.0))) if h > 0 else 0)
    with mp.workdps(digits):
        cm, hm = mp.mpf(abs(c)), mp.mpf(h)
        if h == 0:
            return float(mp.log(mp.npdf(cm))), 0.0, 1.0 / 3.0
        lo, hi = cm - hm, cm + hm
        mass = mp.ncdf(-lo) - mp.ncdf(-hi)
        p_lo, p_hi = mp.npdf(lo), mp.npdf(hi)
        ez = (p_lo - p_hi) / mass
        ez2 = 1 + (lo * p_lo - hi * p_hi) / mass
        return float(mp.log(mass / (2 * hm))), sign * float((ez - cm) / hm), float((ez2 - ez * ez) / hm**2)


_CS = [0.0, 0.1, 0.7, 2.5, 3.0, 7.0, 10.1, 50.0, 1e3, 1e6]
_HS = [0.0, 1e-14, 1e-6, 1e-3, 0.2, 0.36, 0.8, 2.0, 9.99, 100.0, 1e4]


def test_interval_stats_against_mpmath() -> None:
    """All three regimes (narrow, straddling, one tail), up to 1e6 sd out and h = 0 .. 1e4."""
    pairs = [(s * c, h) for c, h in itertools.product(_CS, _HS) for s in ((1, -1) if c else (1,))]
    c = torch.tensor([p[0] for p in pairs], dtype=F64)
    h = torch.tensor([p[1] for p in pairs], dtype=F64)
    got = interval_stats(c, h)
    for k, (ci, hi) in enumerate(pairs):
        ref = _ref_interval(ci, hi)
        assert got.log_mean_density[k].item() == pytest.approx(ref[0], rel=1e-13, abs=1e-13), (ci, hi)
        assert got.rel_mean[k].item() == pytest.approx(ref[1], abs=1e-12), (ci, hi)
        assert got.rel_var[k].item() == pytest.approx(ref[2], rel=1e-11), (ci, hi)


def test_upper_tail_moments_against_mpmath() -> None:
    xs = [0.0, 0.5, 2.0, 3.99, 4.0, 4.01, 7.0, 10.0, 50.0, 1e3, 1e6]
    log_ex, delta, var = upper_tail_moments(torch.tensor(xs, dtype=F64))
    with mp.workdps(60):
        for k, x in enumerate(xs):
            xm = mp.mpf(x)
            lam = mp.npdf(xm) / mp.ncdf(-xm)
            d = lam - xm
            assert log_ex[k].item() == pytest.approx(float(mp.log(mp.erfc(xm / mp.sqrt(2))) + xm**2 / 2), rel=1e-14, abs=1e-15)
            assert delta[k].item() == pytest.approx(float(d), rel=1e-14)
            assert var[k].item() == pytest.approx(float(1 - lam * d), rel=1e-13)


def test_gradients_are_exact_and_finite_in_every_regime() -> None:
    """d/dc log(mean density) = -E[Z] and d/dh = (phi(c+h) + phi(c-h))/M - 1/h (autograd, exact)."""
    pairs = [(s * c, h) for c, h in itertools.product(_CS[:-1], _HS[2:-1]) for s in (1, -1)]
    c = torch.tensor([p[0] for p in pairs], dtype=F64, requires_grad=True)
    h = torch.tensor([p[1] for p in pairs], dtype=F64, requires_grad=True)
    got = interval_stats(c, h)
    gc, gh = torch.autograd.grad(got.log_mean_density.sum(), (c, h))
    assert torch.isfinite(gc).all() and torch.isfinite(gh).all()
    ez = (c + h * got.rel_mean).detach()
    torch.testing.assert_close(gc, -ez, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    c=st.floats(-1e4, 1e4, allow_nan=False),
    h=st.one_of(st.floats(0.0, 1e3), st.floats(0.0, 1e-6)),
)
def test_interval_stats_bounds(c: float, h: float) -> None:
    """|rel_mean| <= 1 and 0 <= rel_var <= 1/3 (a log-concave law on an interval)."""
    got = interval_stats(torch.tensor(c, dtype=F64), torch.tensor(h, dtype=F64))
    assert all(math.isfinite(v.item()) for v in got)
    assert abs(got.rel_mean.item()) <= 1 + 1e-12
    assert -1e-15 <= got.rel_var.item() <= 1 / 3 + 1e-9


def test_regime_boundary_is_continuous() -> None:
    """Values on both sides of the narrow/one-tail switch 2 h (|c| + h) = threshold agree."""
    c = torch.tensor([0.3, 2.0, 5.0, 40.0], dtype=F64)
    h_star = (-c + torch.sqrt(c * c + 2 * NARROW_THRESHOLD)) / 2  # solves 2 h (c + h) = threshold
    eps = 1e-13
    lo = interval_stats(c, h_star * (1 - eps))
    hi = interval_stats(c, h_star * (1 + eps))
    for a, b in zip(lo, hi):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_log_normal_interval_mass() -> None:
    a = torch.tensor([-1.0, 40.0, -45.0, 3.0, -math.inf, 2.0, -math.inf, 1.0, 5.0], dtype=F64)
    b = torch.tensor([2.0, 41.0, -44.0, 3.0 + 1e-12, 0.5, math.inf, math.inf, 1.0, 5.0 + 1e-3], dtype=F64)
    got = log_normal_interval_mass(a, b, 0.5, 2.0)
    with mp.workdps(80):
        for k in range(len(a)):
            lo, hi = (float(a[k]) - 0.5) / 2.0, (float(b[k]) - 0.5) / 2.0
            if lo == hi:
                assert got[k].item() == -math.inf
                continue
            ref = mp.log(mp.ncdf(-lo) - mp.ncdf(-hi)) if lo > 0 else mp.log(mp.ncdf(hi) - mp.ncdf(lo))
            assert got[k].item() == pytest.approx(float(ref), rel=1e-12, abs=1e-13), k


def test_truncated_normal_moments() -> None:
    """Against scipy (moderate) and mpmath-derived limits (tails, points, half-lines)."""
    a = np.array([-1.0, 0.0, 1.5, -3.0, 0.2])
    b = np.array([1.0, 4.0, 2.0, 10.0, 0.7])
    mean, var = truncated_normal_moments(torch.tensor(a), torch.tensor(b), 0.3, 1.7)
    ref_m, ref_v = stats.truncnorm.stats((a - 0.3) / 1.7, (b - 0.3) / 1.7, loc=0.3, scale=1.7, moments="mv")
    np.testing.assert_allclose(mean.numpy(), ref_m, rtol=1e-10)
    np.testing.assert_allclose(var.numpy(), ref_v, rtol=1e-9)
    # a point, a far tail interval, and half-lines
    m, v = truncated_normal_moments(torch.tensor([2.0], dtype=F64), torch.tensor([2.0], dtype=F64), 0.0, 1.0)
    assert m.item() == 2.0 and v.item() == 0.0
    m, v = truncated_normal_moments(torch.tensor([50.0], dtype=F64), torch.tensor([51.0], dtype=F64), 0.0, 1.0)
    _, rel_mean, rel_var = _ref_interval(50.5, 0.5)
    assert m.item() == pytest.approx(50.5 + 0.5 * rel_mean, rel=1e-15)
    assert v.item() == pytest.approx(0.25 * rel_var, rel=1e-12)
    assert v.item() == pytest.approx(1 / 50.0**2 - 6 / 50.0**4, rel=1e-5)  # the tail asymptotics
    inf = math.inf
    m, v = truncated_normal_moments(torch.tensor([-inf, 1.0, -inf], dtype=F64), torch.tensor([-1.0, inf, inf], dtype=F64))
    lam = stats.norm.pdf(1.0) / stats.norm.sf(1.0)
    torch.testing.assert_close(m, torch.tensor([-lam, lam, 0.0], dtype=F64), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(v, torch.tensor([1 - lam * (lam - 1)] * 2 + [1.0], dtype=F64), rtol=1e-12, atol=0)


def test_truncnorm_validation() -> None:
    with pytest.raises(ValueError, match="a <= b"):
        log_normal_interval_mass(1.0, 0.0)
    with pytest.raises(ValueError, match="s must be"):
        truncated_normal_moments(0.0, 1.0, 0.0, 0.0)
