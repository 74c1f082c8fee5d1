"""Tests of theory.prop21 (docs/theory.md §2.4: Proposition 2.1 and instability at x)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.coefficients import lambda_f, mu_f, spectral_norm
from theory.prop21 import Instability, Prop21Check, check_proposition_21, default_scales, instability_at

# torch's forward-mode AD scripts its JVP decompositions on first use (a torch-internal warning)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nonlinear(A: torch.Tensor):
    return lambda x: torch.tanh(x @ A.T) + x**3 / 3


def _svd_norm(f, x) -> np.ndarray:
    return spectral_norm(f, x, method="svd").value.numpy()


def test_default_scales():
    s64, s32 = default_scales(torch.float64), default_scales(torch.float32)
    np.testing.assert_allclose(s64.numpy(), np.logspace(-1, -7, 13))
    np.testing.assert_allclose(s32.numpy(), np.logspace(-1, -3, 5))


def test_linear_map_mu_equals_lambda_at_every_scale():
    A = torch.randn(5, 5, generator=_gen(1), dtype=F64)
    f = lambda x: x @ A.T  # noqa: E731
    x = torch.randn(3, 5, generator=_gen(2), dtype=F64)
    c = check_proposition_21(f, x)
    assert isinstance(c, Prop21Check)
    S = len(c.scales)
    assert c.mu_u.shape == (3, S) and c.errors.shape == (3, S) and c.lambda_u.shape == (3,)
    u = c.direction.numpy()
    np.testing.assert_allclose(c.lambda_u.numpy(), np.linalg.norm(u @ A.numpy().T, axis=1), rtol=1e-13)
    # affine: the error is round-off only, never truncation
    assert bool((c.errors <= 10 * c.roundoff + 1e-14).all())
    assert not bool(c.truncation_dominated.any())
    assert bool(torch.isnan(c.order).all())
    assert bool(c.converged.all()) and bool(c.holds.all()) and bool(c.verified.all())
    smax = np.linalg.svd(A.numpy(), compute_uv=False)[0]
    np.testing.assert_allclose(c.spectral_norm.numpy(), smax, rtol=1e-9)
    np.testing.assert_allclose(c.max_mu.numpy(), smax, rtol=1e-6)


def test_nonlinear_map_converges_linearly():
    A = torch.randn(4, 4, generator=_gen(3), dtype=F64)
    f = _nonlinear(A)
    x = torch.randn(3, 4, generator=_gen(4), dtype=F64)
    c = check_proposition_21(f, x)
    assert bool(c.converged.all())
    assert bool(((c.order > 0.9) & (c.order < 1.1)).all()), c.order
    # errors shrink by about 10 per decade of s (order 1) in the truncation-dominated range
    s = c.scales.numpy()
    i, j = int(np.argmin(abs(s - 1e-3))), int(np.argmin(abs(s - 1e-5)))
    ratio = (c.errors[:, i] / c.errors[:, j]).numpy()
    np.testing.assert_allclose(ratio, 100.0, rtol=0.05)
    assert bool((c.min_error <= c.tol).all())
    assert float(c.min_error.max()) < 1e-5
    # mu_u agrees with theory.coefficients.mu_f at the same perturbations
    for k in (0, 6):
        d = c.steps[:, k : k + 1] * c.direction
        np.testing.assert_allclose(mu_f(f, x, d).numpy(), c.mu_u[:, k].numpy(), rtol=1e-7)
    np.testing.assert_allclose(c.lambda_u.numpy(), lambda_f(f, x, c.direction).numpy(), rtol=1e-14)
    # part (b): max over s of mu along v1 reaches the spectral norm
    np.testing.assert_allclose(c.spectral_norm.numpy(), _svd_norm(f, x), rtol=1e-8)
    assert bool(c.holds.all()) and bool(c.power_converged.all())
    assert bool((abs(c.mu_v1[:, -1] - c.spectral_norm) < 1e-5).all())


def test_user_direction_and_scales():
    A = torch.randn(3, 3, generator=_gen(5), dtype=F64)
    f = _nonlinear(A)
    x = 10 * torch.randn(2, 3, generator=_gen(6), dtype=F64)
    u = torch.randn(2, 3, generator=_gen(7), dtype=F64)
    c = check_proposition_21(f, x, u=u, scales=[1e-4, 1e-2, 1e-3], relative=False)
    np.testing.assert_allclose(c.scales.numpy(), [1e-2, 1e-3, 1e-4])
    np.testing.assert_allclose(c.steps.numpy(), np.tile([1e-2, 1e-3, 1e-4], (2, 1)))
    np.testing.assert_allclose(c.direction.numpy(), (u / u.norm(dim=1, keepdim=True)).numpy())
    rel = check_proposition_21(f, x, u=u, scales=[1e-2])
    np.testing.assert_allclose(rel.steps[:, 0].numpy(), 1e-2 * x.norm(dim=1).numpy())


def test_contraction_is_stable_and_expansion_unstable():
    x = torch.randn(3, 4, generator=_gen(8), dtype=F64)
    half = check_proposition_21(lambda y: 0.5 * y, x)
    assert not bool(half.unstable.any()) and not bool(half.guaranteed_unstable.any())
    np.testing.assert_allclose(half.max_mu_found.numpy(), 0.5, rtol=1e-9)
    assert bool(half.verified.all())
    # a nonlinear contraction: ||J|| <= 0.5 everywhere, so mu <= 0.5 for every D
    tanh_half = check_proposition_21(lambda y: 0.5 * torch.tanh(y), x)
    assert not bool(tanh_half.unstable.any()) and bool((tanh_half.max_mu_found <= 0.5).all())
    assert bool(tanh_half.verified.all())

    A = torch.randn(4, 4, generator=_gen(9), dtype=F64)
    f = _nonlinear(A)
    big = check_proposition_21(f, x)
    assert bool((big.spectral_norm > 1).all())
    assert bool(big.unstable.all()) and bool(big.guaranteed_unstable.all())
    assert bool(big.verified.all())

    inst = instability_at(f, x, directions=2)
    assert isinstance(inst, Instability)
    assert bool(inst.unstable.all()) and bool(inst.guaranteed_unstable.all())
    np.testing.assert_allclose(mu_f(f, x, inst.delta).numpy(), inst.max_mu.numpy(), rtol=1e-8)
    assert bool((inst.max_mu >= inst.spectral_norm - 1e-3).all())
    calm = instability_at(lambda y: 0.5 * y, x)
    assert not bool(calm.unstable.any()) and not bool(calm.guaranteed_unstable.any())


def test_mixed_batch_flags_each_row():
    # row 0 contracts (small x: J ~ 0.3 I), row 1 expands (large x: the cube dominates)
    f = lambda y: 0.3 * y + y**3  # noqa: E731
    x = torch.tensor([[0.01, -0.02, 0.0], [2.0, 1.0, -1.5]], dtype=F64)
    c = check_proposition_21(f, x)
    assert c.unstable.tolist() == [False, True]
    assert c.guaranteed_unstable.tolist() == [False, True]
    assert bool(c.verified.all())


@pytest.mark.parametrize("s, unstable", [(2.5, True), (0.4, False)])
def test_single_gaussian_generation_map(s, unstable):
    m = torch.randn(2, 3, generator=_gen(10), dtype=F64)
    G = lambda z: m + s * z  # noqa: E731  (p_g = N(m, s^2 I))
    z = torch.randn(4, 2, 3, generator=_gen(11), dtype=F64)
    c = check_proposition_21(G, z)
    np.testing.assert_allclose(c.lambda_u.numpy(), s, rtol=1e-13)
    np.testing.assert_allclose(c.spectral_norm.numpy(), s, rtol=1e-12)
    np.testing.assert_allclose(c.mu_u.numpy(), s, rtol=1e-6)
    assert c.v1.shape == z.shape
    assert bool(c.verified.all())
    assert c.unstable.tolist() == [unstable] * 4


def test_rows_are_independent():
    A = torch.randn(4, 4, generator=_gen(12), dtype=F64)
    f = _nonlinear(A)
    x = torch.randn(3, 4, generator=_gen(13), dtype=F64) * torch.tensor([[0.3], [1.0], [2.0]], dtype=F64)
    u = torch.randn(3, 4, generator=_gen(14), dtype=F64)
    c = check_proposition_21(f, x, u=u)
    for b in range(3):
        one = check_proposition_21(f, x[b : b + 1], u=u[b : b + 1])
        # same values up to round-off (BLAS may round a batch of 1 and of 3 differently;
        # the finite difference amplifies that by 1/||D||, which the round-off model bounds)
        np.testing.assert_allclose(one.lambda_u.numpy(), c.lambda_u[b : b + 1].numpy(), rtol=1e-14)
        diff = (one.mu_u - c.mu_u[b : b + 1]).abs()
        assert bool((diff <= 2 * c.roundoff[b : b + 1]).all())
        # (the borderline smallest scale may enter the fit in one run only)
        np.testing.assert_allclose(one.order.numpy(), c.order[b : b + 1].numpy(), atol=1e-2)
        # the power iteration starts from another random vector: same limit
        np.testing.assert_allclose(one.spectral_norm.numpy(), c.spectral_norm[b : b + 1].numpy(), rtol=1e-8)
        assert one.converged.tolist() == c.converged[b : b + 1].tolist()
        assert one.holds.tolist() == c.holds[b : b + 1].tolist()
        assert one.unstable.tolist() == c.unstable[b : b + 1].tolist()


def test_float32():
    A = torch.randn(4, 4, generator=_gen(15), dtype=F64)
    x64 = torch.randn(3, 4, generator=_gen(16), dtype=F64)
    c = check_proposition_21(_nonlinear(A.float()), x64.float())
    # the finite differences in the map's dtype, the shared power iteration's estimate in float64
    assert c.mu_u.dtype == torch.float32 and c.spectral_norm.dtype == F64
    assert len(c.scales) == 5
    assert bool(c.verified.all())
    assert bool(((c.order > 0.7) & (c.order < 1.3)).all()), c.order
    np.testing.assert_allclose(c.spectral_norm.numpy(), _svd_norm(_nonlinear(A), x64), rtol=1e-5)


def test_validation_errors():
    f = lambda y: 2 * y  # noqa: E731
    x = torch.randn(2, 3, generator=_gen(17), dtype=F64)
    u0 = torch.zeros(2, 3, dtype=F64)
    u0[0, 0] = 1
    with pytest.raises(ValueError, match=r"^u must be non-zero in every row"):
        check_proposition_21(f, x, u=u0)
    with pytest.raises(ValueError, match=r"^x and u must have the same shape"):
        check_proposition_21(f, x, u=torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"^x must be finite"):
        check_proposition_21(f, x * math.nan)
    with pytest.raises(ValueError, match=r"^eps must be > 0"):
        check_proposition_21(f, x, eps=0.0)
    with pytest.raises(ValueError, match=r"^scales must be > 0"):
        check_proposition_21(f, x, scales=[1e-2, -1e-3])
    with pytest.raises(ValueError, match=r"^scales must hold at least one value"):
        check_proposition_21(f, x, scales=[])
    with pytest.raises(ValueError, match=r"^tol must be > 0"):
        check_proposition_21(f, x, tol=-1.0)
    with pytest.raises(ValueError, match=r"^x must be finite"):
        instability_at(f, x * math.inf)
    with pytest.raises(ValueError, match=r"^directions must be >= 0"):
        instability_at(f, x, directions=-1)


# ------------------------------------------------------------------ property (hypothesis)

_entries = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=4).flatmap(lambda n: st.lists(_entries, min_size=n * n, max_size=n * n)))
def test_part_b_holds_for_random_maps(entries):
    n = math.isqrt(len(entries))
    A = torch.tensor(entries, dtype=F64).reshape(n, n)
    f = _nonlinear(A)
    x = torch.linspace(-1.0, 0.5, n, dtype=F64).reshape(1, n)
    c = check_proposition_21(f, x, power_iters=2000)
    true_norm = float(_svd_norm(f, x)[0])
    assert bool(c.holds[0])
    # judged against the exact norm, not only against the power-iteration estimate
    assert float(c.max_mu[0]) >= true_norm - 1e-3
    assert bool(c.unstable[0]) == (float(c.max_mu_found[0]) > 1)
    if true_norm > 1.01:
        assert bool(c.unstable[0])
