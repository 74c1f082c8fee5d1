"""Fixed-grid explicit one-step solvers :func:`euler`, :func:`heun`, :func:`rk4` (docs/theory.md §4.1).

All share ``solver(field, x, ts, *, logdet=False, callback=None) -> SolveResult`` and are collected
in :data:`SOLVERS`. The step arithmetic is the one of :mod:`simulate.solvers.steps` (shared with
:mod:`largemodel.study.ode` and :mod:`simulate.inversion`); times are handed to the field as Python
floats and the step is ``h_k = t_{k+1} - t_k`` in Python (float64) arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from simulate.solvers.checks import check_field, check_grid, check_int, check_state, check_times
from simulate.solvers.base import Callback, SolveResult, field_rhs
from simulate.solvers.steps import STAGES, STEP_INCREMENTS

__all__ = ["SOLVERS", "euler", "heun", "rk4", "time_grid"]


def _uniform_grid(steps: int, t0: float, t1: float, device: torch.device | str | None) -> Tensor:
    """float64 ``linspace(t0, t1, steps + 1)`` with end points set exactly (inputs trusted)."""
    ts = torch.linspace(t0, t1, steps + 1, dtype=torch.float64, device=device)
    ts[0], ts[-1] = t0, t1
    return ts


def time_grid(
    steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform time grid ``t_k = t0 + k (t1 - t0) / steps``, ``k = 0..steps``.

    Args:
        steps: Number of steps (``>= 1``); the grid has ``steps + 1`` points.
        t0: First time (``0`` for generation, ``1`` for inversion).
        t1: Last time; must differ from ``t0``. ``t1 < t0`` gives a decreasing grid.
        dtype: Floating dtype of the grid.
        device: Device of the grid.

    Returns:
        1-D tensor of length ``steps + 1`` whose end points are exactly ``t0`` and ``t1``.

    Raises:
        ValueError: ``steps < 1``, non-finite end points or ``t0 == t1``.
    """
    steps = check_int("steps", steps)
    t0, t1 = check_times(t0, t1)
    return _uniform_grid(steps, t0, t1, device).to(dtype)


def _integrate_grid(
    scheme: str,
    field: Any,
    x: Tensor,
    grid: list[float],
    logdet: bool,
    callback: Callback | None,
) -> SolveResult:
    """Walk ``grid`` with the increment of ``scheme`` (inputs already validated)."""
    increment = STEP_INCREMENTS[scheme]

    def rhs(y: Tensor, t: float) -> tuple[Tensor, Tensor | None]:
        return field_rhs(field, y, t, logdet)

    l = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if logdet else None
    for k, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        dx, dl = increment(rhs, x, t, t_next, t_next - t)
        x = x + dx
        if l is not None:
            l = l + dl
        if callback is not None:
            callback({"i": k, "t": t, "t_next": t_next, "x": x, "logdet": l})
    return SolveResult(x=x, logdet=l, nfe=STAGES[scheme] * (len(grid) - 1))


def _checked_grid_solve(
    scheme: str,
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    logdet: bool,
    callback: Callback | None,
) -> SolveResult:
    check_field(field, logdet)
    x = check_state(x)
    grid = check_grid(ts)
    return _integrate_grid(scheme, field, x, grid, logdet, callback)


def euler(
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    *,
    logdet: bool = False,
    callback: Callback | None = None,
) -> SolveResult:
    """Explicit Euler on the grid ``ts`` (order 1, one evaluation per step).

    With ``h_k = t_{k+1} - t_k`` (negative on a decreasing grid)::

        x_{k+1} = x_k + h_k v(x_k, t_k)
        l_{k+1} = l_k + h_k div v(x_k, t_k)          (logdet=True; l_0 = 0)

    On the inversion grid ``t_k = 1 - k h`` this is docs/theory.md §5.1's
    ``y_{k+1} = y_k - h v(y_k, t_k)``.

    Args:
        field: A :class:`SupportsVelocity` (a :class:`SupportsDivergence` if ``logdet``).
        x: Initial state ``x(t_0)``, shape ``(B, n)``, finite.
        ts: Strictly monotone 1-D grid ``t_0, ..., t_N`` (``N >= 1``), tensor or sequence.
        logdet: Also integrate ``div v`` along the path (same scheme).
        callback: Called after every step with a dict ``{"i", "t", "t_next", "x", "logdet"}``
            (``x`` / ``logdet`` are the values at ``t_next``).

    Returns:
        :class:`SolveResult` with ``x = x_N``, ``logdet = l_N`` (or ``None``), ``nfe = N``.

    Raises:
        ValueError: Bad grid, non-finite or mis-shaped ``x``, ``logdet`` without a divergence.
    """
    return _checked_grid_solve("euler", field, x, ts, logdet, callback)


