"""``pfode report``: report.md written as each suite finishes, and the time budget (planned vs spent)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from reports import budget as budget_mod
from reports.claims import CLAIMS
from reports.cli import main
from reports.report import run_report


def _fake_simulate(seen: dict[str, Any]):
    def run(out_dir: Path, quick: bool = True, progress: Any = None, fresh: bool = False):
        seen["report"] = (out_dir / "report.md").read_text()  # what a reader sees while it runs
        seen["results"] = json.loads((out_dir / "results.json").read_text())
        return [], {"seconds": 0.0}

    return run


def test_report_md_holds_the_theory_rows_while_the_next_suite_runs(tmp_path: Path, monkeypatch) -> None:
    import reports.simulate_suite as simulate_suite

    seen: dict[str, Any] = {}
    monkeypatch.setattr(simulate_suite, "run_simulate_suite", _fake_simulate(seen))
    out = tmp_path / "run"
    run_report(out, suites=("theory", "simulate"))
    partial, final = seen["report"], (out / "report.md").read_text()
    assert "Partial: the simulate suite(s) still running" in partial and "Partial" not in final
    assert seen["results"]["meta"]["pending"] == ["simulate"]
    rows = {v["claim_id"]: v["status"] for v in seen["results"]["verdicts"]}
    assert rows["lemma_d1"].startswith("verified")  # a theory verdict, there before the run ends
    simulate_only = [c.id for c in CLAIMS if c.suite == "simulate" and rows[c.id].startswith("not run")]
    assert simulate_only and all("pending: the simulate suite" in rows[c] for c in simulate_only)
    assert all("pending" not in v["status"] for v in json.loads((out / "results.json").read_text())["verdicts"])


def test_time_budget_planned_vs_spent(theory_report: Path) -> None:
    md = (theory_report / "report.md").read_text()
    meta = json.loads((theory_report / "results.json").read_text())["meta"]
    (row,) = meta["budget"]
    assert row["section"] == "theory" and row["planned"] == budget_mod.PLANNED["quick"]["theory"]
    assert 0 < row["spent"] < 600 and not row["reused"]
    assert "## Time budget" in md and f"| theory | {row['planned']:.0f} | {row['spent']:.1f} |" in md
    assert ("within budget" in md) == (row["spent"] <= row["planned"])


def test_budget_rows_mark_overruns_and_reuse() -> None:
    spent = {"theory": {"seconds": 4.0, "reused": False}, "simulate": {"seconds": 90.0, "reused": False},
             "fig4c": {"seconds": 30.0, "reused": True}}
    rows = budget_mod.budget_rows({"theory": 10.0, "simulate": 60.0, "fig4c": 60.0}, spent)
    assert [(r["section"], r["over"], r["reused"]) for r in rows] == [
        ("theory", False, False), ("simulate", True, False), ("fig4c", False, True)]
    md = budget_mod.budget_markdown(rows, "quick")
    assert "| simulate | 60 | 90.0 | over budget |" in md and "| theory | 10 | 4.0 | within budget |" in md
    assert "| fig4c | 60 | 30.0 | reused (computed earlier) |" in md
    assert "| sum of sections | 130 | 94.0 (this run) | |" in md


@pytest.mark.parametrize("bad, needle", [({"nosuch": 1.0}, "unknown section"), ({"theory": 0}, "theory must be"),
                                         ({"theory": float("nan")}, "theory must be"), ({"fig4c": True}, "fig4c")])
def test_bad_budget_is_refused_before_anything_runs(bad: dict, needle: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=needle):
        run_report(tmp_path / "run", suites=("theory",), budget=bad)
    assert not (tmp_path / "run").exists()


def test_large_model_sections_split_the_suite_time() -> None:
    spent = budget_mod.spent_seconds("largemodel", {"seconds_by_section": {"fig4c": 5.0, "explain": 2.0, "failure": 1.0,
                                                                           "learned": 0.5, "guidance": 0.25}}, 8.75)
    assert spent == {"fig4c": 5.0, "explain": 2.0, "failure": 1.0, "learned": 0.5, "guidance": 0.25}
    assert budget_mod.spent_seconds("theory", {}, 3.0) == {"theory": 3.0}


@pytest.mark.parametrize("value", ["0", "-1", "x", "65"])
def test_workers_flag_is_checked(value: str, capsys) -> None:
    assert main(["report", "--workers", value, "--suites", "theory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers must be an integer in [1, 64]" in err


def _fake_sections(monkeypatch) -> None:
    """The large-model suite's five sections replaced by quick deterministic stand-ins."""
    import os

    import reports.explain_suite as explain_suite
    import reports.failure_suite as failure_suite
    import reports.largemodel_suite as largemodel_suite
    import reports.learned_suite as learned_suite
    from largemodel.experiments.fig4c import experiment as fig4c
    from reports.claims import ClaimRow
    from simulate.experiments.common import ExperimentResult
    from simulate.verdict import Verdict

    def fig(out_dir, **kw):
        v = Verdict("verified", "1", "fake")
        numbers = {"study_digits": {"pid": os.getpid()}, "trend": [{"n": 64}, {"n": 256}], "lemma_d1_trained": {},
                   "claim_figures": {}}
        return ExperimentResult("fig4c", ["fig4c"], v, {}, numbers, [], 0.0, {"thm43_pinst": v, "lemma_d1": v})

    monkeypatch.setattr(fig4c, "run", fig)
    monkeypatch.setattr(explain_suite, "run_explain_suite", lambda out_dir, quick=True, progress=None: (
        [ClaimRow("thm31", Verdict("supplement", "2", "fake"))], {"explained": 2, "pid": os.getpid()}))
    monkeypatch.setattr(failure_suite, "run_failure_section", lambda out_dir, quick=True, progress=None: {
        "auroc": 0.7, "pid": os.getpid()})
    monkeypatch.setattr(learned_suite, "run_learned_section", lambda out_dir, quick=True, progress=None: (
        [ClaimRow("learned_vs_exact", Verdict("refuted", "3", "fake"))], {"regimes": 3, "pid": os.getpid()}))
    monkeypatch.setattr(largemodel_suite, "run_guidance_section", lambda out_dir, quick=True, progress=None: (
        [ClaimRow("guidance", Verdict("verified", "4", "fake"))], {"images": 24, "pid": os.getpid()}))


