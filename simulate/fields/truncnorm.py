r"""Numerically stable normal-interval masses and truncated-normal moments (torch).

These are the one-dimensional building blocks of the box-mixture field
(docs/theory.md §3.5): given mixture component ``i`` the coordinate ``x_t,d`` has density
``(Phi((x - t a)/s_t) - Phi((x - t b)/s_t)) / (t (b - a))`` and the posterior of the box
coordinate ``y_d`` is the normal ``N(x/t, (s_t/t)^2)`` truncated to ``[a, b]``.

Everything is phrased for a standard normal ``Z ~ N(0, 1)`` restricted to the interval
``[c - h, c + h]`` (centre ``c``, half-width ``h >= 0``), through three quantities that stay
finite and accurate in every regime, including ``h = 0`` (a point) and intervals hundreds
of standard deviations into either tail:

* ``log_mean_density = log( (1/(2h)) * integral_{c-h}^{c+h} phi(z) dz )``
  (equal to ``log phi(c)`` at ``h = 0``);
* ``rel_mean = (E[Z] - c) / h``, in ``[-1, 1]`` (``0`` at ``h = 0``);
* ``rel_var = Var[Z] / h^2``, in ``[0, 1]`` (``1/3`` at ``h = 0``).

Scaled back to an interval ``[a, b]`` these give ``E = (a + b)/2 + ((b - a)/2) rel_mean`` and
``Var = ((b - a)/2)^2 rel_var`` without the cancellation of ``x/t + (s_t/t) E[Z]``.

Three regimes, chosen per element (``A = |c| + h``, the largest ``|z|`` on the interval):

1. *narrow*, ``2 h A <= 1/2``: ``phi(c + h s) = phi(c) exp(-c h s - h^2 s^2 / 2)`` for
   ``s in [-1, 1]``; the exponent varies by less than ``3/8`` over the interval, so an
   8-point Gauss-Legendre rule in ``s`` is exact to rounding.
2. *straddling zero*, ``|c| < h`` (and not narrow, which forces ``2h > 0.7``): the mass is
   at least ``0.26`` and the classical formulas
   ``E[Z] = (phi(lo) - phi(hi)) / M``, ``E[Z^2] = 1 + (lo phi(lo) - hi phi(hi)) / M`` are
   well conditioned.
3. *one tail*, ``|c| >= h``: reflect to ``0 <= a < b`` and combine the one-sided tail
   moments at ``a`` and ``b``: with ``r = Q(b)/Q(a)`` (``Q = 1 - Phi``),
   ``delta(x) = E[Z - x | Z > x]``, ``V(x) = Var[Z | Z > x]``:
   ``E[Z] = a + delta(a) - r Delta / (1 - r)``,
   ``Var[Z] = (V(a) - r V(b)) / (1 - r) - r Delta^2 / (1 - r)^2``,
   ``Delta = (b - a) + delta(b) - delta(a)``.
   ``Q``, ``delta`` and ``V`` (:mod:`simulate.fields.normal_tail`, whose
   ``upper_tail_moments`` and ``TAIL_CF_THRESHOLD`` are re-exported here) come from ``erfcx``
   for ``x < 4`` and from Laplace's continued fraction (depth 40) for ``x >= 4``, where the ``erfcx`` form of
   ``V = 1 - lambda (lambda - x)`` would lose ``x^4`` ulps (there ``erfcx(x / sqrt 2) =
   sqrt(2/pi) / lambda``; for ``a >= 4``, ``log(Q(b) / Q(a))`` is taken as
   ``-log1p(Delta / lambda(a)) - (b^2 - a^2)/2``, free of the cancellation of two nearly
   equal logarithms when ``b - a`` is small). Only ``log Q`` is needed for the density
   alone (``moments=0``): then ``erfcx`` everywhere and no continued fraction.

The branches are evaluated only on their own elements, so gradients (autograd) are exact and
free of the ``0 * inf`` NaNs of a plain ``torch.where``: :func:`interval_stats` sorts the elements
into consecutive groups (narrow, straddling, and the one-tail elements split by where their ends lie
against 4: ``b < 4``, ``a < 4 <= b``, ``a >= 4``; one tail group for the density alone), with one
synchronisation for the group sizes, runs each regime once on its block, and puts each statistic
back in place with one scatter (no sorting when all elements fall in one group). In the tail
the ends below 4 go through ``erfcx`` in one call and those at or above 4 through one continued
fraction, each end computed once (``log erfcx(b)`` only where ``a < 4``). On the small tensors of an
ODE solver's step the cost is mostly the number of tensor operations, so the Gauss-Legendre nodes
are one tensor axis and each branch of the tail one call on its concatenated ends.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from simulate.fields.normal_tail import (
    TAIL_CF_THRESHOLD,
    _cf_tail,
    _check_moments,
    _erfcx_tail,
    _scatter,
    upper_tail_moments,
)

__all__ = [
    "IntervalStats",
    "interval_stats",
    "upper_tail_moments",
    "log_normal_interval_mass",
    "truncated_normal_moments",
    "NARROW_THRESHOLD",
    "TAIL_CF_THRESHOLD",
]

NARROW_THRESHOLD = 0.5
"""An interval is *narrow* when ``(width) * max|z| = 2 h (|c| + h) <= NARROW_THRESHOLD``."""

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_HALF = math.log(0.5)

_gl_nodes, _gl_weights = np.polynomial.legendre.leggauss(8)
_GL_POS = _gl_nodes > 0
_GL_S = tuple(float(v) for v in _gl_nodes[_GL_POS])  # 4 positive nodes
_GL_W = tuple(float(v) for v in _gl_weights[_GL_POS])


class IntervalStats(NamedTuple):
    """Statistics of ``Z ~ N(0, 1)`` on ``[c - h, c + h]`` (see the module docstring).

    ``rel_mean`` / ``rel_var`` are ``None`` when not requested (``moments`` < 1 / < 2 in
    :func:`interval_stats`).
    """

    log_mean_density: Tensor
    rel_mean: Tensor | None
    rel_var: Tensor | None


def _gl_constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(s, -s^2, w, -w s, w s^2)`` of the 4 positive Gauss-Legendre nodes, cached per dtype/device."""
    key = (dtype, device)
    consts = _GL_CACHE.get(key)
    if consts is None:
        s = torch.tensor(_GL_S, dtype=torch.float64)
        w = torch.tensor(_GL_W, dtype=torch.float64)
        consts = tuple(v.to(dtype=dtype, device=device) for v in (s, -s * s, w, -w * s, w * s * s))
        _GL_CACHE[key] = consts
    return consts  # type: ignore[return-value]


