"""The theory suite of the report: symbolic derivations, high-precision agreement, Theorem 4.3's bounds.

Its verdicts are about the mathematics (the derivations check, the bounds evaluate to what the
paper claims under its assumptions). Measured verdicts on the claims come from the simulator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from reports.claims import ClaimRow

__all__ = ["run_theory_suite", "high_precision_agreement"]


def high_precision_agreement(quick: bool = True) -> dict[str, Any]:
    """Largest error of the log-space Steiner and chi-square routines against 50-digit mpmath.

    Error measure: ``|value - reference| / max(1, |reference|)`` (relative on logs).
    """
    from theory.highdim.chi2 import log_chi2_sf
    from theory.highprec import log_chi2_sf_mp, log_steiner_volume_mp
    from theory.highdim.steiner import log_steiner_volume

    ns = [1, 2, 3, 10, 100, 1000] + ([] if quick else [10_000, 100_000])
    steiner_err, chi2_err = 0.0, 0.0
    for n in ns:
        for side, rbar in ((0.05, 0.13), (1.0, 0.01), (0.5, 1.0)):
            r = rbar * np.sqrt(n)
            ref = float(log_steiner_volume_mp(n, side, r))
            steiner_err = max(steiner_err, abs(float(log_steiner_volume(n, side, r)) - ref) / max(1.0, abs(ref)))
    for n in ns + [10**6, 10**7]:
        for ratio in (0.5, 0.99, 1.1, 3.0):
            ref = float(log_chi2_sf_mp(n, ratio * n))
            chi2_err = max(chi2_err, abs(float(log_chi2_sf(n, ratio * n)) - ref) / max(1.0, abs(ref)))
    return {"n_values_steiner": ns, "steiner_max_rel_error": steiner_err, "chi2_max_rel_error": chi2_err}


def _prop21_on_analytic_map() -> ClaimRow:
    """Proposition 2.1 checked on a smooth non-linear map of R^8 with a known-expanding Jacobian."""
    import torch

    from theory.prop21 import check_proposition_21

    gen = torch.Generator().manual_seed(0)
    A = 1.5 * torch.randn(8, 8, generator=gen, dtype=torch.float64) / 8**0.5
    x = torch.randn(4, 8, generator=gen, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ A.T) + z + 0.1 * z**3

    check = check_proposition_21(f, x)
    ok = bool(torch.all(check.converged) and torch.all(check.holds))
    order = float(torch.nanmean(torch.as_tensor(check.order, dtype=torch.float64)))
    return ClaimRow.of(
        "prop21", "verified" if ok else "refuted",
        f"min |mu - lambda| = {float(check.min_error.max()):.1e}, convergence order {order:.2f}",
        "f(z) = tanh(Az) + z + 0.1 z^3 on R^8, 4 points: mu_f(x, s u) -> lambda_f(x, u) as s -> 0 (first order), "
        f"and max_s mu_f(x, s v1) >= ||J_f||_2 - eps (||J_f||_2 = {[round(float(v), 3) for v in check.spectral_norm]}). "
        "On the generation maps: simulator suite.",
        section="Proposition 2.1",
    )


def run_theory_suite(out_dir: Path, quick: bool = True, progress=None) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run the theory checks, write the curves' figures into ``out_dir``; return verdicts and data."""
    from theory.highdim.curves import write_theory_curves
    from theory.symbolic.derivations import derivations

    step = progress or (lambda msg: None)
    t0 = time.perf_counter()
    step("theory: symbolic derivations (sympy)")
    derived = derivations()
    step("theory: agreement with 50-digit mpmath")
    agreement = high_precision_agreement(quick=quick)
    step("theory: Theorem 4.3 bounds over n = 1 .. 10^7")
    curves = write_theory_curves(out_dir)
    data = curves["data"]
    asym = data["curves"]["asymptotic"]
    figs = [f.name for f in curves["figures"]]
    frac = data["p1_rate_map"]["fraction_p1_to_zero"]
    p = data["curves"]["params"]
    n_grid = data["curves"]["n"]
    lb = data["curves"]["p_inst_lower_bound"]
    n_999 = next((n for n, v in zip(n_grid, lb) if v >= 0.999), None)

    def passed(prefix: str) -> bool:
        keys = [k for k in derived if k.startswith(prefix)]
        return bool(keys) and all(derived[k] for k in keys)

    step("theory: Proposition 2.1 on an analytic map")
    prop21 = _prop21_on_analytic_map()
    verdicts = [prop21]
    ok_31 = passed("Theorem 3.1")
    verdicts.append(ClaimRow.of(
        "thm31", "verified" if ok_31 else "refuted",
        "Euler recursion solved exactly; (1 + L/N)^N <= e^L",
        "sympy: e_N = (hM/2L)((1 + hL)^N - 1) <= (hM/2L)(e^L - 1) (part 1 of Thm 3.1, symbolic). "
        "Measured bounds on flows: simulator suite.",
        section="Theorem 3.1",
    ))
    ok_d1 = passed("Lemma D.1")
    verdicts.append(ClaimRow.of(
        "lemma_d1", "verified" if ok_d1 else "refuted",
        "d/dt log det Phi = tr A (2x2, 3x3)",
        "sympy: Liouville's formula, the divergence-integral form of Lemma D.1 (symbolic).",
        section="Lemma D.1",
    ))
    ok_41 = passed("Lemma D.2") and passed("Theorem 4.3: r*")
    verdicts.append(ClaimRow.of(
        "thm41", "verified" if ok_41 else "refuted",
        "margin of Lemma D.2 = a + b/2 > 0",
        "sympy: Lemma D.2's implication and r*^2 = sigma^2 (c + 2 n ln(tau/sigma)) (symbolic).",
        section="Theorem 4.1",
    ))
    verdicts.append(ClaimRow.of(
        "thm43_p1",
        "verified" if frac == 1.0 else f"holds in regime: p1-bound rate < 0 on {100 * frac:.0f}% of the (sigma, l) grid",
        f"rate {asym.get('p1_rate', float('nan')):.4f} per dim at sigma={p['sigma']}, l={p['side']}",
        "The p1 bound rho_max m S_n(l, r*) decays exponentially iff the Steiner rate at rbar is negative; "
        f"on the grid sigma, l in [1e-3, 1] (tau={p['tau']}, c_n=(1+{p['eps']})n) that happens on {100 * frac:.0f}% of it "
        "(large sigma or wide supports: the bound becomes trivial). Bound-level verdict; measured p1: simulator suite. "
        f"Steiner formula = direct geometry for n = 1..4 (sympy): {passed('Steiner formula')}; log-space Steiner sum "
        f"vs 50-digit mpmath: max relative error {agreement['steiner_max_rel_error']:.1e}.",
        section="Theorem 4.3", figures=[f for f in figs if "rate" in f],
    ))
    verdicts.append(ClaimRow.of(
        "thm43_p2", "verified (given the density-ratio constant K stays bounded)",
        f"rate {asym['p2_rate']:.5f} per dim (gamma = {asym['gamma']})",
        "K P[chi2_n >= (1+eps) n] decays like exp(-n (eps - ln(1+eps))/2) for every eps > 0; K bounded is the "
        "paper's hypothesis, not proved. Chi-square log-tails vs 50-digit mpmath up to n = 10^7: max relative error "
        f"{agreement['chi2_max_rel_error']:.1e}; Chernoff bound derived symbolically: {passed('Theorem 4.3: chi-square')}.",
        section="Theorem 4.3", figures=[f for f in figs if "bounds" in f],
    ))
    verdicts.append(ClaimRow.of(
        "thm43_pinst",
        "verified (bound-level, default parameters)" if asym.get("p_inst_to_one") else "holds in regime (see p1 row)",
        f"P_inst lower bound >= 0.999 from n = {n_999}" if n_999 else "lower bound stays below 0.999",
        f"1 - p1 - p2 bounds at m={p['m']}, sigma={p['sigma']}, l={p['side']}, tau={p['tau']}.",
        section="Theorem 4.3", figures=figs,
    ))
    data = {
        "symbolic_derivations": derived,
        "high_precision_agreement": agreement,
        "curves_asymptotic": asym,
        "curves_params": p,
        "p1_rate_map_fraction": frac,
        "seconds": time.perf_counter() - t0,
    }
    return verdicts, data
