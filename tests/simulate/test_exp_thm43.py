"""Experiment ``thm43``: trend classifier, verdict wording, geometries, limits, options, tiny runs, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulate.experiments import load
from simulate.experiments.thm43 import experiment as thm43
from simulate.experiments.thm43.geometry import Cell, diagonal_boxes, place_boxes
from simulate.experiments.thm43.judge import claim_status, describe_cells
from simulate.experiments.thm43.lln import lln_limits
from simulate.experiments.thm43.sequential import points_to_add, summarize
from simulate.experiments.thm43.trend import Driver, classify_trend, slope_per_doubling

TINY = {
    "ns": (2, 8),
    "sigmas": (0.5, 2.0),
    "ms": (1, 2),
    "gap_ratios": (4.0,),
    "taus": (1.0,),
    "num_points": 6,
    "num_points_p1": 32,
    "lln_nodes": 64,
}


# ------------------------------------------------------------------ trend classifier
def _narrow(values, half=0.02):
    v = np.asarray(values, dtype=float)
    return v, np.clip(v - half, 0, 1), np.clip(v + half, 0, 1)


def test_decreasing_to_zero_holds() -> None:
    assert classify_trend(*_narrow([0.9, 0.6, 0.3, 0.1, 0.0])) == "holds"


def test_flat_at_half_fails() -> None:
    est, lo, hi = _narrow([0.5, 0.5, 0.5, 0.5])
    assert classify_trend(est, lo, hi) == "fails"
    assert classify_trend(est, lo, hi, target="one") == "fails"


def test_increasing_to_one_fails_for_zero_and_holds_for_one() -> None:
    est, lo, hi = _narrow([0.2, 0.6, 0.9, 1.0])
    assert classify_trend(est, lo, hi) == "fails"
    assert classify_trend(est, lo, hi, target="one") == "holds"


def test_still_falling_but_high_is_undetermined() -> None:
    assert classify_trend(*_narrow([0.95, 0.85, 0.7, 0.5, 0.3])) == "undetermined"


def test_zero_throughout_holds_and_noisy_rebound_does_not() -> None:
    assert classify_trend(*_narrow([0.0, 0.0, 0.0])) == "holds"
    assert classify_trend(*_narrow([0.0, 0.6, 0.0])) != "holds"


def test_driver_on_the_right_side_keeps_a_high_proportion_undetermined() -> None:
    est, lo, hi = _narrow([0.5, 0.5, 0.5])
    near = Driver([2, 8, 32], [1.2, 1.15, 1.11], [0.01] * 3, 1.1)  # within noise of the threshold
    assert classify_trend(est, lo, hi, driver=near) == "undetermined"
    away = Driver([2, 8, 32], [3.0, 3.0, 3.0], [0.01] * 3, 1.1)
    assert classify_trend(est, lo, hi, driver=away) == "fails"


def test_classifier_edge_cases() -> None:
    assert classify_trend([0.0], [0.0], [0.1]) == "undetermined"
    with pytest.raises(ValueError, match="target"):
        classify_trend([0.1, 0.0], [0.0, 0.0], [0.2, 0.1], target="half")
    with pytest.raises(ValueError, match="equal length"):
        classify_trend([0.1, 0.0], [0.0], [0.2, 0.1])
    with pytest.raises(ValueError, match="want"):
        Driver([1], [0.0], [0.1], 0.0, want="sideways")


def test_slope_per_doubling() -> None:
    slope, se = slope_per_doubling([128, 512], [1.0, 2.0], [0.3, 0.4])
    assert slope == pytest.approx(0.5) and se == pytest.approx(0.25)
    assert math.isnan(slope_per_doubling([8], [1.0], [0.1])[0])


# ------------------------------------------------------------------ verdict wording
SIGMAS = (0.1, 1.0)
CELLS = [Cell("single", s, 1) for s in SIGMAS] + [Cell("diagonal", s, 2, 8.0) for s in SIGMAS]


def test_claim_status_and_regime_text() -> None:
    assert claim_status({c: "holds" for c in CELLS}, SIGMAS) == "verified"
    assert claim_status({c: "fails" for c in CELLS}, SIGMAS) == "refuted"
    part = {c: ("holds" if c.geometry == "diagonal" else "fails") for c in CELLS}
    assert claim_status(part, SIGMAS) == "holds in regime: diag m=2 g/s=8 (all sigma); fails on 2/4 cells"
    part_undetermined = {c: ("holds" if c.geometry == "diagonal" else "undetermined") for c in CELLS}
    assert claim_status(part_undetermined, SIGMAS) == "holds in regime: diag m=2 g/s=8 (all sigma)"
    assert claim_status({c: "undetermined" for c in CELLS}, SIGMAS).startswith("holds in regime")
    assert describe_cells([CELLS[1], CELLS[3]], SIGMAS) == "single box (sigma 1); diag m=2 g/s=8 (sigma 1)"


# ------------------------------------------------------------------ geometry and limits
def test_cell_validation_and_labels() -> None:
    assert Cell("diagonal", 0.02, 2, 8.0).label == "diag m=2 g/s=8 s=0.02"
    assert Cell("diagonal", 0.02, 2, 8.0).gap() == pytest.approx(0.16)
    with pytest.raises(ValueError, match="single"):
        Cell("single", 0.1, 2)
    with pytest.raises(ValueError, match="gap_ratio"):
        Cell("random", 0.1, 2, 3.0)


def test_diagonal_boxes_have_the_set_gap() -> None:
    b = diagonal_boxes(16, 4, 0.1, 0.2)
    assert np.allclose(np.diff(b.lower[:, 0]), 0.3) and np.allclose(b.upper - b.lower, 0.1)
    assert b.mean_coordinate_gap == pytest.approx(0.2) and b.separation == pytest.approx(0.2 * 4.0)
    assert 0.5 * (b.lower[0, 0] + b.upper[-1, 0]) == pytest.approx(0.5)  # centred on the cube's centre
    assert math.isinf(diagonal_boxes(4, 1, 0.1, 0.0).separation)


def test_place_boxes_inside_cube_and_separated() -> None:
    rng = np.random.default_rng(0)
    b = place_boxes(16, 3, 0.2, rng)
    assert b.separated and b.separation > 0 and b.mean_coordinate_gap > 0
    assert (b.lower >= 0).all() and (b.upper <= 1).all()
    b = place_boxes(16, 2, 0.5, rng, max_tries=5)  # every box contains the centre
    assert not b.separated and b.separation == 0.0


def test_single_gaussian_unit_matches_closed_form() -> None:
    """A point box (side 0) is N(mu, sigma^2 I): G(z) = mu + sigma z, so log Lambda = log sigma."""
    opts = thm43.make_options(num_points=6, num_points_p1=6, taus=(1.0,), side=0.0)
    rec = summarize(Cell("single", 0.5, 1), 4, opts, [thm43.compute_unit(Cell("single", 0.5, 1), 4, opts, seed=3)])
    assert rec["log_Lambda"]["mean"] == pytest.approx(math.log(0.5), abs=1e-5)
    assert rec["log_Lambda"]["sd"] < 1e-5
    assert rec["taus"]["1"]["lemma_d2_violations"] == 0 and rec["taus"]["1"]["theorem41_holds"]


def test_lln_limit_of_a_point_component() -> None:
    """side 0 at 1/2: u = x - 1/2 ~ U[-1/2, 1/2], F_1(u) = u / sigma: E[F^2] = 1/(12 sigma^2), log Lambda = log sigma."""
    lim = lln_limits(0.5, 0.0, eps=0.1, taus=(1.0,), nodes=400)
    assert lim["sqnorm_per_dim"] == pytest.approx(1 / (12 * 0.25), rel=1e-3)
    assert lim["log_Lambda"] == pytest.approx(math.log(0.5), abs=1e-5)
    assert lim["p2_to_zero"] and not lim["taus"]["1"]["p_inst_to_one"]


def test_options_validation() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        thm43.make_options(bogus=1)
    with pytest.raises(ValueError, match="side"):
        thm43.make_options(side=0.6)
    with pytest.raises(ValueError, match="gap_ratios"):
        thm43.make_options(gap_ratios=(0.0,))
    assert thm43.make_options(ns=(8, 2, 8)).ns == (2, 8)
    assert thm43.FULL.ns[-1] >= 4096 and thm43.FAST.ns[-1] >= 512
    assert set(thm43.FAST.sigmas) >= {0.02, 0.05, 0.1, 0.3, 1.0, 2.0} and thm43.FAST.ms == (1, 2, 4)
    cells = thm43.make_options(**TINY).cells()
    assert [c.label for c in cells] == ["single s=0.5", "diag m=2 g/s=4 s=0.5", "random m=2 s=0.5",
                                        "single s=2", "diag m=2 g/s=4 s=2", "random m=2 s=2"]


# ------------------------------------------------------------------ tiny runs
def test_tiny_run_writes_result_and_figures(tmp_path) -> None:
    assert load("thm43") is thm43
    assert thm43.CLAIM_IDS == ["thm43_p1", "thm43_p2", "thm43_pinst"]
    res = thm43.run(tmp_path, progress=False, **TINY)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["name"] == "thm43" and data["claim_ids"] == thm43.CLAIM_IDS
    assert data["verdict"]["status"].startswith(("verified", "holds in regime", "refuted"))
    numbers = data["numbers"]
    for key in ("units", "cells", "regime_map", "lln_limit_m1", "claims", "grid", "theorem41_checks"):
        assert key in numbers
    assert len(numbers["units"]) == 6 * 2 and len(numbers["cells"]) == 6
    assert set(numbers["regime_map"]["thm43_p1"]["1"].values()) <= {"holds", "fails", "undetermined"}
    for cid in thm43.CLAIM_IDS:
        v = res.verdict_for(cid)
        assert "n = 2..8" in v.evidence and "g/sigma in {4}" in v.evidence  # the grid is named
    unit = numbers["units"][0]
    for key in ("sqnorm_over_n", "log_Lambda", "p2", "taus", "log_ratio_sup_over_n", "nfe"):
        assert key in unit
    assert len(unit["log_Lambda"]["quantiles_0_10_50_90_100"]) == 5
    t = unit["taus"]["1"]
    assert 0.0 <= t["p_inst"]["lower"] <= t["p_inst"]["estimate"] <= t["p_inst"]["upper"] <= 1.0
    assert numbers["theorem41_checks"]["failures"] == 0
    assert len(numbers["lln_limit_m1"]) == 2
    assert res.figures == ["thm43_regime_map.png", "thm43_log_lambda.png", "thm43_sqnorm.png"]
    level = data["params"]["level"]
    for cell in numbers["cells"]:  # per n: point count and interval; no verdict against its interval at the largest n
        for d in (cell["p2"], cell["taus"]["1"]["p1"], cell["taus"]["1"]["p_inst"]):
            assert len(d["intervals"]) == len(cell["ns"]) == len(cell["points"])
            dec = d["decision"]
            assert dec["trials"] == (cell["points_p1"][-1] if d is cell["taus"]["1"]["p1"] else cell["points"][-1])
            if d["class"] == "holds":
                assert dec["upper"] < level
            if d["class"] == "fails":
                assert dec["lower"] > level
            if d["class"] == "undetermined":
                assert dec["undetermined_by"]
    for f in res.figures:
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_does_not_recompute_and_cost_cap_stops_a_cell(tmp_path, monkeypatch) -> None:
    calls: list[tuple] = []
    real = thm43.compute_unit

    def counting(cell, n, opts, seed=0, round=0, points=0):
        calls.append((cell.label, n))
        return real(cell, n, opts, seed, round, points)

    monkeypatch.setattr(thm43, "compute_unit", counting)
    small = {**TINY, "sigmas": (1.0,), "ms": (2,), "random_placement": False, "lln_nodes": 0, "max_rounds": 0}
    first = thm43.run(tmp_path, progress=False, **small)
    assert len(calls) == 2 and first.numbers["units_computed_this_run"] == 2
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 1 + 2
    second = thm43.run(tmp_path, progress=False, **small)
    assert len(calls) == 2 and second.numbers["units"] == first.numbers["units"]
    thm43.run(tmp_path, progress=False, **{**small, "ns": (2, 8, 16)})  # extending n computes only the new unit
    assert calls[2:] == [("diag m=2 g/s=4 s=1", 16)]
    nfe8 = first.numbers["units"][1]["nfe"]
    capped = thm43.run(tmp_path, progress=False, **{**small, "ns": (2, 8, 16, 4096), "max_unit_nfe": nfe8 * 2})
    assert len(calls) == 3 and capped.numbers["cost_capped_cells"] == {"diag m=2 g/s=4 s=1": 4096}
    assert "n = 2..16" in capped.verdict_for("thm43_p2").evidence


# ------------------------------------------------------------------ sequential sampling
def test_rounds_merge_to_the_counts_of_their_points() -> None:
    """Two rounds merged = their points pooled: counts add, the mean is the pooled mean."""
    opts = thm43.make_options(num_points=6, num_points_p1=12, taus=(1.0,))
    cell = Cell("diagonal", 1.0, 2, 4.0)
    r0 = thm43.compute_unit(cell, 8, opts, seed=0)
    r1 = thm43.compute_unit(cell, 8, opts, seed=0, round=1, points=10)
    assert len(r1["points"]["sq_norm"]) == 10 and r1["p1_points"]["count"] == 20
    assert r1["points"]["sq_norm"] != r0["points"]["sq_norm"][:1] * 10  # a fresh draw
    both = summarize(cell, 8, opts, [r0, r1])
    one = [summarize(cell, 8, opts, [r]) for r in (r0, r1)]
    assert both["points"] == 16 and both["p2"]["trials"] == 16 and both["taus"]["1"]["p1"]["trials"] == 32
    assert both["taus"]["1"]["p_inst"]["successes"] == sum(o["taus"]["1"]["p_inst"]["successes"] for o in one)
    pooled = np.concatenate([r0["points"]["log_Lambda"], r1["points"]["log_Lambda"]])
    assert both["log_Lambda"]["mean"] == pytest.approx(pooled.mean()) and both["log_Lambda"]["sd"] == pytest.approx(pooled.std(ddof=1))
    # p1 moments: the pooled mean of log p_g / n over the 12 + 20 p1 points
    assert both["log_pg_over_n"]["mean"] == pytest.approx(
        (one[0]["log_pg_over_n"]["mean"] * 12 + one[1]["log_pg_over_n"]["mean"] * 20) / 32)


def test_points_go_only_where_the_interval_is_undecided_and_decidable() -> None:
    opts = thm43.make_options(taus=(1.0,), level=0.1, max_points=64, max_cell_cost=0)

    def rec(p_inst: int, p2: int, p1: int, points: int = 8, nfe: int = 100) -> dict:
        prop = lambda k, t: {"successes": k, "trials": t}  # noqa: E731
        return {"points": points, "nfe_round0": nfe, "p2": prop(p2, points),
                "taus": {"1": {"p_inst": prop(p_inst, points), "p1": prop(p1, 512)}}}

    assert points_to_add(rec(8, 8, 0), opts) == 36 - 8  # 8/8 unstable: 0/36 clears 0.1 (1 - 0.025**(1/36) < 0.1)
    assert points_to_add(rec(8, 0, 0, points=36), opts) == 0  # every interval decided
    assert points_to_add(rec(0, 8, 512), opts) == 0  # P_inst 0/8, p2 8/8, p1 512/512: every claim fails already
    assert points_to_add(rec(0, 0, 512), opts) == 36 - 8  # ... but p2 = 0/8 is undecided: 0/36 would hold
    assert points_to_add(rec(4, 8, 512), opts) == 0  # 1 - P_inst = 4/8: [0.16, 0.84] excludes 0.1, fails
    assert points_to_add(rec(8, 8, 0, nfe=4000), thm43.make_options(taus=(1.0,), max_cell_cost=20000)) == 0  # too costly


def test_sequential_rounds_add_points_at_the_largest_n(tmp_path) -> None:
    small = {**TINY, "sigmas": (2.0,), "ms": (1,), "lln_nodes": 0, "num_points": 8, "max_points": 40}
    res = thm43.run(tmp_path, progress=False, **small)
    cells = res.numbers["cells"]
    units = {(u["cell"], u["n"]): u for u in res.numbers["units"]}
    assert units[("single s=2", 2)]["points"] == 8  # only the largest n gets rounds
    last = units[("single s=2", 8)]
    assert last["points"] == 8 + sum(res.numbers["sequential_points_added"].get("single s=2", []))
    assert last["points"] > 8 and cells[0]["p2"]["decision"]["trials"] == last["points"]
