"""Frozen copy of the box-mixture field evaluation as of commit cbee7c4 (before the speed-up of issue 26).

Not a module of the package: tests/simulate/test_box_reference.py compares the current
:class:`simulate.fields.BoxMixture` and :func:`simulate.fields.truncnorm.interval_stats` against it on
random inputs in every regime. Code copied verbatim (docstrings shortened) from
simulate/fields/{normal_tail,truncnorm,_mixture,box_mixture}.py; do not edit: a change here would
hide a change of results.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

TAIL_CF_THRESHOLD = 4.0
NARROW_THRESHOLD = 0.5
_CF_DEPTH = 40
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LOG_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_HALF = math.log(0.5)
_gl_nodes, _gl_weights = np.polynomial.legendre.leggauss(8)
_GL_POS = _gl_nodes > 0
_GL_S = tuple(float(v) for v in _gl_nodes[_GL_POS])
_GL_W = tuple(float(v) for v in _gl_weights[_GL_POS])


# ----------------------------------------------------------------------------- normal_tail.py
def _tail_continued_fraction(x: Tensor, variance: bool = True) -> tuple[Tensor, Tensor | None]:
    one = torch.ones((), dtype=x.dtype, device=x.device)
    k = x
    k2 = k3 = x
    for j in range(_CF_DEPTH, 0, -1):
        k = torch.addcdiv(x, one, k, value=j + 1)
        if j == 3:
            k3 = k
        elif j == 2:
            k2 = k
    delta = torch.reciprocal(k)
    if not variance:
        return delta, None
    return delta, (x + 4.0 / k2 - 3.0 / k3) / (k * k * k2)


def upper_tail_moments(x: Tensor, *, moments: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if moments == 0:
        return torch.log(torch.special.erfcx(x * _SQRT_HALF)), None, None
    variance = moments == 2
    small = x < TAIL_CF_THRESHOLD
    n_small = int(small.sum())
    if n_small == x.numel():
        ex = torch.special.erfcx(x * _SQRT_HALF)
        lam = _SQRT_2_OVER_PI / ex
        delta = lam - x
        return torch.log(ex), delta, (1.0 - lam * delta) if variance else None
    x_large = torch.where(small, TAIL_CF_THRESHOLD, x) if n_small else x
    delta, var = _tail_continued_fraction(x_large, variance)
    log_ex = _LOG_SQRT_2_OVER_PI - torch.log(x_large + delta)
    if not n_small:
        return log_ex, delta, var
    flat_idx = small.reshape(-1).nonzero().squeeze(1)
    xs = x.reshape(-1).index_select(0, flat_idx)
    ex = torch.special.erfcx(xs * _SQRT_HALF)
    lam = _SQRT_2_OVER_PI / ex
    delta_small = lam - xs

    def put(full: Tensor, part: Tensor) -> Tensor:
        return full.reshape(-1).index_put((flat_idx,), part).reshape(full.shape)

    log_ex = put(log_ex, torch.log(ex))
    delta_out = put(delta, delta_small)
    if not variance:
        return log_ex, delta_out, None
    return log_ex, delta_out, put(var, 1.0 - lam * delta_small)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- truncnorm.py
def _gl_constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    s = torch.tensor(_GL_S, dtype=torch.float64)
    w = torch.tensor(_GL_W, dtype=torch.float64)
    return tuple(v.to(dtype=dtype, device=device) for v in (s, -s * s, w, -w * s, w * s * s))


def _narrow(c: Tensor, h: Tensor, moments: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    s, neg_s2, w, neg_ws, ws2 = _gl_constants(c.dtype, c.device)
    e = torch.exp((0.5 * h * h)[..., None] * neg_s2)
    bs = (c * h)[..., None] * s
    e_cosh = e * torch.cosh(bs)
    d = e_cosh @ w
    log_density = torch.log(d) - (0.5 * c * c + _LOG_SQRT_2PI)
    if moments == 0:
        return log_density, None, None
    mean = ((e * torch.sinh(bs)) @ neg_ws) / d
    if moments == 1:
        return log_density, mean, None
    var = (e_cosh @ ws2) / d - mean * mean
    return log_density, mean, var.clamp_min(0.0)


def _straddling(c: Tensor, h: Tensor, moments: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    lo = c - h
    hi = c + h
    mass = torch.special.ndtr(hi) - torch.special.ndtr(lo)
    log_density = torch.log(mass) - torch.log(2.0 * h)
    if moments == 0:
        return log_density, None, None
    p_lo = torch.exp(-0.5 * lo * lo - _LOG_SQRT_2PI)
    p_hi = torch.exp(-0.5 * hi * hi - _LOG_SQRT_2PI)
    ez = (p_lo - p_hi) / mass
    rel_mean = (ez - c) / h
    if moments == 1:
        return log_density, rel_mean, None
    ez2 = 1.0 + (lo * p_lo - hi * p_hi) / mass
    var = (ez2 - ez * ez).clamp_min(0.0)
    return log_density, rel_mean, var / (h * h)


def _one_tail(c: Tensor, h: Tensor, moments: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    cp = c.abs()
    a = cp - h
    le, d, v = upper_tail_moments(torch.stack([a, cp + h]), moments=moments)
    le_a, le_b = le[0], le[1]
    if moments == 0:
        log_ratio = le_b - le_a
    else:
        d_a, d_b = d[0], d[1]  # type: ignore[index]
        big_delta = 2.0 * h + d_b - d_a
        log_ratio = torch.where(a >= TAIL_CF_THRESHOLD, -torch.log1p(big_delta / (a + d_a)), le_b - le_a)
    log_r = log_ratio - 2.0 * h * cp
    one_m_r = -torch.expm1(log_r)
    log_mass = _LOG_HALF + le_a - 0.5 * a * a + torch.log(one_m_r)
    log_density = log_mass - torch.log(2.0 * h)
    if moments == 0:
        return log_density, None, None
    r = torch.exp(log_r)
    q = r / one_m_r
    mean_minus_c = -h + d_a - q * big_delta
    rel_mean = torch.sign(c) * mean_minus_c / h
    if moments == 1:
        return log_density, rel_mean, None
    v_a, v_b = v[0], v[1]  # type: ignore[index]
    var = (v_a - r * v_b) / one_m_r - q * big_delta * big_delta / one_m_r
    return log_density, rel_mean, var.clamp_min(0.0) / (h * h)


def interval_stats(center: Tensor, half_width: Tensor, *, moments: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(log_mean_density, rel_mean, rel_var)`` of ``N(0, 1)`` on ``[c - h, c + h]`` (old implementation)."""
    c, h = torch.broadcast_tensors(center, half_width)
    ca = c.abs()
    narrow = h * (ca + h) <= 0.5 * NARROW_THRESHOLD
    straddle = (ca < h) & ~narrow
    tail = ~(narrow | straddle)
    counts = torch.stack([narrow.sum(), straddle.sum()]).tolist()
    counts.append(c.numel() - counts[0] - counts[1])
    regimes = [(mask, fn) for mask, fn, k in zip((narrow, straddle, tail), (_narrow, _straddling, _one_tail), counts) if k]
    if len(regimes) <= 1:
        fn = regimes[0][1] if regimes else _narrow
        return fn(c, h, moments)
    cf, hf = c.reshape(-1), h.reshape(-1)
    idx = [mask.reshape(-1).nonzero().squeeze(1) for mask, _ in regimes]
    parts = [fn(cf.index_select(0, i), hf.index_select(0, i), moments) for (_, fn), i in zip(regimes, idx)]
    perm = torch.cat(idx)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    outs: list[Tensor | None] = []
    for k in range(3):
        if k > moments:
            outs.append(None)
        else:
            outs.append(torch.cat([st[k] for st in parts])[inv].reshape(c.shape))
    return outs[0], outs[1], outs[2]


