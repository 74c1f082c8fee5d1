r"""Exact discrete inversion of the regeneration ``G_N`` by per-step fixed-point iteration.

``G_N`` is the discrete regeneration of ``largemodel.study.ode`` (Euler or Heun, ``N`` steps on the
model's decreasing sigma grid ``s_0 ~ 1 > s_1 > ... > s_N = 0``): ``z_{k+1} = S_k(z_k)`` with
``S_k(z) = z + Phi_k(z)`` the solver's step from ``s_k`` to ``s_{k+1}`` (``ode.SOLVERS``). The
plain inversion ``F~`` walks the grid backwards with explicit steps, so ``G_N(F~(y)) != y``; its
*discrepancy* ``z~ - z*`` is what the instability of ``G_N`` amplifies (docs/theory.md §5.3;
the same fixed points as ``simulate.inversion``, §4.4, on the model's sigma grid).

The exact inverse ``z* = G_N^{-1}(y)`` solves, for ``k = N-1, ..., 0`` from ``z_N = y``, the
implicit step ``S_k(z_k) = z_{k+1}``, i.e. the fixed point of

    ``T_k(z) = z_{k+1} - Phi_k(z) = z + (z_{k+1} - S_k(z))``,

which converges when ``Phi_k`` is a contraction (``|s_{k+1} - s_k| Lip u < 1`` for Euler,
Banach's fixed-point theorem). The first iterate is the plain inversion step (Euler:
``z_{k+1} + (s_k - s_{k+1}) u(z_{k+1}, s_{k+1})``; Heun: its Heun analogue), so zero iterations
reproduce ``F~`` exactly and every iteration adds one step's worth of evaluations.

The update ``z_{k+1} - S_k(z)`` *is* the residual of the current iterate, so each iteration
both measures the residual ``r_k = ||S_k(z_k) - z_{k+1}||`` of the iterate it returns (at no
extra cost) and moves on. A row is accepted when ``r_k <= tol_eff max(1, ||z_{k+1}||)`` with
``tol_eff = max(tol, 8 eps(dtype))``; otherwise it keeps iterating up to ``max_iter``. Rows that
do not converge, or whose iterate becomes non-finite (the last finite iterate is kept), are
recorded in ``converged`` / ``diverged``, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from largemodel.study.ode import SOLVERS, Velocity, _check_grid, _check_solver, generate, nfe_per_step

__all__ = ["ExactInversion", "invert_exact", "invert_adaptive", "velocity_from_field"]


@dataclass
class ExactInversion:
    """Outcome of :func:`invert_exact` (steps indexed in generation order, ``k: s_k -> s_{k+1}``).

    Attributes:
        z: the exact inverse ``z*``, shape of ``y``.
        iterations: ``(N,)`` int64, evaluations of ``S_k`` after the first iterate (maximum over
            rows); each measured the residual of the then-current iterate.
        residuals: ``(B, N)`` float64, ``||S_k(z_k) - z_{k+1}||`` of the returned iterates
            (NaN where never measured, ``max_iter = 0``).
        converged: ``(B,)`` bool, every step of the row met the tolerance.
        diverged: ``(B,)`` bool, some step of the row became non-finite.
        nfe: network evaluations per row (the batch shares calls), initial guesses included.
        tol: the effective tolerance used.
        final_residual: ``(B,)`` float64, ``||G_N(z*) - y||`` when ``check=True`` (else ``None``).
    """

    z: Tensor
    iterations: Tensor
    residuals: Tensor
    converged: Tensor
    diverged: Tensor
    nfe: int
    tol: float
    final_residual: Tensor | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready per-batch summary (lists per row)."""
        out: dict[str, Any] = {
            "exact_converged": self.converged.tolist(),
            "exact_diverged": self.diverged.tolist(),
            "exact_max_step_residual": self.residuals.max(dim=1).values.tolist(),
            "exact_iterations_total": int(self.iterations.sum()),
            "exact_iterations_max": int(self.iterations.max()) if self.iterations.numel() else 0,
            "exact_nfe": self.nfe,
            "exact_tol": self.tol,
        }
        if self.final_residual is not None:
            out["exact_final_residual"] = self.final_residual.tolist()
        return out


