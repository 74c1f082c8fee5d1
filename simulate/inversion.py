"""Exact inversion of a *discrete* generation scheme by fixed-point iteration.

The "exact inversion" baseline: instead of integrating the PF-ODE backward (which only
approximates ``F = G^{-1}`` and leaves a discrepancy that the instability of ``G`` amplifies,
docs/theory.md §5.1), invert the discrete generation map itself, step by step. A fixed-grid
explicit one-step scheme on the generation grid ``t_0, ..., t_N`` is

    z_{k+1} = z_k + Phi_k(z_k),     Phi_k = Phi(rhs, ., t_k, t_{k+1}, t_{k+1} - t_k)

(``Phi`` from :data:`simulate.solvers.STEP_INCREMENTS`: the very increments the solvers apply).
Given ``z_{k+1}``, ``z_k`` is the fixed point of ``z -> z_{k+1} - Phi_k(z)``, computed by the iteration

    Euler:  z <- z_{k+1} - h_k v(z, t_k)
    Heun:   z <- z_{k+1} - (h_k / 2) (v(z, t_k) + v(z + h_k v(z, t_k), t_{k+1}))
    RK4:    z <- z_{k+1} - (h_k / 6) (k_1 + 2 k_2 + 2 k_3 + k_4)(z)

which converges when ``Phi_k`` is a contraction (roughly ``|h_k| Lip(v) < 1``). Walking
``k = N-1, ..., 0`` from ``z_N = x`` gives ``z_0`` with ``scheme(z_0, ts) = x`` up to the
iteration tolerance: regenerating with the same scheme on the same grid reproduces ``x``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from simulate.solvers.checks import (
    check_choice,
    check_field,
    check_grid,
    check_int,
    check_positive,
    check_state,
)
from simulate.solvers.base import SolveResult, field_rhs
from simulate.solvers.steps import STAGES, STEP_INCREMENTS

__all__ = ["FIXED_POINT_SCHEMES", "ON_FAIL", "InversionResult", "invert_fixed_point"]

FIXED_POINT_SCHEMES: tuple[str, ...] = tuple(STEP_INCREMENTS)
"""Schemes whose discrete generation map can be inverted: ``("euler", "heun", "rk4")``."""

ON_FAIL: tuple[str, ...] = ("raise", "warn", "ignore")
"""What :func:`invert_fixed_point` does when a step does not converge."""


@dataclass(kw_only=True)
class InversionResult(SolveResult):
    """Outcome of :func:`invert_fixed_point`: a :class:`simulate.solvers.SolveResult` (``x``,
    ``logdet``, ``nfe``: the fields every map of :mod:`simulate` returns) with the fixed-point
    diagnostics added.

    Steps are indexed in generation order: entry ``k`` is the step ``t_k -> t_{k+1}``.

    Attributes:
        x: The inverted state ``z_0`` (the noise, for a ``0 -> 1`` generation grid), ``(B, n)``.
        logdet: Always ``None`` (no log-determinant is integrated).
        nfe: Batched evaluations of ``field.velocity`` (residual checks included).
        iterations: int64 ``(N,)``: fixed-point iterations of step ``k`` (maximum over rows).
        residuals: float64 ``(N,)``: ``max_b || z_k + Phi_k(z_k) - z_{k+1} ||_2`` after the
            iteration, i.e. how far the returned ``z_k`` is from reproducing ``z_{k+1}``.
        converged: ``True`` if every row of every step met the tolerance.
    """

    logdet: Tensor | None = None
    iterations: Tensor
    residuals: Tensor
    converged: bool


def invert_fixed_point(
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    *,
    scheme: str = "euler",
    tol: float = 1e-12,
    max_iter: int = 200,
    on_fail: str = "raise",
) -> InversionResult:
    """Invert the discrete scheme ``scheme`` on the generation grid ``ts`` by fixed points.

    For ``k = N-1, ..., 0``, starting from ``z_N = x`` and the guess ``z = z_{k+1}``::

        repeat  z_new = z_{k+1} - Phi_k(z);  delta = ||z_new - z||_2;  z = z_new
        until   delta <= tol_eff * max(1, ||z||_2)   (per row; converged rows are frozen)

    with ``tol_eff = max(tol, 4 eps(dtype))`` (a mixed absolute / relative criterion, so large
    states and float32 inputs do not stall). Only rows still iterating are passed to the
    field. ``Phi_k`` is the exact increment the solvers apply, so
    ``SOLVERS[scheme](field, result.x, ts).x`` reproduces ``x`` up to the residuals.

    Args:
        field: A :class:`simulate.solvers.SupportsVelocity`.
        x: The end state ``z_N`` (e.g. a data point), shape ``(B, n)``, finite.
        ts: The *generation* grid ``t_0, ..., t_N`` whose scheme is inverted (strictly
            monotone; ``0 -> 1`` for the generation map ``G``).
        scheme: ``"euler"``, ``"heun"`` or ``"rk4"``.
        tol: Convergence tolerance of the per-row change, ``> 0``.
        max_iter: Most iterations per step, ``>= 1``.
        on_fail: ``"raise"`` (``RuntimeError``), ``"warn"`` (``RuntimeWarning``, keep the last
            iterate) or ``"ignore"`` when a step does not converge.

    Returns:
        :class:`InversionResult` (``x`` is ``z_0``).

    Raises:
        ValueError: Unknown ``scheme`` / ``on_fail``, bad ``tol`` / ``max_iter`` / grid,
            non-finite ``x``.
        RuntimeError: A step did not converge (or diverged to non-finite values) and
            ``on_fail="raise"``.
    """
    check_choice("scheme", scheme, FIXED_POINT_SCHEMES)
    check_choice("on_fail", on_fail, ON_FAIL)
    check_field(field, False)
    x = check_state(x)
    grid = check_grid(ts)
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter)
    return _invert_fixed_point(field, x, grid, scheme, tol, max_iter, on_fail)


def _invert_fixed_point(
    field: Any, x: Tensor, grid: list[float], scheme: str, tol: float, max_iter: int, on_fail: str
) -> InversionResult:
    """:func:`invert_fixed_point` on validated inputs (``grid`` as Python floats)."""
    tol_eff = max(tol, 4.0 * torch.finfo(x.dtype).eps)

    increment = STEP_INCREMENTS[scheme]

    def rhs(y: Tensor, t: float) -> tuple[Tensor, Tensor | None]:
        return field_rhs(field, y, t, False)

    stages = STAGES[scheme]
    n_steps = len(grid) - 1
    B = x.shape[0]
    iterations = torch.zeros(n_steps, dtype=torch.int64)
    residuals = torch.zeros(n_steps, dtype=torch.float64)
    converged_all = True
    nfe = 0

    z_next = x
    for k in range(n_steps - 1, -1, -1):
        t, t_next = grid[k], grid[k + 1]
        z = z_next.clone()
        active = torch.arange(B, device=x.device)
        worst = 0.0
        it = 0
        diverged = False
        while active.numel() > 0 and it < max_iter:
            it += 1
            za = z[active]
            z_new = z_next[active] - increment(rhs, za, t, t_next, t_next - t)[0]
            nfe += stages
            change = torch.linalg.vector_norm(z_new - za, dim=1)
            z[active] = z_new
            finite = torch.isfinite(change)
            if not bool(finite.all()):
                diverged = True
                worst = math.inf
                break
            size = torch.linalg.vector_norm(z_new, dim=1).clamp(min=1.0)
            conv = change <= tol_eff * size
            if not bool(conv.all()):
                worst = float((change / size)[~conv].max())
            active = active[~conv]
        iterations[k] = it

        # residual of the returned iterate: how well it reproduces z_{k+1}
        if B > 0:
            regen = z + increment(rhs, z, t, t_next, t_next - t)[0]
            nfe += stages
            residuals[k] = float(torch.linalg.vector_norm(regen - z_next, dim=1).max())

        if diverged or active.numel() > 0:
            converged_all = False
            what = (
                "diverged to non-finite values"
                if diverged
                else f"did not converge in max_iter={max_iter} iterations"
            )
            msg = (
                f"invert_fixed_point({scheme}): step {k} (t={t:.6g} -> {t_next:.6g}, "
                f"h={t_next - t:.3g}) {what}: {active.numel()} of {B} row(s) still changing "
                f"(relative change up to {worst:.3e} > tol={tol_eff:.1e}; residual "
                f"{residuals[k]:.3e}). The step map is probably not a contraction "
                f"(|h| Lip(v) >= 1): use more steps."
            )
            if on_fail == "raise":
                raise RuntimeError(msg)
            if on_fail == "warn":
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
        z_next = z

    return InversionResult(
        x=z_next,
        iterations=iterations,
        residuals=residuals,
        converged=converged_all,
        nfe=nfe,
        logdet=None,
    )
