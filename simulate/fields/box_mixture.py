r"""Mixture of Gaussian neighbours with box supports (Assumption 4.3; docs/theory.md §3.5).

``p_g = sum_i w_i (U(B_i) * K_sigma)``, ``B_i = prod_d [a_id, b_id]``, ``K_sigma = N(0, sigma^2 I)``.
So ``x1 = y + sigma eta`` with ``y ~ U(B_i)``, ``eta ~ N(0, I)``, and with
``s_t^2 = t^2 sigma^2 + (1 - t)^2`` the coordinates of ``x_t`` are independent given ``i``:
``x_t,d = t y_d + s_t xi_d``. docs/theory.md §3.5 then gives, per component and coordinate,

* density ``(Phi((x - t a)/s_t) - Phi((x - t b)/s_t)) / (t (b - a))``;
* posterior of ``y_d``: ``N(x/t, (s_t/t)^2)`` truncated to ``[a, b]``;
* ``E[x1_d | x, i] = (1 - t^2 sigma^2/s_t^2) E_i[y_d] + (t sigma^2/s_t^2) x_d``,
  ``E[x0_d | x, i] = ((1 - t)/s_t^2) (x_d - t E_i[y_d])``, hence
  ``v_i = ((1 - t)/s_t^2) E_i[y|x] + ((t sigma^2 - (1 - t))/s_t^2) x`` and
  ``score_i = (t E_i[y|x] - x)/s_t^2``;
* ``d E_i[y_d|x] / d x_d = (t/s_t^2) Var_i[y_d|x]``.

Both ``v_i`` and ``score_i`` are affine in ``E_i[y|x]`` with common coefficients, so with
``Ybar = sum_i pi_i E_i[y|x]`` the mixture gives ``v = ((1-t)/s_t^2) Ybar + ((t sigma^2 -
(1-t))/s_t^2) x``, ``score = (t Ybar - x)/s_t^2`` and

``div v = (t (1 - t) / s_t^4) [ sum_i pi_i sum_d Var_i[y_d|x] + sum_i pi_i ||E_i[y|x] - Ybar||^2 ]
         + n (t sigma^2 - (1 - t)) / s_t^2``,

which is docs/theory.md §3.2 ``sum_i pi_i div v_i + sum_i pi_i (score_i - score) . (v_i - v)`` with
``(score_i - score) . (v_i - v) = t (1 - t)/s_t^4 ||E_i[y|x] - Ybar||^2``, a form that stays
regular at ``t = 0`` (the ``((1 - t)/t) sum_i pi_i ||score_i - score||^2`` form does not).
In words: ``div v = t(1-t)/s_t^4 tr Cov[y | x_t = x] + n (t sigma^2 - (1-t))/s_t^2``.

Numerics: in the standardized variable ``Z = (t y_d - x_d)/s_t`` the posterior is a standard
normal on ``[c - h, c + h]`` with ``c = (t (a+b)/2 - x)/s_t``, ``h = t (b - a)/(2 s_t)``, and
:func:`~simulate.fields.truncnorm.interval_stats` returns ``log`` of the mean of ``phi`` over
it, ``(E[Z] - c)/h`` and ``Var[Z]/h^2`` stably. The component density of ``x_t,d`` is
``exp(log_mean_density)/s_t`` (so ``t = 0`` gives ``N(0, 1)`` and a zero-width coordinate
gives ``N(t a, s_t^2)``, the Gaussian-mixture limit), ``E_i[y_d] = (a+b)/2 + ((b-a)/2) rel_mean``
and ``Var_i[y_d] = ((b-a)/2)^2 rel_var``. ``t = 0`` and ``t = 1`` need no special case:
``v(x, 0) = E[x1] - x``, ``score(x, 0) = -x``, ``v(x, 1) = x``, ``p_1 = p_g``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from simulate.fields._mixture import ComponentTerms, MixtureField, PosteriorStats
from simulate.fields._validation import as_param, resolve_device, resolve_dtype
from simulate.fields.base import DEFAULT_MAX_MEMORY_BYTES, FieldValues, _Request
from simulate.fields.truncnorm import interval_stats

__all__ = ["BoxMixture"]


class BoxMixture(MixtureField):
    r"""``p_g = sum_i w_i (U(B_i) * N(0, sigma^2 I))`` with its exact PF-ODE velocity field.

    Args:
        lower: lower corners ``a_i``, shape ``(m, n)``.
        upper: upper corners ``b_i``, shape ``(m, n)``, ``upper >= lower``. A coordinate with
            ``upper == lower`` is a point (zero width): that coordinate of the component is
            ``N(a, sigma^2)``; all-point boxes give the Gaussian mixture with common ``sigma``.
        weights: ``w_i >= 0`` summing to 1, shape ``(m,)``.
        sigma: kernel width ``sigma > 0``.
        dtype: default ``torch.float64``.
        device: default: the device of ``lower`` if a tensor, else CPU.
        max_memory_bytes: working-memory budget of one call.

    Raises:
        ValueError: non-finite or mis-shaped parameters, ``lower > upper``, ``sigma <= 0``,
            bad weights, ``m = 0``.
    """

    _BYTES_PER_ELEMENT = 512

    def __init__(
        self,
        lower: Any,
        upper: Any,
        weights: Any,
        sigma: float | Tensor,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        dtype = resolve_dtype(dtype)
        device = resolve_device(device, lower, upper, weights, sigma)
        lo = as_param("lower", lower, dtype, device)
        up = as_param("upper", upper, dtype, device)
        if lo.ndim != 2:
            raise ValueError(f"lower must have shape (m, n), got {tuple(lo.shape)}")
        if up.shape != lo.shape:
            raise ValueError(f"upper must have the shape of lower {tuple(lo.shape)}, got {tuple(up.shape)}")
        m, n = lo.shape
        if m == 0:
            raise ValueError("lower must be non-empty: a mixture needs m >= 1 boxes")
        if n == 0:
            raise ValueError("lower must have n >= 1 coordinates")
        bad = (lo > up).nonzero()
        if bad.shape[0]:
            i, d = (int(v) for v in bad[0])
            raise ValueError(
                f"lower must be <= upper (inverted box {i}: coordinate {d} has lower "
                f"{float(lo[i, d])!r} > upper {float(up[i, d])!r})"
            )
        sig = as_param("sigma", sigma, dtype, device)
        if sig.ndim != 0:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sig.shape)}")
        if float(sig) <= 0:
            raise ValueError(f"sigma must be > 0, got {float(sig)!r}")
        w = as_param("weights", weights, dtype, device)
        if w.ndim == 1 and w.shape[0] != m:
            raise ValueError(f"weights has {w.shape[0]} entries but there are m = {m} boxes")
        self._lower = lo
        self._upper = up
        self._mid = 0.5 * (lo + up)
        self._half = 0.5 * (up - lo)
        self._sigma = float(sig)
        super().__init__(n, w, dtype, device, max_memory_bytes)

    # ------------------------------------------------------------------ properties
    @property
    def sigma(self) -> float:
        """Kernel width ``sigma`` of ``K_sigma = N(0, sigma^2 I)``."""
        return self._sigma

    @property
    def lower(self) -> Tensor:
        """Lower box corners ``a_i``, shape ``(m, n)``."""
        return self._lower

    @property
    def upper(self) -> Tensor:
        """Upper box corners ``b_i``, shape ``(m, n)``."""
        return self._upper

    @property
    def centers(self) -> Tensor:
        """Box centres ``(a_i + b_i)/2``, shape ``(m, n)``."""
        return self._mid

    @property
    def mean(self) -> Tensor:
        """``E[x1] = sum_i w_i (a_i + b_i)/2``."""
        return self._weights @ self._mid

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BoxMixture:
        """A copy with parameters on ``device`` / of ``dtype``."""
        return BoxMixture(
            self._lower,
            self._upper,
            self._weights,
            self._sigma,
            dtype=dtype or self._dtype,
            device=device or self._device,
            max_memory_bytes=self._max_memory_bytes,
        )

    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``k`` samples ``x1 = y + sigma eta``, ``y ~ U(B_i)``, ``i ~ w``; shape ``(k, n)``."""
        idx = self._sample_components(k, generator)
        u = torch.rand(k, self._n, generator=generator, dtype=self._dtype, device=self._device)
        eta = torch.randn(k, self._n, generator=generator, dtype=self._dtype, device=self._device)
        return self._lower[idx] + (self._upper - self._lower)[idx] * u + self._sigma * eta

    # ------------------------------------------------------------------ evaluation
    def _s_t(self, t: Tensor) -> Tensor:
        """``s_t = sqrt(t^2 sigma^2 + (1 - t)^2)`` (docs/theory.md §3.5)."""
        return torch.sqrt(t * t * self._sigma**2 + (1.0 - t) ** 2)

    def _component_terms(
        self, x: Tensor, t: Tensor, comps: slice, request: _Request | None
    ) -> ComponentTerms:
        mid = self._mid[comps]  # (mc, n)
        half = self._half[comps]
        s_t = self._s_t(t)  # (B,)
        c = (t.view(-1, 1, 1) * mid - x.unsqueeze(1)) / s_t.view(-1, 1, 1)  # centre of the standardized interval
        h = (t / s_t).view(-1, 1, 1) * half  # half-width t (b - a) / (2 s_t)
        # log density only; + posterior means (velocity, score); + variances (divergence)
        moments = 0 if request is None else (2 if request.divergence else 1)
        st = interval_stats(c, h, moments=moments)
        log_p = st.log_mean_density.sum(dim=2) - self._n * torch.log(s_t)[:, None]
        log_weight = self._log_weights[comps] + log_p
        if request is None:
            return ComponentTerms(log_weight)
        post_mean = mid + half * st.rel_mean  # E_i[y | x]
        post_var = None
        if request.divergence:
            post_var = (half * half * st.rel_var).sum(dim=2)  # sum_d Var_i[y_d | x]
        return ComponentTerms(log_weight, a=post_mean, c=post_var, b_is_a=True)

    def _finish(self, x: Tensor, t: Tensor, stats: PosteriorStats, request: _Request) -> FieldValues:
        s2 = (t * t * self._sigma**2 + (1.0 - t) ** 2)[:, None]  # s_t^2, (B, 1)
        t2 = t[:, None]
        y_bar = stats.mean_a
        velocity = score = divergence = None
        if request.velocity:
            # = ((1-t)/s_t^2) Ybar + ((t sigma^2 - (1-t))/s_t^2) x, without cancelling large terms
            velocity = ((1.0 - t2) / s2) * (y_bar - x) + (t2 * self._sigma**2 / s2) * x
        if request.score:
            score = (t2 * y_bar - x) / s2
        if request.divergence:
            s2f = s2[:, 0]
            divergence = (t * (1.0 - t) / (s2f * s2f)) * (stats.mean_c + stats.comoment) + self._n * (
                t * self._sigma**2 - (1.0 - t)
            ) / s2f
        return FieldValues(velocity=velocity, score=score, log_prob=stats.log_weight, divergence=divergence)

    def __repr__(self) -> str:
        return f"BoxMixture(m={self.m}, n={self._n}, sigma={self._sigma:g}, dtype={self._dtype}, device={self._device})"
