"""Instability estimators on the simulator's generation maps (closed forms and agreement)."""

from __future__ import annotations

import math

import pytest
import torch

from simulate import BoxMixture, Gaussian, GaussianMixture
from simulate.instability import LAMBDA_METHODS, averaged_instability, lambda_G, log_Lambda_G, spectral_norm_G

DT = torch.float64
RK4 = {"solver": "rk4", "steps": 40}


def _gaussian() -> Gaussian:
    return Gaussian(torch.tensor([1.0, -2.0, 0.5], dtype=DT), 0.3)


def _mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=DT)
    return GaussianMixture(means, 0.3, torch.tensor([0.3, 0.3, 0.4], dtype=DT))


def _boxes() -> BoxMixture:
    lower = torch.tensor([[0.1, 0.1], [0.6, 0.6]], dtype=DT)
    upper = torch.tensor([[0.3, 0.3], [0.8, 0.8]], dtype=DT)
    return BoxMixture(lower, upper, torch.tensor([0.5, 0.5], dtype=DT), 0.05)


def test_single_gaussian_closed_forms() -> None:
    """G(z) = mu + s z: lambda = ||J||_2 = Lambda = mu_bar = s for every z, u."""
    g = _gaussian()
    RK4 = {"solver": "rk4", "steps": 200}  # RK4 error ~1e-10 on the curved Gaussian flow
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, generator=gen, dtype=DT)
    u = torch.randn(5, 3, generator=gen, dtype=DT)
    s = 0.3
    for method in LAMBDA_METHODS:
        torch.testing.assert_close(log_Lambda_G(g, z, method=method, **RK4), torch.full((5,), math.log(s), dtype=DT), rtol=0, atol=1e-9)
    torch.testing.assert_close(lambda_G(g, z, u, **RK4), torch.full((5,), s, dtype=DT), rtol=1e-9, atol=0)
    torch.testing.assert_close(lambda_G(g, z, u, method="fd", **RK4), torch.full((5,), s, dtype=DT), rtol=1e-8, atol=0)
    torch.testing.assert_close(spectral_norm_G(g, z, **RK4).value, torch.full((5,), s, dtype=DT), rtol=1e-8, atol=0)
    torch.testing.assert_close(averaged_instability(g, z, num_perturbations=4, eps=0.1, **RK4), torch.full((5,), s, dtype=DT), rtol=1e-8, atol=0)


@pytest.mark.parametrize("field_fn", [_mixture, _boxes])
def test_three_lambda_methods_agree(field_fn) -> None:
    """Lemma D.1: density ratio = divergence integral = slogdet of the Jacobian (accurate solves)."""
    field = field_fn()
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    opts = {"solver": "dopri5", "rtol": 1e-10, "atol": 1e-12}
    ratio = log_Lambda_G(field, z, method="density_ratio", **opts)
    div = log_Lambda_G(field, z, method="divergence", **opts)
    torch.testing.assert_close(div, ratio, rtol=0, atol=1e-7)
    slog = log_Lambda_G(field, z, method="slogdet", **RK4 | {"steps": 200})
    torch.testing.assert_close(slog, ratio, rtol=0, atol=1e-5)


def test_jvp_modes_and_finite_differences_agree() -> None:
    field = _mixture()
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(4, 2, generator=gen, dtype=DT)
    u = torch.randn(4, 2, generator=gen, dtype=DT)
    rev = lambda_G(field, z, u, mode="reverse", **RK4)
    fwd = lambda_G(field, z, u, mode="forward", **RK4)
    fd = lambda_G(field, z, u, method="fd", fd_step=1e-6, **RK4)
    torch.testing.assert_close(rev, fwd, rtol=1e-12, atol=0)
    torch.testing.assert_close(fd, rev, rtol=1e-6, atol=0)


def test_spectral_norm_bounds_lambda_and_Lambda() -> None:
    field = _mixture()
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(3, 2, generator=gen, dtype=DT)
    sn = spectral_norm_G(field, z, **RK4).value
    for _ in range(3):
        u = torch.randn(3, 2, generator=gen, dtype=DT)
        assert torch.all(lambda_G(field, z, u, **RK4) <= sn * (1 + 1e-8))
    assert torch.all(log_Lambda_G(field, z, **RK4) <= torch.log(sn) + 1e-8)


def test_averaged_instability_tends_to_mean_lambda() -> None:
    """For small eps, mu(z, eps d) -> lambda(z, d); averaged over the same directions."""
    field = _mixture()
    z = torch.randn(2, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    big = averaged_instability(field, z, num_perturbations=64, eps=1e-6, generator=torch.Generator().manual_seed(5), **RK4)
    sn = spectral_norm_G(field, z, **RK4).value
    assert torch.all(big <= sn * (1 + 1e-4))
    assert torch.all(big >= torch.exp(log_Lambda_G(field, z, **RK4)) * 0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, z: lambda_G(f, z, z, method="nope"), "method"),
        (lambda f, z: lambda_G(f, z, z, method="fd", fd_step=0.0), "fd_step"),
        (lambda f, z: averaged_instability(f, z, num_perturbations=0), "num_perturbations"),
        (lambda f, z: averaged_instability(f, z, eps=-1.0), "eps"),
        (lambda f, z: log_Lambda_G(f, z, method="nope"), "method"),
    ],
)
def test_bad_input(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(_gaussian(), torch.zeros(2, 3, dtype=DT))
