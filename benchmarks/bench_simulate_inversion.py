"""Benchmark (not a test): batched exact inversion ``F`` (x -> noise, t: 1 -> 0) with our dopri5.

Our solver is :func:`simulate.solvers.dopri5`: one batched call per Runge--Kutta stage, but every
row keeps its own step size and accept/reject decision and finished rows are no longer passed to
the field. Two peers are measured in the same run, on the same field, the same batch and the same
``rtol`` / ``atol``:

* **scipy (the paper's method)**: ``scipy.integrate.solve_ivp(method="RK45")`` one point at a
  time, the velocity called on one point per call with the numpy <-> torch conversion a user
  would write (``field.velocity(torch.from_numpy(y)[None], float(t))[0].numpy()``). It is timed
  on a subset of the batch (default 32 of 256 points: every 8th point, so the three difficulty
  classes keep their proportions) and scaled per point to the full batch.
* **torchdiffeq**: ``torchdiffeq.odeint(method="dopri5")`` on the *same batched field*; it uses
  one step size for the whole batch, so every row pays for the hardest row. Two variants:
  ``torchdiffeq`` with its default error norm (RMS over the whole batch tensor: a hard row's
  error is diluted by the easy rows, so it is *less* accurate per row than ours at the same
  rtol/atol) and ``torchdiffeq_rownorm`` with ``norm = max over rows of the per-row RMS``, the
  same per-row criterion as ours and scipy's (accuracy-matched). ``step_t=[0]`` makes its last
  step land on t = 0 (by default it steps past the end time and interpolates back, which would
  evaluate the field at t < 0, outside its domain).

How accuracy is matched, two ways:

1. *same tolerance*: all methods use the same rtol/atol with the same per-row RMS error norm
   (except plain torchdiffeq, see above); each result is compared with a tight reference (our
   dopri5 at ``rtol=1e-12, atol=1e-14``) and the max / median error of each is reported
   (``ratios``). At the same tolerance a batch-wide step (torchdiffeq) is *more* accurate on the
   easy rows, since they ride along with the hardest row's small steps;
2. *same error* (``error_matched``): ours is rerun at ``rtol`` and ``atol`` times 0.1, 0.01
   (``--match-ladder``) until its max error over the batch is no larger than the peer's; the
   ratio is the peer's time over the time of the first such run (vs scipy: max error over the
   rows scipy solved). "matched": false says the ladder did not get there.

The reference itself is cross-checked with scipy's DOP853 (same tight tolerance, an independent
8th-order code) on the median-difficulty row of each class (``--ref-check hardest``: the hardest
rows; slower on the box field).

The batch mixes difficulties: a third of the points lie deep inside components, a third between
two components (off the data support: the posterior switches sharply near t = 1, many steps), a
third far in the tails. A control batch of deep points only (uniform difficulty) shows that the
gain over torchdiffeq comes from the difficulty spread.

All timings are wall clock of one run each (``--repeat k``: min of k, the same for every
method) with ``torch.set_num_threads(--threads)`` (default 1: the machine is shared; every
method gets the same threads). Run: ``python benchmarks/bench_simulate_inversion.py [--quick]
[--out FILE]``; progress goes to stderr, the JSON summary to stdout. Default mode: about 2
minutes of CPU (3-4 minutes wall on a loaded 2-core machine); ``--quick``: about 20 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from simulate.fields import BoxMixture, GaussianMixture
from simulate.solvers import dopri5

try:
    from torchdiffeq import odeint
except ImportError:  # pragma: no cover - torchdiffeq is the "bench" extra
    odeint = None

GOAL_VS_SCIPY = 100.0
GOAL_VS_TORCHDIFFEQ = 1.5
REF_RTOL, REF_ATOL = 1e-12, 1e-14  # --quick: 1e-10, 1e-12
CLASSES = ("deep", "between", "tail")


# ------------------------------------------------------------------------------------------
# fields and batches
# ------------------------------------------------------------------------------------------


def _centers(n: int, m: int, spread: float, seed: int) -> torch.Tensor:
    """``m`` random centres with pairwise distances ~ ``spread * sqrt(2)`` whatever ``n``."""
    g = torch.Generator().manual_seed(seed)
    return spread * torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)


CASES: dict[str, dict[str, Any]] = {
    # 2-D box mixture: 8 boxes of side 0.3, kernel sigma 0.05
    "box2d": dict(kind="box", n=2, m=8, spread=3.0, side=0.3, sigma=0.05, tail_r=4.0),
    # 64-D Gaussian mixture: 8 isotropic components of std 0.1
    "gmm64d": dict(kind="gmm", n=64, m=8, spread=4.0, std=0.1, tail_r=6.0),
}


def make_field(spec: dict[str, Any]) -> tuple[Any, torch.Tensor, float]:
    """``(field, centres, inner scale)`` of one case."""
    c = _centers(spec["n"], spec["m"], spec["spread"], seed=1)
    w = torch.full((spec["m"],), 1.0 / spec["m"], dtype=torch.float64)
    if spec["kind"] == "box":
        half = spec["side"] / 2
        return BoxMixture(c - half, c + half, w, spec["sigma"]), c, spec["sigma"] / 2
    return GaussianMixture(c, spec["std"], w), c, spec["std"] / 2


def make_batch(c: torch.Tensor, batch: int, inner: float, tail_r: float, seed: int = 3):
    """Points of three difficulties: deep in a component, between two, far in the tail."""
    g = torch.Generator().manual_seed(seed)
    m, n = c.shape
    k = batch // 3
    r = batch - 2 * k
    deep = c[torch.randint(m, (k,), generator=g)] + inner * torch.randn(
        k, n, generator=g, dtype=torch.float64
    )
    i1 = torch.randint(m, (k,), generator=g)
    i2 = (i1 + 1 + torch.randint(m - 1, (k,), generator=g)) % m
    lam = 0.3 + 0.4 * torch.rand(k, 1, generator=g, dtype=torch.float64)
    between = lam * c[i1] + (1 - lam) * c[i2]
    d = torch.randn(r, n, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    tail = c[torch.randint(m, (r,), generator=g)] + tail_r * d
    labels = np.array(["deep"] * k + ["between"] * k + ["tail"] * r)
    return torch.cat([deep, between, tail]), labels


# ------------------------------------------------------------------------------------------
# methods
# ------------------------------------------------------------------------------------------


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Min wall time of ``repeat`` runs (the same policy for every method) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def run_ours(field, x, rtol, atol, repeat):
    sec, res = _best_of(lambda: dopri5(field, x, 1.0, 0.0, rtol=rtol, atol=atol), repeat)
    return sec, res.x, {"batched_calls": res.nfe, "row_evals": res.row_evals,
                        "attempts_per_row": (res.n_accepted + res.n_rejected).numpy()}


class _Counted:
    """``func(t, y)`` for torchdiffeq that counts calls and rows."""

    def __init__(self, field):
        self.field, self.calls, self.rows = field, 0, 0

    def __call__(self, t, y):
        self.calls += 1
        self.rows += y.shape[0]
        return self.field.velocity(y, t)


def _rowmax_rms(tensor: torch.Tensor) -> torch.Tensor:
    """Max over rows of the per-row RMS: the per-row error control of ours and scipy's."""
    return tensor.pow(2).mean(dim=1).sqrt().max()


