"""Tests of simulate.fields: Gaussian / Gaussian-mixture fields and the shared machinery.

docs/theory.md §1.1, §3.3, §3.4 (conventions) and section 6 (closed forms). Box mixtures are tested in
``test_fields_box.py``, the truncated-normal numerics in ``test_fields_truncnorm.py``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

from simulate import BoxMixture, FieldValues, Gaussian, GaussianMixture, VelocityField

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gm3(n: int = 2, diagonal: bool = False) -> GaussianMixture:
    g = _gen(1)
    means = 2.0 * torch.randn(3, n, generator=g, dtype=F64)
    stds = 0.3 + torch.rand(3, n, generator=g, dtype=F64) if diagonal else torch.tensor([0.4, 0.7, 1.3], dtype=F64)
    return GaussianMixture(means, stds, torch.tensor([0.2, 0.5, 0.3], dtype=F64))


def _check_autograd(field: VelocityField, x: torch.Tensor, t: float) -> None:
    """score = grad log p_t (autograd); divergence = trace of the autograd Jacobian of v."""
    xr = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(field.log_prob(xr, t).sum(), xr)[0]
    torch.testing.assert_close(field.score(x, t), grad, rtol=1e-8, atol=1e-8 * (1 + grad.abs().max().item()))
    div = field.divergence(x, t)
    for k in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda z: field.velocity(z, t), x[k])
        tr = torch.trace(jac)
        assert div[k].item() == pytest.approx(tr.item(), rel=1e-8, abs=1e-8 * (1 + jac.abs().max().item())), (k, t)


def _check_continuity(field: VelocityField, x: torch.Tensor, t: float, eps: float = 1e-5) -> None:
    """d/dt log p_t(x) = -div v - v . score (continuity equation), central differences in t."""
    dlogp = (field.log_prob(x, t + eps) - field.log_prob(x, t - eps)) / (2 * eps)
    ev = field.evaluate(x, t)
    rhs = -ev.divergence - (ev.velocity * ev.score).sum(dim=1)
    scale = 1.0 + ev.divergence.abs() + (ev.velocity * ev.score).abs().sum(dim=1)
    assert torch.all((dlogp - rhs).abs() <= 1e-6 * scale), (t, dlogp, rhs)


# --------------------------------------------------------------------------- single Gaussian


def test_gaussian_velocity_closed_form() -> None:
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    s = torch.tensor([0.3, 2.0, 1.0], dtype=F64)
    field = Gaussian(mu, s)
    x = torch.randn(7, 3, generator=_gen(0), dtype=F64)
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        big_s = t * t * s * s + (1 - t) ** 2
        expected = mu + (t * s * s - (1 - t)) / big_s * (x - t * mu)
        torch.testing.assert_close(field.velocity(x, t), expected, rtol=1e-14, atol=1e-14)
        ref_lp = stats.norm.logpdf(x.numpy(), loc=(t * mu).numpy(), scale=np.sqrt(big_s.numpy())).sum(axis=1)
        np.testing.assert_allclose(field.log_prob(x, t).numpy(), ref_lp, rtol=1e-13)
        torch.testing.assert_close(field.divergence(x, t), ((t * s * s - (1 - t)) / big_s).sum().expand(7))


def test_gaussian_flow_map_solves_the_ode() -> None:
    """x_t = t mu + sqrt(t^2 s^2 + (1-t)^2) z solves dx/dt = v(x, t), x_0 = z, x_1 = G(z) = mu + s z.

    (The straight line (1 - t) z + t G(z) does not: flow-matching trajectories of a Gaussian
    with s != 1 are curved, only the conditional paths are straight.)
    """
    mu = torch.tensor([1.0, -2.0], dtype=F64)
    s = torch.tensor([0.3, 2.5], dtype=F64)
    field = Gaussian(mu, s)
    z = torch.randn(5, 2, generator=_gen(3), dtype=F64)
    torch.testing.assert_close(field.trajectory(z, 0.0), z)
    torch.testing.assert_close(field.trajectory(z, 1.0), field.flow_map(z))
    torch.testing.assert_close(field.flow_map(z), mu + s * z)
    torch.testing.assert_close(field.inverse_map(field.flow_map(z)), z)
    for t in (0.05, 0.3, 0.5, 0.8, 0.99):
        xt = field.trajectory(z, t)
        dxdt = mu + (t * s * s - (1 - t)) / torch.sqrt(t * t * s * s + (1 - t) ** 2) * z
        h = 1e-6
        fd = (field.trajectory(z, t + h) - field.trajectory(z, t - h)) / (2 * h)
        torch.testing.assert_close(fd, dxdt, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(field.velocity(xt, t), dxdt, rtol=1e-12, atol=1e-12)
    straight = 0.5 * z + 0.5 * field.flow_map(z)
    assert not torch.allclose(field.velocity(straight, 0.5), field.flow_map(z) - z)
    # Liouville: log |det J_G| = integral_0^1 div v dt = sum_d log s_d
    ts = torch.linspace(0, 1, 2001, dtype=F64)
    divs = torch.stack([field.divergence(field.trajectory(z[0], float(t)), float(t)) for t in ts])
    assert torch.trapezoid(divs, ts).item() == pytest.approx(torch.log(s).sum().item(), abs=1e-6)


# --------------------------------------------------------------------------- Gaussian mixture


def test_gaussian_mixture_endpoints() -> None:
    field = _gm3(n=3, diagonal=True)
    x = torch.randn(6, 3, generator=_gen(2), dtype=F64) * 3
    torch.testing.assert_close(field.velocity(x, 0.0), field.mean - x, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(field.score(x, 0.0), -x, rtol=1e-14, atol=1e-14)
    ref0 = stats.norm.logpdf(x.numpy()).sum(axis=1)
    np.testing.assert_allclose(field.log_prob(x, 0.0).numpy(), ref0, rtol=1e-14)
    torch.testing.assert_close(field.velocity(x, 1.0), x, rtol=0, atol=0)
    assert field.divergence(x, 1.0).tolist() == pytest.approx([3.0] * 6, abs=1e-12)
    ref1 = np.logaddexp.reduce(
        [
            math.log(w) + stats.norm.logpdf(x.numpy(), field.means[i].numpy(), field.stds[i].numpy()).sum(axis=1)
            for i, w in enumerate(field.weights.tolist())
        ],
        axis=0,
    )
    np.testing.assert_allclose(field.log_prob(x, 1.0).numpy(), ref1, rtol=1e-13)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.93, 1.0])
def test_gaussian_mixture_autograd(t: float) -> None:
    field = _gm3(n=3, diagonal=True)
    x = torch.randn(4, 3, generator=_gen(5), dtype=F64) * 2
    _check_autograd(field, x, t)


@pytest.mark.parametrize("t", [0.05, 0.4, 0.8, 0.995])
def test_gaussian_mixture_continuity_equation(t: float) -> None:
    field = _gm3(n=2)
    x = torch.randn(8, 2, generator=_gen(6), dtype=F64) * 2
    _check_continuity(field, x, t)


def test_gaussian_mixture_monte_carlo() -> None:
    """v(x, t) against a self-normalized importance estimate of E[x1 - x0 | x_t = x]."""
    field = _gm3(n=2)
    x1 = field.sample(400_000, generator=_gen(7))
    t = 0.55
    points = field.sample(5, generator=_gen(8)) * t + (1 - t) * torch.randn(5, 2, generator=_gen(9), dtype=F64)
    v = field.velocity(points, t)
    for k in range(points.shape[0]):
        x = points[k]
        logw = -((x - t * x1) ** 2).sum(dim=1) / (2 * (1 - t) ** 2)
        w = torch.exp(logw - logw.max())
        w = w / w.sum()
        g = x1 - (x - t * x1) / (1 - t)  # x1 - x0 given x_t = x
        est = (w[:, None] * g).sum(dim=0)
        se = torch.sqrt((w[:, None] ** 2 * (g - est) ** 2).sum(dim=0))
        assert torch.all((v[k] - est).abs() <= 5 * se + 1e-12), (k, v[k], est, se)


@pytest.mark.parametrize("t", [0.25, 0.6, 1.0])
def test_gaussian_mixture_density_integrates_to_one(t: float) -> None:
    field = _gm3(n=2)
    grid = torch.arange(-10.0, 10.0, 0.05, dtype=F64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    total = torch.exp(field.log_prob(pts, t)).sum().item() * 0.05**2
    assert total == pytest.approx(1.0, abs=1e-8)


def test_gaussian_mixture_stability_far_points_small_sigma() -> None:
    """Points 50 sigma from every component, sigma = 1e-4, every t: finite, right limits."""
    sigma = 1e-4
    means = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    field = GaussianMixture(means, sigma, torch.tensor([0.3, 0.3, 0.4], dtype=F64))
    direction = torch.tensor([-1.0, -1.0, -1.0], dtype=F64) / math.sqrt(3)
    x = torch.stack([means[0] + 50 * sigma * direction, torch.tensor([0.5, 0.5, 0.5], dtype=F64), 1e3 * direction])
    for t in (0.0, 1e-12, 1e-6, 0.3, 0.5, 0.9, 1 - 1e-6, 1 - 1e-12, 1.0):
        ev = field.evaluate(x, t)
        for value in (ev.velocity, ev.score, ev.log_prob, ev.divergence):
            assert torch.isfinite(value).all(), t
    score1 = field.score(x[:1], 1.0)[0]
    assert (score1 @ direction).item() == pytest.approx(-50 / sigma, rel=1e-12)


def test_gaussian_mixture_tiny_sigma_autograd_far() -> None:
    field = GaussianMixture(torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=F64), 1e-3, torch.tensor([0.5, 0.5], dtype=F64))
    x = torch.tensor([[0.03, -0.02], [0.5, 0.3]], dtype=F64)
    for t in (0.5, 0.999):
        _check_autograd(field, x, t)


# --------------------------------------------------------------------------- API and validation


def test_unbatched_inputs_and_t_shapes() -> None:
    field = _gm3(n=2)
    x = torch.randn(4, 2, generator=_gen(10), dtype=F64)
    ev = field.evaluate(x[0], 0.3)
    assert ev.velocity.shape == (2,) and ev.log_prob.shape == () and ev.divergence.shape == ()
    assert isinstance(ev, FieldValues)
    ts = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=F64)
    batched = field.velocity(x, ts)
    for k in range(4):
        torch.testing.assert_close(batched[k], field.velocity(x[k], float(ts[k])))
    torch.testing.assert_close(field.velocity(x, torch.tensor(0.2)), field.velocity(x, 0.2))
    torch.testing.assert_close(field.velocity(x.tolist(), 0.2), field.velocity(x, 0.2))
    only = field.evaluate(x, 0.2, velocity=False, score=False, divergence=False)
    assert only.velocity is None and only.log_prob is not None


@pytest.mark.parametrize(
    ("x", "t", "match"),
    [
        (torch.zeros(3, 2), -0.1, r"t must lie in \[0, 1\]"),
        (torch.zeros(3, 2), 1.0 + 1e-9, r"t must lie in \[0, 1\]"),
        (torch.zeros(3, 2), float("nan"), r"t must lie in \[0, 1\]"),
        (torch.zeros(3, 2), torch.tensor([0.1, 0.2]), "t must have shape"),
        (torch.zeros(3, 3), 0.5, "x has dimension 3"),
        (torch.zeros(2, 3, 2), 0.5, "x must have shape"),
        (torch.tensor([[0.0, float("inf")]]), 0.5, "x must be finite"),
    ],
)
def test_input_validation(x: torch.Tensor, t: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _gm3(n=2).velocity(x, t)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(means=[[0.0, 0.0]], stds=0.0, weights=[1.0]), "stds must be > 0"),
        (dict(means=[[0.0, 0.0]], stds=[[1.0, -1.0]], weights=[1.0]), "stds must be > 0"),
        (dict(means=[[0.0, 0.0]], stds=[1.0, 1.0, 1.0], weights=[1.0]), "stds must be a scalar or have shape"),
        (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[1.0]), "weights has 1 entries"),
        (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[1.2, -0.2]), "weights must be >= 0"),
        (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[0.5, 0.4]), "weights must sum to 1"),
        (dict(means=torch.zeros(0, 2), stds=1.0, weights=torch.zeros(0)), "non-empty"),
        (dict(means=[0.0, 1.0], stds=1.0, weights=[1.0]), r"means must have shape \(m, n\)"),
        (dict(means=[[0.0, float("nan")]], stds=1.0, weights=[1.0]), "means must be finite"),
        (dict(means=[[0.0, 0.0]], stds=float("inf"), weights=[1.0]), "stds must be finite"),
    ],
)
def test_gaussian_mixture_parameter_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_gaussian_validation_and_memory_floor() -> None:
    with pytest.raises(ValueError, match="std must be > 0"):
        Gaussian([0.0, 1.0], -1.0)
    with pytest.raises(ValueError, match="max_memory_bytes must be >="):
        GaussianMixture([[0.0] * 1000], 1.0, [1.0], max_memory_bytes=1000)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture([[0.0], [1.0]], 1.0, [0.5, 0.5 + 1e-8])
    GaussianMixture([[0.0], [1.0]], 1.0, [0.5, 0.5 + 1e-10])  # within the 1e-9 tolerance


def test_gaussian_mixture_geometry_and_sampling() -> None:
    means = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]], dtype=F64)
    field = GaussianMixture(means, 0.5, torch.tensor([0.2, 0.3, 0.5], dtype=F64))
    assert field.m == 3 and field.n == 2 and field.side == 0.0 and field.sigma == 0.5
    assert field.separation == pytest.approx(3.0)
    field.check_separated(2.9)
    with pytest.raises(ValueError, match="components 0 and 2 are at distance 3 < 3.5"):
        field.check_separated(3.5)
    with pytest.raises(ValueError, match="sigma is defined only"):
        _ = _gm3().sigma
    s = field.sample(200_000, generator=_gen(11))
    torch.testing.assert_close(s.mean(dim=0), field.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(field.sample(5, generator=_gen(1)), field.sample(5, generator=_gen(1)))
    lpost = field.log_posterior(torch.randn(4, 2, generator=_gen(12), dtype=F64), 0.7)
    torch.testing.assert_close(torch.logsumexp(lpost, dim=1), torch.zeros(4, dtype=F64))
    torch.testing.assert_close(field.log_posterior(torch.zeros(2, dtype=F64), 0.0), torch.log(field.weights))


def test_float32_and_to() -> None:
    field = _gm3(n=2)
    f32 = field.to(dtype=torch.float32)
    x = torch.randn(5, 2, generator=_gen(13), dtype=F64)
    v32 = f32.velocity(x, 0.4)
    assert v32.dtype == torch.float32
    torch.testing.assert_close(v32.double(), field.velocity(x, 0.4), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- chunking and memory


def test_chunking_over_rows_and_components_gives_identical_results() -> None:
    g = _gen(14)
    m, n = 6, 200
    means = torch.randn(m, n, generator=g, dtype=F64)
    stds = 0.5 + torch.rand(m, n, generator=g, dtype=F64)
    w = torch.full((m,), 1.0 / m, dtype=F64)
    x = 0.3 * torch.randn(9, n, generator=g, dtype=F64) + means[torch.arange(9) % m]
    ts = torch.linspace(0, 1, 9, dtype=F64)
    ref = GaussianMixture(means, stds, w).evaluate(x, ts)
    per = GaussianMixture._BYTES_PER_ELEMENT
    for budget in (2 * m * n * per, n * per, 2 * n * per):  # 2 rows / 1 component / 2 components per chunk
        chunked = GaussianMixture(means, stds, w, max_memory_bytes=budget)
        assert chunked._plan(9) in {(2, m), (1, 1), (1, 2)}
        ev = chunked.evaluate(x, ts)
        for a, b in zip((ev.velocity, ev.score, ev.log_prob, ev.divergence), (ref.velocity, ref.score, ref.log_prob, ref.divergence)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_default_budget_plan_for_large_problem() -> None:
    """n = 65536, m = 16, B = 256 is cut into chunks under the default 512 MiB budget."""
    lower = torch.zeros(16, 65536, dtype=F64)
    for cls, kwargs in ((BoxMixture, dict(lower=lower, upper=lower + 1, weights=torch.full((16,), 1 / 16), sigma=0.1)),
                        (GaussianMixture, dict(means=lower, stds=0.1, weights=torch.full((16,), 1 / 16)))):
        field = cls(**kwargs)
        rows, comps = field._plan(256)
        assert rows * comps * field.n * cls._BYTES_PER_ELEMENT <= field.max_memory_bytes


_RSS_SCRIPT = textwrap.dedent(
    """
    import gc, resource, sys, torch
    from simulate import BoxMixture
    torch.manual_seed(0)
    m, n, B = 8, 4096, 32
    lo = torch.rand(m, n, dtype=torch.float64) * 3
    up = lo + torch.rand(m, n, dtype=torch.float64)
    budget = 32 * 2**20
    field = BoxMixture(lo, up, torch.full((m,), 1 / m, dtype=torch.float64), 0.05, max_memory_bytes=budget)
    x = torch.randn(B, n, dtype=torch.float64) * 3
    with torch.no_grad():
        field.evaluate(x[:1], 0.5)
        gc.collect()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        field.evaluate(x, torch.linspace(0, 1, B, dtype=torch.float64))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print((peak - base) / 2**20)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units are platform specific")
