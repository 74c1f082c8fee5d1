"""Judge of the Theorem 3.1 experiment: per-``N`` summaries of the per-point checks, and the verdict.

Theorem 3.1 (docs/theory.md §5.1): ``||z~ - z|| <= (h M / 2L)(e^L - 1)``, ``||x^ - x|| <= kappa`` times that,
and ``||x^ - x|| <= (h M / 2L) e^L (e^L - 1)``; each point was checked by
:func:`theory.thm31.check_theorem31` when it was measured. Here the checks are summarised per field and
``N`` (holds fractions, tightness ``log(measured / bound)``, slope of the error against ``N``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulate.decide import decide_proportion
from simulate.experiments.common import Judged, Verdict

__all__ = ["BOUNDS", "summarize", "verdict", "judge"]

BOUNDS = ("noise", "reconstruction", "gronwall")

#: the failure rate the interval of :func:`verdict`'s key number is compared with (simulate.decide)
FAILURE_LEVEL = 0.1


def _slope(Ns: list[int], values: list[float]) -> float | None:
    v = np.asarray(values, dtype=float)
    ok = v > 0
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(Ns, dtype=float)[ok]), np.log(v[ok]), 1)[0])


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    """Per-``N`` medians, holds fractions and tightness of one field's record; slopes vs ``N``."""
    Ns = sorted(int(k) for k in rec["per_N"])
    out: dict[str, Any] = {"by_N": {}}
    med_noise = []
    per_point = []
    for N in Ns:
        rows = rec["per_N"][str(N)]["rows"]
        noise = np.array([r["noise_error"] for r in rows])
        recon = np.array([r["recon_error"] for r in rows])
        med_noise.append(float(np.median(noise)))
        per_point.append(noise)
        holds = {k: float(np.mean([bool(r["holds"][k]) for r in rows])) for k in rows[0]["holds"]}
        tight = {}
        for k in ("noise", "reconstruction", "gronwall", "noise_discrete"):
            vals = np.array([r["tightness"][k] for r in rows if r["tightness"][k] is not None], dtype=float)
            tight[k] = {"median": float(np.median(vals)), "min": float(vals.min()), "max": float(vals.max())} if vals.size else None
        med_bounds = {k: float(np.median([r["log_bounds"][k] for r in rows]))
                      for k in ("log_noise_error", "log_reconstruction_error", "log_gronwall_error")}
        out["by_N"][str(N)] = {
            "noise_error_median": float(np.median(noise)),
            "noise_error_max": float(noise.max()),
            "recon_error_median": float(np.median(recon)),
            "recon_error_max": float(recon.max()),
            "kappa_median": float(np.median([r["kappa"] for r in rows])),
            "amplification_median": float(np.median(recon / noise)),
            "holds_fraction": holds,
            "tightness": tight,
            "median_log_bounds": med_bounds,
        }
    out["points"] = len(rec["per_N"][str(Ns[0])]["rows"])
    out["failing_points"] = sum(1 for N in Ns for r in rec["per_N"][str(N)]["rows"]
                                if not all(bool(r["holds"][b]) for b in ("noise", "reconstruction", "gronwall", "amplification", "kappa")))
    out["slope"] = _slope(Ns, med_noise)
    pts = np.array(per_point)  # (len(N), B)
    slopes = [s for s in (_slope(Ns, pts[:, b].tolist()) for b in range(pts.shape[1])) if s is not None]
    out["slope_per_point_median"] = float(np.median(slopes)) if slopes else None
    for key in ("L", "L_path", "L_tube", "M"):
        arr = np.array(rec[key])
        out[f"{key}_median"] = float(np.median(arr))
        out[f"{key}_max"] = float(arr.max())
    out["L_tube_over_path_max"] = float(np.max(np.array(rec["L_tube"]) / np.array(rec["L_path"])))
    out["path_end_error"] = rec["path_end_error"]
    out["M_crosscheck_rel"] = rec["M_crosscheck_rel"]
    return out


def verdict(summaries: dict[str, dict[str, Any]]) -> Verdict:
    """``verified`` when bounds (1)-(3), ``kappa <= e^L`` and ``||x^ - x|| <= kappa ||z~ - z||`` hold at every point."""
    fails = []
    parts = []
    for kind, s in summaries.items():
        for N, d in s["by_N"].items():
            for b in ("noise", "reconstruction", "gronwall", "amplification", "kappa"):
                if d["holds_fraction"][b] < 1.0:
                    fails.append(f"{kind} N={N} {b}: holds at {d['holds_fraction'][b]:.0%}")
        tight = ", ".join(
            f"N={N}: " + "/".join(f"{d['tightness'][b]['median']:.1f}" for b in BOUNDS) for N, d in s["by_N"].items()
        )
        mins = "/".join(f"{max(d['tightness'][b]['max'] for d in s['by_N'].values()):.2f}" for b in BOUNDS)
        lpath = min(min(d["holds_fraction"][f"{b}_Lpath"] for b in BOUNDS) for d in s["by_N"].values())
        parts.append(
            f"{kind}: L median {s['L_median']:.2f} (path {s['L_path_median']:.2f}, tube/path max {s['L_tube_over_path_max']:.3f}), "
            f"M median {s['M_median']:.3g}; slope of log median ||z~-z|| vs log N = {s['slope']:.3f} "
            f"(per-point median {s['slope_per_point_median']:.3f}); median log(measured/bound) noise/recon(kappa)/gronwall: {tight}; "
            f"largest log(measured/bound) {mins} (<= 0 means holds); with L_path alone the bounds hold at >= {lpath:.0%}"
        )
    total = sum(len(s["by_N"]) for s in summaries.values())
    points = sum(s["points"] * len(s["by_N"]) for s in summaries.values())
    bad = sum(s["failing_points"] for s in summaries.values())
    rate = decide_proportion(bad, points, FAILURE_LEVEL)  # failure rate at the checked (point, N) pairs
    key = (f"bounds (1)-(3), kappa <= e^L and ||x^-x|| <= kappa ||z~-z|| hold at {points - bad}/{points} (point, N) checks "
           f"over {total} (field, N) cases: failure rate {rate.estimate:.2g}, 95% Clopper-Pearson upper end {rate.upper:.2g}"
           if not fails else f"{len(fails)} bound failures ({bad}/{points} (point, N) checks fail)")
    evidence = "Checked per point by theory.thm31.check_theorem31 (slack 1e-9); " + "; ".join(parts)
    if fails:
        return Verdict("refuted", key, evidence + "; failures: " + "; ".join(fails[:10]))
    return Verdict("verified", key, evidence)


def judge(opts: Any, records: dict[str, dict[str, Any]]) -> Judged:
    """The verdict and ``result.json`` numbers from the per-field records."""
    summaries = {kind: summarize(rec) for kind, rec in records.items()}
    numbers = {
        "per_field": summaries,
        "per_point": {k: {"L": r["L"], "L_path": r["L_path"], "L_tube": r["L_tube"], "M": r["M"],
                          "per_N": r["per_N"]} for k, r in records.items()},
        "seconds_per_field": {k: r["seconds"] for k, r in records.items()},
    }
    return Judged(verdict(summaries), numbers)
