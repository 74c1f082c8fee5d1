"""simulate.testing: each assertion passes on a true case and fails, with a clear message, on a
doctored one; the Hypothesis strategies draw only valid parameters; the opt-in pytest plugin."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from simulate.experiments.lemma_d1.experiment import paper_gmm_2d
from simulate.instability import log_Lambda_G_at_inverse
from simulate.solvers import euler
from simulate.testing import (
    assert_lemma_d1,
    assert_proposition21,
    assert_theorem31,
    assert_theorem41,
    assert_theorem43_bounds_valid,
)
from simulate.testing import strategies as pst
from theory import instability_bounds

pytest_plugins = ("pytester",)

DT = torch.float64
ROOT = Path(__file__).resolve().parents[2]
# thousands of draws with the default health checks on (a rejection storm fails them)
MANY = settings(max_examples=2000, deadline=None, database=None)


@pytest.fixture(scope="module")
def gmm():
    return paper_gmm_2d()


@pytest.fixture(scope="module")
def x_gmm(gmm):
    return gmm.sample(4, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- Theorem 3.1
def _scaled_euler(scale: float):
    """A doctored inversion: Euler with the velocity scaled (a model evaluated wrongly)."""

    def solver(field, x, ts):
        class Scaled:
            def velocity(self, y, t):
                return scale * field.velocity(y, t)

        return euler(Scaled(), x, ts)

    return solver


def test_theorem31_holds_for_euler_and_for_a_plain_velocity_callable(gmm, x_gmm) -> None:
    checks = assert_theorem31(gmm, x_gmm, steps=40)
    assert len(checks) == 4 and all(c.noise_bound_holds and c.gronwall_bound_holds for c in checks)
    assert max(c.tightness_noise for c in checks) < 0
    # a bare v(x, t) and another fixed-grid solver; same L and M (given) skip the estimates
    L = max(c.bounds.log_kappa_bound for c in checks)
    assert_theorem31(gmm.velocity, x_gmm, steps=40, solver="heun", L=L, M=50.0)


def test_theorem31_on_a_small_network_model() -> None:
    """A user's model: an MLP v(x, t) (t a float on fixed grids, a (B,) tensor inside dopri5)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).to(DT)

    def model(x, t):
        tt = torch.as_tensor(t, dtype=DT).expand(x.shape[0])[:, None]
        return net(torch.cat([x, tt], dim=1))

    x = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(5))
    checks = assert_theorem31(model, x, steps=10)
    assert all(c.tightness_noise < 0 for c in checks)
    with pytest.raises(AssertionError, match="Theorem 3.1 violated"):
        assert_theorem31(model, x, steps=10, solver=_scaled_euler(3.0))


def test_theorem31_fails_on_a_scaled_velocity(gmm, x_gmm) -> None:
    with pytest.raises(AssertionError) as info:
        assert_theorem31(gmm, x_gmm, steps=40, solver=_scaled_euler(1.5))
    msg = str(info.value)
    assert "Theorem 3.1 violated" in msg and "bound (1) ||z~ - z||" in msg
    assert "measured" in msg and "log(measured/bound) = +" in msg and "at x[" in msg and "N = 40" in msg


def test_theorem31_fails_with_a_too_small_M_and_checks_kappa(gmm, x_gmm) -> None:
    with pytest.raises(AssertionError, match=r"M = 1e-06 \(given\)"):
        assert_theorem31(gmm, x_gmm, steps=40, L=3.0, M=1e-6)
    with pytest.raises(AssertionError, match=r"kappa <= e\^L"):
        assert_theorem31(gmm, x_gmm, steps=40, L=0.5, M=1e3, kappa=10.0)


@pytest.mark.parametrize("kwargs, flag", [({"steps": 0}, "steps"), ({"steps": 10, "solver": "nope"}, "solver"),
                                          ({"steps": 10, "L": -1.0}, "L"), ({"steps": 10, "rtol": float("inf")}, "rtol"),
                                          ({"steps": 10, "rtol": float("nan")}, "rtol"), ({"steps": 10, "rtol": -1.0}, "rtol")])
def test_theorem31_rejects_bad_arguments(gmm, x_gmm, kwargs, flag) -> None:
    with pytest.raises(ValueError, match=flag):
        assert_theorem31(gmm, x_gmm, **kwargs)


