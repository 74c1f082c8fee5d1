"""Symbolic (sympy) derivations of Section 4 and Appendix D: Theorem 4.3's ``r*`` and Chernoff
bound, Lemma D.1 (Liouville) and Lemma D.2 (the log-threshold algebra of Theorem 4.1).

Part of :mod:`theory.symbolic.derivations` (which re-exports every name here and collects the checks in
``derivations()``); see its docstring for the conventions.
"""

from __future__ import annotations

import sympy as sp

from theory.symbolic.symbols import _R, _is_zero, _require_int, _t, c, n, r, sigma, tau, theta

__all__ = [
    "gaussian_kernel_expr",
    "p1_threshold_expr",
    "r_star_squared_expr",
    "r_star_verified",
    "chi2_log_mgf_expr",
    "chi2_chernoff_bound_expr",
    "chernoff_verified",
    "liouville_formula_holds",
    "liouville_constant_example",
    "log_standard_normal_density_expr",
    "lemma_d2_log_threshold_expr",
    "lemma_d2_margin_expr",
    "lemma_d2_implication_holds",
]

# --------------------------------------------------------------------------- r*


def gaussian_kernel_expr(radius: sp.Expr = r) -> sp.Expr:
    """Gaussian kernel of ``N(0, sigma^2 I_n)`` as a function of distance.

    ``K_sigma(r) = (2 pi sigma^2)^(-n/2) exp(-r^2 / (2 sigma^2))`` (docs/theory.md §1.3).
    """
    return (2 * sp.pi * sigma**2) ** (-n / 2) * sp.exp(-(radius**2) / (2 * sigma**2))


def p1_threshold_expr() -> sp.Expr:
    """Theorem 4.1: the density level of ``p1``, ``(2 pi)^(-n/2) e^(-c/2) tau^(-n)``."""
    return (2 * sp.pi) ** (-n / 2) * sp.exp(-c / 2) * tau ** (-n)


def r_star_squared_expr() -> sp.Expr:
    """Theorem 4.3: ``r*^2`` solving ``K_sigma(r*) = (2 pi)^(-n/2) e^(-c/2) tau^(-n)``.

    The equation is taken in logs (both sides are positive) and solved for ``R = r^2`` by
    ``sympy.solve``; ``R`` is a real symbol, so a negative root (then ``p1 = 0``) is kept.

    Returns:
        ``r*^2``; equal to ``sigma^2 (c + 2 n log(tau / sigma))``.
    """
    kernel = gaussian_kernel_expr(sp.sqrt(_R)).subs(sp.sqrt(_R) ** 2, _R)
    equation = sp.Eq(
        sp.expand_log(sp.log(kernel), force=True),
        sp.expand_log(sp.log(p1_threshold_expr()), force=True),
    )
    roots = sp.solve(equation, _R)
    if len(roots) != 1:
        raise RuntimeError(f"expected one root for r*^2, got {roots}")
    return sp.factor(sp.expand_log(roots[0], force=True))


def r_star_verified() -> bool:
    """Check ``r*^2`` against ``sigma^2 (c + 2 n log(tau/sigma))`` and by substituting back."""
    rs2 = r_star_squared_expr()
    stated = sigma**2 * (c + 2 * n * sp.log(tau / sigma))
    same = _is_zero(sp.expand_log(rs2 - stated, force=True))
    log_gap = sp.log(gaussian_kernel_expr(sp.sqrt(_R))) - sp.log(p1_threshold_expr())
    back = _is_zero(sp.expand_log(log_gap.subs(_R, rs2), force=True))
    return same and back


# --------------------------------------------------------------------------- Chernoff


def chi2_log_mgf_expr() -> sp.Expr:
    """Log moment generating function of ``chi2_n``: ``-(n/2) log(1 - 2 theta)``, ``theta < 1/2``."""
    return -(n / 2) * sp.log(1 - 2 * theta)


def _chernoff_objective() -> sp.Expr:
    """``log E[e^{theta chi2_n}] - theta c``: the log of the Chernoff bound at ``theta``."""
    return chi2_log_mgf_expr() - theta * c


def chi2_chernoff_bound_expr() -> tuple[sp.Expr, sp.Expr]:
    """Theorem 4.3 (``p2``): Chernoff bound ``log P[chi2_n >= c] <= min_theta (...)``.

    Minimises ``-(n/2) log(1 - 2 theta) - theta c`` over ``0 < theta < 1/2`` by solving the
    derivative for ``theta``. The root ``theta* = (1 - n/c)/2`` lies in ``(0, 1/2)`` exactly
    when ``c > n``.

    Returns:
        ``(theta*, log bound)``, the log bound equal to ``-(c - n)/2 + (n/2) log(c/n)``.
    """
    objective = _chernoff_objective()
    roots = sp.solve(sp.Eq(sp.diff(objective, theta), 0), theta)
    if len(roots) != 1:
        raise RuntimeError(f"expected one stationary point, got {roots}")
    theta_star = sp.simplify(roots[0])
    log_bound = sp.expand(sp.expand_log(objective.subs(theta, theta_star), force=True))
    return theta_star, log_bound


