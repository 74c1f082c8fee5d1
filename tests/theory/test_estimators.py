"""One implementation per estimator (issue 18): ``theory.power_iteration`` and ``theory.estimators``,
checked against closed forms, and the large model's power iteration checked for convergence to the
SVD of its full Jacobian."""

from __future__ import annotations


import pytest
import torch

from largemodel.study import instability as ins
from largemodel.study import ode
from largemodel.models.load import load_model, math_attention
from largemodel.models.tiny import build_tiny_folder
from simulate.instability import averaged_instability as sim_averaged_instability
from theory.estimators import (
    averaged_instability,
    central_difference_from_outputs,
    central_difference_lambda,
    central_difference_rows,
    mu_from_outputs,
    perturbed_rows,
    unit_directions,
)
from theory.power_iteration import SpectralNorm, power_iteration

DT = torch.float64


class _Matrices:
    """``J = A_b`` per row: a LinearOperator with a known SVD."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", self.a, v)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bi->bj", self.a, w)


def _unit(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    d = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return d / torch.linalg.vector_norm(d.reshape(shape[0], -1), dim=1).reshape(-1, *([1] * (len(shape) - 1)))


def test_power_iteration_converges_to_sigma_1_and_stops_per_row() -> None:
    a = torch.randn(4, 7, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
    top = torch.linalg.svdvals(a)[:, 0]
    sn = power_iteration(_Matrices(a), _unit((4, 5), 1), iters=2000, tol=1e-14)
    assert isinstance(sn, SpectralNorm) and bool(sn.converged.all())
    torch.testing.assert_close(sn.value, top, rtol=1e-12, atol=0)
    # the vector is a top right singular vector: ||A v|| = sigma_1, ||v|| = 1
    torch.testing.assert_close(torch.linalg.vector_norm(torch.einsum("bij,bj->bi", a, sn.vector), dim=1), top,
                               rtol=1e-6, atol=0)
    assert bool((sn.history.diff(dim=0)[:, :] >= -1e-12 * top).all())  # monotone increase (Rayleigh quotient)
    assert sn.history.shape[0] == int(sn.iterations.max())
    # without a tolerance: exactly `iters` iterations, nothing marked converged
    fixed = power_iteration(_Matrices(a), _unit((4, 5), 1), iters=7)
    assert fixed.history.shape == (7, 4) and not bool(fixed.converged.any())
    assert bool((fixed.iterations == 7).all())


def test_power_iteration_of_a_float32_operator_estimates_in_float64() -> None:
    """The one convention (docs/theory.md §12): vectors in the operator's dtype, norms in float64."""
    a64 = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(2), dtype=DT)
    a = a64.float()
    v = _unit((3, 6), 3).to(torch.float32)
    sn = power_iteration(_Matrices(a), v, iters=200)
    assert sn.value.dtype == DT and sn.history.dtype == DT and sn.vector.dtype == torch.float32
    top = torch.linalg.svdvals(a.double())[:, 0]  # the float32 matrices' exact sigma_1
    torch.testing.assert_close(sn.value, top, rtol=1e-5, atol=0)
    # the last estimate is ||A v_199|| (v_199: the iterate after 199 steps), accumulated in float64
    v199 = power_iteration(_Matrices(a), v, iters=199).vector
    want = torch.linalg.vector_norm(torch.einsum("bij,bj->bi", a, v199).double(), dim=1)
    torch.testing.assert_close(sn.history[-1], want, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="iters"):
        power_iteration(_Matrices(a), v, iters=0)


def test_averaged_instability_eps_is_the_perturbation_norm() -> None:
    """``G(z) = z * z`` at ``z = 0``: ``mu_k = ||eps^2 d_k^2|| / eps = eps ||d_k^2||`` only if ``||D|| = eps``."""
    z = torch.zeros(2, 5, dtype=DT)
    d = _unit((2, 3, 5), 4)
    for eps in (1e-1, 1e-3):
        mu = averaged_instability(lambda y: y * y, z, d, eps)
        torch.testing.assert_close(mu, eps * torch.linalg.vector_norm(d * d, dim=-1), rtol=1e-12, atol=0)


def test_averaged_instability_linear_map() -> None:
    """For ``G(z) = A z`` every ``mu_k = ||A d_k||`` (Sec. 2.2), whatever ``z`` and ``eps``."""
    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(5), dtype=DT)
    G = lambda y: y @ a.T  # noqa: E731
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(6), dtype=DT)
    d = _unit((3 * 4, 5), 7).view(3, 4, 5)
    want = torch.linalg.vector_norm(d @ a.T, dim=-1)
    mu = averaged_instability(G, z, d, 1e-2)
    torch.testing.assert_close(mu, want, rtol=1e-9, atol=0)
    # row b K + k of the perturbed batch is z_b + eps d_bk (sample-major)
    rows = perturbed_rows(z, d, 1e-2)
    torch.testing.assert_close(rows[1 * 4 + 2], z[1] + 1e-2 * d[1, 2], rtol=0, atol=0)
    # rows / from-outputs split = the full estimator (with gz given)
    with_gz = averaged_instability(G, z, d, 1e-2, gz=G(z))
    torch.testing.assert_close(mu_from_outputs(G(rows), G(z), 1e-2), with_gz, rtol=0, atol=0)
    # a float32 map: the outputs are compared in float64, the result is float64
    a32 = a.float()
    mu32 = averaged_instability(lambda y: y @ a32.T, z.float(), d.float(), 1e-2)
    assert mu32.dtype == DT
    torch.testing.assert_close(mu32, want, rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="eps"):
        perturbed_rows(z, d, 0.0)
    with pytest.raises(ValueError, match="do not match"):
        perturbed_rows(z, d[:2], 1e-2)
    with pytest.raises(ValueError, match="do not match"):
        perturbed_rows(z, d.transpose(0, 1), 1e-2)  # (K, B, n): one row order only