def run_torchdiffeq(field, x, rtol, atol, repeat, rownorm: bool):
    ts = torch.tensor([1.0, 0.0], dtype=torch.float64)
    options: dict[str, Any] = {"step_t": torch.tensor([0.0], dtype=torch.float64)}
    if rownorm:
        options["norm"] = _rowmax_rms
    box = {}

    def go():
        func = _Counted(field)
        out = odeint(func, x, ts, method="dopri5", rtol=rtol, atol=atol, options=dict(options))
        box["func"] = func
        return out[-1]

    sec, z = _best_of(go, repeat)
    func = box["func"]
    return sec, z, {"batched_calls": func.calls, "row_evals": func.rows}


def run_scipy(field, x, rows, rtol, atol):
    """solve_ivp RK45 point by point, as a user would call it (numpy <-> torch per call)."""

    def fun(t, y):
        return field.velocity(torch.from_numpy(y)[None], float(t))[0].numpy()

    z = np.empty((len(rows), x.shape[1]))
    nfev = 0
    per_point = []
    t0 = time.perf_counter()
    for j, i in enumerate(rows):
        tp = time.perf_counter()
        sol = solve_ivp(fun, (1.0, 0.0), x[i].numpy(), method="RK45", rtol=rtol, atol=atol)
        per_point.append(time.perf_counter() - tp)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed on row {i}: {sol.message}")
        z[j] = sol.y[:, -1]
        nfev += sol.nfev
    return time.perf_counter() - t0, torch.from_numpy(z), nfev, per_point


