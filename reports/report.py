"""Write the verification report: ``report.md`` (verdict table first) and ``results.json``."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from reports.budget import PLANNED, budget_markdown, budget_rows, check_budget, spent_seconds
from reports.claims import CLAIMS, ClaimRow, not_run
from reports.cells import table_cell
from reports.identities import identities_markdown, rows_from
from simulate.store import atomic_write_text, claim_folder, describe_kept, foreign_entry, output_lock, remove_owned
from simulate.verdict import StatusKind

__all__ = ["SUITES", "run_report", "render_markdown"]

SUITES = ("theory", "simulate", "largemodel")

#: bump when a suite's output format or content changes (invalidates cached suite results)
REPORT_VERSION = 5


def _anchor(claim_id: str) -> str:
    return f"claim-{claim_id.replace('_', '-')}"


#: the abbreviations of the verdict table's cells, defined once under the table
TABLE_LEGEND = (
    "*Legend.* Status: **verified** (holds on every measured case), **holds in regime** (holds where the "
    "\"where\" column says, not elsewhere), **refuted**, **inconclusive** (the interval does not decide), "
    "**not run**. Intervals in brackets are 95% intervals (Clopper-Pearson for proportions, bootstrap for "
    "correlations). `G` / `F`: the generation map (noise to image) and its inverse along the probability-flow "
    "ODE; `J_f`: Jacobian of a map `f`; `lambda`, `mu`, `mu_bar`: the instability coefficient, its finite-difference "
    "version and its average over K perturbations (Def. 2.2); `Lambda_G = |det J_G|` (Def. 4.1); `P_inst(tau)`: "
    "the probability that `Lambda_G(F(x)) > tau` for `x ~ p_r`; `p1`, `p2`: the two failure probabilities of "
    "Theorem 4.1 (`p1`: `Lambda_G <= tau` although `||F(x)||^2 >= c`; `p2 = P(||F(x)||^2 < c)`); `n`: dimension; "
    "`c = (1 + eps) n`; `h`, `M`, `L`, `kappa`: step size, bound on the local error, Lipschitz constant and "
    "condition factor of Theorem 3.1. Theorem 4.3 cells: `m` boxes of side `l` convolved with `N(0, sigma^2 I)`, "
    "`single box` (m = 1, centred), `diag` (boxes in a diagonal row), `random` (placed at random), "
    "`g/s` = gap between neighbouring boxes over sigma."
)


def _figure_links(text: str) -> list[str]:
    """The PNG targets of the Markdown links and images in ``text``."""
    return re.findall(r"\]\(([^)\s]+\.png)\)", text)


def render_markdown(verdicts: dict[str, ClaimRow], meta: dict[str, Any], sections: list[str] | None = None,
                    figures: list[str] | None = None) -> str:
    """The report as Markdown: the verdict table (status word, key number, where, link; every cell
    escaped for GitHub, abbreviations in :data:`TABLE_LEGEND` under it), one section per claim (with
    the function that decides it, ``Claim.decided_by``), then ``sections`` (whole Markdown sections
    that are not claims of the paper, e.g. the large-model suite's "Which images fail").

    Each figure is embedded once: in the first claim section that names it, unless a later
    ``sections`` entry embeds it (then the claim section points there). ``figures`` (paths relative
    to the report folder, e.g. every PNG the run wrote) that nothing embeds are linked under "Other
    figures", so every figure of the run is linked exactly once.
    """
    sections = [s.rstrip() for s in sections or []]
    lines = ["# pfode-instability verification report", "", _header(meta), "",
             "| claim | status | key number | where | details |", "|---|---|---|---|---|"]
    for c in CLAIMS:
        row = verdicts[c.id]
        details = f"[section](#{_anchor(c.id)})"
        if row.controls:
            details += f"; negative controls failing: {sum(x['status'] == 'fails' for x in row.controls)}/{len(row.controls)}"
        cells = [c.text, row.status.kind.value, row.verdict.key_number, row.status.detail]
        lines.append("| " + " | ".join(table_cell(x) for x in cells) + f" | {table_cell(details)} |")
    lines += ["", TABLE_LEGEND, ""]
    embedded_later = {f for s in sections for f in _figure_links(s)}
    shown: dict[str, str] = {}
    for c in CLAIMS:
        row = verdicts[c.id]
        lines += [f"<a id=\"{_anchor(c.id)}\"></a>", f"## {c.text}", "", f"*Paper: {c.paper_section}.* **{row.status}**",
                  "", f"Decided by `{c.decided_by}` (mathematics: {c.theory_section}).", "", row.verdict.evidence, ""]
        lines += _control_lines(row)
        elsewhere = []
        for f in row.figures:
            if f in shown or f in embedded_later:
                elsewhere.append(f"`{Path(f).name}` ({shown.get(f, 'below')})")
            else:
                lines.append(f"![{f}]({f})")
                shown[f] = f"under [{_short(c.text)}](#{_anchor(c.id)})"
        if elsewhere:
            lines.append(f"Also: {', '.join(elsewhere)}.")
        lines.append("")
    for section in sections:
        lines += [section, ""]
    linked = set(shown) | embedded_later
    others = [f for f in figures or [] if f not in linked]
    if others:
        lines += ["## Other figures", "", "Figures this run wrote that no section above embeds:", ""]
        lines += [f"- [{f}]({f})" for f in others]
        lines.append("")
    return "\n".join(lines)


def _short(text: str) -> str:
    """A claim's text cut to a link label: ``Thm. 4.3: p1 -> 0`` (long texts to their name)."""
    short = re.split(r" as n| \(", text)[0]
    return short if len(short) <= 40 else short.partition(":")[0]


def _header(meta: dict[str, Any]) -> str:
    """The line under the title: scale, suites, folder, compute time (cached suites counted with
    the time they took when computed) and machine."""
    cached = meta.get("cached_suites") or []
    took = f"{meta.get('compute_seconds', meta['seconds']):.1f} s of computing"
    if cached:
        took += f" ({', '.join(cached)} reused from the cache; this invocation {meta['seconds']:.1f} s)"
    partial = f" **Partial: the {', '.join(meta['pending'])} suite(s) still running.**" if meta.get("pending") else ""
    return (f"{meta['mode'].capitalize()}-scale run, suites {', '.join(meta['suites'])}, written to `{meta['run']}`: "
            f"{took} on {meta['machine']}.{partial}")


def _control_lines(row: ClaimRow) -> list[str]:
    """The claim's negative controls (:mod:`reports.controls`): the same judge on an input where the claim is false."""
    if not row.controls:
        return []
    out = ["Negative controls (the same judge on an input where the claim is known false; it must say fails):", ""]
    out += [f"- {ctl['name']}: **{ctl['status']}** (judge: {ctl['judge_status']}; {ctl['key']})" for ctl in row.controls]
    return out + [""]


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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # damaged: named, then rebuilt
            print(f"pfode: warning: damaged suite cache {cache} ({type(exc).__name__}); recomputing the {suite} suite",
                  file=sys.stderr)
            saved = {}
        if isinstance(saved, dict) and saved.get("signature") == signature:
            if progress is not None:
                progress(f"{suite}: cached result reused ({cache}; --fresh recomputes)")
            timing.update(seconds=float(saved.get("seconds") or 0.0), reused=True)
            return [ClaimRow.from_dict(v) for v in saved["verdicts"]], saved["data"]
    t0 = time.perf_counter()
    rows, data = run()
    timing.update(seconds=time.perf_counter() - t0, reused=False)
    atomic_write_text(cache, json.dumps({"signature": signature, "verdicts": [v.as_dict() for v in rows], "data": data,
                                         "seconds": timing["seconds"]}, indent=1, default=_json_default))
    return rows, data


def _prepare_folders(out_dir: Path, suites: tuple[str, ...], fresh: bool) -> None:
    """Check, then (``fresh``) empty and claim the suite folders, before any suite runs.

    Every selected suite folder must be absent, empty or pfode's (``.pfode-owned``): a folder
    holding anything else is refused before anything is deleted. ``fresh`` removes exactly the
    files the manifest records as pfode's and unchanged (``remove_owned``); whatever else is
    there stays and is named in one warning line on stderr. Each suite folder is then claimed.
    """
    for suite in suites:
        name = foreign_entry(out_dir / suite)
        if name is not None:
            raise ValueError(f"{out_dir / suite} holds files pfode did not create (e.g. {name}); "
                             "pfode will not write into or delete it: move it away or choose another --out")
    for suite in suites:
        if fresh:
            kept = remove_owned(out_dir / suite)
            if kept:
                print(f"pfode: warning: --fresh {describe_kept(out_dir / suite, kept)}", file=sys.stderr)
        claim_folder(out_dir / suite, "report", f"pfode report: {suite} suite")


def _not_selected(suite: str) -> str:
    return f"the {suite} suite was not selected (run with --suites {','.join(SUITES)})"


def _merge(verdicts: dict[str, ClaimRow], row: ClaimRow, suite: str, origins: dict[str, str] | None = None) -> None:
    """Add a suite's row: measured verdicts replace bound-level ones (whose evidence is kept, under
    the name of the suite that gave it: ``origins`` maps each claim to the suite of its current row);
    supplements add evidence to the row of their claim."""
    origins = {} if origins is None else origins
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
        before = origins.get(row.claim_id, "an earlier")
        row.verdict.evidence += f" The {before} suite's verdict before it: {previous.status}; {previous.verdict.evidence}"
        row.figures += [f for f in previous.figures if f not in row.figures]
        row.controls = previous.controls + row.controls
    verdicts[row.claim_id] = row
    origins[row.claim_id] = suite


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
    claim_folder(out_dir, "report", "pfode report run")
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
    origins: dict[str, str] = {}
    seconds: dict[str, float] = {}  # per suite: computing time (a reused suite's from when it was computed)
    cached: list[str] = []
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

    def signature(suite: str) -> dict[str, Any]:
        return {"mode": mode, "version": REPORT_VERSION,
                "model": str(model) if suite == "largemodel" and model else None,
                "images": str(images) if suite == "largemodel" and images else None}

    def run_suite(suite: str) -> tuple[tuple[list[ClaimRow], Any], dict[str, Any]]:
        timing: dict[str, Any] = {}
        return _cached_suite(out_dir, suite, signature(suite), runners[suite], progress, timing), timing

    def suite_done(suite: str, rows: list[ClaimRow], data: Any, timing: dict[str, Any]) -> None:
        seconds[suite] = timing["seconds"]
        if timing["reused"]:
            cached.append(suite)
        for v in rows:
            _merge(verdicts, v, suite, origins)
        suite_data[suite] = data
        for section, sec in spent_seconds(suite, data, timing["seconds"]).items():
            spent[section] = {"seconds": sec, "reused": timing["reused"]}
        pending = [s for s in SUITES if s in runners and s not in suite_data]
        if pending:  # the rows so far, for a reader who opens report.md before the run ends
            _write_report(out_dir, suites, mode, t0, verdicts, suite_data, budget_rows(planned, spent), pending,
                          seconds, cached)
            if progress is not None:
                progress(f"{suite}: rows written to {out_dir / 'report.md'} ({', '.join(pending)} pending)")

    from simulate.experiments.runner import call_in_background

    background = {}
    if _large_model_alongside(runners, model):  # both cores busy while the simulator suite runs
        background["largemodel"] = call_in_background(lambda: run_suite("largemodel"))
    try:
        for suite in SUITES:
            if suite in runners:
                (rows, data), timing = background[suite].wait() if suite in background else run_suite(suite)
                suite_done(suite, rows, data, timing)
    finally:  # this process failed first: the background suite stops too
        for job in background.values():
            job.cancel()
    return _write_report(out_dir, suites, mode, t0, verdicts, suite_data, budget_rows(planned, spent), [], seconds,
                         cached)


def _large_model_alongside(runners: dict[str, Any], model: Path | None) -> bool:
    """Whether the large-model suite runs in a process of its own while the simulator suite runs: both
    selected, two or more workers (``--workers``), ``fork`` available, and the models trained here
    (a user's model, perhaps on a GPU, runs in this process after the simulator suite)."""
    import multiprocessing as mp

    from simulate.experiments.runner import current_workers

    return ({"simulate", "largemodel"} <= set(runners) and model is None and current_workers() > 1
            and "fork" in mp.get_all_start_methods())


def _pending(suite: str) -> str:
    return f"pending: the {suite} suite is still running (report.md is rewritten as each suite finishes)"


def _write_report(out_dir: Path, suites: tuple[str, ...], mode: str, t0: float, verdicts: dict[str, ClaimRow],
                  suite_data: dict[str, Any], budget: list[dict[str, Any]], pending: list[str],
                  seconds: dict[str, float], cached: list[str]) -> dict[str, Any]:
    """Write ``report.md`` and ``results.json`` (atomically) from the suites finished so far; the
    claims of ``pending`` suites are marked pending, those of suites not selected not run."""
    shown = dict(verdicts)
    for c in CLAIMS:
        if c.id not in shown:
            shown[c.id] = not_run(c.id, _pending(c.suite) if c.suite in pending else _not_selected(c.suite))
    meta = {
        "run": str(out_dir),
        "mode": mode,
        "suites": list(suites),
        "seconds": time.perf_counter() - t0,
        "compute_seconds": sum(seconds.values()),
        "cached_suites": cached,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
        "pending": list(pending),
        "budget": budget,
    }
    large = suite_data.get("largemodel") or {}
    sections = [large[k]["markdown"] for k in ("explain", "failure", "learned", "guidance") if (large.get(k) or {}).get("markdown")]
    identities = _identities(suite_data)
    if identities:
        sections.append(identities_markdown(identities))
    sections.append(budget_markdown(budget, mode))
    # the figures of this run: the report folder's own and those of the selected suites' folders
    found = [*out_dir.glob("*.png"), *(f for s in suites if (out_dir / s).is_dir() for f in (out_dir / s).rglob("*.png"))]
    figures = sorted(str(f.relative_to(out_dir)) for f in found if f.is_file() and not f.is_symlink())
    atomic_write_text(out_dir / "report.md", render_markdown(shown, meta, sections, figures))
    results = {"meta": meta, "verdicts": [shown[c.id].as_dict() for c in CLAIMS], "suites": suite_data,
               "identities": identities}
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=_json_default))
    return {"report": out_dir / "report.md", "results": out_dir / "results.json", "verdicts": shown}


def _identities(suite_data: dict[str, Any]) -> list[dict[str, Any]]:
    """The "Checked identities" rows (:mod:`reports.identities`): the simulator experiments' and the explain
    experiment's (its ``identities`` hook)."""
    rows = [r for exp in (suite_data.get("simulate") or {}).values() if isinstance(exp, dict) for r in exp.get("identities", [])]
    explain = (suite_data.get("largemodel") or {}).get("explain") or {}
    return rows + rows_from(explain)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