def test_unit_directions_are_float64_draws_on_the_unit_sphere() -> None:
    """Same seed, same directions whatever the target dtype; unit rows; the draw is plain float64 randn."""
    like32 = torch.zeros(1, dtype=torch.float32)
    d64 = unit_directions((6, 2, 3), torch.Generator().manual_seed(3), torch.zeros(1, dtype=DT))
    d32 = unit_directions((6, 2, 3), torch.Generator().manual_seed(3), like32)
    assert d64.dtype == DT and d32.dtype == torch.float32 and d64.shape == (6, 2, 3)
    raw = torch.randn((6, 2, 3), generator=torch.Generator().manual_seed(3), dtype=DT)
    torch.testing.assert_close(d64, raw / raw.flatten(1).norm(dim=1).view(6, 1, 1), rtol=1e-15, atol=0)
    torch.testing.assert_close(d32, d64.float(), rtol=0, atol=0)
    torch.testing.assert_close(d64.flatten(1).norm(dim=1), torch.ones(6, dtype=DT), rtol=1e-15, atol=0)


def test_central_differences_exact_on_a_quadratic_map() -> None:
    """``G(z) = z * z``: ``(G(z + h u) - G(z - h u)) / (2h) = 2 z u = J u`` exactly (no ``h^2`` term)."""
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(8), dtype=DT)
    u = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9), dtype=DT)
    u_hat = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    want = torch.linalg.vector_norm(2 * z.unsqueeze(1) * u_hat, dim=-1)
    got = central_difference_lambda(lambda y: y * y, z, u, 1e-3)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    rows = central_difference_rows(z, u, 1e-3)
    # rows interleave (b, k, +), (b, k, -)
    torch.testing.assert_close(rows[2 * (1 * 3 + 2) + 1], z[1] - 1e-3 * u_hat[1, 2], rtol=1e-15, atol=0)
    torch.testing.assert_close(central_difference_from_outputs(rows * rows, 1e-3, 2, 3), got, rtol=0, atol=0)


def test_simulate_adapter_is_the_shared_estimator_with_eps_the_norm() -> None:
    """``simulate.instability.averaged_instability(eps=r)`` is the mean over ``k`` of the shared
    estimator at ``||D|| = r``, with the shared direction draw ``(B K, n)`` viewed as ``(B, K, n)``."""
    from simulate import GaussianMixture
    from simulate.instability import generation_map

    field = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=DT), 0.3, torch.tensor([0.5, 0.5], dtype=DT))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(11), dtype=DT)
    opts = {"solver": "rk4", "steps": 10}
    got = sim_averaged_instability(field, z, num_perturbations=5, eps=0.05, generator=torch.Generator().manual_seed(12), **opts)
    d = torch.randn((3 * 5, 2), generator=torch.Generator().manual_seed(12), dtype=DT)
    d = (d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)).view(3, 5, 2)
    want = averaged_instability(generation_map(field, **opts), z, d, 0.05).mean(1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.usefixtures("single_thread")
def test_largemodel_power_iteration_converges_to_the_jacobian_svd(tmp_path) -> None:
    """``largemodel.study.instability.spectral_norm_G`` (the shared power iteration on the regeneration's
    linearization) reaches ``sigma_1`` of the full Jacobian, and the explain route agrees."""
    folder = build_tiny_folder(tmp_path / "sd35", "sd3.5", with_vae=False)
    m = load_model(folder, device="cpu", dtype="float64", state_dtype=torch.float64)
    s = m.sigmas(3)
    x = torch.rand((1, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=DT) * 2 - 1
    z = ode.invert(m.velocity, x, s)
    with math_attention():
        jac = torch.func.jacfwd(lambda y: ode.generate(m.velocity, y.view(1, 3, 8, 8), s).flatten())(z.flatten())
    sv = torch.linalg.svdvals(jac)
    sn = ins.spectral_norm_G(m.velocity, z, s, iters=20, generator=torch.Generator().manual_seed(0))
    # the estimate ||J v_k|| rises monotonically to sigma_1 at the rate (sigma_2 / sigma_1)^(2k) (docs/theory.md §9.2);
    # the constant (start vector's angle to v1) is at most n for a random start
    n, gap = z[0].numel(), float(sv[1] / sv[0])
    err = (float(sv[0]) - sn.history[:, 0]) / float(sv[0])
    rate = torch.tensor([gap ** (2 * k) for k in range(1, 21)], dtype=DT)
    assert bool((err >= -1e-12).all()) and bool((err <= n * rate).all())
    assert float(err[-1]) < 0.05 and float(err[-1]) < float(err[4]) / 3
    assert bool((sn.history.diff(dim=0) >= -1e-12).all())
    # the top singular vector: ||J v|| = ||J v_k|| = the estimate
    torch.testing.assert_close((jac @ sn.vector.flatten()).norm(), sn.value[0], rtol=0.05, atol=0)
    # a shorter run of the same seeded iteration is the prefix of the longer one
    short = ins.spectral_norm_G(m.velocity, z, s, iters=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(short.history, sn.history[:5], rtol=1e-12, atol=0)