def dop853_check(field, x, rows, z_ref, rtol, atol):
    def fun(t, y):
        return field.velocity(torch.from_numpy(y)[None], float(t))[0].numpy()

    diffs = []
    t0 = time.perf_counter()
    for i in rows:
        sol = solve_ivp(fun, (1.0, 0.0), x[i].numpy(), method="DOP853", rtol=rtol, atol=atol)
        diffs.append(float(np.abs(sol.y[:, -1] - z_ref[i].numpy()).max()))
    return {"rows": [int(i) for i in rows], "max_abs_diff_vs_reference": max(diffs),
            "per_row": [float(f"{d:.3e}") for d in diffs],
            "seconds": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------


def _err(z, z_ref, labels=None) -> dict[str, Any]:
    e = (z - z_ref).abs().amax(dim=1).numpy()  # per-row max-abs coordinate error
    out = {"max_abs_err": float(f"{e.max():.3e}"), "median_abs_err": float(f"{np.median(e):.3e}")}
    if labels is not None:
        out["max_abs_err_by_class"] = {
            c: float(f"{e[labels == c].max():.3e}") for c in CLASSES if (labels == c).any()
        }
    return out


def _r(v: float, nd: int = 3) -> float:
    return float(f"{v:.{nd}g}")


def bench_case(name, spec, args) -> dict[str, Any]:
    field, c, inner = make_field(spec)
    x, labels = make_batch(c, args.batch, inner, spec["tail_r"])
    rtol, atol = args.rtol, args.atol
    log = lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    # tight reference (ours, rtol 1e-12) ------------------------------------------------
    t0 = time.perf_counter()
    ref = dopri5(field, x, 1.0, 0.0, rtol=args.ref_rtol, atol=args.ref_atol)
    z_ref = ref.x
    ref_sec = time.perf_counter() - t0
    log(f"reference {ref_sec:.1f}s")

    # ours ------------------------------------------------------------------------------
    ours_sec, z_ours, ours_info = run_ours(field, x, rtol, atol, args.repeat)
    attempts = ours_info.pop("attempts_per_row")
    log(f"ours {ours_sec:.2f}s")
    difficulty = {
        c_: {"rows": int((labels == c_).sum()),
             "step_attempts_min_median_max": [int(attempts[labels == c_].min()),
                                              float(np.median(attempts[labels == c_])),
                                              int(attempts[labels == c_].max())]}
        for c_ in CLASSES
    }
    ours = {"seconds": _r(ours_sec), **ours_info, **_err(z_ours, z_ref, labels)}

    # torchdiffeq -----------------------------------------------------------------------
    tdq: dict[str, Any] = {}
    if odeint is not None:
        for key, rownorm in (("torchdiffeq", False), ("torchdiffeq_rownorm", True)):
            sec, z, info = run_torchdiffeq(field, x, rtol, atol, args.repeat, rownorm)
            tdq[key] = {"seconds": _r(sec), **info, **_err(z, z_ref, labels)}
            log(f"{key} {sec:.2f}s")

    # scipy, point by point, on a subset -------------------------------------------------
    stride = max(1, math.ceil(args.batch / args.scipy_points))
    rows = list(range(0, args.batch, stride))
    sp_sec, z_sp, nfev, per_point = run_scipy(field, x, rows, rtol, atol)
    log(f"scipy {sp_sec:.1f}s on {len(rows)} points")
    per_pt = sp_sec / len(rows)
    scipy = {
        "points_timed": len(rows),
        "subset": f"every {stride}-th row of the batch (classes in proportion)",
        "seconds_subset": _r(sp_sec),
        "seconds_per_point": _r(per_pt),
        "seconds_est_full_batch": _r(per_pt * args.batch),
        "velocity_calls_subset": nfev,
        "row_evals_est_full_batch": int(round(nfev / len(rows) * args.batch)),
        **_err(z_sp, z_ref[rows], labels[rows]),
    }
    ours_rows_subset = _err(z_ours[rows], z_ref[rows])

    # cross-check of the reference with DOP853 (hardest row of each class) ---------------
    pick = np.argmax if args.ref_check == "hardest" else (lambda a: np.argsort(a, kind="stable")[len(a) // 2])
    check_rows = [int(np.flatnonzero(labels == c_)[pick(attempts[labels == c_])]) for c_ in CLASSES]
    if args.quick:
        check_rows = check_rows[:1]
    ref_check = dop853_check(field, x, check_rows, z_ref, args.ref_rtol, args.ref_atol)
    log(f"dop853 check {ref_check['seconds']}s")

    # control: uniform-difficulty batch (deep points only) vs torchdiffeq -----------------
    control = None
    if odeint is not None:
        deep = x[torch.from_numpy(labels == "deep")]
        c_ref = dopri5(field, deep, 1.0, 0.0, rtol=args.ref_rtol, atol=args.ref_atol).x
        o_sec, o_z, o_info = run_ours(field, deep, rtol, atol, args.repeat)
        o_info.pop("attempts_per_row")
        t_sec, t_z, t_info = run_torchdiffeq(field, deep, rtol, atol, args.repeat, rownorm=True)
        control = {
            "rows": int(deep.shape[0]),
            "ours": {"seconds": _r(o_sec), **o_info, **_err(o_z, c_ref)},
            "torchdiffeq_rownorm": {"seconds": _r(t_sec), **t_info, **_err(t_z, c_ref)},
            "time_ratio_torchdiffeq_rownorm_over_ours": _r(t_sec / o_sec),
        }

    # error-matched comparison: ours at tighter tolerances until its max error is no larger
    # than the peer's (the peers' own tolerance stays rtol/atol) -------------------------
    ladder = [(1.0, ours_sec, ours["max_abs_err"], float((z_ours[rows] - z_ref[rows]).abs().max()))]
    target_all = min([v["max_abs_err"] for v in tdq.values()], default=math.inf)
    for fac in args.match_ladder[1:]:
        if ladder[-1][2] <= target_all and ladder[-1][3] <= scipy["max_abs_err"]:
            break
        sec, z, _ = run_ours(field, x, rtol * fac, atol * fac, args.repeat)
        ladder.append((fac, sec, float(f"{(z - z_ref).abs().max():.3e}"),
                       float((z[rows] - z_ref[rows]).abs().max())))
        log(f"ours at rtol*{fac:g}: {sec:.2f}s, max err {ladder[-1][2]:.3g}")

    def matched(peer_err: float, peer_sec: float, subset: bool) -> dict[str, Any]:
        for fac, sec, err_all, err_sub in ladder:
            err = err_sub if subset else err_all
            if err <= peer_err:
                return {"matched": True, "ours_rtol": rtol * fac, "ours_atol": atol * fac,
                        "ours_seconds": _r(sec), "ours_max_abs_err": float(f"{err:.3e}"),
                        "peer_max_abs_err": peer_err, "peer_over_ours_time": _r(peer_sec / sec)}
        fac, sec, err_all, err_sub = ladder[-1]
        return {"matched": False, "tightest_ours_rtol": rtol * fac,
                "ours_max_abs_err": float(f"{(err_sub if subset else err_all):.3e}"),
                "peer_max_abs_err": peer_err}

    error_matched = {"ladder": [{"rtol": rtol * f, "seconds": _r(s_), "max_abs_err": e}
                                for f, s_, e, _ in ladder]}
    error_matched["vs_scipy_rk45_per_point"] = matched(
        scipy["max_abs_err"], scipy["seconds_est_full_batch"], subset=True)
    for key, v in tdq.items():
        error_matched[f"vs_{key}"] = matched(v["max_abs_err"], v["seconds"], subset=False)

    ratios = {"scipy_over_ours_time": _r(scipy["seconds_est_full_batch"] / ours_sec),
              "scipy_over_ours_row_evals": _r(scipy["row_evals_est_full_batch"] / ours["row_evals"])}
    for key, v in tdq.items():
        ratios[f"{key}_over_ours_time"] = _r(v["seconds"] / ours_sec)
        ratios[f"{key}_over_ours_row_evals"] = _r(v["row_evals"] / ours["row_evals"])
    goals = {}
    for key, goal, same_tol in [("scipy_rk45_per_point", GOAL_VS_SCIPY, ratios["scipy_over_ours_time"])] + [
            (k, GOAL_VS_TORCHDIFFEQ, ratios[f"{k}_over_ours_time"]) for k in tdq]:
        em = error_matched[f"vs_{key}"]
        em_ratio = em.get("peer_over_ours_time")
        goals[f"vs_{key}"] = {
            "goal": goal,
            "same_tolerance_ratio": same_tol, "met_same_tolerance": same_tol >= goal,
            "error_matched_ratio": em_ratio,
            "met_error_matched": em_ratio is not None and em_ratio >= goal,
        }

    return {
        "field": {k: v for k, v in spec.items()},
        "batch": args.batch,
        "difficulty": difficulty,
        "reference": {"method": f"ours dopri5 rtol={args.ref_rtol:g} atol={args.ref_atol:g}",
                      "seconds": _r(ref_sec), "batched_calls": ref.nfe, "row_evals": ref.row_evals,
                      "dop853_check": ref_check},
        "ours": ours,
        **tdq,
        "scipy_rk45_per_point": {**scipy, "ours_err_on_same_rows": ours_rows_subset},
        "ratios": ratios,
        "error_matched": error_matched,
        "goals": goals,
        "control_uniform_difficulty": control,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small batch, seconds (smoke run)")
    p.add_argument("--out", help="also write the JSON summary to this file")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256; quick 12)")
    p.add_argument("--scipy-points", type=int, default=None,
                   help="points timed for the scipy peer (default 32; quick 3)")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--repeat", type=int, default=1, help="timing repeats, min taken (default 1)")
    p.add_argument("--match-ladder", default="1,0.1,0.01",
                   help="tolerance factors tried for ours in the error-matched comparison")
    p.add_argument("--ref-check", choices=("median", "hardest"), default="median",
                   help="rows of each class checked against DOP853 (median or hardest difficulty)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = p.parse_args(argv)
    args.batch = args.batch or (12 if args.quick else 256)
    args.scipy_points = min(args.batch, args.scipy_points or (3 if args.quick else 32))
    args.ref_rtol, args.ref_atol = (1e-10, 1e-12) if args.quick else (REF_RTOL, REF_ATOL)
    args.match_ladder = [float(v) for v in args.match_ladder.split(",")]
    if args.quick:
        args.match_ladder = args.match_ladder[:2]
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    cases = {}
    for name in args.cases.split(","):
        cases[name] = bench_case(name, CASES[name], args)
    summary = {
        "benchmark": "simulate_inversion",
        "mode": "quick" if args.quick else "default",
        "what": "exact inversion F (t: 1 -> 0) of a batch with mixed difficulty",
        "rtol": args.rtol,
        "atol": args.atol,
        "threads": args.threads,
        "timing": f"wall clock, min of {args.repeat} run(s) for ours and torchdiffeq; scipy one pass",
        "accuracy_matching": (
            "same rtol/atol and per-row RMS error norm for ours, scipy RK45 and torchdiffeq_rownorm "
            "(plain torchdiffeq: RMS over the whole batch); every result checked against ours at "
            f"rtol={args.ref_rtol:g}, atol={args.ref_atol:g} (itself checked with scipy DOP853 at the same "
            "tolerance); errors are max-abs coordinate errors of z = F(x)"
        ),
        "cases": cases,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count()},
        "total_seconds": _r(time.perf_counter() - t_start),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return summary


if __name__ == "__main__":
    main()
