r"""Abstract flow-matching velocity field (docs/theory.md §1.1).

Conventions: noise ``x0 ~ N(0, I_n)``, data ``x1 ~ p_g``, ``x_t = t x1 + (1 - t) x0`` for
``t in [0, 1]``, and ``v(x, t) = E[x1 - x0 | x_t = x]``; generation integrates
``dx/dt = v(x, t)`` from ``t = 0`` (noise) to ``t = 1`` (data).

A field exposes, for a batch of points ``x`` of shape ``(B, n)`` (or one point ``(n,)``,
returned unbatched) and times ``t`` (a float, or a tensor of shape ``()`` or ``(B,)``):

* ``velocity(x, t)``: ``v(x, t)``, shape ``(B, n)``;
* ``log_prob(x, t)``: ``log p_t(x)``, the log density of ``x_t``, shape ``(B,)``;
* ``score(x, t)``: ``grad_x log p_t(x)``, shape ``(B, n)``;
* ``divergence(x, t)``: ``div_x v(x, t) = tr J_v``, shape ``(B,)``;
* ``evaluate(x, t)``: all four in one pass (a :class:`FieldValues`).

They satisfy the continuity equation ``d/dt log p_t(x) = -div v - v . score``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from simulate.fields._validation import check_memory, resolve_dtype

__all__ = ["FieldValues", "VelocityField", "DEFAULT_MAX_MEMORY_BYTES"]


DEFAULT_MAX_MEMORY_BYTES = 512 * 2**20
"""Default working-memory budget of one call (512 MiB)."""


def _all_finite(value: Tensor) -> bool:
    """Whether every entry is finite, with one reduction in the common case.

    A sum is finite only if every term is (a NaN or an infinity makes it NaN or infinite); a
    non-finite sum may still come from finite terms that overflow, so it is checked exactly.
    """
    if math.isfinite(float(value.detach().sum())):
        return True
    return bool(torch.isfinite(value).all())


@dataclass(frozen=True)
class FieldValues:
    """Values of a field at ``(x, t)``; entries not requested are ``None``."""

    velocity: Tensor | None = None
    score: Tensor | None = None
    log_prob: Tensor | None = None
    divergence: Tensor | None = None


@dataclass(frozen=True)
class _Request:
    velocity: bool
    score: bool
    log_prob: bool
    divergence: bool


class VelocityField(abc.ABC):
    """Exact velocity field of a flow-matching model with a known data law ``p_g``.

    Subclasses implement :meth:`_evaluate` on validated inputs (``x`` of shape ``(B, n)``,
    ``t`` of shape ``(B,)``, both of the field's dtype and device), :meth:`sample` and
    :attr:`mean`.

    Args:
        n: data dimension.
        dtype: floating dtype of parameters and results (default ``torch.float64``).
        device: device of parameters and results; inputs are moved there.
        max_memory_bytes: working-memory budget of one call (no-grad evaluation); batches are
            processed in chunks so that intermediates stay under it.
    """

    def __init__(
        self,
        n: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self._n = n
        self._dtype = resolve_dtype(dtype)
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self._max_memory_bytes = check_memory(max_memory_bytes)

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        """Data dimension ``n``."""
        return self._n

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def max_memory_bytes(self) -> int:
        return self._max_memory_bytes

    @property
    @abc.abstractmethod
    def mean(self) -> Tensor:
        """``E[x1]`` under ``p_g``, shape ``(n,)``."""

    @abc.abstractmethod
    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``k`` independent samples of ``p_g`` (the law of ``x1``), shape ``(k, n)``."""

    @abc.abstractmethod
    def _evaluate(self, x: Tensor, t: Tensor, request: _Request) -> FieldValues:
        """Requested values for validated ``x`` ``(B, n)`` and ``t`` ``(B,)``."""

    # ------------------------------------------------------------------ public API
    def velocity(self, x: Any, t: Any) -> Tensor:
        """``v(x, t) = E[x1 - x0 | x_t = x]`` (docs/theory.md §1.1)."""
        return self.evaluate(x, t, velocity=True, score=False, log_prob=False, divergence=False).velocity

    def score(self, x: Any, t: Any) -> Tensor:
        """``grad_x log p_t(x)``."""
        return self.evaluate(x, t, velocity=False, score=True, log_prob=False, divergence=False).score

    def log_prob(self, x: Any, t: Any) -> Tensor:
        """``log p_t(x)``, the log density of ``x_t`` (``p_1 = p_g``, ``p_0 = N(0, I)``)."""
        return self.evaluate(x, t, velocity=False, score=False, log_prob=True, divergence=False).log_prob

    def divergence(self, x: Any, t: Any) -> Tensor:
        """``div_x v(x, t)``, the trace of the Jacobian of the velocity."""
        return self.evaluate(x, t, velocity=False, score=False, log_prob=False, divergence=True).divergence

    def evaluate(
        self,
        x: Any,
        t: Any,
        *,
        velocity: bool = True,
        score: bool = True,
        log_prob: bool = True,
        divergence: bool = True,
    ) -> FieldValues:
        """Velocity, score, log density and divergence in one pass.

        Raises:
            ValueError: bad shapes, non-finite ``x``, ``t`` outside ``[0, 1]``.
            FloatingPointError: a result is not finite (never expected for valid input).
        """
        xb, tb, unbatched = self._prepare(x, t)
        request = _Request(velocity, score, log_prob, divergence)
        values = self._evaluate(xb, tb, request)
        out = {}
        for name in ("velocity", "score", "log_prob", "divergence"):
            value = getattr(values, name) if getattr(request, name) else None
            if value is not None:
                if not _all_finite(value):
                    raise FloatingPointError(f"{type(self).__name__}.{name} produced non-finite values")
                if unbatched:
                    value = value[0]
            out[name] = value
        return FieldValues(**out)

    def evaluate_unchecked(
        self,
        x: Tensor,
        t: Tensor,
        *,
        velocity: bool = True,
        score: bool = False,
        log_prob: bool = False,
        divergence: bool = False,
    ) -> FieldValues:
        """:meth:`evaluate` without its per-call checks, for solvers that validate once.

        The caller guarantees what :meth:`evaluate` would check and convert: ``x`` a finite
        tensor of shape ``(B, n)`` with the field's dtype and device, ``t`` a tensor of shape
        ``(B,)`` of that dtype and device with entries in ``[0, 1]``. Results are not checked
        for finiteness. Same values as :meth:`evaluate` on such inputs; entries not requested
        are ``None``. Used by :func:`simulate.solvers.dopri5` inside its step loop (it checks
        ``x``, ``t0``, ``t1`` once and rejects steps with non-finite stages).
        """
        request = _Request(velocity, score, log_prob, divergence)
        values = self._evaluate(x, t, request)
        return FieldValues(
            velocity=values.velocity if velocity else None,
            score=values.score if score else None,
            log_prob=values.log_prob if log_prob else None,
            divergence=values.divergence if divergence else None,
        )

    # ------------------------------------------------------------------ validation
    def _prepare(self, x: Any, t: Any) -> tuple[Tensor, Tensor, bool]:
        x = torch.as_tensor(x, dtype=self._dtype, device=self._device)
        if x.ndim == 1:
            unbatched = True
            x = x.unsqueeze(0)
        elif x.ndim == 2:
            unbatched = False
        else:
            raise ValueError(f"x must have shape (B, n) or (n,), got {tuple(x.shape)}")
        if x.shape[1] != self._n:
            raise ValueError(f"x has dimension {x.shape[1]} but the field has n = {self._n}")
        if not _all_finite(x):
            raise ValueError("x must be finite")
        return x, self._prepare_t(t, x.shape[0], unbatched), unbatched

    def _prepare_t(self, t: Any, batch: int, unbatched: bool) -> Tensor:
        if isinstance(t, Tensor):
            tt = t.to(dtype=self._dtype, device=self._device)
        else:
            try:
                tf = float(t)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"t must be a real number or a tensor, got {t!r}") from exc
            if not 0.0 <= tf <= 1.0:  # also rejects NaN
                raise ValueError("t must lie in [0, 1]")
            # a Python float in [0, 1] stays in [0, 1] in any floating dtype
            return torch.as_tensor(tf, dtype=self._dtype, device=self._device).expand(batch)
        if tt.ndim == 0:
            tt = tt.expand(batch)
        elif tt.ndim != 1 or tt.shape[0] != batch:
            shape = "(), (1,)" if unbatched else f"() or ({batch},)"
            raise ValueError(f"t must have shape {shape}, got {tuple(tt.shape)}")
        if tt.numel():
            lo, hi = torch.aminmax(tt.detach())
            if not (float(lo) >= 0.0 and float(hi) <= 1.0):  # NaN fails both
                raise ValueError("t must lie in [0, 1]")
        return tt

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self._n}, dtype={self._dtype}, device={self._device})"
