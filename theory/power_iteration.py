"""Power iteration for ``||J_f(x)||_2`` on any linearized map (docs/theory.md §2.1, §9.2).

One implementation of the iteration, shared by :func:`theory.coefficients.spectral_norm` (the
simulator's maps, ``simulate.instability.spectral_norm_G``) and by the large-model code
(``largemodel.study.instability.spectral_norm_G`` and the top singular direction of
``largemodel.diagnose.explain``). The map enters only through a :class:`LinearOperator`: an object with
``jvp(v) = J v`` and ``vjp(w) = J^T w`` at a fixed batch of points (rows independent), in the
way ``flow_matching``'s ``ODESolver(velocity_model)`` accepts any model. Two operators are
provided here: :class:`Linearization` (one stored autograd graph; ``J v`` by double backward)
and :class:`FuncLinearization` (``torch.func`` forward-mode JVP, reverse-mode VJP); the large
model supplies its own (math-attention JVP, checkpointed VJP).

Row norms are Euclidean over all non-batch dimensions (docs/theory.md §1.4). One numerical
convention for every estimate (docs/theory.md §12): the norms that become results or normalise
vectors (``||J v_k||``, ``||w||``, ``||g||``) are accumulated in float64 (:func:`_rownorm64`),
whatever the dtype of the map; the vectors themselves stay in the map's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from theory._validate import require_int

__all__ = ["LinearOperator", "Linearization", "FuncLinearization", "SpectralNorm", "power_iteration"]

BatchedMap = Callable[[Tensor], Tensor]


def _rownorm(t: Tensor) -> Tensor:
    """Euclidean norm of each row over all non-batch dimensions, shape ``(B,)``."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def _rownorm64(t: Tensor) -> Tensor:
    """:func:`_rownorm` accumulated in float64 (the estimators' one convention), shape ``(B,)`` float64."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1, dtype=torch.float64)


def _bcast(r: Tensor, like: Tensor) -> Tensor:
    """View a ``(B,)`` tensor so that it broadcasts against ``like`` of shape ``(B, ...)``."""
    return r.reshape((r.shape[0],) + (1,) * (like.ndim - 1))


def _check_out(y: object, x: Tensor) -> Tensor:
    """Check that ``f`` returned a batch with the same leading dimension as ``x``."""
    if not isinstance(y, torch.Tensor) or y.ndim < 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"f must map a batch of shape (B, ...) to a tensor of shape (B, ...) with the same B; "
            f"got input {tuple(x.shape)} and output {shape}"
        )
    if y.numel() == 0:
        raise ValueError(f"f must return at least one entry per row, got shape {tuple(y.shape)}")
    return y


class LinearOperator(Protocol):
    """``J = J_f(x)`` at a fixed batch of points ``x`` (rows independent), docs/theory.md §9.1."""

    def jvp(self, v: Tensor) -> Tensor:
        """``J v`` (shape of ``f(x)``) for ``v`` of the shape of ``x``."""
        ...

    def vjp(self, w: Tensor) -> Tensor:
        """``J^T w`` (shape of ``x``) for ``w`` of the shape of ``f(x)``."""
        ...


class Linearization:
    """``J_f(x)`` as a linear operator from one stored forward pass (reverse mode only).

    ``vjp(w) = J^T w`` is one backward pass; ``jvp(u) = J u`` uses the double-backward trick
    (docs/theory.md §9.1): ``g(w) = J^T w`` is linear in ``w``, so ``J u = (d g / d w)^T u`` is a
    backward pass through the graph of ``g``. After the first call no evaluation of ``f`` is
    repeated, which makes power iteration cheap for maps made of many small operations (the
    simulator's fields, where ``torch.func``'s forward mode is an order of magnitude slower than
    a backward pass). Memory: the graph of ``f`` and of one backward pass are kept alive.
    """

    def __init__(self, f: BatchedMap, x: Tensor) -> None:
        with torch.enable_grad():
            self._x = x.detach().requires_grad_(True)
            self.y = _check_out(f(self._x), x)
            self._w = torch.zeros_like(self.y, requires_grad=True)
            (self._g,) = torch.autograd.grad(self.y, self._x, self._w, create_graph=True)

    def vjp(self, w: Tensor) -> Tensor:
        """``J^T w`` (shape of ``x``)."""
        (g,) = torch.autograd.grad(self.y, self._x, w, retain_graph=True)
        return g.detach()

    def jvp(self, u: Tensor) -> Tensor:
        """``J u`` (shape of ``f(x)``)."""
        (ju,) = torch.autograd.grad(self._g, self._w, u, retain_graph=True)
        return ju.detach()


class FuncLinearization:
    """``J_f(x)`` by ``torch.func``: ``jvp`` re-evaluates ``f`` in forward mode (memory-light),
    ``vjp`` reuses one reverse-mode pass (``torch.func.vjp``), docs/theory.md §9.1."""

    def __init__(self, f: BatchedMap, x: Tensor) -> None:
        self._f, self._x = f, x
        _, self._vjp_fn = torch.func.vjp(f, x)

    def jvp(self, u: Tensor) -> Tensor:
        """``J u`` by one forward-mode JVP."""
        y, ju = torch.func.jvp(self._f, (self._x,), (u,))
        _check_out(y, self._x)
        return ju.detach()

    def vjp(self, w: Tensor) -> Tensor:
        """``J^T w`` by one backward pass of the stored ``torch.func.vjp``."""
        (g,) = self._vjp_fn(w)
        return g.detach()


class _FirstVjpProbe:
    """Wraps a linear operator; records whether its first VJP failed (for the SVD fallback)."""

    def __init__(self, op: LinearOperator) -> None:
        self._op, self._calls, self.first_vjp_failed = op, 0, False

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return self._op.jvp(v)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        try:
            return self._op.vjp(w)
        except RuntimeError:
            self.first_vjp_failed = self._calls == 1
            raise


@dataclass(frozen=True)
class SpectralNorm:
    """Result of :func:`power_iteration` and :func:`theory.coefficients.spectral_norm`.

    Attributes:
        value: ``||J_f(x)||_2`` per row, shape ``(B,)``.
        vector: unit top right singular vector ``v1`` per row, shape of ``x``
            (``||J_f(x) v1|| = value``; the sign is arbitrary).
        iterations: power iterations used per row, int64 shape ``(B,)`` (0 for ``"svd"``).
        converged: bool ``(B,)``; always True for ``"svd"``; always False without a tolerance.
        history: the estimate ``||J v_k||`` of every row at each iteration ``k``,
            shape ``(iterations run, B)`` (None for ``"svd"``).
    """

    value: Tensor
    vector: Tensor
    iterations: Tensor
    converged: Tensor
    history: Tensor | None = None


def _unit_rows(g: Tensor, fallback: Tensor) -> Tensor:
    """``g / ||g||`` per row in ``g``'s dtype (the norm accumulated in float64); rows with ``g = 0`` keep ``fallback``."""
    gn = _rownorm64(g).to(g.dtype)
    return torch.where(_bcast(gn > 0, g), g / _bcast(torch.where(gn > 0, gn, 1), g), fallback)


