"""The one implementation of the explicit one-step schemes (Euler, Heun, RK4).

A scheme advances ``x`` from time ``t`` to ``t_next`` by ``x_next = x + Phi`` (docs/theory.md §4.1;
the same schemes on a model's sigma grid: docs/theory.md §10.3). The increments here are generic
over the right-hand side and over how times and the step are represented, so that

* :mod:`simulate.solvers.fixed` (time ``t: 0 -> 1``, float64 state, Python-float times, step
  ``h = t_next - t`` as a Python float, optional log-determinant component), and
* :mod:`largemodel.study.ode` (sigma grid ``1 -> 0``, float32 state, 0-dim float64 sigma tensors, step
  ``h = (s1 - s0).to(x.dtype)`` as diffusers computes it)

run the same floating-point operations in the same order. ``rhs(x, t)`` returns
``(v(x, t), div v(x, t) or None)``; the log-determinant component ``l`` (``dl/dt = div v``,
Lemma D.1) is advanced by the same weights when the divergence is not ``None``. The caller passes
the step ``h`` (and the times, of any type its ``rhs`` accepts) so that each side keeps its own
representation and rounding of them: the operations on the state (``h * v``, ``0.5 * h``,
``x + h * k_1``, ...) are then those each side ran before the two were merged, bit for bit.

Registries: :data:`STEP_INCREMENTS` (name -> increment) and :data:`STAGES` (name ->
right-hand-side evaluations per step, the nfe count of both packages).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from simulate.solvers.base import Rhs

__all__ = ["STAGES", "STEP_INCREMENTS", "Increment", "euler_increment", "heun_increment", "rk4_increment"]

Increment = Callable[[Rhs, Tensor, Any, Any, Any], "tuple[Tensor, Tensor | None]"]
"""``Phi(rhs, x, t, t_next, h) -> (dx, dl or None)`` with ``x_next = x + dx``, ``l_next = l + dl``."""


def euler_increment(rhs: Rhs, x: Tensor, t: Any, t_next: Any, h: Any) -> tuple[Tensor, Tensor | None]:
    """Explicit Euler (docs/theory.md §4.1): ``dx = h v(x, t)``, ``dl = h div v(x, t)``."""
    v, d = rhs(x, t)
    return h * v, (h * d if d is not None else None)


def heun_increment(rhs: Rhs, x: Tensor, t: Any, t_next: Any, h: Any) -> tuple[Tensor, Tensor | None]:
    """Heun = explicit trapezoid: ``k_1 = v(x, t)``, ``k_2 = v(x + h k_1, t_next)``,
    ``dx = (h / 2) (k_1 + k_2)`` (``dl`` likewise with the divergences)."""
    k1, d1 = rhs(x, t)
    k2, d2 = rhs(x + h * k1, t_next)
    dl = 0.5 * h * (d1 + d2) if d1 is not None else None  # type: ignore[operator]
    return 0.5 * h * (k1 + k2), dl


def rk4_increment(rhs: Rhs, x: Tensor, t: Any, t_next: Any, h: Any) -> tuple[Tensor, Tensor | None]:
    """Classical RK4: stages at ``t``, ``t_mid`` (twice), ``t_next`` with
    ``t_mid = (t + t_next) / 2``; ``dx = (h / 6) (k_1 + 2 k_2 + 2 k_3 + k_4)``."""
    t_mid = 0.5 * (t + t_next)
    k1, d1 = rhs(x, t)
    k2, d2 = rhs(x + (0.5 * h) * k1, t_mid)
    k3, d3 = rhs(x + (0.5 * h) * k2, t_mid)
    k4, d4 = rhs(x + h * k3, t_next)
    dx = (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    dl = (h / 6.0) * (d1 + 2.0 * d2 + 2.0 * d3 + d4) if d1 is not None else None  # type: ignore[operator]
    return dx, dl


STEP_INCREMENTS: dict[str, Increment] = {
    "euler": euler_increment,
    "heun": heun_increment,
    "rk4": rk4_increment,
}
"""``name -> Phi`` with ``x_{k+1} = x_k + Phi(rhs, x_k, t_k, t_{k+1}, h_k)[0]``."""

STAGES: dict[str, int] = {"euler": 1, "heun": 2, "rk4": 4}
"""Right-hand-side evaluations per step of each scheme."""
