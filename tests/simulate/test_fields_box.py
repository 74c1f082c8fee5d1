"""Tests of simulate.fields.BoxMixture (Assumption 4.3; docs/theory.md §3.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from simulate import BoxMixture, GaussianMixture

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _box2(sigma: float = 0.2) -> BoxMixture:
    lower = torch.tensor([[-2.0, -1.0], [0.5, 0.5], [-1.0, 1.5]], dtype=F64)
    upper = torch.tensor([[-1.0, 0.5], [2.5, 1.0], [-0.8, 3.0]], dtype=F64)
    return BoxMixture(lower, upper, torch.tensor([0.3, 0.5, 0.2], dtype=F64), sigma)


def _box3() -> BoxMixture:
    g = _gen(1)
    lower = 2 * torch.randn(3, 3, generator=g, dtype=F64)
    upper = lower + torch.rand(3, 3, generator=g, dtype=F64) * 1.5
    upper[1, 2] = lower[1, 2]  # one zero-width coordinate
    return BoxMixture(lower, upper, torch.tensor([0.25, 0.35, 0.4], dtype=F64), 0.3)


def _check_autograd(field, x: torch.Tensor, t: float, rel: float = 1e-8) -> None:
    """score = grad log p_t (autograd); divergence = trace of the autograd Jacobian of v."""
    xr = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(field.log_prob(xr, t).sum(), xr)[0]
    torch.testing.assert_close(field.score(x, t), grad, rtol=rel, atol=rel * (1 + grad.abs().max().item()))
    div = field.divergence(x, t)
    for k in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda z: field.velocity(z, t), x[k])
        tr = torch.trace(jac).item()
        assert div[k].item() == pytest.approx(tr, rel=rel, abs=rel * (1 + jac.abs().max().item())), (k, t)


def _check_continuity(field, x: torch.Tensor, t: float, eps: float = 1e-5) -> None:
    """d/dt log p_t(x) = -div v - v . score, by central differences in t."""
    dlogp = (field.log_prob(x, t + eps) - field.log_prob(x, t - eps)) / (2 * eps)
    ev = field.evaluate(x, t)
    rhs = -ev.divergence - (ev.velocity * ev.score).sum(dim=1)
    scale = 1.0 + ev.divergence.abs() + (ev.velocity * ev.score).abs().sum(dim=1)
    assert torch.all((dlogp - rhs).abs() <= 1e-6 * scale), (t, dlogp, rhs)


def test_endpoints_t0_t1() -> None:
    field = _box3()
    x = 2 * torch.randn(6, 3, generator=_gen(2), dtype=F64)
    torch.testing.assert_close(field.velocity(x, 0.0), field.mean - x, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(field.score(x, 0.0), -x, rtol=0, atol=0)
    np.testing.assert_allclose(field.log_prob(x, 0.0).numpy(), stats.norm.logpdf(x.numpy()).sum(axis=1), rtol=1e-14)
    torch.testing.assert_close(field.velocity(x, 1.0), x, rtol=0, atol=0)
    assert field.divergence(x, 1.0).tolist() == pytest.approx([3.0] * 6, abs=1e-12)
    torch.testing.assert_close(field.divergence(x, 0.0), torch.full((6,), -3.0, dtype=F64))
    torch.testing.assert_close(field.mean, (field.weights[:, None] * (field.lower + field.upper) / 2).sum(0))


def test_density_1d_against_numerical_convolution() -> None:
    """log p_t for a 1-D box mixture = log of a direct quadrature of p_g (uniform * Gaussian) against N(x; t x1, (1-t)^2)."""
    a = np.array([-1.0, 0.5])
    b = np.array([0.0, 2.0])
    w = np.array([0.4, 0.6])
    sigma = 0.3
    field = BoxMixture(torch.tensor(a)[:, None], torch.tensor(b)[:, None], torch.tensor(w), sigma)

    def p_g(u: float) -> float:  # sum_i w_i integral_a^b U(y) N(u - y; 0, sigma^2) dy, by quadrature
        return sum(
            wi * integrate.quad(lambda y: stats.norm.pdf(u - y, scale=sigma) / (bi - ai), ai, bi, epsabs=0, epsrel=1e-13)[0]
            for ai, bi, wi in zip(a, b, w)
        )

    xs = np.array([-2.0, -0.5, 0.2, 1.1, 2.6])
    got1 = field.log_prob(torch.tensor(xs)[:, None], 1.0).numpy()
    np.testing.assert_allclose(got1, np.log([p_g(u) for u in xs]), rtol=1e-11)

    def p_g_closed(u: float) -> float:  # the same convolution in closed form (scipy.stats)
        return float(np.sum(w * (stats.norm.cdf((u - a) / sigma) - stats.norm.cdf((u - b) / sigma)) / (b - a)))

    t = 0.6
    got = field.log_prob(torch.tensor(xs)[:, None], t).numpy()
    ref = [
        integrate.quad(lambda u: p_g_closed(u) * stats.norm.pdf(x, loc=t * u, scale=1 - t), -4, 5, epsabs=0, epsrel=1e-11, limit=200)[0]
        for x in xs
    ]
    np.testing.assert_allclose(got, np.log(ref), rtol=1e-9)


@pytest.mark.parametrize("t", [0.2, 0.6, 0.9, 1.0])
def test_density_integrates_to_one(t: float) -> None:
    field = _box2()
    step = 0.05
    grid = torch.arange(-7.0, 7.0, step, dtype=F64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    total = torch.exp(field.log_prob(pts, t)).sum().item() * step**2
    assert total == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("t", [0.0, 1e-7, 0.15, 0.5, 0.85, 1 - 1e-7, 1.0])
def test_score_and_divergence_match_autograd(t: float) -> None:
    field = _box3()
    g = _gen(3)
    x = torch.cat([
        field.sample(3, generator=g),  # near the data
        4 * torch.randn(2, 3, generator=g, dtype=F64),  # far: one-tail regime
    ])
    _check_autograd(field, x, t)


def test_autograd_small_sigma_and_mixed_regimes() -> None:
    """sigma = 1e-3 near t = 1: narrow, straddling and deep-tail coordinates in one batch."""
    field = BoxMixture(
        torch.tensor([[0.0, 0.0], [0.3, 0.0]], dtype=F64), torch.tensor([[0.2, 0.1], [0.5, 0.1]], dtype=F64),
        torch.tensor([0.5, 0.5], dtype=F64), 1e-3,
    )
    x = torch.tensor([[0.25, 0.05], [0.2 + 3e-3, 0.1 + 2e-3], [0.1, -5e-3]], dtype=F64)
    for t in (0.9, 0.999, 1.0):
        _check_autograd(field, x, t)


@pytest.mark.parametrize("t", [0.02, 0.3, 0.7, 0.98])
def test_continuity_equation(t: float) -> None:
    field = _box2()
    x = torch.cat([t * field.sample(5, generator=_gen(4)) + (1 - t) * torch.randn(5, 2, generator=_gen(5), dtype=F64),
                   torch.tensor([[4.0, -3.0]], dtype=F64)])
    _check_continuity(field, x, t)


@pytest.mark.parametrize("t0", [0.0, 0.3, 0.9999, 1.0])
def test_continuity_equation_autograd_in_t(t0: float) -> None:
    """Same identity with d/dt log p_t from autograd in t (one-sided at the endpoints)."""
    field = _box3()
    x = torch.cat([field.sample(3, generator=_gen(15)), 3 * torch.randn(2, 3, generator=_gen(16), dtype=F64)])
    t = torch.full((5,), t0, dtype=F64, requires_grad=True)
    dlogp = torch.autograd.grad(field.log_prob(x, t).sum(), t)[0]
    ev = field.evaluate(x, t0)
    rhs = -ev.divergence - (ev.velocity * ev.score).sum(dim=1)
    torch.testing.assert_close(dlogp, rhs, rtol=1e-9, atol=1e-9 * (1 + rhs.abs().max().item()))


def test_monte_carlo_velocity() -> None:
    """v(x, t) against a self-normalized importance estimate of E[x1 - x0 | x_t = x] in 2-D."""
    field = _box2(sigma=0.15)
    x1 = field.sample(400_000, generator=_gen(6))
    for t in (0.4, 0.75):
        pts = t * field.sample(4, generator=_gen(7)) + (1 - t) * torch.randn(4, 2, generator=_gen(8), dtype=F64)
        v = field.velocity(pts, t)
        for k in range(pts.shape[0]):
            x = pts[k]
            logw = -((x - t * x1) ** 2).sum(dim=1) / (2 * (1 - t) ** 2)
            w = torch.exp(logw - logw.max())
            w = w / w.sum()
            g = x1 - (x - t * x1) / (1 - t)
            est = (w[:, None] * g).sum(dim=0)
            se = torch.sqrt((w[:, None] ** 2 * (g - est) ** 2).sum(dim=0))
            assert torch.all((v[k] - est).abs() <= 5 * se + 1e-12), (t, k, v[k], est, se)


def test_point_boxes_equal_gaussian_mixture() -> None:
    """Zero-width boxes are exactly the Gaussian mixture with common sigma; width 1e-9 is within 1e-8."""
    g = _gen(9)
    mu = 2 * torch.randn(3, 4, generator=g, dtype=F64)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    sigma = 0.4
    gm = GaussianMixture(mu, sigma, w)
    points = BoxMixture(mu, mu, w, sigma)
    tiny = BoxMixture(mu - 0.5e-9, mu + 0.5e-9, w, sigma)
    x = torch.cat([mu, 1.5 * torch.randn(3, 4, generator=g, dtype=F64)])
    for t in (0.0, 0.3, 0.7, 1.0):
        ref = gm.evaluate(x, t)
        for field, tol in ((points, 1e-12), (tiny, 1e-8)):
            ev = field.evaluate(x, t)
            for name in ("velocity", "score", "log_prob", "divergence"):
                a, b = getattr(ev, name), getattr(ref, name)
                torch.testing.assert_close(a, b, rtol=tol, atol=tol * (1 + b.abs().max().item()), msg=f"{name} t={t}")


def test_stability_far_points_small_sigma() -> None:
    """sigma = 1e-4; points 50 sigma from every box (and far beyond); all t; finite and correct limits."""
    sigma = 1e-4
    lower = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    upper = lower + torch.tensor([[0.2, 0.1, 0.3], [0.2, 0.2, 0.2], [1e-3, 0.0, 0.5]], dtype=F64)
    field = BoxMixture(lower, upper, torch.tensor([0.3, 0.3, 0.4], dtype=F64), sigma)
    direction = torch.tensor([-1.0, -1.0, -1.0], dtype=F64) / math.sqrt(3)
    x = torch.stack([
        lower[0] + 50 * sigma * direction,  # 50 sigma from box 0, ~1e4 sigma from the others
        torch.tensor([0.6, 0.5, 0.55], dtype=F64),
        upper[2] + torch.tensor([0.0, 50 * sigma, 0.0], dtype=F64),
        1e3 * direction,
    ])
    for t in (0.0, 1e-12, 1e-6, 0.3, 0.5, 0.9, 1 - 1e-6, 1 - 1e-12, 1.0):
        ev = field.evaluate(x, t)
        for value in (ev.velocity, ev.score, ev.log_prob, ev.divergence):
            assert torch.isfinite(value).all(), t
    # at t = 1 the score at distance z sigma outside a face is -lambda(z)/sigma along the
    # outward normal, lambda = phi/Q the inverse Mills ratio (other components negligible)
    def lam(z: float) -> float:
        return float(np.exp(stats.norm.logpdf(z) - stats.norm.logsf(z)))

    s2 = field.score(upper[2] + torch.tensor([0.0, 0.0, 50 * sigma], dtype=F64), 1.0)
    assert s2[2].item() == pytest.approx(-lam(50.0) / sigma, rel=1e-10)
    assert s2[1].item() == 0.0  # zero-width coordinate, x on the point
    s0 = field.score(x[0], 1.0)
    assert s0.tolist() == pytest.approx([lam(50 / math.sqrt(3)) / sigma] * 3, rel=1e-10)


def test_high_dimension_and_chunking() -> None:
    """n = 65536, m = 4: finite results; a budget forcing component chunks gives the same values."""
    n, m = 65536, 4
    g = _gen(10)
    lower = torch.rand(m, n, generator=g, dtype=F64) * 2
    upper = lower + 0.5 * torch.rand(m, n, generator=g, dtype=F64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    field = BoxMixture(lower, upper, w, 0.05)
    x = torch.stack([field.sample(1, generator=g)[0], (lower[0] + upper[1]) / 2])
    ts = torch.tensor([0.5, 0.999], dtype=F64)
    ref = field.evaluate(x, ts)
    for value in (ref.velocity, ref.score, ref.log_prob, ref.divergence):
        assert torch.isfinite(value).all()
    small = BoxMixture(lower, upper, w, 0.05, max_memory_bytes=2 * n * BoxMixture._BYTES_PER_ELEMENT)
    rows, comps = small._plan(2)
    assert rows == 1 and comps < m  # the budget forces chunks over components
    ev = small.evaluate(x, ts)
    for name in ("velocity", "score", "log_prob", "divergence"):
        torch.testing.assert_close(getattr(ev, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(field.velocity(x[:1], 1.0), x[:1], rtol=0, atol=0)


def test_rows_chunking_identical() -> None:
    field = _box2()
    x = 2 * torch.randn(11, 2, generator=_gen(11), dtype=F64)
    ts = torch.linspace(0, 1, 11, dtype=F64)
    ref = field.evaluate(x, ts)
    small = BoxMixture(field.lower, field.upper, field.weights, field.sigma,
                       max_memory_bytes=3 * field.m * 2 * BoxMixture._BYTES_PER_ELEMENT)
    assert small._plan(11) == (3, 3)
    ev = small.evaluate(x, ts)
    for name in ("velocity", "score", "log_prob", "divergence"):
        torch.testing.assert_close(getattr(ev, name), getattr(ref, name), rtol=1e-13, atol=1e-13)


def test_geometry_properties() -> None:
    lower = torch.tensor([[0.0, 0.0], [3.0, 0.5], [0.5, 4.0], [0.9, 0.9]], dtype=F64)
    upper = torch.tensor([[1.0, 1.0], [4.0, 2.5], [1.0, 5.0], [1.2, 1.5]], dtype=F64)
    field = BoxMixture(lower, upper, torch.full((4,), 0.25, dtype=F64), 0.1)
    assert field.m == 4 and field.n == 2 and field.sigma == 0.1
    assert field.side == pytest.approx(2.0)
    dist = field.pairwise_distances()
    assert dist[0, 1].item() == pytest.approx(2.0)  # gap only in x
    assert dist[1, 2].item() == pytest.approx(math.hypot(2.0, 1.5))  # gaps in both coordinates
    assert dist[0, 3].item() == 0.0
    assert field.separation == 0.0
    with pytest.raises(ValueError, match="boxes 0 and 3 overlap"):
        field.check_separated(0.5)
    sep = BoxMixture(lower[:3], upper[:3], torch.full((3,), 1 / 3, dtype=F64), 0.1)
    assert sep.separation == pytest.approx(2.0)
    sep.check_separated(2.0)
    with pytest.raises(ValueError, match="boxes 0 and 1 are at distance 2 < 2.5"):
        sep.check_separated(2.5)


def test_sampling_and_posterior() -> None:
    field = _box2(sigma=0.05)
    s = field.sample(100_000, generator=_gen(12))
    assert s.shape == (100_000, 2)
    torch.testing.assert_close(s.mean(0), field.mean, atol=0.02, rtol=0)
    inside = ((s[:, None, :] >= field.lower - 0.35) & (s[:, None, :] <= field.upper + 0.35)).all(-1).any(-1)
    assert inside.all()
    lpost = field.log_posterior(s[:5], 1.0)
    torch.testing.assert_close(torch.logsumexp(lpost, dim=1), torch.zeros(5, dtype=F64))
    torch.testing.assert_close(field.log_posterior(s[0], 0.0), torch.log(field.weights))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sigma=0.0), "sigma must be > 0"),
        (dict(sigma=-1.0), "sigma must be > 0"),
        (dict(sigma=float("nan")), "sigma must be finite"),
        (dict(upper=[[0.5, 2.0]], lower=[[1.0, 0.0]]), r"inverted box 0: coordinate 0"),
        (dict(upper=[[1.0, 1.0, 1.0]]), "upper must have the shape of lower"),
        (dict(weights=[0.5, 0.5]), "weights has 2 entries"),
        (dict(weights=[-1.0]), "weights must be >= 0"),
        (dict(weights=[0.9]), "weights must sum to 1"),
        (dict(lower=torch.zeros(0, 2), upper=torch.zeros(0, 2), weights=torch.zeros(0)), "non-empty"),
        (dict(lower=[[0.0, float("inf")]]), "lower must be finite"),
        (dict(lower=[0.0, 0.0], upper=[1.0, 1.0]), r"lower must have shape \(m, n\)"),
    ],
)
def test_parameter_validation(kwargs: dict, match: str) -> None:
    args = dict(lower=[[0.0, 0.0]], upper=[[1.0, 1.0]], weights=[1.0], sigma=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BoxMixture(**args)


def test_input_validation() -> None:
    field = _box2()
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        field.velocity(torch.zeros(2, 2, dtype=F64), torch.tensor([0.5, 1.5], dtype=F64))
    with pytest.raises(ValueError, match="x has dimension 3"):
        field.divergence(torch.zeros(2, 3, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="x must be finite"):
        field.score(torch.tensor([float("nan"), 0.0], dtype=F64), 0.5)
