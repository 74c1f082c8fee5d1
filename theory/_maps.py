"""Row-wise batched maps: input checks and one JVP (docs/theory.md §1.4, §9.1).

Shared by :mod:`theory.coefficients`, :mod:`theory.jacobian` and :mod:`theory.prop21`. A
*batched map* ``f`` takes ``x`` of shape ``(B, *shape)`` to ``f(x)`` of shape
``(B, *shape_out)``, row ``b`` of the output depending only on row ``b`` of the input
(docs/theory.md §1.4).

A *JVP function* has the signature of ``torch.func.jvp``: ``jvp(f, (x,), (u,))`` returns
``(f(x), J_f(x) u)``. ``torch.func.jvp`` is the default everywhere; a caller passes its own to
run the same forward-mode derivative under other settings (``largemodel`` runs it under the
math attention kernel, the fused kernels having no forward AD).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from theory.power_iteration import Linearization, _check_out, _rownorm

__all__ = ["BatchedMap", "JvpFn", "JVP_MODES"]

BatchedMap = Callable[[torch.Tensor], torch.Tensor]

#: ``jvp(f, (x,), (u,)) -> (f(x), J_f(x) u)``, the signature of ``torch.func.jvp``
JvpFn = Callable[[BatchedMap, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor]]

JVP_MODES = ("forward", "reverse")


def _check_x(x: Any, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a finite, real floating-point batch ``(B, *shape)`` with B, n >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, *shape), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a real floating-point dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must have at least one entry per row, got shape {tuple(x.shape)}")
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _check_like(name: str, value: Any, x: torch.Tensor, nonzero: bool = True) -> torch.Tensor:
    """Return ``value`` as a tensor with the dtype/device/shape of ``x`` (finite, rows non-zero)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_complex():
            raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a tensor of the same shape as x") from exc
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"x and {name} must have the same shape, got {tuple(x.shape)} and {tuple(t.shape)}")
    t = t.to(dtype=x.dtype, device=x.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if nonzero and bool((_rownorm(t) == 0).any()):
        raise ValueError(f"{name} must be non-zero in every row")
    return t


def _check_chunk(name: str, value: Any) -> int | None:
    """``None`` or a positive integer (a number of rows per call)."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _jvp(f: BatchedMap, x: torch.Tensor, u: torch.Tensor, jvp: JvpFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), J_f(x) u)`` by one forward-mode JVP (``jvp``, default ``torch.func.jvp``)."""
    y, ju = (torch.func.jvp if jvp is None else jvp)(f, (x,), (u,))
    _check_out(y, x)
    return y.detach(), ju.detach()


def _jvp_mode(f: BatchedMap, x: torch.Tensor, u: torch.Tensor, mode: str, jvp: JvpFn | None = None) -> torch.Tensor:
    """``J_f(x) u`` by forward mode (``jvp``, default ``torch.func.jvp``) or by the double-backward trick."""
    if mode == "forward":
        return _jvp(f, x, u, jvp)[1]
    if mode == "reverse":
        return Linearization(f, x).jvp(u)
    raise ValueError(f"mode must be one of {', '.join(JVP_MODES)}, got {mode!r}")


def _eval(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """``f(x)`` without autograd, its batch size checked."""
    with torch.no_grad():
        return _check_out(f(x), x).detach()
