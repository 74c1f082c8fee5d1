"""``pfode report``: run the suites and write the verification report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["register"]


def register(groups: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    report = groups.add_parser("report", help="run the suites and write report.md + results.json")
    mode = report.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fast checks (default)")
    mode.add_argument("--full", action="store_true", help="larger checks (high-precision agreement up to n = 10^5)")
    report.add_argument("--suites", default="theory,simulate,largemodel", help="comma-separated suites (default %(default)s)")
    report.add_argument("--out", type=Path, default=None,
                        help="output folder (default reports/runs/<quick|full>; ~ is expanded; finished suites there are "
                             "reused; must be new, empty or made by pfode; one run at a time)")
    report.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the suites' tensors are small, and extra threads "
                             "slow them badly when other processes share the cores; 0 keeps torch's default)")
    report.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes for independent units (simulator cells; default %(default)s: "
                             "up to two; results are identical with any number)")
    report.add_argument("--fresh", action="store_true",
                        help="recompute every suite instead of reusing cached results (removes only the suite "
                             "folders pfode created; refuses a folder holding anything else)")
    report.add_argument("--model", type=Path, default=None, help="your diffusers model folder for the large-model suite")
    report.add_argument("--images", type=Path, default=None, help="image folder for --model")
    report.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from reports.report import run_report

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    if not suites:
        raise ValueError("suites: give at least one suite")
    out = args.out or Path("reports") / "runs" / ("full" if args.full else "quick")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    from simulate.experiments.runner import sweep_workers

    with sweep_workers(args.workers):
        result = run_report(out, suites=suites, quick=not args.full, progress=progress, fresh=args.fresh,
                            model=args.model, images=args.images)
    width = max(len(c) for c in result["verdicts"])
    for claim_id, row in result["verdicts"].items():
        print(f"{claim_id:<{width}}  {row.status}")
    print(f"wrote {result['report']}")
    print(f"wrote {result['results']}")
    return 0
