"""ODE solvers for the probability-flow ODE ``dx/dt = v(x, t)`` (docs/theory.md §1.1).

Generation integrates the ODE forward in time (``t: 0 -> 1``, noise to data, the map ``G``);
inversion integrates it backward (``t: 1 -> 0``, the map ``F = G^{-1}``). Every solver here
works in either direction: the sign of the step ``h = t_{k+1} - t_k`` carries it.

Two families, k-diffusion / torchdiffeq style:

* fixed-grid explicit one-step schemes on a user-given time grid ``ts`` -- :func:`euler`,
  :func:`heun` (explicit trapezoid), :func:`rk4` -- all with the signature
  ``solver(field, x, ts, *, logdet=False, callback=None) -> SolveResult`` and collected in
  :data:`SOLVERS`;
* the adaptive Dormand--Prince 5(4) pair :func:`dopri5` with *per-sample* error control:
  every row of the batch keeps its own time, step size and accept/reject decision, and rows
  that have reached the end time are no longer evaluated.

Log-determinant augmentation (docs/theory.md §4.1, Lemma D.1): with ``logdet=True`` the
state is augmented by ``l`` with ``dl/dt = div v(x, t)``, ``l(t_0) = 0``, integrated with the
same scheme (and, for :func:`dopri5`, under the same error control). Then
``l(t_1) = log |det d x(t_1) / d x(t_0)|``: for generation ``0 -> 1`` this is
``log |det J_G(z)|``, for inversion ``1 -> 0`` it is ``log |det J_F(x)|``.

The step increments ``Phi`` of the fixed-grid schemes (``x_{k+1} = x_k + Phi(x_k)``) are
exposed through :data:`STEP_INCREMENTS` so that :mod:`simulate.inversion` inverts exactly the
floating-point map the solvers apply.

All arithmetic happens on the device and in the dtype of ``x``; there are no Python loops over
rows (only over time steps). Times are kept in float64 internally and handed to the field as
Python floats (fixed grid) or as ``(B,)`` tensors of ``x``'s dtype (adaptive solver).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "SupportsVelocity",
    "SupportsDivergence",
    "SolveResult",
    "time_grid",
    "euler",
    "heun",
    "rk4",
    "dopri5",
    "SOLVERS",
    "STEP_INCREMENTS",
    "STAGES",
]

TimeLike = Union[float, Tensor]
"""A time: a Python float (same for all rows) or a ``(B,)`` tensor of per-row times."""


@runtime_checkable
class SupportsVelocity(Protocol):
    """What the solvers integrate (duck-typed; nothing needs to subclass this).

    ``velocity(x, t)`` takes ``x`` of shape ``(B, n)`` and ``t`` either a Python float (one
    time for the whole batch) or a tensor of shape ``(B,)`` (per-row times, used by
    :func:`dopri5`), and returns ``v(x, t)`` with the shape, dtype and device of ``x``.
    """

    def velocity(self, x: Tensor, t: TimeLike) -> Tensor:  # pragma: no cover - protocol
        ...


@runtime_checkable
class SupportsDivergence(SupportsVelocity, Protocol):
    """A :class:`SupportsVelocity` that also provides ``div_x v(x, t)`` of shape ``(B,)``.

    Needed only with ``logdet=True`` (same ``x`` / ``t`` conventions as ``velocity``).
    """

    def divergence(self, x: Tensor, t: TimeLike) -> Tensor:  # pragma: no cover - protocol
        ...


@dataclass
class SolveResult:
    """Outcome of one ODE solve.

    Attributes:
        x: Final state ``x(t_1)``, shape ``(B, n)``, dtype/device of the input.
        logdet: ``integral_{t_0}^{t_1} div v(x(t), t) dt`` per row, shape ``(B,)``, when the
            solve was run with ``logdet=True``; otherwise ``None``.
        nfe: Number of (batched) evaluations of the right-hand side, i.e. calls of
            ``field.velocity`` (each paired with one ``field.divergence`` call under
            ``logdet=True``).
        n_accepted: :func:`dopri5` only: accepted steps per row, int64 ``(B,)``.
        n_rejected: :func:`dopri5` only: rejected steps per row, int64 ``(B,)``.
        row_evals: :func:`dopri5` only: total number of rows passed to the field over all
            calls (at most ``nfe * B``; smaller because finished rows are dropped).
    """

    x: Tensor
    logdet: Tensor | None
    nfe: int
    n_accepted: Tensor | None = None
    n_rejected: Tensor | None = None
    row_evals: int | None = None


Callback = Callable[[dict[str, Any]], None]

# --------------------------------------------------------------------------------------------
# validation helpers (ValueError messages start with the parameter's name)
# --------------------------------------------------------------------------------------------


def _check_state(x: Any, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, n), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (B, n), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return x


def _check_field(field: Any, logdet: bool) -> None:
    if not callable(getattr(field, "velocity", None)):
        raise TypeError("field must provide velocity(x, t) (see simulate.solvers.SupportsVelocity)")
    if logdet and not callable(getattr(field, "divergence", None)):
        raise ValueError(
            "logdet=True needs field.divergence(x, t) (see simulate.solvers.SupportsDivergence); "
            f"{type(field).__name__} has none"
        )


def _check_grid(ts: Tensor | Sequence[float]) -> list[float]:
    if isinstance(ts, Tensor):
        if ts.ndim != 1:
            raise ValueError(f"ts must be 1-D, got shape {tuple(ts.shape)}")
        grid = [float(t) for t in ts.detach().to("cpu", torch.float64).tolist()]
    else:
        try:
            grid = [float(t) for t in ts]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ts must be a 1-D sequence of real times, got {ts!r}") from exc
    if len(grid) < 2:
        raise ValueError(f"ts must contain at least 2 times, got {len(grid)}")
    if not all(math.isfinite(t) for t in grid):
        raise ValueError("ts must be finite")
    diffs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise ValueError("ts must be strictly monotone (all increasing or all decreasing)")
    return grid


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number, got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    ok = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer()
    )
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def _rhs(field: Any, x: Tensor, t: TimeLike, logdet: bool) -> tuple[Tensor, Tensor | None]:
    """Evaluate ``(v(x, t), div v(x, t) or None)`` and check the shapes the field returns.

    Fields with an ``evaluate(x, t, velocity=, score=, log_prob=, divergence=)`` method (the exact
    fields of :mod:`simulate.fields`) give both in one pass when ``logdet`` is asked for.
    """
    d = None
    if logdet and callable(getattr(field, "evaluate", None)):
        values = field.evaluate(x, t, velocity=True, score=False, log_prob=False, divergence=True)
        v, d = values.velocity, values.divergence
    else:
        v = field.velocity(x, t)
        if logdet:
            d = field.divergence(x, t)
    if not isinstance(v, Tensor) or v.shape != x.shape:
        raise ValueError(
            f"field.velocity returned shape {tuple(getattr(v, 'shape', ()))}, "
            f"expected {tuple(x.shape)}"
        )
    if logdet and (not isinstance(d, Tensor) or d.shape != x.shape[:1]):
        raise ValueError(
            f"field.divergence returned shape {tuple(getattr(d, 'shape', ()))}, "
            f"expected {(x.shape[0],)}"
        )
    return v, d


def _unchecked_rhs(field: Any, x: Tensor, t0: float, t1: float) -> Callable[..., Any] | None:
    """The field's ``evaluate_unchecked`` when :func:`dopri5` can vouch for its inputs, else ``None``.

    :meth:`simulate.fields.VelocityField.evaluate_unchecked` skips the per-call validation of
    :meth:`~simulate.fields.VelocityField.evaluate` (finite ``x`` of the field's dtype, device and
    dimension; ``t`` in ``[0, 1]``; finite results). :func:`dopri5` checks ``x`` once, only
    evaluates times between ``t0`` and ``t1``, and rejects any step whose stages are not finite,
    so the checks are done once at its boundary; when it cannot vouch for them (other dtype or
    device, wrong dimension, times outside ``[0, 1]``), the checked path runs and raises the
    field's usual errors.
    """
    fn = getattr(field, "evaluate_unchecked", None)
    if not callable(fn):
        return None
    if getattr(field, "dtype", None) != x.dtype or getattr(field, "device", None) != x.device:
        return None
    if getattr(field, "n", None) != x.shape[1]:
        return None
    if not (0.0 <= t0 <= 1.0 and 0.0 <= t1 <= 1.0):
        return None
    return fn


# --------------------------------------------------------------------------------------------
# fixed-grid schemes
# --------------------------------------------------------------------------------------------


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
    steps = _check_int("steps", steps)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"t0, t1 must be finite and distinct, got {t0!r}, {t1!r}")
    ts = torch.linspace(t0, t1, steps + 1, dtype=torch.float64, device=device)
    ts[0], ts[-1] = t0, t1
    return ts.to(dtype)


def _euler_increment(
    field: Any, x: Tensor, t: float, t_next: float, logdet: bool
) -> tuple[Tensor, Tensor | None]:
    h = t_next - t
    v, d = _rhs(field, x, t, logdet)
    return h * v, (h * d if d is not None else None)


def _heun_increment(
    field: Any, x: Tensor, t: float, t_next: float, logdet: bool
) -> tuple[Tensor, Tensor | None]:
    h = t_next - t
    k1, d1 = _rhs(field, x, t, logdet)
    k2, d2 = _rhs(field, x + h * k1, t_next, logdet)
    dl = 0.5 * h * (d1 + d2) if logdet else None  # type: ignore[operator]
    return 0.5 * h * (k1 + k2), dl


def _rk4_increment(
    field: Any, x: Tensor, t: float, t_next: float, logdet: bool
) -> tuple[Tensor, Tensor | None]:
    h = t_next - t
    t_mid = 0.5 * (t + t_next)
    k1, d1 = _rhs(field, x, t, logdet)
    k2, d2 = _rhs(field, x + (0.5 * h) * k1, t_mid, logdet)
    k3, d3 = _rhs(field, x + (0.5 * h) * k2, t_mid, logdet)
    k4, d4 = _rhs(field, x + h * k3, t_next, logdet)
    dx = (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    dl = (h / 6.0) * (d1 + 2.0 * d2 + 2.0 * d3 + d4) if logdet else None  # type: ignore[operator]
    return dx, dl


Increment = Callable[[Any, Tensor, float, float, bool], "tuple[Tensor, Tensor | None]"]

STEP_INCREMENTS: dict[str, Increment] = {
    "euler": _euler_increment,
    "heun": _heun_increment,
    "rk4": _rk4_increment,
}
"""``name -> Phi`` with ``x_{k+1} = x_k + Phi(field, x_k, t_k, t_{k+1}, logdet)[0]``."""

STAGES: dict[str, int] = {"euler": 1, "heun": 2, "rk4": 4}
"""Right-hand-side evaluations per step of each fixed-grid scheme."""


def _integrate_grid(
    scheme: str,
    field: Any,
    x: Tensor,
    ts: Tensor | Sequence[float],
    logdet: bool,
    callback: Callback | None,
) -> SolveResult:
    _check_field(field, logdet)
    x = _check_state(x)
    grid = _check_grid(ts)
    increment = STEP_INCREMENTS[scheme]
    l = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if logdet else None
    for k, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        dx, dl = increment(field, x, t, t_next, logdet)
        x = x + dx
        if l is not None:
            l = l + dl
        if callback is not None:
            callback({"i": k, "t": t, "t_next": t_next, "x": x, "logdet": l})
    return SolveResult(x=x, logdet=l, nfe=STAGES[scheme] * (len(grid) - 1))


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
    return _integrate_grid("euler", field, x, ts, logdet, callback)


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
    return _integrate_grid("heun", field, x, ts, logdet, callback)


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
    return _integrate_grid("rk4", field, x, ts, logdet, callback)


SOLVERS: dict[str, Callable[..., SolveResult]] = {"euler": euler, "heun": heun, "rk4": rk4}
"""Fixed-grid solvers by name; all share ``(field, x, ts, *, logdet, callback)``."""

# --------------------------------------------------------------------------------------------
# adaptive Dormand--Prince 5(4)
# --------------------------------------------------------------------------------------------

# Butcher tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Table II.5.2).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B = _DP_A[6]  # 5th-order weights (= last row: FSAL)
# e_j = b_j - b*_j with the embedded 4th-order weights
# b* = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40).
_DP_E = (
    71 / 57600,
    0.0,
    -71 / 16695,
    71 / 1920,
    -17253 / 339200,
    22 / 525,
    -1 / 40,
)
_SAFETY = 0.9
_FAC_MIN = 0.2
_FAC_MAX = 10.0
_ERR_EXPONENT = -1.0 / 5.0  # -1 / (q + 1), q = 4: order of the embedded error estimate


def _lincomb(coeffs: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``sum_j coeffs[j] * ks[j]`` skipping zero coefficients, accumulated in place in one fresh
    tensor (one pass per term, no temporaries; differentiable: the buffer is an output of the
    first product, and ``add_`` needs no saved values)."""
    out: Tensor | None = None
    for c, k in zip(coeffs, ks):
        if c == 0.0:
            continue
        if out is None:
            out = c * k
        else:
            out.add_(k, alpha=c)
    assert out is not None
    return out


