"""Write the verification report: ``report.md`` (verdict table first) and ``results.json``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from reports.budget import PLANNED, budget_markdown, budget_rows, check_budget, spent_seconds
from reports.claims import CLAIMS, ClaimRow, not_run
from simulate.store import atomic_write_text, foreign_entry, mark_owned, output_lock, remove_owned
from simulate.verdict import StatusKind

__all__ = ["SUITES", "run_report", "render_markdown"]

SUITES = ("theory", "simulate", "largemodel")

#: bump when a suite's output format or content changes (invalidates cached suite results)
REPORT_VERSION = 3


def _anchor(claim_id: str) -> str:
    return f"claim-{claim_id.replace('_', '-')}"


def render_markdown(verdicts: dict[str, ClaimRow], meta: dict[str, Any], sections: list[str] | None = None) -> str:
    """The report as Markdown: the verdict table, one section per claim (with the function that
    decides it, ``Claim.decided_by``), then ``sections`` (whole Markdown sections that are not
    claims of the paper, e.g. the large-model suite's "Which images fail")."""
    lines = [
        "# pfode-instability verification report",
        "",
        f"Run `{meta['run']}` ({meta['mode']}), suites: {', '.join(meta['suites'])}; "
        f"{meta['seconds']:.1f} s on {meta['machine']}."
        + (f" **Partial: the {', '.join(meta['pending'])} suite(s) still running.**" if meta.get("pending") else ""),
        "",
        "| claim | status | key number | details |",
        "|---|---|---|---|",
    ]
    for c in CLAIMS:
        row = verdicts[c.id]
        figs = ", ".join(f"[{f}]({f})" for f in row.figures)
        link = f"[section](#{_anchor(c.id)})" + (f"; {figs}" if figs else "")
        lines.append(f"| {c.text} | {row.status} | {row.verdict.key_number} | {link} |")
    lines.append("")
    for c in CLAIMS:
        row = verdicts[c.id]
        lines += [f"<a id=\"{_anchor(c.id)}\"></a>", f"## {c.text}", "", f"*Paper: {c.paper_section}.* **{row.status}**",
                  "", f"Decided by `{c.decided_by}` (mathematics: {c.theory_section}).", "", row.verdict.evidence, ""]
        lines += [f"![{f}]({f})" for f in row.figures]
        lines.append("")
    for section in sections or []:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)


def _cached_suite(out_dir: Path, suite: str, signature: dict[str, Any], run: Any, progress: Any,
                  timing: dict[str, Any] | None = None) -> tuple[list[ClaimRow], Any]:
    """Run one suite, or reuse its finished result (``<suite>/suite.json``).

    An interrupted suite has no ``suite.json``; rerunning resumes it from the records its
    experiments wrote as they went. (``--fresh`` removed the suite folder before this.)
    ``timing`` (if given) receives ``seconds`` (the suite's wall time when it was computed) and
    ``reused``.
    """
    timing = {} if timing is None else timing
    cache = out_dir / suite / "suite.json"
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            saved = {}
        if isinstance(saved, dict) and saved.get("signature") == signature:
            if progress is not None:
                progress(f"{suite}: cached result reused ({cache}; --fresh recomputes)")
            timing.update(seconds=float(saved.get("seconds") or 0.0), reused=True)
            return [ClaimRow.from_dict(v) for v in saved["verdicts"]], saved["data"]
    t0 = time.perf_counter()
    rows, data = run()
    timing.update(seconds=time.perf_counter() - t0, reused=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps({"signature": signature, "verdicts": [v.as_dict() for v in rows], "data": data,
                                         "seconds": timing["seconds"]}, indent=1, default=_json_default))
    return rows, data


def _prepare_folders(out_dir: Path, suites: tuple[str, ...], fresh: bool) -> None:
    """Check, then (``fresh``) empty and mark the suite folders, before any suite runs.

    Every selected suite folder must be absent, empty or pfode's (``.pfode-owned``): a folder
    holding anything else is refused before anything is deleted (``remove_owned`` never
    deletes what pfode did not create). Each suite folder is then marked as pfode's.
    """
    for suite in suites:
        name = foreign_entry(out_dir / suite)
        if name is not None:
            raise ValueError(f"{out_dir / suite} holds files pfode did not create (e.g. {name}); "
                             "pfode will not write into or delete it: move it away or choose another --out")
    for suite in suites:
        if fresh:
            remove_owned(out_dir / suite)
        mark_owned(out_dir / suite, f"pfode report: {suite} suite")


def _not_selected(suite: str) -> str:
    return f"the {suite} suite was not selected (run with --suites {','.join(SUITES)})"


def _merge(verdicts: dict[str, ClaimRow], row: ClaimRow, suite: str) -> None:
    """Add a suite's row: measured verdicts replace bound-level ones (whose evidence is kept);
    supplements add evidence to the row of their claim."""
    previous = verdicts.get(row.claim_id)
    if row.status.kind is StatusKind.SUPPLEMENT:
        note = f" Large-model suite: {row.verdict.evidence}"
        if previous is None:
            new = not_run(row.claim_id, _not_selected(row.claim.suite))
            new.verdict.key_number, new.verdict.evidence = row.verdict.key_number, note.strip()
            new.figures = list(row.figures)
            verdicts[row.claim_id] = new
        else:
            previous.verdict.evidence += note
            previous.figures += [f for f in row.figures if f not in previous.figures]
        return
    if previous is not None:
        row.verdict.evidence += f" {suite.capitalize()} suite before it: {previous.status}; {previous.verdict.evidence}"
        row.figures += [f for f in previous.figures if f not in row.figures]
    verdicts[row.claim_id] = row


