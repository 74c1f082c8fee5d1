"""The simulator suite of the report: every experiment of ``simulate.experiments``, measured.

Each experiment runs at its fast scale (``--quick``) or full scale (``--full``) into
``<report>/simulate/<experiment>/``; its records make an interrupted report resume. The
verdicts come from the measurements; each experiment's ``CLAIM_IDS`` are the registered claims
(``reports.claims.CLAIMS``) it decides.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from reports.claims import ClaimRow
from reports.controls import run_controls
from reports.identities import identities_of
from simulate.verdict import Status, StatusKind

__all__ = ["run_simulate_suite"]


def _cells(cells: list[dict[str, Any]], tau: str = "1") -> list[dict[str, Any]]:
    """Theorem 4.3's cells for ``results.json``: per cell and n the estimate, 95% interval and point count of p1,
    p2 and P_inst (at ``tau``, else the first tau measured), the class and the decision at the largest n (the rest
    stays in thm43's result.json)."""
    keep = ("class", "sequence", "intervals", "decision")
    out = []
    for c in cells:
        t = c["taus"].get(tau) or next(iter(c["taus"].values()))
        out.append({"label": c["label"], "ns": c["ns"], "points": c["points"], "points_p1": c["points_p1"],
                    **{k: {f: d[f] for f in keep} for k, d in (("p1", t["p1"]), ("p2", c["p2"]), ("p_inst", t["p_inst"]))}})
    return out


def run_simulate_suite(
    out_dir: Path, quick: bool = True, progress: Callable[[str], None] | None = None, fresh: bool = False
) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run the experiments; return one verdict per claim they check, and their numbers."""
    from simulate.experiments import EXPERIMENTS, load

    step = progress or (lambda msg: None)
    verdicts: list[ClaimRow] = []
    data: dict[str, Any] = {}
    for name in EXPERIMENTS:
        t0 = time.perf_counter()
        step(f"simulate: {name}")
        module = load(name)
        sub = out_dir / "simulate" / name
        try:
            result = module.run(sub, full=not quick, seed=0, progress=False)
        except Exception as exc:  # one failing experiment must not sink the report
            failed = Status.of(StatusKind.NOT_RUN, f"{name} failed ({type(exc).__name__}: {exc})")
            for claim_id in getattr(module, "CLAIM_IDS", []):
                verdicts.append(ClaimRow.of(claim_id, failed, "-", f"The experiment {name} raised {type(exc).__name__}: {exc}"))
            data[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        for claim_id in result.claim_ids:
            v = result.verdict_for(claim_id)
            row = ClaimRow.of(
                claim_id, v.status, v.key_number,
                f"{v.evidence} (experiment `{name}`, {result.seconds:.1f} s; data: simulate/{name}/result.json)",
                figures=[f"simulate/{name}/{f}" for f in result.figures],
            )
            row.controls = run_controls(claim_id, result)  # the same judge on inputs where the claim is false
            verdicts.append(row)
        data[name] = {"seconds": time.perf_counter() - t0, "numbers_file": f"simulate/{name}/result.json",
                      "identities": identities_of(name, result.numbers)}
        if "cells" in result.numbers:  # Theorem 4.3: per cell and n the estimates, intervals, point counts, decisions
            data[name]["cells"] = _cells(result.numbers["cells"])
    return verdicts, data