def _rms_rows(a: Tensor, extra: Tensor | None) -> Tensor:
    """Per-row RMS of ``a`` (B, n), with an optional extra component ``extra`` (B,).

    ``||a_row||_2 / sqrt(m)`` (one pass over ``a``), with ``hypot`` for the extra component."""
    norm = torch.linalg.vector_norm(a, dim=1)
    m = a.shape[1]
    if extra is not None:
        norm = torch.hypot(norm, extra)
        m += 1
    return norm * (1.0 / math.sqrt(m))


def dopri5(
    field: Any,
    x: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    h0: float | None = None,
    max_steps: int = 100_000,
    logdet: bool = False,
) -> SolveResult:
    """Adaptive Dormand--Prince 5(4) with per-sample error control, from ``t0`` to ``t1``.

    Each row ``b`` carries its own time ``t_b``, step ``h_b`` and accept/reject decision.
    One attempted step of row ``b`` (``h`` signed, ``|h| <= |t1 - t_b|``: the last step is
    clipped so that ``t1`` is reached exactly), with ``k_1 = v(y, t)`` reused from the
    previous accepted step (FSAL)::

        k_i   = v(y + h sum_{j<i} a_ij k_j, t + c_i h),        i = 2..7
        y_new = y + h sum_j b_j k_j                            (5th order; k_7 = v(y_new, t+h))
        err   = h sum_j e_j k_j,     e_j = b_j - b*_j          (b*: embedded 4th order)
        ||err|| = sqrt( mean_i ( err_i / (atol + rtol max(|y_i|, |y_new,i|)) )^2 )
        accept iff ||err|| <= 1
        h <- h min(10, max(0.2, 0.9 ||err||^(-1/5)))          (both after accept and reject)

    ``c``, ``a``, ``b`` are the Dormand--Prince tableau (Hairer, Norsett & Wanner I, Table
    II.5.2). With ``logdet=True`` the augmented component ``l`` (``dl/dt = div v``) uses the
    same stages, ``l_new = l + h sum_j b_j d_j``, and its error enters the row's RMS as an
    extra component (so the log-determinant is under the same tolerance).

    Only rows still short of ``t1`` are passed to the field (index-selected, with their times
    as a ``(B_active,)`` tensor). Fields of :mod:`simulate.fields` are called through their
    ``evaluate_unchecked`` (inputs are checked once here, not on every call; a step with a
    non-finite stage is rejected like any step whose error is too large) when ``x`` has the
    field's dtype, device and dimension and ``t0``, ``t1`` lie in ``[0, 1]``. Unless ``h0`` is given, each row's first step comes from
    Hairer's starting-step heuristic (one extra evaluation):
    ``d0 = ||y0||, d1 = ||f0||, h_a = 0.01 d0 / d1`` (``1e-6`` if either is ``< 1e-5``),
    ``d2 = ||f(y0 + h_a f0) - f0|| / h_a``,
    ``h_b = (0.01 / max(d1, d2))^(1/5)`` (``max(1e-6, 1e-3 h_a)`` if ``max(d1, d2) <= 1e-15``),
    ``h = min(100 h_a, h_b, |t1 - t0|)``, norms as above with ``y_new = y0`` (``h_a`` is
    clipped to ``|t1 - t0|`` so that no time outside ``[t0, t1]`` is ever evaluated).

    Args:
        field: A :class:`SupportsVelocity` accepting per-row times (a :class:`SupportsDivergence`
            if ``logdet``).
        x: Initial state at ``t0``, shape ``(B, n)``, finite.
        t0: Start time.
        t1: End time (``t1 < t0`` integrates backward); must differ from ``t0``.
        rtol: Relative tolerance, ``> 0``; raised (with a ``RuntimeWarning``) to
            ``100 eps(dtype)`` if smaller, as in SciPy.
        atol: Absolute tolerance, ``>= 0``.
        h0: Initial step magnitude for every row (``> 0``); ``None``: per-row heuristic.
        max_steps: Most step attempts per row (accepted + rejected) before giving up.
        logdet: Also integrate ``div v`` along each path.

    Returns:
        :class:`SolveResult` with ``x = y(t1)``, ``logdet``, ``nfe`` (batched calls),
        ``n_accepted`` / ``n_rejected`` per row and ``row_evals``.

    Raises:
        ValueError: Invalid arguments or non-finite ``x``.
        RuntimeError: ``max_steps`` exceeded, or the step size underflowed (tolerance
            unreachable in ``x``'s dtype, or a singular / non-finite field).
    """
    _check_field(field, logdet)
    x = _check_state(x)
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol, allow_zero=True)
    max_steps = _check_int("max_steps", max_steps)
    try:
        t0, t1 = float(t0), float(t1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"t0, t1 must be real numbers, got {t0!r}, {t1!r}") from exc
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"t0, t1 must be finite and distinct, got {t0!r}, {t1!r}")
    if h0 is not None:
        h0 = _check_positive("h0", h0)
    min_rtol = 100.0 * torch.finfo(x.dtype).eps
    if rtol < min_rtol:
        warnings.warn(
            f"dopri5: rtol={rtol:g} is below 100 * eps({x.dtype}) and unreachable; "
            f"using rtol={min_rtol:.3g}",
            RuntimeWarning,
            stacklevel=2,
        )
        rtol = min_rtol

    B = x.shape[0]
    dev, dt = x.device, x.dtype
    tdt = torch.float64
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    nfe = 0
    row_evals = 0

    unchecked = _unchecked_rhs(field, x, t0, t1)

    def f(y: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        nonlocal nfe, row_evals
        nfe += 1
        row_evals += y.shape[0]
        if unchecked is not None:
            values = unchecked(y, t.to(dt), velocity=True, divergence=logdet)
            return values.velocity, values.divergence
        return _rhs(field, y, t.to(dt), logdet)

    y = x.clone()
    t = torch.full((B,), t0, dtype=tdt, device=dev)
    l = torch.zeros(B, dtype=dt, device=dev) if logdet else None
    n_acc = torch.zeros(B, dtype=torch.int64, device=dev)
    n_rej = torch.zeros(B, dtype=torch.int64, device=dev)
    if B == 0:
        return SolveResult(y, l, 0, n_acc, n_rej, 0)

    k1, d1 = f(y, t)  # FSAL slot: v(y, t) at each row's current state
    k1 = k1.clone()
    d1 = d1.clone() if d1 is not None else None

    if h0 is None:
        scale0 = atol + rtol * y.abs()
        lscale0 = atol + rtol * l.abs() if l is not None else None
        n0 = _rms_rows(y / scale0, l / lscale0 if l is not None else None)
        n1 = _rms_rows(k1 / scale0, d1 / lscale0 if d1 is not None else None)
        ha = torch.where((n0 < 1e-5) | (n1 < 1e-5), torch.full_like(n0, 1e-6), 0.01 * n0 / n1)
        ha = ha.to(tdt).clamp(max=span)  # never evaluate outside [t0, t1]
        hs = (direction * ha).to(dt)
        ka, da = f(y + hs[:, None] * k1, t + direction * ha)
        n2 = _rms_rows(
            (ka - k1) / scale0, (da - d1) / lscale0 if da is not None else None  # type: ignore
        ).to(tdt) / ha
        nmax = torch.maximum(n1.to(tdt), n2)
        hb = torch.where(
            nmax <= 1e-15,
            torch.clamp(ha * 1e-3, min=1e-6),
            (0.01 / nmax.clamp(min=1e-300)) ** (1.0 / 5.0),
        )
        h = torch.minimum(torch.minimum(100.0 * ha, hb), torch.full_like(ha, span))
    else:
        h = torch.full((B,), min(h0, span), dtype=tdt, device=dev)

    tiny = 16.0 * torch.finfo(tdt).eps * max(abs(t0), abs(t1))  # smallest meaningful |h|

    # State of the rows still short of t1 (compacted when rows finish; finished rows are
    # written to the outputs): every active row attempts one step per pass.
    rows = torch.arange(B, device=dev)  # original index of each active row
    ya, k1a, ta, ha, la, d1a = y, k1, t, h, l, d1
    acc_a = torch.zeros(B, dtype=torch.int64, device=dev)  # accepted steps of the active rows
    y_out = torch.zeros_like(x)
    l_out = torch.zeros(B, dtype=dt, device=dev) if logdet else None
    n_att = torch.zeros(B, dtype=torch.int64, device=dev)
    attempts = 0
    while rows.numel() > 0:
        attempts += 1
        if attempts > max_steps:
            raise RuntimeError(
                f"dopri5: max_steps={max_steps} step attempts exceeded with {rows.numel()} of "
                f"{B} rows short of t1={t1} (rtol={rtol}, atol={atol})"
            )
        remaining = (t1 - ta) * direction
        last = ha >= remaining
        hstep = torch.where(last, remaining, ha)  # step magnitude, float64
        hs64 = direction * hstep
        hs = hs64.to(dt)[:, None]
        t_next = torch.where(last, t1, ta + hs64)  # exactly t1 at the end
        ks = [k1a]
        ds = [d1a] if logdet else None
        for i in range(1, 7):
            if i < 6:
                yi = torch.addcmul(ya, hs, _lincomb(_DP_A[i], ks))
            else:
                yi = torch.addcmul(ya, hs, _lincomb(_DP_B, ks))  # = y_new (FSAL stage)
                y_new = yi
            ki, di = f(yi, t_next if _DP_C[i] == 1.0 else ta + _DP_C[i] * hs64)
            ks.append(ki)
            if ds is not None:
                ds.append(di)  # type: ignore[arg-type]
        err = hs * _lincomb(_DP_E, ks)
        scale = torch.maximum(ya.abs(), y_new.abs()).mul_(rtol).add_(atol)  # atol + rtol max(|y|, |y_new|)
        if ds is not None:
            hsl = hs[:, 0]
            l_new = la + hsl * _lincomb(_DP_B, ds[:6])  # type: ignore[operator]
            errl = hsl * _lincomb(_DP_E, ds)
            lscale = atol + rtol * torch.maximum(la.abs(), l_new.abs())  # type: ignore[union-attr]
            enorm = _rms_rows(err / scale, errl / lscale)
        else:
            enorm = _rms_rows(err / scale, None)
        enorm = enorm.to(tdt)
        accept = enorm <= 1.0  # False for a NaN or infinite error
        # h <- h min(10, max(0.2, 0.9 ||err||^(-1/5))): ||err|| = 0 gives 10 (through the
        # clamp at 1e-300), ||err|| = inf gives 0.2, NaN (a non-finite stage) gives 0.2
        factor = (_SAFETY * enorm.clamp(min=1e-300) ** _ERR_EXPONENT).clamp(_FAC_MIN, _FAC_MAX)
        factor = torch.nan_to_num(factor, nan=_FAC_MIN)
        h_new = hstep * factor

        # rejected rows whose step can no longer shrink: give up with a clear message
        if float(h_new.detach().min()) <= tiny:
            stuck = (~accept) & (h_new <= tiny)
            if bool(stuck.any()):
                bad = rows[stuck]
                raise RuntimeError(
                    f"dopri5: step size underflow for {bad.numel()} row(s) (first: row "
                    f"{int(bad[0])} at t={float(ta[stuck][0]):.17g}); the tolerance rtol={rtol}, "
                    f"atol={atol} is unreachable in {dt} or the field is singular / non-finite there"
                )

        # out-of-place updates (torch.where / index_put) of the states that carry gradients,
        # so reverse- and forward-mode AD work through the solve
        acc_col = accept[:, None]
        ya = torch.where(acc_col, y_new, ya)
        k1a = torch.where(acc_col, ks[6], k1a)
        if logdet:
            la = torch.where(accept, l_new, la)
            d1a = torch.where(accept, ds[6], d1a)  # type: ignore[index]
        ta = torch.where(accept, t_next, ta)
        ha = h_new
        acc_a = acc_a + accept
        fin = accept & last
        if bool(fin.any()):
            done_rows = rows[fin]
            y_out = y_out.index_put((done_rows,), ya[fin])
            if logdet:
                l_out = l_out.index_put((done_rows,), la[fin])  # type: ignore[union-attr]
            n_acc[done_rows] = acc_a[fin]
            n_att[done_rows] = attempts
            keep = ~fin
            rows, ya, k1a, ta, ha, acc_a = rows[keep], ya[keep], k1a[keep], ta[keep], ha[keep], acc_a[keep]
            if logdet:
                la, d1a = la[keep], d1a[keep]  # type: ignore[index]

    return SolveResult(
        x=y_out, logdet=l_out, nfe=nfe, n_accepted=n_acc, n_rejected=n_att - n_acc, row_evals=row_evals
    )
