"""Tests of simulate.maps (G, F, reconstruction) and simulate.inversion (exact inversion).

Closed forms: the single-Gaussian flow-matching field of ``N(mu, s^2 I)`` has
``G(z) = mu + s z``, ``F(x) = (x - mu) / s``, ``log |det J_G| = n log s``. The nonlinear
2-D two-Gaussian mixture field (``v = sum_i pi_i v_i``, posterior weights ``pi_i``) checks
Lemma D.1 (``log |det J_G(z)| = log phi(z) - log p_g(G(z))``) and the inversion baselines.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from simulate.inversion import InversionResult, invert_fixed_point
from simulate.maps import INVERSION_METHODS, SOLVER_NAMES, Reconstruction, generate, invert, reconstruct
from simulate.solvers import SOLVERS, SolveResult, euler, time_grid

from analytic_fields import GaussianField, LinearField, MixtureField  # noqa: E402


class _VelocityOnly:
    """A field without a divergence (logdet must be refused)."""

    def velocity(self, x, t):
        return -x

MU = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
S = 0.5


def gaussian():
    return GaussianField(MU, S)


def mixture():
    return MixtureField(
        torch.tensor([0.4, 0.6], dtype=torch.float64),
        torch.tensor([[-2.0, 0.5], [2.0, -0.5]], dtype=torch.float64),
        torch.tensor([0.3, 0.45], dtype=torch.float64),
    )


def noise(b, n, seed=0, dtype=torch.float64):
    return torch.randn(b, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _maxerr(a, b):
    return float(torch.linalg.vector_norm(a.double() - b.double(), dim=1).max())


# ------------------------------------------------------------------------------------------
# G and F on the single Gaussian
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "solver,steps,tol",
    [("dopri5", 100, 1e-7), ("rk4", 100, 1e-7), ("heun", 400, 1e-4), ("euler", 2000, 5e-3)],
)
def test_generate_and_invert_single_gaussian(solver, steps, tol):
    f = gaussian()
    z = noise(8, 4)
    n = z.shape[1]
    g = generate(f, z, solver=solver, steps=steps, logdet=True)
    assert isinstance(g, SolveResult)
    assert _maxerr(g.x, MU + S * z) < tol
    assert torch.allclose(g.logdet, torch.full((8,), n * math.log(S), dtype=torch.float64), atol=tol)
    x = MU + S * z
    inv = invert(f, x, solver=solver, steps=steps, logdet=True)
    assert _maxerr(inv.x, (x - MU) / S) < 2 * tol / S
    assert torch.allclose(inv.logdet, torch.full((8,), -n * math.log(S), dtype=torch.float64), atol=tol)


def test_default_maps_are_exact_and_reconstruct():
    f = gaussian()
    z = noise(16, 4, seed=1)
    x = MU + S * z
    assert _maxerr(generate(f, z).x, x) < 1e-7
    assert _maxerr(invert(f, x).x, z) < 1e-7
    rec = reconstruct(f, x)
    assert isinstance(rec, Reconstruction)
    assert rec.z.shape == x.shape and rec.x_hat.shape == x.shape and rec.error.shape == (16,)
    assert _maxerr(rec.z, z) < 1e-7
    assert float(rec.error.max()) < 1e-7
    assert torch.allclose(rec.error, torch.linalg.vector_norm(rec.x_hat - x, dim=1))
    assert isinstance(rec.inversion, SolveResult) and isinstance(rec.generation, SolveResult)
    assert rec.inversion.n_accepted is not None  # dopri5 by default


def test_float32_maps():
    f = gaussian()
    z = noise(4, 4, dtype=torch.float32)
    g = generate(f, z, rtol=1e-4, atol=1e-6)
    assert g.x.dtype == torch.float32
    assert _maxerr(g.x, MU + S * z.double()) < 1e-3
    rec = reconstruct(f, g.x, inv_solver="rk4", gen_solver="rk4", inv_method="fixed_point", inv_steps=20, gen_steps=20)
    assert rec.x_hat.dtype == torch.float32
    assert float(rec.error.max()) < 1e-5


# ------------------------------------------------------------------------------------------
# Lemma D.1 on the mixture: divergence integral = density ratio
# ------------------------------------------------------------------------------------------


def test_logdet_equals_density_ratio_on_mixture():
    f = mixture()
    z = torch.cat([noise(6, 2, seed=3), torch.tensor([[0.02, 0.1], [3.0, 0.0]], dtype=torch.float64)])
    g = generate(f, z, logdet=True, rtol=1e-10, atol=1e-12)
    log_phi = -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
    ratio = log_phi - f.log_density(g.x)
    assert torch.allclose(g.logdet, ratio, rtol=0, atol=1e-8)
    back = invert(f, g.x, logdet=True, rtol=1e-10, atol=1e-12)
    assert _maxerr(back.x, z) < 1e-8
    assert torch.allclose(back.logdet, -g.logdet, rtol=0, atol=1e-8)


# ------------------------------------------------------------------------------------------
# exact (fixed-point) inversion vs plain ODE inversion
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["euler", "heun", "rk4"])
def test_fixed_point_inversion_reproduces_x(scheme):
    f = mixture()
    x = generate(f, noise(12, 2, seed=4)).x
    steps = 20
    ts = time_grid(steps)
    inv = invert_fixed_point(f, x, ts, scheme=scheme)
    assert isinstance(inv, InversionResult) and inv.converged
    assert inv.iterations.shape == (steps,) and inv.residuals.shape == (steps,)
    assert int(inv.iterations.min()) >= 2 and int(inv.iterations.max()) < 200
    assert float(inv.residuals.max()) < 1e-11
    regen = SOLVERS[scheme](f, inv.x, ts).x
    assert _maxerr(regen, x) < 1e-10
    # the same through the maps API
    rec = reconstruct(f, x, inv_solver=scheme, inv_steps=steps, inv_method="fixed_point", gen_solver=scheme, gen_steps=steps)
    assert float(rec.error.max()) < 1e-10
    assert torch.equal(rec.z, inv.x)


def test_fixed_point_beats_plain_euler_inversion():
    f = mixture()
    x = generate(f, noise(12, 2, seed=5)).x
    steps = 20
    fp = reconstruct(f, x, inv_solver="euler", inv_steps=steps, inv_method="fixed_point", gen_solver="euler", gen_steps=steps)
    plain = reconstruct(f, x, inv_solver="euler", inv_steps=steps, inv_method="ode", gen_solver="euler", gen_steps=steps)
    assert float(fp.error.max()) < 1e-10
    assert float(plain.error.max()) > 1e-2
    assert float(plain.error.max()) > 1e6 * float(fp.error.max())
    # plain Euler inversion walks t = 1 -> 0: y_{k+1} = y_k - h v(y_k, t_k)
    h = 1.0 / steps
    y = x
    for k in range(steps):
        y = y - h * f.velocity(y, 1.0 - k * h)
    assert _maxerr(plain.z, y) < 1e-13


def test_euler_inversion_error_is_first_order():
    """Theorem 3.1: Euler inversion + exact regeneration has error O(h)."""
    f = mixture()
    x = generate(f, noise(8, 2, seed=6)).x
    steps = np.array([20, 40, 80, 160])
    errs = np.array(
        [float(reconstruct(f, x, inv_solver="euler", inv_steps=int(N), gen_solver="dopri5").error.max()) for N in steps]
    )
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < 0.3, (slope, errs)


def test_fixed_point_nonconvergence_policies():
    f = LinearField(5.0 * torch.eye(2, dtype=torch.float64))  # h * Lip = 2.5: no contraction
    x = torch.ones(3, 2, dtype=torch.float64)
    ts = time_grid(2)
    with pytest.raises(RuntimeError, match="did not converge|diverged"):
        invert_fixed_point(f, x, ts, scheme="euler", max_iter=30)
    with pytest.raises(RuntimeError, match="more steps"):
        invert(f, x, solver="euler", steps=2, method="fixed_point", max_iter=30)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = invert_fixed_point(f, x, ts, scheme="euler", max_iter=30, on_fail="warn")
    assert not res.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = invert_fixed_point(f, x, ts, scheme="heun", max_iter=5, on_fail="ignore")
    assert not res.converged
    # with enough steps the same field is inverted exactly (backward Euler of a linear field)
    ts = time_grid(50)
    ok = invert_fixed_point(f, x, ts, scheme="euler")
    assert ok.converged
    assert _maxerr(ok.x, x / (1.0 + 5.0 / 50) ** 50) < 1e-12
    assert _maxerr(euler(f, ok.x, ts).x, x) < 1e-10


def test_fixed_point_on_decreasing_grid():
    """Any monotone grid works: inverting the 1 -> 0 Euler map gives back the data side."""
    f = mixture()
    z = noise(5, 2, seed=7)
    ts = time_grid(30, 1.0, 0.0)
    x_back = invert_fixed_point(f, z, ts, scheme="heun").x
    assert _maxerr(SOLVERS["heun"](f, x_back, ts).x, z) < 1e-10


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def test_solver_names():
    assert SOLVER_NAMES == ("euler", "heun", "rk4", "dopri5")
    assert INVERSION_METHODS == ("ode", "fixed_point")


@pytest.mark.parametrize("fn", ["generate", "invert", "reconstruct"])
def test_map_validation(fn):
    f = gaussian()
    x = torch.ones(2, 4, dtype=torch.float64)
    call = {"generate": generate, "invert": invert, "reconstruct": reconstruct}[fn]
    solver_kw = "inv_solver" if fn == "reconstruct" else "solver"
    steps_kw = "inv_steps" if fn == "reconstruct" else "steps"
    with pytest.raises(ValueError, match="euler, heun, rk4, dopri5"):
        call(f, x, **{solver_kw: "rk45"})
    for bad in (0, -3, 1.5):
        with pytest.raises(ValueError, match=steps_kw):
            call(f, x, **{solver_kw: "euler", steps_kw: bad})
    for bad in (0.0, -1e-8, float("inf")):
        with pytest.raises(ValueError, match="rtol"):
            call(f, x, rtol=bad)
    with pytest.raises(ValueError, match="atol"):
        call(f, x, atol=-1.0)
    for bad_x in (x * float("nan"), x.clone().fill_(float("inf"))):
        with pytest.raises(ValueError, match="finite"):
            call(f, bad_x)
    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        call(f, torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError):
        call(f, [[1.0, 2.0]])
    with pytest.raises(TypeError):
        call(f, x, bogus=1)


def test_invert_and_reconstruct_specific_validation():
    f = gaussian()
    x = torch.ones(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="ode, fixed_point"):
        invert(f, x, method="newton")
    with pytest.raises(ValueError, match="dopri5"):
        invert(f, x, method="fixed_point")  # default solver dopri5 has no discrete scheme
    with pytest.raises(ValueError, match="logdet"):
        invert(f, x, solver="euler", method="fixed_point", logdet=True)
    with pytest.raises(ValueError, match="on_fail"):
        invert(f, x, solver="euler", method="fixed_point", on_fail="explode")
    with pytest.raises(ValueError, match="gen_solver"):
        reconstruct(f, x, gen_solver="midpoint")
    with pytest.raises(ValueError, match="gen_steps"):
        reconstruct(f, x, gen_steps=0)
    with pytest.raises(ValueError, match="divergence"):
        generate(_VelocityOnly(), x, logdet=True)
    ts = time_grid(4)
    with pytest.raises(ValueError, match="scheme"):
        invert_fixed_point(f, x, ts, scheme="dopri5")
    with pytest.raises(ValueError, match="tol"):
        invert_fixed_point(f, x, ts, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        invert_fixed_point(f, x, ts, max_iter=0)
    with pytest.raises(ValueError, match="monotone"):
        invert_fixed_point(f, x, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        invert_fixed_point(f, x * float("nan"), ts)


# ------------------------------------------------------------------------------------------
# issue 18: one return convention, inputs validated once at the public boundary
# ------------------------------------------------------------------------------------------


def test_every_map_returns_a_solve_result():
    """``generate`` / ``invert`` (both methods) return a ``SolveResult`` with ``.x``, ``.logdet``,
    ``.nfe``; the fixed-point inversion's ``InversionResult`` is its subclass."""
    f = gaussian()
    z = noise(3, 4)
    x = generate(f, z, solver="rk4", steps=20).x
    results = [
        generate(f, z, solver="euler", steps=20),
        invert(f, x, solver="heun", steps=20),
        invert(f, x, solver="euler", steps=20, method="fixed_point"),
    ]
    for r in results:
        assert isinstance(r, SolveResult) and r.x.shape == z.shape and r.logdet is None and r.nfe > 0
    fp = results[-1]
    assert isinstance(fp, InversionResult) and fp.converged and fp.iterations.shape == (20,)
    # the fixed-point nfe counts every stage: iterations plus one residual check per step
    assert fp.nfe == int(fp.iterations.sum()) + 20


@pytest.mark.parametrize(
    "call,checks",
    [
        (lambda f, z: generate(f, z, solver="euler", steps=3), 1),
        (lambda f, z: generate(f, z, solver="dopri5"), 1),
        (lambda f, z: invert(f, z, solver="rk4", steps=3), 1),
        (lambda f, z: invert(f, z, solver="euler", steps=3, method="fixed_point"), 1),
        (lambda f, z: reconstruct(f, z, inv_solver="euler", inv_steps=3, gen_solver="heun", gen_steps=3), 1),
        (lambda f, z: euler(f, z, time_grid(3)), 1),
    ],
)
def test_input_is_checked_once(monkeypatch, call, checks):
    """The user's state is checked for finiteness once, at the public boundary (the old code
    checked it again in every layer: ``reconstruct`` three times, ``generate`` twice)."""
    z = noise(2, 2)
    seen = []
    real = torch.isfinite

    def spy(t, *a, **k):
        if t is z:
            seen.append(1)
        return real(t, *a, **k)

    monkeypatch.setattr(torch, "isfinite", spy)
    call(LinearField(-torch.eye(2, dtype=torch.float64)), z)
    assert len(seen) == checks