def _norm(x: Tensor) -> Tensor:
    return x.flatten(1).to(torch.float64).norm(dim=1)


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


@torch.no_grad()
def invert_exact(
    velocity: Velocity,
    y: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    tol: float = 1e-6,
    max_iter: int = 50,
    check: bool = True,
    measure_last: bool = True,
) -> ExactInversion:
    r"""``z* = G_N^{-1}(y)`` by per-step fixed-point iteration (Banach; module docstring).

    Args:
        velocity: ``u(x, sigma)`` on latents ``(B, ...)``.
        y: the latents to invert (``y = E(x)``).
        sigmas: the model's decreasing generation grid (``FlowModel.sigmas``), as for
            ``ode.generate``.
        solver: a scheme of ``ode.SOLVERS`` (``"euler"``, ``"heun"``, ``"heun-diffusers"``): the
            scheme of ``G_N`` whose steps are inverted.
        tol: relative residual tolerance per step, ``> 0`` (raised to ``8 eps(dtype)``).
        max_iter: most evaluations of the step map per step after the first iterate, ``>= 0``;
            each measures the residual of the current iterate and, below the cap, moves it
            (``0`` gives the plain inversion ``F~`` exactly, residuals unmeasured: NaN, and rows
            not counted as converged). Per row ``nfe = stages (N + sum of iterations)``.
        check: regenerate ``G_N(z*)`` and record ``||G_N(z*) - y||`` (``N`` more steps).
        measure_last: at the cap, return the last measured iterate (default). ``False`` applies
            the last update too (every evaluation moves the iterate: equal-NFE comparisons);
            the residual recorded for such a row is then that of the iterate before it.

    Returns:
        :class:`ExactInversion`.

    Raises:
        ValueError: bad ``solver`` / ``tol`` / ``max_iter`` / grid, non-finite ``y``.
    """
    _check_solver(solver)
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"--tol must be a positive finite number, got {tol!r}")
    if int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"--max-iter must be an integer >= 0, got {max_iter!r}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("the latents to invert must be finite")
    sig = _check_grid(sigmas, decreasing=True).to(y.device)
    step = SOLVERS[solver]
    tol_eff = max(float(tol), 8.0 * torch.finfo(y.dtype).eps)
    max_iter = int(max_iter)
    b, n_steps = y.shape[0], sig.numel() - 1
    iterations = torch.zeros(n_steps, dtype=torch.int64)
    residuals = torch.zeros(b, n_steps, dtype=torch.float64)
    converged = torch.ones(b, dtype=torch.bool)
    diverged = torch.zeros(b, dtype=torch.bool)
    nfe = 0
    z_next = y
    for k in range(n_steps - 1, -1, -1):
        s0, s1 = sig[k], sig[k + 1]
        stages = 1 if solver == "heun-diffusers" and float(s1) == 0.0 else nfe_per_step(solver)
        # first iterate: the plain (explicit) inversion step from s_{k+1} back to s_k
        z = step(velocity, z_next, s1, s0)
        nfe += stages
        scale = _norm(z_next).clamp_min(1.0)
        active = torch.arange(b, device=y.device)
        res_k = torch.full((b,), math.nan, dtype=torch.float64)
        it = 0
        while active.numel() > 0 and it < max_iter:
            za = z[active]
            update = z_next[active] - step(velocity, za, s0, s1)  # = T_k(z) - z = -(S_k(z) - z_{k+1})
            nfe += stages
            it += 1
            r = _norm(update)
            res_k[active.cpu()] = r.cpu()
            bad = ~torch.isfinite(r)
            diverged[active[bad].cpu()] = True
            done = (r <= tol_eff * scale[active]) | bad
            move = active[~done]
            if it < max_iter or not measure_last:  # at the cap the measured iterate is returned, not an unmeasured update
                new = za[~done] + update[~done]
                finite = torch.isfinite(new.flatten(1)).all(dim=1)
                if not bool(finite.all()):  # keep the last finite iterate of those rows
                    diverged[move[~finite].cpu()] = True
                    move, new = move[finite], new[finite]
                z[move] = new
            active = move
        converged[active.cpu()] = False  # still above the tolerance at the cap (or never measured)
        converged[diverged] = False
        iterations[k] = it
        residuals[:, k] = res_k
        z_next = z
    final = None
    if check:
        final = _norm(generate(velocity, z_next, sig, solver=solver) - y)
    return ExactInversion(z=z_next, iterations=iterations, residuals=residuals, converged=converged,
                          diverged=diverged, nfe=nfe, tol=tol_eff, final_residual=final)


