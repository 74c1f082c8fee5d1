r"""Judge of the Theorem 4.2 experiment: does the L1 distance to the target decrease as ``m`` grows?

Theorem 4.2 (docs/theory.md §7): mixtures of Gaussian neighbours are dense; measured as the L1
distance ``int |p_m - p|`` (``LP(p_m, p) <= TV = L1 / 2``) over increasing ``m``.
:func:`classify_monotone`: ``verified`` if L1 decreases strictly with each ``m`` and is still falling at
the largest ``m`` (last step ratio ``L1(m_last) / L1(m_prev) <= STALL_RATIO``: density means L1 -> 0, so
a sequence levelling off at a positive floor is not it); ``holds in regime m <= ...`` if it decreases
up to some ``m`` and then stops decreasing; ``refuted`` otherwise (also when it levels off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simulate.experiments.common import Judged, Verdict
from simulate.experiments.thm42.options import Thm42Options

__all__ = ["STALL_RATIO", "is_monotone_decreasing", "classify_monotone", "judge"]

#: the largest last-step ratio ``L1(m_last) / L1(m_prev)`` that still counts as falling towards 0
STALL_RATIO = 0.8


def is_monotone_decreasing(values: Sequence[float]) -> bool:
    """True when every value is strictly below the previous one (and all are finite)."""
    v = np.asarray(list(values), dtype=float)
    return bool(v.size >= 2 and np.all(np.isfinite(v)) and np.all(np.diff(v) < 0))


def classify_monotone(ms: Sequence[int], values: Sequence[float]) -> str:
    """Verdict status for a distance sequence over increasing ``ms``."""
    v = np.asarray(list(values), dtype=float)
    if is_monotone_decreasing(v):
        return "verified" if v[-1] / v[-2] <= STALL_RATIO else "refuted"
    if v.size >= 2 and np.all(np.isfinite(v)):
        j = 0
        while j + 1 < v.size and v[j + 1] < v[j]:
            j += 1
        if j >= 1:
            return f"holds in regime m <= {int(list(ms)[j])} (the distance decreases up to there, then stops decreasing)"
    return "refuted"


def judge(opts: Thm42Options, rows: list[dict[str, Any]], floor: float) -> Judged:
    """The Theorem 4.2 verdict from the per-``m`` rows; ``numbers``: the sequences and their monotonicity."""
    ms = [r["m"] for r in rows]
    l1s = [r["l1"] for r in rows]
    sws = [r["sliced_w1"] for r in rows]
    L = float(opts.half_extent)
    status = classify_monotone(ms, l1s)
    key = "L1 = " + ", ".join(f"{v:.3f}" for v in l1s) + f" for m = {', '.join(str(m) for m in ms)}"
    tgt = (f"Gaussian ring (R = {opts.radius:g}, radial width {opts.width:g})" if opts.target == "ring"
           else f"uniform annulus (R = {opts.radius:g} +- {opts.annulus_half_width:g})")
    evidence = (
        f"Target: {tgt}. Approximants: k x k box tilings of [-{L:g}, {L:g}]^2 with target-mass weights and "
        f"sigma = {opts.sigma_factor:g} x side; L1 distance with the field's exact log_prob on a grid of spacing "
        f"<= {opts.eval_spacing:g}. L1 {'decreases strictly' if is_monotone_decreasing(l1s) else 'does not decrease strictly'}: "
        + "; ".join(f"m={r['m']} (effective {r['m_effective']}, sigma {r['sigma']:.3g}): L1 {r['l1']:.4f}, "
                    f"LP <= {r['lp_upper_bound']:.4f}, sliced W1 {r['sliced_w1']:.4f}" for r in rows)
        + f". L1 ratio last/first {l1s[-1] / l1s[0]:.3f}, last step {l1s[-1] / l1s[-2]:.3f} (still falling towards 0 "
        f"if <= {STALL_RATIO:g}, else levelling off at a positive floor). Sliced W1 (from {int(opts.n_samples)} samples; sampling floor {floor:.4f}) "
        + ("decreases strictly too." if is_monotone_decreasing(sws) else "does not decrease strictly (sampling noise near the floor).")
    )
    numbers = {
        "l1": l1s,
        "sliced_w1": sws,
        "sliced_w1_noise_floor": floor,
        "l1_monotone": is_monotone_decreasing(l1s),
        "sliced_w1_monotone": is_monotone_decreasing(sws),
        "l1_ratio_last_first": l1s[-1] / l1s[0],
    }
    return Judged(Verdict(status, key, evidence), numbers=numbers)
