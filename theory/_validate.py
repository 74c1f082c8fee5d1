"""Input validation shared by the whole suite.

Every public function checks its parameters with these helpers, so a bad value raises a
``ValueError`` whose message starts with the parameter's name (the CLI prints that message
as its one line of error).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np

__all__ = [
    "as_float_array",
    "as_int_array",
    "require_positive",
    "require_nonnegative",
    "require_at_least",
    "require_probability",
    "require_int",
    "require_ints",
]


def as_float_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a float64 array, raising ``ValueError`` if any entry is not finite."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number or array of real numbers, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {_show(value)}")
    return arr


def as_int_array(name: str, value: Any, minimum: int = 1) -> np.ndarray:
    """Return ``value`` as an int64 array of integers ``>= minimum``."""
    arr = as_float_array(name, value)
    if not np.all(arr == np.round(arr)):
        raise ValueError(f"{name} must be an integer, got {_show(value)}")
    if np.any(arr < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got {_show(value)}")
    if np.any(arr > 2**53):
        raise ValueError(f"{name} must be <= 2**53, got {_show(value)}")
    return arr.astype(np.int64)


def require_positive(name: str, value: Any) -> np.ndarray:
    """Finite and ``> 0``."""
    arr = as_float_array(name, value)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {_show(value)}")
    return arr


def require_nonnegative(name: str, value: Any) -> np.ndarray:
    """Finite and ``>= 0``."""
    arr = as_float_array(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {_show(value)}")
    return arr


def require_at_least(name: str, value: Any, minimum: float) -> np.ndarray:
    """Finite and ``>= minimum``."""
    arr = as_float_array(name, value)
    if np.any(arr < minimum):
        raise ValueError(f"{name} must be >= {minimum:g}, got {_show(value)}")
    return arr


def require_probability(name: str, value: Any) -> np.ndarray:
    """Finite and in ``[0, 1]``."""
    arr = as_float_array(name, value)
    if np.any((arr < 0) | (arr > 1)):
        raise ValueError(f"{name} must lie in [0, 1], got {_show(value)}")
    return arr


def require_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is a whole number ``>= minimum`` (a count: steps, images, ...).

    The one "positive integer" rule of the option classes (``minimum=0`` for counts that may be
    zero). Python and numpy integers pass, and finite floats without a fractional part (``3.0``,
    as JSON may give them back); a bool, a string, ``2.5`` or ``nan`` do not.

    Raises:
        ValueError: ``"<name> must be an integer >= <minimum>, got <value>"``.
    """
    ok = not isinstance(value, bool) and (
        isinstance(value, numbers.Integral)
        or (isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    )
    if not ok or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def require_ints(options: Any, names: Iterable[str], minimum: int = 1) -> None:
    """:func:`require_int` on each attribute ``names`` of ``options`` (an ``*Options`` dataclass),
    the first bad one named in the error."""
    for name in names:
        require_int(name, getattr(options, name), minimum)


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(value)
    bad = arr.ravel()[:3]
    return f"array of shape {arr.shape} (first entries {bad.tolist()})"
