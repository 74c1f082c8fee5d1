"""No NaN/inf on valid input: property tests over the theory bounds and the mixture fields.

Run at the ``default`` hypothesis profile in the default suite (100 draws per test); the ``deep``
profile (``PFODE_HYPOTHESIS=deep`` or ``--hypothesis-profile deep``, tests/conftest.py) draws
2,500 per test, 12,500 in all; a deep run ends with a line ``deep-profile draws: ...`` counting them.

Also here: the posterior weights of a mixture sum to 1 even when ``|log p_i|`` is ~1e17
(``simulate/fields/_mixture.py``, issue 12).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulate.fields import BoxMixture, GaussianMixture
from theory import instability_bounds, log_chi2_sf, log_steiner_volume

CHECK = settings(deadline=None)  # the profile decides max_examples

DRAWS: dict[str, int] = {}


def _count(name: str) -> None:
    DRAWS[name] = DRAWS.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_draws(request: pytest.FixtureRequest):
    """Print the number of examples each property test ran (hypothesis' own count, measured),
    under the ``deep`` profile only: the default suite's output holds only pytest's own lines."""
    yield
    if getattr(settings, "get_current_profile_name", lambda: None)() != "deep":
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and DRAWS:
        detail = ", ".join(f"{k} {v}" for k, v in DRAWS.items())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ndeep-profile draws: {sum(DRAWS.values())} in all ({detail})")


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


_dims = st.integers(0, 7).flatmap(lambda k: st.integers(10**k, 10 ** (k + 1)))  # n in [1, 1e8], every decade


# ---- theory ----------------------------------------------------------------------------------
@CHECK
@given(n=_dims, m=st.integers(1, 10**6), sigma=_log_uniform(1e-4, 10.0), side=st.floats(0.0, 10.0),
       tau=_log_uniform(1e-3, 1e3), c_over_n=_log_uniform(1e-3, 1e3), rho=_log_uniform(1e-3, 1e3),
       k=_log_uniform(1.0, 1e3))
def test_instability_bounds_finite(n, m, sigma, side, tau, c_over_n, rho, k) -> None:
    """Theorem 4.3 (docs/theory.md §8): ``p1, p2, P_inst`` in ``[0, 1]``, ``r* >= 0`` finite;
    the logs are finite or ``-inf`` exactly where the bound is 0 (never NaN, never ``+inf``)."""
    _count("instability_bounds_finite")
    b = instability_bounds(n, m, sigma, side, tau, c_over_n * n, rho, k)
    for key in ("r_star_squared", "r_star", "log_chi2_sf", "log_p2_bound", "p1_bound", "p2_bound",
                "p_inst_lower_bound"):
        assert math.isfinite(float(b[key])), (key, b)
    for key in ("p1_bound", "p2_bound", "p_inst_lower_bound"):
        assert 0.0 <= float(b[key]) <= 1.0
    assert float(b["log_p1_bound"]) <= 0.0 and not math.isnan(float(b["log_p1_bound"]))
    if float(b["r_star"]) > 0.0 or side > 0.0:
        assert math.isfinite(float(b["log_steiner_volume"]))
    if not math.isfinite(float(b["log_p1_bound"])):
        assert float(b["p1_bound"]) == 0.0


@CHECK
@given(n=_dims, side=_log_uniform(1e-6, 1e3), r1=_log_uniform(1e-6, 1e3), grow=st.floats(1.0, 10.0))
def test_log_steiner_volume_finite_and_increasing_in_r(n, side, r1, grow) -> None:
    """``log S_n(l, r)`` (Steiner formula, docs/theory.md §8.3) is finite for ``l, r > 0`` and
    non-decreasing in ``r`` (the parallel body grows)."""
    _count("log_steiner_volume_finite_and_increasing_in_r")
    v1, v2 = (float(log_steiner_volume(n, side, r)) for r in (r1, r1 * grow))
    assert math.isfinite(v1) and math.isfinite(v2)
    assert v2 >= v1 - 1e-12 * max(1.0, abs(v1))


@CHECK
@given(n=_dims, c_over_n=_log_uniform(1e-4, 1e4), grow=st.floats(1.0, 10.0))
def test_log_chi2_sf_finite_and_decreasing(n, c_over_n, grow) -> None:
    """``log P[chi2_n >= c]`` (the p2 bound's tail) is finite, ``<= 0`` and non-increasing in ``c``."""
    _count("log_chi2_sf_finite_and_decreasing")
    c = c_over_n * n
    l1, l2 = (float(log_chi2_sf(n, cc)) for cc in (c, c * grow))
    assert math.isfinite(l1) and math.isfinite(l2) and l1 <= 0.0
    assert l2 <= l1 + 1e-12 * max(1.0, abs(l1))


# ---- fields ----------------------------------------------------------------------------------
@st.composite
def _weights(draw, m: int) -> np.ndarray:
    raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=m, max_size=m)))
    return raw / raw.sum()


