"""Tests of theory.coefficients (docs/theory.md §2: Definitions 2.2, 4.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.coefficients import (
    Lambda_f,
    SpectralNorm,
    jacobian,
    lambda_f,
    log_Lambda_f,
    log_Lambda_from_singular_values,
    mu_f,
    spectral_norm,
)

# torch's forward-mode AD scripts its JVP decompositions on first use (a torch-internal warning)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear(A: torch.Tensor):
    return lambda x: x @ A.T


def _nonlinear(A: torch.Tensor):
    return lambda x: torch.tanh(x @ A.T) + x**3 / 3


@pytest.fixture
def A() -> torch.Tensor:
    return torch.randn(5, 5, generator=_gen(1), dtype=F64)


# ------------------------------------------------------------------ linear maps: closed forms


def test_linear_map_closed_forms(A):
    f = _linear(A)
    x = torch.randn(4, 5, generator=_gen(2), dtype=F64)
    u = torch.randn(4, 5, generator=_gen(3), dtype=F64)
    An, un = A.numpy(), u.numpy()

    lam = lambda_f(f, x, u)
    expected = np.linalg.norm(un @ An.T, axis=1) / np.linalg.norm(un, axis=1)
    assert lam.shape == (4,) and lam.dtype == F64
    np.testing.assert_allclose(lam.numpy(), expected, rtol=1e-13)

    smax = np.linalg.svd(An, compute_uv=False)[0]
    for method in ("power", "svd"):
        sn = spectral_norm(f, x, method=method, iters=2000)
        assert isinstance(sn, SpectralNorm)
        assert sn.value.shape == (4,) and sn.vector.shape == x.shape
        assert bool(sn.converged.all())
        np.testing.assert_allclose(sn.value.numpy(), smax, rtol=1e-9)

    det = abs(np.linalg.det(An))
    np.testing.assert_allclose(log_Lambda_f(f, x).numpy(), math.log(det) / 5, rtol=1e-12)
    np.testing.assert_allclose(Lambda_f(f, x).numpy(), det ** (1 / 5), rtol=1e-12)

    jac = jacobian(f, x)
    assert jac.shape == (4, 5, 5)
    np.testing.assert_allclose(jac.numpy(), np.broadcast_to(An, (4, 5, 5)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", [1e-9, 1e-3, 1.0, 1e3])
def test_linear_mu_equals_lambda_for_any_perturbation(A, size):
    f = _linear(A)
    x = torch.randn(3, 5, generator=_gen(4), dtype=F64)
    d = size * torch.randn(3, 5, generator=_gen(5), dtype=F64)
    mu = mu_f(f, x, d)
    lam = lambda_f(f, x, d)
    # exact up to the rounding of x + D relative to D
    rtol = 1e-12 + 10 * np.finfo(float).eps * float(x.norm()) / size
    np.testing.assert_allclose(mu.numpy(), lam.numpy(), rtol=rtol)
    # precomputed f(x) gives the same
    np.testing.assert_allclose(mu_f(f, x, d, fx=f(x)).numpy(), mu.numpy(), rtol=0, atol=0)


def test_rectangular_linear_map():
    A = torch.randn(3, 6, generator=_gen(6), dtype=F64)  # R^6 -> R^3
    f = _linear(A)
    x = torch.randn(2, 6, generator=_gen(7), dtype=F64)
    assert jacobian(f, x).shape == (2, 3, 6)
    smax = np.linalg.svd(A.numpy(), compute_uv=False)[0]
    np.testing.assert_allclose(spectral_norm(f, x, method="svd").value.numpy(), smax, rtol=1e-12)
    np.testing.assert_allclose(spectral_norm(f, x, iters=1000).value.numpy(), smax, rtol=1e-9)
    with pytest.raises(ValueError, match=r"^f must have a square Jacobian"):
        log_Lambda_f(f, x)


# ------------------------------------------------------------------ nonlinear maps


def test_power_iteration_agrees_with_svd_on_nonlinear_batch(A):
    f = _nonlinear(A)
    # rows differ in scale, so their Jacobians differ a lot
    x = torch.randn(4, 5, generator=_gen(8), dtype=F64) * torch.tensor([[0.1], [0.5], [1.0], [2.0]], dtype=F64)
    sv = spectral_norm(f, x, method="svd")
    assert len(set(sv.value.tolist())) == 4
    default = spectral_norm(f, x)  # iters=100, tol=1e-10
    assert bool(default.converged.all())
    np.testing.assert_allclose(default.value.numpy(), sv.value.numpy(), rtol=1e-8)
    pw = spectral_norm(f, x, method="power", iters=5000, tol=1e-13)
    assert bool(pw.converged.all())
    np.testing.assert_allclose(pw.value.numpy(), sv.value.numpy(), rtol=1e-11)
    # power estimate is ||J v|| for a unit v: a lower bound, and equal to lambda_f(x, v)
    assert bool((pw.value <= sv.value * (1 + 1e-12)).all())
    np.testing.assert_allclose(lambda_f(f, x, pw.vector).numpy(), pw.value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(pw.vector.reshape(4, -1).norm(dim=1).numpy(), 1.0, rtol=1e-12)
    # the vector is the top right singular vector up to sign
    cos = (pw.vector * sv.vector).sum(dim=1).abs()
    np.testing.assert_allclose(cos.numpy(), 1.0, atol=1e-5)
    # against numpy on the autograd Jacobian
    np_svals = np.linalg.svd(jacobian(f, x).numpy(), compute_uv=False)
    np.testing.assert_allclose(sv.value.numpy(), np_svals[:, 0], rtol=1e-12)


def test_jacobian_matches_finite_differences_multidim():
    M = torch.randn(3, 3, generator=_gen(9), dtype=F64)

    def f(x):  # (B, 2, 3) -> (B, 3, 2), row-wise
        return torch.sin(x @ M).transpose(1, 2) * (1 + x.transpose(1, 2) ** 2)

    x = torch.randn(3, 2, 3, generator=_gen(10), dtype=F64)
    jac = jacobian(f, x)
    assert jac.shape == (3, 6, 6)
    h = 1e-6
    fd = torch.empty(3, 6, 6, dtype=F64)
    for k in range(6):
        e = torch.zeros(6, dtype=F64)
        e[k] = h
        e = e.reshape(1, 2, 3)
        fd[:, :, k] = ((f(x + e) - f(x - e)) / (2 * h)).reshape(3, 6)
    np.testing.assert_allclose(jac.numpy(), fd.numpy(), atol=1e-8)
    # J u by JVP equals the Jacobian applied to u
    u = torch.randn(3, 2, 3, generator=_gen(11), dtype=F64)
    ju = torch.einsum("bij,bj->bi", jac, u.reshape(3, 6))
    np.testing.assert_allclose(lambda_f(f, x, u).numpy(), (ju.norm(dim=1) / u.reshape(3, 6).norm(dim=1)).numpy(), rtol=1e-12)


def test_jacobian_falls_back_when_map_is_not_vmappable():
    def f(x):  # row-wise, but uses .item(): torch.vmap cannot batch it
        return torch.stack([r * (2.0 if r.sum().item() > 0 else 3.0) for r in x])

    x = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=F64)
    jac = jacobian(f, x)
    np.testing.assert_allclose(jac.numpy(), np.stack([2 * np.eye(2), 3 * np.eye(2)]))


def test_forward_mode_only_map():
    def f(x):  # row-wise; the in-place update breaks reverse mode but not forward mode
        y = x * 1.0
        out = torch.sin(y)  # saves y for the backward pass
        y.mul_(2.0)
        return out + y

    x = torch.randn(3, 4, generator=_gen(30), dtype=F64)
    with pytest.raises(RuntimeError):
        torch.func.vjp(f, x)[1](torch.ones_like(x))
    diag = torch.cos(x) + 2  # J = diag(cos x + 2)
    np.testing.assert_allclose(jacobian(f, x).numpy(), torch.diag_embed(diag).numpy(), rtol=1e-14)
    for method in ("power", "svd"):
        sn = spectral_norm(f, x, method=method)
        np.testing.assert_allclose(sn.value.numpy(), diag.max(dim=1).values.numpy(), rtol=1e-13)
        assert bool(sn.converged.all())
    np.testing.assert_allclose(log_Lambda_f(f, x).numpy(), torch.log(diag).mean(dim=1).numpy(), rtol=1e-13)


def test_rows_are_independent(A):
    f = _nonlinear(A)
    x = torch.randn(3, 5, generator=_gen(12), dtype=F64)
    u = torch.randn(3, 5, generator=_gen(13), dtype=F64)
    d = 1e-2 * torch.randn(3, 5, generator=_gen(14), dtype=F64)
    v0 = torch.randn(3, 5, generator=_gen(15), dtype=F64)
    lam, mu = lambda_f(f, x, u), mu_f(f, x, d)
    jac, ll = jacobian(f, x), log_Lambda_f(f, x)
    pw = spectral_norm(f, x, v0=v0, iters=3000, tol=1e-13)
    for b in range(3):
        s = slice(b, b + 1)
        np.testing.assert_allclose(lambda_f(f, x[s], u[s]).numpy(), lam[s].numpy(), rtol=1e-14)
        np.testing.assert_allclose(mu_f(f, x[s], d[s]).numpy(), mu[s].numpy(), rtol=1e-14)
        np.testing.assert_allclose(jacobian(f, x[s]).numpy(), jac[s].numpy(), rtol=1e-14)
        np.testing.assert_allclose(log_Lambda_f(f, x[s]).numpy(), ll[s].numpy(), rtol=1e-12)
        one = spectral_norm(f, x[s], v0=v0[s], iters=3000, tol=1e-13)
        np.testing.assert_allclose(one.value.numpy(), pw.value[s].numpy(), rtol=1e-12)
        assert int(one.iterations[0]) == int(pw.iterations[b])


def test_float32_works_with_looser_tolerance():
    A = torch.randn(4, 4, generator=_gen(16), dtype=F64)
    x64 = torch.randn(3, 4, generator=_gen(17), dtype=F64)
    u64 = torch.randn(3, 4, generator=_gen(18), dtype=F64)
    f = _nonlinear(A)
    f32 = _nonlinear(A.float())
    x32, u32 = x64.float(), u64.float()
    lam = lambda_f(f32, x32, u32)
    assert lam.dtype == F64  # the map in float32, the norms in float64 (docs/theory.md §12)
    np.testing.assert_allclose(lam.numpy(), lambda_f(f, x64, u64).numpy(), rtol=1e-5)
    pw = spectral_norm(f32, x32, iters=3000)
    assert pw.value.dtype == F64 and pw.vector.dtype == torch.float32
    assert bool(pw.converged.all())
    ref = spectral_norm(f, x64, method="svd").value.numpy()
    np.testing.assert_allclose(pw.value.numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(spectral_norm(f32, x32, method="svd").value.numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(log_Lambda_f(f32, x32).numpy(), log_Lambda_f(f, x64).numpy(), atol=1e-5)
    d = 1e-2 * u32
    np.testing.assert_allclose(mu_f(f32, x32, d).numpy(), mu_f(f, x64, d.double()).numpy(), rtol=1e-4)


@pytest.mark.parametrize("shape", [(6,), (2, 4, 4)])
def test_single_gaussian_generation_map(shape):
    # p_g = N(m, s^2 I) gives G(z) = m + s z exactly (docs/theory.md §3.4)
    s = 2.5
    m = torch.randn(shape, generator=_gen(19), dtype=F64)

    def G(z):
        return m + s * z

    z = torch.randn((3,) + shape, generator=_gen(20), dtype=F64)
    u = torch.randn((3,) + shape, generator=_gen(21), dtype=F64)
    np.testing.assert_allclose(Lambda_f(G, z).numpy(), s, rtol=1e-13)
    np.testing.assert_allclose(log_Lambda_f(G, z).numpy(), math.log(s), rtol=1e-13)
    np.testing.assert_allclose(lambda_f(G, z, u).numpy(), s, rtol=1e-14)
    np.testing.assert_allclose(mu_f(G, z, 1e-3 * u).numpy(), s, rtol=1e-9)
    for method in ("power", "svd"):
        sn = spectral_norm(G, z, method=method)
        np.testing.assert_allclose(sn.value.numpy(), s, rtol=1e-13)
        assert sn.vector.shape == z.shape


def test_singular_jacobian_gives_minus_inf():
    A = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=F64)  # rank 1
    x = torch.randn(2, 2, generator=_gen(22), dtype=F64)
    assert bool(torch.isneginf(log_Lambda_f(_linear(A), x)).all())
    assert bool((Lambda_f(_linear(A), x) == 0).all())
    zero = spectral_norm(lambda y: 0 * y, x)  # J = 0: value 0, converged
    assert bool((zero.value == 0).all()) and bool(zero.converged.all())


def test_log_Lambda_from_singular_values(A):
    f = _nonlinear(A)
    x = torch.randn(3, 5, generator=_gen(23), dtype=F64)
    svals = torch.linalg.svdvals(jacobian(f, x))
    np.testing.assert_allclose(log_Lambda_from_singular_values(svals).numpy(), log_Lambda_f(f, x).numpy(), rtol=1e-12)
    assert float(log_Lambda_from_singular_values([4.0, 1.0])) == pytest.approx(math.log(2.0))
    assert math.isinf(float(log_Lambda_from_singular_values([0.0, 3.0])))
    with pytest.raises(ValueError, match=r"^svals must be >= 0"):
        log_Lambda_from_singular_values([-1.0, 2.0])
    with pytest.raises(ValueError, match=r"^svals must be finite"):
        log_Lambda_from_singular_values([math.nan, 2.0])


def test_power_iteration_reports_non_convergence_and_is_reproducible(A):
    f = _nonlinear(A)
    x = torch.randn(2, 5, generator=_gen(24), dtype=F64)
    one = spectral_norm(f, x, iters=1)
    assert not bool(one.converged.any()) and one.iterations.tolist() == [1, 1]
    a = spectral_norm(f, x, generator=_gen(5))
    b = spectral_norm(f, x, generator=_gen(5))
    assert torch.equal(a.value, b.value) and torch.equal(a.vector, b.vector)
    assert torch.equal(spectral_norm(f, x).value, spectral_norm(f, x).value)


# ------------------------------------------------------------------ validation


def test_validation_errors(A):
    f = _linear(A)
    x = torch.randn(2, 5, generator=_gen(25), dtype=F64)
    u = torch.randn(2, 5, generator=_gen(26), dtype=F64)
    u0 = u.clone()
    u0[1] = 0
    with pytest.raises(ValueError, match=r"^u must be non-zero in every row"):
        lambda_f(f, x, u0)
    with pytest.raises(ValueError, match=r"^x and u must have the same shape"):
        lambda_f(f, x, u[:, :4])
    xn = x.clone()
    xn[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"^x must be finite"):
        lambda_f(f, xn, u)
    with pytest.raises(ValueError, match=r"^x must be finite"):
        spectral_norm(f, xn)
    with pytest.raises(ValueError, match=r"^x must be a torch.Tensor"):
        jacobian(f, x.numpy())
    with pytest.raises(ValueError, match=r"^x must have a real floating-point dtype"):
        mu_f(f, torch.ones(2, 5, dtype=torch.int64), u)
    with pytest.raises(ValueError, match=r"^u must be finite"):
        lambda_f(f, x, u * math.nan)
    with pytest.raises(ValueError, match=r"^delta must be non-zero in every row"):
        mu_f(f, x, u0)
    with pytest.raises(ValueError, match=r"^fx must be f\(x\)"):
        mu_f(f, x, u, fx=torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"^method must be 'power' or 'svd'"):
        spectral_norm(f, x, method="lanczos")
    with pytest.raises(ValueError, match=r"^iters must be >= 1"):
        spectral_norm(f, x, iters=0)
    with pytest.raises(ValueError, match=r"^tol must be > 0"):
        spectral_norm(f, x, tol=0.0)
    with pytest.raises(ValueError, match=r"^v0 must be non-zero in every row"):
        spectral_norm(f, x, v0=u0)
    with pytest.raises(ValueError, match=r"^generator must be a torch.Generator"):
        spectral_norm(f, x, generator=3)
    with pytest.raises(ValueError, match=r"^f must have a square Jacobian"):
        log_Lambda_f(lambda y: y[:, :3], x)
    with pytest.raises(ValueError, match=r"^f must map a batch"):
        lambda_f(lambda y: y.sum(), x, u)


# ------------------------------------------------------------------ properties (hypothesis)

_entries = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, allow_infinity=False)


@st.composite
def _matrix_and_direction(draw):
    n = draw(st.integers(min_value=1, max_value=4))
    A = np.array(draw(st.lists(_entries, min_size=n * n, max_size=n * n)), dtype=float).reshape(n, n)
    u = np.array(draw(st.lists(_entries, min_size=n, max_size=n)), dtype=float)
    if np.linalg.norm(u) < 0.1:
        u[0] = 1.0
    return A, u


@settings(max_examples=40, deadline=None)
@given(_matrix_and_direction())
def test_spectral_norm_bounds_lambda_and_Lambda(data):
    A_np, u_np = data
    A = torch.tensor(A_np)
    n = A.shape[0]
    f = _nonlinear(A)
    x = torch.linspace(-1.0, 1.0, n, dtype=F64).reshape(1, n)
    u = torch.tensor(u_np).reshape(1, n)
    sv = spectral_norm(f, x, method="svd").value
    lam = lambda_f(f, x, u)
    Lam = Lambda_f(f, x)
    assert float(sv[0]) >= float(lam[0]) * (1 - 1e-12) - 1e-12
    assert float(sv[0]) >= float(Lam[0]) * (1 - 1e-12) - 1e-12
    # the power estimate ||J v|| (v unit) never exceeds the spectral norm
    pw = spectral_norm(f, x, iters=50).value
    assert float(pw[0]) <= float(sv[0]) * (1 + 1e-12) + 1e-12


@settings(max_examples=40, deadline=None)
@given(_matrix_and_direction(), st.floats(min_value=1e-6, max_value=1e3))
def test_linear_mu_is_lambda_property(data, size):
    A_np, u_np = data
    A = torch.tensor(A_np)
    n = A.shape[0]
    x = torch.ones(1, n, dtype=F64)
    d = size * torch.tensor(u_np).reshape(1, n)
    mu = float(mu_f(_linear(A), x, d)[0])
    lam = float(lambda_f(_linear(A), x, d)[0])
    # exact up to the rounding of f and of x + D (relative eps * ||x|| / ||D||)
    eps = np.finfo(float).eps
    tol = 10 * eps * float(np.linalg.norm(A_np, 2)) * (1 + float(x.norm()) / float(d.norm()))
    assert abs(mu - lam) <= tol
