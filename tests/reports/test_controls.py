"""Negative controls (reports.controls): every claim names one; each returns "fails" on its planted input;
the same judges still decide on inputs where the claim is true; the report shows the controls."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports import controls
from reports.claims import CLAIMS, ClaimRow
from reports.report import render_markdown
from simulate.experiments.fig4 import experiment as fig4
from simulate.experiments.lemma_d1 import experiment as lemma_d1
from simulate.experiments.thm31 import experiment as thm31
from simulate.experiments.thm41 import experiment as thm41
from simulate.experiments.thm41.judge import judge as thm41_judge


def test_every_claim_names_a_control_that_exists() -> None:
    for c in CLAIMS:
        assert c.controls, c.id
        for name in c.controls:
            assert callable(getattr(controls, name)), name


@pytest.mark.parametrize("name", ["prop21_not_differentiable", "thm41_wrong_log_lambda", "thm43_pinst_single_box",
                                  "thm43_p2_single_box", "thm43_p1_nearly_uniform", "fig3_contracting", "fig4c_reversed"])
def test_standalone_control_fails(name: str) -> None:
    ctl = getattr(controls, name)(None)
    assert ctl.status == "fails", ctl
    assert ctl.judge_status.startswith("refuted")


def test_thm41_judge_decides_on_true_samples_and_fails_on_broken_ones() -> None:
    """Lemma D.1 exact (shift 0): the judge verifies; off by -1 per coordinate: refuted (the same judge)."""
    opts = thm41.make_options()
    assert thm41_judge(opts, [controls.planted_thm41_record(0.0)]).overall.status == "verified"
    assert thm41_judge(opts, [controls.planted_thm41_record(-1.0)]).overall.status == "refuted"


def test_controls_on_measured_runs_fail(tmp_path: Path) -> None:
    """thm31, Lemma D.1, Fig. 4(b): the run verifies the claim, the control built from the same run fails."""
    r31 = thm31.run(tmp_path / "t31", progress=False, fields=("gaussian",), gaussian_std=0.5, steps=(10, 40), points=4,
                    path_steps=200, kappa_samples=3, kappa_rk4_steps=100)
    assert r31.verdict.status == "verified"
    assert controls.thm31_planted_offset(r31).status == "fails"
    rd1 = lemma_d1.run(tmp_path / "d1", progress=False, fields=("gaussian",), dims=(3,), points=3, sweep_n=None)
    assert rd1.verdict.status == "verified"
    assert controls.lemma_d1_wrong_logdet(rd1).status == "fails"
    r4 = fig4.run(tmp_path / "f4", progress=False, points=60, num_perturbations=4, n_resamples=200, density_n=30)
    assert controls.fig4b_shuffled(r4).status == "fails"


def test_status_mapping_and_errors_are_reported() -> None:
    assert controls.status_of("verified") == "holds"
    assert controls.status_of("holds in regime: x") == "holds"
    assert controls.status_of("refuted") == "fails"
    assert controls.status_of("inconclusive: the interval contains 0") == "undetermined"
    out = controls.run_controls("thm31", None)  # needs a run: reported as an error, not dropped
    assert out and out[0]["status"] == "error"


def test_report_shows_each_control_next_to_its_claim() -> None:
    rows = {c.id: ClaimRow.of(c.id, "verified", "k", "e") for c in CLAIMS}
    rows["fig3"].controls = [{"name": "contracting field", "status": "fails", "key": "lambda 0.5", "judge_status": "refuted"}]
    md = render_markdown(rows, {"run": "r", "mode": "quick", "suites": ["simulate"], "seconds": 1.0, "machine": "m"})
    assert "- contracting field: **fails** (judge: refuted; lambda 0.5)" in md
    assert "negative controls failing: 1/1" in md
    again = ClaimRow.from_dict(rows["fig3"].as_dict())
    assert again.controls == rows["fig3"].controls


def test_results_json_cells_carry_interval_and_points_per_n(tmp_path: Path) -> None:
    """The simulate suite's thm43 data: per cell and n the estimate, interval and point count; verdicts agree."""
    from reports.simulate_suite import _cells
    from simulate.experiments.thm43 import experiment as thm43

    res = thm43.run(tmp_path, progress=False, ns=(2, 8), sigmas=(2.0,), ms=(1, 2), gap_ratios=(4.0,), taus=(1.0,),
                    num_points=6, num_points_p1=32, lln_nodes=0, max_points=24)
    cells = _cells(res.numbers["cells"])
    assert len(cells) == 3
    for c in cells:
        for key in ("p1", "p2", "p_inst"):
            d = c[key]
            assert len(d["sequence"]) == len(d["intervals"]) == len(c["ns"]) == len(c["points"])
            assert all(lo <= est <= hi for est, (lo, hi) in zip(d["sequence"], d["intervals"]))
            dec = d["decision"]
            if d["class"] == "holds":
                assert dec["upper"] < dec["level"]
            if d["class"] == "fails":
                assert dec["lower"] > dec["level"]


def test_fig4c_shuffled_study_records_leave_no_correlation(tmp_path: Path) -> None:
    """A study folder whose errors rise with mu_bar: shuffled, the Fig. 4(c) judge no longer confirms the claim."""
    import json

    import numpy as np

    rng = np.random.default_rng(1)
    mu = np.exp(rng.normal(-0.7, 0.4, 60))
    err = mu ** 3 * np.exp(rng.normal(0, 0.2, 60))
    keys = [f"img{i:02d}" for i in range(60)]
    (tmp_path / "study.json").write_text(json.dumps({"signature": "sig", "keys": keys}))
    lines = [json.dumps({"signature": "sig"})] + [
        json.dumps({"key": k, "value": {"key": k, "mu_bar": float(m), "mse_latent": float(e)}}) for k, m, e in zip(keys, mu, err)]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    ctl = controls.fig4c_shuffled({"study_dir": tmp_path})
    assert ctl.status == "undetermined" and ctl.judge_status.startswith("inconclusive"), ctl
    assert "60 images" in ctl.name