class _SigmaField:
    """A ``largemodel`` velocity ``u(x, sigma)`` on latents as a :mod:`simulate.solvers` field on
    flat rows, with the solver's time read as ``sigma`` (per-row ``(B,)`` times passed through)."""

    def __init__(self, velocity: Velocity, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self._u, self._shape, self._dtype = velocity, shape, dtype

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        sigma = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        v = self._u(x.reshape(x.shape[0], *self._shape).to(self._dtype), sigma)
        return v.reshape(x.shape[0], -1).to(x.dtype)


@torch.no_grad()
def invert_adaptive(velocity: Velocity, y: Tensor, sigma_max: float, *, rtol: float = 1e-5,
                    atol: float = 1e-6) -> tuple[Tensor, int]:
    r"""``F(y)``: the continuous inversion ``dx/dsigma = u(x, sigma)`` from ``sigma = 0`` to
    ``sigma_max`` by adaptive Dormand--Prince 5(4) (:func:`simulate.solvers.dopri5`, docs/theory.md
    §4.2), in float64 whatever the network's dtype.

    ``G_N(F(y)) - y`` is then ``G_N``'s own discretisation error at ``y`` (docs/theory.md §5.3): the
    floor an inverter that converges to the continuous ``F`` cannot go below.

    Returns:
        ``(F(y)`` in ``y``'s dtype, batched network evaluations spent).
    """
    from simulate.solvers.dopri5 import dopri5

    field = _SigmaField(velocity, tuple(y.shape[1:]), y.dtype)
    res = dopri5(field, y.reshape(y.shape[0], -1).to(torch.float64), 0.0, float(sigma_max), rtol=rtol, atol=atol)
    return res.x.reshape(y.shape).to(y.dtype), int(res.nfe)


def velocity_from_field(field: Any, shape: tuple[int, ...]) -> Velocity:
    r"""An exact ``simulate`` field as a ``largemodel`` velocity on latents of shape ``(B, *shape)``.

    ``simulate`` integrates ``dx/dt = v(x, t)`` from noise at ``t = 0`` to data at ``t = 1``;
    ``largemodel`` integrates ``dx/dsigma = u(x, sigma)`` with ``sigma = 1 - t``, so
    ``u(x, sigma) = -v(x, 1 - sigma)`` (docs/theory.md §1.2). ``prod(shape)`` must be the
    field's dimension ``n``.
    """
    n = int(math.prod(shape))
    if n != field.n:
        raise ValueError(f"latent shape {shape} has {n} coordinates but the field has n = {field.n}")

    def u(x: Tensor, sigma: Tensor | float) -> Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64)
        t = 1.0 - float(s) if s.ndim == 0 else (1.0 - s).to(field.dtype)  # per-row sigmas stay per row
        v = field.velocity(x.reshape(x.shape[0], n).to(field.dtype), t)
        return (-v).reshape(x.shape).to(x.dtype)

    return u
