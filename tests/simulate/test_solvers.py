"""Tests of simulate.solvers against closed forms and SciPy (torchdiffeq style).

Analytic fields used (all accept a float time or per-row times of shape (B,)):

* ``LinearField``: ``v(x, t) = A x``; ``x(t) = expm(t A) x(0)``, ``div v = trace A``.
* ``GaussianField``: flow-matching field of ``N(mu, s^2 I)``,
  ``v = mu + (t s^2 - (1 - t)) / (t^2 s^2 + (1 - t)^2) (x - t mu)``; ``G(z) = mu + s z``,
  ``log |det J_G| = n log s``.
* ``MixtureField``: flow-matching field of ``sum_i w_i N(mu_i, s_i^2 I)``,
  ``v = sum_i pi_i(x, t) v_i`` with ``v_i`` as above and posterior weights
  ``pi_i ~ w_i N(x; t mu_i, (t^2 s_i^2 + (1 - t)^2) I)`` (nonlinear; points near the
  boundary between the components are harder).
* ``RotationField``: ``v = |x|^2 J x`` (``J`` = rotation by 90 degrees); ``|x|`` is conserved,
  so ``x(t)`` is ``x(0)`` rotated by the angle ``|x(0)|^2 t``: rows with a large radius spin
  fast (hard), rows with a small radius slowly (easy).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from simulate.solvers import (
    SOLVERS,
    SupportsDivergence,
    SolveResult,
    SupportsVelocity,
    dopri5,
    euler,
    heun,
    rk4,
    time_grid,
)

ORDERS = {"euler": 1, "heun": 2, "rk4": 4}


from analytic_fields import GaussianField, LinearField, MixtureField, RotationField  # noqa: E402


class Recorder:
    """Wraps a field and records the batch size and the times of every call."""

    def __init__(self, field):
        self.field, self.sizes, self.times = field, [], []

    def velocity(self, x, t):
        self.sizes.append(x.shape[0])
        self.times.append(t.detach().clone() if isinstance(t, torch.Tensor) else t)
        return self.field.velocity(x, t)


A_LIN = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64)
MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
S = 0.5


def mixture() -> MixtureField:
    return MixtureField(
        torch.tensor([0.4, 0.6], dtype=torch.float64),
        torch.tensor([[-2.0, 0.5], [2.0, -0.5]], dtype=torch.float64),
        torch.tensor([0.3, 0.45], dtype=torch.float64),
    )


MIX_POINTS = torch.tensor(
    [[3.0, 0.0], [0.02, 0.1], [-0.3, 1.0], [1.0, 1.0], [0.15, -0.3], [-2.5, -1.0]],
    dtype=torch.float64,
)


def _problem(name: str, direction: str):
    """(field, x_start, exact_end, t0, t1)."""
    gen = torch.Generator().manual_seed(0)
    t0, t1 = (0.0, 1.0) if direction == "forward" else (1.0, 0.0)
    if name == "linear":
        f = LinearField(A_LIN)
        x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
        return f, x, f.exact(x, t0, t1), t0, t1
    f = GaussianField(MU, S)
    z = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    if direction == "forward":
        return f, z, f.G(z), t0, t1
    return f, f.G(z), z, t0, t1


def _scipy_ref(field, x0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    out = []
    for row in x0:
        fun = lambda t, y: field.velocity(torch.from_numpy(y)[None], t)[0].numpy()  # noqa: E731
        sol = solve_ivp(fun, (t0, t1), row.numpy(), method="DOP853", rtol=1e-11, atol=1e-12)
        assert sol.success
        out.append(sol.y[:, -1])
    return torch.from_numpy(np.stack(out))


def _maxerr(a, b) -> float:
    return float(torch.linalg.vector_norm(a.double() - b.double(), dim=1).max())


# ------------------------------------------------------------------------------------------
# fixed-grid solvers
# ------------------------------------------------------------------------------------------


def test_fields_satisfy_protocols():
    assert isinstance(GaussianField(MU, S), SupportsDivergence)
    assert isinstance(RotationField(), SupportsVelocity)
    assert not isinstance(RotationField(), SupportsDivergence)


def test_time_grid():
    ts = time_grid(7)
    assert ts.dtype == torch.float64 and ts.shape == (8,)
    assert ts[0].item() == 0.0 and ts[-1].item() == 1.0
    assert torch.all(torch.diff(ts) > 0)
    back = time_grid(3, 1.0, 0.0, dtype=torch.float32)
    assert back.dtype == torch.float32 and back.tolist() == [1.0, pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            time_grid(bad)
    with pytest.raises(ValueError):
        time_grid(4, 0.5, 0.5)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("problem", ["linear", "gaussian"])
@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_convergence_order(solver, problem, direction):
    field, x0, exact, t0, t1 = _problem(problem, direction)
    # RK4 on the Gaussian field is pre-asymptotic below ~30 steps
    steps = np.array([32, 64, 128, 256] if solver == "rk4" else [16, 32, 64, 128])
    errs = np.array([_maxerr(SOLVERS[solver](field, x0, time_grid(int(N), t0, t1)).x, exact) for N in steps])
    assert np.all(errs > 1e-14), errs  # still above round-off
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - ORDERS[solver]) < 0.3, (slope, errs)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_grid_dtype_and_accuracy(solver, dtype):
    field, x0, exact, t0, t1 = _problem("gaussian", "forward")
    steps = {"euler": 2000, "heun": 200, "rk4": 50}[solver]
    res = SOLVERS[solver](field, x0.to(dtype), time_grid(steps, t0, t1), logdet=True)
    assert isinstance(res, SolveResult)
    assert res.x.dtype == dtype and res.logdet.dtype == dtype
    assert res.nfe == {"euler": 1, "heun": 2, "rk4": 4}[solver] * steps
    assert res.n_accepted is None
    tol = {"euler": 3e-3, "heun": 1e-4, "rk4": 1e-6}[solver]
    if dtype == torch.float32:
        tol = max(tol, 1e-5)
    assert _maxerr(res.x, exact) < tol


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_fixed_grid_accepts_sequences_and_nonuniform_grids(solver):
    field, x0, exact, _, _ = _problem("linear", "forward")
    grid = (np.linspace(0, 1, 401) ** 2).tolist()  # non-uniform, Python list
    res = SOLVERS[solver](field, x0, grid)
    assert _maxerr(res.x, exact) < {"euler": 1e-2, "heun": 1e-4, "rk4": 1e-9}[solver]


def test_callback_and_single_step():
    field = LinearField(A_LIN)
    x0 = torch.ones(3, 2, dtype=torch.float64)
    seen = []
    res = heun(field, x0, [0.0, 0.25, 0.5], callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1]
    assert [(d["t"], d["t_next"]) for d in seen] == [(0.0, 0.25), (0.25, 0.5)]
    assert torch.equal(seen[-1]["x"], res.x)
    # one Euler step is literally x + h v(x, t)
    one = euler(field, x0, [0.3, 0.1])
    assert torch.allclose(one.x, x0 - 0.2 * field.velocity(x0, 0.3), rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------
# log-determinant augmentation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "dopri5"])
def test_logdet_gaussian(solver):
    field, z, x, _, _ = _problem("gaussian", "forward")
    n = z.shape[1]
    if solver == "dopri5":
        fwd = dopri5(field, z, 0.0, 1.0, rtol=1e-10, atol=1e-12, logdet=True)
        bwd = dopri5(field, x, 1.0, 0.0, rtol=1e-10, atol=1e-12, logdet=True)
        tol = 1e-8
    else:
        steps = {"euler": 4000, "heun": 400, "rk4": 100}[solver]
        fwd = SOLVERS[solver](field, z, time_grid(steps), logdet=True)
        bwd = SOLVERS[solver](field, x, time_grid(steps, 1.0, 0.0), logdet=True)
        tol = {"euler": 2e-3, "heun": 1e-5, "rk4": 1e-8}[solver]
    assert fwd.logdet.shape == (z.shape[0],)
    assert torch.allclose(fwd.logdet, torch.full_like(fwd.logdet, n * math.log(S)), rtol=0, atol=tol)
    assert torch.allclose(bwd.logdet, torch.full_like(bwd.logdet, -n * math.log(S)), rtol=0, atol=tol)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "dopri5"])
def test_logdet_linear_is_t_trace(solver):
    field = LinearField(A_LIN)
    x0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tr = float(torch.trace(A_LIN))
    for t0, t1 in [(0.0, 0.7), (1.0, 0.2)]:
        if solver == "dopri5":
            res = dopri5(field, x0, t0, t1, logdet=True)
        else:
            res = SOLVERS[solver](field, x0, time_grid(5, t0, t1), logdet=True)
        # div v is constant, so every scheme integrates it exactly
        assert torch.allclose(res.logdet, torch.full((4,), (t1 - t0) * tr, dtype=torch.float64), atol=1e-12)


# ------------------------------------------------------------------------------------------
# dopri5
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("rtol", [1e-6, 1e-8, 1e-10])
def test_dopri5_meets_tolerance(rtol, direction):
    field, x0, exact, t0, t1 = _problem("gaussian", direction)
    atol = rtol * 1e-2
    res = dopri5(field, x0, t0, t1, rtol=rtol, atol=atol)
    scaled = ((res.x - exact).abs() / (atol + rtol * exact.abs())).max()
    assert scaled < 10.0, float(scaled)
    assert res.x.dtype == torch.float64
    assert torch.all(res.n_accepted > 0)
    # 2 evaluations to start (FSAL value + step heuristic), then 6 per attempted step
    attempts = int((res.n_accepted + res.n_rejected).max())
    assert res.nfe == 2 + 6 * attempts


def test_dopri5_needs_far_fewer_steps_than_rk4():
    field = mixture()
    ref = _scipy_ref(field, MIX_POINTS, 0.0, 1.0)
    res = dopri5(field, MIX_POINTS, 0.0, 1.0, rtol=1e-10, atol=1e-12)
    err_dp = _maxerr(res.x, ref)
    assert err_dp < 1e-9
    dp_steps = int((res.n_accepted + res.n_rejected).max())
    rk_steps = 25
    while _maxerr(rk4(field, MIX_POINTS, time_grid(rk_steps)).x, ref) > err_dp:
        rk_steps *= 2
        assert rk_steps < 10_000
    assert 3 * dp_steps < rk_steps, (dp_steps, rk_steps)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_agreement_with_scipy_dop853_on_mixture(direction):
    field = mixture()
    t0, t1 = (0.0, 1.0) if direction == "forward" else (1.0, 0.0)
    x0 = MIX_POINTS if direction == "forward" else _scipy_ref(field, MIX_POINTS, 0.0, 1.0)
    ref = _scipy_ref(field, x0, t0, t1)
    dp = dopri5(field, x0, t0, t1, rtol=1e-10, atol=1e-12)
    assert _maxerr(dp.x, ref) < 1e-9
    rk = rk4(field, x0, time_grid(400, t0, t1))
    assert _maxerr(rk.x, ref) < 1e-8
    if direction == "backward":
        assert _maxerr(dp.x, MIX_POINTS) < 1e-8  # round trip back to the starting noise


def test_dopri5_per_sample_control_rotation():
    field = RotationField()
    radii = torch.tensor([0.5, 3.0, 0.7, 2.5], dtype=torch.float64)
    ang = torch.tensor([0.3, 1.0, 2.0, -1.0], dtype=torch.float64)
    x0 = radii[:, None] * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    rec = Recorder(field)
    res = dopri5(rec, x0, 0.0, 1.0, rtol=1e-8, atol=1e-10)
    easy, hard = res.n_accepted[[0, 2]], res.n_accepted[[1, 3]]
    assert easy.max() < hard.min(), res.n_accepted
    assert _maxerr(res.x, field.exact(x0, 0.0, 1.0)) < 1e-6
    # finished rows are not evaluated any more: batch sizes shrink, never grow
    assert rec.sizes[0] == 4 and min(rec.sizes) < 4
    assert all(a >= b for a, b in zip(rec.sizes, rec.sizes[1:]))
    assert res.row_evals == sum(rec.sizes) < res.nfe * 4
    # times are handed over per row, as (B_active,) tensors, within [t0, t1], ending at t1
    assert all(isinstance(t, torch.Tensor) and t.shape == (s,) for t, s in zip(rec.times, rec.sizes))
    all_t = torch.cat(rec.times)
    assert float(all_t.min()) == 0.0 and float(all_t.max()) == 1.0
    # each row alone gives the same answer and the same step counts
    for i in range(4):
        alone = dopri5(field, x0[i : i + 1], 0.0, 1.0, rtol=1e-8, atol=1e-10)
        assert _maxerr(alone.x, res.x[i : i + 1]) < 1e-12
        assert int(alone.n_accepted) == int(res.n_accepted[i])
        assert int(alone.n_rejected) == int(res.n_rejected[i])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_dopri5_batch_equals_rows_on_mixture(direction):
    field = mixture()
    t0, t1 = (0.0, 1.0) if direction == "forward" else (1.0, 0.0)
    res = dopri5(field, MIX_POINTS, t0, t1, rtol=1e-7, atol=1e-9, logdet=True)
    # the point at the boundary between the components is harder than the far-out one
    assert res.n_accepted[1] > res.n_accepted[0]
    for i in range(len(MIX_POINTS)):
        alone = dopri5(field, MIX_POINTS[i : i + 1], t0, t1, rtol=1e-7, atol=1e-9, logdet=True)
        assert _maxerr(alone.x, res.x[i : i + 1]) < 1e-12
        assert abs(float(alone.logdet[0] - res.logdet[i])) < 1e-12


def test_dopri5_float32_and_tiny_rtol():
    field, x0, exact, t0, t1 = _problem("gaussian", "forward")
    res = dopri5(field, x0.float(), t0, t1, rtol=1e-4, atol=1e-6, logdet=True)
    assert res.x.dtype == torch.float32 and res.logdet.dtype == torch.float32
    assert _maxerr(res.x, exact) < 1e-3
    with pytest.warns(RuntimeWarning, match="rtol"):
        dopri5(field, x0.float(), t0, t1, rtol=1e-12, atol=1e-14)


def test_dopri5_h0_and_exact_end():
    field = GaussianField(MU, S)
    z = torch.zeros(2, 3, dtype=torch.float64)
    # a huge initial step is clipped to the interval, rejected and shrunk
    res = dopri5(field, z, 0.0, 1.0, h0=10.0, rtol=1e-9, atol=1e-11)
    assert _maxerr(res.x, field.G(z)) < 1e-8
    # constant field: the end state is exactly x0 + (t1 - t0) c whatever the steps
    class Const:
        def velocity(self, x, t):
            return torch.ones_like(x)

    res = dopri5(Const(), z, 0.25, -0.5, h0=0.3)
    assert torch.allclose(res.x, torch.full_like(z, -0.75), rtol=0, atol=1e-15)
    # zero error estimate: the step grows by the maximal factor 10 (0.3 -> 3, clipped to 0.45)
    assert torch.equal(res.n_accepted, torch.tensor([2, 2]))
    assert torch.equal(res.n_rejected, torch.tensor([0, 0]))


def test_dopri5_never_evaluates_outside_the_interval():
    class Strict:
        """Slow constant drift; raises for any time outside [lo, hi] (like fields on [0, 1])."""

        lo, hi = 0.2, 0.2005

        def velocity(self, x, t):
            assert float(t.min()) >= self.lo and float(t.max()) <= self.hi, t
            return torch.full_like(x, 1e-3)

    x = torch.full((3, 2), 1.0, dtype=torch.float64)  # ||y|| / ||v|| = 1000: heuristic h >> span
    for t0, t1 in [(Strict.lo, Strict.hi), (Strict.hi, Strict.lo)]:
        res = dopri5(Strict(), x, t0, t1)
        assert torch.allclose(res.x, x + 1e-3 * (t1 - t0), rtol=0, atol=1e-15)


def test_dopri5_failures():
    field = GaussianField(MU, S)
    z = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="max_steps"):
        dopri5(field, z, 0.0, 1.0, rtol=1e-12, max_steps=3)

    class Blowup:
        def velocity(self, x, t):
            tt = t.to(x).reshape(-1, 1)
            return torch.where(tt > 0.5, torch.full_like(x, float("nan")), x)

    with pytest.raises(RuntimeError, match="underflow"):
        dopri5(Blowup(), z + 1, 0.0, 1.0)


@pytest.mark.parametrize("kind", ["gmm", "box"])
def test_dopri5_differentiable_through_exact_fields(kind):
    """Reverse mode (autograd), forward mode (torch.func.jvp) and central differences of the
    dopri5 map agree on the exact fields (called through their unchecked evaluation)."""
    from simulate.fields import BoxMixture, GaussianMixture

    c = torch.tensor([[-1.5, 0.5], [1.5, -0.5]], dtype=torch.float64)
    w = torch.tensor([0.4, 0.6], dtype=torch.float64)
    field = GaussianMixture(c, 0.4, w) if kind == "gmm" else BoxMixture(c - 0.3, c + 0.3, w, 0.2)
    z = torch.tensor([[0.3, -0.2], [1.0, 0.7], [-2.0, 0.1]], dtype=torch.float64)
    u = torch.tensor([[1.0, 0.5], [-0.3, 1.0], [0.7, -0.7]], dtype=torch.float64)
    opts = dict(rtol=1e-9, atol=1e-11)

    def G(v):
        return dopri5(field, v, 0.0, 1.0, **opts).x

    _, fwd = torch.func.jvp(G, (z,), (u,))
    zr = z.clone().requires_grad_(True)
    out = G(zr)
    rev = torch.stack([torch.autograd.grad(out[:, k].sum(), zr, retain_graph=True)[0] for k in range(2)], dim=1)
    rev_ju = torch.einsum("bkn,bn->bk", rev, u)  # rows are independent: per-row Jacobians
    eps = 1e-6
    with torch.no_grad():
        fd = (G(z + eps * u) - G(z - eps * u)) / (2 * eps)
    assert torch.isfinite(fwd).all() and torch.isfinite(rev_ju).all()
    torch.testing.assert_close(fwd, rev_ju, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fwd, fd, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    field = mixture()
    x = MIX_POINTS.cuda()
    dp = dopri5(field, x, 0.0, 1.0, rtol=1e-10, atol=1e-12, logdet=True)
    assert dp.x.device.type == "cuda" and dp.logdet.device.type == "cuda"
    cpu = dopri5(field, MIX_POINTS, 0.0, 1.0, rtol=1e-10, atol=1e-12, logdet=True)
    assert _maxerr(dp.x.cpu(), cpu.x) < 1e-9
    rk = rk4(field, x, time_grid(50, device="cuda"))
    assert _maxerr(rk.x.cpu(), rk4(field, MIX_POINTS, time_grid(50)).x) < 1e-12


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_fixed_grid_validation(solver):
    f = LinearField(A_LIN)
    x = torch.ones(2, 2, dtype=torch.float64)
    sol = SOLVERS[solver]
    with pytest.raises(ValueError, match="at least 2"):
        sol(f, x, [0.0])
    with pytest.raises(ValueError, match="monotone"):
        sol(f, x, [0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="monotone"):
        sol(f, x, [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        sol(f, x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite"):
        sol(f, x, [0.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        sol(f, torch.tensor([[0.0, float("inf")]], dtype=torch.float64), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        sol(f, torch.ones(2, dtype=torch.float64), [0.0, 1.0])
    with pytest.raises(ValueError, match="floating"):
        sol(f, torch.ones(2, 2, dtype=torch.int64), [0.0, 1.0])
    with pytest.raises(TypeError):
        sol(f, np.ones((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match="divergence"):
        sol(RotationField(), x, [0.0, 1.0], logdet=True)
    with pytest.raises(TypeError, match="velocity"):
        sol(object(), x, [0.0, 1.0])

    class WrongShape:
        def velocity(self, x, t):
            return x[:, :1]

    with pytest.raises(ValueError, match="velocity returned shape"):
        sol(WrongShape(), x, [0.0, 1.0])


def test_dopri5_validation():
    f = GaussianField(MU, S)
    x = torch.ones(2, 3, dtype=torch.float64)
    for kw, pat in [
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": -1e-6}, "rtol"),
        ({"rtol": float("nan")}, "rtol"),
        ({"atol": -1.0}, "atol"),
        ({"h0": 0.0}, "h0"),
        ({"max_steps": 0}, "max_steps"),
    ]:
        with pytest.raises(ValueError, match=pat):
            dopri5(f, x, 0.0, 1.0, **kw)
    with pytest.raises(ValueError, match="distinct"):
        dopri5(f, x, 0.5, 0.5)
    with pytest.raises(ValueError, match="distinct"):
        dopri5(f, x, 0.0, float("inf"))
    with pytest.raises(ValueError, match="finite"):
        dopri5(f, x * float("nan"), 0.0, 1.0)
    with pytest.raises(ValueError, match="divergence"):
        dopri5(RotationField(), torch.ones(2, 2, dtype=torch.float64), 0.0, 1.0, logdet=True)


# ---------------------------------------------------------------------------------------------
# issue 18: one step implementation, dopri5 split into named helpers
# ---------------------------------------------------------------------------------------------


def test_fixed_grid_arithmetic_is_pinned_bit_for_bit():
    """The shared increments (simulate.solvers.steps) run exactly the pre-merge operations:
    ``x + h v`` and ``x + (0.5 h)(k1 + k2)`` with ``h = t_{k+1} - t_k`` a Python float."""
    field = LinearField(torch.tensor([[-0.3, 1.1], [-0.9, 0.2]], dtype=torch.float64))
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ts = time_grid(7)
    grid = ts.tolist()
    xe, xh = x0, x0
    for t, tn in zip(grid[:-1], grid[1:]):
        h = tn - t
        xe = xe + h * field.velocity(xe, t)
        k1 = field.velocity(xh, t)
        k2 = field.velocity(xh + h * k1, tn)
        xh = xh + 0.5 * h * (k1 + k2)
    assert torch.equal(euler(field, x0, ts).x, xe)
    assert torch.equal(heun(field, x0, ts).x, xh)


def test_dopri5_step_factor_closed_form():
    """``min(10, max(0.2, 0.9 ||err||^(-1/5)))``, with 0 -> 10 and inf / NaN -> 0.2."""
    from simulate.solvers.dopri5 import _step_factor

    e = torch.tensor([0.0, 1.0, 32.0, 1e-10, math.inf, math.nan], dtype=torch.float64)
    got = _step_factor(e)
    want = torch.tensor([10.0, 0.9, 0.45, 10.0, 0.2, 0.2], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)


def test_dopri5_initial_step_is_hairers_heuristic():
    """On ``v = a x`` (one row, n = 1): ``d0 = |y0| / sc``, ``d1 = |a y0| / sc``, ``h_a = 0.01 d0 / d1
    = 0.01 / |a|``, ``d2 = |a (y0 + h_a a y0) - a y0| / (sc h_a) = a^2 |y0| / sc``,
    ``h = min(100 h_a, (0.01 / max(d1, d2))^(1/5), span)``."""
    from simulate.solvers.dopri5 import _initial_step, _Rhs

    a, y0, rtol, atol = -3.0, 2.0, 1e-6, 1e-8
    field = LinearField(torch.tensor([[a]], dtype=torch.float64))
    y = torch.tensor([[y0]], dtype=torch.float64)
    t = torch.zeros(1, dtype=torch.float64)
    f = _Rhs(field, y, 0.0, 1.0, False)
    k1, _ = f(y, t)
    h = _initial_step(f, y, t, None, k1, None, rtol, atol, 1.0, 1.0)
    sc = atol + rtol * abs(y0)
    ha = 0.01 / abs(a)
    d1, d2 = abs(a * y0) / sc, a * a * abs(y0) / sc
    want = min(100 * ha, (0.01 / max(d1, d2)) ** 0.2, 1.0)
    assert f.nfe == 2 and f.row_evals == 2
    assert float(h) == pytest.approx(want, rel=1e-12)