def test_theorem31_reports_a_nan_velocity_at_once(x_gmm) -> None:
    """A velocity returning NaN is named as non-finite before any solve (not "violated", not 80 s later)."""
    import time

    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"field_or_velocity returned non-finite values \(NaN or inf\) at t = 1"):
        assert_theorem31(lambda x, t: torch.full_like(x, float("nan")), x_gmm, steps=40)
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- Proposition 2.1
def test_proposition21_holds_on_a_smooth_map_and_fails_on_wrong_derivatives() -> None:
    x = torch.randn(3, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    A = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=DT)) + 0.1
    check = assert_proposition21(lambda y: torch.tanh(y) @ A.T + 0.5 * y, x)
    assert bool(check.verified.all())
    # values of the identity, autograd derivative 3 I: both the limit (a) and the bound (b) fail
    with pytest.raises(AssertionError) as info:
        assert_proposition21(lambda y: y + 2.0 * (y - y.detach()), x)
    msg = str(info.value)
    assert "Proposition 2.1 violated at 3 of 3 rows" in msg and "(a) the limit" in msg and "(b) the lower bound" in msg
    assert "lambda_f(x, u) = 3" in msg
    with pytest.raises(AssertionError, match=r"\(a\) the limit"):  # a kink: |x| at 0
        assert_proposition21(torch.abs, torch.zeros(2, 3, dtype=DT))


# --------------------------------------------------------------------------- Lemma D.1
class _ShiftedDensity:
    """A field whose log_prob is off by a constant (a p_g that is not G's push-forward)."""

    def __init__(self, field, shift: float) -> None:
        self._f, self._shift = field, shift

    def velocity(self, x, t):
        return self._f.velocity(x, t)

    def divergence(self, x, t):
        return self._f.divergence(x, t)

    def log_prob(self, x, t):
        return self._f.log_prob(x, t) + self._shift


FAST_SOLVE = {"rtol": 1e-8, "atol": 1e-10}


