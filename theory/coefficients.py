"""Instability coefficients of a map (docs/theory.md §2: Definitions 2.2 and 4.1).

For a C^1 map ``f: R^n -> R^m``, a point ``x``, a direction ``u != 0`` and a perturbation
``D != 0`` (docs/theory.md §2):

- intrinsic instability coefficient ``lambda_f(x, u) = ||J_f(x) u|| / ||u||`` (Definition 2.2);
  its maximum over ``u`` is the spectral norm ``||J_f(x)||_2`` (largest singular value);
- instability coefficient ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||`` (finite perturbation);
- geometric average ``Lambda_f(x) = (prod_i sigma_i(J_f(x)))^(1/n) = |det J_f(x)|^(1/n)``
  (Definition 4.1), for square Jacobians.

Batched maps
------------
Every function here takes a *row-wise batched* torch callable ``f``: ``x`` has shape
``(B, *shape)``, ``f(x)`` has shape ``(B, *shape_out)``, and row ``b`` of ``f(x)`` depends only
on row ``b`` of ``x`` (no mixing across the batch, e.g. no batch normalisation in training
mode). The simulator's generation map and a diffusion model's inversion/regeneration are such
maps. Each row is one point: ``n = prod(shape)`` is the input dimension, ``prod(shape_out)``
the output dimension, norms are Euclidean over all non-batch dimensions, and every result is
a tensor of shape ``(B,)`` (one value per row). The map is evaluated in the dtype and on the
device of ``x``; one convention rounds the last step of every coefficient (docs/theory.md §12):
norms are accumulated in float64 and the determinant is taken in float64, so ``lambda_f``,
``mu_f``, the spectral norm and ``log Lambda_f`` are float64 whatever the dtype of ``x``.

Derivatives come from ``torch.func``: one forward-mode JVP gives ``J u`` (``torch.func.jvp``, or
any function of its signature passed as ``jvp``, e.g. one that sets an attention kernel), one
reverse-mode VJP gives ``J^T w``; with ``mode="reverse"``, ``J u`` comes from the double-backward trick on a
stored :class:`Linearization` instead. ``f`` must therefore be differentiable by ``torch.func`` (pure torch
operations; no in-place updates of captured tensors that ``torch.func`` rejects). Results are
detached from any autograd graph.
"""

from __future__ import annotations

from typing import Any

import torch

from theory._maps import JVP_MODES, BatchedMap, JvpFn, _check_chunk, _check_like, _check_x, _eval, _jvp_mode
from theory._validate import as_int_array, require_positive
from theory.jacobian import jacobian, jacobian_forward
from theory.power_iteration import (
    FuncLinearization,
    Linearization,
    SpectralNorm,
    _FirstVjpProbe,
    _rownorm64,
    _unit_rows,
    power_iteration,
)

__all__ = [
    "Linearization",
    "JVP_MODES",
    "lambda_f",
    "mu_f",
    "jacobian",
    "jacobian_forward",
    "SpectralNorm",
    "spectral_norm",
    "log_Lambda_f",
    "Lambda_f",
    "log_Lambda_from_singular_values",
]

# --------------------------------------------------------------------------------------
# Definition 2.2 and the finite-perturbation coefficient
# --------------------------------------------------------------------------------------


