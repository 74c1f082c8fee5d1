r"""Sequential sampling of the Theorem 4.3 cells, and the merge of a unit's rounds into one record.

A trend is decided on the Clopper-Pearson interval at the cell's largest ``n`` (:mod:`simulate.decide`,
docs/theory.md §11.9). Round 0 measures every ``(cell, n)`` with ``num_points`` inverted points; then,
round after round, a cell whose ``p1``, ``p2`` or ``P_inst`` (at ``tau_main``) is still undetermined at
its largest ``n`` gets more points there: as many as :func:`simulate.decide.points_to_settle` says
would decide it at the current estimate (at least doubling), never beyond ``max_points`` in all, and
only while the predicted cost ``nfe x points`` stays within ``max_cell_cost``. A cell that no affordable
number of points would settle gets none: points go where the interval is undecided and decidable.

:func:`summarize` merges a unit's rounds (their raw per-point values) into the record the judge and
the figures read: proportions with their intervals and point counts, means with standard errors,
quantiles, the density-ratio sup, Theorem 4.3's bounds and the Theorem 4.1 / Lemma D.2 check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulate.decide import decide_proportion
from theory.highdim.chi2 import log_chi2_sf
from theory.highdim.thm43 import instability_bounds
from theory.thm41 import clopper_pearson, lemma_d2_log_threshold, theorem41_from_samples

__all__ = ["summarize", "points_to_add", "undecided"]


def _prop(successes: int, trials: int) -> dict[str, Any]:
    est = clopper_pearson(int(successes), int(trials), 0.95)
    return {"estimate": est.estimate, "lower": est.lower, "upper": est.upper, "successes": est.successes, "trials": est.trials}


def _mean_interval(mean: float, sd: float, k: int) -> dict[str, float]:
    se = sd / math.sqrt(k) if k > 1 else math.inf
    return {"mean": mean, "sd": sd, "se": se, "lower": mean - 1.96 * se, "upper": mean + 1.96 * se, "count": int(k)}


def _of(values: np.ndarray) -> dict[str, float]:
    return _mean_interval(float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, values.size)


def summarize(cell: Any, n: int, opts: Any, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for ``(cell, n)`` from its rounds (raw records of :func:`.experiment.compute_unit`)."""
    first = rounds[0]
    c = first["c"]
    cat = lambda key: np.concatenate([np.asarray(r["points"][key], dtype=np.float64) for r in rounds])  # noqa: E731
    log_lambda, sq, log_pg = cat("log_Lambda"), cat("sq_norm"), cat("log_pg")
    p1s = [r["p1_points"] for r in rounds]
    k_p1 = sum(p["count"] for p in p1s)
    mean_pg = sum(p["sum"] for p in p1s) / k_p1
    var_pg = max(0.0, (sum(p["sumsq"] for p in p1s) - k_p1 * mean_pg ** 2) / (k_p1 - 1)) if k_p1 > 1 else 0.0
    far = sq >= c
    per_tau: dict[str, Any] = {}
    for tau in opts.taus:
        tl = f"{tau:g}"
        t41 = theorem41_from_samples(log_lambda, log_pg, sq, n, tau, c)
        bounds = instability_bounds(n, cell.m, cell.sigma, opts.side, tau, c, rho_max=1.0, density_ratio=1.0)
        p1 = _prop(sum(p["successes"][tl] for p in p1s), k_p1)
        per_tau[tl] = {
            "p_inst": _prop(t41.p_inst.successes, t41.p_inst.trials),
            "p1": p1,
            "theorem41_holds": t41.holds,
            "lemma_d2_violations": t41.lemma_d2_violations,
            "log_p1_threshold_per_dim": float(lemma_d2_log_threshold(n, tau, c)) / n,
            "p1_bound": bounds["p1_bound"],
            "p2_bound_K1": bounds["p2_bound"],
            "p_inst_lower_bound_K1": bounds["p_inst_lower_bound"],
            "p1_bound_violated": bool(p1["lower"] > bounds["p1_bound"]),
        }
    p2 = _prop(int(far.sum()), sq.size)
    log_tail = float(log_chi2_sf(n, c))
    return {
        "cell": first["cell"], "n": n, "c": c, "rounds": len(rounds), "points": int(sq.size), "points_p1": int(k_p1),
        "separation": first["separation"], "separated": first["separated"], "mean_coordinate_gap": first["mean_coordinate_gap"],
        "sqnorm_over_n": _of(sq / n),
        "log_Lambda": {**_of(log_lambda), "quantiles_0_10_50_90_100": np.quantile(log_lambda, [0, 0.1, 0.5, 0.9, 1]).tolist()},
        "log_pg_over_n": _mean_interval(mean_pg, math.sqrt(var_pg), k_p1),
        "log_ratio_sup_over_n": max(p["max_neg_log_pg_over_n"] for p in p1s),
        "log_ratio_sup_far_over_n": float((-log_pg[far]).max() / n) if far.any() else None,
        "p2": p2,
        "log_chi2_sf": log_tail,
        "log_K_needed": math.log(p2["lower"]) - log_tail if p2["lower"] > 0 else None,
        "taus": per_tau,
        "nfe": max(r["nfe"] for r in rounds),
        "nfe_round0": first["nfe"],
        "seconds": sum(r["seconds"] for r in rounds),
    }


def undecided(record: dict[str, Any], opts: Any) -> list[tuple[str, Any]]:
    """The proportions of ``record`` (a cell's largest ``n``) still undetermined at ``tau_main``, with their
    :class:`simulate.decide.Decision` (``p1`` and ``p2`` against 0, ``P_inst`` against 1)."""
    tl = f"{opts.tau_main:g}"
    out = []
    for name, prop, target in (("p1", record["taus"][tl]["p1"], "zero"), ("p2", record["p2"], "zero"),
                               ("p_inst", record["taus"][tl]["p_inst"], "one")):
        d = decide_proportion(prop["successes"], prop["trials"], opts.level, target=target)
        if d.status == "undetermined":
            out.append((name, d))
    return out


def points_to_add(record: dict[str, Any], opts: Any) -> int:
    """Inverted points to add at this record's ``n`` in the next round (0: stop).

    The smallest count that :func:`simulate.decide.points_to_settle` says would decide an undetermined
    proportion (p1 scaled to inverted points), at least doubling, capped by ``max_points`` in all and by
    the cost ``nfe x points <= max_cell_cost``; 0 when nothing is undetermined or nothing affordable settles.
    """
    have = int(record["points"])
    cap = opts.max_points if not opts.max_cell_cost else min(opts.max_points, opts.max_cell_cost // max(1, int(record["nfe_round0"])))
    if have >= cap:
        return 0
    wants = []
    for name, d in undecided(record, opts):
        if d.settle_at is None:
            continue
        need = d.settle_at if name != "p1" else math.ceil(d.settle_at * opts.num_points / opts.num_points_p1)
        if need <= cap:
            wants.append(need)
    if not wants:
        return 0
    return max(min(wants), min(2 * have, cap)) - have