# ----------------------------------------------------------------------------- _mixture.py, box_mixture.py
def _safe_shift(log_total: Tensor) -> Tensor:
    return torch.where(torch.isfinite(log_total), log_total, torch.zeros_like(log_total))


def _normalised_weights(log_weight: Tensor, dim: int = 1) -> Tensor:
    top = _safe_shift(log_weight.amax(dim=dim, keepdim=True))
    e = torch.exp(log_weight - top)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def box_field_values(
    field, x: Tensor, t: Tensor, *, velocity: bool = True, score: bool = True, log_prob: bool = True, divergence: bool = True
) -> dict[str, Tensor]:
    """The requested values of ``field`` (a BoxMixture) at ``x`` ``(B, n)``, ``t`` ``(B,)`` by the old code path
    (one chunk: ``_component_terms`` with every component, ``_reduce``, ``_finish``; the moments of
    ``interval_stats`` chosen as the old ``_component_terms`` did)."""
    sigma, n = field.sigma, field.n
    lo, up = field.lower, field.upper
    mid, half = 0.5 * (lo + up), 0.5 * (up - lo)
    log_weights = torch.log(field.weights)
    s_t = torch.sqrt(t * t * sigma**2 + (1.0 - t) ** 2)
    t3 = t[:, None, None]
    s3 = s_t[:, None, None]
    c = (t3 * mid - x[:, None, :]) / s3
    h = (t / s_t)[:, None, None] * half
    moments = 2 if divergence else (1 if velocity or score else 0)
    lmd, rel_mean, rel_var = interval_stats(c, h, moments=moments)
    log_p = lmd.sum(dim=2) - n * torch.log(s_t)[:, None]
    log_weight = log_weights + log_p
    out = {"log_prob": torch.logsumexp(log_weight, dim=1)}
    if moments == 0:
        return out
    post_mean = mid + half * rel_mean
    p = _normalised_weights(log_weight)
    y_bar = torch.bmm(p.unsqueeze(1), post_mean).squeeze(1)
    s2 = (t * t * sigma**2 + (1.0 - t) ** 2)[:, None]
    t2 = t[:, None]
    if velocity:
        out["velocity"] = ((1.0 - t2) / s2) * (y_bar - x) + (t2 * sigma**2 / s2) * x
    if score:
        out["score"] = (t2 * y_bar - x) / s2
    if divergence:
        post_var = (half * half * rel_var).sum(dim=2)
        mean_c = (p * post_var).sum(dim=1)
        da = post_mean - y_bar[:, None, :]
        co = torch.einsum("bm,bmn,bmn->b", p, da, da)
        s2f = s2[:, 0]
        out["divergence"] = (t * (1.0 - t) / (s2f * s2f)) * (mean_c + co) + n * (t * sigma**2 - (1.0 - t)) / s2f
    return out
