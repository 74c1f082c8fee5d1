"""theory.coefficients with a caller's JVP, row chunks and its one rounding convention (float64
norms and determinant; docs/theory.md §2.1, §2.3, §9.1, §9.3, §12): the one implementation that
simulate and largemodel share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory.coefficients import jacobian, jacobian_forward, lambda_f, log_Lambda_f

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _map(A: torch.Tensor):
    """Row-wise, nonlinear, on inputs of shape (B, 2, 3)."""
    return lambda x: (torch.tanh(x.reshape(x.shape[0], -1) @ A.T) + x.reshape(x.shape[0], -1) ** 3 / 3).reshape(x.shape)


class _CountingJvp:
    """A JVP function of the signature of torch.func.jvp that records its batch sizes."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def __call__(self, func, primals, tangents):
        self.rows.append(primals[0].shape[0])
        return torch.func.jvp(func, primals, tangents)


@pytest.fixture
def A() -> torch.Tensor:
    return torch.randn(6, 6, generator=_gen(1), dtype=F64)


def test_lambda_f_with_a_callers_jvp_and_chunks_is_the_same_number(A):
    f = _map(A)
    x = torch.randn(7, 2, 3, generator=_gen(2), dtype=F64)
    u = torch.randn(7, 2, 3, generator=_gen(3), dtype=F64)
    whole = lambda_f(f, x, u)
    for batch_size, calls in ((None, [7]), (3, [3, 3, 1]), (7, [7]), (100, [7])):
        jvp = _CountingJvp()
        got = lambda_f(f, x, u, jvp=jvp, batch_size=batch_size)
        assert jvp.rows == calls
        np.testing.assert_allclose(got.numpy(), whole.numpy(), rtol=1e-14)  # BLAS may round by batch size
    # the reverse mode (double backward) is an independent derivative: same values
    np.testing.assert_allclose(lambda_f(f, x, u, mode="reverse", batch_size=2).numpy(), whole.numpy(), rtol=1e-13)
    # closed form through the Jacobian
    jac = jacobian(f, x)
    ju = torch.einsum("bij,bj->bi", jac, u.reshape(7, 6))
    np.testing.assert_allclose(whole.numpy(), (ju.norm(dim=1) / u.reshape(7, 6).norm(dim=1)).numpy(), rtol=1e-12)


def test_lambda_f_of_a_float32_map_has_float64_norms(A):
    """The one convention: the map runs in float32, the norms are accumulated in float64."""
    f = _map(A.float())
    x = torch.randn(4, 2, 3, generator=_gen(4)).float()
    u = torch.randn(4, 2, 3, generator=_gen(5)).float()
    lam = lambda_f(f, x, u)
    assert lam.dtype == F64
    _, ju = torch.func.jvp(f, (x,), (u,))  # the same float32 JVP, norms by hand in float64
    ref = ju.double().flatten(1).norm(dim=1) / u.double().flatten(1).norm(dim=1)
    torch.testing.assert_close(lam, ref, rtol=1e-15, atol=0)
    # and the float64 map gives the same number to float32 rounding of the JVP
    lam_64 = lambda_f(_map(A), x.double(), u.double())
    np.testing.assert_allclose(lam.numpy(), lam_64.numpy(), rtol=1e-5)


def test_jacobian_forward_agrees_with_reverse_mode_jacobian(A):
    f = _map(A)
    x = torch.randn(3, 2, 3, generator=_gen(6), dtype=F64)
    ref = jacobian(f, x)  # vectorised VJPs: an independent route
    for chunk, calls in ((1, [3] * 6), (4, [12, 6]), (64, [18]), (None, [18])):
        jvp = _CountingJvp()
        jac = jacobian_forward(f, x, jvp=jvp, chunk=chunk)
        assert jvp.rows == calls and jac.shape == (3, 6, 6)
        np.testing.assert_allclose(jac.numpy(), ref.numpy(), rtol=1e-13, atol=1e-15)


def test_log_Lambda_f_forward_columns_and_float64_determinant(A):
    f = _map(A)
    x = torch.randn(3, 2, 3, generator=_gen(7), dtype=F64)
    ref = log_Lambda_f(f, x)
    for chunk in (1, 5, None):
        got = log_Lambda_f(f, x, jvp=_CountingJvp(), chunk=chunk)
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-12)
    # closed form for a linear map: log |det A| / n
    lin = lambda y: (y.reshape(y.shape[0], -1) @ A.T).reshape(y.shape)  # noqa: E731
    expected = np.linalg.slogdet(A.numpy())[1] / 6
    np.testing.assert_allclose(log_Lambda_f(lin, x, chunk=2).numpy(), np.full(3, expected), rtol=1e-13)
    # float32 columns, slogdet in float64 (the one convention)
    got = log_Lambda_f(_map(A.float()), x.float(), chunk=4)
    assert got.dtype == F64
    jac32 = jacobian_forward(_map(A.float()), x.float(), chunk=4)
    torch.testing.assert_close(got, torch.linalg.slogdet(jac32.double())[1] / 6, rtol=1e-15, atol=0)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4)


def test_validation_of_the_new_options(A):
    f = _map(A)
    x = torch.randn(2, 2, 3, generator=_gen(8), dtype=F64)
    u = torch.ones_like(x)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        lambda_f(f, x, u, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        lambda_f(f, x, u, batch_size=1.5)
    with pytest.raises(ValueError, match="mode='forward' only"):
        lambda_f(f, x, u, mode="reverse", jvp=torch.func.jvp)
    with pytest.raises(ValueError, match="mode must be"):
        lambda_f(f, x, u, mode="sideways")
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        log_Lambda_f(f, x, chunk=0)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        jacobian_forward(f, x, chunk=-3)
    with pytest.raises(ValueError, match="square Jacobian"):
        log_Lambda_f(lambda y: y.reshape(y.shape[0], -1)[:, :4], x, chunk=3)
