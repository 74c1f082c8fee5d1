"""Write the verification report: ``report.md`` (verdict table first) and ``results.json``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from reports.claims import CLAIMS, Verdict, not_run

__all__ = ["SUITES", "run_report", "render_markdown"]

SUITES = ("theory", "simulate", "largemodel")


def _anchor(claim_id: str) -> str:
    return f"claim-{claim_id.replace('_', '-')}"


def render_markdown(verdicts: dict[str, Verdict], meta: dict[str, Any]) -> str:
    """The report as Markdown: the verdict table, then one section per claim."""
    lines = [
        "# pfode-instability verification report",
        "",
        f"Run `{meta['run']}` ({meta['mode']}), suites: {', '.join(meta['suites'])}; "
        f"{meta['seconds']:.1f} s on {meta['machine']}.",
        "",
        "| claim | status | key number | details |",
        "|---|---|---|---|",
    ]
    for claim_id, text, _section in CLAIMS:
        v = verdicts[claim_id]
        figs = ", ".join(f"[{f}]({f})" for f in v.figures)
        link = f"[section](#{_anchor(claim_id)})" + (f"; {figs}" if figs else "")
        lines.append(f"| {text} | {v.status} | {v.key_number} | {link} |")
    lines.append("")
    for claim_id, text, section in CLAIMS:
        v = verdicts[claim_id]
        lines += [f"<a id=\"{_anchor(claim_id)}\"></a>", f"## {text}", "", f"*Paper: {section}.* **{v.status}**", "", v.evidence, ""]
        lines += [f"![{f}]({f})" for f in v.figures]
        lines.append("")
    return "\n".join(lines)


def run_report(out_dir: Path, suites: tuple[str, ...] = ("theory", "simulate"), quick: bool = True, progress=None) -> dict[str, Any]:
    """Run the chosen suites and write ``report.md`` and ``results.json`` into ``out_dir``."""
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"suites: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    verdicts: dict[str, Verdict] = {}
    suite_data: dict[str, Any] = {}
    if "theory" in suites:
        from reports.theory_suite import run_theory_suite

        rows, data = run_theory_suite(out_dir, quick=quick, progress=progress)
        verdicts.update({v.claim_id: v for v in rows})
        suite_data["theory"] = data
    if "simulate" in suites:
        from reports.simulate_suite import run_simulate_suite

        rows, data = run_simulate_suite(out_dir, quick=quick, progress=progress)
        for v in rows:  # measured verdicts take precedence; the bound-level evidence is kept
            previous = verdicts.get(v.claim_id)
            if previous is not None:
                v.evidence += f" Theory suite (bounds): {previous.status}; {previous.evidence}"
                v.figures += [f for f in previous.figures if f not in v.figures]
            verdicts[v.claim_id] = v
        suite_data["simulate"] = data
    if "largemodel" in suites:
        suite_data["largemodel"] = {"status": "not available yet in this version"}
    for claim_id, _text, _section in CLAIMS:
        if claim_id not in verdicts:
            if claim_id == "fig4c":
                why = "the large-model study is not built yet (issue: largemodel/)"
            else:
                why = f"suite not selected (run with --suites {','.join(SUITES)})"
            verdicts[claim_id] = not_run(claim_id, why)
    meta = {
        "run": out_dir.name,
        "mode": "quick" if quick else "full",
        "suites": list(suites),
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
    }
    (out_dir / "report.md").write_text(render_markdown(verdicts, meta))
    results = {"meta": meta, "verdicts": [verdicts[c].as_dict() for c, _, _ in CLAIMS], "suites": suite_data}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    return {"report": out_dir / "report.md", "results": out_dir / "results.json", "verdicts": verdicts}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