_GL_CACHE: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}


def _narrow(c: Tensor, h: Tensor, moments: int = 2) -> IntervalStats:
    """Gauss-Legendre in ``s = (z - c)/h`` for ``2 h (|c| + h) <= NARROW_THRESHOLD``.

    ``phi(c + h s) = phi(c) exp(-c h s - h^2 s^2 / 2)``; the 8 nodes come in pairs ``+-s``, so
    with ``e = exp(-h^2 s^2 / 2)``: ``D = sum_s w e cosh(c h s)`` (the mean of ``phi / phi(c)``),
    ``E[s] D = -sum_s w s e sinh(c h s)``, ``E[s^2] D = sum_s w s^2 e cosh(c h s)``. The 4 node
    terms are one trailing axis, summed by a matrix-vector product.
    """
    s, neg_s2, w, neg_ws, ws2 = _gl_constants(c.dtype, c.device)
    e = torch.exp((0.5 * h * h)[..., None] * neg_s2)  # (..., 4)
    bs = (c * h)[..., None] * s
    e_cosh = e * torch.cosh(bs)
    d = e_cosh @ w
    log_density = torch.log(d) - (0.5 * c * c + _LOG_SQRT_2PI)
    if moments == 0:
        return IntervalStats(log_density, None, None)
    mean = ((e * torch.sinh(bs)) @ neg_ws) / d
    if moments == 1:
        return IntervalStats(log_density, mean, None)
    var = (e_cosh @ ws2) / d - mean * mean
    return IntervalStats(log_density, mean, var.clamp_min(0.0))


def _straddling(c: Tensor, h: Tensor, moments: int = 2) -> IntervalStats:
    """Classical formulas when ``lo < 0 < hi`` and the interval is not narrow (mass > 0.26)."""
    lo = c - h
    hi = c + h
    mass = torch.special.ndtr(hi) - torch.special.ndtr(lo)
    log_density = torch.log(mass) - torch.log(2.0 * h)
    if moments == 0:
        return IntervalStats(log_density, None, None)
    p_lo = torch.exp(-0.5 * lo * lo - _LOG_SQRT_2PI)
    p_hi = torch.exp(-0.5 * hi * hi - _LOG_SQRT_2PI)
    ez = (p_lo - p_hi) / mass
    rel_mean = (ez - c) / h
    if moments == 1:
        return IntervalStats(log_density, rel_mean, None)
    ez2 = 1.0 + (lo * p_lo - hi * p_hi) / mass
    var = (ez2 - ez * ez).clamp_min(0.0)
    return IntervalStats(log_density, rel_mean, var / (h * h))


