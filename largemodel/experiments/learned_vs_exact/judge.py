r"""Judge of the learned-vs-exact experiment: does the learned net inherit, damp or exaggerate the exact instability?

The one rule (docs/theory.md §10.8, §11.9), per regime at its largest ``n`` and the largest training budget, on
the points ``x ~ p_r`` (Theorem 4.3's law, where the exact instability lives): each model's
``P_inst(tau) = P[(1/n) log Lambda_G(F(x)) > log tau]`` is decided against ``level`` by its 95%
Clopper-Pearson interval (:func:`simulate.decide.decide_proportion`): *stable* when the interval lies below
``level``, *unstable* when above, else undecided. The learned model

* **inherits** the exact instability when both are decided and agree (both unstable, or both stable);
* **damps** it when the exact flow is unstable and the learned one stable;
* **exaggerates** it when the exact flow is stable and the learned one unstable;
* is **undetermined** when either interval straddles ``level``.

Alongside (not deciding): the paired per-point gap ``ell_learned - ell_exact`` of ``ell = (1/n) log Lambda_G``
with its 95% bootstrap interval (:func:`simulate.stats.bootstrap_ci`), Spearman of learned against exact
``ell`` and of the reconstruction error against ``mu_bar`` (:func:`simulate.stats.correlate`, the intervals
Fig. 4(c) uses, §9.6), and the learned density error ``(log p_theta(x) - log p_g(x)) / n`` at held-out
``x ~ p_g`` with its bootstrap interval (Lemma D.1).

The claim ("a network trained on a Gaussian-neighbour mixture reproduces its instability") is decided on the
regimes where the exact flow is unstable: ``holds in regime`` where every one inherits, ``refuted`` where every
one is damped or exaggerated, ``inconclusive`` otherwise (or when no regime is decided unstable).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulate.experiments.common import Judged
from simulate.verdict import Status, StatusKind, Verdict

__all__ = ["WORDS", "classify", "regime_decision", "overall_verdict", "judge", "control_verdict"]

#: the per-regime verdict words
WORDS = ("inherits", "damps", "exaggerates", "undetermined")


def _p_inst(ell: list[float], tau: float, level: float) -> dict[str, Any]:
    """``P_inst(tau)`` of the values ``ell`` with its Clopper-Pearson interval, decided against ``level``."""
    from simulate.decide import decide_proportion

    k = int(np.sum(np.asarray(ell, dtype=float) > math.log(tau)))
    return decide_proportion(k, len(ell), level, target="zero").as_dict()


def _state(decision: dict[str, Any]) -> str:
    """``stable`` (interval below the level), ``unstable`` (above) or ``undecided``."""
    return {"holds": "stable", "fails": "unstable"}.get(decision["status"], "undecided")


def classify(exact: dict[str, Any], learned: dict[str, Any]) -> str:
    """The regime's word from the two ``P_inst`` decisions (module docstring)."""
    e, lrn = _state(exact), _state(learned)
    if "undecided" in (e, lrn):
        return "undetermined"
    if e == lrn:
        return "inherits"
    return "damps" if e == "unstable" else "exaggerates"


def regime_decision(exact_ell: list[float], learned_ell: list[float], tau: float, level: float) -> dict[str, Any]:
    """The decision of one regime on its ``p_r`` points: both ``P_inst`` decisions and the word."""
    exact, learned = _p_inst(exact_ell, tau, level), _p_inst(learned_ell, tau, level)
    return {"word": classify(exact, learned), "exact": exact, "learned": learned}


def _fmt(d: dict[str, Any]) -> str:
    return f"{d['estimate']:.2f} [{d['lower']:.2f}, {d['upper']:.2f}]"


def overall_verdict(regimes: dict[str, dict[str, Any]], what: str) -> Verdict:
    """The claim's verdict from the regimes' decisions (``regime -> regime_decision(...) + n, budget``)."""
    unstable = {r: d for r, d in regimes.items() if _state(d["exact"]) == "unstable"}
    parts = [f"{r} n = {d['n']}: P_inst exact {_fmt(d['exact'])}, learned {_fmt(d['learned'])} -> {d['word']}"
             for r, d in regimes.items()]
    key = "; ".join(f"{r}: {d['word']}" for r, d in regimes.items())
    evidence = f"{what}: " + "; ".join(parts) + "."
    words = {d["word"] for d in unstable.values()}
    if not unstable:
        status = Status.of(StatusKind.INCONCLUSIVE, "the exact flow is decided unstable in no regime")
    elif words == {"inherits"}:
        status = Status.of(StatusKind.HOLDS_IN_REGIME, f"{', '.join(unstable)} (small MLPs trained here)")
    elif words <= {"damps", "exaggerates"}:
        status = Status.of(StatusKind.REFUTED)
    else:
        status = Status.of(StatusKind.INCONCLUSIVE, "an interval straddles the level")
    return Verdict(status, key, evidence)


