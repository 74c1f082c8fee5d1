r"""Sampling estimators of the instability coefficients of any batched map (docs/theory.md §2.5, §9.1).

One implementation of each estimator, shared by the simulator (``simulate.instability``) and the
large-model code (``largemodel.study.instability``, ``largemodel.study.runner``). The map ``G`` is any row-wise
batched callable ``(B', *shape) -> (B', *shape_out)`` (docs/theory.md §1.4): the simulator's
generation map, a large model's regeneration with its own chunking, ... Norms are Euclidean over
all non-batch dimensions.

* the paper's averaged instability coefficient (docs/theory.md §2.5, the paper's App. E), from
  ``mu_f(z, D) = ||G(z + D) - G(z)|| / ||D||`` (§2.2) at ``D_k = eps d_k``:
  ``mu_k(z) = ||G(z + eps d_k) - G(z)|| / eps`` and ``mu_bar(z) = (1/K) sum_k mu_k(z)``, ``d_k``
  unit vectors; **``eps`` is the norm ``||D_k||``** of the perturbation;
* ``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` (Definition 2.2, §2.1) by central differences
  ``||G(z + h u^) - G(z - h u^)|| / (2 h)``, ``u^ = u / ||u||`` (error ``O(h^2)``, §9.1).

Each estimator is split into *rows* (the inputs to regenerate) and *from outputs* (the formula
on the regenerated rows), so that a caller can regenerate the rows of several estimators in one
batch (``largemodel.study.runner``); the full estimator chains the two.

One convention for every caller (docs/theory.md §12). Directions are drawn by
:func:`unit_directions` (float64 Gaussians on the CPU, normalised in float64) and laid out
sample-major: ``(B, K, *shape)``, the perturbed rows ``(b, k)`` in that order; the
central-difference rows interleave ``(b, k, +), (b, k, -)``. The regenerated outputs are compared
in float64 (cast before the difference, norms accumulated in float64), so every estimate is
float64 whatever the dtype of ``G``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from theory.power_iteration import _bcast, _rownorm64

__all__ = [
    "unit_directions",
    "perturbed_rows",
    "mu_from_outputs",
    "averaged_instability",
    "central_difference_rows",
    "central_difference_from_outputs",
    "central_difference_lambda",
]

BatchedMap = Callable[[Tensor], Tensor]


def _positive(name: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def unit_directions(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``shape[0]`` directions uniform on the unit sphere of ``R^{prod(shape[1:])}`` (docs/theory.md §2.5).

    Standard Gaussians drawn in float64 on the CPU from ``generator`` (so a seed gives the same
    directions on every device), divided by their float64 norms, then cast to the dtype and
    device of ``like``. Draw ``(B K, *shape)`` and view it as ``(B, K, *shape)`` for
    :func:`averaged_instability`.
    """
    d = torch.randn(shape, generator=generator, dtype=torch.float64)
    d = d / _bcast(_rownorm64(d), d)
    return d.to(like.device, like.dtype)


def _check_directions(z: Tensor, directions: Tensor) -> tuple[int, int]:
    """``(B, K)`` of ``directions`` ``(B, K, *shape)`` around the points ``z`` ``(B, *shape)``."""
    if directions.ndim != z.ndim + 1 or directions.shape[0] != z.shape[0] or directions.shape[2:] != z.shape[1:]:
        raise ValueError(f"directions of shape {tuple(directions.shape)} do not match z of shape {tuple(z.shape)}: "
                         "expected (B, K, *shape)")
    return z.shape[0], directions.shape[1]


def perturbed_rows(z: Tensor, directions: Tensor, eps: float) -> Tensor:
    """The ``B K`` perturbed points ``z_b + eps d_bk`` of :func:`averaged_instability` (docs/theory.md §2.5).

    Args:
        z: points ``(B, *shape)``.
        directions: unit directions, ``(B, K, *shape)``.
        eps: the perturbation norm ``||D|| = eps`` (> 0).

    Returns:
        ``(B K, *shape)``, sample-major (row ``b K + k`` is ``z_b + eps d_bk``).
    """
    eps = _positive("eps", eps)
    b, k = _check_directions(z, directions)
    return (z.unsqueeze(1) + eps * directions).reshape(b * k, *z.shape[1:])


def mu_from_outputs(g_perturbed: Tensor, gz: Tensor, eps: float) -> Tensor:
    r"""``mu_k(z_b) = ||G(z_b + eps d_bk) - G(z_b)|| / eps`` (docs/theory.md §2.2, §2.5), shape ``(B, K)``.

    Args:
        g_perturbed: ``G`` of :func:`perturbed_rows`, ``(B K, *shape_out)`` sample-major.
        gz: ``G(z)``, ``(B, *shape_out)``.
        eps: the perturbation norm ``||D||``.

    Returns:
        ``(B, K)`` float64 (outputs compared in float64); ``mu_bar`` is its mean over ``K`` (dimension 1).
    """
    eps = _positive("eps", eps)
    b = gz.shape[0]
    if g_perturbed.shape[0] % max(b, 1) or g_perturbed.shape[1:] != gz.shape[1:]:
        raise ValueError(f"perturbed outputs of shape {tuple(g_perturbed.shape)} do not match G(z) of shape {tuple(gz.shape)}")
    k = g_perturbed.shape[0] // b
    f64 = torch.float64
    diff = g_perturbed.to(f64).reshape(b, k, *gz.shape[1:]) - gz.to(f64).unsqueeze(1)
    return (_rownorm64(diff.reshape(b * k, -1)) / eps).view(b, k)


