"""The sympy symbols shared by the symbolic derivations (:mod:`theory.symbolic.derivations`,
:mod:`theory.symbolic.instability`) and two small helpers."""

from __future__ import annotations

import sympy as sp

__all__ = ["l", "r", "h", "L", "M", "k", "n", "sigma", "tau", "c", "theta"]

# --------------------------------------------------------------------------- symbols

l, r = sp.symbols("l r", positive=True)
h, L, M = sp.symbols("h L M", positive=True)
k = sp.Symbol("k", integer=True, nonnegative=True)
n = sp.Symbol("n", integer=True, positive=True)
sigma, tau, c = sp.symbols("sigma tau c", positive=True)
theta = sp.Symbol("theta", real=True)

_s = sp.Symbol("s", positive=True)  # Cavalieri slicing coordinate
_rho = sp.Symbol("rho", positive=True)  # radius variable of a lower-dimensional body
_N = sp.Symbol("N", integer=True, positive=True)  # number of Euler steps
_x = sp.Symbol("x", nonnegative=True)  # running Lipschitz constant in the bound
_R = sp.Symbol("R", real=True)  # stands for r^2 (may be negative: then p1 = 0)
_t = sp.Symbol("t", real=True)  # time in Liouville's formula
_e = sp.Function("e")  # Euler global error sequence


def _require_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an ``int >= minimum``, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, sp.Integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _is_zero(expr: sp.Expr) -> bool:
    """True when ``expr`` simplifies to exactly zero."""
    return sp.simplify(expr) == 0
