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

Direction layouts. The callers draw their directions themselves and in their own order (the
simulator as ``(K, B, ...)`` in the state dtype, the large model as ``(B K, ...)`` in float64
then cast), which fixes the random numbers behind every published result; the estimators take
the drawn directions and a ``layout`` naming their order instead of drawing them, so that the
same seeds give the same numbers: ``"bk"`` (directions ``(B, K, *shape)``, rows sample-major)
or ``"kb"`` (directions ``(K, B, *shape)``, rows direction-major).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from theory.power_iteration import _rownorm

__all__ = [
    "LAYOUTS",
    "FD_LAYOUTS",
    "perturbed_rows",
    "mu_from_outputs",
    "averaged_instability",
    "central_difference_rows",
    "central_difference_from_outputs",
    "central_difference_lambda",
]

LAYOUTS = ("bk", "kb")
FD_LAYOUTS = ("interleaved", "blocked")
BatchedMap = Callable[[Tensor], Tensor]


def _positive(name: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_layout(z: Tensor, directions: Tensor, layout: str) -> tuple[int, int]:
    """``(B, K)`` of ``directions`` laid out as ``layout`` around the points ``z`` ``(B, *shape)``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    b = z.shape[0]
    if directions.ndim != z.ndim + 1 or directions.shape[2:] != z.shape[1:]:
        raise ValueError(f"directions of shape {tuple(directions.shape)} do not match z of shape {tuple(z.shape)}")
    bi, ki = (0, 1) if layout == "bk" else (1, 0)
    if directions.shape[bi] != b:
        raise ValueError(f"directions of shape {tuple(directions.shape)} (layout {layout}) do not match {b} points")
    return b, directions.shape[ki]


def perturbed_rows(z: Tensor, directions: Tensor, eps: float, layout: str = "bk") -> Tensor:
    """The ``B K`` perturbed points ``z_b + eps d_bk`` of :func:`averaged_instability` (docs/theory.md §2.5).

    Args:
        z: points ``(B, *shape)``.
        directions: unit directions, ``(B, K, *shape)`` (layout ``"bk"``) or ``(K, B, *shape)``
            (``"kb"``).
        eps: the perturbation norm ``||D|| = eps`` (> 0).

    Returns:
        ``(B K, *shape)``, in the order of ``layout``.
    """
    eps = _positive("eps", eps)
    b, k = _check_layout(z, directions, layout)
    axis = 1 if layout == "bk" else 0
    return (z.unsqueeze(axis) + eps * directions).reshape(b * k, *z.shape[1:])


def mu_from_outputs(
    g_perturbed: Tensor, gz: Tensor, eps: float, layout: str = "bk", *, norm_dtype: torch.dtype | None = None
) -> Tensor:
    r"""``mu_k(z_b) = ||G(z_b + eps d_bk) - G(z_b)|| / eps`` (docs/theory.md §2.2, §2.5), shape ``(B, K)``.

    Args:
        g_perturbed: ``G`` of :func:`perturbed_rows`, ``(B K, *shape_out)`` in ``layout`` order.
        gz: ``G(z)``, ``(B, *shape_out)``.
        eps: the perturbation norm ``||D||``.
        norm_dtype: dtype in which the differences' norms are accumulated (None: their own).

    Returns:
        ``(B, K)``; ``mu_bar`` is its mean over ``K`` (dimension 1).
    """
    eps = _positive("eps", eps)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    b = gz.shape[0]
    if g_perturbed.shape[0] % max(b, 1) or g_perturbed.shape[1:] != gz.shape[1:]:
        raise ValueError(f"perturbed outputs of shape {tuple(g_perturbed.shape)} do not match G(z) of shape {tuple(gz.shape)}")
    k = g_perturbed.shape[0] // b
    if layout == "bk":
        diff = g_perturbed.reshape(b, k, *gz.shape[1:]) - gz.unsqueeze(1)
    else:
        diff = g_perturbed.reshape(k, b, *gz.shape[1:]) - gz.unsqueeze(0)
    rows = diff.reshape(b * k, -1)
    mu = _rownorm(rows if norm_dtype is None else rows.to(norm_dtype)) / eps
    return mu.view(b, k) if layout == "bk" else mu.view(k, b).T


def averaged_instability(
    G: BatchedMap,
    z: Tensor,
    directions: Tensor,
    eps: float,
    *,
    layout: str = "bk",
    gz: Tensor | None = None,
    norm_dtype: torch.dtype | None = None,
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
        directions: unit directions in ``layout`` (see the module docstring).
        eps: the perturbation norm ``||D||`` (> 0).
        gz: ``G(z)`` if already computed.
        norm_dtype: dtype of the norms (None: that of ``G``'s output).

    Returns:
        ``(B, K)``.
    """
    rows = perturbed_rows(z, directions, eps, layout)
    b = z.shape[0]
    if gz is None:
        out = G(torch.cat([z, rows]))
        gz, g_pert = out[:b], out[b:]
    else:
        g_pert = G(rows)
    return mu_from_outputs(g_pert, gz, eps, layout, norm_dtype=norm_dtype)


def central_difference_rows(z: Tensor, directions: Tensor, h: float, layout: str = "interleaved") -> Tensor:
    r"""The ``2 B K`` inputs ``z_b +- h u^_bk`` of central differences (docs/theory.md §9.1).

    ``u^ = u / ||u||`` per (sample, direction). ``layout="interleaved"``: rows
    ``(b, k, +), (b, k, -)`` in turn; ``"blocked"``: the ``B K`` plus rows, then the ``B K`` minus rows.

    Args:
        z: points ``(B, *shape)``.
        directions: ``(B, K, *shape)`` non-zero directions, or ``(K, *shape)`` shared by all points.
        h: the step (> 0).
    """
    h = _positive("h", h)
    if layout not in FD_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(FD_LAYOUTS)}, got {layout!r}")
    b = z.shape[0]
    if directions.ndim == z.ndim:
        directions = directions.unsqueeze(0).expand(b, *directions.shape)
    if directions.ndim != z.ndim + 1 or directions.shape[0] != b or directions.shape[2:] != z.shape[1:]:
        raise ValueError(f"directions of shape {tuple(directions.shape)} do not match z of shape {tuple(z.shape)}")
    k = directions.shape[1]
    d = directions.to(z.dtype)
    u = d / _rownorm(d.reshape(b * k, -1)).view(b, k, *([1] * (z.ndim - 1)))
    zr = z.unsqueeze(1)
    if layout == "interleaved":
        return torch.stack([zr + h * u, zr - h * u], dim=2).reshape(b * k * 2, *z.shape[1:])
    return torch.cat([(zr + h * u).reshape(b * k, *z.shape[1:]), (zr - h * u).reshape(b * k, *z.shape[1:])])