def test_lemma_d1_three_ways_on_a_field_and_a_doctored_density(gmm) -> None:
    z = torch.randn(2, 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    values = assert_lemma_d1(gmm, z, atol=1e-5, solve=FAST_SOLVE)
    assert set(values) == {"density_ratio", "divergence", "slogdet"}
    with pytest.raises(AssertionError) as info:
        assert_lemma_d1(_ShiftedDensity(gmm, 0.2), z, atol=1e-5, solve=FAST_SOLVE)
    msg = str(info.value)
    assert "Lemma D.1 violated" in msg and "density_ratio" in msg and "row" in msg and "|difference| = 0.1" in msg


def test_lemma_d1_on_a_batched_map_with_log_prob_and_log_det() -> None:
    A = torch.tensor([[2.0, 0.3], [0.1, 0.5]], dtype=DT)
    b = torch.tensor([1.0, -1.0], dtype=DT)
    flow = lambda z: z @ A.T + b  # noqa: E731
    law = torch.distributions.MultivariateNormal(b, covariance_matrix=A @ A.T)
    logdet = float(torch.linalg.slogdet(A).logabsdet)
    z = torch.randn(5, 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    values = assert_lemma_d1(flow, z, log_prob=law.log_prob, log_det=lambda w: torch.full((w.shape[0],), logdet))
    assert torch.allclose(values["density_ratio"], torch.full((5,), logdet / 2, dtype=DT), atol=1e-12)
    with pytest.raises(AssertionError, match=r"between slogdet and log_det .*\|difference\| = 0\.05"):
        assert_lemma_d1(flow, z, log_det=lambda w: torch.full((w.shape[0],), logdet + 0.1))
    with pytest.raises(ValueError, match="log_prob or log_det"):
        assert_lemma_d1(flow, z)


# --------------------------------------------------------------------------- Theorem 4.1
@pytest.fixture(scope="module")
def thm41_samples(gmm):
    """200 points uniform on [-3, 3]^2; log Lambda by the divergence integral (independent of p_g)."""
    x = -3.0 + 6.0 * torch.rand(200, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    r = log_Lambda_G_at_inverse(gmm, x, method="divergence", solver="dopri5", rtol=1e-9, atol=1e-11)
    return r.log_Lambda.numpy(), gmm.log_prob(x, 1.0).numpy(), r.sq_norm.numpy()


def test_theorem41_holds_on_samples_and_fails_on_a_biased_p_inst(thm41_samples) -> None:
    ll, lpg, sq = thm41_samples
    est = assert_theorem41(ll, lpg, sq, n=2, tau=1.0, c=9.0, pointwise_atol=1e-6)
    assert est.p_inst.estimate > est.lower_bound > 0.1
    with pytest.raises(AssertionError) as info:
        assert_theorem41(ll - 10.0, lpg, sq, n=2, tau=1.0, c=9.0, pointwise_atol=None)
    msg = str(info.value)
    assert "Theorem 4.1 violated" in msg and "P_inst(tau) = " in msg and "< bound 1 - p1 - p2" in msg
    assert "confidence 0.95" in msg
    # a smaller bias keeps P_inst above the bound, but Lemma D.2 catches it sample by sample
    with pytest.raises(AssertionError, match="Lemma D.2 broken at") as info:
        assert_theorem41(ll - 2.0, lpg, sq, n=2, tau=1.0, c=9.0)
    assert "P_inst(tau) = " not in str(info.value)


def test_theorem41_rejects_a_negative_squared_norm(thm41_samples) -> None:
    ll, lpg, sq = thm41_samples
    bad = sq.copy()
    bad[3] = -1.0
    with pytest.raises(ValueError, match="z_norm2 must be >= 0"):
        assert_theorem41(ll, lpg, bad, n=2, tau=1.0, c=9.0)


# --------------------------------------------------------------------------- Theorem 4.3
@pytest.mark.parametrize("kwargs, flag", [
    ({"slack": float("nan")}, "slack"), ({"slack": float("inf")}, "slack"), ({"slack": -1.0}, "slack"),
    ({"tau": []}, "tau must hold"), ({"c": []}, "c must hold"), ({"tau": [0.0, 1.0]}, "tau must be finite and > 0"),
    ({"bounds": lambda *a: {"p1_bound": 0.5}}, "bounds must return a dict with keys"),
])
def test_theorem43_rejects_bad_arguments(kwargs, flag) -> None:
    params = {**dict(n=2, m=1, sigma=0.05, side=0.1, tau=1.0, c=4.0), **kwargs}
    with pytest.raises(ValueError, match=flag):
        assert_theorem43_bounds_valid(**params)


@settings(max_examples=150, deadline=None, database=None)
@given(pst.theorem43_params())
def test_theorem43_bounds_valid_on_drawn_parameters(p) -> None:
    assert_theorem43_bounds_valid(**p)


def test_theorem43_doctored_bounds_fail() -> None:
    params = dict(n=2, m=1, sigma=0.05, side=0.1, tau=1.0, c=4.0)
    out = assert_theorem43_bounds_valid(**params)
    assert 0 < float(np.max(out["p1_bound"])) < 1  # not saturated: monotonicity is tested

    def unclipped(*args):
        o = dict(instability_bounds(*args))
        o["p1_bound"] = np.exp(np.asarray(o["log_p1_bound"]) + 3.0)  # rho m S_n without min(1, .)
        return o

    with pytest.raises(AssertionError, match=r"p1_bound = [\d.]+ outside \[0, 1\]"):
        assert_theorem43_bounds_valid(**params, bounds=unclipped)

    def inverted_tau(n, m, sigma, side, tau, c, *rest):
        return instability_bounds(n, m, sigma, side, 1.0 / tau, c, *rest)

    with pytest.raises(AssertionError, match="log_p1_bound not non-decreasing in tau"):
        assert_theorem43_bounds_valid(**params, bounds=inverted_tau)


# --------------------------------------------------------------------------- strategies
@settings(max_examples=1000, deadline=None, database=None)
@given(pst.box_mixture_params(), pst.gaussian_mixture_params())
def test_box_mixture_params_are_valid_and_separated(p, g) -> None:
    assert bool((g["stds"] > 0).all()) and bool((g["weights"] > 0).all()) and abs(float(g["weights"].sum()) - 1) < 1e-12
    assert g["means"].shape[0] == g["stds"].shape[0] == g["weights"].shape[0] and bool(g["means"].abs().max() <= 3)
    lower, upper, side = p["lower"], p["upper"], p["side"]
    assert bool((lower >= 0).all()) and bool((upper <= 1 + 1e-12).all())
    assert torch.allclose(upper - lower, torch.full_like(lower, side))
    order = torch.argsort(lower[:, 0])
    gaps = lower[order[1:], 0] - upper[order[:-1], 0]
    m = lower.shape[0]
    assert bool((gaps >= (1.0 / m - side) / 2 - 1e-12).all()) and (m == 1 or float(gaps.min()) > 0)
    assert abs(float(p["weights"].sum()) - 1) < 1e-12 and bool((p["weights"] > 0).all()) and p["sigma"] > 0


@settings(max_examples=60, deadline=None, database=None)
@given(pst.box_mixtures(max_n=4), pst.gaussian_mixtures(max_n=4))
def test_mixture_strategies_build_working_fields(box, gm) -> None:
    for field in (box, gm):
        x = field.sample(3, generator=torch.Generator().manual_seed(0))
        assert bool(torch.isfinite(field.log_prob(x, 1.0)).all())


@MANY
@given(pst.dimensions(), pst.sigmas(), pst.sides(), pst.taus(), pst.cs(), pst.theorem43_params())
def test_scalar_strategies_draw_valid_parameters(n, sigma, side, tau, c, p) -> None:
    assert n >= 1 and sigma > 0 and side >= 0 and tau > 0 and c > 0
    assert p["n"] >= 1 and p["m"] >= 1 and p["sigma"] > 0 and p["side"] >= 0 and p["tau"] > 0 and p["c"] > 0
    assert p["rho_max"] > 0 and p["density_ratio"] >= 1


# --------------------------------------------------------------------------- pytest plugin
def _plugin_args() -> list[str]:
    installed = any(e.name == "pfode" for e in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "largemodel.pytest_plugin"]


def test_plugin_entry_point_declared_and_light() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"]["pfode"] == "largemodel.pytest_plugin"
    code = "import sys, largemodel.pytest_plugin; sys.exit(int('torch' in sys.modules or 'diffusers' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_plugin_autoloads_from_its_entry_point(tmp_path: Path) -> None:
    """The declared ``pytest11`` entry point, installed (a dist-info on the path), loads the plugin."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["pytest11"]["pfode"]
    dist = tmp_path / "site" / "pfode_probe-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pfode-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\npfode = {target}\n")
    (tmp_path / "test_probe.py").write_text("def test_probe(pfode_gmm_2d):\n    assert pfode_gmm_2d.n == 2\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pfode-fixtures",
                          "test_probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


_FIXTURE_TEST = """
import torch

def test_fields(pfode_gmm_2d, pfode_box_8d):
    assert pfode_gmm_2d.n == 2 and pfode_box_8d.n == 8
    x = pfode_box_8d.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(pfode_box_8d.log_prob(x, 1.0)).all()
    lo, up = pfode_box_8d.lower, pfode_box_8d.upper
    assert (lo >= 0).all() and (up <= 1).all()
    order = torch.argsort(lo[:, 0])
    assert (lo[order[1:], 0] - up[order[:-1], 0] > 0.1).all()  # separated along the first axis
"""


def test_plugin_fixtures_are_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=_FIXTURE_TEST)
    off = pytester.runpytest_inprocess(*_plugin_args())
    off.assert_outcomes(errors=1)
    off.stdout.fnmatch_lines(["*fixture 'pfode_gmm_2d' not found*"])
    pytester.runpytest_inprocess(*_plugin_args(), "--pfode-fixtures").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\npfode_fixtures = true\n")
    pytester.runpytest_inprocess(*_plugin_args()).assert_outcomes(passed=1)


def test_plugin_tiny_folder_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_folder="""
def test_folder(pfode_tiny_folder):
    assert (pfode_tiny_folder / "model_index.json").is_file()
    assert (pfode_tiny_folder / "transformer").is_dir()
""")
    pytester.runpytest_inprocess(*_plugin_args(), "--pfode-fixtures").assert_outcomes(passed=1)

