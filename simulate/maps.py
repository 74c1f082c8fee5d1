"""The generation map ``G``, the inversion map ``F = G^{-1}`` and reconstruction ``G(F~(x))``.

docs/theory.md §1.1: ``G`` is the PF-ODE flow from ``t = 0`` (noise) to ``t = 1`` (data), ``F``
the flow from ``t = 1`` back to ``t = 0``. Section 3: reconstruction inverts ``x`` to a noise
``z~`` (e.g. by Euler inversion, inexact) and regenerates ``x^ = G(z~)``; the error
``||x^ - x||`` is the inverted-noise discrepancy amplified by the instability of ``G``.

* :func:`generate` -- ``G`` with any solver (``"dopri5"`` by default: the "exact" map);
* :func:`invert` -- ``F`` by integrating backward (``method="ode"``) or by exactly inverting
  the discrete generation scheme of a fixed-grid solver (``method="fixed_point"``, see
  :mod:`simulate.inversion`);
* :func:`reconstruct` -- both, with the per-row reconstruction error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .inversion import ON_FAIL, InversionResult, invert_fixed_point
from .solvers import (
    SOLVERS,
    SolveResult,
    _check_field,
    _check_int,
    _check_positive,
    _check_state,
    dopri5,
    time_grid,
)

__all__ = [
    "SOLVER_NAMES",
    "INVERSION_METHODS",
    "Reconstruction",
    "generate",
    "invert",
    "reconstruct",
]

SOLVER_NAMES: tuple[str, ...] = (*SOLVERS, "dopri5")
"""Valid ``solver`` names: ``("euler", "heun", "rk4", "dopri5")``."""

INVERSION_METHODS: tuple[str, ...] = ("ode", "fixed_point")
"""Valid ``method`` names of :func:`invert`."""

_DEFAULT_STEPS = 100
_DEFAULT_RTOL = 1e-8
_DEFAULT_ATOL = 1e-10


@dataclass
class Reconstruction:
    """Outcome of :func:`reconstruct`.

    Attributes:
        z: Inverted noise ``z~ = F~(x)``, ``(B, n)``.
        x_hat: Reconstruction ``x^ = G~(z~)``, ``(B, n)``.
        error: Per-row reconstruction error ``||x^ - x||_2``, ``(B,)``.
        inversion: Full result of the inversion (a ``SolveResult`` or ``InversionResult``).
        generation: Full result of the regeneration.
    """

    z: Tensor
    x_hat: Tensor
    error: Tensor
    inversion: SolveResult | InversionResult
    generation: SolveResult


def _check_solver(name: str, solver: Any) -> str:
    if solver not in SOLVER_NAMES:
        raise ValueError(f"{name} must be one of {', '.join(SOLVER_NAMES)}, got {solver!r}")
    return solver


def _check_common(steps: Any, rtol: Any, atol: Any, steps_name: str = "steps") -> tuple:
    return (
        _check_int(steps_name, steps),
        _check_positive("rtol", rtol),
        _check_positive("atol", atol, allow_zero=True),
    )


def _flow(
    field: Any,
    x: Tensor,
    t0: float,
    t1: float,
    solver: str,
    steps: int,
    rtol: float,
    atol: float,
    logdet: bool,
    h0: float | None,
    max_steps: int,
) -> SolveResult:
    if solver == "dopri5":
        return dopri5(
            field, x, t0, t1, rtol=rtol, atol=atol, h0=h0, max_steps=max_steps, logdet=logdet
        )
    ts = time_grid(steps, t0, t1, device=x.device)
    return SOLVERS[solver](field, x, ts, logdet=logdet)


def generate(
    field: Any,
    z: Tensor,
    *,
    solver: str = "dopri5",
    steps: int = _DEFAULT_STEPS,
    rtol: float = _DEFAULT_RTOL,
    atol: float = _DEFAULT_ATOL,
    logdet: bool = False,
    h0: float | None = None,
    max_steps: int = 100_000,
) -> SolveResult:
    """The generation map ``G``: integrate ``dx/dt = v(x, t)`` from ``t = 0`` to ``t = 1``.

    Args:
        field: A :class:`simulate.solvers.SupportsVelocity` (``SupportsDivergence`` if ``logdet``).
        z: Noise ``x(0)``, shape ``(B, n)``, finite.
        solver: ``"euler"``, ``"heun"``, ``"rk4"`` (uniform grid of ``steps`` steps) or
            ``"dopri5"`` (adaptive, per-row ``rtol`` / ``atol``).
        steps: Number of steps of a fixed-grid solver (``>= 1``; ignored by ``dopri5``).
        rtol: Relative tolerance of ``dopri5`` (``> 0``; ignored by fixed-grid solvers).
        atol: Absolute tolerance of ``dopri5`` (``>= 0``).
        logdet: Also return ``log |det J_G(z)| = integral_0^1 div v dt`` (Lemma D.1).
        h0: Initial step of ``dopri5`` (``None``: automatic).
        max_steps: Step-attempt budget of ``dopri5``.

    Returns:
        :class:`simulate.solvers.SolveResult` with ``x = G(z)`` (and ``logdet``).

    Raises:
        ValueError: Unknown solver (the message lists the valid ones), ``steps < 1``,
            ``rtol <= 0``, ``atol < 0``, non-finite ``z``.
    """
    solver = _check_solver("solver", solver)
    steps, rtol, atol = _check_common(steps, rtol, atol)
    _check_field(field, logdet)
    z = _check_state(z, "z")
    return _flow(field, z, 0.0, 1.0, solver, steps, rtol, atol, logdet, h0, max_steps)


def invert(
    field: Any,
    x: Tensor,
    *,
    solver: str = "dopri5",
    steps: int = _DEFAULT_STEPS,
    method: str = "ode",
    rtol: float = _DEFAULT_RTOL,
    atol: float = _DEFAULT_ATOL,
    logdet: bool = False,
    h0: float | None = None,
    max_steps: int = 100_000,
    tol: float = 1e-12,
    max_iter: int = 200,
    on_fail: str = "raise",
) -> SolveResult | InversionResult:
    """The inversion map ``F = G^{-1}``: from data ``x = x(1)`` back to noise ``x(0)``.

    ``method="ode"`` integrates the PF-ODE backward (``t: 1 -> 0``) with ``solver``; with
    ``solver="euler"`` this is docs/theory.md §5.1's Euler inversion
    ``y_{k+1} = y_k - h v(y_k, t_k)``, ``t_k = 1 - k h``. ``method="fixed_point"`` instead
    inverts the discrete generation scheme of ``solver`` on the uniform ``0 -> 1`` grid of
    ``steps`` steps (:func:`simulate.inversion.invert_fixed_point`), so that
    ``generate(field, z, solver=solver, steps=steps)`` reproduces ``x`` to about ``tol``.

    Args:
        field: A :class:`simulate.solvers.SupportsVelocity` (``SupportsDivergence`` if ``logdet``).
        x: Data ``x(1)``, shape ``(B, n)``, finite.
        solver: One of :data:`SOLVER_NAMES`; ``"dopri5"`` only with ``method="ode"``.
        steps: Number of steps of a fixed-grid solver (``>= 1``).
        method: ``"ode"`` or ``"fixed_point"``.
        rtol: Relative tolerance of ``dopri5`` (``> 0``).
        atol: Absolute tolerance of ``dopri5`` (``>= 0``).
        logdet: ``method="ode"`` only: also return
            ``log |det J_F(x)| = integral_1^0 div v dt``.
        h0: Initial step of ``dopri5``.
        max_steps: Step-attempt budget of ``dopri5``.
        tol: Fixed-point tolerance (``method="fixed_point"``).
        max_iter: Fixed-point iterations per step (``method="fixed_point"``).
        on_fail: Fixed-point non-convergence policy: ``"raise"``, ``"warn"`` or ``"ignore"``.

    Returns:
        ``SolveResult`` (``method="ode"``) or ``InversionResult`` (``"fixed_point"``); the
        inverted noise is ``.x`` in both.

    Raises:
        ValueError: Invalid arguments (unknown names are listed with the valid ones), or
            ``fixed_point`` with ``dopri5`` / with ``logdet``.
        RuntimeError: Solver failure (step-size underflow, fixed-point non-convergence).
    """
    solver = _check_solver("solver", solver)
    if method not in INVERSION_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(INVERSION_METHODS)}, got {method!r}"
        )
    steps, rtol, atol = _check_common(steps, rtol, atol)
    if on_fail not in ON_FAIL:
        raise ValueError(f"on_fail must be one of {', '.join(ON_FAIL)}, got {on_fail!r}")
    _check_field(field, logdet)
    x = _check_state(x)
    if method == "ode":
        return _flow(field, x, 1.0, 0.0, solver, steps, rtol, atol, logdet, h0, max_steps)
    if solver == "dopri5":
        raise ValueError(
            "solver='dopri5' has no fixed discrete scheme to invert; method='fixed_point' "
            f"needs one of {', '.join(SOLVERS)}"
        )
    if logdet:
        raise ValueError("logdet=True is only available with method='ode'")
    ts = time_grid(steps, 0.0, 1.0, device=x.device)
    return invert_fixed_point(
        field, x, ts, scheme=solver, tol=tol, max_iter=max_iter, on_fail=on_fail
    )


def reconstruct(
    field: Any,
    x: Tensor,
    *,
    inv_solver: str = "dopri5",
    inv_steps: int = _DEFAULT_STEPS,
    inv_method: str = "ode",
    gen_solver: str = "dopri5",
    gen_steps: int = _DEFAULT_STEPS,
    rtol: float = _DEFAULT_RTOL,
    atol: float = _DEFAULT_ATOL,
    h0: float | None = None,
    max_steps: int = 100_000,
    tol: float = 1e-12,
    max_iter: int = 200,
    on_fail: str = "raise",
) -> Reconstruction:
    """Invert then regenerate: ``z~ = F~(x)``, ``x^ = G~(z~)``, error ``||x^ - x||``.

    The paper's experiment (docs/theory.md §4.3, Fig. 4) is ``inv_solver="euler"`` with
    ``gen_solver="dopri5"`` (exact regeneration) or ``gen_solver="euler"`` (the same
    discrete scheme); the exact-inversion baseline is ``inv_method="fixed_point"`` with
    ``inv_solver == gen_solver`` and ``inv_steps == gen_steps``.

    Args:
        field: A :class:`simulate.solvers.SupportsVelocity`.
        x: Data to reconstruct, ``(B, n)``, finite.
        inv_solver: Solver of the inversion (see :func:`invert`).
        inv_steps: Steps of a fixed-grid inversion solver (``>= 1``).
        inv_method: ``"ode"`` or ``"fixed_point"``.
        gen_solver: Solver of the regeneration (see :func:`generate`).
        gen_steps: Steps of a fixed-grid regeneration solver (``>= 1``).
        rtol: Relative tolerance of ``dopri5`` (both directions).
        atol: Absolute tolerance of ``dopri5`` (both directions).
        h0: Initial step of ``dopri5``.
        max_steps: Step-attempt budget of ``dopri5``.
        tol: Fixed-point tolerance.
        max_iter: Fixed-point iterations per step.
        on_fail: Fixed-point non-convergence policy.

    Returns:
        :class:`Reconstruction`.

    Raises:
        ValueError: Invalid arguments (see :func:`invert` and :func:`generate`).
        RuntimeError: Solver failure.
    """
    _check_solver("inv_solver", inv_solver)
    _check_solver("gen_solver", gen_solver)
    _check_int("inv_steps", inv_steps)
    _check_int("gen_steps", gen_steps)
    x = _check_state(x)
    inv = invert(
        field,
        x,
        solver=inv_solver,
        steps=inv_steps,
        method=inv_method,
        rtol=rtol,
        atol=atol,
        h0=h0,
        max_steps=max_steps,
        tol=tol,
        max_iter=max_iter,
        on_fail=on_fail,
    )
    z = inv.x
    if not bool(torch.isfinite(z).all()):
        raise RuntimeError("reconstruct: the inversion produced non-finite noise")
    gen = generate(
        field,
        z,
        solver=gen_solver,
        steps=gen_steps,
        rtol=rtol,
        atol=atol,
        h0=h0,
        max_steps=max_steps,
    )
    error = torch.linalg.vector_norm(gen.x - x, dim=1)
    return Reconstruction(z=z, x_hat=gen.x, error=error, inversion=inv, generation=gen)