def test_large_model_sections_give_the_same_rows_with_two_workers(tmp_path: Path, monkeypatch) -> None:
    from reports.largemodel_suite import run_largemodel_suite
    from simulate.experiments.runner import sweep_workers

    _fake_sections(monkeypatch)
    # the Fig. 4(c) controls read the (here fake) study's records: tested in tests/reports/test_controls.py
    monkeypatch.setattr("reports.largemodel_suite.run_controls", lambda *a, **k: [])
    rows1, data1 = run_largemodel_suite(tmp_path / "a")
    with sweep_workers(2):
        rows2, data2 = run_largemodel_suite(tmp_path / "b")
    assert [r.as_dict() for r in rows1] == [r.as_dict() for r in rows2]
    pids = lambda d: {d["study_digits"].pop("pid"), d["explain"].pop("pid"), d["failure"].pop("pid"),  # noqa: E731
                      d["learned"].pop("pid"), d["guidance"].pop("pid")}
    assert pids(data1) == {os.getpid()} and os.getpid() not in pids(data2)  # two workers: other processes
    for d in (data1, data2):
        assert set(d.pop("seconds_by_section")) == {"fig4c", "explain", "failure", "learned", "guidance"}
        d.pop("seconds")
    assert data1 == data2


def _without(value: Any, volatile: set[str]) -> Any:
    """``value`` with every mapping key in ``volatile`` dropped, at any depth."""
    if isinstance(value, dict):
        return {k: _without(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_without(v, volatile) for v in value]
    return value


def test_large_model_suite_runs_alongside_the_simulator_suite(tmp_path: Path, monkeypatch) -> None:
    """With two workers the large-model suite runs in a process of its own while the simulator suite runs
    here; the report's rows and data are those of the one-worker run, and report.md is whole at the end."""
    import reports.largemodel_suite as lm_suite
    import reports.simulate_suite as simulate_suite
    from simulate.experiments.runner import sweep_workers

    monkeypatch.setattr(simulate_suite, "run_simulate_suite", lambda out_dir, **kw: ([], {"pid": os.getpid()}))
    _fake_sections(monkeypatch)
    monkeypatch.setattr("reports.largemodel_suite.run_controls", lambda *a, **k: [])
    real = lm_suite.run_largemodel_suite

    def suite(*args: Any, **kwargs: Any) -> Any:
        rows, data = real(*args, **kwargs)
        return rows, {**data, "suite_pid": os.getpid()}

    monkeypatch.setattr(lm_suite, "run_largemodel_suite", suite)
    run_report(tmp_path / "a", suites=("simulate", "largemodel"))
    with sweep_workers(2):
        run_report(tmp_path / "b", suites=("simulate", "largemodel"))
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert one["suites"]["simulate"]["pid"] == two["suites"]["simulate"]["pid"] == os.getpid()
    assert one["suites"]["largemodel"]["suite_pid"] == os.getpid()
    assert two["suites"]["largemodel"]["suite_pid"] != os.getpid()  # alongside, in a process of its own
    assert one["verdicts"] == two["verdicts"]
    volatile = {"pid", "suite_pid", "seconds", "seconds_by_section"}
    assert _without(one["suites"], volatile) == _without(two["suites"], volatile)
    assert "Partial" not in (tmp_path / "b" / "report.md").read_text()
