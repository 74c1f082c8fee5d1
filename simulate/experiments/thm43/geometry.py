r"""Geometries of the Theorem 4.3 experiment: where the ``m`` boxes of ``p_g`` sit (docs/theory.md §8.1).

``p_g = (1/m) sum_i U(B_i) * N(0, sigma^2 I_n)`` with ``B_i`` a cube of side ``l``; ``p_r = U[0, 1]^n``.
Three kinds of cell:

* ``"diagonal"`` (controlled): ``B_i = [a_i, a_i + l]^n``, ``a_i = a_0 + i (l + g)``, the row of
  boxes centred on ``(1/2, ..., 1/2)``: every coordinate sees the same per-coordinate gap ``g``
  between neighbouring boxes. The regime variable is ``g / sigma`` (the gap in kernel widths); the
  boxes may reach outside ``[0, 1]^n`` (Theorem 4.3 only asks that each support lie in a cube of
  side ``l``), and ``p_r`` puts its mass in and around the gaps.
* ``"single"`` (control): one box ``[1/2 - l/2, 1/2 + l/2]^n`` (``m = 1``: no gap, no separatrix).
* ``"random"``: the boxes at uniform random positions inside ``[0, 1]^n``, redrawn until pairwise
  disjoint (Assumption 4.4); the per-coordinate gap is then random, its mean is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GEOMETRIES", "Cell", "Boxes", "diagonal_boxes", "place_boxes", "boxes_for"]

GEOMETRIES = ("single", "diagonal", "random")


@dataclass(frozen=True)
class Cell:
    """One cell of the regime grid: geometry, kernel width ``sigma``, ``m`` boxes, ``g / sigma``.

    ``gap_ratio`` is ``g / sigma`` for ``"diagonal"`` and ``None`` otherwise.
    """

    geometry: str
    sigma: float
    m: int
    gap_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}")
        if (self.geometry == "single") != (self.m == 1):
            raise ValueError(f"the single-box control has m = 1 and every other geometry m >= 2, got {self}")
        if (self.geometry == "diagonal") != (self.gap_ratio is not None):
            raise ValueError(f"gap_ratio (g/sigma) is given exactly for diagonal cells, got {self}")

    @property
    def label(self) -> str:
        """Short label, e.g. ``"diag m=2 g/s=8 s=0.02"``, ``"single s=1"``, ``"random m=4 s=0.3"``."""
        if self.geometry == "single":
            return f"single s={self.sigma:g}"
        if self.geometry == "random":
            return f"random m={self.m} s={self.sigma:g}"
        return f"diag m={self.m} g/s={self.gap_ratio:g} s={self.sigma:g}"

    def gap(self) -> float:
        """Per-coordinate gap ``g = gap_ratio * sigma`` of a diagonal cell (0 for the others)."""
        return 0.0 if self.gap_ratio is None else self.gap_ratio * self.sigma


@dataclass(frozen=True)
class Boxes:
    """Lower corners ``(m, n)`` of ``m`` cubes of side ``side``, and how far apart they are.

    ``separation``: smallest pairwise Euclidean distance (``inf`` for ``m = 1``, Assumption 4.4 needs
    ``> 0``); ``mean_coordinate_gap``: mean over coordinates of ``max(0, |a_i - a_j| - l)`` for the
    closest pair (``g`` for a diagonal row, ``None`` for ``m = 1``).
    """

    lower: np.ndarray
    side: float
    separation: float
    mean_coordinate_gap: float | None
    tries: int = 1

    @property
    def upper(self) -> np.ndarray:
        return self.lower + self.side

    @property
    def separated(self) -> bool:
        return bool(self.separation > 0)


def _closest_pair(lower: np.ndarray, side: float) -> tuple[float, float | None]:
    m = lower.shape[0]
    if m == 1:
        return math.inf, None
    best, best_gap = math.inf, 0.0
    for i in range(m - 1):
        gaps = np.maximum(0.0, np.abs(lower[i + 1 :] - lower[i]) - side)
        dist = np.sqrt((gaps * gaps).sum(axis=1))
        j = int(dist.argmin())
        if float(dist[j]) < best:
            best, best_gap = float(dist[j]), float(gaps[j].mean())
    return best, best_gap


def diagonal_boxes(n: int, m: int, side: float, gap: float) -> Boxes:
    """``m`` cubes ``[a_i, a_i + l]^n`` on the diagonal, per-coordinate gap ``gap``, centred on ``1/2``.

    ``a_i = 1/2 - (m l + (m - 1) g)/2 + i (l + g)``; the separation is ``g sqrt(n)``.
    """
    if n < 1 or m < 1:
        raise ValueError(f"n and m must be >= 1, got n={n}, m={m}")
    if not (side >= 0 and gap >= 0 and math.isfinite(side) and math.isfinite(gap)):
        raise ValueError(f"side and gap must be finite and >= 0, got side={side}, gap={gap}")
    a0 = 0.5 - 0.5 * (m * side + (m - 1) * gap)
    lower = np.repeat((a0 + np.arange(m) * (side + gap))[:, None], n, axis=1)
    sep, mean_gap = _closest_pair(lower, side)
    return Boxes(lower=lower, side=side, separation=sep, mean_coordinate_gap=mean_gap)


def place_boxes(n: int, m: int, side: float, rng: np.random.Generator, max_tries: int = 200) -> Boxes:
    """``m`` cubes of side ``side`` at uniform random positions inside ``[0, 1]^n``.

    Redraws (up to ``max_tries`` times) until the boxes are pairwise disjoint (Assumption 4.4). For
    ``side >= 1/2`` every box contains ``(1/2, ..., 1/2)``, so they can never be separated.
    """
    if not 0 <= side <= 1:
        raise ValueError(f"side must lie in [0, 1] (boxes inside the unit cube), got {side}")
    lower = np.zeros((m, n))
    sep, mean_gap, tries = math.inf, None, 0
    for tries in range(1, max(1, max_tries) + 1):
        lower = rng.uniform(0.0, 1.0 - side, size=(m, n))
        sep, mean_gap = _closest_pair(lower, side)
        if sep > 0:
            break
    return Boxes(lower=lower, side=side, separation=sep, mean_coordinate_gap=mean_gap, tries=tries)


def boxes_for(cell: Cell, n: int, side: float, rng: np.random.Generator, max_tries: int = 200) -> Boxes:
    """The boxes of ``cell`` in dimension ``n`` (``rng`` is used by ``"random"`` only)."""
    if cell.geometry == "random":
        return place_boxes(n, cell.m, side, rng, max_tries)
    return diagonal_boxes(n, cell.m, side, cell.gap())
