"""What the ODE solvers integrate and what they return (docs/theory.md §1.1).

* :class:`SupportsVelocity` / :class:`SupportsDivergence` -- the duck-typed field protocols;
* :class:`SolveResult` -- the one result type of every map of :mod:`simulate`: ``.x`` (the
  final state), ``.logdet`` (``None`` unless asked for) and ``.nfe``;
* :func:`field_rhs` -- the right-hand side ``(v(x, t), div v(x, t) or None)`` of a field, with
  the shapes it returns checked, in the form the step increments of
  :mod:`simulate.solvers.steps` take;
* :func:`unchecked_rhs` -- the fast path :func:`simulate.solvers.dopri5` uses for the exact
  fields of :mod:`simulate.fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, Union, runtime_checkable

from torch import Tensor

__all__ = [
    "Callback",
    "Rhs",
    "SolveResult",
    "SupportsDivergence",
    "SupportsVelocity",
    "TimeLike",
    "field_rhs",
    "unchecked_rhs",
]

TimeLike = Union[float, Tensor]
"""A time: a Python float (same for all rows) or a ``(B,)`` tensor of per-row times."""

Callback = Callable[[dict[str, Any]], None]

Rhs = Callable[[Tensor, Any], "tuple[Tensor, Tensor | None]"]
"""``rhs(x, t) -> (v(x, t), div v(x, t) or None)``: what a step increment evaluates."""


@runtime_checkable
class SupportsVelocity(Protocol):
    """What the solvers integrate (duck-typed; nothing needs to subclass this).

    ``velocity(x, t)`` takes ``x`` of shape ``(B, n)`` and ``t`` either a Python float (one
    time for the whole batch) or a tensor of shape ``(B,)`` (per-row times, used by
    :func:`simulate.solvers.dopri5`), and returns ``v(x, t)`` with the shape, dtype and device
    of ``x``.
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
    """Outcome of one ODE solve (and the common part of every map's result).

    Convention of :mod:`simulate`: every map (``generate``, ``invert``, the solvers,
    ``invert_fixed_point``) returns a ``SolveResult`` (or a subclass adding fields, e.g.
    :class:`simulate.inversion.InversionResult`); the mapped state is ``.x``.

    Attributes:
        x: Final state ``x(t_1)``, shape ``(B, n)``, dtype/device of the input.
        logdet: ``integral_{t_0}^{t_1} div v(x(t), t) dt`` per row, shape ``(B,)``, when the
            solve was run with ``logdet=True``; otherwise ``None``.
        nfe: Number of (batched) evaluations of the right-hand side, i.e. calls of
            ``field.velocity`` (each paired with one ``field.divergence`` call under
            ``logdet=True``).
        n_accepted: :func:`simulate.solvers.dopri5` only: accepted steps per row, int64 ``(B,)``.
        n_rejected: :func:`simulate.solvers.dopri5` only: rejected steps per row, int64 ``(B,)``.
        row_evals: :func:`simulate.solvers.dopri5` only: total number of rows passed to the
            field over all calls (at most ``nfe * B``; smaller because finished rows are dropped).
    """

    x: Tensor
    logdet: Tensor | None
    nfe: int
    n_accepted: Tensor | None = None
    n_rejected: Tensor | None = None
    row_evals: int | None = None


def field_rhs(field: Any, x: Tensor, t: TimeLike, logdet: bool) -> tuple[Tensor, Tensor | None]:
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


def unchecked_rhs(field: Any, x: Tensor, t0: float, t1: float) -> Callable[..., Any] | None:
    """The field's ``evaluate_unchecked`` when :func:`simulate.solvers.dopri5` can vouch for its
    inputs, else ``None``.

    :meth:`simulate.fields.VelocityField.evaluate_unchecked` skips the per-call validation of
    :meth:`~simulate.fields.VelocityField.evaluate` (finite ``x`` of the field's dtype, device and
    dimension; ``t`` in ``[0, 1]``; finite results). ``dopri5`` checks ``x`` once, only
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
