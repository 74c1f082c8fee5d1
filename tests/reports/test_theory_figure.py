"""theory_bounds_vs_n.png: the K = 1 curve is conditional, and the measured P_inst sits on the same axes."""

from __future__ import annotations

from pathlib import Path

from reports.theory_suite import measured_single_box
from theory.highdim.curves import plot_theory_curves, theory_curves


def test_measured_single_box_contradicts_the_k1_bound(tmp_path: Path) -> None:
    """One box at sigma = 0.05 is never unstable (P_inst(1) = 0) while 1 - p1 - p2 with K = 1 exceeds 0.5 at n = 64."""
    meas = measured_single_box(points=12, ns=(8, 64))
    assert meas["estimate"] == [0.0, 0.0] and meas["points"] == [12, 12]
    assert meas["bound_K1"][-1] > 0.5 > meas["upper"][-1]
    paths = plot_theory_curves(theory_curves(num=20, n_max=1e4), None, tmp_path, meas)
    assert [p.name for p in paths] == ["theory_bounds_vs_n.png", "theory_steiner_rate.png"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
