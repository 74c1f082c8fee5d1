"""Adaptive Dormand--Prince 5(4) with per-sample error control (docs/theory.md §4.2).

Every row of the batch keeps its own time, step size and accept/reject decision, and rows that
have reached the end time are no longer evaluated. Split as torchdiffeq splits its RK solvers:

* :func:`_initial_step` -- Hairer's starting-step heuristic (one extra evaluation);
* :func:`_attempt` -- one attempted step of the active rows: the seven stages (FSAL) and the
  embedded error estimate;
* :func:`_step_factor` -- the step-size update factor from the error norm;
* :func:`_loop` -- attempts until every row reached ``t1`` (accept/reject, compaction);
* :func:`dopri5` -- the public, validated entry; :func:`_dopri5` -- the same without checks (for
  :mod:`simulate.maps`, which validates at its own boundary).

With ``logdet=True`` the state is augmented by ``l`` (``dl/dt = div v``, Lemma D.1,
docs/theory.md §4.1) under the same error control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from simulate.solvers.checks import (
    check_field,
    check_int,
    check_positive,
    check_rtol,
    check_state,
    check_times,
)
from simulate.solvers._dp_tableau import (
    _DP_A,
    _DP_B,
    _DP_C,
    _DP_E,
    _ERR_EXPONENT,
    _FAC_MAX,
    _FAC_MIN,
    _SAFETY,
    _lincomb,
    _rms_rows,
)
from simulate.solvers.base import SolveResult, field_rhs, unchecked_rhs

__all__ = ["dopri5", "dopri5_options"]


class _Rhs:
    """The right-hand side as :func:`_dopri5` calls it: per-row float64 times (cast to ``x``'s
    dtype for the field), ``evaluate_unchecked`` when :func:`~simulate.solvers.base.unchecked_rhs`
    allows it, and the counts ``nfe`` (batched calls) and ``row_evals`` (rows passed)."""

    def __init__(self, field: Any, x: Tensor, t0: float, t1: float, logdet: bool) -> None:
        self.field, self.logdet, self.dtype = field, logdet, x.dtype
        self.unchecked = unchecked_rhs(field, x, t0, t1)
        self.nfe = 0
        self.row_evals = 0

    def __call__(self, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        self.nfe += 1
        self.row_evals += y.shape[0]
        if self.unchecked is not None:
            values = self.unchecked(y, t.to(self.dtype), velocity=True, divergence=self.logdet)
            return values.velocity, values.divergence
        return field_rhs(self.field, y, t.to(self.dtype), self.logdet)


def _initial_step(
    f: _Rhs,
    y: Tensor,
    t: Tensor,
    l: Tensor | None,
    k1: Tensor,
    d1: Tensor | None,
    rtol: float,
    atol: float,
    direction: float,
    span: float,
) -> Tensor:
    """Hairer's starting step per row (Hairer, Norsett & Wanner I, II.4), float64 ``(B,)``:
    ``d0 = ||y0||, d1 = ||f0||, h_a = 0.01 d0 / d1`` (``1e-6`` if either is ``< 1e-5``),
    ``d2 = ||f(y0 + h_a f0) - f0|| / h_a``, ``h_b = (0.01 / max(d1, d2))^(1/5)``
    (``max(1e-6, 1e-3 h_a)`` if ``max(d1, d2) <= 1e-15``), ``h = min(100 h_a, h_b, |t1 - t0|)``;
    ``h_a`` is clipped to ``|t1 - t0|`` so no time outside ``[t0, t1]`` is evaluated."""
    tdt, dt = torch.float64, y.dtype
    scale0 = atol + rtol * y.abs()
    lscale0 = atol + rtol * l.abs() if l is not None else None
    n0 = _rms_rows(y / scale0, l / lscale0 if l is not None else None)  # type: ignore[operator]
    n1 = _rms_rows(k1 / scale0, d1 / lscale0 if d1 is not None else None)  # type: ignore[operator]
    ha = torch.where((n0 < 1e-5) | (n1 < 1e-5), torch.full_like(n0, 1e-6), 0.01 * n0 / n1)
    ha = ha.to(tdt).clamp(max=span)  # never evaluate outside [t0, t1]
    hs = (direction * ha).to(dt)
    ka, da = f(y + hs[:, None] * k1, t + direction * ha)
    n2 = _rms_rows(
        (ka - k1) / scale0, (da - d1) / lscale0 if da is not None else None  # type: ignore
    ).to(tdt) / ha
    nmax = torch.maximum(n1.to(tdt), n2)
    hb = torch.where(
        nmax <= 1e-15,
        torch.clamp(ha * 1e-3, min=1e-6),
        (0.01 / nmax.clamp(min=1e-300)) ** (1.0 / 5.0),
    )
    return torch.minimum(torch.minimum(100.0 * ha, hb), torch.full_like(ha, span))


@dataclass
class _Trial:
    """One attempted step of the active rows (see :func:`_attempt`)."""

    y_new: Tensor  # 5th-order solution at t_next
    k_last: Tensor  # v(y_new, t_next): the FSAL stage k_7
    l_new: Tensor | None
    d_last: Tensor | None
    t_next: Tensor  # float64, exactly t1 on a last step
    hstep: Tensor  # step magnitude taken, float64
    last: Tensor  # bool: the step reaches t1
    enorm: Tensor  # float64 RMS error norm (NaN / inf for a non-finite stage)


def _attempt(
    f: _Rhs,
    ya: Tensor,
    k1a: Tensor,
    ta: Tensor,
    la: Tensor | None,
    d1a: Tensor | None,
    ha: Tensor,
    t1: float,
    direction: float,
    rtol: float,
    atol: float,
    logdet: bool,
) -> _Trial:
    """Stages ``k_i = v(y + h sum_{j<i} a_ij k_j, t + c_i h)``, ``i = 2..7``, the 5th-order
    ``y_new = y + h sum_j b_j k_j`` and the error ``err = h sum_j e_j k_j`` measured by
    ``sqrt(mean_i (err_i / (atol + rtol max(|y_i|, |y_new,i|)))^2)`` per row (``l``'s error as
    an extra component). The step is clipped so that the last one ends exactly at ``t1``."""
    dt = ya.dtype
    remaining = (t1 - ta) * direction
    last = ha >= remaining
    hstep = torch.where(last, remaining, ha)  # step magnitude, float64
    hs64 = direction * hstep
    hs = hs64.to(dt)[:, None]
    t_next = torch.where(last, t1, ta + hs64)  # exactly t1 at the end
    ks = [k1a]
    ds = [d1a] if logdet else None
    for i in range(1, 7):
        if i < 6:
            yi = torch.addcmul(ya, hs, _lincomb(_DP_A[i], ks))
        else:
            yi = torch.addcmul(ya, hs, _lincomb(_DP_B, ks))  # = y_new (FSAL stage)
            y_new = yi
        ki, di = f(yi, t_next if _DP_C[i] == 1.0 else ta + _DP_C[i] * hs64)
        ks.append(ki)
        if ds is not None:
            ds.append(di)  # type: ignore[arg-type]
    err = hs * _lincomb(_DP_E, ks)
    scale = torch.maximum(ya.abs(), y_new.abs()).mul_(rtol).add_(atol)  # atol + rtol max(|y|, |y_new|)
    l_new = None
    if ds is not None:
        hsl = hs[:, 0]
        l_new = la + hsl * _lincomb(_DP_B, ds[:6])  # type: ignore[operator]
        errl = hsl * _lincomb(_DP_E, ds)
        lscale = atol + rtol * torch.maximum(la.abs(), l_new.abs())  # type: ignore[union-attr]
        enorm = _rms_rows(err / scale, errl / lscale)
    else:
        enorm = _rms_rows(err / scale, None)
    return _Trial(
        y_new=y_new,
        k_last=ks[6],
        l_new=l_new,
        d_last=ds[6] if ds is not None else None,
        t_next=t_next,
        hstep=hstep,
        last=last,
        enorm=enorm.to(torch.float64),
    )


def _step_factor(enorm: Tensor) -> Tensor:
    """``min(10, max(0.2, 0.9 ||err||^(-1/5)))``: ``||err|| = 0`` gives 10 (through the clamp at
    1e-300), ``||err|| = inf`` gives 0.2, NaN (a non-finite stage) gives 0.2."""
    factor = (_SAFETY * enorm.clamp(min=1e-300) ** _ERR_EXPONENT).clamp(_FAC_MIN, _FAC_MAX)
    return torch.nan_to_num(factor, nan=_FAC_MIN)


def _loop(
    f: _Rhs,
    y: Tensor,
    k1: Tensor,
    t: Tensor,
    h: Tensor,
    l: Tensor | None,
    d1: Tensor | None,
    t0: float,
    t1: float,
    rtol: float,
    atol: float,
    max_steps: int,
    logdet: bool,
) -> SolveResult:
    """Attempt steps until every row reached ``t1``; finished rows are written to the outputs
    and dropped from the active state (so the field only sees rows still short of ``t1``)."""
    B, dev, dt = y.shape[0], y.device, y.dtype
    direction = 1.0 if t1 > t0 else -1.0
    tiny = 16.0 * torch.finfo(torch.float64).eps * max(abs(t0), abs(t1))  # smallest meaningful |h|
    n_acc = torch.zeros(B, dtype=torch.int64, device=dev)
    rows = torch.arange(B, device=dev)  # original index of each active row
    ya, k1a, ta, ha, la, d1a = y, k1, t, h, l, d1
    acc_a = torch.zeros(B, dtype=torch.int64, device=dev)  # accepted steps of the active rows
    y_out = torch.zeros_like(y)
    l_out = torch.zeros(B, dtype=dt, device=dev) if logdet else None
    n_att = torch.zeros(B, dtype=torch.int64, device=dev)
    attempts = 0
    while rows.numel() > 0:
        attempts += 1
        if attempts > max_steps:
            raise RuntimeError(
                f"dopri5: max_steps={max_steps} step attempts exceeded with {rows.numel()} of "
                f"{B} rows short of t1={t1} (rtol={rtol}, atol={atol})"
            )
        trial = _attempt(f, ya, k1a, ta, la, d1a, ha, t1, direction, rtol, atol, logdet)
        accept = trial.enorm <= 1.0  # False for a NaN or infinite error
        h_new = trial.hstep * _step_factor(trial.enorm)

        # rejected rows whose step can no longer shrink: give up with a clear message
        if float(h_new.detach().min()) <= tiny:
            stuck = (~accept) & (h_new <= tiny)
            if bool(stuck.any()):
                bad = rows[stuck]
                raise RuntimeError(
                    f"dopri5: step size underflow for {bad.numel()} row(s) (first: row "
                    f"{int(bad[0])} at t={float(ta[stuck][0]):.17g}); the tolerance rtol={rtol}, "
                    f"atol={atol} is unreachable in {dt} or the field is singular / non-finite there"
                )

        # out-of-place updates (torch.where / index_put) of the states that carry gradients,
        # so reverse- and forward-mode AD work through the solve
        acc_col = accept[:, None]
        ya = torch.where(acc_col, trial.y_new, ya)
        k1a = torch.where(acc_col, trial.k_last, k1a)
        if logdet:
            la = torch.where(accept, trial.l_new, la)  # type: ignore[arg-type]
            d1a = torch.where(accept, trial.d_last, d1a)  # type: ignore[arg-type]
        ta = torch.where(accept, trial.t_next, ta)
        ha = h_new
        acc_a = acc_a + accept
        fin = accept & trial.last
        if bool(fin.any()):
            done_rows = rows[fin]
            y_out = y_out.index_put((done_rows,), ya[fin])
            if logdet:
                l_out = l_out.index_put((done_rows,), la[fin])  # type: ignore[union-attr,index]
            n_acc[done_rows] = acc_a[fin]
            n_att[done_rows] = attempts
            keep = ~fin
            rows, ya, k1a, ta, ha, acc_a = rows[keep], ya[keep], k1a[keep], ta[keep], ha[keep], acc_a[keep]
            if logdet:
                la, d1a = la[keep], d1a[keep]  # type: ignore[index]

    return SolveResult(
        x=y_out, logdet=l_out, nfe=f.nfe, n_accepted=n_acc, n_rejected=n_att - n_acc, row_evals=f.row_evals
    )


def _dopri5(
    field: Any,
    x: Tensor,
    t0: float,
    t1: float,
    rtol: float,
    atol: float,
    h0: float | None,
    max_steps: int,
    logdet: bool,
) -> SolveResult:
    """:func:`dopri5` on inputs already validated by :func:`dopri5_options` and the state checks."""
    B, dev, dt = x.shape[0], x.device, x.dtype
    f = _Rhs(field, x, t0, t1, logdet)
    y = x.clone()
    t = torch.full((B,), t0, dtype=torch.float64, device=dev)
    l = torch.zeros(B, dtype=dt, device=dev) if logdet else None
    if B == 0:
        zeros = torch.zeros(B, dtype=torch.int64, device=dev)
        return SolveResult(y, l, 0, zeros, zeros.clone(), 0)

    k1, d1 = f(y, t)  # FSAL slot: v(y, t) at each row's current state
    k1 = k1.clone()
    d1 = d1.clone() if d1 is not None else None
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    if h0 is None:
        h = _initial_step(f, y, t, l, k1, d1, rtol, atol, direction, span)
    else:
        h = torch.full((B,), min(h0, span), dtype=torch.float64, device=dev)
    return _loop(f, y, k1, t, h, l, d1, t0, t1, rtol, atol, max_steps, logdet)


def dopri5_options(
    dtype: torch.dtype,
    t0: Any,
    t1: Any,
    rtol: Any,
    atol: Any,
    h0: Any,
    max_steps: Any,
) -> tuple[float, float, float, float, float | None, int]:
    """Validate :func:`dopri5`'s scalar arguments: ``(t0, t1, rtol, atol, h0, max_steps)``
    as floats / int, with ``rtol`` raised to ``100 eps(dtype)`` (``RuntimeWarning``)."""
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol, allow_zero=True)
    max_steps = check_int("max_steps", max_steps)
    t0, t1 = check_times(t0, t1)
    if h0 is not None:
        h0 = check_positive("h0", h0)
    rtol = check_rtol(rtol, dtype, stacklevel=4)
    return t0, t1, rtol, atol, h0, max_steps


def dopri5(
    field: Any,
    x: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    h0: float | None = None,
    max_steps: int = 100_000,
    logdet: bool = False,
) -> SolveResult:
    """Adaptive Dormand--Prince 5(4) with per-sample error control, from ``t0`` to ``t1``.

    Each row ``b`` carries its own time ``t_b``, step ``h_b`` and accept/reject decision.
    One attempted step of row ``b`` (``h`` signed, ``|h| <= |t1 - t_b|``: the last step is
    clipped so that ``t1`` is reached exactly), with ``k_1 = v(y, t)`` reused from the
    previous accepted step (FSAL)::

        k_i   = v(y + h sum_{j<i} a_ij k_j, t + c_i h),        i = 2..7
        y_new = y + h sum_j b_j k_j                            (5th order; k_7 = v(y_new, t+h))
        err   = h sum_j e_j k_j,     e_j = b_j - b*_j          (b*: embedded 4th order)
        ||err|| = sqrt( mean_i ( err_i / (atol + rtol max(|y_i|, |y_new,i|)) )^2 )
        accept iff ||err|| <= 1
        h <- h min(10, max(0.2, 0.9 ||err||^(-1/5)))          (both after accept and reject)

    ``c``, ``a``, ``b`` are the Dormand--Prince tableau (Hairer, Norsett & Wanner I, Table
    II.5.2). With ``logdet=True`` the augmented component ``l`` (``dl/dt = div v``) uses the
    same stages, ``l_new = l + h sum_j b_j d_j``, and its error enters the row's RMS as an
    extra component (so the log-determinant is under the same tolerance).

    Only rows still short of ``t1`` are passed to the field (index-selected, with their times
    as a ``(B_active,)`` tensor). Fields of :mod:`simulate.fields` are called through their
    ``evaluate_unchecked`` (inputs are checked once here, not on every call; a step with a
    non-finite stage is rejected like any step whose error is too large) when ``x`` has the
    field's dtype, device and dimension and ``t0``, ``t1`` lie in ``[0, 1]``. Unless ``h0`` is
    given, each row's first step comes from Hairer's starting-step heuristic (one extra
    evaluation):
    ``d0 = ||y0||, d1 = ||f0||, h_a = 0.01 d0 / d1`` (``1e-6`` if either is ``< 1e-5``),
    ``d2 = ||f(y0 + h_a f0) - f0|| / h_a``,
    ``h_b = (0.01 / max(d1, d2))^(1/5)`` (``max(1e-6, 1e-3 h_a)`` if ``max(d1, d2) <= 1e-15``),
    ``h = min(100 h_a, h_b, |t1 - t0|)``, norms as above with ``y_new = y0`` (``h_a`` is
    clipped to ``|t1 - t0|`` so that no time outside ``[t0, t1]`` is ever evaluated).

    Args:
        field: A :class:`SupportsVelocity` accepting per-row times (a :class:`SupportsDivergence`
            if ``logdet``).
        x: Initial state at ``t0``, shape ``(B, n)``, finite.
        t0: Start time.
        t1: End time (``t1 < t0`` integrates backward); must differ from ``t0``.
        rtol: Relative tolerance, ``> 0``; raised (with a ``RuntimeWarning``) to
            ``100 eps(dtype)`` if smaller, as in SciPy.
        atol: Absolute tolerance, ``>= 0``.
        h0: Initial step magnitude for every row (``> 0``); ``None``: per-row heuristic.
        max_steps: Most step attempts per row (accepted + rejected) before giving up.
        logdet: Also integrate ``div v`` along each path.

    Returns:
        :class:`SolveResult` with ``x = y(t1)``, ``logdet``, ``nfe`` (batched calls),
        ``n_accepted`` / ``n_rejected`` per row and ``row_evals``.

    Raises:
        ValueError: Invalid arguments or non-finite ``x``.
        RuntimeError: ``max_steps`` exceeded, or the step size underflowed (tolerance
            unreachable in ``x``'s dtype, or a singular / non-finite field).
    """
    check_field(field, logdet)
    x = check_state(x)
    t0, t1, rtol, atol, h0, max_steps = dopri5_options(x.dtype, t0, t1, rtol, atol, h0, max_steps)
    return _dopri5(field, x, t0, t1, rtol, atol, h0, max_steps, logdet)
