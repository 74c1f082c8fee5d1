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
a tensor of shape ``(B,)`` (one value per row). Computations stay in the dtype and on the
device of ``x``.

Derivatives come from ``torch.func``: one forward-mode JVP gives ``J u``, one reverse-mode
VJP gives ``J^T w``; with ``mode="reverse"``, ``J u`` comes from the double-backward trick on a
stored :class:`Linearization` instead. ``f`` must therefore be differentiable by ``torch.func`` (pure torch
operations; no in-place updates of captured tensors that ``torch.func`` rejects). Results are
detached from any autograd graph.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._validate import as_int_array, require_positive
from .power_iteration import (
    FuncLinearization,
    Linearization,
    SpectralNorm,
    _bcast,
    _FirstVjpProbe,
    _check_out,
    _rownorm,
    power_iteration,
)

__all__ = [
    "Linearization",
    "JVP_MODES",
    "lambda_f",
    "mu_f",
    "jacobian",
    "SpectralNorm",
    "spectral_norm",
    "log_Lambda_f",
    "Lambda_f",
    "log_Lambda_from_singular_values",
]

BatchedMap = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------
# validation and small helpers (shared with theory.prop21)
# --------------------------------------------------------------------------------------


def _check_x(x: Any, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a finite, real floating-point batch ``(B, *shape)`` with B, n >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, *shape), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a real floating-point dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must have at least one entry per row, got shape {tuple(x.shape)}")
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _check_like(name: str, value: Any, x: torch.Tensor, nonzero: bool = True) -> torch.Tensor:
    """Return ``value`` as a tensor with the dtype/device/shape of ``x`` (finite, rows non-zero)."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_complex():
            raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a tensor of the same shape as x") from exc
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"x and {name} must have the same shape, got {tuple(x.shape)} and {tuple(t.shape)}")
    t = t.to(dtype=x.dtype, device=x.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if nonzero and bool((_rownorm(t) == 0).any()):
        raise ValueError(f"{name} must be non-zero in every row")
    return t


def _jvp(f: BatchedMap, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), J_f(x) u)`` by one forward-mode JVP."""
    y, ju = torch.func.jvp(f, (x,), (u,))
    _check_out(y, x)
    return y.detach(), ju.detach()


JVP_MODES = ("forward", "reverse")


def _jvp_mode(f: BatchedMap, x: torch.Tensor, u: torch.Tensor, mode: str) -> torch.Tensor:
    """``J_f(x) u`` by forward mode (``torch.func.jvp``) or by the double-backward trick."""
    if mode == "forward":
        return _jvp(f, x, u)[1]
    if mode == "reverse":
        return Linearization(f, x).jvp(u)
    raise ValueError(f"mode must be one of {', '.join(JVP_MODES)}, got {mode!r}")


