r"""Judge of the Theorem 4.3 experiment: per-cell trends, per-claim verdicts that say only what was measured.

Each cell's sequences over ``n`` are classified by :func:`.thm43_trend.classify_trend` with the mean
behind each proportion as its driver (docs/theory.md §8, §6.3; findings in §11.5):
``p2 -> 0`` with ``||F||^2/n`` against ``1 + eps``; ``p1(tau) -> 0`` with ``log p_g / n`` against
``-log(2 pi)/2 - (1 + eps)/2 - log tau``; ``P_inst(tau) -> 1`` with ``(1/n) log Lambda`` against
``log tau``. A claim is ``verified`` if it holds on every cell, ``refuted`` if on none (and fails on
one), otherwise ``holds in regime: <the cells where it holds>``; every text names the grid it rests on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from theory.thm41 import lemma_d2_log_threshold

from simulate.decide import decide_proportion, decide_slope
from simulate.experiments import common
from simulate.experiments.common import Verdict
from simulate.experiments.thm43.geometry import Cell
from simulate.experiments.thm43.trend import Driver, classify_trend, slope_per_doubling

__all__ = ["Judged", "judge", "describe_cells", "claim_status", "K_UNBOUNDED_STEP"]

K_UNBOUNDED_STEP = 1.0
"""``log sup p_r/p_g`` rising by more than this many nats over the last step of n: ``K`` is not bounded."""


@dataclass
class Judged(common.Judged):
    """:class:`.common.Judged` (verdicts per claim and overall, numbers) plus the per-cell classes
    (claim -> tau label -> cell -> class) that the regime map draws."""

    classes: dict[str, dict[str, dict[Cell, str]]] = field(default_factory=dict)


def _sigmas(values: list[float], all_sigmas: tuple[float, ...]) -> str:
    if sorted(values) == sorted(all_sigmas):
        return "all sigma"
    return "sigma " + ", ".join(f"{s:g}" for s in sorted(values))


def describe_cells(chosen: list[Cell], all_sigmas: tuple[float, ...]) -> str:
    """Group cells into a short regime text, e.g. ``"single box (sigma 1, 2); diag m=2,4 g/s=8 (all sigma)"``.

    Cells of one geometry and ``g/sigma`` are grouped over ``sigma``; groups that differ only in ``m``
    are merged.
    """
    by_geometry: dict[tuple, list[float]] = defaultdict(list)
    for c in chosen:
        by_geometry[(c.geometry, c.gap_ratio or 0.0, c.m)].append(c.sigma)
    merged: dict[tuple, list[int]] = defaultdict(list)
    for (geometry, ratio, m), sig in by_geometry.items():
        merged[(geometry, ratio, tuple(sorted(sig)))].append(m)
    order = {"single": 0, "diagonal": 1, "random": 2}
    parts = []
    for (geometry, ratio, sig), m_list in sorted(merged.items(), key=lambda kv: (order[kv[0][0]], -kv[0][1], min(kv[1]))):
        ms = ",".join(str(m) for m in sorted(m_list))
        name = {"single": "single box", "random": f"random m={ms}"}.get(geometry, f"diag m={ms} g/s={ratio:g}")
        parts.append(f"{name} ({_sigmas(list(sig), all_sigmas)})")
    return "; ".join(parts) or "no cell"


def claim_status(per_cell: dict[Cell, str], all_sigmas: tuple[float, ...]) -> str:
    """``verified`` / ``refuted`` / ``holds in regime: ...`` from one claim's classes at one tau; a
    regime names how many cells fail outside it (``...; fails on 26/54 cells``), so that a claim that
    fails on most of the grid does not read as holding."""
    holds = [c for c, k in per_cell.items() if k == "holds"]
    fails = sum(k == "fails" for k in per_cell.values())
    if len(holds) == len(per_cell):
        return "verified"
    if not holds and fails:
        return "refuted"
    if not holds:
        return "holds in regime: undetermined on every cell"
    return f"holds in regime: {describe_cells(holds, all_sigmas)}" + (f"; fails on {fails}/{len(per_cell)} cells" if fails else "")


def _seq(recs: list[dict], get: Any) -> list[Any]:
    return [get(r) for r in recs]


def _classify(props: list[dict], target: str, level: float, driver: Driver) -> str:
    return classify_trend(_seq(props, lambda p: p["estimate"]), _seq(props, lambda p: p["lower"]),
                          _seq(props, lambda p: p["upper"]), target=target, level=level, driver=driver)


def _decision(prop: dict, target: str, level: float, trend: str) -> dict:
    """The interval decision at the largest n (:func:`simulate.decide.decide_proportion`) with points to settle,
    and why the trend ``trend`` is undetermined: the interval (more points would settle it) or the trend
    toward the target (the interval excludes the level but the proportion or its driving mean still moves)."""
    d = decide_proportion(prop["successes"], prop["trials"], level, target=target).as_dict()
    d["of"] = "the proportion" if target == "zero" else "1 - the proportion"  # what estimate / lower / upper are of
    if trend == "undetermined":
        d["undetermined_by"] = ("interval" if d["status"] == "undetermined" else
                                "trend toward the target (falling proportion or driver slope whose interval excludes 0)")
    return d


def _cell_row(cell: Cell, recs: list[dict], opts: Any, lln: dict[float, dict]) -> tuple[dict, dict[str, dict[str, str]]]:
    ns = [r["n"] for r in recs]
    eps, level = opts.eps, opts.level
    mean_se = lambda key: (_seq(recs, lambda r: r[key]["mean"]), _seq(recs, lambda r: r[key]["se"]))  # noqa: E731
    sq_m, sq_se = mean_se("sqnorm_over_n")
    ll_m, ll_se = mean_se("log_Lambda")
    pg_m, pg_se = mean_se("log_pg_over_n")
    classes: dict[str, dict[str, str]] = {"thm43_p2": {}, "thm43_p1": {}, "thm43_pinst": {}}
    classes["thm43_p2"]["-"] = _classify(_seq(recs, lambda r: r["p2"]), "zero", level, Driver(ns, sq_m, sq_se, 1 + eps))
    last = recs[-1]
    ratio = _seq(recs, lambda r: r["log_ratio_sup_far_over_n"])
    use_far = len(recs) >= 2 and ratio[-1] is not None and ratio[-2] is not None
    k_step = ns[-1] * ratio[-1] - ns[-2] * ratio[-2] if use_far else None
    slope, slope_se = slope_per_doubling(ns, ll_m, ll_se)
    slope_decision = decide_slope(ns[-2], ns[-1], ll_m[-2], ll_m[-1], ll_se[-2], ll_se[-1]).as_dict() if len(ns) > 1 else None
    gap = last["mean_coordinate_gap"]
    row: dict[str, Any] = {
        "label": cell.label, "geometry": cell.geometry, "sigma": cell.sigma, "m": cell.m, "gap_ratio": cell.gap_ratio,
        "mean_gap_over_sigma": None if gap is None else gap / cell.sigma, "ns": ns, "n_max": ns[-1],
        "points": _seq(recs, lambda r: r["points"]), "points_p1": _seq(recs, lambda r: r["points_p1"]),
        "all_separated": all(r["separated"] for r in recs),
        "p2": {"class": classes["thm43_p2"]["-"], "sequence": _seq(recs, lambda r: r["p2"]["estimate"]), "last": last["p2"],
               "intervals": _seq(recs, lambda r: [r["p2"]["lower"], r["p2"]["upper"]]),
               "decision": _decision(last["p2"], "zero", level, classes["thm43_p2"]["-"])},
        "sqnorm_over_n": {"sequence": sq_m, "last": last["sqnorm_over_n"]},
        "log_Lambda": {"sequence": ll_m, "last": last["log_Lambda"], "slope_per_doubling": slope, "slope_se": slope_se,
                       "slope_last_step": slope_decision},
        "density_ratio": {
            "over": "samples with ||F(x)||^2 >= c (where the p2 bound needs p_r <= K p_g)",
            "log_sup_over_n": ratio,
            "log_sup_over_n_all_p1_points": _seq(recs, lambda r: r["log_ratio_sup_over_n"]),
            "log_K_step_last": k_step,
            "K_bounded": None if k_step is None else not (k_step > K_UNBOUNDED_STEP and ratio[-1] > 0),
        },
        "taus": {},
    }
    for tau in opts.taus:
        tl = f"{tau:g}"
        thr = float(lemma_d2_log_threshold(1, tau, 1 + eps))  # the p1 level per coordinate (Lemma D.2, n = 1)
        c1 = _classify(_seq(recs, lambda r: r["taus"][tl]["p1"]), "zero", level, Driver(ns, pg_m, pg_se, thr))
        ci = _classify(_seq(recs, lambda r: r["taus"][tl]["p_inst"]), "one", level,
                       Driver(ns, ll_m, ll_se, math.log(tau), want="above"))
        classes["thm43_p1"][tl], classes["thm43_pinst"][tl] = c1, ci
        t_last = last["taus"][tl]
        row["taus"][tl] = {
            "p1": {"class": c1, "sequence": _seq(recs, lambda r: r["taus"][tl]["p1"]["estimate"]), "last": t_last["p1"],
                   "intervals": _seq(recs, lambda r: [r["taus"][tl]["p1"]["lower"], r["taus"][tl]["p1"]["upper"]]),
                   "decision": _decision(t_last["p1"], "zero", level, c1)},
            "p_inst": {"class": ci, "sequence": _seq(recs, lambda r: r["taus"][tl]["p_inst"]["estimate"]),
                       "last": t_last["p_inst"],
                       "intervals": _seq(recs, lambda r: [r["taus"][tl]["p_inst"]["lower"], r["taus"][tl]["p_inst"]["upper"]]),
                       "decision": _decision(t_last["p_inst"], "one", level, ci)},
            "theorem41_lower_bound_last": 1.0 - t_last["p1"]["estimate"] - last["p2"]["estimate"],
            "bounds_last": {k: t_last[k] for k in ("p1_bound", "p2_bound_K1", "p_inst_lower_bound_K1")},
        }
    if cell.geometry == "single" and cell.sigma in lln:
        lim = lln[cell.sigma]
        pred = {"p2": "holds" if lim["p2_to_zero"] else "fails"}
        meas = {"p2": classes["thm43_p2"]["-"]}
        for tl in row["taus"]:
            pred[f"p1({tl})"] = "holds" if lim["taus"][tl]["p1_to_zero"] else "fails"
            pred[f"p_inst({tl})"] = "holds" if lim["taus"][tl]["p_inst_to_one"] else "fails"
            meas[f"p1({tl})"], meas[f"p_inst({tl})"] = classes["thm43_p1"][tl], classes["thm43_pinst"][tl]
        row["m1_limit_prediction"] = pred
        row["m1_limit_contradictions"] = [k for k in pred if meas[k] != "undetermined" and meas[k] != pred[k]]
    return row, classes


def _span(values: list[float]) -> str:
    return f"{min(values):.3g}..{max(values):.3g}" if values else "-"


def judge(opts: Any, cells: list[Cell], records: dict[Cell, list[dict]], lln: dict[float, dict]) -> Judged:
    """Classify every measured cell, then state each claim's verdict at ``tau = opts.tau_main``."""
    measured = [c for c in cells if records[c]]
    classes: dict[str, dict[str, dict[Cell, str]]] = {"thm43_p2": {"-": {}}, "thm43_p1": {}, "thm43_pinst": {}}
    rows: dict[Cell, dict] = {}
    for cell in measured:
        rows[cell], per = _cell_row(cell, records[cell], opts, lln)
        for cid, by_tau in per.items():
            for tl, cls in by_tau.items():
                classes[cid].setdefault(tl, {})[cell] = cls
    tl = f"{opts.tau_main:g}"
    n_max = max((rows[c]["n_max"] for c in measured), default=0)
    capped = [c for c in measured if rows[c]["n_max"] < opts.ns[-1]]
    grid = (
        f"grid: sigma in {{{', '.join(f'{s:g}' for s in opts.sigmas)}}}, m in {{{', '.join(map(str, opts.ms))}}} "
        f"(m = 1: single centred box), diagonal rows with g/sigma in {{{', '.join(f'{r:g}' for r in opts.gap_ratios)}}}"
        + (", random placement" if opts.random_placement else "")
        + f"; box side l = {opts.side:g}; p_r = U[0,1]^n; n = {opts.ns[0]}..{n_max}"
        + (f" ({len(capped)} cells stop earlier by the solver-cost cap, largest n there "
           f"{_span([rows[c]['n_max'] for c in capped])})" if capped else "")
        + f"; {opts.num_points} inverted points per unit ({opts.num_points_p1} for p1), more at a cell's largest n where "
        f"its interval was undecided (sequential sampling, up to {opts.max_points} points and {opts.max_cell_cost} "
        f"evaluation-points per cell); a trend holds / fails only when the 95% Clopper-Pearson interval at the largest n "
        f"lies below / above the level {opts.level:g} (simulate.decide); c = (1+{opts.eps:g})n; tau = {tl}"
    )

    def at(cid: str, cell: Cell) -> float:
        r = rows[cell]
        if cid == "thm43_p2":
            return r["p2"]["last"]["estimate"]
        return r["taus"][tl]["p1" if cid == "thm43_p1" else "p_inst"]["last"]["estimate"]

    def by_class(cid: str) -> dict[str, list[Cell]]:
        per = classes[cid]["-" if cid == "thm43_p2" else tl]
        return {k: [c for c in measured if per.get(c) == k] for k in ("holds", "fails", "undetermined")}

    claims: dict[str, Verdict] = {}
    for cid, what in (("thm43_p1", f"p1(tau={tl})"), ("thm43_p2", "p2"), ("thm43_pinst", f"P_inst(tau={tl})")):
        groups = by_class(cid)
        status = claim_status(classes[cid]["-" if cid == "thm43_p2" else tl], opts.sigmas)
        counts = ", ".join(f"{k} on {len(v)}/{len(measured)} cells" for k, v in groups.items())
        parts = [f"{what} at the largest n per cell: " + "; ".join(
            f"{k} {_span([at(cid, c) for c in v])}" for k, v in groups.items() if v)]
        if groups["fails"]:
            parts.append(f"fails on: {describe_cells(groups['fails'], opts.sigmas)}")
        if groups["undetermined"]:
            parts.append(f"undetermined on: {describe_cells(groups['undetermined'], opts.sigmas)}")
        if cid == "thm43_p2":
            sq = [rows[c]["sqnorm_over_n"]["last"]["mean"] for c in measured]
            kb = [rows[c]["density_ratio"]["K_bounded"] for c in measured]
            unb = [c for c, k in zip(measured, kb) if k is False]
            parts.append(f"mean ||F(x)||^2/n at the largest n spans {_span(sq)} ({sum(v > 1 + opts.eps for v in sq)}"
                         f"/{len(measured)} cells above 1+eps); the p2 bound's hypothesis p_r <= K p_g (where ||F||^2 >= c) "
                         f"with bounded K fails (log sup p_r/p_g over those samples still rising by > {K_UNBOUNDED_STEP:g} "
                         f"nat over the last step of n) on {len(unb)}/{sum(k is not None for k in kb)} cells with such "
                         f"samples at the last two n" + (f": {describe_cells(unb, opts.sigmas)}" if unb else ""))
        if cid == "thm43_pinst" and groups["holds"]:
            h = groups["holds"]
            ll = [rows[c]["log_Lambda"]["last"]["mean"] for c in h]
            edge = [c for c in h if rows[c]["log_Lambda"]["last"]["mean"] - math.log(opts.tau_main) < 0.05]
            off_route = [c for c in h if rows[c]["taus"][tl]["theorem41_lower_bound_last"] <= opts.level]
            parts.append(f"where it holds, mean (1/n) log Lambda_G(F(x)) is {_span(ll)} and p2 is "
                         f"{_span([rows[c]['p2']['last']['estimate'] for c in h])}; on {len(off_route)}/{len(h)} of them "
                         f"Theorem 4.1's bound 1 - p1 - p2 is <= {opts.level:g} (the instability does not come through the "
                         f"theorem's p1/p2 route)" + (f"; knife edge (log Lambda within 0.05 of log tau) on "
                                                        f"{describe_cells(edge, opts.sigmas)}" if edge else ""))
        claims[cid] = Verdict(status=status, key_number=counts, evidence=f"{cid}: measured {what}; " + ". ".join(parts)
                              + f". ({grid}.)")

    units = [r for c in measured for r in records[c]]
    t41_bad = sum((not r["taus"][t]["theorem41_holds"]) or r["taus"][t]["lemma_d2_violations"] > 0 for r in units for t in r["taus"])
    p1_bad = sum(r["taus"][t]["p1_bound_violated"] for r in units for t in r["taus"])
    m1_rows = [rows[c] for c in measured if "m1_limit_prediction" in rows[c]]
    m1_contra = sum(len(r["m1_limit_contradictions"]) for r in m1_rows)
    all_three = [c for c in measured if all(classes[k]["-" if k == "thm43_p2" else tl][c] == "holds" for k in claims)]
    statuses = [v.status for v in claims.values()]
    if all(s == "verified" for s in statuses):
        status = "verified"
    elif all(s == "refuted" for s in statuses):
        status = "refuted"
    else:
        status = f"holds in regime: all three claims at tau={tl} on {describe_cells(all_three, opts.sigmas)}"
    overall = Verdict(
        status=status,
        key_number="; ".join(f"{cid}: {v.key_number.split(',')[0]}" for cid, v in claims.items()),
        evidence=" ".join(v.evidence for v in claims.values())
        + f" Checks: Theorem 4.1 / Lemma D.2 failures {t41_bad}, Steiner p1-bound violations {p1_bad}; "
        f"single-box law-of-large-numbers limits contradict {m1_contra} determined classes over {len(m1_rows)} cells.",
    )
    numbers = {
        "grid": grid,
        "cells": [rows[c] for c in measured],
        "regime_map": {cid: {t: {c.label: k for c, k in per.items()} for t, per in by_tau.items()} for cid, by_tau in classes.items()},
        "claims": {cid: {"status": v.status, "key_number": v.key_number, "evidence": v.evidence} for cid, v in claims.items()},
        "all_three_hold": [c.label for c in all_three],
        "theorem41_checks": {"failures": t41_bad, "p1_bound_violations": p1_bad, "m1_limit_contradictions": m1_contra},
    }
    return Judged(claims=claims, overall=overall, classes=classes, numbers=numbers)