def _one_tail(c: Tensor, h: Tensor, moments: int, n_low: int, n_mid: int) -> IntervalStats:
    """Reflect to ``0 <= a < b`` and combine one-sided tail moments at ``a`` and ``b``.

    ``c``, ``h`` are 1-D, ordered in three consecutive groups (:func:`interval_stats` sorts them): ``n_low``
    elements with ``b < 4``, then ``n_mid`` with ``a < 4 <= b``, then those with ``a >= 4`` (4 =
    ``TAIL_CF_THRESHOLD``; the grouping is ignored when ``moments = 0``). So each end goes to the branch of
    :func:`upper_tail_moments` it belongs to (``erfcx`` or the continued fraction) with no element computed twice,
    in one call per branch. With the moments at hand and ``a >= 4`` (both on the continued fraction,
    ``erfcx = sqrt(2/pi) / lambda``), ``log(erfcx(b) / erfcx(a))`` is ``-log1p(Delta / lambda(a))`` with
    ``Delta = lambda(b) - lambda(a) = (b - a) + delta(b) - delta(a)``: no cancellation between two nearly equal
    logarithms when ``b - a`` is small (``log erfcx(b)`` is then not needed).
    """
    cp = c.abs()  # c != 0 here: |c| >= h > 0
    a = cp - h
    b = cp + h
    h2 = 2.0 * h
    if moments == 0:
        le = _erfcx_tail(torch.cat([a, b]), 0)[0]
        le_a = le[: a.shape[0]]
        log_ratio = le[a.shape[0] :] - le_a
    else:
        n_lm = n_low + n_mid
        n_hi = a.shape[0] - n_lm
        # erfcx at [a_low, a_mid, b_low]; continued fraction at [a_high, b_mid, b_high] (log erfcx at the first two)
        x_e, x_c = torch.cat([a[:n_lm], b[:n_low]]), torch.cat([a[n_lm:], b[n_low:]])
        none = (x_e[:0], x_e[:0], x_e[:0])  # an empty block: skip its branch (the continued fraction is 40 operations)
        le_e, d_e, v_e = _erfcx_tail(x_e, moments) if x_e.shape[0] else none
        le_c, d_c, v_c = _cf_tail(x_c, moments, log_count=n_hi + n_mid) if x_c.shape[0] else none
        le_a = torch.cat([le_e[:n_lm], le_c[:n_hi]])
        d_a = torch.cat([d_e[:n_lm], d_c[:n_hi]])  # type: ignore[index]
        d_b = torch.cat([d_e[n_lm:], d_c[n_hi:]])  # type: ignore[index]
        big_delta = h2 + d_b - d_a
        log_ratio = torch.cat([
            torch.cat([le_e[n_lm:], le_c[n_hi:]]) - le_a[:n_lm],
            -torch.log1p(big_delta[n_lm:] / (a[n_lm:] + d_a[n_lm:])),
        ])
    # log r = log Q(b) - log Q(a), with (b^2 - a^2)/2 = 2 h c' computed without cancellation
    log_r = log_ratio - h2 * cp
    one_m_r = -torch.expm1(log_r)
    log_mass = _LOG_HALF + le_a - 0.5 * a * a + torch.log(one_m_r)
    log_density = log_mass - torch.log(h2)
    if moments == 0:
        return IntervalStats(log_density, None, None)
    r = torch.exp(log_r)
    q = r / one_m_r
    mean_minus_c = (d_a - h) - q * big_delta
    rel_mean = mean_minus_c / torch.copysign(h, c)  # sign(c) (E[Z'] - c') / h, Z' = sign(c) Z
    if moments == 1:
        return IntervalStats(log_density, rel_mean, None)
    v_a = torch.cat([v_e[:n_lm], v_c[:n_hi]])  # type: ignore[index]
    v_b = torch.cat([v_e[n_lm:], v_c[n_hi:]])  # type: ignore[index]
    var = (v_a - r * v_b) / one_m_r - q * big_delta * big_delta / one_m_r
    return IntervalStats(log_density, rel_mean, var.clamp_min(0.0) / (h * h))


