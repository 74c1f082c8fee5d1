"""Proposition 2.1 as a numerical check (docs/theory.md §2.4).

Proposition 2.1. For a C^1 map ``f``, a point ``x``:

(a) ``mu_f(x, s u) -> lambda_f(x, u)`` as ``s -> 0`` for every direction ``u != 0``;
(b) for every ``eps > 0``, ``delta > 0`` there is ``D`` with ``0 < ||D|| < delta`` and
    ``mu_f(x, D) >= ||J_f(x)||_2 - eps`` (take ``D = s v1``, ``v1`` the top right singular
    vector, and ``s`` small).

"Instability at x": some ``D`` with ``mu_f(x, D) > 1``; guaranteed when ``||J_f(x)||_2 > 1``
(by (b) with ``eps < ||J_f(x)||_2 - 1``).

Maps follow the convention of :mod:`theory.coefficients`: row-wise batched torch callables,
``x`` of shape ``(B, *shape)``, one result per row.

Scales (:mod:`theory.perturbation_scales`, which also evaluates ``mu`` along a direction;
``default_scales`` is re-exported here). A scale ``s`` means the perturbation ``D = s * r_b * u_b / ||u_b||`` for row ``b``,
with ``r_b = max(||x_b||, 1)`` when ``relative=True`` (default; the step is a fraction ``s``
of the size of the point, and absolute for points near the origin) and ``r_b = 1`` when
``relative=False``. So ``||D|| = s * r_b``. Default scales: half-decades from ``1e-1`` down
to ``1e-7`` in float64 and ``1e-3`` in float32 (in general down to about ``sqrt(eps)`` of
the dtype, where forward differences stop improving).

Floating-point model. In floating point, ``|mu_f(x, s u) - lambda_f(x, u)|`` is a truncation
error ``O(||D||)`` (``(||D||/2) |<J u, d^2 f(x)[u, u]>| / ||J u||`` to first order; ``O(||D||^2)``
if that vanishes, 0 for an affine map) plus a round-off error ``~ eps * (||f(x)|| +
||f(x + D)|| + lambda ||x||) / ||D||`` (``eps`` of the dtype). The check uses this model:
a scale is *truncation-dominated* when its error exceeds ``roundoff_factor`` times that
round-off estimate, the observed convergence order is the least-squares slope of
``log error`` against ``log s`` over the truncation-dominated scales (about 1 for a smooth
nonlinear map, NaN when fewer than two scales are truncation-dominated, e.g. for an affine
map, whose error is pure round-off), and part (a) is judged converged when the smallest
error over the scales is ``<= tol`` and the error decreased over the truncation-dominated
range (error at its smallest scale below the error at its largest). A map evaluated only to
a tolerance (an adaptive ODE solver with ``rtol``) has a noise floor far above ``eps`` and
may be piecewise smooth in ``x`` (its step choices change with ``x``); raise ``tol`` and
``roundoff_factor`` accordingly and read ``order`` with care for such maps.

Inside the check, ``mu`` divides by the perturbation actually applied, ``(x + D) - x`` after
rounding (it differs from ``D`` by about ``eps * ||x||``), so that an affine map gives
``mu = lambda`` up to the rounding of ``f`` alone. :func:`theory.coefficients.mu_f` divides by
``D`` as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from theory._maps import BatchedMap, _check_like, _check_x, _eval, _jvp
from theory._validate import as_int_array, require_positive
from theory.coefficients import spectral_norm
from theory.perturbation_scales import _check_scales, _mu_along, _step_radius, default_scales
from theory.power_iteration import _bcast, _rownorm

__all__ = [
    "Prop21Check",
    "Instability",
    "check_proposition_21",
    "instability_at",
    "default_scales",
]


@dataclass(frozen=True)
class Prop21Check:
    """Outcome of :func:`check_proposition_21` (all tensors per row, ``B`` rows, ``S`` scales).

    Attributes:
        scales: the scales ``s``, decreasing, shape ``(S,)`` (float64).
        steps: ``||D|| = s * r_b``, shape ``(B, S)``.
        direction: the unit direction ``u`` of part (a), shape of ``x``.
        lambda_u: ``lambda_f(x, u)``, shape ``(B,)``.
        mu_u: ``mu_f(x, s u)`` per scale, shape ``(B, S)``.
        errors: ``|mu_f(x, s u) - lambda_f(x, u)|``, shape ``(B, S)``.
        roundoff: the round-off estimate of the error per scale, shape ``(B, S)``.
        truncation_dominated: bool ``(B, S)``, error > ``roundoff_factor * roundoff``.
        min_error: smallest error over the scales, ``(B,)``.
        tol: tolerance on ``min_error``, ``(B,)``.
        order: observed convergence order (slope of log error vs log s over the
            truncation-dominated scales), ``(B,)``; NaN when undefined.
        converged: part (a) verdict, bool ``(B,)``.
        v1: the (power-iteration) top right singular vector, unit, shape of ``x``.
        spectral_norm: ``||J_f(x)||_2`` (power iteration), ``(B,)`` float64 (docs/theory.md §12).
        power_converged: whether the power iteration converged, bool ``(B,)``.
        mu_v1: ``max(mu_f(x, s v1), mu_f(x, -s v1))`` per scale, ``(B, S)``.
        max_mu: ``max_s mu_v1``, ``(B,)``.
        eps: the ``eps`` of part (b).
        holds: part (b) verdict ``max_mu >= spectral_norm - eps``, bool ``(B,)``.
        max_mu_found: largest ``mu`` over every perturbation tried, ``(B,)``.
        unstable: some tried ``D`` has ``mu_f(x, D) > 1``, bool ``(B,)``.
        guaranteed_unstable: ``spectral_norm > 1`` (instability guaranteed), bool ``(B,)``.
    """

    scales: torch.Tensor
    steps: torch.Tensor
    direction: torch.Tensor
    lambda_u: torch.Tensor
    mu_u: torch.Tensor
    errors: torch.Tensor
    roundoff: torch.Tensor
    truncation_dominated: torch.Tensor
    min_error: torch.Tensor
    tol: torch.Tensor
    order: torch.Tensor
    converged: torch.Tensor
    v1: torch.Tensor
    spectral_norm: torch.Tensor
    power_converged: torch.Tensor
    mu_v1: torch.Tensor
    max_mu: torch.Tensor
    eps: float
    holds: torch.Tensor
    max_mu_found: torch.Tensor
    unstable: torch.Tensor
    guaranteed_unstable: torch.Tensor

    @property
    def verified(self) -> torch.Tensor:
        """Both parts hold: ``converged & holds``, bool ``(B,)``."""
        return self.converged & self.holds


@dataclass(frozen=True)
class Instability:
    """Outcome of :func:`instability_at` (per row).

    Attributes:
        unstable: some tried ``D`` has ``mu_f(x, D) > 1``, bool ``(B,)``.
        max_mu: the largest ``mu_f(x, D)`` found, ``(B,)``.
        delta: the ``D`` attaining ``max_mu``, shape of ``x``.
        spectral_norm: ``||J_f(x)||_2`` (power iteration), ``(B,)`` float64 (docs/theory.md §12).
        guaranteed_unstable: ``spectral_norm > 1``, bool ``(B,)``.
    """

    unstable: torch.Tensor
    max_mu: torch.Tensor
    delta: torch.Tensor
    spectral_norm: torch.Tensor
    guaranteed_unstable: torch.Tensor


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _slope(logs: torch.Tensor, loge: torch.Tensor) -> float:
    """Least-squares slope of ``loge`` against ``logs`` (1-D, at least two points)."""
    ls = logs - logs.mean()
    return float((ls * (loge - loge.mean())).sum() / (ls * ls).sum())


# --------------------------------------------------------------------------------------
# public routines
# --------------------------------------------------------------------------------------


def check_proposition_21(
    f: BatchedMap,
    x: torch.Tensor,
    u: torch.Tensor | None = None,
    scales: Any = None,
    eps: float = 1e-3,
    *,
    relative: bool = True,
    tol: float | None = None,
    seed: int = 0,
    power_iters: int = 500,
    power_tol: float = 1e-10,
    roundoff_factor: float = 10.0,
) -> Prop21Check:
    """Check Proposition 2.1 at each row of ``x``.

    Part (a): ``mu_f(x, s u) -> lambda_f(x, u)`` as ``s -> 0``, with
    ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||`` and ``lambda_f(x, u) = ||J_f(x) u|| / ||u||``.
    Part (b): ``max_s mu_f(x, s v1) >= ||J_f(x)||_2 - eps`` with ``v1`` the top right singular
    vector of ``J_f(x)`` (power iteration; both signs ``+-v1`` are tried). Also reports
    instability at ``x`` (some tried ``D`` with ``mu_f(x, D) > 1``; guaranteed in the limit
    ``s -> 0`` when ``||J_f(x)||_2 > 1``, found at the given scales as soon as the truncation
    error at the smallest scale is below ``||J_f(x)||_2 - 1``).

    See the module docstring for the meaning of ``scales`` and the floating-point model
    behind ``converged`` and ``order``.

    Args:
        f: row-wise batched map (see :mod:`theory.coefficients`).
        x: points, shape ``(B, *shape)``, finite, real floating point.
        u: direction for part (a), same shape as ``x``, non-zero rows; default a Gaussian
            draw seeded with ``seed``.
        scales: positive scales ``s`` (any order; used in decreasing order); default
            :func:`default_scales` for the dtype of ``x``.
        eps: the ``eps > 0`` of part (b).
        relative: scale the steps by ``max(||x_b||, 1)`` (True) or use them as is (False).
        tol: tolerance on the smallest error of part (a); default
            ``100 * sqrt(eps_dtype) * max(1, lambda_f(x, u))`` per row
            (``1.5e-6`` relative in float64, ``3.5e-2`` in float32).
        seed: seed of the random direction and of the power iteration's start vector.
        power_iters: maximum power iterations for ``v1``.
        power_tol: relative-change tolerance of the power iteration.
        roundoff_factor: a scale is truncation-dominated when its error exceeds this factor
            times the round-off estimate.

    Returns:
        :class:`Prop21Check` with per-row results.

    Raises:
        ValueError: invalid ``x``, ``u``, ``scales``, ``eps``, ``tol`` or other parameters.
    """
    x = _check_x(x)
    eps = float(require_positive("eps", eps))
    if tol is not None:
        tol = float(require_positive("tol", tol))
    roundoff_factor = float(require_positive("roundoff_factor", roundoff_factor))
    seed = int(as_int_array("seed", seed, minimum=0))
    s64 = _check_scales(scales, x.dtype)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if u is None:
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    u = _check_like("u", u, x)
    unit = u / _bcast(_rownorm(u), u)
    B = x.shape[0]
    machine_eps = torch.finfo(x.dtype).eps

    radius = _step_radius(x, bool(relative))
    scales_x = s64.to(dtype=x.dtype, device=x.device)
    steps = radius[:, None] * scales_x[None, :]  # (B, S)

    # ---- part (a)
    fx, ju = _jvp(f, x, unit)
    lam = _rownorm(ju)
    fx_norm = _rownorm(fx)
    mu_u, fxd_norm = _mu_along(f, x, fx, unit, steps)
    errors = (mu_u - lam[:, None]).abs()
    roundoff = machine_eps * (fx_norm[:, None] + fxd_norm + lam[:, None] * _rownorm(x)[:, None]) / steps
    trunc = errors > roundoff_factor * roundoff
    min_error = errors.min(dim=1).values
    if tol is None:
        tol_t = 100.0 * math.sqrt(machine_eps) * torch.clamp(lam, min=1.0)
    else:
        tol_t = torch.full((B,), tol, dtype=x.dtype, device=x.device)
    order = torch.full((B,), float("nan"), dtype=x.dtype, device=x.device)
    decreased = torch.ones(B, dtype=torch.bool, device=x.device)
    log_s = torch.log(s64)
    for b in range(B):
        idx = torch.nonzero(trunc[b]).reshape(-1)
        if idx.numel() >= 2:
            e = errors[b, idx].to(torch.float64).cpu()
            order[b] = _slope(log_s[idx.cpu()], torch.log(e))
            decreased[b] = bool(e[-1] < e[0])
    converged = (min_error <= tol_t) & decreased

    # ---- part (b)
    sn = spectral_norm(f, x, method="power", iters=power_iters, tol=power_tol, generator=gen)
    v1 = sn.vector / _bcast(_rownorm(sn.vector), sn.vector)
    mu_plus, _ = _mu_along(f, x, fx, v1, steps)
    mu_minus, _ = _mu_along(f, x, fx, -v1, steps)
    mu_v1 = torch.maximum(mu_plus, mu_minus)
    max_mu = mu_v1.max(dim=1).values
    holds = max_mu >= sn.value - eps

    max_found = torch.maximum(max_mu, mu_u.max(dim=1).values)
    return Prop21Check(
        scales=s64,
        steps=steps,
        direction=unit,
        lambda_u=lam,
        mu_u=mu_u,
        errors=errors,
        roundoff=roundoff,
        truncation_dominated=trunc,
        min_error=min_error,
        tol=tol_t,
        order=order,
        converged=converged,
        v1=v1,
        spectral_norm=sn.value,
        power_converged=sn.converged,
        mu_v1=mu_v1,
        max_mu=max_mu,
        eps=eps,
        holds=holds,
        max_mu_found=max_found,
        unstable=max_found > 1,
        guaranteed_unstable=sn.value > 1,
    )


def instability_at(
    f: BatchedMap,
    x: torch.Tensor,
    scales: Any = None,
    *,
    relative: bool = True,
    directions: int = 1,
    seed: int = 0,
    power_iters: int = 500,
    power_tol: float = 1e-10,
) -> Instability:
    """Search for instability at ``x``: a perturbation ``D`` with ``mu_f(x, D) > 1``.

    ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||``. Tries ``D = +-s r_b v1`` (``v1`` the top right
    singular vector of ``J_f(x)`` by power iteration; by Proposition 2.1(b) ``mu -> ||J_f(x)||_2``
    along it, so instability is found whenever ``||J_f(x)||_2 > 1`` and the scales are small
    enough) and ``directions`` random unit directions, over ``scales`` (same meaning as in
    :func:`check_proposition_21`).

    Args:
        f: row-wise batched map.
        x: points, shape ``(B, *shape)``.
        scales: positive scales; default :func:`default_scales`.
        relative: steps relative to ``max(||x_b||, 1)`` (True) or absolute.
        directions: number of extra random directions (>= 0).
        seed: seed of the random directions and power-iteration start.
        power_iters: maximum power iterations.
        power_tol: power-iteration tolerance.

    Returns:
        :class:`Instability` with per-row ``unstable``, ``max_mu`` and the best ``delta``.
    """
    x = _check_x(x)
    s64 = _check_scales(scales, x.dtype)
    directions = int(as_int_array("directions", directions, minimum=0))
    seed = int(as_int_array("seed", seed, minimum=0))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    steps = _step_radius(x, bool(relative))[:, None] * s64.to(dtype=x.dtype, device=x.device)[None, :]
    fx = _eval(f, x)
    sn = spectral_norm(f, x, method="power", iters=power_iters, tol=power_tol, generator=gen)
    v1 = sn.vector / _bcast(_rownorm(sn.vector), sn.vector)
    cands = [v1, -v1]
    for _ in range(directions):
        r = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        cands.append(r / _bcast(_rownorm(r), r))
    best = torch.full((x.shape[0],), -float("inf"), dtype=x.dtype, device=x.device)
    best_delta = torch.zeros_like(x)
    for d in cands:
        mus, _ = _mu_along(f, x, fx, d, steps)
        m, j = mus.nan_to_num(nan=-float("inf")).max(dim=1)
        better = m > best
        step = steps.gather(1, j[:, None])[:, 0]
        best_delta = torch.where(_bcast(better, x), _bcast(step, d) * d, best_delta)
        best = torch.where(better, m, best)
    return Instability(
        unstable=best > 1,
        max_mu=best,
        delta=best_delta,
        spectral_norm=sn.value,
        guaranteed_unstable=sn.value > 1,
    )