def run_report(
    out_dir: Path,
    suites: tuple[str, ...] = ("theory", "simulate", "largemodel"),
    quick: bool = True,
    progress: Any = None,
    fresh: bool = False,
    model: Path | None = None,
    images: Path | None = None,
    budget: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the chosen suites and write ``report.md`` and ``results.json`` into ``out_dir``.

    Args:
        suites: any of ``SUITES``.
        quick: the fast scale (``--quick``, default) or the full one.
        fresh: recompute every suite (otherwise finished suites in ``out_dir`` are reused and an
            interrupted one resumes). Only suite folders pfode created are removed.
        model, images: a user's diffusers model folder and image folder for the large-model
            suite (its result then decides the Fig. 4(c) row).
        budget: seconds planned per section (``reports.budget.SECTIONS``; default the scale's
            ``reports.budget.PLANNED``), printed next to the seconds spent in ``report.md``.

    ``out_dir`` must be new, empty or a folder pfode created (``.pfode-owned``), and so must its
    suite folders; the run holds ``out_dir``'s lock throughout (a second run on it fails with
    ``OutputBusy``). ``report.md``, ``results.json`` and each ``suite.json`` are written
    atomically; ``report.md`` is written after each suite finishes (the suites still running are
    marked pending), so a reader sees the theory verdicts within seconds.

    Raises:
        ValueError: invalid arguments, a folder holding files pfode did not create, or
            ``OutputBusy``; all before any suite runs.
    """
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"suites: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if (model is None) != (images is None):
        raise ValueError("give both --model and --images to study your own model")
    if model is not None and "largemodel" not in suites:
        raise ValueError("--model needs the largemodel suite (--suites ...,largemodel)")
    planned = {**PLANNED["quick" if quick else "full"], **check_budget(budget or {})}
    mark_owned(out_dir, "pfode report run")
    with output_lock(out_dir, command="pfode report"):
        _prepare_folders(out_dir, tuple(s for s in SUITES if s in suites), fresh)
        return _run_suites(out_dir, suites, quick, progress, model, images, planned)


def _run_suites(out_dir: Path, suites: tuple[str, ...], quick: bool, progress: Any, model: Path | None,
                images: Path | None, planned: dict[str, float]) -> dict[str, Any]:
    """The body of ``run_report`` (arguments checked, ``out_dir`` locked and prepared)."""
    t0 = time.perf_counter()
    mode = "quick" if quick else "full"
    verdicts: dict[str, ClaimRow] = {}
    suite_data: dict[str, Any] = {}
    runners: dict[str, Any] = {}
    if "theory" in suites:
        from reports.theory_suite import run_theory_suite

        runners["theory"] = lambda: run_theory_suite(out_dir, quick=quick, progress=progress)
    if "simulate" in suites:
        from reports.simulate_suite import run_simulate_suite

        runners["simulate"] = lambda: run_simulate_suite(out_dir, quick=quick, progress=progress)
    if "largemodel" in suites:
        from reports.largemodel_suite import run_largemodel_suite

        runners["largemodel"] = lambda: run_largemodel_suite(out_dir, quick=quick, progress=progress, model=model,
                                                             images=images)
    spent: dict[str, dict[str, Any]] = {}
    for suite in SUITES:
        if suite not in runners:
            continue
        signature = {"mode": mode, "version": REPORT_VERSION,
                     "model": str(model) if suite == "largemodel" and model else None,
                     "images": str(images) if suite == "largemodel" and images else None}
        timing: dict[str, Any] = {}
        rows, data = _cached_suite(out_dir, suite, signature, runners[suite], progress, timing)
        for v in rows:
            _merge(verdicts, v, suite)
        suite_data[suite] = data
        for section, seconds in spent_seconds(suite, data, timing["seconds"]).items():
            spent[section] = {"seconds": seconds, "reused": timing["reused"]}
        pending = [s for s in SUITES if s in runners and s not in suite_data]
        if pending:  # the rows so far, for a reader who opens report.md before the run ends
            _write_report(out_dir, suites, mode, t0, verdicts, suite_data, budget_rows(planned, spent), pending)
            if progress is not None:
                progress(f"{suite}: rows written to {out_dir / 'report.md'} ({', '.join(pending)} pending)")
    return _write_report(out_dir, suites, mode, t0, verdicts, suite_data, budget_rows(planned, spent), [])


def _pending(suite: str) -> str:
    return f"pending: the {suite} suite is still running (report.md is rewritten as each suite finishes)"


def _write_report(out_dir: Path, suites: tuple[str, ...], mode: str, t0: float, verdicts: dict[str, ClaimRow],
                  suite_data: dict[str, Any], budget: list[dict[str, Any]], pending: list[str]) -> dict[str, Any]:
    """Write ``report.md`` and ``results.json`` (atomically) from the suites finished so far; the
    claims of ``pending`` suites are marked pending, those of suites not selected not run."""
    shown = dict(verdicts)
    for c in CLAIMS:
        if c.id not in shown:
            shown[c.id] = not_run(c.id, _pending(c.suite) if c.suite in pending else _not_selected(c.suite))
    meta = {
        "run": out_dir.name,
        "mode": mode,
        "suites": list(suites),
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "pending": list(pending),
        "budget": budget,
    }
    large = suite_data.get("largemodel") or {}
    sections = [large[k]["markdown"] for k in ("explain", "failure") if (large.get(k) or {}).get("markdown")]
    sections.append(budget_markdown(budget, mode))
    atomic_write_text(out_dir / "report.md", render_markdown(shown, meta, sections))
    results = {"meta": meta, "verdicts": [shown[c.id].as_dict() for c in CLAIMS], "suites": suite_data}
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=_json_default))
    return {"report": out_dir / "report.md", "results": out_dir / "results.json", "verdicts": shown}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