def test_peak_memory_stays_under_budget() -> None:
    """Unchunked this call would need ~400 MiB of intermediates; the budget is 32 MiB."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, check=True, timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 32 + 8, grown_mib


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """Parameters on CUDA: results live on CUDA and match the CPU field."""
    lower = torch.tensor([[-2.0, -1.0], [0.5, 0.5]], dtype=F64)
    upper = torch.tensor([[-1.0, 0.5], [2.5, 0.5]], dtype=F64)
    w = torch.tensor([0.4, 0.6], dtype=F64)
    x = 2 * torch.randn(64, 2, generator=_gen(20), dtype=F64)
    ts = torch.linspace(0, 1, 64, dtype=F64)
    for cpu in (BoxMixture(lower, upper, w, 0.1), GaussianMixture(lower, 0.3, w)):
        gpu = cpu.to(device="cuda")
        ev = gpu.evaluate(x, ts)
        ref = cpu.evaluate(x, ts)
        for name in ("velocity", "score", "log_prob", "divergence"):
            value = getattr(ev, name)
            assert value.device.type == "cuda"
            torch.testing.assert_close(value.cpu(), getattr(ref, name), rtol=1e-11, atol=1e-11)
        assert gpu.sample(10, generator=torch.Generator(device="cuda").manual_seed(0)).device.type == "cuda"