def central_difference_from_outputs(
    outputs: Tensor, h: float, b: int, k: int, layout: str = "interleaved", *, dtype: torch.dtype | None = None
) -> Tensor:
    r"""``lambda_G(z_b, u_bk) ~ ||G(z_b + h u^) - G(z_b - h u^)|| / (2 h)`` (Def. 2.2; docs/theory.md §9.1).

    Args:
        outputs: ``G`` of :func:`central_difference_rows` (same ``layout``), ``(2 B K, *shape_out)``.
        h: the step used for the rows.
        b, k: points and directions per point.
        dtype: dtype the outputs are compared in (cast before the difference; None: their own).

    Returns:
        ``(B, K)``.
    """
    h = _positive("h", h)
    if layout not in FD_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(FD_LAYOUTS)}, got {layout!r}")
    if outputs.shape[0] != 2 * b * k:
        raise ValueError(f"expected {2 * b * k} regenerated rows, got {outputs.shape[0]}")
    out = outputs if dtype is None else outputs.to(dtype)
    if layout == "interleaved":
        pairs = out.reshape(b * k, 2, -1)
        plus, minus = pairs[:, 0], pairs[:, 1]
    else:
        plus, minus = out.reshape(2, b * k, -1)
    return (_rownorm(plus - minus) / (2.0 * h)).view(b, k)


def central_difference_lambda(
    G: BatchedMap,
    z: Tensor,
    directions: Tensor,
    h: float,
    *,
    layout: str = "interleaved",
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` (Definition 2.2, docs/theory.md §2.1, §9.1) by central differences.

    ``lambda_G(z, u) = ||G(z + h u^) - G(z - h u^)|| / (2 h) + O(h^2)``, ``u^ = u / ||u||``; one call
    of ``G`` on the ``2 B K`` rows of :func:`central_difference_rows`.

    Returns:
        ``(B, K)``.
    """
    rows = central_difference_rows(z, directions, h, layout)
    b = z.shape[0]
    k = rows.shape[0] // (2 * b)
    return central_difference_from_outputs(G(rows), h, b, k, layout, dtype=dtype)
