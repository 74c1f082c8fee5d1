"""Parameter validation for the velocity fields (messages start with the parameter's name)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

WEIGHT_SUM_TOLERANCE = 1e-9


def resolve_device(device: Any, *values: Any) -> torch.device:
    """``device`` if given, else the device of the first tensor among ``values``, else CPU."""
    if device is not None:
        return torch.device(device)
    for v in values:
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")


def resolve_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.float64 if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def as_param(name: str, value: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a detached tensor of ``dtype`` on ``device``; every entry finite."""
    try:
        arr = torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a real number or array of real numbers") from exc
    arr = arr.detach().clone()
    if not bool(torch.isfinite(arr).all()):
        raise ValueError(f"{name} must be finite")
    return arr


def check_weights(weights: Tensor, m: int | None = None) -> Tensor:
    """Mixture weights ``w_i >= 0`` with ``sum w_i = 1`` (Assumption 4.3), shape ``(m,)``."""
    if weights.ndim != 1:
        raise ValueError(f"weights must have shape (m,), got {tuple(weights.shape)}")
    if weights.shape[0] == 0:
        raise ValueError("weights must be non-empty: a mixture needs m >= 1 components")
    if m is not None and weights.shape[0] != m:
        raise ValueError(f"weights has {weights.shape[0]} entries but there are m = {m} components")
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0")
    total = float(weights.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"weights must sum to 1 (tolerance {WEIGHT_SUM_TOLERANCE:g}), got {total!r}")
    return weights


def check_memory(max_memory_bytes: int) -> int:
    if isinstance(max_memory_bytes, bool) or not isinstance(max_memory_bytes, int):
        raise ValueError(f"max_memory_bytes must be an int, got {max_memory_bytes!r}")
    if max_memory_bytes <= 0:
        raise ValueError(f"max_memory_bytes must be > 0, got {max_memory_bytes}")
    return max_memory_bytes
