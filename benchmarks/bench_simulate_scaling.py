"""Benchmark (not a test): cost and peak memory of the mixture fields as the dimension n grows.

For a box mixture (:class:`simulate.fields.BoxMixture`) and a Gaussian mixture
(:class:`simulate.fields.GaussianMixture`) with ``m`` components and a batch of ``B`` points it
measures, as ``n`` grows (default ``n = 256, 1024, 4096, 16384, 65536``, ``B = 256``, ``m = 4``):

* one velocity evaluation ``field.velocity(x, t=0.5)`` at points ``x = (x1 + x0) / 2`` with
  ``x1`` near the components' centres and ``x0 ~ N(0, I)`` (a realistic mix of the box field's
  regimes);
* one RK4 generation ``simulate.solvers.rk4(field, z, time_grid(steps))`` from ``z ~ N(0, I)``,
  ``t: 0 -> 1``. ``steps = 20`` where 20 steps cost at most ``E`` element-evaluations
  (``4 * steps * n * m * B <= E``; ``E = 2**26`` for the Gaussian mixture, ``2**24`` for the
  box mixture, whose evaluation costs ~4-10x more per element), else the largest number of
  steps that fits, at least 1: 20 steps everywhere would take ~20 minutes. Time per step and per
  field evaluation are reported; the RK4 state (x, k1..k4) does not depend on the number of
  steps, so neither does its memory. The box mixture's RK4 run at ``n = 65536`` (one step alone
  is ~1 minute) is left out unless ``--rk4-max-n-box 65536``; ``--rk4-steps 20`` forces 20 steps.

plus an ``m`` sweep (``m = 4, 8, 16`` at ``n = 4096``) and velocity runs at ``n = 4096`` and
the largest ``n`` under a small memory budget (``max_memory_bytes = 64 MiB`` instead of the
default 512 MiB; at ``n = 65536`` the box field then cuts the batch into single rows and the
components into pairs).

Cost per element: ``seconds / (n * m * B)`` (the field's work is one (row, component,
coordinate) term per element); linear scaling means a flat ns/element across sizes, and the
ratios of ns/element between consecutive sizes are reported (1.0 = perfectly linear).

Peak memory: torch has no CPU allocator statistics (``torch.cpu`` exposes none and ``tracemalloc``
does not see torch's allocations), so each (field, n, m, op) runs in a **fresh subprocess** and
reports the ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` high-water mark after the operation
minus the resident set size just before it (read from ``/proc/self/statm``). Inputs are built
without large temporaries, so the high-water mark before the operation equals the resident size
then (both are reported; ``hwm_before_mib`` > ``rss_before_mib`` would mean an underestimate).
The delta includes the field's chunk intermediates (bounded by ``max_memory_bytes``) plus
O(B n) input/output tensors (``state_mib`` = B n 8 bytes for one (B, n) float64 tensor), which
the budget does not cover. Reported per run: ``under_budget`` (``peak_delta <= budget``),
``over_budget_in_state_units`` (``max(0, peak_delta - budget) / state``), and the check
``within_budget_plus_io``: ``peak_delta <= budget + k * state`` with k = 4 (velocity: outputs of
the chunks, their concatenation, the velocity) and k = 10 (RK4: x, k1..k4, stage inputs, sums).

Timing: wall clock, ``torch.set_num_threads(--threads)`` (default 1, the machine is shared);
min over repeats where one evaluation is short (< 0.5 s), one run otherwise.
Run: ``python benchmarks/bench_simulate_scaling.py [--quick] [--out FILE]`` (default mode about
2-3 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
IO_FACTOR = {"velocity": 4, "rk4": 10}


# ------------------------------------------------------------------------------------------
# worker (one measurement in a fresh process)
# ------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from simulate.fields import BoxMixture, GaussianMixture
    from simulate.solvers import rk4, time_grid

    torch.set_num_threads(spec["threads"])
    n, m, B = spec["n"], spec["m"], spec["batch"]
    budget = spec["budget"]
    g = torch.Generator().manual_seed(0)
    c = 2.0 * torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5
    w = torch.full((m,), 1.0 / m, dtype=torch.float64)
    if spec["field"] == "box":
        field = BoxMixture(c - 0.25, c + 0.25, w, 0.05, max_memory_bytes=budget)
    else:
        field = GaussianMixture(c, 0.1, w, max_memory_bytes=budget)

    # inputs built in place, row block by row block (no (B, n) temporaries)
    x = torch.randn(B, n, generator=g, dtype=torch.float64)
    if spec["op"] == "velocity":
        idx = torch.randint(m, (B,), generator=g)
        for r0 in range(0, B, 8):
            blk = x[r0 : r0 + 8]
            blk.mul_(0.5).add_(c[idx[r0 : r0 + 8]] + 0.1 * torch.rand(blk.shape, generator=g, dtype=torch.float64), alpha=0.5)
    field.velocity(x[:2], 0.5)  # warm-up on two rows (kernels, thread pool), tiny memory

    if spec["op"] == "velocity":
        def op():
            return field.velocity(x, 0.5)
        evals = 1
    else:
        ts = time_grid(spec["steps"], 0.0, 1.0)

        def op():
            return rk4(field, x, ts).x
        evals = 4 * spec["steps"]

    rss0, hwm0 = _rss_bytes(), _maxrss_bytes()
    t0 = time.perf_counter()
    out = op()
    sec = time.perf_counter() - t0
    hwm1 = _maxrss_bytes()
    finite = bool(torch.isfinite(out).all())
    del out
    times = [sec]
    # more repeats only where cheap (timing only; the peak was taken on the first run)
    while sum(times) < spec["min_total_s"] and len(times) < spec["max_repeat"] and sec < 0.5:
        t0 = time.perf_counter()
        op()
        times.append(time.perf_counter() - t0)
    best = min(times)
    elements = n * m * B
    rows, comps = field._plan(B)  # the chunking the field chose (private, read only)
    return {
        "field": spec["field"], "op": spec["op"], "n": n, "m": m, "batch": B,
        "steps": spec.get("steps"), "field_evals": evals,
        "seconds": float(f"{best:.4g}"), "repeats": len(times),
        "ns_per_element_eval": float(f"{best / evals / elements * 1e9:.4g}"),
        "budget_mib": budget / MIB,
        "chunk": {"rows": rows, "components": comps,
                  "chunks_per_eval": -(-B // rows) * -(-m // comps)},
        "rss_before_mib": round(rss0 / MIB, 1), "hwm_before_mib": round(hwm0 / MIB, 1),
        "peak_delta_mib": round((hwm1 - rss0) / MIB, 1),
        "state_mib": round(B * n * 8 / MIB, 2),
        "output_finite": finite,
    }


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed for {spec}:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    k = IO_FACTOR[res["op"]]
    res["within_budget_plus_io"] = res["peak_delta_mib"] <= res["budget_mib"] + k * res["state_mib"]
    res["io_allowance_mib"] = round(k * res["state_mib"], 1)
    res["under_budget"] = res["peak_delta_mib"] <= res["budget_mib"]
    res["over_budget_in_state_units"] = round(
        max(0.0, res["peak_delta_mib"] - res["budget_mib"]) / res["state_mib"], 2)
    print(f"  {res['field']:>3} {res['op']:>8} n={res['n']:>6} m={res['m']:>2} "
          f"budget={res['budget_mib']:.0f}MiB: {res['seconds']:.3g}s "
          f"{res['ns_per_element_eval']:.3g} ns/elem, peak +{res['peak_delta_mib']} MiB "
          f"(process {time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    return res


def _linearity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ns = [r["ns_per_element_eval"] for r in rows]
    return {
        "n": [r["n"] for r in rows],
        "ns_per_element_eval": ns,
        "ratio_to_previous_size": [None] + [float(f"{b / a:.3g}") for a, b in zip(ns, ns[1:])],
        "ratio_largest_to_smallest": float(f"{ns[-1] / ns[0]:.3g}"),
        "ratio_largest_to_median": float(f"{ns[-1] / sorted(ns)[len(ns) // 2]:.3g}"),
        "seconds": [r["seconds"] for r in rows],
        "peak_delta_mib": [r["peak_delta_mib"] for r in rows],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, seconds (smoke run)")
    p.add_argument("--out", help="also write the JSON summary to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sizes", help="comma list of n (default 256,1024,4096,16384,65536)")
    p.add_argument("--batch", type=int, default=None, help="points (default 256; quick 32)")
    p.add_argument("--m", type=int, default=4, help="components in the n sweep (default 4)")
    p.add_argument("--m-sweep", default=None, help="comma list of m at --m-sweep-n (default 8,16)")
    p.add_argument("--m-sweep-n", type=int, default=None, help="n of the m sweep (default 4096)")
    p.add_argument("--fields", default="gmm,box")
    p.add_argument("--rk4-steps", type=int, default=None,
                   help="force this many RK4 steps at every n (default: 20 within the element budget)")
    p.add_argument("--rk4-max-n-box", type=int, default=16384,
                   help="largest n of the box mixture's RK4 run (default 16384)")
    p.add_argument("--small-budget-mib", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}

    q = args.quick
    sizes = [int(s) for s in (args.sizes or ("256,1024" if q else "256,1024,4096,16384,65536")).split(",")]
    batch = args.batch or (32 if q else 256)
    m_sweep = [int(s) for s in (args.m_sweep or ("8" if q else "8,16")).split(",")]
    m_sweep_n = args.m_sweep_n or (256 if q else 4096)
    elem_budget = {"gmm": 2**26, "box": 2**24}

    def rk4_steps(f: str, n: int) -> int:
        if args.rk4_steps:
            return args.rk4_steps
        return max(1, min(20, elem_budget[f] // (4 * n * args.m * batch)))
    fields = args.fields.split(",")
    default_budget = 512 * MIB
    small_budget = args.small_budget_mib * MIB
    base = dict(batch=batch, threads=args.threads, min_total_s=0.3 if q else 1.0, max_repeat=5)

    t_start = time.perf_counter()
    out_fields: dict[str, Any] = {}
    for f in fields:
        print(f"[{f}]", file=sys.stderr, flush=True)
        vel = [run_one({**base, "field": f, "op": "velocity", "n": n, "m": args.m, "budget": default_budget})
               for n in sizes]
        gen = [run_one({**base, "field": f, "op": "rk4", "n": n, "m": args.m, "budget": default_budget,
                        "steps": rk4_steps(f, n)})
               for n in sizes if f != "box" or n <= args.rk4_max_n_box]
        msw = [r for r in vel if r["n"] == m_sweep_n and r["m"] == args.m]
        msw += [run_one({**base, "field": f, "op": "velocity", "n": m_sweep_n, "m": mm, "budget": default_budget})
                for mm in m_sweep]
        small_ns = sorted({sizes[len(sizes) // 2], sizes[-1]})
        small = [run_one({**base, "field": f, "op": "velocity", "n": n, "m": args.m, "budget": small_budget})
                 for n in small_ns]
        same_n_default = {r["n"]: r for r in vel}
        for r in small:
            d = same_n_default[r["n"]]
            r["slowdown_vs_default_budget"] = float(f"{r['seconds'] / d['seconds']:.3g}")
            r["peak_delta_default_budget_mib"] = d["peak_delta_mib"]
        ms = [r["ns_per_element_eval"] for r in msw]
        out_fields[f] = {
            "velocity_vs_n": _linearity(vel),
            "rk4_vs_n": {**_linearity(gen), "steps": [r["steps"] for r in gen],
                         "seconds_per_step": [float(f"{r['seconds'] / r['steps']:.4g}") for r in gen],
                         "eval_cost_in_rk4_over_single_eval": [
                             float(f"{g_['ns_per_element_eval'] / v['ns_per_element_eval']:.3g}")
                             for g_, v in zip(gen, vel)],
                         "left_out_n": [n for n in sizes if n not in [r["n"] for r in gen]]},
            "velocity_vs_m": {"n": m_sweep_n, "m": [r["m"] for r in msw], "ns_per_element_eval": ms,
                              "ratio_to_first": [float(f"{v / ms[0]:.3g}") for v in ms],
                              "seconds": [r["seconds"] for r in msw]},
            "memory": {
                "method": "getrusage ru_maxrss after the op minus RSS (/proc/self/statm) before it, fresh subprocess per run",
                "all_within_budget_plus_io": all(r["within_budget_plus_io"] for r in vel + gen + msw + small),
                "all_under_budget": all(r["under_budget"] for r in vel + gen + msw + small),
                "over_budget_runs": [
                    {k: r[k] for k in ("op", "n", "m", "budget_mib", "peak_delta_mib", "state_mib",
                                       "over_budget_in_state_units")}
                    for r in vel + gen + msw + small if not r["under_budget"]],
                "small_budget_runs": small,
            },
            "runs": vel + gen + msw[1:],
        }
    summary = {
        "benchmark": "simulate_scaling",
        "mode": "quick" if q else "default",
        "batch": batch, "m": args.m, "sizes": sizes, "threads": args.threads,
        "default_budget_mib": default_budget / MIB, "small_budget_mib": args.small_budget_mib,
        "rk4_steps_rule": ("forced" if args.rk4_steps else
                           "20 if 4*20*n*m*B <= E else max(1, E // (4*n*m*B)); E = 2**26 (gmm), 2**24 (box)"),
        "cost_unit": "ns per (row x component x coordinate) element per field evaluation",
        "fields": out_fields,
        "environment": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return summary


if __name__ == "__main__":
    main()
