"""The ``pfode`` CLI (one-line errors, exit 2) and the report's verdict table."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from reports.claims import CLAIMS
from reports.cli import main
from reports.report import table_cell
from simulate.verdict import Status
from theory import BOUND_KEYS, instability_bounds


STATUSES = ("verified", "holds in regime", "refuted", "inconclusive", "not run: ")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports.cli", *args], capture_output=True, text=True, timeout=120)


def test_bound_json_matches_the_api() -> None:
    proc = _run("theory", "bound", "--n", "1000", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(BOUND_KEYS) <= set(data)
    api = instability_bounds(1000, 10, 0.05, 0.05, 1.0, 1100.0)
    for key in ("r_star", "log_steiner_volume", "log_chi2_sf", "p1_bound", "p2_bound", "p_inst_lower_bound"):
        assert data[key] == pytest.approx(api[key], rel=1e-12)
    assert data["c"] == pytest.approx(1100.0)


def test_bound_json_non_finite_logs_are_null(capsys) -> None:
    assert main(["theory", "bound", "--n", "100", "--sigma", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["p1_bound"] == 0.0 and data["log_p1_bound"] is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["theory", "bound", "--n", "0"], "--n must be an integer in [1, "),
        (["theory", "bound", "--n", "5", "--sigma", "-1"], "--sigma must be a finite number in (0, inf)"),
        (["theory", "bound", "--n", "5", "--tau", "0"], "--tau must be a finite number in (0, inf)"),
        (["theory", "bound", "--n", "5", "--c", "0"], "--c must be a finite number in (0, inf)"),
        (["theory", "bound", "--n", "5", "--side", "-2"], "--side must be a finite number in [0, inf)"),
        (["theory", "bound", "--n", "5", "--rho-max", "0"], "--rho-max must be a finite number in (0, inf)"),
        (["theory", "bound", "--n", "5", "--density-ratio", "0.5"], "--density-ratio must be a finite number in [1, inf)"),
        (["theory", "bound", "--n", "5", "--sigma", "nan"], "--sigma must be a finite number"),
        (["theory", "bound"], "--n"),
        (["theory", "bound", "--n", "x"], "--n must be an integer"),
        (["nosuch"], "invalid choice"),
        (["report", "--suites", "nosuch"], "--suites must be"),
    ],
)
def test_errors_are_one_line_exit_2(args, needle, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_subprocess_error_has_no_traceback() -> None:
    proc = _run("theory", "bound", "--n", "-4")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["pfode: error: --n must be an integer in [1, 10000000000], got -4 (see pfode theory bound --help)"]


def test_curves_command_writes_json_and_pngs(tmp_path) -> None:
    assert main(["theory", "curves", "--out", str(tmp_path), "--num", "40", "--n-max", "100000"]) == 0
    data = json.loads((tmp_path / "theory_curves.json").read_text())
    assert len(data["curves"]["n"]) == 40 and data["curves"]["n"][-1] == 100000
    for name in data["figures"]:
        assert (tmp_path / name).stat().st_size > 10_000  # a real PNG, not an empty file
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_quick_has_every_claim(theory_report) -> None:
    out = theory_report
    md = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    rows = {v["claim_id"]: v for v in results["verdicts"]}
    assert set(rows) == {c.id for c in CLAIMS}
    for c in CLAIMS:
        claim_id, text = c.id, c.text
        assert f"| {table_cell(text)} |" in md
        assert f"Decided by `{c.decided_by}`" in md
        status = rows[claim_id]["status"]
        assert status.startswith(STATUSES)
        assert rows[claim_id]["key_number"] and rows[claim_id]["evidence"]
    for claim_id in ("prop21", "thm31", "lemma_d1", "thm41", "thm43_p2"):
        assert rows[claim_id]["status"].startswith("verified"), rows[claim_id]
    agreement = results["suites"]["theory"]["high_precision_agreement"]
    assert agreement["steiner_max_rel_error"] < 1e-10 and agreement["chi2_max_rel_error"] < 1e-10
    for fig in rows["thm43_pinst"]["figures"]:
        assert (out / fig).exists()


def test_report_reuses_finished_suites_unless_fresh(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["report", "--quick", "--suites", "theory", "--out", str(out)]) == 0
    cache = out / "theory" / "suite.json"
    first = cache.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["report", "--quick", "--suites", "theory", "--out", str(out)]) == 0
    assert "cached result reused" in capsys.readouterr().err and cache.stat().st_mtime_ns == first
    (row,) = json.loads((out / "results.json").read_text())["meta"]["budget"]  # time budget: reused, its old time
    assert row["reused"] and row["spent"] == json.loads(cache.read_text())["seconds"] > 0
    assert main(["report", "--quick", "--suites", "theory", "--out", str(out), "--fresh"]) == 0
    assert "cached result reused" not in capsys.readouterr().err and cache.stat().st_mtime_ns != first


def test_report_model_needs_images(tmp_path, capsys) -> None:
    assert main(["report", "--suites", "largemodel", "--out", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "give both --model and --images" in capsys.readouterr().err


def test_report_quick_all_suites(quick_report) -> None:
    """The default report (all suites, quick), as a user runs it (``quick_report``, run once per
    session): every row has a status and a number or a reason; the large-model rows come from the
    models trained here and shipped with the package (the empty cache gets nothing: the transformers and the
    learned-vs-exact section's small MLPs ship with the package); its stderr holds only pfode's own progress lines (no
    third-party notices); the time budget lists every section."""
    assert quick_report.returncode == 0, quick_report.stderr[-2000:]
    out = quick_report.out
    # nothing is trained: the transformers and the learned-vs-exact MLPs (largemodel.experiments.learned_vs_exact.
    # shipped) ship with the package
    models = quick_report.cache / "models"
    trained = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    assert trained == [], trained
    err = quick_report.stderr.splitlines()
    assert err and all(re.match(r"\[\s*\d+\.\ds\] ", line) for line in err), [
        line for line in err if not re.match(r"\[\s*\d+\.\ds\] ", line)][:5]
    results = json.loads((out / "results.json").read_text())
    rows = {v["claim_id"]: v for v in results["verdicts"]}
    assert set(rows) == {c.id for c in CLAIMS}
    md = (out / "report.md").read_text()
    for c in CLAIMS:
        row = rows[c.id]
        assert f"| {table_cell(c.text)} | {Status(row['status']).kind.value} |" in md
        assert row["status"].startswith(STATUSES) and not row["status"].startswith("not run"), row
        assert row["key_number"] not in ("", "-") and row["evidence"]
        for fig in row["figures"]:
            assert (out / fig).stat().st_size > 0
    assert "trained here" in rows["fig4c"]["key_number"]
    assert "Large-model suite" in rows["thm43_pinst"]["evidence"]
    trend = results["suites"]["largemodel"]["trend"]
    assert len(trend) >= 2 and trend[0]["n"] < trend[-1]["n"]
    # the two large-model sections that are not claims of the paper, with their figures
    assert "## Why images reconstruct badly" in md and "## Which images fail" in md
    assert md.index("## Why images reconstruct badly") > md.index(f"## {CLAIMS[-1].text}")
    for fig in results["suites"]["largemodel"]["failure"]["figures"]:
        assert f"![{fig}]({fig})" in md and (out / fig).stat().st_size > 0
    assert [r["section"] for r in results["meta"]["budget"]] == ["theory", "simulate", "fig4c", "explain", "failure", "learned",
                                                               "guidance"]
    assert "## Time budget" in md and results["meta"]["pending"] == []
    assert sum("rows written to" in line for line in err) == 2  # after theory, after simulate
