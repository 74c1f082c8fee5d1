"""ODE solvers for the probability-flow ODE ``dx/dt = v(x, t)`` (docs/theory.md §1.1).

Generation integrates the ODE forward in time (``t: 0 -> 1``, noise to data, the map ``G``);
inversion integrates it backward (``t: 1 -> 0``, the map ``F = G^{-1}``). Every solver here
works in either direction: the sign of the step ``h = t_{k+1} - t_k`` carries it.

Two families, k-diffusion / torchdiffeq style:

* fixed-grid explicit one-step schemes on a user-given time grid ``ts`` -- :func:`euler`,
  :func:`heun` (explicit trapezoid), :func:`rk4` -- all with the signature
  ``solver(field, x, ts, *, logdet=False, callback=None) -> SolveResult`` and collected in
  :data:`SOLVERS`;
* the adaptive Dormand--Prince 5(4) pair :func:`dopri5` with *per-sample* error control:
  every row of the batch keeps its own time, step size and accept/reject decision, and rows
  that have reached the end time are no longer evaluated.

Log-determinant augmentation (docs/theory.md §4.1, Lemma D.1): with ``logdet=True`` the
state is augmented by ``l`` with ``dl/dt = div v(x, t)``, ``l(t_0) = 0``, integrated with the
same scheme (and, for :func:`dopri5`, under the same error control). Then
``l(t_1) = log |det d x(t_1) / d x(t_0)|``: for generation ``0 -> 1`` this is
``log |det J_G(z)|``, for inversion ``1 -> 0`` it is ``log |det J_F(x)|``.

The step increments ``Phi`` of the fixed-grid schemes (``x_{k+1} = x_k + Phi(x_k)``) are
exposed through :data:`STEP_INCREMENTS` (:mod:`simulate.solvers.steps`, the one implementation
of the Euler / Heun / RK4 step arithmetic) so that :mod:`simulate.inversion` inverts exactly the
floating-point map the solvers apply and :mod:`largemodel.study.ode` steps on its sigma grid with the
same operations.

Modules: :mod:`~simulate.solvers.base` (protocols, :class:`SolveResult`, the field's
right-hand side), :mod:`~simulate.solvers.checks` (validation, once per public entry),
:mod:`~simulate.solvers.steps` (step increments, registries), :mod:`~simulate.solvers.fixed`
(:func:`time_grid`, :func:`euler`, :func:`heun`, :func:`rk4`), :mod:`~simulate.solvers.dopri5`.

All arithmetic happens on the device and in the dtype of ``x``; there are no Python loops over
rows (only over time steps). Times are kept in float64 internally and handed to the field as
Python floats (fixed grid) or as ``(B,)`` tensors of ``x``'s dtype (adaptive solver).
"""

from simulate.solvers.base import SolveResult, SupportsDivergence, SupportsVelocity, TimeLike
from simulate.solvers.dopri5 import dopri5
from simulate.solvers.fixed import SOLVERS, euler, heun, rk4, time_grid
from simulate.solvers.steps import STAGES, STEP_INCREMENTS

__all__ = [
    "SOLVERS",
    "STAGES",
    "STEP_INCREMENTS",
    "SolveResult",
    "SupportsDivergence",
    "SupportsVelocity",
    "TimeLike",
    "dopri5",
    "euler",
    "heun",
    "rk4",
    "time_grid",
]
