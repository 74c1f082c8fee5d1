r"""Euler and Heun on a model's sigma grid: regeneration ``G`` and inversion ``F``.

With ``dx/dsigma = u(x, sigma)`` (docs/theory.md §1.2), a solver walks a grid
``s_0, s_1, ..., s_N``:

- Euler: ``x_{i+1} = x_i + (s_{i+1} - s_i) u(x_i, s_i)``;
- Heun:  ``x' = x_i + h u(x_i, s_i)``, ``x_{i+1} = x_i + h (u(x_i, s_i) + u(x', s_{i+1})) / 2``,
  ``h = s_{i+1} - s_i`` (pfode's Heun, the default: Heun on all ``N`` steps, ``2N`` evaluations);
- ``heun-diffusers``: diffusers' ``FlowMatchHeunDiscreteScheduler``: Heun on the ``N - 1`` steps
  away from ``sigma = 0`` and an Euler step on the one that touches ``sigma = 0``
  (``2N - 1`` evaluations). Same grid, same state precision: only the last step differs.

State precision: our state (and every sum) stays in ``state_dtype`` (float32) whatever the
network's dtype; diffusers' bf16 pipelines keep the latents in bf16 between steps, so the errors
we report are those of the ODE with a bf16 network, not those of a bf16 pipeline run (issue 14
measured ~27% relative difference between the two at 500 steps on a tiny model).

Generation walks the grid from ``sigma = 1`` (noise) down to ``0`` (image); inversion walks the
same grid reversed, from ``0`` up to ``1`` (the naive "DDIM-style" inversion of the paper). Both
share one signature, ``(velocity, x, sigmas) -> x``, where ``velocity(x, sigma)`` is e.g.
``FlowModel.velocity``.

``checkpoint=True`` recomputes each step's activations in the backward pass
(``torch.utils.checkpoint``), so reverse-mode AD through a 500-step regeneration of a large
transformer holds one step's activations at a time.

Return convention: the maps here (``solve``, ``generate``, ``invert``) return the final state as a
bare ``Tensor`` of ``x``'s shape and dtype, unlike :mod:`simulate.maps` whose maps return a
``SolveResult`` with ``.x``: there is no log-determinant to carry, and the number of network
evaluations is known in advance (:func:`nfe_per_map`), so a result object would add nothing.

One implementation of the step arithmetic: the Euler and Heun increments are those of
:mod:`simulate.solvers.steps` (shared with ``simulate``'s fixed-grid solvers and its exact
inversion), as are the registry of scheme names and the evaluations per step
(:data:`simulate.solvers.steps.STAGES`). What stays here, and why:

- the step ``h = (s1 - s0).to(x.dtype)``: the difference of two float64 grid values, rounded to
  the state's dtype after the subtraction (the convention the diffusers-equality tests pin
  down); ``simulate`` keeps ``h`` a Python float. The increments take ``h`` from the caller, so
  each side keeps its own rounding of it and both run the same tensor operations (``h * u``,
  ``0.5 * h``, ``x + h * u_0``, ``x + dx``) as before they were merged, bit for bit;
- ``heun-diffusers``' Euler step on the step touching ``sigma = 0`` (a scheduler convention);
- the sigma-grid checks (``[0, 1]``, direction of the map), which ``simulate``'s time grids
  (any strictly monotone grid) do not have;
- checkpointing, which needs a step function of tensors only.

Tests check that ``generate`` is bit-identical to diffusers' SD3 / FLUX pipelines in fp32
(``tests/largemodel/test_lm_scale.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from simulate.solvers.checks import check_choice
from simulate.solvers.steps import STAGES, euler_increment, heun_increment

Velocity = Callable[[Tensor, Tensor], Tensor]
Progress = Callable[[int, int], None] | None

__all__ = [
    "SOLVERS",
    "solver_note",
    "warn_solver",
    "euler_step",
    "generate",
    "heun_diffusers_step",
    "heun_step",
    "invert",
    "nfe_per_map",
    "nfe_per_step",
    "solve",
]


def _rhs(velocity: Velocity) -> Callable[[Tensor, Tensor], tuple[Tensor, None]]:
    """``velocity`` as the right-hand side of :mod:`simulate.solvers.steps` (no divergence)."""
    return lambda x, s: (velocity(x, s), None)


def euler_step(velocity: Velocity, x: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """One explicit Euler step ``x + (s1 - s0) u(x, s0)`` (docs/theory.md §10.3)."""
    return x + euler_increment(_rhs(velocity), x, s0, s1, (s1 - s0).to(x.dtype))[0]


def heun_step(velocity: Velocity, x: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """One Heun (explicit trapezoid) step: ``x + (h / 2) (u(x, s0) + u(x + h u(x, s0), s1))``,
    ``h = s1 - s0``."""
    return x + heun_increment(_rhs(velocity), x, s0, s1, (s1 - s0).to(x.dtype))[0]


def heun_diffusers_step(velocity: Velocity, x: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """diffusers' ``FlowMatchHeunDiscreteScheduler`` step: Euler on the step touching
    ``sigma = 0`` (its second evaluation would sit at ``sigma = 0``), Heun elsewhere."""
    if float(s0) == 0.0 or float(s1) == 0.0:
        return euler_step(velocity, x, s0, s1)
    return heun_step(velocity, x, s0, s1)


SOLVERS: dict[str, Callable[[Velocity, Tensor, Tensor, Tensor], Tensor]] = {
    "euler": euler_step,
    "heun": heun_step,
    "heun-diffusers": heun_diffusers_step,
}

_SCHEME = {"euler": "euler", "heun": "heun", "heun-diffusers": "heun"}
"""The scheme of :mod:`simulate.solvers.steps` each solver steps with (away from ``sigma = 0``)."""


def nfe_per_step(solver: str) -> int:
    """Network evaluations per step (1 for Euler, 2 for Heun; 2 for ``heun-diffusers`` except
    on its last step, see ``nfe_per_map``)."""
    return STAGES[_SCHEME[_check_solver(solver)]]


def nfe_per_map(solver: str, steps: int) -> int:
    """Network evaluations of one ``steps``-step map: ``N``, ``2N`` or ``2N - 1`` (heun-diffusers)."""
    return nfe_per_step(solver) * int(steps) - (1 if solver == "heun-diffusers" else 0)


def solver_note(solver: str, family: str) -> str | None:
    """Why a solver follows no diffusers pipeline for this model family, or ``None``.

    ``FluxPipeline`` passes custom ``sigmas`` (and ``mu``) to its scheduler's ``set_timesteps``, which
    ``FlowMatchHeunDiscreteScheduler`` does not take, so no FLUX pipeline runs ``heun-diffusers``: on
    FLUX it is Heun with an Euler last step on FLUX's grid, not a pipeline's sampler.
    """
    if solver == "heun-diffusers" and family == "flux":
        return ("--solver heun-diffusers on FLUX: FluxPipeline cannot use FlowMatchHeunDiscreteScheduler (it passes "
                "custom sigmas, which that scheduler does not take), so this map matches no diffusers FLUX pipeline; "
                "it is Heun with an Euler last step on FLUX's grid")
    return None


def warn_solver(solver: str, family: str) -> None:
    """Print ``solver_note`` as one ``pfode: warning:`` line on stderr, when there is one."""
    note = solver_note(solver, family)
    if note is not None:
        import sys

        print(f"pfode: warning: {note}", file=sys.stderr, flush=True)


def _check_solver(solver: str) -> str:
    return check_choice("solver", solver, tuple(SOLVERS))


def _check_grid(sigmas: Tensor, decreasing: bool) -> Tensor:
    sig = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sig.numel() < 2:
        raise ValueError(f"sigmas needs at least two values, got {sig.numel()}")
    if not bool(torch.isfinite(sig).all()) or float(sig.min()) < 0.0 or float(sig.max()) > 1.0:
        raise ValueError("sigmas must be finite and lie in [0, 1]")
    d = sig.diff()
    if decreasing and not bool((d < 0).all()):
        raise ValueError("generation needs a strictly decreasing sigma grid (noise at sigma = 1 to data at 0)")
    if not decreasing and not bool((d > 0).all()):
        raise ValueError("inversion needs a strictly increasing sigma grid (data at sigma = 0 to noise at 1)")
    return sig


def solve(
    velocity: Velocity,
    x: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    checkpoint: bool = False,
    progress: Progress = None,
) -> Tensor:
    """Integrate ``dx/dsigma = u`` along ``sigmas`` in the given order (no direction check).

    Args:
        velocity: ``u(x, sigma)`` for latents ``x`` of shape ``(B, ...)``.
        x: the initial state.
        sigmas: the grid, walked from ``sigmas[0]`` to ``sigmas[-1]``.
        solver: ``"euler"``, ``"heun"`` or ``"heun-diffusers"``.
        checkpoint: recompute each step in the backward pass (reverse-mode AD through many
            steps of a large model).
        progress: called as ``progress(step, total)`` after each step.
    """
    step = SOLVERS[_check_solver(solver)]
    sig = torch.as_tensor(sigmas, dtype=torch.float64).to(x.device)
    total = sig.numel() - 1
    for i in range(total):
        s0, s1 = sig[i], sig[i + 1]
        if checkpoint and torch.is_grad_enabled():
            x = _checkpoint(step, velocity, x, s0, s1, use_reentrant=False)
        else:
            x = step(velocity, x, s0, s1)
        if progress is not None:
            progress(i + 1, total)
    return x


def generate(velocity: Velocity, z: Tensor, sigmas: Tensor, *, solver: str = "euler", **kwargs: object) -> Tensor:
    """The generation map ``G``: from noise ``z`` at ``sigmas[0] ~ 1`` down to ``sigma = 0``.

    ``sigmas`` is the model's grid as ``FlowModel.sigmas`` returns it (decreasing).
    """
    return solve(velocity, z, _check_grid(sigmas, decreasing=True), solver=solver, **kwargs)  # type: ignore[arg-type]


def invert(velocity: Velocity, x: Tensor, sigmas: Tensor, *, solver: str = "euler", **kwargs: object) -> Tensor:
    """The numerical inversion ``F~``: the same (decreasing) grid walked from ``0`` up to ``1``."""
    sig = _check_grid(sigmas, decreasing=True).flip(0)
    return solve(velocity, x, sig, solver=solver, **kwargs)  # type: ignore[arg-type]
