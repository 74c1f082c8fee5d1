r"""Jacobian products of the regeneration ``G`` and of the velocity ``u`` by two routes (docs/theory.md §10.6).

``math-jvp`` (forward-mode AD under the math attention kernel) and ``vjp-fd`` (reverse mode and
forward or central differences, every network call on the default, fused attention kernels); the routes are
named in :mod:`largemodel.models.routes`. Here:

* :func:`math_jvp`: ``torch.func.jvp`` under the math kernel;
* :class:`RegenerationLinearization`: ``J_G(z)`` as a ``theory.power_iteration.LinearOperator``,
  ``jvp`` by forward-mode AD (route ``math-jvp``) or by finite differences along the recorded
  trajectory (route ``vjp-fd``, :func:`fd_tangent`), ``vjp`` by reverse mode through one
  checkpointed graph (both routes);
* :func:`fd_tangent`: ``J_G(z) v`` by the tangent recursion of the solver with each
  ``J_u(x_j) t`` replaced by ``||t|| (u(x_j + h t^) - u_j) / h`` (``--fd-scheme forward``, ``u_j``
  the velocity recorded on the trajectory) or ``||t|| (u(x_j + h t^) - u(x_j - h t^)) / 2h``
  (``central``);
* :func:`divergence_vjp`: Hutchinson's ``e^T J_u e`` as ``e^T (J_u^T e)`` (one VJP per probe).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from largemodel.models.flow_model import math_attention
from largemodel.study.ode import Velocity, generate
from largemodel.models.routes import DEFAULT_FD_SCHEME, check_fd_scheme, check_route

__all__ = ["math_jvp", "RegenerationLinearization", "TrajectoryRecorder", "Point", "fd_tangent", "fd_jvp_generate",
           "divergence_vjp"]


def math_jvp(func: Callable[[Tensor], Tensor], primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``torch.func.jvp`` under the math attention kernel (the fused kernels lack forward AD)."""
    with math_attention():
        return torch.func.jvp(func, primals, tangents)


def _row_norm64(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1, dtype=torch.float64)


def _rows(r: Tensor, like: Tensor) -> Tensor:
    return r.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


#: one recorded evaluation: the point ``x_j``, its ``sigma_j`` and the velocity ``u(x_j, sigma_j)``
#: (detached; ``None`` unless the recorder keeps velocities)
Point = tuple[Tensor, float, "Tensor | None"]


class TrajectoryRecorder:
    """Wraps ``u``; while ``recording``, keeps every evaluation ``(x_j, s_j, u_j)`` in call order
    (Heun's predictor points included), detached: the trajectory :func:`fd_tangent` linearizes at
    and, with ``keep_velocity`` (forward differences), the base values ``u_j = u(x_j, s_j)`` of its
    differences, the velocities the regeneration computed anyway (no extra network call)."""

    def __init__(self, velocity: Velocity, *, keep_velocity: bool = False) -> None:
        self.velocity, self.recording, self.keep_velocity = velocity, True, keep_velocity
        self.points: list[Point] = []

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        u = self.velocity(x, sigma)
        if self.recording:
            self.points.append((x.detach(), float(sigma), u.detach() if self.keep_velocity else None))
        return u


def fd_tangent(velocity: Velocity, points: list[Point], v: Tensor, sigmas: Tensor, *, solver: str, h: float,
               scheme: str = DEFAULT_FD_SCHEME) -> Tensor:
    r"""``J_G(z) v`` from the recorded trajectory of ``G(z)`` by per-evaluation finite differences.

    Every solver step is affine in its velocity evaluations (Euler ``x + dh u``; Heun
    ``x + dh (u_0 + u(x + dh u_0)) / 2``), so its derivative along ``t`` is the same step run on the
    tangent with each ``u(x_j)`` replaced by ``J_u(x_j) t_j``: ``generate`` on ``v`` with the
    velocity ``t -> ||t|| D_h u(x_j, s_j)[t^]``, ``t^ = t / ||t||`` (each row's step
    ``||h t^|| = h``), ``x_j`` the ``j``-th recorded evaluation point (docs/theory.md §10.6):

    * ``scheme="central"``: ``D_h u[t^] = (u(x_j + h t^) - u(x_j - h t^)) / 2h``, error per
      evaluation ``O(h^2)`` truncation plus ``O(eps |u| / h)`` rounding; two rows per evaluation
      and row of ``v``;
    * ``scheme="forward"``: ``D_h u[t^] = (u(x_j + h t^) - u_j) / h`` with ``u_j = u(x_j)`` the
      velocity recorded with the point (no network call), error ``O(h)`` truncation plus
      ``O(eps |u| / h)`` rounding; one row per evaluation and row of ``v``.

    One network call per evaluation, no autograd. The step ``h`` is the caller's
    (``largemodel.study.instability.fd_step`` for the scheme and the network's dtype).
    """
    check_fd_scheme(scheme)
    it = iter(points)

    def tangent_velocity(t: Tensor, sigma: Tensor) -> Tensor:
        try:
            x, s, u0 = next(it)
        except StopIteration:
            raise RuntimeError("fd_tangent: more evaluations than the recorded trajectory holds") from None
        if float(sigma) != s or x.shape != t.shape:
            raise RuntimeError(f"fd_tangent: evaluation at sigma {float(sigma)} replayed on the point recorded at {s}")
        r = _row_norm64(t)
        th = t / _rows(torch.where(r > 0, r, torch.ones_like(r)), t)
        if scheme == "forward":
            if u0 is None:
                raise RuntimeError("fd_tangent: forward differences need the recorded velocities (keep_velocity=True)")
            return (velocity(x + h * th, sigma) - u0) / h * _rows(r, t)
        out = velocity(torch.cat([x + h * th, x - h * th]), sigma)
        b = t.shape[0]
        return (out[:b] - out[b:]) / (2.0 * h) * _rows(r, t)

    with torch.no_grad():
        jv = generate(tangent_velocity, v, sigmas, solver=solver)
    if next(it, None) is not None:
        raise RuntimeError("fd_tangent: the tangent used fewer evaluations than the trajectory")
    return jv