def _groups(c: Tensor, h: Tensor, moments: int) -> list[Tensor]:
    """Masks of the element groups in evaluation order: narrow, straddling, then one tail: all of it when
    ``moments = 0``, else split as :func:`_one_tail` needs (``b < 4``, ``a < 4 <= b``, ``a >= 4``)."""
    ca = c.abs()
    b = ca + h
    # 2 h (|c| + h) <= NARROW_THRESHOLD, written without the (exact) factor 2
    narrow = h * b <= 0.5 * NARROW_THRESHOLD
    straddle = (ca < h) & ~narrow
    tail = ~(narrow | straddle)
    if moments == 0:
        return [narrow, straddle, tail]
    high = tail & (ca - h >= TAIL_CF_THRESHOLD)
    low = tail & (b < TAIL_CF_THRESHOLD)
    return [narrow, straddle, low, tail ^ (low | high), high]


def interval_stats(center: Tensor, half_width: Tensor, *, moments: int = 2) -> IntervalStats:
    r"""Stable statistics of ``Z ~ N(0, 1)`` restricted to ``[center - h, center + h]``.

    Args:
        center: interval centres ``c`` (any shape, broadcast against ``half_width``).
        half_width: half-widths ``h >= 0`` (``h = 0`` is a point).
        moments: ``2`` (default): all three statistics; ``1``: ``rel_var`` is ``None`` (not
            computed); ``0``: only ``log_mean_density`` (the others ``None``). The values
            computed do not depend on ``moments``.

    Returns:
        ``IntervalStats(log_mean_density, rel_mean, rel_var)``: ``log`` of the mean of
        ``phi`` over the interval, ``(E[Z] - c)/h`` and ``Var[Z]/h^2`` (with their ``h -> 0``
        limits ``log phi(c)``, ``0``, ``1/3`` at ``h = 0``). Differentiable in both inputs.

    Each element is computed by its regime's formulas only (module docstring): the elements are
    sorted by group (:func:`_groups`; one synchronisation for the group sizes), each regime runs
    once on its consecutive block, and the results go back in place in one scatter per statistic.
    """
    moments = _check_moments(moments)
    c, h = (center, half_width) if center.shape == half_width.shape else torch.broadcast_tensors(center, half_width)
    shape = c.shape
    c, h = c.reshape(-1), h.reshape(-1)
    masks = _groups(c, h, moments)
    sizes = torch.stack(masks).sum(dim=1).tolist()
    n_narrow, n_straddle, n_tail = sizes[0], sizes[1], sum(sizes[2:])
    tail_split = sizes[2:4] if moments else [0, 0]
    if sum(1 for n in sizes if n) <= 1:  # one group (or an empty input): no sorting
        if n_tail:
            st = _one_tail(c, h, moments, *tail_split)
        else:
            st = (_straddling if n_straddle else _narrow)(c, h, moments)
        return IntervalStats(*(None if v is None else v.reshape(shape) for v in st))
    perm = torch.cat([m.nonzero().squeeze(1) for m, n in zip(masks, sizes) if n])
    cs, hs = c.index_select(0, perm), h.index_select(0, perm)
    blocks = []
    if n_narrow:
        blocks.append(_narrow(cs[:n_narrow], hs[:n_narrow], moments))
    if n_straddle:
        blocks.append(_straddling(cs[n_narrow : n_narrow + n_straddle], hs[n_narrow : n_narrow + n_straddle], moments))
    if n_tail:
        blocks.append(_one_tail(cs[n_narrow + n_straddle :], hs[n_narrow + n_straddle :], moments, *tail_split))
    return IntervalStats(*(None if k > moments else _scatter([st[k] for st in blocks], perm, shape) for k in range(3)))


def _as_tensors(*values: Tensor | float) -> tuple[Tensor, ...]:
    ref = next((v for v in values if isinstance(v, Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    device = ref.device if ref is not None else None
    return torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype, device=device) for v in values))


def _check_interval(a: Tensor, b: Tensor, s: Tensor) -> None:
    if torch.isnan(a).any() or torch.isnan(b).any():
        raise ValueError("interval endpoints must not be NaN")
    if (a > b).any():
        raise ValueError("interval endpoints must satisfy a <= b")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError("s must be finite and > 0")


