r"""Shared machinery of the mixture fields: chunked evaluation and streaming reduction.

A mixture ``p_g = sum_i w_i p_{g,i}`` has ``p_t = sum_i w_i p_{t,i}`` and posterior component
weights ``pi_i(x) = w_i p_{t,i}(x) / p_t(x)`` (docs/theory.md §3.2). Each component supplies
per row ``l_i = log w_i + log p_{t,i}(x)``, two vectors ``A_i``, ``B_i`` (``B = A`` allowed)
and a scalar ``c_i``; the field needs

* ``log p_t(x) = logsumexp_i l_i``,
* the posterior means ``sum_i pi_i A_i`` and ``sum_i pi_i B_i``,
* the posterior co-moment ``sum_i pi_i (A_i - Abar) . (B_i - Bbar)`` (the between-component
  term of the divergence) and ``sum_i pi_i c_i``.

Rows are independent, so the batch is cut into row chunks; when one row over all ``m``
components is too large for the memory budget, components are cut into chunks too and the
partial results are merged exactly (streaming log-sum-exp with Chan et al.'s pairwise
update of the co-moment: with group weights ``f1 + f2 = 1``,
``C = f1 C1 + f2 C2 + f1 f2 (A1 - A2) . (B1 - B2)``).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from simulate.fields.base import DEFAULT_MAX_MEMORY_BYTES, FieldValues, VelocityField, _Request
from simulate.fields._validation import check_weights

CHUNK_TARGET_BYTES = 32 * 2**20
"""Largest working set of one chunk, whatever the budget (see ``MixtureField._plan``)."""

__all__ = ["MixtureField"]


@dataclass
class Affine:
    """Per-(row, component) vectors kept factored: ``coef_basis[b, i] basis[i] + coef_x[b, i] x[b]``.

    Used when a component term is affine in a per-component vector (a mean) and the row
    ``x`` with per-(row, component) coefficients (isotropic Gaussian components): the posterior
    mean is then two small products, ``(p coef_basis) @ basis + (sum_i p_i coef_x_i) x``,
    instead of building and reducing a ``(B, mc, n)`` tensor.
    """

    coef_basis: Tensor  # (B, mc)
    coef_x: Tensor  # (B, mc)
    basis: Tensor  # (mc, n)
    x: Tensor  # (B, n)

    def weighted_mean(self, p: Tensor) -> Tensor:
        """``sum_i p_i (coef_basis_i basis_i + coef_x_i x)`` for weights ``p`` ``(B, mc)``."""
        return (p * self.coef_basis) @ self.basis + (p * self.coef_x).sum(dim=1, keepdim=True) * self.x


@dataclass
class ComponentTerms:
    """Per-(row, component) terms of one chunk: ``l`` ``(B, mc)``, ``a``/``b`` ``(B, mc, n)``
    (or :class:`Affine`), ``c`` ``(B, mc)``. Terms not requested are ``None``; ``b_is_a``
    means ``b = a`` (``b`` is then ``None``). The co-moment needs ``a`` (and ``b`` unless
    ``b_is_a``) as tensors."""

    log_weight: Tensor
    a: Tensor | Affine | None = None
    b: Tensor | Affine | None = None
    c: Tensor | None = None
    b_is_a: bool = False


@dataclass
class PosteriorStats:
    """Posterior summaries over the components seen so far (per row); ``None``: not requested."""

    log_weight: Tensor  # (B,)
    mean_a: Tensor | None = None  # (B, n)
    mean_b: Tensor | None = None  # (B, n); None: not requested, or the same as mean_a (b_is_a)
    comoment: Tensor | None = None  # (B,)
    mean_c: Tensor | None = None  # (B,)
    b_is_a: bool = False


def _safe_shift(log_total: Tensor) -> Tensor:
    return torch.where(torch.isfinite(log_total), log_total, 0.0)


def _log_total_and_weights(log_weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(logsumexp_j l_j, pi)`` per row, from one shifted exponential (see :func:`_normalised_weights`).

    ``log sum_j exp(l_j) = log sum_j e_j + max_j l_j`` (a non-finite max counted as 0): the same
    operations as ``torch.logsumexp``, so the same values.
    """
    top = _safe_shift(log_weight.amax(dim=1, keepdim=True))
    e = torch.exp(log_weight - top)
    total = e.sum(dim=1, keepdim=True)
    return (torch.log(total) + top).squeeze(1), e / torch.where(total > 0, total, 1.0)