def fd_jvp_generate(velocity: Velocity, z: Tensor, v: Tensor, sigmas: Tensor, *, solver: str, h: float,
                    scheme: str = DEFAULT_FD_SCHEME) -> tuple[Tensor, Tensor]:
    """``(G(z), J_G(z) v)`` by route ``vjp-fd``: one recorded regeneration, then :func:`fd_tangent`."""
    rec = TrajectoryRecorder(velocity, keep_velocity=check_fd_scheme(scheme) == "forward")
    with torch.no_grad():
        gz = generate(rec, z, sigmas, solver=solver)
    return gz, fd_tangent(velocity, rec.points, v, sigmas, solver=solver, h=h, scheme=scheme)


class RegenerationLinearization:
    r"""``J_G(z)`` of the discrete regeneration as a :class:`theory.power_iteration.LinearOperator`.

    ``vjp(w)``: a backward pass through one checkpointed graph (each step recomputed), memory one
    step's activations plus the ``N`` step inputs; the graph uses the default (fused) kernels.
    ``jvp(v)``: route ``math-jvp``, forward-mode AD under the math attention kernel; route
    ``vjp-fd`` (``h`` required), :func:`fd_tangent` along the trajectory recorded while the graph
    was built (``nfe`` points kept, and their velocities for ``scheme="forward"``), one
    (``"forward"``) or two (``"central"``) plain forward rows per evaluation.
    """

    def __init__(self, velocity: Velocity, z: Tensor, sigmas: Tensor, solver: str, *, route: str = "math-jvp",
                 h: float | None = None, scheme: str = DEFAULT_FD_SCHEME) -> None:
        if check_route(route) == "auto":
            raise ValueError("RegenerationLinearization needs a resolved route (math-jvp or vjp-fd), not 'auto'")
        if route == "vjp-fd" and not (h is not None and h > 0):
            raise ValueError(f"route vjp-fd needs a positive finite-difference step h, got {h!r}")
        self._args, self._z, self._route, self._h = (velocity, sigmas, solver), z.detach(), route, h
        self._scheme = check_fd_scheme(scheme)
        self._zz = z.detach().clone().requires_grad_(True)
        self._rec = TrajectoryRecorder(velocity, keep_velocity=scheme == "forward") if route == "vjp-fd" else None
        with torch.enable_grad():
            self._gz = generate(self._rec or velocity, self._zz, sigmas, solver=solver, checkpoint=True)
        if self._rec is not None:
            self._rec.recording = False  # the backward's recomputations are not new points

    def jvp(self, v: Tensor) -> Tensor:
        velocity, sigmas, solver = self._args
        if self._rec is not None:
            assert self._h is not None
            return fd_tangent(velocity, self._rec.points, v, sigmas, solver=solver, h=self._h, scheme=self._scheme)
        with torch.no_grad():
            return math_jvp(lambda y: generate(velocity, y, sigmas, solver=solver), (self._z,), (v,))[1]

    def vjp(self, w: Tensor) -> Tensor:
        (g,) = torch.autograd.grad(self._gz, self._zz, grad_outputs=w, retain_graph=True)
        return g


def divergence_vjp(velocity: Velocity, x: Tensor, s: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    r"""``u(x, s)`` and Hutchinson's ``div_x u ~ (1/P) sum_p e_p^T J_u e_p`` by reverse mode.

    ``e^T J_u e = e^T (J_u^T e)``: one forward pass of the ``B`` rows with a graph (default, fused
    kernels), then one VJP per probe through it (docs/theory.md §9.4, §10.6). The same scalar as
    the forward-mode route's ``e^T (J_u e)`` for the same probes.

    Args:
        probes: ``(B, P, ...)`` Rademacher probes.

    Returns:
        ``u`` ``(B, ...)`` (detached) and the divergence estimate ``(B,)`` float64.
    """
    b, p = probes.shape[:2]
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        u = velocity(xx, s)
        div = torch.zeros(b, p, dtype=torch.float64, device=x.device)
        for k in range(p):
            e = probes[:, k].to(u.dtype)
            (g,) = torch.autograd.grad(u, xx, e, retain_graph=k < p - 1)
            div[:, k] = (e.to(g.dtype) * g).flatten(1).sum(1).to(torch.float64)
    return u.detach(), div.mean(1)