def power_iteration(
    op: LinearOperator,
    v: Tensor,
    *,
    iters: int,
    tol: float | None = None,
    on_iteration: Callable[[int, Tensor], None] | None = None,
) -> SpectralNorm:
    """Power iteration on ``J^T J`` for ``||J||_2 = sigma_1(J)`` per row (docs/theory.md §9.2, §2.1).

    ``w = J v_k`` (one JVP), ``g = J^T (w / ||w||)`` (one VJP; the cotangent scaled to unit rows,
    which keeps it of order 1 in low precision and leaves the direction of ``g`` unchanged),
    ``v_{k+1} = g / ||g||``; the estimate
    ``||J v_k||`` increases to ``sigma_1 = max_u ||J u|| / ||u||`` (Definition 2.2's maximum), the
    value converging like ``(sigma_2 / sigma_1)^(2k)`` and the vector like
    ``(sigma_2 / sigma_1)^k``. With ``tol`` a row stops (value and vector frozen) once the relative
    change of its estimate is ``<= tol``; without it, all ``iters`` iterations run.

    Args:
        op: the linearized map (:class:`LinearOperator`).
        v: unit start vectors, shape of ``x`` (rows of norm 1; normalise before calling: the
            callers draw and normalise them in their own precision).
        iters: number of iterations (maximum, with ``tol``), >= 1.
        tol: relative-change tolerance, or None for a fixed number of iterations.
        on_iteration: called as ``on_iteration(k, estimate)`` after iteration ``k``.

    Returns:
        :class:`SpectralNorm` (value, vector, iterations, converged, history); the value and
        history in float64, the vector in the dtype of ``v``.
    """
    iters = require_int("iters", iters)
    B = v.shape[0]
    value: Tensor | None = None
    prev: Tensor | None = None
    iterations = torch.zeros(B, dtype=torch.int64, device=v.device)
    converged = torch.zeros(B, dtype=torch.bool, device=v.device)
    history: list[Tensor] = []
    for k in range(1, iters + 1):
        active = ~converged
        w = op.jvp(v)
        est = _rownorm64(w)
        history.append(est)
        g = op.vjp(_unit_rows(w, w)).detach()
        v_new = _unit_rows(g, v)
        value = est if value is None else torch.where(active, est, value)
        iterations = torch.where(active, torch.full_like(iterations, k), iterations)
        if tol is not None:
            now = active & ((est - prev).abs() <= tol * est) if prev is not None else torch.zeros_like(active)
            converged = converged | now
        else:
            now = torch.zeros_like(active)
        v = torch.where(_bcast(active & ~now, v), v_new, v)
        prev = est
        if on_iteration is not None:
            on_iteration(k, est)
        if bool(converged.all()):
            break
    assert value is not None
    return SpectralNorm(value=value, vector=v, iterations=iterations, converged=converged,
                        history=torch.stack(history))
