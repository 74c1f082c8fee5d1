r"""Instability coefficients of a large model's generation map ``G`` (docs/theory.md §10.4).

``G`` is the discrete regeneration (Euler or Heun on the model's sigma grid, ``largemodel.study.ode``)
and ``z`` is usually the inverted noise ``z~ = F~(x)`` of a real image. Latents have shape
``(B, C, H, W)``, ``n = C H W``; every batch row is an independent sample (the transformer
never mixes rows), so one batched call gives per-sample Jacobian-vector products.

Three routes to the instability coefficient; each estimator is implemented once in ``theory``
(``theory.coefficients``, ``theory.estimators``, ``theory.power_iteration``) and this module
supplies the map, its linearization (:func:`math_jvp`) and the direction draws:

1. the paper's estimator (App. E): ``mu_bar(z) = (1/K) sum_k ||G(z + D_k) - G(z)|| / ||D_k||``,
   ``D_k = eps d_k``, ``eps = eps_rms sqrt(n)`` with ``d_k`` uniform on the unit sphere
   (``eps = ||D_k||`` as everywhere; ``eps_rms`` is its RMS size per coordinate); the ``K``
   perturbed regenerations are batched;
2. ``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` by forward-mode AD through the whole regeneration
   (``jvp_lambda``: ``theory.coefficients.lambda_f``, rows chunked by ``batch_size``) or by
   central differences along the same directions (``fd_lambda``: plain forward rows, batchable
   with the ``mu_bar`` rows, on the fused attention kernels; the default on GPU), and
   ``||J_G(z)||_2`` by power iteration on ``J^T J`` (``J v`` by forward-mode AD under the math
   attention kernel, or by forward or central differences along the trajectory on the fused
   kernels: ``--jacobian-route`` and ``--fd-scheme``, :mod:`largemodel.study.jacobian`; ``J^T w`` by reverse mode with
   per-step checkpointing on the default kernels);
3. ``log Lambda_G(z) = (1/n) log |det J_G(z)|`` in one inversion pass: Liouville,
   ``log |det J_G(z)| = -int_0^1 div_x u(x_sigma, sigma) dsigma`` along the inversion path, with
   the divergence by Hutchinson's estimator (each probe one JVP, or one VJP on the fused kernels)
   or exactly, for small ``n``; Lemma D.1 then gives
   the model's log-density ``log p_g(x) = log phi(z) - n log Lambda_G(z)``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from theory import coefficients, estimators
from theory._validate import require_int
from theory.estimators import unit_directions as _unit_directions
from theory.power_iteration import SpectralNorm, power_iteration
from theory.thm41 import log_standard_normal_density

from largemodel.models.flow_model import math_attention
from largemodel.study.jacobian import RegenerationLinearization, divergence_vjp, math_jvp
from largemodel.study.ode import Velocity, _check_grid, _check_solver, generate, nfe_per_map
from largemodel.models.routes import DEFAULT_FD_SCHEME, check_route, fd_step_rms

__all__ = [
    "EXACT_LOG_LAMBDA_MAX_DIM",
    "check_exact_dim",
    "unit_directions",
    "averaged_instability",
    "math_jvp",
    "jvp_lambda",
    "fd_lambda",
    "fd_rows",
    "fd_lambda_from_outputs",
    "spectral_norm_G",
    "RegenerationLinearization",
    "fd_step",
    "log_lambda_one_pass",
    "log_lambda_jacobian",
    "log_standard_normal",
]


#: largest ``n`` for which the exact divergence / Jacobian (``n`` JVPs per evaluation) is allowed
EXACT_LOG_LAMBDA_MAX_DIM = 4096


def check_exact_dim(n: int, evaluations: int | None = None) -> None:
    """Refuse ``--log-lambda exact`` above ``EXACT_LOG_LAMBDA_MAX_DIM`` dimensions, naming the cost."""
    if n > EXACT_LOG_LAMBDA_MAX_DIM:
        cost = f"{n:,} JVP rows per network evaluation"
        if evaluations is not None:
            cost += f", {n * evaluations:,} per image"
        raise ValueError(
            f"--log-lambda exact needs the full trace: {cost}; refused above n = {EXACT_LOG_LAMBDA_MAX_DIM:,} "
            "dimensions (use --log-lambda hutchinson)"
        )


#: one generator for every row, or one per image (rows image-major: image i's rows are contiguous)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def draw_per_image(draw: Callable[[tuple[int, ...], torch.Generator | None], Tensor], shape: tuple[int, ...],
                   generator: Generators) -> Tensor:
    """``draw(shape, generator)``, or with one generator per image (``largemodel.study.items.image_generators``)
    each image's ``shape[0] / len(generator)`` contiguous rows drawn from its own generator, so an
    image's draws do not depend on the images batched with it."""
    if generator is None or isinstance(generator, torch.Generator):
        return draw(shape, generator)
    gens = list(generator)
    if not gens or shape[0] % len(gens):
        raise ValueError(f"{shape[0]} rows cannot be split among {len(gens)} per-image generators")
    rows = shape[0] // len(gens)
    return torch.cat([draw((rows, *shape[1:]), g) for g in gens])


