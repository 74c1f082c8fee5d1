"""Input validation of the solvers and maps, done once at each public boundary.

Every ``ValueError`` message starts with the offending parameter's name (the name the caller
used, e.g. ``"gen_steps must be ..."``), so that CLIs can pass it on unchanged. The private
implementations behind the public functions (``_integrate_grid``, ``_dopri5``,
``simulate.inversion._invert_fixed_point``) trust their inputs and check nothing again.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_field",
    "check_grid",
    "check_int",
    "check_positive",
    "check_rtol",
    "check_state",
    "check_times",
    "grid_values",
]


def check_state(x: Any, name: str = "x") -> Tensor:
    """``x`` must be a finite floating tensor of shape ``(B, n)``; returned unchanged."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, n), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (B, n), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return x


def check_field(field: Any, logdet: bool) -> None:
    """``field`` must have ``velocity`` (and ``divergence`` when ``logdet``)."""
    if not callable(getattr(field, "velocity", None)):
        raise TypeError("field must provide velocity(x, t) (see simulate.solvers.SupportsVelocity)")
    if logdet and not callable(getattr(field, "divergence", None)):
        raise ValueError(
            "logdet=True needs field.divergence(x, t) (see simulate.solvers.SupportsDivergence); "
            f"{type(field).__name__} has none"
        )


def grid_values(ts: Tensor) -> list[float]:
    """The times of a 1-D tensor grid as Python floats (through float64), unchecked."""
    return [float(t) for t in ts.detach().to("cpu", torch.float64).tolist()]


def check_grid(ts: Tensor | Sequence[float]) -> list[float]:
    """``ts`` must be a finite, strictly monotone 1-D grid of at least 2 times; as floats."""
    if isinstance(ts, Tensor):
        if ts.ndim != 1:
            raise ValueError(f"ts must be 1-D, got shape {tuple(ts.shape)}")
        grid = grid_values(ts)
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


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number, got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (integral floats accepted, bools refused)."""
    ok = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer()
    )
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_times(t0: Any, t1: Any) -> tuple[float, float]:
    """``t0``, ``t1`` as finite, distinct floats."""
    try:
        t0, t1 = float(t0), float(t1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"t0, t1 must be real numbers, got {t0!r}, {t1!r}") from exc
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"t0, t1 must be finite and distinct, got {t0!r}, {t1!r}")
    return t0, t1


def check_rtol(rtol: float, dtype: torch.dtype, *, stacklevel: int = 3) -> float:
    """``rtol`` raised (with a ``RuntimeWarning``) to ``100 eps(dtype)`` if smaller, as in SciPy."""
    min_rtol = 100.0 * torch.finfo(dtype).eps
    if rtol < min_rtol:
        warnings.warn(
            f"dopri5: rtol={rtol:g} is below 100 * eps({dtype}) and unreachable; "
            f"using rtol={min_rtol:.3g}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        return min_rtol
    return rtol
