"""Experiment ``thm43``: trend classifier, verdict logic, box placement, limits, tiny runs, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulate.experiments import load, thm43
from simulate.experiments.thm43 import classify_trend, claim_verdict, compute_unit, lln_limits, place_boxes

TINY = {
    "ns": (2, 8),
    "sigmas": (0.5, 2.0),
    "ms": (1, 2),
    "sides": (0.2,),
    "taus": (1.0,),
    "num_points": 8,
    "num_points_p1": 32,
    "lln_nodes": 64,
    "figure_cells": 2,
}


# ------------------------------------------------------------------ trend classifier
def _narrow(values, half=0.02):
    v = np.asarray(values, dtype=float)
    return v, np.clip(v - half, 0, 1), np.clip(v + half, 0, 1)


def test_decreasing_to_zero_holds() -> None:
    est, lo, hi = _narrow([0.9, 0.6, 0.3, 0.1, 0.0])
    assert classify_trend(est, lo, hi) == "holds"


def test_flat_at_half_does_not_hold() -> None:
    est, lo, hi = _narrow([0.5, 0.5, 0.5, 0.5])
    assert classify_trend(est, lo, hi) == "does not hold"
    assert classify_trend(est, lo, hi, target="one") == "does not hold"


def test_increasing_to_one_does_not_hold_for_zero_and_holds_for_one() -> None:
    est, lo, hi = _narrow([0.2, 0.6, 0.9, 1.0])
    assert classify_trend(est, lo, hi) == "does not hold"
    assert classify_trend(est, lo, hi, target="one") == "holds"


def test_still_falling_but_high_is_undetermined() -> None:
    est, lo, hi = _narrow([0.95, 0.85, 0.7, 0.5, 0.3])
    assert classify_trend(est, lo, hi) == "undetermined"


def test_zero_throughout_holds_and_noisy_rebound_does_not() -> None:
    est, lo, hi = _narrow([0.0, 0.0, 0.0])
    assert classify_trend(est, lo, hi) == "holds"
    # ends at 0 but a later point sits far above an earlier upper end: not monotone-ish
    est, lo, hi = _narrow([0.0, 0.6, 0.0])
    assert classify_trend(est, lo, hi) != "holds"


def test_classifier_edge_cases() -> None:
    assert classify_trend([0.0], [0.0], [0.1]) == "undetermined"
    with pytest.raises(ValueError, match="target"):
        classify_trend([0.1, 0.0], [0.0, 0.0], [0.2, 0.1], target="half")
    with pytest.raises(ValueError, match="equal length"):
        classify_trend([0.1, 0.0], [0.0], [0.2, 0.1])


# ------------------------------------------------------------------ claim verdicts
GRID = {"sigmas": (0.1, 1.0), "ms": (1, 2), "sides": (0.1,)}
CELLS = [(s, m, 0.1) for s in GRID["sigmas"] for m in GRID["ms"]]


def test_claim_verdict_statuses() -> None:
    every = {"1": {c: "holds" for c in CELLS}}
    assert claim_verdict("x", every, GRID, "h").status == "verified"
    none = {"1": {c: "does not hold" for c in CELLS}}
    assert claim_verdict("x", none, GRID, "h").status == "refuted"
    part = {"1": {c: ("holds" if c[0] == 1.0 else "does not hold") for c in CELLS}}
    v = claim_verdict("x", part, GRID, "h")
    assert v.status.startswith("holds in regime") and "sigma=1 (all m, sides)" in v.status
    assert "holds on 2/4" in v.key_number
    undetermined = {"1": {c: "undetermined" for c in CELLS}}
    assert claim_verdict("x", undetermined, GRID, "h").status.startswith("holds in regime")


# ------------------------------------------------------------------ geometry and limits
def test_place_boxes_inside_cube_and_separated() -> None:
    rng = np.random.default_rng(0)
    b = place_boxes(16, 3, 0.2, rng)
    assert b["separated"] and b["separation"] > 0
    assert (b["lower"] >= 0).all() and (b["upper"] <= 1).all()
    assert np.allclose(b["upper"] - b["lower"], 0.2)
    # side >= 1/2: every box contains the centre of the cube, Assumption 4.4 cannot hold
    b = place_boxes(16, 2, 0.5, rng, max_tries=5)
    assert not b["separated"] and b["separation"] == 0.0
    assert math.isinf(place_boxes(4, 1, 0.3, rng)["separation"])


def test_single_gaussian_unit_matches_closed_form() -> None:
    """A point box (side 0) is N(mu, sigma^2 I): G(z) = mu + sigma z, so log Lambda = log sigma."""
    opts = thm43.resolve_options(num_points=6, num_points_p1=6, taus=(1.0,))
    rec = compute_unit(0.5, 1, 0.0, 4, opts, seed=3)
    assert rec["log_Lambda"]["mean"] == pytest.approx(math.log(0.5), abs=1e-5)
    assert rec["log_Lambda"]["sd"] < 1e-5
    assert rec["taus"]["1"]["lemma_d2_violations"] == 0 and rec["taus"]["1"]["theorem41_holds"]


def test_lln_limit_of_a_point_component() -> None:
    """side 0: u = x - a ~ x, a iid U[0, 1], F_1(u) = u / sigma: E[F^2] = 1/(6 sigma^2), log Lambda = log sigma."""
    opts = thm43.resolve_options(lln_nodes=400, taus=(1.0,))
    lim = lln_limits(0.5, 0.0, opts)
    assert lim["sqnorm_per_dim"] == pytest.approx(1 / (6 * 0.25), rel=1e-3)
    assert lim["log_Lambda"] == pytest.approx(math.log(0.5), abs=1e-5)
    assert lim["p2_to_zero"] and not lim["taus"]["1"]["p_inst_to_one"]


def test_resolve_options_validation() -> None:
    with pytest.raises(ValueError, match="unknown override"):
        thm43.resolve_options(bogus=1)
    with pytest.raises(ValueError, match="sides"):
        thm43.resolve_options(sides=(1.5,))
    assert thm43.resolve_options(ns=(8, 2, 8))["ns"] == (2, 8)


# ------------------------------------------------------------------ tiny runs
def test_tiny_run_writes_result_and_figures(tmp_path) -> None:
    assert load("thm43") is thm43
    assert thm43.CLAIM_IDS == ["thm43_p1", "thm43_p2", "thm43_pinst"]
    res = thm43.run(tmp_path, progress=False, **TINY)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["name"] == "thm43" and data["claim_ids"] == thm43.CLAIM_IDS
    assert data["verdict"]["status"].startswith(("verified", "holds in regime", "refuted"))
    numbers = data["numbers"]
    for key in ("units", "cells", "regime_map", "lln_limit_m1", "claims", "chi2_bound_K1", "theorem41_checks"):
        assert key in numbers
    assert len(numbers["units"]) == 2 * 2 * 1 * 2 and len(numbers["cells"]) == 4
    assert set(numbers["claims"]) == set(thm43.CLAIM_IDS)
    assert set(numbers["regime_map"]["thm43_p1"]["1"].values()) <= {"holds", "does not hold", "undetermined"}
    unit = numbers["units"][0]
    for key in ("sqnorm_over_n", "log_Lambda", "p2", "taus", "separation", "p2_bound_K1", "log_K_needed"):
        assert key in unit
    t = unit["taus"]["1"]
    for key in ("p_inst", "p1", "p1_bound", "p_inst_lower_bound_K1"):
        assert key in t
    assert 0.0 <= t["p_inst"]["lower"] <= t["p_inst"]["estimate"] <= t["p_inst"]["upper"] <= 1.0
    assert numbers["theorem41_checks"]["failures"] == 0
    assert len(numbers["lln_limit_m1"]) == 2  # (sigma, side) pairs with m = 1
    assert res.figures == ["thm43_probabilities.png", "thm43_sqnorm.png", "thm43_regime_map.png"]
    for f in res.figures:
        assert (tmp_path / f).stat().st_size > 1000


def test_resume_does_not_recompute(tmp_path, monkeypatch) -> None:
    calls: list[tuple] = []
    real = thm43.compute_unit

    def counting(sigma, m, side, n, opts, seed=0):
        calls.append((sigma, m, side, n))
        return real(sigma, m, side, n, opts, seed)

    monkeypatch.setattr(thm43, "compute_unit", counting)
    small = {**TINY, "sigmas": (1.0,), "ms": (2,), "lln_nodes": 0}
    first = thm43.run(tmp_path, progress=False, **small)
    assert len(calls) == 2 and first.numbers["units_computed_this_run"] == 2
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2  # header + one line per (cell, n)
    second = thm43.run(tmp_path, progress=False, **small)
    assert len(calls) == 2 and second.numbers["units_computed_this_run"] == 0
    assert second.numbers["units"] == first.numbers["units"]
    # extending the n grid computes only the new unit
    thm43.run(tmp_path, progress=False, **{**small, "ns": (2, 8, 16)})
    assert calls[2:] == [(1.0, 2, 0.2, 16)]
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 1 + 3


def test_single_component_cells_plot(tmp_path) -> None:
    """m = 1 has no pairwise separation (None): the figures must still be drawn."""
    res = thm43.run(tmp_path, progress=False, **{**TINY, "ms": (1,)})
    for name in res.figures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
