"""``pfode report``: run the suites and write the verification report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register"]


def register(groups: argparse._SubParsersAction) -> None:
    report = groups.add_parser("report", help="run the suites and write report.md + results.json")
    mode = report.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fast checks (default)")
    mode.add_argument("--full", action="store_true", help="larger checks (high-precision agreement up to n = 10^5)")
    report.add_argument("--suites", default="theory,simulate", help="comma-separated suites (default %(default)s)")
    report.add_argument("--out", type=Path, default=None, help="output folder (default reports/runs/<timestamp>)")
    report.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from reports.report import run_report

    suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    if not suites:
        raise ValueError("suites: give at least one suite")
    out = args.out or Path("reports") / "runs" / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    result = run_report(out, suites=suites, quick=not args.full, progress=progress)
    width = max(len(c) for c in result["verdicts"])
    for claim_id, verdict in result["verdicts"].items():
        print(f"{claim_id:<{width}}  {verdict.status}")
    print(f"wrote {result['report']}")
    print(f"wrote {result['results']}")
    return 0