def _normalised_weights(log_weight: Tensor, dim: int = 1) -> Tensor:
    r"""Posterior weights ``pi_i = exp(l_i - logsumexp_j l_j)`` that sum to 1 exactly (docs/theory.md §3.2).

    Computed as ``e_i / sum_j e_j`` with ``e_i = exp(l_i - max_j l_j)``, not as
    ``exp(l_i - logsumexp_j l_j)``: when ``|l_i|`` is ~1e17 (far tails) the ulp of
    ``logsumexp`` exceeds ``log 2`` and ``max + log(sum e)`` rounds to ``max``, so two tied
    components would both get weight 1. A row whose ``l_i`` are all ``-inf`` gets weights 0.
    """
    top = _safe_shift(log_weight.amax(dim=dim, keepdim=True))
    e = torch.exp(log_weight - top)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, 1.0)


def _normalised_log_weights(log_weight: Tensor) -> Tensor:
    r"""``log pi_i = (l_i - max_j l_j) - log sum_j exp(l_j - max_j l_j)`` per row: the log posterior
    of ``_normalised_weights``, exact when ``|l_i|`` is huge (the max is subtracted first)."""
    shifted = log_weight - _safe_shift(log_weight.amax(dim=1, keepdim=True))
    return shifted - _safe_shift(torch.logsumexp(shifted, dim=1, keepdim=True))


def _weighted_mean(p: Tensor, v: Tensor | Affine | None) -> Tensor | None:
    """``sum_i p_i v_i`` per row (``p`` ``(B, mc)``, ``v`` ``(B, mc, n)`` or :class:`Affine`)."""
    if v is None:
        return None
    if isinstance(v, Affine):
        return v.weighted_mean(p)
    return torch.bmm(p.unsqueeze(1), v).squeeze(1)


def _reduce(terms: ComponentTerms, comoment: bool) -> PosteriorStats:
    if terms.a is None and terms.b is None and terms.c is None:
        return PosteriorStats(torch.logsumexp(terms.log_weight, dim=1))
    log_total, p = _log_total_and_weights(terms.log_weight)  # p: (B, mc), rows sum to 1
    mean_a = _weighted_mean(p, terms.a)
    mean_b = _weighted_mean(p, terms.b)
    mean_c = None if terms.c is None else (p * terms.c).sum(dim=1)
    co = None
    if comoment:
        if not isinstance(terms.a, Tensor) or not (terms.b_is_a or isinstance(terms.b, Tensor)):
            raise TypeError("the co-moment needs the component terms a (and b) as tensors")
        da = terms.a - mean_a[:, None, :]
        if terms.b_is_a:
            co = torch.einsum("bm,bmn,bmn->b", p, da, da)
        else:
            co = torch.einsum("bm,bmn,bmn->b", p, da, terms.b - mean_b[:, None, :])
    return PosteriorStats(log_total, mean_a, mean_b, co, mean_c, terms.b_is_a)


def _merge(s1: PosteriorStats, s2: PosteriorStats) -> PosteriorStats:
    log_total = torch.logaddexp(s1.log_weight, s2.log_weight)
    if s1.mean_a is None and s1.mean_b is None and s1.mean_c is None:
        return PosteriorStats(log_total)
    f = _normalised_weights(torch.stack((s1.log_weight, s2.log_weight), dim=1))  # (B, 2), f1 + f2 = 1
    f1, f2 = f[:, 0], f[:, 1]
    mean_a = None if s1.mean_a is None else f1[:, None] * s1.mean_a + f2[:, None] * s2.mean_a
    mean_b = None if s1.mean_b is None else f1[:, None] * s1.mean_b + f2[:, None] * s2.mean_b
    mean_c = None if s1.mean_c is None else f1 * s1.mean_c + f2 * s2.mean_c
    co = None
    if s1.comoment is not None:
        da = s1.mean_a - s2.mean_a
        db = da if s1.b_is_a else s1.mean_b - s2.mean_b
        co = f1 * s1.comoment + f2 * s2.comoment + f1 * f2 * (da * db).sum(dim=1)
    return PosteriorStats(log_total, mean_a, mean_b, co, mean_c, s1.b_is_a)


