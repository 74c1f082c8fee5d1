r"""The one-sided tail of the standard normal beyond ``x >= 0`` (docs/theory.md §3.6).

For ``Z ~ N(0, 1)``, ``Q(x) = P(Z > x) = erfcx(x / sqrt 2) exp(-x^2/2) / 2``, the inverse Mills
ratio ``lambda(x) = phi(x) / Q(x)``, ``delta(x) = E[Z - x | Z > x] = lambda(x) - x`` and
``V(x) = Var[Z | Z > x] = 1 - lambda(x) delta(x)``. :func:`upper_tail_moments` returns
``(log erfcx(x / sqrt 2), delta, V)``, accurate to a few ulps for every ``x >= 0``: from
``erfcx`` for ``x < TAIL_CF_THRESHOLD`` and from Laplace's continued fraction (depth 40) above,
where the ``erfcx`` form of ``V`` would lose ``x^4`` ulps to cancellation. These are the tail
moments :mod:`simulate.fields.truncnorm` combines at the two ends of an interval far in a tail.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TAIL_CF_THRESHOLD", "upper_tail_moments"]

TAIL_CF_THRESHOLD = 4.0
"""One-sided tail moments use Laplace's continued fraction at ``x >= TAIL_CF_THRESHOLD``."""

_CF_DEPTH = 40  # relative error < 3e-16 for x >= 4 (checked against mpmath in the tests)

_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LOG_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)


def _tail_continued_fraction(x: Tensor, variance: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(delta(x), V(x))`` from Laplace's continued fraction, for ``x >= 4``.

    ``lambda(x) = phi/Q = x + 1/K_1``, ``K_j = x + (j + 1)/K_{j+1}`` (Laplace's continued
    fraction of the Mills ratio), evaluated backwards from depth ``_CF_DEPTH``. Then
    ``delta = 1/K_1`` and ``V = 1 - x delta - delta^2 = (x + 4/K_2 - 3/K_3) / (K_1^2 K_2)``:
    a sum of positive terms, free of the ``x^4``-ulp cancellation of ``1 - lambda delta``.
    ``variance=False`` skips ``V`` (returned as ``None``).

    One fused ``addcdiv`` per level (``K_j = x + (j + 1) * 1 / K_{j+1}``): the loop is
    sequential in depth, so on the small tensors of a solver step its cost is the per-op
    overhead, not the arithmetic.
    """
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


def _check_moments(moments: int) -> int:
    if moments not in (0, 1, 2):
        raise ValueError(f"moments must be 0, 1 or 2, got {moments!r}")
    return moments


TailMoments = tuple[Tensor, Tensor | None, Tensor | None]
"""``(log erfcx(x/sqrt 2), delta(x), V(x))``; ``delta`` / ``V`` are ``None`` when not requested."""


def _erfcx_tail(x: Tensor, moments: int) -> TailMoments:
    """:func:`upper_tail_moments` from ``erfcx`` (its branch for ``x < TAIL_CF_THRESHOLD``; any ``x`` when
    ``moments = 0``): ``lambda = sqrt(2/pi) / erfcx(x/sqrt 2)``, ``delta = lambda - x``,
    ``V = 1 - lambda delta``."""
    ex = torch.special.erfcx(x * _SQRT_HALF)
    if moments == 0:
        return torch.log(ex), None, None
    lam = _SQRT_2_OVER_PI / ex
    delta = lam - x
    return torch.log(ex), delta, (1.0 - lam * delta) if moments == 2 else None


def _cf_tail(x: Tensor, moments: int, log_count: int | None = None) -> TailMoments:
    """:func:`upper_tail_moments` for ``x >= TAIL_CF_THRESHOLD`` (``moments`` 1 or 2) from the continued fraction:
    ``delta``, ``V`` from :func:`_tail_continued_fraction` and ``log erfcx(x/sqrt 2) = log sqrt(2/pi) - log(x + delta)``.

    ``log_count``: ``log erfcx`` only on the first ``log_count`` elements of a 1-D ``x`` (default: all).
    """
    delta, var = _tail_continued_fraction(x, moments == 2)
    if log_count is None:
        return _LOG_SQRT_2_OVER_PI - torch.log(x + delta), delta, var
    return _LOG_SQRT_2_OVER_PI - torch.log(x[:log_count] + delta[:log_count]), delta, var


def _scatter(parts: list[Tensor], perm: Tensor, shape: torch.Size) -> Tensor:
    """The values ``cat(parts)`` put back in place: element ``perm[k]`` of the result (of ``shape``) is element
    ``k`` of ``cat(parts)`` (``perm`` a permutation of the flattened indices)."""
    values = torch.cat(parts)
    return values.new_empty(perm.shape[0]).index_copy_(0, perm, values).reshape(shape)


def upper_tail_moments(x: Tensor, *, moments: int = 2) -> TailMoments:
    r"""One-sided tail of the standard normal beyond ``x >= 0``.

    Returns ``(log erfcx(x/sqrt 2), delta(x), V(x))`` where ``Q(x) = erfcx(x/sqrt 2)
    exp(-x^2/2) / 2``, ``delta(x) = E[Z - x | Z > x] = lambda(x) - x`` and
    ``V(x) = Var[Z | Z > x] = 1 - lambda(x) delta(x)``, ``lambda = phi/Q`` the inverse Mills
    ratio. Accurate to a few ulps for all ``x >= 0`` (continued fraction for ``x >= 4``).
    ``moments`` (0, 1, 2): how many of ``delta``, ``V`` to compute; the others are ``None``.

    Where the continued fraction runs (``x >= 4``) it also gives
    ``erfcx(x/sqrt 2) = sqrt(2/pi) / lambda = sqrt(2/pi) / (x + delta)``, so ``erfcx`` (the
    costliest function here, ~10x a ``log``) is evaluated only on the elements below 4; each
    branch runs on its own elements only.
    """
    moments = _check_moments(moments)
    if moments == 0:
        return _erfcx_tail(x, 0)
    small = x < TAIL_CF_THRESHOLD
    n_small = int(small.sum())
    if n_small == x.numel():
        return _erfcx_tail(x, moments)
    if not n_small:
        return _cf_tail(x, moments)
    flat = small.reshape(-1)
    perm = torch.cat([flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)])
    xp = x.reshape(-1).index_select(0, perm)
    low, high = _erfcx_tail(xp[:n_small], moments), _cf_tail(xp[n_small:], moments)
    return tuple(None if lo is None else _scatter([lo, hi], perm, x.shape) for lo, hi in zip(low, high))  # type: ignore[return-value]
