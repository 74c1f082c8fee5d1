"""``pfode simulate <experiment> [--out DIR] [--full] [--seed S]``: run one simulator experiment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simulate.experiments import EXPERIMENTS

__all__ = ["register"]


def register(groups: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    sim = groups.add_parser("simulate", help="simulator experiments checking each claim of the paper")
    sim.add_argument("experiment", choices=list(EXPERIMENTS), help="which experiment")
    sim.add_argument("--out", type=Path, default=None, help="output folder, new or pfode's (~ is expanded; default simulate-results/<experiment>)")
    sim.add_argument("--full", action="store_true", help="full scale (default: the fast scale)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bars")
    sim.add_argument("--json", action="store_true", help="print the result as JSON")
    sim.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from simulate.experiments import load
    from simulate.store import claim_folder, output_lock

    module = load(args.experiment)
    out = args.out or Path("simulate-results") / args.experiment
    claim_folder(out, "simulate", f"pfode simulate {args.experiment}")
    with output_lock(out, command=f"pfode simulate {args.experiment}"):
        result = module.run(out, full=args.full, seed=args.seed, progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(f"{result.name}: {result.verdict.status} ({result.verdict.key_number})")
        print(f"  {result.verdict.evidence}")
        print(f"wrote {out / 'result.json'}" + "".join(f"\nwrote {out / f}" for f in result.figures))
    return 0