def log_normal_interval_mass(
    a: Tensor | float, b: Tensor | float, mu: Tensor | float = 0.0, s: Tensor | float = 1.0
) -> Tensor:
    r"""``log P(a <= X <= b)`` for ``X ~ N(mu, s^2)``, stable in both tails and for tiny widths.

    Endpoints may be infinite (``-inf <= a <= b <= inf``); ``a == b`` gives ``-inf``.
    Finite intervals use :func:`interval_stats` (``log M = log_mean_density + log(2h)``);
    half-lines use ``log_ndtr`` with the reflection ``P(X > a) = Phi(-(a - mu)/s)``.
    """
    a, b, mu, s = _as_tensors(a, b, mu, s)
    _check_interval(a, b, s)
    finite = torch.isfinite(a) & torch.isfinite(b)
    a_f = torch.where(finite, a, 0.0)
    b_f = torch.where(finite, b, 1.0)
    h = (b_f - a_f) / (2.0 * s)
    c = (0.5 * (a_f + b_f) - mu) / s
    st = interval_stats(c, h)
    out = st.log_mean_density + torch.log(2.0 * h)  # -inf for a == b
    lo = (a - mu) / s
    hi = (b - mu) / s
    upper_only = torch.isfinite(a) & ~torch.isfinite(b)
    lower_only = ~torch.isfinite(a) & torch.isfinite(b)
    both_inf = ~torch.isfinite(a) & ~torch.isfinite(b)
    out = torch.where(upper_only, torch.special.log_ndtr(torch.where(upper_only, -lo, 0.0)), out)
    out = torch.where(lower_only, torch.special.log_ndtr(torch.where(lower_only, hi, 0.0)), out)
    out = torch.where(both_inf, torch.where(a < b, 0.0, -math.inf).to(out.dtype), out)
    return out


def _half_line_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(E[Z | Z > x], Var[Z | Z > x])`` for any real ``x`` (standard normal)."""
    nonneg = x >= 0
    x_pos = torch.where(nonneg, x, 0.0)
    x_neg = torch.where(nonneg, -1.0, x)
    _, d_pos, v_pos = upper_tail_moments(x_pos)
    lam = torch.exp(-0.5 * x_neg * x_neg - _LOG_SQRT_2PI - torch.special.log_ndtr(-x_neg))
    d_neg = lam - x_neg
    v_neg = 1.0 - lam * d_neg
    mean = torch.where(nonneg, x_pos + d_pos, x_neg + d_neg)
    return mean, torch.where(nonneg, v_pos, v_neg)


def truncated_normal_moments(
    a: Tensor | float, b: Tensor | float, mu: Tensor | float = 0.0, s: Tensor | float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of ``N(mu, s^2)`` truncated to ``[a, b]``.

    Stable for intervals far in either tail (hundreds of ``s``), for very narrow intervals
    (including ``a == b``: mean ``a``, variance ``0``) and for half-lines (infinite ``a`` or
    ``b``). docs/theory.md §3.5: the posterior of a box coordinate is this law with
    ``mu = x/t``, ``s = s_t/t``.
    """
    a, b, mu, s = _as_tensors(a, b, mu, s)
    _check_interval(a, b, s)
    finite = torch.isfinite(a) & torch.isfinite(b)
    a_f = torch.where(finite, a, 0.0)
    b_f = torch.where(finite, b, 1.0)
    half = 0.5 * (b_f - a_f)
    st = interval_stats((0.5 * (a_f + b_f) - mu) / s, half / s)
    mean = 0.5 * (a_f + b_f) + half * st.rel_mean
    var = half * half * st.rel_var
    upper_only = torch.isfinite(a) & ~torch.isfinite(b)
    lower_only = ~torch.isfinite(a) & torch.isfinite(b)
    both_inf = ~torch.isfinite(a) & ~torch.isfinite(b)
    m_up, v_up = _half_line_moments(torch.where(upper_only, (a - mu) / s, 0.0))
    m_lo, v_lo = _half_line_moments(torch.where(lower_only, -(b - mu) / s, 0.0))
    mean = torch.where(upper_only, mu + s * m_up, mean)
    var = torch.where(upper_only, s * s * v_up, var)
    mean = torch.where(lower_only, mu - s * m_lo, mean)
    var = torch.where(lower_only, s * s * v_lo, var)
    mean = torch.where(both_inf, mu, mean)
    var = torch.where(both_inf, s * s, var)
    return mean, var
