"""Options of the Theorem 4.2 experiment (:mod:`.thm42`): the frozen :class:`Thm42Options`, :data:`FAST`, :data:`FULL`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from theory._validate import require_ints
from simulate.experiments.common import replace_options

__all__ = ["Thm42Options", "FAST", "FULL", "make_options"]


@dataclass(frozen=True)
class Thm42Options:
    """Options of the Theorem 4.2 experiment (validated on construction; values kept as given).

    Target: ``target`` (``"ring"`` or ``"annulus"``), ``radius`` (``R``), ``width`` (ring's radial
    ``w``), ``annulus_half_width`` (``a``). Approximants: ``half_extent`` (``L``), ``ms`` (perfect
    squares ``k^2``), ``sigma_factor`` (``sigma_m = sigma_factor * side``), ``quad_n`` (weights'
    quadrature). Distances: ``eval_spacing`` (L1 grid), ``n_samples``, ``n_projections`` (sliced W1).
    """

    target: str = "ring"
    radius: float = 1.0
    width: float = 0.1
    annulus_half_width: float = 0.2
    half_extent: float = 1.5
    ms: tuple[int, ...] = (4, 16, 64, 256)
    sigma_factor: float = 0.5
    quad_n: int = 960
    eval_spacing: float = 0.02
    n_samples: int = 4000
    n_projections: int = 64

    def __post_init__(self) -> None:
        if self.target not in ("ring", "annulus"):
            raise ValueError(f"target must be 'ring' or 'annulus', got {self.target!r}")
        if not self.ms:
            raise ValueError("ms must be non-empty")
        for m in self.ms:
            k = math.isqrt(int(m))
            if k * k != int(m) or k < 1:
                raise ValueError(f"every m in ms must be a perfect square (k x k tiling), got {m}")
        for name in ("radius", "width", "annulus_half_width", "half_extent", "sigma_factor", "eval_spacing"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        require_ints(self, ("quad_n", "n_samples", "n_projections"))


FAST = Thm42Options()
FULL = dataclasses.replace(FAST, ms=(4, 16, 64, 256, 1024), eval_spacing=0.01, n_samples=20000, n_projections=128)


def make_options(full: bool = False, **overrides: Any) -> Thm42Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)
