"""Benchmark (not a test): Theorem 4.3's full curve against direct mpmath summation.

The curve is 200 values of n from 1 to 10^7 (Steiner log-volume at r*, chi-square log-tail, the
bounds). The peer is the direct 50-digit mpmath evaluation (all n + 1 Steiner terms, mpmath's
incomplete gamma), measured in the same run on the part of the grid it can finish (n <= N_PEER);
its cost on the full grid is extrapolated from its measured per-term cost (the direct sum is
linear in n). Run: ``python benchmarks/bench_theory_curves.py``.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from theory.highdim.curves import dimension_grid, theory_curves
from theory.highprec import log_chi2_sf_mp, log_steiner_volume_mp
from theory.highdim.thm43 import instability_bounds

N_PEER = 3000
PARAMS = dict(m=10, sigma=0.05, side=0.05, tau=1.0)


def _time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    grid = dimension_grid(200, 1e7)
    t_curve = _time(lambda: theory_curves(grid, **PARAMS))

    small = grid[grid <= N_PEER]
    t_ours_small = _time(lambda: instability_bounds(small, c=1.1 * small, **PARAMS))
    r_small = instability_bounds(small, c=1.1 * small, **PARAMS)["r_star"]
    t0 = time.perf_counter()
    worst = 0.0
    ours = instability_bounds(small, c=1.1 * small, **PARAMS)
    for n, r in zip(small, r_small):
        ref_s = float(log_steiner_volume_mp(int(n), PARAMS["side"], float(r)))
        ref_c = float(log_chi2_sf_mp(int(n), 1.1 * float(n)))
        i = int(np.flatnonzero(small == n)[0])
        worst = max(worst, abs(ours["log_steiner_volume"][i] - ref_s) / max(1.0, abs(ref_s)),
                    abs(ours["log_chi2_sf"][i] - ref_c) / max(1.0, abs(ref_c)))
    t_peer_small = time.perf_counter() - t0
    per_term = t_peer_small / float(np.sum(small + 1))
    t_peer_full_est = per_term * float(np.sum(grid + 1))

    result = {
        "curve_points": int(grid.size),
        "n_max": int(grid[-1]),
        "curve_seconds": round(t_curve, 4),
        "goal_curve_seconds": 0.5,
        "peer_subset": f"{small.size} values of n <= {N_PEER}",
        "ours_subset_seconds": round(t_ours_small, 5),
        "mpmath_subset_seconds": round(t_peer_small, 3),
        "speedup_on_subset": round(t_peer_small / t_ours_small, 1),
        "mpmath_full_curve_seconds_extrapolated": round(t_peer_full_est, 1),
        "speedup_full_curve_extrapolated": round(t_peer_full_est / t_curve, 1),
        "max_rel_error_vs_mpmath_on_subset": worst,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
