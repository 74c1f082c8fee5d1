r"""Instability estimators on the simulator's maps (docs/theory.md §2, §6.1).

All estimators act on the generation map ``G`` of a velocity field (``generate`` with the
solver options given as keyword arguments). This module only builds ``G`` and draws directions;
each estimator has its one implementation in :mod:`theory` (:mod:`theory.coefficients`,
:mod:`theory.power_iteration`, :mod:`theory.estimators`), shared with :mod:`largemodel.study.instability`:

* ``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` by a JVP through the solve (forward-mode AD, the
  derivative of the discrete scheme) or by central finite differences;
* ``||J_G(z)||_2`` by power iteration (JVP / VJP through the solve);
* the paper's estimator ``mu_bar(z) = (1/K) sum_k ||G(z + eps d_k) - G(z)|| / eps`` with ``d_k``
  uniform on the unit sphere: ``mu`` averaged over ``K`` random perturbations of norm ``||D|| = eps``
  (docs/theory.md §2.5)
  (the ``K`` perturbed regenerations run as one batch);
* ``log Lambda_G(z)`` three ways: density ratio (Lemma D.1,
  ``(log phi(z) - log p_g(G(z))) / n``), the divergence integral along the path
  (``(1/n) int_0^1 div v(x_t, t) dt``, Liouville), and ``slogdet`` of the full Jacobian (small n);
* ``log Lambda_G(F(x))`` at the inverted noise of data ``x`` from the inversion pass itself
  (:func:`log_Lambda_G_at_inverse`: the divergence integral along the inversion, or Lemma D.1 at
  ``x``) -- the way to measure ``P_inst``; regenerating ``G(F(x))`` is wrong where ``G`` is unstable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from theory._validate import require_int
from theory.coefficients import SpectralNorm, lambda_f, log_Lambda_f, spectral_norm
from theory.estimators import averaged_instability as shared_averaged_instability
from theory.estimators import central_difference_lambda, unit_directions
from theory.thm41 import log_Lambda_density_ratio, log_standard_normal_density
from simulate.maps import generate, invert

__all__ = [
    "generation_map",
    "lambda_G",
    "spectral_norm_G",
    "averaged_instability",
    "log_Lambda_G",
    "log_Lambda_G_at_inverse",
    "LambdaAtInverse",
    "LAMBDA_METHODS",
]

LAMBDA_METHODS = ("density_ratio", "divergence", "slogdet")


def generation_map(field: Any, **solve_kwargs: Any) -> Callable[[Tensor], Tensor]:
    """``G`` as a batched torch map ``z -> generate(field, z, **solve_kwargs).x`` (differentiable)."""

    def G(z: Tensor) -> Tensor:
        return generate(field, z, **solve_kwargs).x

    return G


def lambda_G(
    field: Any,
    z: Tensor,
    u: Tensor,
    *,
    method: str = "jvp",
    mode: str = "reverse",
    fd_step: float = 1e-5,
    **solve_kwargs: Any,
) -> Tensor:
    r"""Intrinsic instability coefficient ``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` (Def. 2.2), per row.

    docs/theory.md §2.1, §9.1: :func:`theory.coefficients.lambda_f` (``"jvp"``) or
    :func:`theory.estimators.central_difference_lambda` (``"fd"``) on ``G``.

    Args:
        field: the velocity field.
        z: noise points, shape ``(B, n)``.
        u: directions, shape ``(B, n)``, non-zero rows.
        method: ``"jvp"`` (``J u`` by AD through the solve: the derivative of the discrete
            scheme) or ``"fd"`` (central differences ``||G(z + h u^) - G(z - h u^)|| / (2 h)`` with
            ``u^ = u / ||u||`` and ``h = fd_step``).
        mode: how AD computes ``J u``: ``"forward"`` (``torch.func.jvp``) or ``"reverse"``
            (double-backward; several times faster on the simulator's fields, same result).
        solve_kwargs: passed to :func:`simulate.maps.generate` (solver, steps, tolerances).
    """
    if method == "jvp":
        return lambda_f(generation_map(field, **solve_kwargs), z, u, mode=mode)
    if method == "fd":
        if not (fd_step > 0 and math.isfinite(fd_step)):
            raise ValueError(f"fd_step must be a positive finite number, got {fd_step!r}")
        G = generation_map(field, **solve_kwargs)
        return central_difference_lambda(G, z, u.unsqueeze(1), fd_step)[:, 0]
    raise ValueError(f"method must be 'jvp' or 'fd', got {method!r}")


def spectral_norm_G(field: Any, z: Tensor, *, iters: int = 100, tol: float = 1e-8,
                    generator: torch.Generator | None = None, mode: str = "reverse",
                    **solve_kwargs: Any) -> SpectralNorm:
    """``||J_G(z)||_2`` per row by power iteration on ``J^T J`` (docs/theory.md §2.1, §9.2).

    :func:`theory.coefficients.spectral_norm` on ``G`` (JVP + VJP through the solve; per-row
    stopping at relative change ``tol``).

    ``mode="reverse"`` solves once and keeps the graph: each iteration is two backward passes.
    """
    return spectral_norm(generation_map(field, **solve_kwargs), z, method="power", iters=iters, tol=tol,
                         generator=generator, mode=mode)


def averaged_instability(
    field: Any,
    z: Tensor,
    *,
    num_perturbations: int = 16,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    gz: Tensor | None = None,
    **solve_kwargs: Any,
) -> Tensor:
    r"""The paper's averaged instability coefficient at ``z`` (docs/theory.md §2.5; App. E).

    ``mu_bar(z) = (1/K) sum_{k=1}^K ||G(z + eps d_k) - G(z)|| / eps``, ``d_k`` uniform on the unit
    sphere, ``K = num_perturbations``, so ``||D_k|| = eps``. The ``B K`` perturbed points are
    generated as one batch (:func:`theory.estimators.averaged_instability`, directions
    ``(B, K, n)`` from :func:`theory.estimators.unit_directions`).

    Args:
        z: points (usually inverted noises ``z~ = F~(x)``), shape ``(B, n)``.
        eps: perturbation size ``||D||``.
        gz: ``G(z)`` if already computed (saves one solve).
    """
    k = require_int("num_perturbations", num_perturbations)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    B, n = z.shape
    d = unit_directions((B * k, n), generator, z).view(B, k, n)
    G = generation_map(field, **solve_kwargs)
    return shared_averaged_instability(G, z, d, eps, gz=gz).mean(1)


def log_Lambda_G(field: Any, z: Tensor, *, method: str = "density_ratio", **solve_kwargs: Any) -> Tensor:
    r"""``log Lambda_G(z) = (1/n) log |det J_G(z)|`` per row at a *noise* ``z``, three independent ways.

    * ``"density_ratio"`` (Lemma D.1): ``(log phi(z) - log p_g(G(z))) / n`` with ``p_g`` the
      field's exact ``log_prob(x, 1)``;
    * ``"divergence"`` (Liouville): ``(1/n) int_0^1 div v(x_t, t) dt`` accumulated along the solve;
    * ``"slogdet"``: ``(1/n) log |det J|`` of the full Jacobian through the solve (small ``n``).

    The returned value is per dimension: ``(1/n) log |det J_G(z)|``, not ``log |det J_G(z)|``.

    Warning:
        To measure ``Lambda_G`` at the inverted noise ``z = F(x)`` of a data point ``x`` use
        :func:`log_Lambda_G_at_inverse`, not ``log_Lambda_G(field, invert(field, x).x)``. This
        function *regenerates* ``G(z)`` forward; where ``G`` is unstable (``Lambda_G > 1``, e.g. ``p_g``
        with modes separated by gaps of many ``sigma`` and ``x`` in a gap) the forward solve
        amplifies the inversion's solver error by ``|det J_G|``, ``G(F(x))`` lands far from ``x``
        and the value describes another point (docs/theory.md §6.1; two boxes of side 0.1 with per-coordinate gap
        ``8 sigma``, ``sigma = 0.02``, ``n = 64``, 8 points ``x ~ U[0, 1]^n``: off by up to 16 in
        ``(1/n) log Lambda``, 0 of the 6 unstable points flagged; ``tests/simulate/test_thm43_regime.py``).
    """
    n = z.shape[-1]
    if method == "density_ratio":
        x = generate(field, z, **solve_kwargs).x
        log_phi = log_standard_normal_density(sq_norm=(z * z).sum(-1), n=n)
        return log_Lambda_density_ratio(log_phi, field.log_prob(x, 1.0), n)
    if method == "divergence":
        return generate(field, z, logdet=True, **solve_kwargs).logdet / n
    if method == "slogdet":
        return log_Lambda_f(generation_map(field, **solve_kwargs), z)
    raise ValueError(f"method must be one of {', '.join(LAMBDA_METHODS)}, got {method!r}")


@dataclass(frozen=True)
class LambdaAtInverse:
    """Outcome of :func:`log_Lambda_G_at_inverse`.

    Attributes:
        z: the inverted noise ``z = F(x)``, ``(B, n)``.
        log_Lambda: ``(1/n) log |det J_G(z)|`` at that ``z``, ``(B,)``.
        sq_norm: ``||z||^2``, ``(B,)`` (Theorem 4.1's ``||F(x)||^2``).
        inversion: the solver's result of the inversion pass.
    """

    z: Tensor
    log_Lambda: Tensor
    sq_norm: Tensor
    inversion: Any


def log_Lambda_G_at_inverse(
    field: Any, x: Tensor, *, method: str = "divergence", **solve_kwargs: Any
) -> LambdaAtInverse:
    r"""``(1/n) log Lambda_G`` at ``z = F(x)`` from the inversion pass itself, per row of ``x``.

    Lemma D.1 (docs/theory.md §6.1) at the inverted noise: ``n log Lambda_G(F(x)) = log |det J_G(F(x))|``.

    One backward solve ``x -> z = F(x)`` (:func:`simulate.maps.invert`, ``method="ode"``), and
    ``log Lambda_G(F(x))`` without regenerating ``G(z)``:

    * ``"divergence"`` (Liouville along the inversion path):
      ``log |det J_G(F(x))| = -log |det J_F(x)| = -int_1^0 div v(x_t, t) dt``, so
      ``log Lambda = -logdet_F / n`` (needs ``field.divergence``);
    * ``"density_ratio"`` (Lemma D.1 at ``x`` itself): ``(log phi(F(x)) - log p_g(x)) / n`` (needs the
      field's exact ``log_prob``).

    This is the documented way to measure ``P_inst(tau) = P[Lambda_G(F(x)) > tau]`` (Theorem 4.1);
    see :func:`log_Lambda_G` for why regenerating is wrong where ``G`` is unstable.

    Args:
        field: the velocity field.
        x: data points, shape ``(B, n)``.
        method: ``"divergence"`` or ``"density_ratio"``.
        solve_kwargs: passed to :func:`simulate.maps.invert` (solver, steps, tolerances).
    """
    if method not in ("divergence", "density_ratio"):
        raise ValueError(f"method must be 'divergence' or 'density_ratio', got {method!r}")
    if "logdet" in solve_kwargs:
        raise ValueError("log_Lambda_G_at_inverse sets logdet itself: do not pass it")
    n = x.shape[-1]
    sol = invert(field, x, logdet=method == "divergence", **solve_kwargs)
    z = sol.x
    sq = (z * z).sum(-1)
    if method == "divergence":
        log_lambda = -sol.logdet / n
    else:
        log_lambda = log_Lambda_density_ratio(log_standard_normal_density(sq_norm=sq, n=n), field.log_prob(x, 1.0), n)
    if not bool(torch.isfinite(log_lambda).all()):
        raise RuntimeError("log_Lambda_G_at_inverse: non-finite log Lambda (solver failure or x outside the support)")
    return LambdaAtInverse(z=z, log_Lambda=log_lambda, sq_norm=sq, inversion=sol)