@st.composite
def _gaussian_case(draw):
    m, n = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    means = np.array(draw(st.lists(st.floats(-10, 10), min_size=m * n, max_size=m * n))).reshape(m, n)
    stds = np.array(draw(st.lists(_log_uniform(1e-3, 10.0), min_size=m, max_size=m)))
    x = np.array(draw(st.lists(st.floats(-1e3, 1e3), min_size=3 * n, max_size=3 * n))).reshape(3, n)
    return GaussianMixture(torch.tensor(means), torch.tensor(stds), torch.tensor(draw(_weights(m)))), x


@st.composite
def _box_case(draw):
    m, n = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    lower = np.array(draw(st.lists(st.floats(-10, 10), min_size=m * n, max_size=m * n))).reshape(m, n)
    width = np.array(draw(st.lists(st.floats(0.0, 5.0), min_size=m * n, max_size=m * n))).reshape(m, n)
    x = np.array(draw(st.lists(st.floats(-1e3, 1e3), min_size=3 * n, max_size=3 * n))).reshape(3, n)
    field = BoxMixture(torch.tensor(lower), torch.tensor(lower + width), torch.tensor(draw(_weights(m))),
                       draw(_log_uniform(1e-3, 10.0)))
    return field, x


def _check_field(field, x: np.ndarray, t: float) -> None:
    """The exact PF-ODE field of a mixture (docs/theory.md §3.2): velocity, score, divergence
    and ``log p_t`` finite at every point for ``t in [0, 1)``; posterior weights ``pi_i >= 0`` sum to 1."""
    xt = torch.tensor(x)
    values = field.evaluate(xt, t, velocity=True, score=True, log_prob=True, divergence=True)
    for name in ("velocity", "score", "log_prob", "divergence"):
        v = getattr(values, name)
        assert bool(torch.isfinite(v).all()), (name, v)
    pi = field.log_posterior(xt, t).exp()
    assert bool(torch.isfinite(pi).all()) and bool((pi >= 0).all())
    assert torch.allclose(pi.sum(dim=1), torch.ones(x.shape[0], dtype=pi.dtype), atol=1e-12)


@CHECK
@given(case=_gaussian_case(), t=st.floats(0.0, 0.999))
def test_gaussian_mixture_finite(case, t) -> None:
    _count("gaussian_mixture_finite")
    _check_field(*case, t)


@CHECK
@given(case=_box_case(), t=st.floats(0.0, 0.999))
def test_box_mixture_finite(case, t) -> None:
    _count("box_mixture_finite")
    _check_field(*case, t)


# ---- posterior weights in the far tail (issue 12) --------------------------------------------
@pytest.mark.parametrize("std", [1e-8, 1e-9, 1e-10])
@pytest.mark.parametrize("budget", [None, 96])  # 96 bytes: one component per chunk (the streamed merge)
def test_tied_components_at_a_far_tail_point_weigh_one_half(std: float, budget: int | None) -> None:
    """Two tied components at ``x = 0``, ``t = 1``: ``l_i = log w_i + log p_{t,i}(0)`` ~ ``-1/(2 std^2)``
    (-5e15 .. -5e19), where ``logsumexp`` rounds ``max + log 2`` to ``max``. The posterior weights
    ``pi_i = w_i p_{t,i} / p_t`` must be exactly 1/2 (they were 1 and 1: sum 2), and the divergence
    ``sum_i pi_i div v_i + sum_i pi_i (score_i - score) . (v_i - v) = 1`` (``v_i = x = 0``)."""
    kwargs = {} if budget is None else {"max_memory_bytes": budget}
    field = GaussianMixture(torch.tensor([[1.0], [-1.0]]), std, torch.tensor([0.5, 0.5]), **kwargs)
    x = torch.zeros(1, 1, dtype=torch.float64)
    pi = field.log_posterior(x, 1.0).exp()
    assert pi.tolist() == [[0.5, 0.5]]
    values = field.evaluate(x, 1.0, velocity=True, divergence=True, log_prob=True)
    assert float(values.divergence[0]) == pytest.approx(1.0, rel=1e-12)
    assert float(values.velocity[0, 0]) == 0.0
    assert float(values.log_prob[0]) == pytest.approx(-1.0 / (2 * std**2), rel=1e-12)

