r"""Assertions on the paper's results, for test suites (``numpy.testing`` style).

Each ``assert_*`` passes silently (returning the underlying check for inspection) or raises
``AssertionError`` with a message that names the result and the bound, gives the measured value
against the bound (and ``log(measured / bound)``, the tightness: ``<= 0`` when it holds), the
row or point where it fails and what to look at. Bad arguments raise ``ValueError`` before any
computing. The mathematics lives in :mod:`theory` and :mod:`simulate`; nothing is re-derived here:

* :func:`assert_theorem31` -- Theorem 3.1 (``theory.check_theorem31``, ``simulate.reconstruct``);
* :func:`assert_proposition21` -- Proposition 2.1 (``theory.prop21.check_proposition_21``);
* :func:`assert_lemma_d1` -- Lemma D.1's log-determinants (``theory.coefficients.log_Lambda_f``,
  ``theory.log_Lambda_density_ratio``, ``simulate.instability.log_Lambda_G``);
* :func:`assert_theorem41` / :func:`assert_theorem43_bounds_valid` -- in
  :mod:`simulate.testing._bounds` (both exported by :mod:`simulate.testing`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from simulate.experiments.thm31.experiment import _path, _second_derivative, velocity_jacobian
from simulate.instability import LAMBDA_METHODS, log_Lambda_G
from simulate.maps import generate, invert, reconstruct
from simulate.solvers import SOLVERS, euler, time_grid
from theory.coefficients import log_Lambda_f
from theory.prop21 import Prop21Check, check_proposition_21
from theory.thm31 import Theorem31Check, check_theorem31
from theory.thm41 import log_Lambda_density_ratio, log_standard_normal_density

__all__ = ["assert_theorem31", "assert_proposition21", "assert_lemma_d1", "EXACT_SOLVE"]

#: Solver options of the "exact" maps ``F`` and ``G`` (dopri5, tight tolerances).
EXACT_SOLVE: dict[str, Any] = {"solver": "dopri5", "rtol": 1e-11, "atol": 1e-13}
_SEGMENT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


class _Velocity:
    """A plain callable ``v(x, t) -> (B, n)`` seen as a field (``velocity`` method)."""

    def __init__(self, fn: Callable[[Tensor, Any], Tensor]) -> None:
        self._fn = fn

    def velocity(self, x: Tensor, t: Any) -> Tensor:
        return self._fn(x, t)


def _as_field(field_or_velocity: Any) -> Any:
    if callable(getattr(field_or_velocity, "velocity", None)):
        return field_or_velocity
    if callable(field_or_velocity):
        return _Velocity(field_or_velocity)
    raise ValueError("field_or_velocity must be a field with velocity(x, t) or a callable v(x, t)")


def _as_points(name: str, x: Any) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, n) with B, n >= 1, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t


def _per_row(name: str, value: Any, B: int) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B or not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"{name} must be a positive finite scalar or one value per row ({B}), got {value!r}")
    return t


def _check_finite_velocity(field: Any, x: Tensor) -> None:
    """Refuse at once a velocity that is non-finite where the inversion starts (``t = 1``) or half way,
    instead of after a long solve: ``ValueError`` naming ``field_or_velocity``."""
    with torch.no_grad():
        for t in (1.0, 0.5):
            v = torch.as_tensor(field.velocity(x, t))
            if v.shape != x.shape or not bool(torch.isfinite(v).all()):
                what = f"shape {tuple(v.shape)}" if v.shape != x.shape else "non-finite values (NaN or inf)"
                raise ValueError(f"field_or_velocity returned {what} at t = {t:g} for x of shape {tuple(x.shape)}")


def _fmt_row(v: Tensor, limit: int = 6) -> str:
    vals = ", ".join(f"{float(a):.4g}" for a in v.reshape(-1)[:limit])
    return f"[{vals}{', ...' if v.numel() > limit else ''}]"


def _estimate_L_M(field: Any, x: Tensor, steps: int, path_steps: int) -> tuple[Tensor, Tensor]:
    """Sampled ``L`` and ``M`` of Theorem 3.1 per row (the estimators of ``simulate.experiments.thm31.experiment``).

    ``L = max ||J_v||_2`` over the exact inversion path (RK4, ``K`` steps, ``K`` a multiple of ``N``)
    and the segments between it and the Euler iterates; ``M = max ||x''(t)||`` with
    ``x'' = d_t v + J_v v`` along the path.
    """
    B, n = x.shape
    K = steps * max(1, math.ceil(path_steps / steps))
    with torch.no_grad():
        ts, path = _path(field, x, K)
    R = (K + 1) * B
    X, T = path.reshape(R, n), ts[:, None].expand(K + 1, B).reshape(R)
    V, J = velocity_jacobian(field, X, T)
    L = torch.linalg.matrix_norm(J, ord=2).reshape(K + 1, B).max(0).values
    M = torch.linalg.vector_norm(_second_derivative(field, X, T, V, J), dim=1).reshape(K + 1, B).max(0).values
    grid = time_grid(steps, 1.0, 0.0)
    iterates = [x]
    with torch.no_grad():
        euler(field, x, grid, callback=lambda info: iterates.append(info["x"]))
    Y, exact = torch.stack(iterates), path[:: K // steps]
    fr = torch.tensor(_SEGMENT_FRACTIONS, dtype=torch.float64)
    seg = exact[None] + fr[:, None, None, None] * (Y - exact)[None]
    Tseg = grid[None, :, None].expand(len(fr), steps + 1, B).reshape(-1)
    _, Jseg = velocity_jacobian(field, seg.reshape(-1, n), Tseg)
    L_tube = torch.linalg.matrix_norm(Jseg, ord=2).reshape(-1, B).max(0).values
    return torch.maximum(L, L_tube), M


def assert_theorem31(
    field_or_velocity: Any,
    x: Any,
    *,
    steps: int,
    solver: str | Callable[[Any, Tensor, Tensor], Any] = "euler",
    L: Any = None,
    M: Any = None,
    kappa: Any = None,
    path_steps: int = 400,
    rtol: float = 1e-9,
) -> list[Theorem31Check]:
    r"""Assert Theorem 3.1 on each row of ``x``: the inversion error within its bounds.

    With ``h = 1/N`` (``N = steps``), ``z = F(x)`` (exact, dopri5), ``z~`` the inversion by
    ``solver`` on the uniform grid ``1 -> 0`` and ``x^ = G(z~)`` (exact): (1)
    ``||z~ - z|| <= (h M / 2L)(e^L - 1)``, (3) ``||x^ - x|| <= (h M / 2L) e^L (e^L - 1)`` and,
    given ``kappa``, (2) ``||x^ - x|| <= kappa (h M / 2L)(e^L - 1)`` and ``kappa <= e^L``
    (:func:`theory.check_theorem31`, round-off slack ``rtol``).

    Args:
        field_or_velocity: a field with ``velocity(x, t)`` (any :mod:`simulate` field or a model
            wrapper) or a plain callable ``v(x, t)``; ``t`` is a float or a ``(B,)`` tensor.
        x: data points, ``(B, n)``.
        steps: ``N >= 1``.
        solver: ``"euler"`` (the theorem's scheme), another name of :data:`simulate.solvers.SOLVERS`
            or a callable ``solver(field, x, ts) -> Tensor | SolveResult`` (your own inversion
            scheme, ``ts`` the decreasing grid). The bounds are the theorem's for Euler; for another
            scheme they are a regression reference (a consistent scheme of order >= 1 meets them).
        L, M: the theorem's constants (scalar or per row); by default estimated per row along the
            exact path and the Euler iterates (sampled sups: needs ``v`` differentiable in ``x``).
        kappa: ``sup ||J_G||_2`` on ``[z, z~]`` (optional; enables bound (2)).
        path_steps: RK4 steps of the exact path used for the estimates.
        rtol: relative round-off slack of every bound.

    Returns:
        the per-row :class:`theory.thm31.Theorem31Check`.

    Raises:
        AssertionError: a bound fails at some row (the message gives the worst one).
        ValueError: invalid arguments.
    """
    field = _as_field(field_or_velocity)
    xt = _as_points("x", x)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    steps = int(steps)
    if isinstance(solver, str) and solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)} or a callable, got {solver!r}")
    if not isinstance(solver, str) and not callable(solver):
        raise ValueError(f"solver must be a name or a callable, got {solver!r}")
    if isinstance(path_steps, bool) or not isinstance(path_steps, int) or path_steps < 1:
        raise ValueError(f"path_steps must be an integer >= 1, got {path_steps!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")
    _check_finite_velocity(field, xt)
    B = xt.shape[0]
    L_t, M_t, k_t = _per_row("L", L, B), _per_row("M", M, B), _per_row("kappa", kappa, B)
    estimated = L_t is None or M_t is None
    if estimated:
        L_e, M_e = _estimate_L_M(field, xt, steps, path_steps)
        L_t = L_e if L_t is None else L_t
        M_t = M_e if M_t is None else M_t
    with torch.no_grad():
        z = invert(field, xt, **EXACT_SOLVE).x
        if isinstance(solver, str):
            rec = reconstruct(field, xt, inv_solver=solver, inv_steps=steps, gen_solver="dopri5",
                              rtol=EXACT_SOLVE["rtol"], atol=EXACT_SOLVE["atol"])
            z_tilde, recon = rec.z, rec.error
        else:
            out = solver(field, xt, time_grid(steps, 1.0, 0.0))
            z_tilde = torch.as_tensor(getattr(out, "x", out), dtype=torch.float64)
            if z_tilde.shape != xt.shape or not bool(torch.isfinite(z_tilde).all()):
                raise AssertionError(f"Theorem 3.1: the solver returned {tuple(z_tilde.shape)} or non-finite values "
                                     f"for x of shape {tuple(xt.shape)}")
            recon = torch.linalg.vector_norm(generate(field, z_tilde, **EXACT_SOLVE).x - xt, dim=1)
    noise = torch.linalg.vector_norm(z_tilde - z, dim=1)
    checks = [check_theorem31(float(noise[b]), float(recon[b]), float(L_t[b]), float(M_t[b]), steps,
                              kappa=None if k_t is None else float(k_t[b]), rtol=rtol) for b in range(B)]
    fails = []  # (excess, row, text)
    for b, c in enumerate(checks):
        b1 = c.bounds
        tests = [
            (c.noise_bound_holds, "(1) ||z~ - z|| <= (h M / 2L)(e^L - 1)", c.noise_error, b1.log_noise_error, c.tightness_noise),
            (c.gronwall_bound_holds, "(3) ||x^ - x|| <= (h M / 2L) e^L (e^L - 1)", c.reconstruction_error,
             b1.log_gronwall_error, c.tightness_gronwall),
        ]
        if c.kappa is not None:
            tests += [
                (c.reconstruction_bound_holds, "(2) ||x^ - x|| <= kappa (h M / 2L)(e^L - 1)", c.reconstruction_error,
                 b1.log_reconstruction_error, c.tightness_reconstruction),
                (c.kappa_bound_holds, "kappa <= e^L", c.kappa, b1.log_kappa_bound, math.log(c.kappa) - b1.log_kappa_bound),
            ]
        for ok, name, measured, log_bound, tight in tests:
            if not ok:
                fails.append((tight, b, f"bound {name}: measured {measured:.4g} > bound {math.exp(min(log_bound, 700)):.4g} "
                                        f"(log(measured/bound) = {tight:+.3g})"))
    if fails:
        tight, b, text = max(fails)
        rows = sorted({f[1] for f in fails})
        how = "estimated along the exact path" if estimated else "given"
        name = solver if isinstance(solver, str) else getattr(solver, "__name__", "callable")
        raise AssertionError(
            f"Theorem 3.1 violated at {len(rows)} of {B} rows (worst: row {b}).\n  {text}\n"
            f"  at x[{b}] = {_fmt_row(xt[b])}, N = {steps} (h = {1 / steps:.4g}), solver = {name!r}, "
            f"L = {float(L_t[b]):.4g}, M = {float(M_t[b]):.4g} ({how}), ||z~ - z|| = {float(noise[b]):.4g}, "
            f"||x^ - x|| = {float(recon[b]):.4g}.\n  A consistent first-order inversion of this field cannot "
            "exceed these bounds: check the solver's update and time grid, the velocity it evaluates, and "
            "(if you gave them) L and M."
        )
    return checks


def assert_proposition21(f: Callable[[Tensor], Tensor], x: Any, u: Any = None, **kwargs: Any) -> Prop21Check:
    r"""Assert Proposition 2.1 at each row of ``x`` (:func:`theory.prop21.check_proposition_21`).

    (a) ``mu_f(x, s u) -> lambda_f(x, u)`` as ``s -> 0`` (smallest error ``<= tol`` and decreasing
    over the truncation-dominated scales), and (b) the lower bound
    ``max_s mu_f(x, s v1) >= ||J_f(x)||_2 - eps``, with ``mu_f(x, D) = ||f(x + D) - f(x)|| / ||D||``.
    ``kwargs`` go to ``check_proposition_21`` (``scales``, ``eps``, ``tol``, ``relative``, ``seed``, ...).

    Raises:
        AssertionError: part (a) or (b) fails at some row: usually ``f`` is not C^1 at ``x`` or its
            autograd derivative disagrees with its values (a custom backward, a detach, a kink).
    """
    xt = torch.as_tensor(x) if not isinstance(x, Tensor) else x
    check = check_proposition_21(f, xt, u, **kwargs)
    msgs = []
    for b in torch.nonzero(~check.converged).reshape(-1).tolist():
        j = int(torch.argmin(check.errors[b]))
        msgs.append(
            f"(a) the limit mu_f(x, s u) -> lambda_f(x, u) fails at row {b}: smallest |mu - lambda| = "
            f"{float(check.min_error[b]):.4g} (at s = {float(check.scales[j]):.3g}) > tol = {float(check.tol[b]):.4g}; "
            f"lambda_f(x, u) = {float(check.lambda_u[b]):.6g} (autograd JVP), mu = {float(check.mu_u[b, j]):.6g}, "
            f"observed order {float(check.order[b]):.3g}"
        )
    for b in torch.nonzero(~check.holds).reshape(-1).tolist():
        msgs.append(
            f"(b) the lower bound max_s mu_f(x, s v1) >= ||J_f(x)||_2 - eps fails at row {b}: max mu = "
            f"{float(check.max_mu[b]):.6g} < {float(check.spectral_norm[b]):.6g} - {check.eps:g} "
            f"(power iteration converged: {bool(check.power_converged[b])})"
        )
    if msgs:
        rows = {int(r) for r in torch.nonzero(~check.verified).reshape(-1).tolist()}
        raise AssertionError(
            f"Proposition 2.1 violated at {len(rows)} of {xt.shape[0]} rows:\n  " + "\n  ".join(msgs[:5])
            + ("\n  ..." if len(msgs) > 5 else "")
            + "\n  Check that f is C^1 near x and that its autograd derivative matches its values."
        )
    return check


def _field_logdets(field: Any, z: Tensor, solve: dict[str, Any]) -> dict[str, Tensor]:
    return {m: log_Lambda_G(field, z, method=m, **solve).detach() for m in LAMBDA_METHODS}


def assert_lemma_d1(
    f_or_field: Any,
    z: Any,
    *,
    log_prob: Callable[[Tensor], Tensor] | None = None,
    log_det: Callable[[Tensor], Tensor] | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    solve: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    r"""Assert Lemma D.1: the log-determinants of ``J_G(z)`` agree, row by row.

    ``n log Lambda_G(z) = log |det J_G(z)| = log phi(z) - log p_g(G(z))`` (per dimension here).

    * a field (``velocity``, ``divergence``, ``log_prob``): its generation map ``G`` three ways
      (:func:`simulate.instability.log_Lambda_G`: density ratio, divergence integral, slogdet);
      ``solve`` updates the solver options (default: dopri5, ``rtol=1e-11``, ``atol=1e-13``;
      slogdet differentiates through the solve: ``{"rtol": 1e-8, "atol": 1e-10}`` is ~5x faster);
    * any batched map ``f: (B, n) -> (B, n)`` (a flow model): ``slogdet`` of its Jacobian
      (:func:`theory.coefficients.log_Lambda_f`), the density ratio with ``log_prob`` (the log
      density of ``f(z)`` for ``z ~ N(0, I)``), and your ``log_det(z)`` (``log |det J_f(z)|``, not
      divided by ``n``). At least one of ``log_prob``, ``log_det`` is needed.

    Values agree when ``|a - b| <= atol + rtol |b|`` (per-dimension logs). Returns them by method.
    """
    zt = _as_points("z", z)
    if not (atol >= 0 and rtol >= 0 and math.isfinite(atol) and math.isfinite(rtol)):
        raise ValueError(f"atol and rtol must be finite and >= 0, got {atol!r}, {rtol!r}")
    n = zt.shape[1]
    is_field = all(callable(getattr(f_or_field, a, None)) for a in ("velocity", "divergence", "log_prob"))
    if is_field:
        values = _field_logdets(f_or_field, zt, {**EXACT_SOLVE, **(solve or {})})
    else:
        if not callable(f_or_field):
            raise ValueError("f_or_field must be a field (velocity, divergence, log_prob) or a batched map")
        if log_prob is None and log_det is None:
            raise ValueError("log_prob or log_det: a batched map needs at least one to compare with slogdet")
        values = {"slogdet": log_Lambda_f(f_or_field, zt).detach()}
        if log_prob is not None or log_det is not None:
            with torch.no_grad():
                if log_prob is not None:
                    lp = torch.as_tensor(log_prob(f_or_field(zt)), dtype=torch.float64).reshape(-1)
                    ratio = log_Lambda_density_ratio(log_standard_normal_density(zt.numpy()), lp.numpy(), n)
                    values["density_ratio"] = torch.as_tensor(ratio)
                if log_det is not None:
                    values["log_det"] = torch.as_tensor(log_det(zt), dtype=torch.float64).reshape(-1) / n
    for name, v in values.items():
        if v.shape != (zt.shape[0],) or not bool(torch.isfinite(v).all()):
            raise AssertionError(f"Lemma D.1: the {name} log-determinant is non-finite or mis-shaped "
                                 f"({tuple(v.shape)} for {zt.shape[0]} rows)")
    names = list(values)
    ref = values[names[0]]
    worst: tuple[float, int, str] | None = None
    for name in names[1:]:
        diff = (values[name] - ref).abs()
        excess = diff - (atol + rtol * ref.abs())
        b = int(torch.argmax(excess))
        if float(excess[b]) > 0 and (worst is None or float(excess[b]) > worst[0]):
            worst = (float(excess[b]), b, name)
    if worst is not None:
        _, b, name = worst
        listing = ", ".join(f"{k} {float(v[b]):.10g}" for k, v in values.items())
        bad = int(sum(((values[k] - ref).abs() > atol + rtol * ref.abs()).sum() for k in names[1:]))
        raise AssertionError(
            f"Lemma D.1 violated: (1/n) log |det J(z)| disagrees between {names[0]} and {name} at row {b} "
            f"(z = {_fmt_row(zt[b])}): {listing}; |difference| = {float((values[name][b] - ref[b]).abs()):.3g} > "
            f"atol + rtol |value| = {atol + rtol * float(ref[b].abs()):.3g} ({bad} disagreeing values in all). "
            "The density ratio needs the exact log density of f(z); a log-det must be the total log |det J|."
        )
    return values