def _cat(parts: list[PosteriorStats]) -> PosteriorStats:
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> Tensor | None:
        first = getattr(parts[0], name)
        return None if first is None else torch.cat([getattr(p, name) for p in parts], dim=0)

    return PosteriorStats(
        *(cat(k) for k in ("log_weight", "mean_a", "mean_b", "comoment", "mean_c")), parts[0].b_is_a
    )


class MixtureField(VelocityField):
    """A field whose data law is a finite mixture; subclasses supply the component terms.

    Subclasses set ``_BYTES_PER_ELEMENT`` (working memory per (row, component, coordinate)
    element of a chunk) and implement :meth:`_component_terms`, :meth:`_finish`,
    :attr:`lower`, :attr:`upper` (the supports ``Omega_i`` as boxes; points for Gaussians).
    """

    _BYTES_PER_ELEMENT = 256

    def __init__(
        self,
        n: int,
        weights: Tensor,
        dtype: torch.dtype,
        device: torch.device,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        super().__init__(n, dtype, device, max_memory_bytes)
        self._weights = check_weights(weights)
        with torch.no_grad():
            self._log_weights = torch.log(self._weights)
        need = n * self._BYTES_PER_ELEMENT
        if max_memory_bytes < need:
            raise ValueError(
                f"max_memory_bytes must be >= {need} (one row of one component in n = {n}), "
                f"got {max_memory_bytes}"
            )

    # ------------------------------------------------------------------ properties
    @property
    def m(self) -> int:
        """Number of mixture components ``m``."""
        return int(self._weights.shape[0])

    @property
    def weights(self) -> Tensor:
        """Mixture weights ``w_i`` (``w_i >= 0``, ``sum w_i = 1``), shape ``(m,)``."""
        return self._weights

    @property
    @abc.abstractmethod
    def lower(self) -> Tensor:
        """Lower corners ``a_i`` of the supports ``Omega_i`` (boxes), shape ``(m, n)``."""

    @property
    @abc.abstractmethod
    def upper(self) -> Tensor:
        """Upper corners ``b_i`` of the supports ``Omega_i`` (boxes), shape ``(m, n)``."""

    @property
    def side(self) -> float:
        """Largest box side ``l``: every ``Omega_i`` lies in a cube of side ``l`` (Assumption 4.4).

        ``max_i max_d (b_id - a_id)``; ``0`` for point supports (Gaussian components).
        """
        return float((self.upper - self.lower).max())

    def pairwise_distances(self) -> Tensor:
        """Euclidean distances between the supports, shape ``(m, m)``.

        For axis-aligned boxes ``dist(B_i, B_j) = || max(0, a_j - b_i, a_i - b_j) ||``
        (per-coordinate gaps); ``0`` when boxes overlap or touch.
        """
        lo, up = self.lower, self.upper
        rows = []
        for i in range(self.m):
            gap = torch.clamp(torch.maximum(lo - up[i], lo[i] - up), min=0.0)
            rows.append(torch.linalg.vector_norm(gap, dim=1))
        return torch.stack(rows)

    @property
    def separation(self) -> float:
        """Smallest pairwise distance ``d`` between the supports (Assumption 4.4); ``inf`` if ``m = 1``."""
        if self.m == 1:
            return math.inf
        dist = self.pairwise_distances()
        iu = torch.triu_indices(self.m, self.m, offset=1, device=dist.device)
        return float(dist[iu[0], iu[1]].min())

    def check_separated(self, min_distance: float = 0.0) -> None:
        """Raise ``ValueError`` unless every pair of supports is at distance ``> 0`` and ``>= min_distance``.

        Assumption 4.4 asks for pairwise distance ``>= d``; call this where it is assumed.
        """
        min_distance = float(min_distance)
        if not (math.isfinite(min_distance) and min_distance >= 0):
            raise ValueError(f"min_distance must be finite and >= 0, got {min_distance!r}")
        if self.m == 1:
            return
        dist = self.pairwise_distances()
        kind = "boxes" if self.side > 0 else "components"
        for i in range(self.m):
            for j in range(i + 1, self.m):
                d = float(dist[i, j])
                if d == 0.0:
                    raise ValueError(f"{kind} {i} and {j} overlap (distance 0; need >= {min_distance:g})")
                if d < min_distance:
                    raise ValueError(f"{kind} {i} and {j} are at distance {d:.6g} < {min_distance:g}")

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _component_terms(
        self, x: Tensor, t: Tensor, comps: slice, request: _Request | None
    ) -> ComponentTerms:
        """Terms of components ``comps`` for rows ``x`` ``(B, n)`` at times ``t`` ``(B,)``.

        ``request is None``: only the log weights (log density / log posterior); otherwise
        the terms that the requested values need (and only those: a velocity-only request
        skips what only the score or the divergence use).
        """

    @abc.abstractmethod
    def _finish(self, x: Tensor, t: Tensor, stats: PosteriorStats, request: _Request) -> FieldValues:
        """Field values from the merged posterior summaries."""

    # ------------------------------------------------------------------ chunking
    def _plan(self, batch: int) -> tuple[int, int]:
        """``(rows per chunk, components per chunk)`` within ``max_memory_bytes``.

        Chunks are also capped at :data:`CHUNK_TARGET_BYTES`: temporaries of a few tens of MB stay
        hot in the allocator, while budget-sized ones are page-faulted afresh on every call
        (measured 4-5x slower for the Gaussian mixture at n = 4096; benchmarks/README.md).
        """
        budget = min(self._max_memory_bytes, CHUNK_TARGET_BYTES)
        elements = max(1, budget // self._BYTES_PER_ELEMENT)
        per_row = self.m * self._n
        if per_row <= elements:
            return max(1, min(batch, elements // per_row)), self.m
        return 1, max(1, elements // self._n)

    def _stats(self, x: Tensor, t: Tensor, request: _Request | None) -> PosteriorStats:
        rows, comps = self._plan(x.shape[0])
        comoment = request is not None and request.divergence
        if rows >= x.shape[0] and comps >= self.m:  # one chunk (the usual case): no slicing
            return _reduce(self._component_terms(x, t, slice(None), request), comoment)
        parts = []
        for r0 in range(0, x.shape[0], rows):
            xr, tr = x[r0 : r0 + rows], t[r0 : r0 + rows]
            acc = None
            for c0 in range(0, self.m, comps):
                terms = self._component_terms(xr, tr, slice(c0, c0 + comps), request)
                st = _reduce(terms, comoment)
                acc = st if acc is None else _merge(acc, st)
            parts.append(acc)
        return _cat(parts)

    def _evaluate(self, x: Tensor, t: Tensor, request: _Request) -> FieldValues:
        moments = request.velocity or request.score or request.divergence
        stats = self._stats(x, t, request if moments else None)
        return self._finish(x, t, stats, request)

    def log_posterior(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``log pi_i(x)``, the log posterior component probabilities at time ``t``, shape ``(B, m)``."""
        xb, tb, unbatched = self._prepare(x, t)
        rows, comps = self._plan(xb.shape[0])
        out = []
        for r0 in range(0, xb.shape[0], rows):
            xr, tr = xb[r0 : r0 + rows], tb[r0 : r0 + rows]
            logs = torch.cat(
                [
                    self._component_terms(xr, tr, slice(c0, c0 + comps), None).log_weight
                    for c0 in range(0, self.m, comps)
                ],
                dim=1,
            )
            out.append(_normalised_log_weights(logs))
        res = torch.cat(out, dim=0)
        return res[0] if unbatched else res

    def _sample_components(self, k: int, generator: torch.Generator | None) -> Tensor:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if k == 0:
            return torch.zeros(0, dtype=torch.long, device=self._device)
        return torch.multinomial(self._weights, k, replacement=True, generator=generator)
