r"""The one decision rule for proportion and trend verdicts (issue 25; docs/theory.md §11.9).

A claim about a proportion ``q`` (``p1 -> 0``, ``p2 -> 0``, ``1 - P_inst -> 0``, "lambda > 1 on a
fraction of the grid", "the bound holds at every point") is decided on the exact 95% Clopper-Pearson
interval ``[lower, upper]`` of ``q`` (:func:`theory.thm41.clopper_pearson`), never on the estimate:

* ``"holds"`` only when the interval clears the level: ``upper < level`` (for "``q`` small");
* ``"fails"`` only when the interval excludes it: ``lower > level``;
* ``"undetermined"`` otherwise; :func:`points_to_settle` says how many points would decide it if
  the estimate stayed where it is (``None``: no number would, the estimate sits on the level).

A trend over ``n`` is decided on the interval at the largest ``n`` (the caller passes that one), and
a statement about a mean's trend ("still rising") needs a slope whose interval excludes 0
(:func:`decide_slope`). This module is the only place these rules live; the experiments'
judges call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from theory.thm41 import clopper_pearson

__all__ = ["DECISIONS", "Decision", "decide_proportion", "points_to_settle", "SlopeDecision", "decide_slope",
           "MAX_SETTLE"]

DECISIONS = ("holds", "fails", "undetermined")

#: :func:`points_to_settle` searches up to this many points
MAX_SETTLE = 1_000_000


@dataclass(frozen=True)
class Decision:
    """The decision on "``q`` < ``level``" for one proportion: the estimate, its interval, the point count."""

    status: str
    estimate: float
    lower: float
    upper: float
    successes: int
    trials: int
    level: float
    settle_at: int | None
    """points that would settle an undetermined decision at the current estimate (``None``: none would;
    equal to ``trials`` once decided)"""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "estimate": self.estimate, "lower": self.lower, "upper": self.upper,
                "successes": self.successes, "trials": self.trials, "level": self.level, "settle_at": self.settle_at}


def _status(lower: float, upper: float, level: float) -> str:
    if upper < level:
        return "holds"
    if lower > level:
        return "fails"
    return "undetermined"


def _check(successes: int, trials: int, level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if int(trials) < 1 or not 0 <= int(successes) <= int(trials):
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")


def points_to_settle(successes: int, trials: int, level: float, confidence: float = 0.95) -> int | None:
    """Smallest point count ``N >= trials`` at which the interval of ``round(N * estimate)`` successes out
    of ``N`` clears or excludes ``level`` (the estimate held fixed); ``None`` if none up to :data:`MAX_SETTLE`.

    Bisection on ``N``: the interval's width shrinks with ``N`` at a fixed estimate, so once decided it
    stays decided (checked at the returned ``N``).
    """
    _check(successes, trials, level)
    p = successes / trials

    def decided(n: int) -> bool:
        ci = clopper_pearson(int(round(n * p)), n, confidence)
        return _status(ci.lower, ci.upper, level) != "undetermined"

    if decided(trials):
        return int(trials)
    if not decided(MAX_SETTLE):
        return None
    lo, hi = int(trials), MAX_SETTLE  # decided(hi), not decided(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi


def decide_proportion(successes: int, trials: int, level: float, *, target: str = "zero",
                      confidence: float = 0.95) -> Decision:
    """Decide "the proportion is near ``target``": ``q = p`` for ``target="zero"`` (``q < level``),
    ``q = 1 - p`` for ``target="one"``; ``successes`` counts the events of ``p``.

    The returned estimate and interval are those of ``q``. Rule in the module docstring.
    """
    _check(successes, trials, level)
    if target == "one":
        k = int(trials) - int(successes)
    elif target == "zero":
        k = int(successes)
    else:
        raise ValueError(f"target must be 'zero' or 'one', got {target!r}")
    ci = clopper_pearson(k, int(trials), confidence)
    status = _status(ci.lower, ci.upper, level)
    settle = int(trials) if status != "undetermined" else points_to_settle(k, int(trials), level, confidence)
    return Decision(status, ci.estimate, ci.lower, ci.upper, k, int(trials), float(level), settle)


@dataclass(frozen=True)
class SlopeDecision:
    """A mean's change per doubling of ``n`` over the last step of the grid, with its 95% interval:
    ``direction`` is ``"rising"`` / ``"falling"`` only when the interval excludes 0, else ``"flat"``."""

    slope: float
    lower: float
    upper: float
    direction: str

    def as_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "lower": self.lower, "upper": self.upper, "direction": self.direction}


def decide_slope(n_prev: int, n_last: int, mean_prev: float, mean_last: float, se_prev: float, se_last: float,
                 z: float = 1.96) -> SlopeDecision:
    """``(mean_last - mean_prev) / log2(n_last / n_prev)`` with the normal interval of two independent
    means (``z`` standard errors); a non-finite standard error gives an unbounded interval ("flat")."""
    if not (0 < n_prev < n_last):
        raise ValueError(f"need 0 < n_prev < n_last, got {n_prev}, {n_last}")
    doublings = math.log2(n_last / n_prev)
    slope = (mean_last - mean_prev) / doublings
    se = math.hypot(se_prev, se_last) / doublings
    if not math.isfinite(slope):
        raise ValueError(f"slope is not finite (means {mean_prev}, {mean_last})")
    lo, hi = (slope - z * se, slope + z * se) if math.isfinite(se) else (-math.inf, math.inf)
    direction = "rising" if lo > 0 else "falling" if hi < 0 else "flat"
    return SlopeDecision(float(slope), float(lo), float(hi), direction)
