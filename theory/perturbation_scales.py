"""Perturbation scales and the finite-perturbation coefficient along a direction (docs/theory.md §2.2, §2.4).

The scales of :mod:`theory.prop21` (Proposition 2.1): a scale ``s`` means the perturbation
``D = s * r_b * u_b / ||u_b||`` for row ``b``, with ``r_b = max(||x_b||, 1)`` when
``relative=True`` and ``r_b = 1`` when ``relative=False``, so ``||D|| = s * r_b``. Along a unit
direction, :func:`_mu_along` gives ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||`` (docs/theory.md
§2.2) for every step, dividing by the perturbation actually applied after rounding
(``(x + D) - x``), so that an affine map gives ``mu = lambda`` up to the rounding of ``f`` alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from theory._maps import BatchedMap, _eval
from theory._validate import require_positive
from theory.power_iteration import _bcast, _rownorm

__all__ = ["default_scales"]


def default_scales(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Default decreasing scales: half-decades from ``1e-1`` down to ``~sqrt(eps)``.

    The lower end is ``10**max(-7, ceil(2 log10 sqrt(eps)) / 2)`` (and at most ``10**-1.5``):
    ``1e-7`` for float64, ``1e-3`` for float32.
    """
    eps = torch.finfo(dtype).eps
    lo = max(-7.0, math.ceil(2.0 * math.log10(math.sqrt(eps))) / 2.0)
    lo = min(lo, -1.5)
    count = int(round((-1.0 - lo) * 2)) + 1
    return torch.logspace(-1.0, lo, count, dtype=torch.float64)


def _check_scales(scales: Any, dtype: torch.dtype) -> torch.Tensor:
    """Distinct positive scales in decreasing order (float64); default :func:`default_scales`."""
    if scales is None:
        return default_scales(dtype)
    if isinstance(scales, torch.Tensor):
        scales = scales.detach().cpu().numpy()
    arr = require_positive("scales", scales).reshape(-1)
    if arr.size < 1:
        raise ValueError("scales must hold at least one value")
    arr = sorted(set(arr.tolist()), reverse=True)
    return torch.tensor(arr, dtype=torch.float64)


def _step_radius(x: torch.Tensor, relative: bool) -> torch.Tensor:
    """``r_b = max(||x_b||, 1)`` (``relative``) or 1, per row."""
    if relative:
        return torch.clamp(_rownorm(x), min=1.0)
    return torch.ones(x.shape[0], dtype=x.dtype, device=x.device)


def _mu_along(
    f: BatchedMap,
    x: torch.Tensor,
    fx: torch.Tensor,
    unit: torch.Tensor,
    steps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu_f(x, h u)`` for each column ``h`` of ``steps`` (B, S); also ``||f(x + D)||``."""
    mus, norms = [], []
    for j in range(steps.shape[1]):
        delta = _bcast(steps[:, j], unit) * unit
        fxd = _eval(f, x + delta)
        if tuple(fxd.shape) != tuple(fx.shape):
            raise ValueError(f"f must return the same shape for every input, got {tuple(fxd.shape)} and {tuple(fx.shape)}")
        # the actual perturbation after rounding x + D, so that an affine map is exact
        d_actual = (x + delta) - x
        mus.append(_rownorm(fxd - fx) / _rownorm(d_actual))
        norms.append(_rownorm(fxd))
    return torch.stack(mus, dim=1), torch.stack(norms, dim=1)
