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

Return convention: every map returns a :class:`simulate.solvers.SolveResult` (the mapped state
is ``.x``, with ``.logdet`` and ``.nfe``); the fixed-point inversion returns its subclass
:class:`simulate.inversion.InversionResult`, which adds the iteration diagnostics. Inputs are
validated once, here, and the solvers' unchecked implementations are called.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from simulate.inversion import (
    FIXED_POINT_SCHEMES,
    ON_FAIL,
    InversionResult,
    _invert_fixed_point,
)
from simulate.solvers.checks import (
    check_choice,
    check_field,
    check_int,
    check_positive,
    check_state,
    grid_values,
)
from simulate.solvers.base import SolveResult
from simulate.solvers.dopri5 import _dopri5, dopri5_options
from simulate.solvers.fixed import SOLVERS, _integrate_grid, _uniform_grid

__all__ = [
    "INVERSION_METHODS",
    "SOLVER_NAMES",
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
        inversion: Full result of the inversion (a ``SolveResult``; an ``InversionResult`` for
            ``inv_method="fixed_point"``).
        generation: Full result of the regeneration.
    """

    z: Tensor
    x_hat: Tensor
    error: Tensor
    inversion: SolveResult
    generation: SolveResult


@dataclass(frozen=True)
class _FlowOptions:
    """Validated solver options of one map."""

    solver: str
    steps: int
    rtol: float
    atol: float
    h0: Any  # float | None once checked by _with_dopri5
    max_steps: Any  # int once checked by _with_dopri5


def _flow_options(
    solver_flag: str, solver: Any, steps_flag: str, steps: Any, rtol: Any, atol: Any, h0: Any, max_steps: Any
) -> _FlowOptions:
    """Check the solver name, ``steps``, ``rtol`` and ``atol`` (messages name the flags)."""
    return _FlowOptions(
        solver=check_choice(solver_flag, solver, SOLVER_NAMES),
        steps=check_int(steps_flag, steps),
        rtol=check_positive("rtol", rtol),
        atol=check_positive("atol", atol, allow_zero=True),
        h0=h0,
        max_steps=max_steps,
    )


def _with_dopri5(opts: _FlowOptions, dtype: torch.dtype) -> _FlowOptions:
    """``dopri5``'s own options (``max_steps``, ``h0``, ``rtol`` floor) when it is the solver."""
    if opts.solver != "dopri5":
        return opts
    _, _, rtol, atol, h0, max_steps = dopri5_options(
        dtype, 0.0, 1.0, opts.rtol, opts.atol, opts.h0, opts.max_steps
    )
    return replace(opts, rtol=rtol, atol=atol, h0=h0, max_steps=max_steps)


def _flow(field: Any, x: Tensor, t0: float, t1: float, opts: _FlowOptions, logdet: bool) -> SolveResult:
    """Integrate from ``t0`` to ``t1`` with validated options (no checks)."""
    if opts.solver == "dopri5":
        return _dopri5(field, x, t0, t1, opts.rtol, opts.atol, opts.h0, opts.max_steps, logdet)
    grid = grid_values(_uniform_grid(opts.steps, t0, t1, x.device))
    return _integrate_grid(opts.solver, field, x, grid, logdet, None)


def _inversion_options(
    method: Any, opts: _FlowOptions, logdet: bool, tol: Any, max_iter: Any, on_fail: Any, method_flag: str
) -> tuple[str, float, int]:
    """Check ``method``, ``on_fail`` and, for ``fixed_point``, its scheme, ``tol`` and ``max_iter``."""
    method = check_choice(method_flag, method, INVERSION_METHODS)
    check_choice("on_fail", on_fail, ON_FAIL)
    if method == "ode":
        return method, tol, max_iter
    if opts.solver not in FIXED_POINT_SCHEMES:
        raise ValueError(
            "solver='dopri5' has no fixed discrete scheme to invert; method='fixed_point' "
            f"needs one of {', '.join(SOLVERS)}"
        )
    if logdet:
        raise ValueError("logdet=True is only available with method='ode'")
    return method, check_positive("tol", tol), check_int("max_iter", max_iter)


def _fixed_point_inverse(
    field: Any, x: Tensor, opts: _FlowOptions, tol: float, max_iter: int, on_fail: str
) -> InversionResult:
    grid = grid_values(_uniform_grid(opts.steps, 0.0, 1.0, x.device))
    return _invert_fixed_point(field, x, grid, opts.solver, tol, max_iter, on_fail)


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
    opts = _flow_options("solver", solver, "steps", steps, rtol, atol, h0, max_steps)
    check_field(field, logdet)
    z = check_state(z, "z")
    return _flow(field, z, 0.0, 1.0, _with_dopri5(opts, z.dtype), logdet)


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
) -> SolveResult:
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
        A ``SolveResult`` (``method="ode"``) or its subclass ``InversionResult``
        (``"fixed_point"``, with the iteration diagnostics); the inverted noise is ``.x``.

    Raises:
        ValueError: Invalid arguments (unknown names are listed with the valid ones), or
            ``fixed_point`` with ``dopri5`` / with ``logdet``.
        RuntimeError: Solver failure (step-size underflow, fixed-point non-convergence).
    """
    opts = _flow_options("solver", solver, "steps", steps, rtol, atol, h0, max_steps)
    method, tol, max_iter = _inversion_options(method, opts, logdet, tol, max_iter, on_fail, "method")
    check_field(field, logdet)
    x = check_state(x)
    if method == "ode":
        return _flow(field, x, 1.0, 0.0, _with_dopri5(opts, x.dtype), logdet)
    return _fixed_point_inverse(field, x, opts, tol, max_iter, on_fail)


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
    inv_opts = _flow_options("inv_solver", inv_solver, "inv_steps", inv_steps, rtol, atol, h0, max_steps)
    gen_opts = _flow_options("gen_solver", gen_solver, "gen_steps", gen_steps, rtol, atol, h0, max_steps)
    inv_method, tol, max_iter = _inversion_options(
        inv_method, inv_opts, False, tol, max_iter, on_fail, "inv_method"
    )
    check_field(field, False)
    x = check_state(x)
    inv_opts = _with_dopri5(inv_opts, x.dtype)
    gen_opts = _with_dopri5(gen_opts, x.dtype)
    if inv_method == "ode":
        inv = _flow(field, x, 1.0, 0.0, inv_opts, False)
    else:
        inv = _fixed_point_inverse(field, x, inv_opts, tol, max_iter, on_fail)
    z = inv.x
    if not bool(torch.isfinite(z).all()):
        raise RuntimeError("reconstruct: the inversion produced non-finite noise")
    gen = _flow(field, z, 0.0, 1.0, gen_opts, False)
    error = torch.linalg.vector_norm(gen.x - x, dim=1)
    return Reconstruction(z=z, x_hat=gen.x, error=error, inversion=inv, generation=gen)
