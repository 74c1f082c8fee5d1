"""Tests of theory.symbolic.derivations: each derivation checked against an independently derived side."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import stats

from theory.symbolic import derivations as S
from theory.symbolic.derivations import L, M, c, h, k, l, n, r, sigma, tau, theta


def _zero(expr: sp.Expr) -> bool:
    return sp.simplify(sp.expand_log(expr, force=True)) == 0


# --------------------------------------------------------------------------- Steiner


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_steiner_equals_cavalieri_slicing(dim: int) -> None:
    steiner = S.steiner_volume_expr(dim)
    direct = S.parallel_body_volume_direct(dim)
    assert sp.simplify(steiner - direct) == 0
    assert S.steiner_matches_direct(dim)


def test_steiner_closed_forms_n2_n3() -> None:
    assert sp.simplify(S.steiner_volume_expr(2) - (l**2 + 4 * l * r + sp.pi * r**2)) == 0
    n3 = l**3 + 6 * l**2 * r + 3 * sp.pi * l * r**2 + sp.Rational(4, 3) * sp.pi * r**3
    assert sp.simplify(S.steiner_volume_expr(3) - n3) == 0
    assert sp.simplify(S.parallel_body_volume_direct(2) - (l**2 + 4 * l * r + sp.pi * r**2)) == 0
    assert sp.simplify(S.parallel_body_volume_direct(3) - n3) == 0


@pytest.mark.parametrize("dim", [0, 1, 2, 3, 4, 5])
def test_steiner_limits_cube_and_ball(dim: int) -> None:
    # r = 0: the cube itself; l = 0: a ball, volume pi^(n/2) r^n / Gamma(n/2 + 1).
    vol = S.steiner_volume_expr(dim)
    assert sp.simplify(vol.subs(r, 0) - l**dim) == 0
    ball = float(math.pi ** (dim / 2) / math.gamma(dim / 2 + 1))
    assert float(vol.subs({l: 0, r: 1})) == pytest.approx(ball, rel=1e-14)


def test_steiner_monte_carlo_n2() -> None:
    # Independent numeric check: fraction of a box within distance r of the unit square.
    rng = np.random.default_rng(0)
    side, rad = 1.0, 0.5
    lo, hi = -rad, side + rad
    pts = rng.uniform(lo, hi, size=(200_000, 2))
    dist = np.linalg.norm(np.clip(pts, 0.0, side) - pts, axis=1)
    estimate = (hi - lo) ** 2 * np.mean(dist <= rad)
    exact = float(S.steiner_volume_expr(2).subs({l: side, r: rad}))
    assert estimate == pytest.approx(exact, rel=0.01)


def test_unit_ball_volume_values() -> None:
    assert S.unit_ball_volume_expr(0) == 1
    assert S.unit_ball_volume_expr(1) == 2
    assert S.unit_ball_volume_expr(2) == sp.pi
    assert S.unit_ball_volume_expr(3) == sp.Rational(4, 3) * sp.pi


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_steiner_rejects_bad_dimension(bad: object) -> None:
    with pytest.raises(ValueError, match="^n "):
        S.steiner_volume_expr(bad)
    with pytest.raises(ValueError, match="^n "):
        S.parallel_body_volume_direct(bad)


# --------------------------------------------------------------------------- Theorem 3.1


def test_euler_recursion_solution_satisfies_recursion() -> None:
    sol = S.euler_error_recursion_solution()
    residual = sol.subs(k, k + 1) - (1 + h * L) * sol - h**2 * M / 2
    assert sp.simplify(residual) == 0
    assert sp.simplify(sol.subs(k, 0)) == 0


def test_euler_recursion_solution_closed_form() -> None:
    sol = S.euler_error_recursion_solution()
    stated = (h * M / (2 * L)) * ((1 + h * L) ** k - 1)
    assert sp.simplify(sol - stated) == 0
    assert sp.simplify(S.euler_error_closed_form() - stated) == 0
    assert S.euler_recursion_solution_verified()


def test_euler_recursion_solution_matches_iteration() -> None:
    # Iterate the recursion numerically and compare with the rsolve solution.
    sol = S.euler_error_recursion_solution()
    vals = {h: sp.Rational(1, 7), L: sp.Rational(3, 2), M: 5}
    e = sp.Integer(0)
    for step in range(10):
        assert sp.simplify(sol.subs(vals).subs(k, step) - e) == 0
        e = (1 + vals[h] * vals[L]) * e + vals[h] ** 2 * vals[M] / 2


def test_euler_bound_derivation_pieces() -> None:
    d = S.euler_error_bound_derivation()
    assert d.g_at_zero == 0
    assert d.g_prime_nonpositive is True
    assert d.ftc_residual == 0
    assert d.prefactor_positive is True
    assert S.euler_error_bound_holds()
    # g'(x) = -x / (N + x), by differentiating g here.
    (xs,) = [s for s in d.g.free_symbols if s.name == "x"]
    (Ns,) = [s for s in d.g.free_symbols if s.name == "N"]
    assert sp.simplify(sp.diff(d.g, xs) + xs / (Ns + xs)) == 0


@pytest.mark.parametrize("Lv", [0.1, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("Nv", [1, 2, 10, 500])
def test_euler_bound_numeric(Lv: float, Nv: int) -> None:
    d = S.euler_error_bound_derivation()
    (Ns,) = [s for s in d.e_N.free_symbols if s.name == "N"]
    vals = {L: Lv, M: 2.5, Ns: Nv}
    e_N = float(d.e_N.subs(vals).evalf())
    bound = float(d.bound.subs(vals).evalf())
    assert 0 < e_N <= bound * (1 + 1e-12)
    # The same value from the rsolve solution with h = 1/N, k = N.
    direct = S.euler_error_recursion_solution().subs({h: 1 / sp.Integer(Nv), k: Nv, L: Lv, M: 2.5})
    assert float(direct.evalf()) == pytest.approx(e_N, rel=1e-12)
    # (1 + L/N)^N <= e^L through g(L) <= 0.
    (xs,) = [s for s in d.g.free_symbols if s.name == "x"]
    assert float(d.g.subs({xs: Lv, Ns: Nv}).evalf()) <= 0


# --------------------------------------------------------------------------- r*


def test_r_star_squared_closed_form() -> None:
    rs2 = S.r_star_squared_expr()
    stated = sigma**2 * (c + 2 * n * sp.log(tau / sigma))
    assert _zero(rs2 - stated)
    assert sp.simplify(sp.logcombine(rs2 - stated, force=True)) == 0
    assert S.r_star_verified()


def test_r_star_substitutes_back() -> None:
    rs2 = S.r_star_squared_expr()
    kernel = (2 * sp.pi * sigma**2) ** (-n / 2) * sp.exp(-rs2 / (2 * sigma**2))
    level = (2 * sp.pi) ** (-n / 2) * sp.exp(-c / 2) * tau ** (-n)
    assert _zero(sp.log(kernel) - sp.log(level))
    # Numerically too (tau > sigma so r*^2 > 0).
    vals = {n: 3, sigma: 0.2, tau: 0.7, c: 4.0}
    rad = math.sqrt(float(rs2.subs(vals)))
    k_val = float(S.gaussian_kernel_expr(r).subs(vals).subs(r, rad))
    assert k_val == pytest.approx(float(S.p1_threshold_expr().subs(vals)), rel=1e-12)


# --------------------------------------------------------------------------- Chernoff


def test_chernoff_theta_star_stationary_minimum() -> None:
    theta_star, _ = S.chi2_chernoff_bound_expr()
    assert sp.simplify(theta_star - (1 - n / c) / 2) == 0
    objective = -(n / 2) * sp.log(1 - 2 * theta) - theta * c
    assert sp.simplify(sp.diff(objective, theta).subs(theta, theta_star)) == 0
    curvature = sp.simplify(sp.diff(objective, theta, 2).subs(theta, theta_star))
    assert curvature.is_positive
    assert S.chernoff_verified()


def test_chernoff_log_bound_form() -> None:
    _, log_bound = S.chi2_chernoff_bound_expr()
    assert _zero(log_bound - (-(c - n) / 2 + (n / 2) * sp.log(c / n)))
    assert sp.simplify(log_bound.subs(c, n)) == 0  # trivial bound P <= 1 at c = n


@pytest.mark.parametrize(
    ("nv", "cv"),
    [(1, 1.5), (1, 4.0), (1, 30.0), (10, 12.0), (10, 40.0), (1000, 1050.0), (1000, 1500.0)],
)
def test_chernoff_dominates_true_tail(nv: int, cv: float) -> None:
    _, log_bound = S.chi2_chernoff_bound_expr()
    bound = float(log_bound.subs({n: nv, c: cv}))
    assert bound <= 0
    assert stats.chi2.logsf(cv, nv) <= bound


# --------------------------------------------------------------------------- Liouville


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_liouville_formula(dim: int) -> None:
    assert S.liouville_formula_holds(dim)


def test_liouville_rejects_bad_dim() -> None:
    with pytest.raises(ValueError, match="^dim "):
        S.liouville_formula_holds(0)


def test_liouville_constant_example() -> None:
    assert S.liouville_constant_example()
    t = sp.Symbol("t", real=True)
    A = sp.Matrix([[2, 1], [1, 2]])  # another diagonalisable matrix, eigenvalues 1 and 3
    assert sp.simplify((A * t).exp().det() - sp.exp(4 * t)) == 0


# --------------------------------------------------------------------------- Lemma D.2


def test_lemma_d2_threshold_is_log_of_p1_level() -> None:
    thr = S.lemma_d2_log_threshold_expr()
    stated = -(n / 2) * sp.log(2 * sp.pi) - c / 2 - n * sp.log(tau)
    assert _zero(thr - stated)
    assert _zero(sp.exp(thr) - S.p1_threshold_expr())


def test_lemma_d2_margin() -> None:
    margin, a, b = S.lemma_d2_margin_expr()
    assert sp.simplify(margin - (a + b / 2)) == 0
    assert S.lemma_d2_implication_holds()


def test_lemma_d2_numeric_instance() -> None:
    # Pick ||z||^2 < c and log p_g below threshold; Lambda^n = phi / p_g must exceed tau^n.
    vals = {n: 4, c: 6.0, tau: 1.3}
    thr = float(S.lemma_d2_log_threshold_expr().subs(vals))
    z = sp.Symbol("z2")
    log_phi = float(S.log_standard_normal_density_expr(z).subs(vals).subs(z, 5.9))
    log_pg = thr - 1e-3
    assert log_phi - log_pg > 4 * math.log(1.3)


# --------------------------------------------------------------------------- summary


def test_derivations_all_pass() -> None:
    results = S.derivations()
    assert len(results) == 12
    assert all(isinstance(v, bool) for v in results.values())
    assert all(results.values()), [name for name, ok in results.items() if not ok]
    results.clear()  # a fresh dict: clearing it must not affect the cache
    assert len(S.derivations()) == 12