def chernoff_verified() -> bool:
    """Check the Chernoff optimum: stationary, a minimum, inside ``(0, 1/2)`` for ``c > n``,
    and the stated closed form of the bound."""
    theta_star, log_bound = chi2_chernoff_bound_expr()
    objective = _chernoff_objective()
    stationary = _is_zero(sp.diff(objective, theta).subs(theta, theta_star))
    curvature = sp.simplify(sp.diff(objective, theta, 2).subs(theta, theta_star))
    gap = sp.Symbol("d", positive=True)  # c = n + d, d > 0
    inside = sp.simplify(theta_star.subs(c, n + gap)).is_positive and sp.simplify(
        (sp.Rational(1, 2) - theta_star).subs(c, n + gap)
    ).is_positive
    stated = -(c - n) / 2 + (n / 2) * sp.log(c / n)
    closed = _is_zero(sp.expand_log(log_bound - stated, force=True))
    return bool(stationary and curvature.is_positive and inside and closed)


# --------------------------------------------------------------------------- Liouville


def liouville_formula_holds(dim: int) -> bool:
    """Lemma D.1 (Liouville): for ``Phi' = A(t) Phi``, ``d/dt det Phi = trace(A) det Phi``.

    Equivalently ``d/dt log det Phi = trace A``. ``A`` and ``Phi`` have arbitrary function
    entries of ``t``; ``det Phi`` is differentiated, every ``phi_ij'`` is replaced by
    ``(A Phi)_ij``, and ``d/dt det Phi - trace(A) det Phi`` is expanded.

    Args:
        dim: Matrix size, ``>= 1`` (cost grows like ``dim!``; 2 and 3 are fast).

    Returns:
        True when the difference expands to exactly 0.
    """
    dim = _require_int("dim", dim, 1)
    A = sp.Matrix(dim, dim, lambda i, j: sp.Function(f"a_{i}{j}")(_t))
    Phi = sp.Matrix(dim, dim, lambda i, j: sp.Function(f"phi_{i}{j}")(_t))
    flow = A * Phi
    rates = {sp.Derivative(Phi[i, j], _t): flow[i, j] for i in range(dim) for j in range(dim)}
    det = Phi.det(method="berkowitz")
    d_det = sp.diff(det, _t).subs(rates)
    return sp.expand(d_det - A.trace() * det) == 0


def liouville_constant_example() -> bool:
    """Lemma D.1 (Liouville), concrete: ``det(exp(A t)) = exp(trace(A) t)``.

    Uses the diagonalisable ``A = [[1, 2], [0, -3]]`` (eigenvalues 1 and -3) and sympy's
    matrix exponential.
    """
    A = sp.Matrix([[1, 2], [0, -3]])
    lhs = (A * _t).exp().det()
    return _is_zero(lhs - sp.exp(A.trace() * _t))


# --------------------------------------------------------------------------- Lemma D.2


def log_standard_normal_density_expr(sq_norm: sp.Expr) -> sp.Expr:
    """``log phi(z) = -(n/2) log(2 pi) - ||z||^2 / 2`` for ``phi = N(0, I_n)``.

    Args:
        sq_norm: Expression for ``||z||^2``.
    """
    return -(n / 2) * sp.log(2 * sp.pi) - sq_norm / 2


def lemma_d2_log_threshold_expr() -> sp.Expr:
    """Lemma D.2: log of the ``p1`` level, ``-(n/2) log(2 pi) - c/2 - n log tau``.

    Derived as ``log`` of :func:`p1_threshold_expr` (logs expanded).
    """
    return sp.expand_log(sp.log(p1_threshold_expr()), force=True)


def lemma_d2_margin_expr() -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """Lemma D.2: ``n log Lambda - n log tau`` under the lemma's hypotheses.

    Writes ``log p_g(x) = threshold - a`` and ``||z||^2 = c - b`` with ``a, b > 0`` (the two
    strict hypotheses) and simplifies ``log phi(z) - log p_g(x) - n log tau``, where
    ``n log Lambda = log phi(z) - log p_g(x)`` (Lemma D.1).

    Returns:
        ``(margin, a, b)``; the margin simplifies to ``a + b/2``.
    """
    a, b = sp.symbols("a b", positive=True)
    log_pg = lemma_d2_log_threshold_expr() - a
    log_phi = log_standard_normal_density_expr(c - b)
    margin = sp.simplify(sp.expand_log(log_phi - log_pg - n * sp.log(tau), force=True))
    return margin, a, b


def lemma_d2_implication_holds() -> bool:
    """Lemma D.2: ``||z||^2 < c`` and ``log p_g(x) < threshold`` imply ``Lambda > tau``.

    Returns:
        True when the margin ``n log Lambda - n log tau`` is positive for all ``a, b > 0``.
    """
    margin, _, _ = lemma_d2_margin_expr()
    return margin.is_positive is True