def _mean_diff(a: np.ndarray, b: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Mean of the paired differences ``a - b`` with its 95% bootstrap interval."""
    from simulate.stats import bootstrap_ci

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    d = a - b
    if np.ptp(d) == 0.0:  # the bootstrap of a constant is that constant
        return {"mean": float(d[0]), "ci": [float(d[0]), float(d[0])], "method": "constant"}
    (lo, hi), method = bootstrap_ci(a, b, stat, n_boot=n_boot, seed=0, confidence=0.95)
    return {"mean": float(d.mean()), "ci": [lo, hi], "method": method}


def _spearman(x: np.ndarray, y: np.ndarray, n_boot: int) -> dict[str, Any]:
    from simulate.stats import correlate

    c = correlate(x, y, n_boot=n_boot, seed=0)
    return {"rho": c["spearman_rho"], "ci": list(c["spearman_ci"]), "p": c["spearman_p"], "n": c["n"], "reason": c["reason"]}


def _laws(rec: dict[str, Any], key: str, points: int) -> dict[str, np.ndarray]:
    v = np.asarray(rec[key], dtype=float)
    return {"p_r": v[:points], "p_g": v[points:]}


def _cell(opts: Any, regime: str, n: int, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every number of one ``(regime, n)``: per model its ``P_inst`` and summaries, per learned model and the
    control the gaps, correlations, density error and the regime word."""
    exact = records["exact"]
    p = int(exact["points"])
    e_ell = _laws(exact, "log_Lambda", p)
    first = f"err_{opts.steps[0]}"
    models: dict[str, Any] = {}
    for name, rec in records.items():
        ell = _laws(rec, "log_Lambda", p)
        err, mu = _laws(rec, first, p), _laws(rec, "mu_bar", p)
        models[name] = {
            "P_inst": {law: _p_inst(ell[law].tolist(), opts.tau, opts.level) for law in ell},
            "median_log_Lambda": {law: float(np.median(ell[law])) for law in ell},
            "median_err": {f"err_{s}": {law: float(np.median(v)) for law, v in _laws(rec, f"err_{s}", p).items()}
                           for s in opts.steps},
            "median_mu_bar": {law: float(np.median(mu[law])) for law in mu},
            "spearman_err_mu_bar": {law: _spearman(mu[law], err[law], opts.n_boot) for law in mu},
            **{k: rec[k] for k in ("budget", "train_loss", "train_seconds") if k in rec},
        }
        if name == "exact":
            continue
        lp, ep = _laws(rec, "log_p", p)["p_g"], _laws(exact, "log_p", p)["p_g"]
        models[name].update(
            gap_log_Lambda={law: _mean_diff(ell[law], e_ell[law], opts.n_boot) for law in ell},
            spearman_log_Lambda={law: _spearman(ell[law], e_ell[law], opts.n_boot) for law in ell},
            density_error=_mean_diff(lp / n, ep / n, opts.n_boot),
            decision=regime_decision(e_ell["p_r"].tolist(), ell["p_r"].tolist(), opts.tau, opts.level))
    return {"regime": regime, "n": n, "models": models}


def control_verdict(numbers: dict[str, Any]) -> Verdict:
    """The claim's verdict with the control (the exact field with a wrong ``sigma``) as the learned model, in the
    control regime at its largest ``n``: the same rule (:func:`overall_verdict`)."""
    c = numbers["control"]
    return overall_verdict({c["regime"]: c}, "negative control (the exact field with sigma x "
                           f"{c['sigma_factor']:g} posing as the learned model)")


def judge(opts: Any, records: dict[str, dict[int, dict[str, dict[str, Any]]]]) -> Judged:
    """Decide the claim (module docstring) from the records ``records[regime][n][model]`` (models: ``exact``,
    ``learned@<budget>`` per budget, ``control`` in the control regime at the largest ``n``)."""
    cells, ell = [], {}
    for regime in opts.regimes:
        for n in opts.ns:
            recs = records[regime][n]
            cells.append(_cell(opts, regime, n, recs))
            ell.setdefault(regime, {})[str(n)] = {m: r["log_Lambda"] for m, r in recs.items()}
    top, big = max(opts.ns), f"learned@{max(opts.budgets)}"
    at_top = {c["regime"]: c for c in cells if c["n"] == top}
    regimes = {r: {**at_top[r]["models"][big]["decision"], "n": top, "budget": max(opts.budgets)} for r in opts.regimes}
    ctl = at_top[opts.control_regime]["models"]["control"]
    numbers: dict[str, Any] = {
        "cells": cells, "log_Lambda": ell, "points": opts.points, "regimes": regimes,
        "control": {**ctl["decision"], "regime": opts.control_regime, "n": top, "sigma_factor": opts.control_sigma_factor},
    }
    overall = overall_verdict(regimes, f"P_inst(tau = {opts.tau:g}) at x ~ U[0,1]^n, {opts.points} points, "
                                       f"net after {max(opts.budgets)} training steps")
    overall.evidence += " " + _details(opts, cells, top)
    return Judged(overall=overall, numbers=numbers, claims={"learned_vs_exact": overall})


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    lo, hi = d["ci"]
    f = lambda v: "nan" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"  # noqa: E731
    return f"{f(d.get('mean', d.get('rho')))} [{f(lo)}, {f(hi)}]"


def _details(opts: Any, cells: list[dict[str, Any]], top: int) -> str:
    """Sentences: per regime at the largest n the gap, Spearman, density error by budget."""
    out = []
    for c in cells:
        if c["n"] != top:
            continue
        by_budget = "; ".join(
            f"{b} steps: gap {_ci(c['models'][f'learned@{b}']['gap_log_Lambda']['p_r'])}, "
            f"Spearman {_ci(c['models'][f'learned@{b}']['spearman_log_Lambda']['p_r'])}, "
            f"density error {_ci(c['models'][f'learned@{b}']['density_error'], 3)}" for b in opts.budgets)
        ex = c["models"]["exact"]
        out.append(f"{c['regime']} (n = {top}): median (1/n) log Lambda exact {ex['median_log_Lambda']['p_r']:.2f} at "
                   f"p_r, {ex['median_log_Lambda']['p_g']:.2f} at p_g; learned-exact per-point gap of (1/n) log Lambda at "
                   f"p_r (mean, 95% bootstrap) and Spearman learned vs exact, held-out density error per coordinate: "
                   f"{by_budget}")
    return " ".join(s + "." for s in out)
