"""Benchmark (not a test): the box-mixture field's evaluation, current code vs the frozen pre-speed-up copy.

The peer is tests/simulate/_box_reference.py (the code of ``BoxMixture`` evaluation and
``interval_stats`` before issue 26's speed-up, kept as the reference of tests/simulate/test_box_reference.py),
measured in the same run on the same inputs; the ratios (current / old CPU seconds) are the result.

Inputs are those of the Theorem 4.3 experiment (simulate/experiments/thm43): per cell (``m`` cubes of side
0.1 placed as the experiment places them, kernel width ``sigma``, dimension ``n``) the field calls of one
inversion ``x -> F(x)`` of ``--points`` points ``x ~ U[0, 1]^n`` by dopri5 at the experiment's tolerances
are recorded (``x``, ``t`` and what was requested: the velocity inside the solve, the log density at
``t = 1``), then replayed: every call through the current ``evaluate_unchecked`` and through the old
path, passes alternated ``--repeat`` times so that a change of the shared machine's load hits both.
Times are CPU seconds (``time.process_time``) with one thread; the JSON gives per cell the calls, the
elements per call (``B m n``), the median seconds of a pass of each and their ratio, and the same for
``interval_stats`` alone on the calls' ``(c, h)``.

Run: ``python benchmarks/bench_box_field.py [--quick] [--repeat R] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "simulate"))

import _box_reference as ref  # noqa: E402

from simulate.experiments.thm43.geometry import Cell, boxes_for  # noqa: E402
from simulate.fields import BoxMixture  # noqa: E402
from simulate.fields.truncnorm import interval_stats  # noqa: E402
from simulate.maps import invert  # noqa: E402

FLAGS = ("velocity", "score", "log_prob", "divergence")


def _cells(quick: bool) -> list[tuple[Cell, int]]:
    sigmas = (0.05,) if quick else (0.05, 0.3)
    ns = (32, 128) if quick else (32, 128, 512)
    out = []
    for s in sigmas:
        for n in ns:
            out += [(Cell("single", s, 1), n), (Cell("diagonal", s, 2, 1.0), n), (Cell("random", s, 4), n)]
    return out


def _record(field: BoxMixture, points: int, seed: int, max_calls: int) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, bool]]]:
    """The field calls of one inversion of ``points`` points (plus one log density at t = 1), evenly thinned to ``max_calls``."""
    calls: list[tuple[torch.Tensor, torch.Tensor, dict[str, bool]]] = []
    evaluate = field._evaluate

    def recording(x: torch.Tensor, t: torch.Tensor, request: Any) -> Any:
        calls.append((x.clone(), t.clone(), {k: bool(getattr(request, k)) for k in FLAGS}))
        return evaluate(x, t, request)

    field._evaluate = recording  # type: ignore[method-assign]
    x = torch.from_numpy(np.random.default_rng([seed, field.n]).random((points, field.n)))
    with torch.no_grad():
        field.log_prob(x, 1.0)
        invert(field, x, solver="dopri5", rtol=1e-6, atol=1e-8)
    del field._evaluate
    if len(calls) > max_calls:
        keep = np.linspace(0, len(calls) - 1, max_calls).round().astype(int)
        calls = [calls[i] for i in keep]
    return calls


def _standardized(field: BoxMixture, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c, h)`` of the field's call (docs/theory.md §3.6), as ``_component_terms`` forms them."""
    s_t = torch.sqrt(t * t * field.sigma**2 + (1.0 - t) ** 2)
    mid, half = 0.5 * (field.lower + field.upper), 0.5 * (field.upper - field.lower)
    return (t[:, None, None] * mid - x[:, None, :]) / s_t[:, None, None], (t / s_t)[:, None, None] * half


def _moments(flags: dict[str, bool]) -> int:
    return 2 if flags["divergence"] else (1 if flags["velocity"] or flags["score"] else 0)


def _alternate(runs: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """Median CPU seconds of ``repeat`` passes of each, passes alternated (one warm-up pass each first)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_cell(cell: Cell, n: int, points: int, repeat: int, max_calls: int, seed: int = 0) -> dict[str, Any]:
    boxes = boxes_for(cell, n, 0.1, np.random.default_rng([seed, 1, cell.m, n]))
    field = BoxMixture(boxes.lower, boxes.upper, np.full(cell.m, 1.0 / cell.m), cell.sigma, dtype=torch.float64)
    calls = _record(field, points, seed, max_calls)
    with torch.no_grad():
        for x, t, flags in calls:  # same results (the tests check this to 1e-13 on random inputs)
            new, old = field.evaluate_unchecked(x, t, **flags), ref.box_field_values(field, x, t, **flags)
            for k in FLAGS:
                if flags[k] and not torch.allclose(getattr(new, k), old[k], rtol=1e-12, atol=1e-12):
                    raise AssertionError(f"{cell.label} n={n}: {k} differs from the old code")
        ch = [(*_standardized(field, x, t), _moments(flags)) for x, t, flags in calls]

        def new_field() -> None:
            for x, t, flags in calls:
                field.evaluate_unchecked(x, t, **flags)

        def old_field() -> None:
            for x, t, flags in calls:
                ref.box_field_values(field, x, t, **flags)

        def new_stats() -> None:
            for c, h, k in ch:
                interval_stats(c, h, moments=k)

        def old_stats() -> None:
            for c, h, k in ch:
                ref.interval_stats(c, h, moments=k)

        field_s = _alternate({"old": old_field, "new": new_field}, repeat)
        stats_s = _alternate({"old": old_stats, "new": new_stats}, repeat)
    return {
        "cell": cell.label,
        "n": n,
        "calls": len(calls),
        "mean_elements_per_call": round(float(np.mean([x.shape[0] * cell.m * n for x, _, _ in calls])), 1),
        "field_seconds": {k: round(v, 4) for k, v in field_s.items()},
        "field_ratio_new_over_old": round(field_s["new"] / field_s["old"], 3),
        "interval_stats_seconds": {k: round(v, 4) for k, v in stats_s.items()},
        "interval_stats_ratio_new_over_old": round(stats_s["new"] / stats_s["old"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sigma 0.05 and n in (32, 128) only")
    parser.add_argument("--repeat", type=int, default=5, help="alternated passes of each (median)")
    parser.add_argument("--points", type=int, default=4, help="points inverted per cell to record the calls")
    parser.add_argument("--max-calls", type=int, default=150, help="calls replayed per cell (evenly thinned)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    for flag in ("repeat", "points", "max_calls"):
        if getattr(args, flag) < 1:
            print(f"--{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    rows = []
    for cell, n in _cells(args.quick):
        rows.append(bench_cell(cell, n, args.points, args.repeat, args.max_calls))
        print(json.dumps(rows[-1]), file=sys.stderr)
    total = {k: sum(r["field_seconds"][k] for r in rows) for k in ("old", "new")}
    total_stats = {k: sum(r["interval_stats_seconds"][k] for r in rows) for k in ("old", "new")}
    summary = {
        "cells": rows,
        "field_ratio_new_over_old_all_cells": round(total["new"] / total["old"], 3),
        "interval_stats_ratio_new_over_old_all_cells": round(total_stats["new"] / total_stats["old"], 3),
        "torch": torch.__version__,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
