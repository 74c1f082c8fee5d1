"""Report section: why images reconstruct badly, on the flow models trained here (issue 20).

Runs :mod:`largemodel.experiments.explain.experiment` (the measurement: discrepancy x amplification
against the exact discrete inverse, the linearization at the real discrepancy, mu_bar against the
actual error, the inverters at equal NFE with G_N's floor, the synthetic controls, the trend over
resolutions; docs/theory.md §5.3) and renders its two supplement verdicts
(:mod:`largemodel.experiments.explain.judge`: Theorem 3.1's decomposition, Fig. 4(c)'s mu_bar
against the error, each with its controls) as table rows and the "Why images reconstruct badly"
section; its consistency checks (``numbers["identities"]``) are listed apart, not as findings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from reports.claims import ClaimRow

__all__ = ["run_explain_suite", "explain_markdown"]


def run_explain_suite(out_dir: Path, quick: bool = True,
                      progress: Callable[[str], None] | None = None) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run the section into ``out_dir / "largemodel" / "explain*"``; return supplement rows and numbers."""
    from largemodel.experiments.explain import experiment as explain_study

    res = explain_study.run(out_dir / "largemodel", full=not quick, progress=progress)
    data = {**res.numbers, "seconds": res.seconds}
    figs = [f"largemodel/{f}" for f in res.figures]
    decomposition = ClaimRow("thm31", res.verdict_for("thm31"), figures=list(figs))
    predicts = ClaimRow("fig4c", res.verdict_for("fig4c"), figures=list(figs))
    data["markdown"] = explain_markdown(decomposition, predicts, figs, res.numbers.get("identities", []))
    return [decomposition, predicts], data


def explain_markdown(decomposition: ClaimRow, predicts: ClaimRow, figures: list[str],
                     identities: list[dict[str, Any]] | None = None) -> str:
    """The report's "Why images reconstruct badly" section: the decomposition and mu_bar against the
    error (the same measurements as the two supplement rows, with their controls), the consistency
    checks apart, and the figures."""
    lines = [
        "## Why images reconstruct badly",
        "",
        "Reconstruction error = amplification x discrepancy (docs/theory.md §5.3), measured per image against "
        "the exact discrete inverse z* of G_N (`pfode largemodel explain`).",
        "",
        f"**Decomposition** ({decomposition.verdict.key_number}). {decomposition.verdict.evidence}",
        "",
        f"**Instability against the actual error** ({predicts.verdict.key_number}). {predicts.verdict.evidence}",
        "",
    ]
    if identities:
        lines += ["Consistency checks (true by construction, not findings): "
                  + "; ".join(f"{i['name'].removeprefix('explain: ')}: {i['value']:.3g}" for i in identities) + ".", ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