def _eval(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _check_out(f(x), x).detach()


# --------------------------------------------------------------------------------------
# Definition 2.2 and the finite-perturbation coefficient
# --------------------------------------------------------------------------------------


def lambda_f(f: BatchedMap, x: torch.Tensor, u: torch.Tensor, mode: str = "forward") -> torch.Tensor:
    """Intrinsic instability coefficient (Definition 2.2), per row, by one JVP.

    ``lambda_f(x, u) = ||J_f(x) u|| / ||u||``.

    Args:
        f: row-wise batched map, ``(B, *shape) -> (B, *shape_out)`` (see module docstring).
        x: points, shape ``(B, *shape)``, finite, real floating point.
        u: directions, same shape as ``x``, non-zero in every row.

    Returns:
        Tensor of shape ``(B,)`` in the dtype of ``x``.

    Raises:
        ValueError: ``x`` not a finite floating tensor, ``u`` of another shape, non-finite or
            zero in some row, or ``f`` not returning a batch of the same size.
    """
    x = _check_x(x)
    u = _check_like("u", u, x)
    ju = _jvp_mode(f, x, u, mode)
    return _rownorm(ju) / _rownorm(u)


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
        Tensor of shape ``(B,)``; ``inf``/``nan`` when ``f(x + D)`` is not finite.

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
    return _rownorm(fxd - fx) / _rownorm(delta)


# --------------------------------------------------------------------------------------
# Full Jacobian and spectral norm
# --------------------------------------------------------------------------------------


def jacobian(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """Full Jacobian ``J_f(x)`` of every row, flattened to shape ``(B, n_out, n_in)``.

    ``J_f(x)[b, i, k] = d f(x)_b,i / d x_b,k`` with ``i``, ``k`` the row-major flat indices
    of ``shape_out`` and ``shape``. Because the map is row-wise, the Jacobian of
    ``x -> f(x).sum(0)`` (computed with ``torch.func.jacrev``, ``n_out`` vectorised VJPs)
    holds every row's Jacobian at once. If ``f`` cannot be vectorised by ``torch.vmap``
    (data-dependent control flow, ``.item()``), it falls back to ``n_out`` sequential VJPs.
    If ``f`` does not support reverse mode either (e.g. it updates tensors in place), it
    uses ``n_in`` forward-mode JVPs. Memory and time grow like ``B * n_out * n_in``: meant for
    small ``n``.

    Args:
        f: row-wise batched map (see module docstring).
        x: points, shape ``(B, *shape)``, finite.

    Returns:
        Tensor of shape ``(B, n_out, n_in)`` in the dtype of ``x``.
    """
    x = _check_x(x)
    B = x.shape[0]
    n_in = x[0].numel()
    y = _eval(f, x)
    n_out = y[0].numel()
    try:
        jac = torch.func.jacrev(lambda z: f(z).sum(0))(x)  # (*shape_out, B, *shape)
        return jac.detach().reshape(n_out, B, n_in).permute(1, 0, 2).contiguous()
    except RuntimeError:  # not vmappable: one VJP per output coordinate instead
        pass
    jac = torch.empty((B, n_out, n_in), dtype=x.dtype, device=x.device)
    try:
        y, vjp_fn = torch.func.vjp(f, x)
        cot = torch.zeros((B, n_out), dtype=y.dtype, device=y.device)
        for i in range(n_out):
            cot.zero_()
            cot[:, i] = 1
            (g,) = vjp_fn(cot.reshape(y.shape))
            jac[:, i, :] = g.detach().reshape(B, n_in)
        return jac
    except RuntimeError:  # no reverse mode (e.g. in-place updates): one JVP per input coordinate
        pass
    basis = torch.zeros((B, n_in), dtype=x.dtype, device=x.device)
    for k in range(n_in):
        basis.zero_()
        basis[:, k] = 1
        _, ju = _jvp(f, x, basis.reshape(x.shape))
        jac[:, :, k] = ju.reshape(B, n_out)
    return jac


def _spectral_norm_svd(f: BatchedMap, x: torch.Tensor) -> SpectralNorm:
    jac = jacobian(f, x)
    _, s, vh = torch.linalg.svd(jac, full_matrices=False)
    B = x.shape[0]
    return SpectralNorm(
        value=s[:, 0],
        vector=vh[:, 0, :].reshape(x.shape),
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
        return power_iteration(op, v0 / _bcast(_rownorm(v0), v0), iters=iters, tol=tol_eff)
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


def log_Lambda_f(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """Log of the geometric average of the singular values (Definition 4.1), per row.

    ``log Lambda_f(x) = (1/n) log |det J_f(x)| = (1/n) sum_i log sigma_i(J_f(x))``,
    computed with ``torch.linalg.slogdet`` of the full :func:`jacobian` (small ``n``).
    A singular Jacobian gives ``-inf`` (``Lambda_f = 0``).

    Args:
        f: row-wise batched map with as many outputs as inputs per row.
        x: points, shape ``(B, *shape)``, finite.

    Returns:
        Tensor of shape ``(B,)``.

    Raises:
        ValueError: the Jacobian is not square (``n_out != n_in``), or invalid ``x``.
    """
    jac = jacobian(f, x)
    n_out, n_in = jac.shape[1], jac.shape[2]
    if n_out != n_in:
        raise ValueError(f"f must have a square Jacobian for Lambda_f (n_out == n_in), got {n_out} x {n_in}")
    _, logabsdet = torch.linalg.slogdet(jac)
    return logabsdet / n_in


def Lambda_f(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """Geometric average of the singular values (Definition 4.1), per row.

    ``Lambda_f(x) = (prod_i sigma_i(J_f(x)))^(1/n) = |det J_f(x)|^(1/n)``
    ``= exp(log_Lambda_f(f, x))``; 0 for a singular Jacobian. Prefer :func:`log_Lambda_f`
    in high dimension (the product under- or overflows).
    """
    return torch.exp(log_Lambda_f(f, x))
