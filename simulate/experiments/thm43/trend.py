r"""Three-outcome trend classifier for the claims of Theorem 4.3 (``p1 -> 0``, ``p2 -> 0``, ``P_inst -> 1``).

A claim is about ``n -> inf``; a run sees a finite grid ``n_1 < ... < n_K``. Per cell the sequence of
proportions (with 95% Clopper-Pearson intervals) is classified by the one decision rule of
:mod:`simulate.decide` applied at ``n_K`` (docs/theory.md §11.9):

* ``"holds"``: at ``n_K`` the whole interval of the quantity that should vanish (``q = p`` for ``-> 0``,
  ``q = 1 - p`` for ``-> 1``) lies below ``level`` (not its estimate), and no later estimate exceeds an
  earlier interval's upper end;
* ``"fails"``: at ``n_K`` the whole interval of ``q`` is above ``level`` *and* nothing moves toward the
  target: ``q`` does not fall over the second half of the grid (neither significantly, nor as a
  monotone run of estimates), and the optional *driver* (the mean whose threshold decides the
  proportion, e.g. the mean of ``(1/n) log Lambda`` against ``log tau`` for ``P_inst``) is on the
  wrong side of its threshold at ``n_K`` and not approaching it (a slope toward it whose 95% interval
  excludes 0, :func:`simulate.decide.decide_slope`, over the last step of ``n`` or the second half of
  the grid);
* ``"undetermined"`` otherwise. In particular a rising trend that has not crossed by ``n_K`` is
  never ``"fails"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from simulate.decide import decide_slope

__all__ = ["TRENDS", "Driver", "classify_trend", "slope_per_doubling"]

TRENDS = ("holds", "fails", "undetermined")


@dataclass(frozen=True)
class Driver:
    """Per-``n`` means (with standard errors) of the quantity behind a proportion, and its threshold.

    ``want="below"``: the claim needs ``mean < threshold`` (e.g. ``||F||^2/n < 1 + eps`` for
    ``p2 -> 0``); ``want="above"``: ``mean > threshold`` (``(1/n) log Lambda > log tau`` for
    ``P_inst -> 1``).
    """

    ns: Sequence[int]
    means: Sequence[float]
    std_errors: Sequence[float]
    threshold: float
    want: str = "below"

    def __post_init__(self) -> None:
        if self.want not in ("below", "above"):
            raise ValueError(f"want must be 'below' or 'above', got {self.want!r}")
        if not len(self.ns) == len(self.means) == len(self.std_errors):
            raise ValueError("driver ns, means and std_errors must have equal length")

    def wrong_side_gap(self) -> np.ndarray:
        """Distance to the threshold on the wrong side (positive = the claim's side is not reached)."""
        d = np.asarray(self.means, dtype=float) - self.threshold
        return d if self.want == "below" else -d

    def approaching(self) -> bool:
        """The mean moves toward the threshold: its slope per doubling of ``n`` (over the last step, or
        from the middle of the grid to its end) has a 95% interval excluding 0 on the threshold's side
        (:func:`simulate.decide.decide_slope`)."""
        if len(self.means) < 2:
            return False
        toward = "falling" if self.want == "below" else "rising"
        mid = (len(self.means) - 1) // 2
        pairs = {(len(self.means) - 2, len(self.means) - 1), (mid, len(self.means) - 1)}
        return any(decide_slope(self.ns[i], self.ns[j], self.means[i], self.means[j], self.std_errors[i],
                                self.std_errors[j]).direction == toward for i, j in pairs if i < j)

    def settled_wrong_side(self, z: float = 2.0) -> bool:
        """At the largest ``n`` the mean is more than ``z`` standard errors on the wrong side."""
        return bool(self.wrong_side_gap()[-1] > z * float(self.std_errors[-1]))


def slope_per_doubling(ns: Sequence[int], means: Sequence[float], std_errors: Sequence[float]) -> tuple[float, float]:
    """Change of a mean per doubling of ``n`` over the last step of the grid, and its standard error
    (:func:`simulate.decide.decide_slope`, whose interval is ``slope +- 1.96 se``); ``(nan, nan)`` with
    fewer than two points."""
    if len(ns) < 2:
        return math.nan, math.nan
    d = decide_slope(ns[-2], ns[-1], means[-2], means[-1], std_errors[-2], std_errors[-1])
    return d.slope, (d.upper - d.slope) / 1.96


def classify_trend(
    estimates: Sequence[float],
    lowers: Sequence[float],
    uppers: Sequence[float],
    *,
    target: str = "zero",
    level: float = 0.05,
    driver: Driver | None = None,
) -> str:
    """Classify proportions ordered by increasing ``n`` against ``-> 0`` (``target="zero"``) or ``-> 1``.

    Returns one of :data:`TRENDS` (rules in the module docstring). Fewer than two ``n``: undetermined.
    """
    est = np.asarray(estimates, dtype=float)
    lo = np.asarray(lowers, dtype=float)
    hi = np.asarray(uppers, dtype=float)
    if not (est.shape == lo.shape == hi.shape) or est.ndim != 1:
        raise ValueError("estimates, lowers and uppers must be 1-D sequences of equal length")
    if not 0 < level < 0.5:
        raise ValueError(f"level must lie in (0, 0.5), got {level}")
    if target == "one":
        est, lo, hi = 1.0 - est, 1.0 - hi, 1.0 - lo
    elif target != "zero":
        raise ValueError(f"target must be 'zero' or 'one', got {target!r}")
    if est.size < 2:
        return "undetermined"
    monotone = all(est[j] <= hi[i] + 1e-12 for i in range(est.size) for j in range(i + 1, est.size))
    if hi[-1] < level and monotone:
        return "holds"
    mid = (est.size - 1) // 2
    significant_fall = hi[-1] < lo[mid]
    tail = est[mid:]
    monotone_fall = bool(tail[-1] < tail[0] and np.all(np.diff(tail) <= 1e-12))
    if lo[-1] <= level or significant_fall or monotone_fall:
        return "undetermined"
    if driver is not None and (driver.approaching() or not driver.settled_wrong_side()):
        return "undetermined"
    return "fails"