def averaged_instability(
    G: BatchedMap,
    z: Tensor,
    directions: Tensor,
    eps: float,
    *,
    gz: Tensor | None = None,
) -> Tensor:
    r"""The paper's averaged instability coefficient (docs/theory.md §2.5; App. E), per point and direction.

    ``mu_k(z) = mu_G(z, eps d_k) = ||G(z + eps d_k) - G(z)|| / eps`` with unit ``d_k``, so that
    ``||D_k|| = eps``; the paper's ``mu_bar(z) = (1/K) sum_k mu_k(z)`` is the mean of the result
    over dimension 1. By Proposition 2.1 (§2.4) ``mu_k -> lambda_G(z, d_k)`` as ``eps -> 0``.
    ``G`` is called once: on ``z`` and the ``B K`` perturbed rows together, or on the perturbed
    rows alone when ``gz = G(z)`` is given.

    Args:
        G: row-wise batched map.
        z: points ``(B, *shape)``.
        directions: unit directions ``(B, K, *shape)`` (:func:`unit_directions`).
        eps: the perturbation norm ``||D||`` (> 0).
        gz: ``G(z)`` if already computed.

    Returns:
        ``(B, K)`` float64.
    """
    rows = perturbed_rows(z, directions, eps)
    b = z.shape[0]
    if gz is None:
        out = G(torch.cat([z, rows]))
        gz, g_pert = out[:b], out[b:]
    else:
        g_pert = G(rows)
    return mu_from_outputs(g_pert, gz, eps)


def central_difference_rows(z: Tensor, directions: Tensor, h: float) -> Tensor:
    r"""The ``2 B K`` inputs ``z_b +- h u^_bk`` of central differences (docs/theory.md §9.1).

    ``u^ = u / ||u||`` per (sample, direction) (the norm in float64); rows ``(b, k, +), (b, k, -)``
    in turn.

    Args:
        z: points ``(B, *shape)``.
        directions: ``(B, K, *shape)`` non-zero directions, or ``(K, *shape)`` shared by all points.
        h: the step (> 0).
    """
    h = _positive("h", h)
    b = z.shape[0]
    if directions.ndim == z.ndim:
        directions = directions.unsqueeze(0).expand(b, *directions.shape)
    if directions.ndim != z.ndim + 1 or directions.shape[0] != b or directions.shape[2:] != z.shape[1:]:
        raise ValueError(f"directions of shape {tuple(directions.shape)} do not match z of shape {tuple(z.shape)}")
    k = directions.shape[1]
    d = directions.to(z.dtype)
    u = d / _rownorm64(d.reshape(b * k, -1)).to(d.dtype).view(b, k, *([1] * (z.ndim - 1)))
    zr = z.unsqueeze(1)
    return torch.stack([zr + h * u, zr - h * u], dim=2).reshape(b * k * 2, *z.shape[1:])


def central_difference_from_outputs(outputs: Tensor, h: float, b: int, k: int) -> Tensor:
    r"""``lambda_G(z_b, u_bk) ~ ||G(z_b + h u^) - G(z_b - h u^)|| / (2 h)`` (Def. 2.2; docs/theory.md §9.1).

    Args:
        outputs: ``G`` of :func:`central_difference_rows`, ``(2 B K, *shape_out)``.
        h: the step used for the rows.
        b, k: points and directions per point.

    Returns:
        ``(B, K)`` float64 (outputs compared in float64).
    """
    h = _positive("h", h)
    if outputs.shape[0] != 2 * b * k:
        raise ValueError(f"expected {2 * b * k} regenerated rows, got {outputs.shape[0]}")
    pairs = outputs.to(torch.float64).reshape(b * k, 2, -1)
    return (_rownorm64(pairs[:, 0] - pairs[:, 1]) / (2.0 * h)).view(b, k)


def central_difference_lambda(
    G: BatchedMap,
    z: Tensor,
    directions: Tensor,
    h: float,
) -> Tensor:
    r"""``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` (Definition 2.2, docs/theory.md §2.1, §9.1) by central differences.

    ``lambda_G(z, u) = ||G(z + h u^) - G(z - h u^)|| / (2 h) + O(h^2)``, ``u^ = u / ||u||``; one call
    of ``G`` on the ``2 B K`` rows of :func:`central_difference_rows`.

    Returns:
        ``(B, K)`` float64.
    """
    rows = central_difference_rows(z, directions, h)
    b = z.shape[0]
    k = rows.shape[0] // (2 * b)
    return central_difference_from_outputs(G(rows), h, b, k)
