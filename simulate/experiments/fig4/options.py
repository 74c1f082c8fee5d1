"""Options of the Fig. 4(a, b) experiment (:mod:`.fig4`): the frozen :class:`Fig4Options`, :data:`FAST`,
:data:`FULL`, and the pipelines (:data:`PIPELINES`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from theory._validate import require_ints
from simulate.experiments.common import replace_options

#: pipeline name -> (inversion solver, regeneration solver)
PIPELINES: dict[str, tuple[str, str]] = {
    "euler": ("euler", "euler"),
    "heun": ("heun", "heun"),
    "euler_exact": ("euler", "dopri5"),
}

__all__ = ["PIPELINES", "Fig4Options", "FAST", "FULL", "make_options"]


@dataclass(frozen=True)
class Fig4Options:
    """Options of the Fig. 4(a, b) experiment (validated on construction; values kept as given).

    Field: ``means``, ``stds``, ``weights``; data: ``box_margin``, ``points``; pipelines:
    ``pipelines`` (names of :data:`PIPELINES`), ``steps`` (``N``), ``rtol`` / ``atol`` (dopri5),
    ``fp_tol`` / ``fp_max_iter`` (fixed-point inversion); ``mu_bar``: ``num_perturbations`` (``K``),
    ``eps``; statistics: ``n_resamples``, ``confidence``; figures: ``density_n``.
    """

    means: tuple[tuple[float, float], ...] = ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.0))
    stds: float | tuple[float, ...] = 0.5
    weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    box_margin: float = 2.0
    points: int = 400
    steps: int = 50
    num_perturbations: int = 16
    eps: float = 1e-3
    pipelines: tuple[str, ...] = ("euler", "heun", "euler_exact")
    rtol: float = 1e-9
    atol: float = 1e-11
    fp_tol: float = 1e-12
    fp_max_iter: int = 500
    n_resamples: int = 2000
    confidence: float = 0.95
    density_n: int = 200

    def __post_init__(self) -> None:
        means = np.asarray(self.means, dtype=float)
        if means.ndim != 2 or means.shape[1] != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be a non-empty list of 2-D points, got {self.means}")
        if len(self.weights) != means.shape[0] or min(self.weights) <= 0:
            raise ValueError(f"weights must be {means.shape[0]} positive numbers (one per mean), got {self.weights}")
        stds = np.asarray(self.stds, dtype=float)
        if stds.size not in (1, means.shape[0]) or not np.all(stds > 0):
            raise ValueError(f"stds must be > 0 (one, or one per mean), got {self.stds}")
        bad = [p for p in self.pipelines if p not in PIPELINES]
        if not self.pipelines or bad:
            raise ValueError(f"pipelines must be a non-empty subset of {', '.join(PIPELINES)}, got {self.pipelines}")
        require_ints(self, ("points",), minimum=3)
        require_ints(self, ("steps", "num_perturbations", "n_resamples", "fp_max_iter"))
        require_ints(self, ("density_n",), minimum=2)
        for name in ("box_margin", "eps", "rtol", "atol", "fp_tol"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < float(self.confidence) < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")


FAST = Fig4Options()
FULL = dataclasses.replace(FAST, points=2000, num_perturbations=32, n_resamples=5000)


def make_options(full: bool = False, **overrides: Any) -> Fig4Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)
