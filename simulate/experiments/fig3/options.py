"""Options of the Fig. 3 experiment (:mod:`.fig3`): the frozen :class:`Fig3Options`, :data:`FAST`, :data:`FULL`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from theory._validate import require_ints
from simulate.maps import SOLVER_NAMES

from simulate.experiments.common import replace_options

Pair = tuple[float, float]

__all__ = ["Fig3Options", "FAST", "FULL", "make_options"]


@dataclass(frozen=True)
class Fig3Options:
    """Options of the Fig. 3 experiment (validated on construction; values kept as given).

    Field: ``means``, ``stds`` (common std or one per component), ``weights``. (a) ``green_center``,
    ``green_half``, ``green_n`` (grid of the square shown), ``boundary_points``, ``boundary_gap``,
    ``boundary_rounds``, ``boundary_min_width`` (adaptive boundary trace). (b) ``grid_n``,
    ``grid_lim``, ``fd_step``, ``min_region_points`` (verdict), ``jvp_points``. (c) ``line_z2``,
    ``line_n``, ``s_values``, ``prop21_s``, ``n_dirs``. Solver of ``G``: ``solver``, ``steps``,
    ``rtol``, ``atol``. Figures: ``density_n``.
    """

    means: tuple[Pair, ...] = ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0))
    stds: float | tuple[float, ...] = 0.25
    weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    grid_n: int = 101
    grid_lim: float = 3.0
    fd_step: float = 1e-5
    green_center: Pair = (0.0, 0.0)
    green_half: float = 0.1
    green_n: int = 21
    boundary_points: int = 400
    boundary_gap: float = 0.02
    boundary_rounds: int = 20
    boundary_min_width: float = 1e-10
    line_z2: float = 0.0
    line_n: int = 121
    s_values: tuple[float, ...] = (0.01, 0.1, 0.5)
    prop21_s: tuple[float, ...] = (1e-2, 1e-3)
    n_dirs: int = 32
    jvp_points: int = 3
    min_region_points: int = 3
    solver: str = "dopri5"
    steps: int = 200
    rtol: float = 1e-9
    atol: float = 1e-11
    density_n: int = 200

    def __post_init__(self) -> None:
        means = np.asarray(self.means, dtype=float)
        if means.ndim != 2 or means.shape[1] != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be a non-empty list of 2-D points, got {self.means}")
        k = means.shape[0]
        if len(self.weights) != k or min(self.weights) <= 0:
            raise ValueError(f"weights must be {k} positive numbers (one per mean), got {self.weights}")
        stds = np.asarray(self.stds, dtype=float)
        if stds.size not in (1, k) or not np.all(stds > 0):
            raise ValueError(f"stds must be > 0 (one, or one per mean), got {self.stds}")
        if len(self.green_center) != 2 or not self.green_half > 0:
            raise ValueError(f"green_center must be a 2-D point and green_half > 0, got {self.green_center}, {self.green_half}")
        require_ints(self, ("grid_n", "line_n", "green_n", "boundary_points", "density_n"), minimum=2)
        for name in ("grid_lim", "fd_step", "boundary_gap", "boundary_min_width", "rtol", "atol"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.s_values or not self.prop21_s or min(*self.s_values, *self.prop21_s) <= 0:
            raise ValueError(f"s_values and prop21_s must be non-empty and > 0, got {self.s_values}, {self.prop21_s}")
        require_ints(self, ("n_dirs", "jvp_points", "min_region_points", "steps"))
        require_ints(self, ("boundary_rounds",), minimum=0)
        if self.solver not in SOLVER_NAMES:
            raise ValueError(f"solver must be one of {', '.join(SOLVER_NAMES)}, got {self.solver!r}")


FAST = Fig3Options()
FULL = dataclasses.replace(FAST, grid_n=201, green_n=41, boundary_points=1000, line_n=301, n_dirs=64, jvp_points=7,
                           density_n=300)


def make_options(full: bool = False, **overrides: Any) -> Fig3Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)