def unit_directions(shape: tuple[int, ...], generator: Generators, like: Tensor) -> Tensor:
    """:func:`theory.estimators.unit_directions` with one generator for all rows, or one per image
    (``draw_per_image``): image ``i``'s directions do not depend on the images batched with it."""
    return draw_per_image(lambda sh, g: _unit_directions(sh, g, like), shape, generator)


def log_standard_normal(z: Tensor) -> Tensor:
    """``log phi(z)`` of ``N(0, I_n)`` per row, ``-(n/2) log 2 pi - ||z||^2 / 2`` (float64)."""
    zf = z.flatten(1).to(torch.float64)
    return log_standard_normal_density(sq_norm=(zf * zf).sum(1), n=zf.shape[1])


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None) -> Tensor:
    if batch_size is None or x.shape[0] <= batch_size:
        return fn(x)
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def averaged_instability(
    velocity: Velocity,
    z: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    num_perturbations: int = 8,
    eps_rms: float = 1e-2,
    generator: Generators = None,
    gz: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    r"""The paper's averaged instability coefficient, per sample: ``mu`` of shape ``(B, K)`` (docs/theory.md §2.5).

    ``mu_k(z) = ||G(z + D_k) - G(z)|| / ||D_k||`` with ``||D_k|| = eps = eps_rms sqrt(n)``
    (``eps_rms``: the RMS size of the perturbation per latent coordinate); the mean over ``k`` is
    the paper's ``mu_bar``. :func:`theory.estimators.averaged_instability` with directions
    ``(B, K, ...)`` from :func:`theory.estimators.unit_directions`, float64 result. All ``B K``
    perturbed regenerations run through the model as batches of ``batch_size`` rows (default: all
    at once); ``G(z)`` is regenerated separately when not given.

    Args:
        z: inverted noises ``(B, C, H, W)``.
        gz: ``G(z)`` if already computed (the reconstruction), saving one regeneration.
    """
    k = require_int("num_perturbations", num_perturbations)
    if not (eps_rms > 0 and math.isfinite(eps_rms)):
        raise ValueError(f"--eps-rms must be a positive finite number, got {eps_rms!r}")
    b = z.shape[0]
    d = unit_directions((b * k, *z.shape[1:]), generator, z).view(b, k, *z.shape[1:])
    run = lambda y: _batched(lambda r: generate(velocity, r, sigmas, solver=solver), y, batch_size)  # noqa: E731
    if gz is None:
        gz = run(z)
    return estimators.averaged_instability(run, z, d, eps_rms * math.sqrt(z[0].numel()), gz=gz)


@torch.no_grad()
def jvp_lambda(
    velocity: Velocity,
    z: Tensor,
    sigmas: Tensor,
    directions: Tensor,
    *,
    solver: str = "euler",
    batch_size: int | None = None,
) -> Tensor:
    r"""Intrinsic instability coefficients ``lambda_G(z, u) = ||J_G(z) u|| / ||u||`` (Def. 2.2).

    :func:`theory.coefficients.lambda_f` of the regeneration ``G`` with :func:`math_jvp`
    (forward-mode AD through the whole regeneration under the math attention kernel), the
    ``B K`` (sample, direction) rows in chunks of ``batch_size`` rows (default: all at once),
    the norms in float64 (as every estimate in ``theory``).

    Args:
        z: ``(B, C, H, W)``.
        directions: ``(K, C, H, W)`` (the same ``K`` for every sample) or ``(B, K, C, H, W)``,
            non-zero.

    Returns:
        ``(B, K)`` float64.
    """
    b = z.shape[0]
    if directions.ndim == z.ndim:
        directions = directions.unsqueeze(0).expand(b, *directions.shape)
    if directions.shape[0] != b or directions.shape[2:] != z.shape[1:]:
        raise ValueError(f"directions of shape {tuple(directions.shape)} do not match z of shape {tuple(z.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    k = directions.shape[1]
    u = directions.reshape(b * k, *z.shape[1:]).to(z.dtype)
    g = lambda y: generate(velocity, y, sigmas, solver=solver)  # noqa: E731
    return coefficients.lambda_f(g, z.repeat_interleave(k, dim=0), u, jvp=math_jvp, batch_size=batch_size).view(b, k)


def fd_rows(z: Tensor, directions: Tensor, h: float) -> Tensor:
    r"""The ``2 B K`` inputs of central differences: rows ``z_b + h u_bk`` then ``z_b - h u_bk``
    for each (sample, direction), interleaved as ``(b, k, +), (b, k, -)``
    (:func:`theory.estimators.central_difference_rows`).

    ``directions``: ``(B, K, C, H, W)`` (or ``(K, C, H, W)`` shared by all samples), normalised here.
    """
    return estimators.central_difference_rows(z, directions, h)


def fd_lambda_from_outputs(outputs: Tensor, h: float, b: int, k: int) -> Tensor:
    r"""``lambda_G(z, u) ~ ||G(z + h u) - G(z - h u)|| / (2 h)`` from the regenerated ``fd_rows`` (float64)."""
    return estimators.central_difference_from_outputs(outputs, h, b, k)


@torch.no_grad()
def fd_lambda(
    velocity: Velocity,
    z: Tensor,
    sigmas: Tensor,
    directions: Tensor,
    *,
    solver: str = "euler",
    eps_rms: float = 1e-2,
    batch_size: int | None = None,
) -> Tensor:
    r"""``lambda_G(z, u)`` (Def. 2.2; docs/theory.md §9.1) by central differences along the given directions.

    ``lambda_G(z, u) = ||J_G(z) u|| = ||G(z + h u) - G(z - h u)|| / (2 h) + O(h^2)`` for unit
    ``u``, with ``h = eps_rms sqrt(n)`` (``eps_rms`` the RMS step per coordinate, as for ``mu_bar``):
    :func:`theory.estimators.central_difference_lambda`. Two plain regenerations per direction, no
    forward-mode AD: they run on the fused attention kernels and batch with the ``mu_bar`` rows
    (``fd_rows`` / ``fd_lambda_from_outputs``).

    Returns:
        ``(B, K)``, same shapes as ``jvp_lambda``.
    """
    if not (eps_rms > 0 and math.isfinite(eps_rms)):
        raise ValueError(f"--eps-rms must be a positive finite number, got {eps_rms!r}")
    h = eps_rms * math.sqrt(z[0].numel())
    run = lambda y: _batched(lambda r: generate(velocity, r, sigmas, solver=solver), y, batch_size)  # noqa: E731
    return estimators.central_difference_lambda(run, z, directions, h)


def fd_step(z: Tensor, network_dtype: torch.dtype | str | None = None, scheme: str = DEFAULT_FD_SCHEME) -> float:
    """The finite-difference step ``h = h_rms sqrt(n)`` of route ``vjp-fd``'s ``scheme`` for latents like
    ``z`` and a network in ``network_dtype`` (default: ``z``'s), ``h_rms`` by
    :func:`largemodel.models.routes.fd_step_rms`."""
    name = str(network_dtype if network_dtype is not None else z.dtype)
    return fd_step_rms(name, scheme) * math.sqrt(z[0].numel())


def spectral_norm_G(
    velocity: Velocity,
    z: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    iters: int = 10,
    generator: Generators = None,
    progress: Callable[[int, float], None] | None = None,
    route: str = "math-jvp",
    network_dtype: torch.dtype | None = None,
    fd_scheme: str = DEFAULT_FD_SCHEME,
) -> SpectralNorm:
    r"""``||J_G(z)||_2`` per sample by power iteration on ``J^T J`` (docs/theory.md §2.1, §9.2, §10.6).

    :func:`theory.power_iteration.power_iteration` on :class:`RegenerationLinearization` for a
    fixed number ``iters`` of iterations (no convergence test: ``converged`` is False), the start
    vector drawn by ``unit_directions`` from ``generator``, the norms in float64 (the study and
    ``largemodel.diagnose.explain.top_singular_direction`` share this one route). ``route``:
    ``math-jvp`` (``J v`` by forward-mode AD, math attention) or ``vjp-fd`` (``J v`` by finite
    differences of scheme ``fd_scheme``, ``forward`` or ``central``, with step :func:`fd_step` for
    ``network_dtype``; fused kernels throughout); ``J^T w`` by reverse mode on both.

    Returns:
        :class:`theory.power_iteration.SpectralNorm`: ``value`` ``(B,)``, the unit top right
        singular ``vector``, and ``history`` ``(iters, B)``.
    """
    iters = require_int("iters", iters)
    v = unit_directions(tuple(z.shape), generator, z)
    h = fd_step(z, network_dtype, fd_scheme) if check_route(route) == "vjp-fd" else None
    op = RegenerationLinearization(velocity, z, sigmas, solver, route=route, h=h, scheme=fd_scheme)
    report = None if progress is None else (lambda k, est: progress(k, float(est.max())))
    return power_iteration(op, v, iters=iters, on_iteration=report)


def _velocity_and_divergence(
    velocity: Velocity, x: Tensor, s: Tensor, probes: int, generator: Generators, exact: bool, chunk: int,
    route: str = "math-jvp",
) -> tuple[Tensor, Tensor]:
    """``u(x, s)`` and ``div_x u(x, s)`` per row (Hutchinson with Rademacher probes, or exact); the
    probes' ``e^T J e`` by forward mode (route ``math-jvp``) or by one VJP each (``vjp-fd``)."""
    b, shape = x.shape[0], x.shape[1:]
    n = x[0].numel()
    f = lambda y: velocity(y, s)  # noqa: E731
    if exact:
        u = None
        trace = torch.zeros(b, dtype=torch.float64, device=x.device)
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        for start in range(0, n, chunk):
            basis = eye[start : start + chunk]
            m = basis.shape[0]
            tangents = basis.unsqueeze(0).expand(b, m, n).reshape(b * m, *shape)
            with math_attention():
                out, jv = torch.func.jvp(f, (x.repeat_interleave(m, dim=0),), (tangents,))
            if u is None:
                u = out.view(b, m, *shape)[:, 0]
            trace += (jv.reshape(b, m, n) * basis.unsqueeze(0)).sum((1, 2)).to(torch.float64)
        assert u is not None
        return u, trace
    e = draw_per_image(lambda sh, g: torch.randint(0, 2, sh, generator=g), (b * probes, *shape), generator)
    e = e.to(x.device, x.dtype) * 2 - 1
    if route == "vjp-fd":
        return divergence_vjp(velocity, x, s, e.view(b, probes, *shape))
    with math_attention():
        out, jv = torch.func.jvp(f, (x.repeat_interleave(probes, dim=0),), (e,))
    div = (e * jv).flatten(1).sum(1).to(torch.float64).view(b, probes).mean(1)
    return out.view(b, probes, *shape)[:, 0], div


@torch.no_grad()
def log_lambda_one_pass(
    velocity: Velocity,
    x: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    probes: int = 1,
    exact: bool = False,
    chunk: int = 64,
    generator: Generators = None,
    route: str = "math-jvp",
) -> dict[str, Tensor]:
    r"""Invert ``x`` and get ``log Lambda_G`` at the inverted noise in the same pass (Lemma D.1).

    Along the inversion (sigma from 0 up to 1, the solver's own steps) accumulate
    ``I = int_0^1 div_x u dsigma`` with the solver's quadrature (Euler: left point; Heun:
    trapezoid over its two evaluations; ``heun-diffusers``: left point on its Euler step). Liouville gives ``log |det J_F~(x)| = I`` and so
    ``log |det J_G(z)| = -I``; then ``log Lambda_G(z) = -I / n`` and
    ``log p_g(x) = log phi(z) + I``.

    Args:
        probes: Rademacher probes per evaluation (Hutchinson); ignored when ``exact``.
        exact: the divergence as the exact trace of ``du/dx`` (``n`` JVPs per evaluation, in
            chunks of ``chunk`` basis vectors): small ``n`` only (forward mode whatever ``route``).
        route: ``math-jvp`` (each probe one forward-mode JVP, math attention) or ``vjp-fd`` (one
            forward pass with a graph and one VJP per probe, fused kernels; docs/theory.md §10.6).

    Returns:
        dict with ``z`` (the inverted noise, as ``invert`` gives it), ``log_det_G``,
        ``log_Lambda``, ``log_p_g``, ``z_norm2_over_n`` (all ``(B,)`` float64 except ``z``).
    """
    _check_solver(solver)
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if check_route(route) == "auto":
        raise ValueError("log_lambda_one_pass needs a resolved route (math-jvp or vjp-fd), not 'auto'")
    sig = _check_grid(sigmas, decreasing=True).flip(0).to(x.device)
    n = x[0].numel()
    if exact:
        check_exact_dim(n, evaluations=nfe_per_map(solver, sig.numel() - 1))
    acc = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    vd = lambda y, s: _velocity_and_divergence(velocity, y, s, probes, generator, exact, chunk, route)  # noqa: E731
    for i in range(sig.numel() - 1):
        s0, s1 = sig[i], sig[i + 1]
        h = float(s1 - s0)
        u0, d0 = vd(x, s0)
        if solver == "euler" or (solver == "heun-diffusers" and float(s0) == 0.0):
            x = x + h * u0
            acc += h * d0
        else:
            u1, d1 = vd(x + h * u0, s1)
            x = x + 0.5 * h * (u0 + u1)
            acc += 0.5 * h * (d0 + d1)
    log_phi = log_standard_normal(x)
    zf = x.flatten(1).to(torch.float64)
    return {
        "z": x,
        "log_det_G": -acc,
        "log_Lambda": -acc / n,
        "log_p_g": log_phi + acc,
        "z_norm2_over_n": (zf * zf).sum(1) / n,
    }


@torch.no_grad()
def log_lambda_jacobian(
    velocity: Velocity, z: Tensor, sigmas: Tensor, *, solver: str = "euler", chunk: int = 64
) -> Tensor:
    r"""``log Lambda_G(z) = (1/n) log |det J_G(z)|`` from the full Jacobian (forward-mode AD).

    :func:`theory.coefficients.log_Lambda_f` of the regeneration with :func:`math_jvp`: ``n``
    JVPs through the whole regeneration, in batches of ``chunk`` basis vectors, then
    ``slogdet`` in float64: small ``n`` only (the reference for the one-pass estimate).
    """
    check_exact_dim(z[0].numel())
    g = lambda y: generate(velocity, y, sigmas, solver=solver)  # noqa: E731
    return coefficients.log_Lambda_f(g, z, jvp=math_jvp, chunk=chunk)
