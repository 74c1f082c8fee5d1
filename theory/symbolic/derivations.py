"""Symbolic (sympy) derivations behind the paper's results.

Each function encodes one named step of the mathematics in docs/theory.md and, where it
checks something, derives both sides independently: nothing checked here is a hard-coded
answer. The checks are collected by :func:`derivations`, which the report shows.

Contents (docs/theory.md section in brackets):

* Steiner formula for the cube ``C_l = [0, l]^n`` versus Cavalieri slicing of the parallel
  body ``C_l (+) B_r`` [§8.3].
* Theorem 3.1, part 1: the Euler global-error recursion solved by ``rsolve``, and the bound
  ``(1 + L/N)^N <= e^L`` that turns it into ``(h M / (2 L)) (e^L - 1)`` [§5.2].
* Theorem 4.3: the radius ``r*`` where the Gaussian kernel meets the ``p1`` threshold [§8.2].
* Theorem 4.3: the Chernoff bound on the chi-square tail used for ``p2`` [§8.4].
* Lemma D.1: Liouville's formula ``d/dt log det Phi = trace A`` [§6.1].
* Lemma D.2: the log-threshold algebra behind Theorem 4.1 [§6.2].

Symbols are exported at module level (all positive unless stated) so callers can substitute
into the returned expressions: ``l, r`` (cube side, radius), ``h, L, M`` (step, Lipschitz
constant, second-derivative bound), ``k`` (step index, integer), ``n`` (dimension, positive
integer), ``sigma, tau, c`` (kernel scale, instability level, chi-square level), ``theta``
(Chernoff parameter, real).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from theory.symbolic.symbols import (  # noqa: F401  (symbols re-exported: callers substitute into the expressions)
    L,
    M,
    _N,
    _e,
    _is_zero,
    _require_int,
    _rho,
    _s,
    _x,
    c,
    h,
    k,
    l,
    n,
    r,
    sigma,
    tau,
    theta,
)
from theory.symbolic.instability import (  # noqa: F401  (re-exported)
    gaussian_kernel_expr,
    p1_threshold_expr,
    r_star_squared_expr,
    r_star_verified,
    chi2_log_mgf_expr,
    chi2_chernoff_bound_expr,
    chernoff_verified,
    liouville_formula_holds,
    liouville_constant_example,
    log_standard_normal_density_expr,
    lemma_d2_log_threshold_expr,
    lemma_d2_margin_expr,
    lemma_d2_implication_holds,
)

__all__ = [
    "l",
    "r",
    "h",
    "L",
    "M",
    "k",
    "n",
    "sigma",
    "tau",
    "c",
    "theta",
    "unit_ball_volume_expr",
    "steiner_volume_expr",
    "parallel_body_volume_direct",
    "steiner_matches_direct",
    "euler_error_recursion",
    "euler_error_recursion_solution",
    "euler_error_closed_form",
    "euler_recursion_solution_verified",
    "EulerBoundDerivation",
    "euler_error_bound_derivation",
    "euler_error_bound_holds",
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
    "derivations",
]


# --------------------------------------------------------------------------- Steiner


def unit_ball_volume_expr(j: int) -> sp.Expr:
    """Volume of the unit ball in ``R^j``: ``omega_j = pi^(j/2) / Gamma(j/2 + 1)``.

    Args:
        j: Dimension, ``>= 0`` (``omega_0 = 1``).

    Returns:
        The exact sympy value of ``omega_j``.
    """
    j = _require_int("j", j, 0)
    return sp.pi ** sp.Rational(j, 2) / sp.gamma(sp.Rational(j, 2) + 1)


@functools.lru_cache(maxsize=None)
def steiner_volume_expr(n: int) -> sp.Expr:
    """Steiner formula for the cube (docs/theory.md §8.3).

    ``S_n(l, r) = Vol(C_l (+) B_r) = sum_{k=0}^n C(n, k) l^k omega_{n-k} r^(n-k)``, with
    ``C_l = [0, l]^n`` and ``omega_j`` the unit-ball volume.

    Args:
        n: Dimension, ``>= 0``.

    Returns:
        ``S_n`` as a polynomial in the module symbols ``l`` and ``r``.
    """
    n = _require_int("n", n, 0)
    terms = (
        sp.binomial(n, j) * l**j * unit_ball_volume_expr(n - j) * r ** (n - j)
        for j in range(n + 1)
    )
    return sp.expand(sp.Add(*terms))


def _slice_integral(poly_in_rho: sp.Expr) -> sp.Expr:
    """``Integral_0^r P(sqrt(r^2 - s^2)) ds`` for a polynomial ``P(rho)``, term by term.

    Each monomial ``rho^j`` becomes ``(r^2 - s^2)^(j/2)``, integrated by sympy (integrating
    the whole sum at once makes sympy give up on the odd powers).
    """
    poly = sp.Poly(poly_in_rho, _rho)
    total = sp.Integer(0)
    for (j,), coeff in poly.terms():
        total += coeff * sp.integrate((r**2 - _s**2) ** sp.Rational(j, 2), (_s, 0, r))
    return total


@functools.lru_cache(maxsize=None)
def parallel_body_volume_direct(n: int) -> sp.Expr:
    """Volume of ``C_l (+) B_r`` by Cavalieri slicing, independent of the Steiner formula.

    Slice ``{y : dist(y, C_l) <= r}`` at first coordinate ``x_1``. For ``x_1`` in ``[0, l]``
    the slice is the ``(n-1)``-dimensional parallel body of radius ``r``; at distance ``s``
    beyond either face it is the one of radius ``sqrt(r^2 - s^2)``. Hence
    ``V_n(r) = l V_{n-1}(r) + 2 Integral_0^r V_{n-1}(sqrt(r^2 - s^2)) ds``, ``V_0 = 1``.

    Args:
        n: Dimension, ``>= 0``. Each level costs a few sympy integrals (n <= 4 is fast).

    Returns:
        ``V_n`` as an expression in the module symbols ``l`` and ``r``.
    """
    n = _require_int("n", n, 0)
    if n == 0:
        return sp.Integer(1)
    lower = parallel_body_volume_direct(n - 1)
    lower_in_rho = sp.expand(lower.subs(r, _rho))
    return sp.expand(l * lower + 2 * _slice_integral(lower_in_rho))


def steiner_matches_direct(n: int) -> bool:
    """Check the Steiner formula against Cavalieri slicing: ``S_n - V_n == 0``."""
    return _is_zero(steiner_volume_expr(n) - parallel_body_volume_direct(n))


# --------------------------------------------------------------------------- Theorem 3.1


def euler_error_recursion() -> sp.Expr:
    """Theorem 3.1, part 1: the worst-case Euler global-error recursion, as ``lhs - rhs``.

    ``e_{k+1} = (1 + h L) e_k + h^2 M / 2`` (local error ``h^2 M / 2``, error propagated by
    the ``L``-Lipschitz field). The true error is bounded by this sequence by induction.

    Returns:
        ``e(k+1) - (1 + h L) e(k) - h^2 M / 2`` in terms of the sympy function ``e``.
    """
    return _e(k + 1) - (1 + h * L) * _e(k) - h**2 * M / 2


def euler_error_recursion_solution() -> sp.Expr:
    """Theorem 3.1, part 1: solution of the error recursion with ``e_0 = 0`` (``rsolve``).

    Returns:
        ``e_k`` as an expression in ``h, L, M, k``; it equals
        ``(h M / (2 L)) ((1 + h L)^k - 1)`` (see :func:`euler_error_closed_form`).
    """
    solution = sp.rsolve(euler_error_recursion(), _e(k), {_e(0): 0})
    if solution is None:
        raise RuntimeError("rsolve found no solution of the Euler error recursion")
    return solution


def euler_error_closed_form() -> sp.Expr:
    """Theorem 3.1, part 1 as stated: ``e_k = (h M / (2 L)) ((1 + h L)^k - 1)``."""
    return h * M / (2 * L) * ((1 + h * L) ** k - 1)


def euler_recursion_solution_verified() -> bool:
    """Check the ``rsolve`` solution: recursion, initial condition, and the stated form."""
    sol = euler_error_recursion_solution()
    residual = sol.subs(k, k + 1) - (1 + h * L) * sol - h**2 * M / 2
    return (
        _is_zero(residual)
        and _is_zero(sol.subs(k, 0))
        and _is_zero(sol - euler_error_closed_form())
    )


@dataclass(frozen=True)
class EulerBoundDerivation:
    """Pieces of the proof that ``e_N <= (h M / (2 L)) (e^L - 1)`` when ``h = 1/N``.

    Attributes:
        g: ``g(x) = N log(1 + x/N) - x``; ``g(L) <= 0`` is ``(1 + L/N)^N <= e^L``.
        g_at_zero: ``g(0)`` (simplified; should be 0).
        g_prime: ``g'(x)``, simplified (should be ``-x / (N + x)``).
        g_prime_nonpositive: sympy's verdict that ``g'(x) <= 0`` for ``x >= 0``, ``N >= 1``.
        ftc_residual: ``g(L) - g(0) - Integral_0^L g'(x) dx``, simplified (should be 0), so
            ``g(L) <= 0`` follows from the sign of ``g'``.
        e_N: the recursion's solution at ``k = N`` with ``h = 1/N``.
        bound: ``(h M / (2 L)) (e^L - 1)`` with ``h = 1/N``.
        prefactor_positive: sympy's verdict that ``h M / (2 L) > 0``.
    """

    g: sp.Expr
    g_at_zero: sp.Expr
    g_prime: sp.Expr
    g_prime_nonpositive: bool | None
    ftc_residual: sp.Expr
    e_N: sp.Expr
    bound: sp.Expr
    prefactor_positive: bool | None


@functools.lru_cache(maxsize=None)
def euler_error_bound_derivation() -> EulerBoundDerivation:
    """Theorem 3.1, part 1: from the recursion's solution to ``(h M / (2 L)) (e^L - 1)``.

    With ``h = 1/N``, ``e_N = (h M / (2 L)) ((1 + L/N)^N - 1)``. Let
    ``g(x) = N log(1 + x/N) - x``: ``g(0) = 0`` and ``g'(x) = -x / (N + x) <= 0`` for
    ``x >= 0``, so ``g(L) <= 0``, i.e. ``(1 + L/N)^N <= e^L``; the prefactor is positive.

    Returns:
        The derivation's pieces (see :class:`EulerBoundDerivation`).
    """
    g = _N * sp.log(1 + _x / _N) - _x
    g_prime = sp.simplify(sp.diff(g, _x))
    ftc = g.subs(_x, L) - g.subs(_x, 0) - sp.integrate(sp.diff(g, _x), (_x, 0, L))
    prefactor = h * M / (2 * L)
    return EulerBoundDerivation(
        g=g,
        g_at_zero=sp.simplify(g.subs(_x, 0)),
        g_prime=g_prime,
        g_prime_nonpositive=g_prime.is_nonpositive,
        ftc_residual=sp.simplify(ftc),
        e_N=euler_error_recursion_solution().subs({k: _N, h: 1 / _N}),
        bound=(prefactor * (sp.exp(L) - 1)).subs(h, 1 / _N),
        prefactor_positive=prefactor.is_positive,
    )


def euler_error_bound_holds() -> bool:
    """Theorem 3.1, part 1: ``e_N <= (h M / (2 L)) (e^L - 1)`` for ``L > 0``, ``N >= 1``.

    Returns:
        True when every step of :func:`euler_error_bound_derivation` checks out.
    """
    d = euler_error_bound_derivation()
    return (
        d.g_at_zero == 0
        and d.g_prime_nonpositive is True
        and d.ftc_residual == 0
        and d.prefactor_positive is True
    )


# --------------------------------------------------------------------------- summary


def derivations() -> dict[str, bool]:
    """Run every symbolic check; map its name to whether it passed (for the report).

    Returns:
        An ordered mapping ``name -> passed`` (a fresh dict; the checks run once per process
        and are cached). Exceptions inside a check propagate.
    """
    return dict(_derivations_cached())


@functools.lru_cache(maxsize=None)
def _derivations_cached() -> tuple[tuple[str, bool], ...]:
    """Run the checks of :func:`derivations` once and freeze the results."""
    results: dict[str, bool] = {}
    for dim in range(1, 5):
        results[f"Steiner formula = Cavalieri slicing, n={dim}"] = steiner_matches_direct(dim)
    results["Theorem 3.1.1: Euler error recursion solved (rsolve)"] = (
        euler_recursion_solution_verified()
    )
    results["Theorem 3.1.1: e_N <= (hM/2L)(e^L - 1)"] = euler_error_bound_holds()
    results["Theorem 4.3: r*^2 = sigma^2 (c + 2n log(tau/sigma))"] = r_star_verified()
    results["Theorem 4.3: chi-square Chernoff bound"] = chernoff_verified()
    results["Lemma D.1: Liouville formula, 2x2"] = liouville_formula_holds(2)
    results["Lemma D.1: Liouville formula, 3x3"] = liouville_formula_holds(3)
    results["Lemma D.1: det exp(At) = exp(tr(A) t)"] = liouville_constant_example()
    results["Lemma D.2: log-threshold implication"] = lemma_d2_implication_holds()
    return tuple(results.items())
