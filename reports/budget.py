"""The report's time budget: seconds planned per section, and the seconds each section spent.

A section is a suite (``theory``, ``simulate``) or a part of the large-model suite (``fig4c``: the
Fig. 4(c) study and the Theorem 4.1 / 4.3 trend, ``explain``, ``failure``, ``learned``: learned vs exact flows
on known mixtures, its small nets shipped with the package at the quick scale, trained on the first run and
cached at the full scale). :data:`PLANNED` is the
plan of each scale (``quick``, ``full``): what the section may spend on a 2-core CPU with the two
quick-report models shipped (nothing trained) and two workers. ``run_report`` records the seconds
each section spent (``spent_seconds``) in ``results.json`` (``meta.budget``) and prints the plan
next to them in ``report.md`` (:func:`budget_markdown`). A section reused from an earlier run
spent nothing now; its row shows the seconds it took when it was computed.

The plan is a statement, not a limit: no section is cut short when it overruns, and the report
marks the overrun (``over``) so that the plan, or the section, gets fixed.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["PLANNED", "SECTIONS", "budget_markdown", "budget_rows", "check_budget", "spent_seconds"]

#: the sections, in the order the report runs them
SECTIONS: tuple[str, ...] = ("theory", "simulate", "fig4c", "explain", "failure", "learned", "guidance")

#: seconds planned per section, by scale
PLANNED: dict[str, dict[str, float]] = {
    "quick": {"theory": 10.0, "simulate": 70.0, "fig4c": 60.0, "explain": 50.0, "failure": 50.0, "learned": 25.0,
              "guidance": 25.0},
    "full": {"theory": 120.0, "simulate": 3600.0, "fig4c": 2400.0, "explain": 1200.0, "failure": 1200.0,
             "learned": 3600.0, "guidance": 600.0},
}


def check_budget(budget: dict[str, float]) -> dict[str, float]:
    """``budget`` checked: known sections, finite seconds > 0 (``ValueError`` naming the section)."""
    if not isinstance(budget, dict):
        raise ValueError(f"budget must be a mapping section -> seconds, got {budget!r}")
    for section, seconds in budget.items():
        if section not in SECTIONS:
            raise ValueError(f"budget: unknown section {section!r}; choose from {', '.join(SECTIONS)}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"budget: {section} must be a finite number of seconds > 0, got {seconds!r}")
    return {s: float(budget[s]) for s in SECTIONS if s in budget}


def spent_seconds(suite: str, data: Any, seconds: float) -> dict[str, float]:
    """The sections of ``suite`` and their seconds: the suite's wall time ``seconds``, split for the
    large-model suite by its ``seconds_by_section`` (the rest of its time counts to ``fig4c``)."""
    if suite != "largemodel":
        return {suite: float(seconds)}
    parts = dict((data or {}).get("seconds_by_section") or {})
    others = SECTIONS[SECTIONS.index("fig4c") + 1:]  # the large-model sections after fig4c
    rest = max(0.0, float(seconds) - sum(parts.get(s, 0.0) for s in others))
    return {"fig4c": parts.get("fig4c", rest), **{s: parts.get(s, 0.0) for s in others}}


def budget_rows(planned: dict[str, float], spent: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per section that ran: ``section``, ``planned``, ``spent`` (seconds, this run or when
    computed), ``reused`` (from an earlier run), ``over`` (spent > planned)."""
    rows = []
    for section in SECTIONS:
        if section not in spent:
            continue
        plan, took = planned.get(section), float(spent[section]["seconds"])
        rows.append({"section": section, "planned": plan, "spent": took, "reused": bool(spent[section]["reused"]),
                     "over": plan is not None and took > plan})
    return rows


def budget_markdown(rows: list[dict[str, Any]], mode: str) -> str:
    """The "Time budget" section of ``report.md``: planned vs spent per section."""
    lines = ["## Time budget", "",
             f"Seconds planned per section at the {mode} scale (`reports.budget.PLANNED`) and spent in this run; "
             "a section reused from an earlier run shows the seconds it took then. With `--workers 2` the large-model "
             "suite runs in a process of its own while the simulator suite runs, and its five sections (fig4c, "
             "explain, failure, learned, guidance) run side by side, so their times overlap: the sum of sections exceeds the run's "
             "wall time.", "",
             "| section | planned (s) | spent (s) | |", "|---|---|---|---|"]
    total_plan = total_spent = 0.0
    for r in rows:
        plan = "-" if r["planned"] is None else f"{r['planned']:.0f}"
        note = "reused (computed earlier)" if r["reused"] else ("over budget" if r["over"] else "within budget")
        lines.append(f"| {r['section']} | {plan} | {r['spent']:.1f} | {note} |")
        total_plan += r["planned"] or 0.0
        total_spent += 0.0 if r["reused"] else r["spent"]
    lines += [f"| sum of sections | {total_plan:.0f} | {total_spent:.1f} (this run) | |", ""]
    return "\n".join(lines)