def heun(
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    *,
    logdet: bool = False,
    callback: Callback | None = None,
) -> SolveResult:
    """Heun's method = explicit trapezoid (order 2, two evaluations per step).

    With ``h_k = t_{k+1} - t_k``::

        k_1 = v(x_k, t_k)
        k_2 = v(x_k + h_k k_1, t_{k+1})
        x_{k+1} = x_k + (h_k / 2) (k_1 + k_2)
        l_{k+1} = l_k + (h_k / 2) (div v(x_k, t_k) + div v(x_k + h_k k_1, t_{k+1}))

    (EDM's Algorithm 1 without the special-cased last step: every step is corrected.)

    Args:
        field: A :class:`SupportsVelocity` (a :class:`SupportsDivergence` if ``logdet``).
        x: Initial state ``x(t_0)``, shape ``(B, n)``, finite.
        ts: Strictly monotone 1-D grid ``t_0, ..., t_N`` (``N >= 1``).
        logdet: Also integrate ``div v`` along the path (same scheme).
        callback: Called after every step with ``{"i", "t", "t_next", "x", "logdet"}``.

    Returns:
        :class:`SolveResult` with ``x = x_N``, ``logdet`` (or ``None``), ``nfe = 2 N``.

    Raises:
        ValueError: Bad grid, non-finite or mis-shaped ``x``, ``logdet`` without a divergence.
    """
    return _checked_grid_solve("heun", field, x, ts, logdet, callback)


def rk4(
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    *,
    logdet: bool = False,
    callback: Callback | None = None,
) -> SolveResult:
    """Classical Runge--Kutta (order 4, four evaluations per step).

    With ``h_k = t_{k+1} - t_k`` and ``t_{k+1/2} = (t_k + t_{k+1}) / 2``::

        k_1 = v(x_k, t_k)
        k_2 = v(x_k + (h_k / 2) k_1, t_{k+1/2})
        k_3 = v(x_k + (h_k / 2) k_2, t_{k+1/2})
        k_4 = v(x_k + h_k k_3, t_{k+1})
        x_{k+1} = x_k + (h_k / 6) (k_1 + 2 k_2 + 2 k_3 + k_4)
        l_{k+1} = l_k + (h_k / 6) (d_1 + 2 d_2 + 2 d_3 + d_4),  d_i = div v at stage i

    Args:
        field: A :class:`SupportsVelocity` (a :class:`SupportsDivergence` if ``logdet``).
        x: Initial state ``x(t_0)``, shape ``(B, n)``, finite.
        ts: Strictly monotone 1-D grid ``t_0, ..., t_N`` (``N >= 1``).
        logdet: Also integrate ``div v`` along the path (same scheme).
        callback: Called after every step with ``{"i", "t", "t_next", "x", "logdet"}``.

    Returns:
        :class:`SolveResult` with ``x = x_N``, ``logdet`` (or ``None``), ``nfe = 4 N``.

    Raises:
        ValueError: Bad grid, non-finite or mis-shaped ``x``, ``logdet`` without a divergence.
    """
    return _checked_grid_solve("rk4", field, x, ts, logdet, callback)


SOLVERS: dict[str, Callable[..., SolveResult]] = {"euler": euler, "heun": heun, "rk4": rk4}
"""Fixed-grid solvers by name; all share ``(field, x, ts, *, logdet, callback)``."""