def lambda_f(
    f: BatchedMap,
    x: torch.Tensor,
    u: torch.Tensor,
    mode: str = "forward",
    *,
    jvp: JvpFn | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Intrinsic instability coefficient (Definition 2.2), per row, by one JVP.

    ``lambda_f(x, u) = ||J_f(x) u|| / ||u||`` (docs/theory.md §2.1), ``J_f(x) u`` by forward
    mode (``jvp``, default ``torch.func.jvp``) or by the double-backward trick
    (``mode="reverse"``; docs/theory.md §9.1). The one implementation for ``simulate`` (the
    whole batch in one call) and ``largemodel.study.instability.jvp_lambda`` (its math-attention JVP,
    rows in chunks). The norms are accumulated in float64.

    Args:
        f: row-wise batched map, ``(B, *shape) -> (B, *shape_out)`` (see module docstring).
        x: points, shape ``(B, *shape)``, finite, real floating point.
        u: directions, same shape as ``x``, non-zero in every row.
        mode: ``"forward"`` or ``"reverse"``.
        jvp: forward mode only: a function with the signature of ``torch.func.jvp``
            (``jvp(f, (x,), (u,)) -> (f(x), J u)``), e.g. one that sets an attention kernel.
        batch_size: rows per derivative call (>= 1; default all ``B`` at once); the row
            results are concatenated, so the values do not depend on it for a row-wise ``f``
            whose arithmetic does not depend on the batch size.

    Returns:
        Tensor of shape ``(B,)``, float64.

    Raises:
        ValueError: ``x`` not a finite floating tensor, ``u`` of another shape, non-finite or
            zero in some row, ``f`` not returning a batch of the same size, a ``jvp`` with
            ``mode="reverse"``, or ``batch_size`` not a positive integer.
    """
    x = _check_x(x)
    u = _check_like("u", u, x)
    if mode not in JVP_MODES:
        raise ValueError(f"mode must be one of {', '.join(JVP_MODES)}, got {mode!r}")
    if jvp is not None and mode != "forward":
        raise ValueError("a jvp function applies to mode='forward' only")
    step = _check_chunk("batch_size", batch_size)
    if step is None or step >= x.shape[0]:
        ju = _jvp_mode(f, x, u, mode, jvp)
    else:
        ju = torch.cat([_jvp_mode(f, x[i : i + step], u[i : i + step], mode, jvp) for i in range(0, x.shape[0], step)])
    return _rownorm64(ju) / _rownorm64(u)


def mu_f(
    f: BatchedMap,
    x: torch.Tensor,
    delta: torch.Tensor,
    fx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Instability coefficient for a finite perturbation (section 2), per row.

    ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||``.

    For a linear map ``mu_f(x, D) = lambda_f(x, D)`` for every ``D``; for a C^1 map
    ``mu_f(x, s u) -> lambda_f(x, u)`` as ``s -> 0`` (Proposition 2.1).

    Args:
        f: row-wise batched map (see module docstring).
        x: points, shape ``(B, *shape)``, finite.
        delta: perturbations ``D``, same shape as ``x``, non-zero in every row.
        fx: optional precomputed ``f(x)`` (saves one evaluation of ``f``).

    Returns:
        Tensor of shape ``(B,)``, float64 (outputs compared in float64); ``inf``/``nan`` when
        ``f(x + D)`` is not finite.

    Raises:
        ValueError: invalid ``x``, ``delta`` (shape, finiteness, a zero row) or ``fx``
            (leading dimension or shape different from ``f(x + D)``).
    """
    x = _check_x(x)
    delta = _check_like("delta", delta, x)
    fxd = _eval(f, x + delta)
    if fx is None:
        fx = _eval(f, x)
    else:
        if not isinstance(fx, torch.Tensor) or tuple(fx.shape) != tuple(fxd.shape):
            shape = tuple(fx.shape) if isinstance(fx, torch.Tensor) else type(fx).__name__
            raise ValueError(f"fx must be f(x), of shape {tuple(fxd.shape)}, got {shape}")
        fx = fx.detach().to(dtype=fxd.dtype, device=fxd.device)
    return _rownorm64(fxd.to(torch.float64) - fx.to(torch.float64)) / _rownorm64(delta)


# --------------------------------------------------------------------------------------
# Full Jacobian and spectral norm
# --------------------------------------------------------------------------------------


def _spectral_norm_svd(f: BatchedMap, x: torch.Tensor) -> SpectralNorm:
    jac = jacobian(f, x)
    _, s, vh = torch.linalg.svd(jac.to(torch.float64), full_matrices=False)
    B = x.shape[0]
    return SpectralNorm(
        value=s[:, 0],
        vector=vh[:, 0, :].reshape(x.shape).to(x.dtype),
        iterations=torch.zeros(B, dtype=torch.int64, device=x.device),
        converged=torch.ones(B, dtype=torch.bool, device=x.device),
    )


def spectral_norm(
    f: BatchedMap,
    x: torch.Tensor,
    method: str = "power",
    iters: int = 100,
    tol: float = 1e-10,
    generator: torch.Generator | None = None,
    v0: torch.Tensor | None = None,
    mode: str = "forward",
) -> SpectralNorm:
    """Spectral norm ``||J_f(x)||_2 = max_u lambda_f(x, u)`` (docs/theory.md §2.1, §9.2), per row.

    ``||J_f(x)||_2 = sigma_1(J_f(x)) = max_{u != 0} ||J_f(x) u|| / ||u||``.

    ``method="power"``: :func:`theory.power_iteration.power_iteration` on ``J^T J`` with one JVP (``w = J v``) and one VJP
    (``g = J^T w``) per iteration; the estimate is ``||J v_k||`` with ``v_k`` the current unit
    vector, and a row stops (its vector and value frozen) when the relative change of its
    estimate between successive iterations is ``<= tol`` (``tol`` is floored at ``10 * eps``
    of the dtype, the finest change the estimate can resolve). The value then converges
    like ``(sigma_2 / sigma_1)^(2k)`` but the vector only like ``(sigma_2 / sigma_1)^k``, so
    the vector is accurate to about ``sqrt(tol)``. The start vector is ``v0`` or a Gaussian
    draw from ``generator`` (default: a fresh generator seeded with 0, so results are
    reproducible). ``method="svd"``: singular values of the full :func:`jacobian`
    (small ``n`` only), exact up to round-off. If ``f`` supports forward mode only (the
    first VJP fails, e.g. because ``f`` updates tensors in place), ``"power"`` falls back to
    ``"svd"`` on the forward-mode Jacobian (``n`` JVPs; then ``iterations`` is 0).

    Args:
        f: row-wise batched map (see module docstring).
        x: points, shape ``(B, *shape)``, finite.
        method: ``"power"`` or ``"svd"``.
        iters: maximum number of power iterations (>= 1).
        tol: relative-change tolerance of the power iteration (> 0).
        generator: torch generator for the random start vector.
        v0: start vector, same shape as ``x``, non-zero in every row.
        mode: ``"forward"`` (``torch.func`` JVP each iteration; memory-light, suits large
            networks) or ``"reverse"`` (one stored :class:`Linearization`; each iteration is two
            backward passes, no re-evaluation of ``f``; fastest for the simulator's maps).

    Returns:
        :class:`SpectralNorm` with per-row ``value``, ``vector``, ``iterations``, ``converged``.
    """
    x = _check_x(x)
    if method not in ("power", "svd"):
        raise ValueError(f"method must be 'power' or 'svd', got {method!r}")
    if mode not in JVP_MODES:
        raise ValueError(f"mode must be one of {', '.join(JVP_MODES)}, got {mode!r}")
    iters = int(as_int_array("iters", iters, minimum=1))
    tol = float(require_positive("tol", tol))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if method == "svd":
        return _spectral_norm_svd(f, x)

    if v0 is None:
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        v0 = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    v0 = _check_like("v0", v0, x)
    tol_eff = max(tol, 10.0 * torch.finfo(x.dtype).eps)
    op = _FirstVjpProbe(Linearization(f, x) if mode == "reverse" else FuncLinearization(f, x))
    try:
        return power_iteration(op, _unit_rows(v0, v0), iters=iters, tol=tol_eff)
    except RuntimeError:
        if op.first_vjp_failed:  # f has no reverse mode (e.g. in-place updates): use the full Jacobian
            return _spectral_norm_svd(f, x)
        raise



# --------------------------------------------------------------------------------------
# Definition 4.1: geometric average of the singular values
# --------------------------------------------------------------------------------------


def log_Lambda_from_singular_values(svals: Any) -> torch.Tensor:
    """``log Lambda = (1/n) sum_i log sigma_i`` from singular values (Definition 4.1).

    Args:
        svals: singular values, shape ``(..., n)`` with ``n >= 1``, finite and ``>= 0``.

    Returns:
        Tensor of shape ``(...)``; ``-inf`` where some singular value is 0.
    """
    t = svals.detach() if isinstance(svals, torch.Tensor) else torch.as_tensor(svals, dtype=torch.float64)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim < 1 or t.shape[-1] < 1:
        raise ValueError(f"svals must have shape (..., n) with n >= 1, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("svals must be finite")
    if bool((t < 0).any()):
        raise ValueError("svals must be >= 0")
    return torch.log(t).mean(dim=-1)


def log_Lambda_f(
    f: BatchedMap,
    x: torch.Tensor,
    *,
    jvp: JvpFn | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Log of the geometric average of the singular values (Definition 4.1), per row.

    ``log Lambda_f(x) = (1/n) log |det J_f(x)| = (1/n) sum_i log sigma_i(J_f(x))``
    (docs/theory.md §2.3), computed with ``torch.linalg.slogdet`` of the full Jacobian cast to
    float64 (docs/theory.md §9.3; small ``n``). A singular Jacobian gives ``-inf`` (``Lambda_f = 0``).
    The Jacobian is :func:`jacobian` by default, or :func:`jacobian_forward` (forward-mode
    columns, ``chunk`` basis vectors per call of ``jvp``) when ``jvp`` or ``chunk`` is given:
    the one implementation for ``simulate`` and ``largemodel.study.instability.log_lambda_jacobian``.

    Args:
        f: row-wise batched map with as many outputs as inputs per row.
        x: points, shape ``(B, *shape)``, finite.
        jvp: a function with the signature of ``torch.func.jvp`` (forward-mode columns).
        chunk: basis vectors per JVP call for the forward-mode columns (>= 1; default 64).

    Returns:
        Tensor of shape ``(B,)``, float64.

    Raises:
        ValueError: the Jacobian is not square (``n_out != n_in``), invalid ``x`` or ``chunk``.
    """
    if jvp is None and chunk is None:
        jac = jacobian(f, x)
    else:
        jac = jacobian_forward(f, x, jvp=jvp, chunk=64 if chunk is None else chunk)
    n_out, n_in = jac.shape[1], jac.shape[2]
    if n_out != n_in:
        raise ValueError(f"f must have a square Jacobian for Lambda_f (n_out == n_in), got {n_out} x {n_in}")
    _, logabsdet = torch.linalg.slogdet(jac.to(torch.float64))
    return logabsdet / n_in


def Lambda_f(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """Geometric average of the singular values (Definition 4.1), per row.

    ``Lambda_f(x) = (prod_i sigma_i(J_f(x)))^(1/n) = |det J_f(x)|^(1/n)``
    ``= exp(log_Lambda_f(f, x))``; 0 for a singular Jacobian. Prefer :func:`log_Lambda_f`
    in high dimension (the product under- or overflows).
    """
    return torch.exp(log_Lambda_f(f, x))
