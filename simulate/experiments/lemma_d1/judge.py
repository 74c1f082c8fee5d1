"""Judge of the Lemma D.1 experiment: do the three ``log Lambda_G`` methods agree to ``tol``?

Lemma D.1 (docs/theory.md §6.1): ``n log Lambda_G(z) = log |det J_G(z)| = log phi(z) - log p_g(G(z))``.
The density ratio, the divergence integral and the slogdet of the finite-difference Jacobian must agree
to the solver accuracy ``tol = tol_factor * rtol``; the rtol sweep's log-log slope says whether the
density-ratio / divergence gap is solver error (positive slope).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from simulate.experiments.common import Judged, Verdict

__all__ = ["PAIRS", "verdict_from_units", "sweep_slopes", "judge"]

#: the pairs of methods compared, as ``"a-b"`` keys of a unit's ``max_diff``
PAIRS = (("density_ratio", "divergence"), ("density_ratio", "slogdet"), ("divergence", "slogdet"))


def verdict_from_units(units: list[dict[str, Any]], tol: float, rtol: float, atol: float) -> tuple[Verdict, list[str], dict[str, float]]:
    """``verified`` when every pair of methods differs by at most ``tol`` at every point of every unit.

    ``holds in regime n <= N`` when the units within ``tol`` are exactly those of the smaller ``n``;
    ``refuted`` otherwise. Returns the verdict, the failures (one text per unit and pair) and the
    largest difference per pair.
    """
    failures = []
    by_pair: dict[str, float] = {}
    for u in units:
        for pair, d in u["max_diff"].items():
            by_pair[pair] = max(by_pair.get(pair, 0.0), d)
            if not (d <= tol):
                failures.append(f"{u['field']} n={u['n']} {pair}: {d:.2e}")
    worst = max(by_pair.values()) if by_pair else float("nan")
    key = f"max |diff log Lambda| = {worst:.2e} (tol {tol:.0e})"
    n_all = sorted({u["n"] for u in units})
    fields = sorted({u["field"] for u in units})
    base = (
        f"{len(units)} (field, n) units, fields {', '.join(fields)}, n = {n_all}; dopri5 rtol={rtol:g}, "
        f"atol={atol:g}; tolerance tol = {tol:.0e} on max_z |log Lambda_a - log Lambda_b| per pair; "
        + ", ".join(f"{p}: {v:.2e}" for p, v in by_pair.items())
    )
    if not units:
        return Verdict("refuted", "no units", "nothing was measured"), ["no units"], by_pair
    if not failures:
        return Verdict("verified", key, base + "; all within tol"), failures, by_pair
    bad_n = sorted({u["n"] for u in units if any(not (d <= tol) for d in u["max_diff"].values())})
    good_n = [n for n in n_all if n not in bad_n]
    if good_n and bad_n and min(bad_n) > max(good_n):
        status = f"holds in regime n <= {max(good_n)} (to tol {tol:.0e}; larger n exceed it)"
    else:
        status = "refuted"
    return Verdict(status, key, base + "; outside tol: " + "; ".join(failures[:8])), failures, by_pair


def sweep_slopes(sweeps: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per field: least-squares slope of ``log gap`` against ``log rtol`` (``None`` with < 2 positive gaps)."""
    slopes: dict[str, float | None] = {}
    for sw in sweeps:
        r = np.array([float(k) for k in sw["gaps"]])
        g = np.array(list(sw["gaps"].values()))
        ok = g > 0
        slopes[sw["field"]] = float(np.polyfit(np.log(r[ok]), np.log(g[ok]), 1)[0]) if ok.sum() >= 2 else None
    return slopes


def judge(opts: Any, units: list[dict[str, Any]], sweeps: list[dict[str, Any]]) -> Judged:
    """The verdict and ``result.json`` numbers from the unit records and the rtol-sweep records."""
    tol = opts.tol
    verdict, failures, by_pair = verdict_from_units(units, tol, opts.rtol, opts.atol)
    slopes = sweep_slopes(sweeps)
    if sweeps:
        verdict = dataclasses.replace(verdict, evidence=verdict.evidence + "; gap vs dopri5 rtol (n={}): ".format(opts.sweep_n) + "; ".join(
            f"{sw['field']}: " + ", ".join(f"{k}->{v:.1e}" for k, v in sw["gaps"].items()) for sw in sweeps
        ) + "; log-log slope of the gap vs rtol: " + ", ".join(
            f"{k}: {v:.2f}" if v is not None else f"{k}: n/a" for k, v in slopes.items()
        ) + " (> 0: the gap is solver error that shrinks with the tolerance)")
    numbers = {
        "tol": tol,
        "units": [{k: v for k, v in u.items() if k != "log_Lambda"} for u in units],
        "log_Lambda": {f"{u['field']}:n={u['n']}": u["log_Lambda"] for u in units},
        "max_diff_by_pair": by_pair,
        "sweep": {sw["field"]: sw["gaps"] for sw in sweeps},
        "sweep_slopes": slopes,
        "failures": failures,
    }
    return Judged(verdict, numbers)
