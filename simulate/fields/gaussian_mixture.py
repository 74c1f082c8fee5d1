r"""Gaussian-mixture data law and its exact flow-matching field (docs/theory.md §1.1, §3.3).

``p_g = sum_i w_i N(mu_i, diag(s_i^2))``. Given component ``i``, ``x_t = t x1 + (1 - t) x0``
is ``N(t mu_i, diag(S_i))`` with ``S_i = t^2 s_i^2 + (1 - t)^2`` (coordinate-wise), and
(docs/theory.md §3.3, "Gaussian mixture")

* ``v_i(x, t) = E[x1 - x0 | x_t = x, i] = mu_i + ((t s_i^2 - (1 - t)) / S_i) (x - t mu_i)``,
* ``score_i = -(x - t mu_i) / S_i``, ``div v_i = sum_d (t s_id^2 - (1 - t)) / S_id``,
* ``v = sum_i pi_i v_i``, ``score = sum_i pi_i score_i``, ``pi_i ~ w_i N(x; t mu_i, S_i)``,
* ``div v = sum_i pi_i div v_i + sum_i pi_i (score_i - score) . (v_i - v)``
  (``grad pi_i = pi_i (score_i - score)``; the between-component term is kept).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from simulate.fields._mixture import Affine, ComponentTerms, MixtureField, PosteriorStats
from simulate.fields._validation import as_param, resolve_device, resolve_dtype
from simulate.fields.base import DEFAULT_MAX_MEMORY_BYTES, FieldValues, _Request

__all__ = ["GaussianMixture", "Gaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture(MixtureField):
    r"""``p_g = sum_i w_i N(mu_i, diag(s_i^2))`` with its exact PF-ODE velocity field.

    Args:
        means: component means ``mu_i``, shape ``(m, n)``.
        stds: standard deviations ``s_i > 0``: a scalar (common), shape ``(m,)`` (isotropic
            per component) or ``(m, n)`` (diagonal).
        weights: mixture weights ``w_i >= 0`` summing to 1, shape ``(m,)``.
        dtype: default ``torch.float64``.
        device: default: the device of ``means`` if a tensor, else CPU.
        max_memory_bytes: working-memory budget of one call.

    Raises:
        ValueError: non-finite or mis-shaped parameters, ``stds <= 0``, bad weights, ``m = 0``.
    """

    _BYTES_PER_ELEMENT = 96

    def __init__(
        self,
        means: Any,
        stds: Any,
        weights: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        dtype = resolve_dtype(dtype)
        device = resolve_device(device, means, stds, weights)
        mu = as_param("means", means, dtype, device)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (m, n), got {tuple(mu.shape)}")
        m, n = mu.shape
        if m == 0:
            raise ValueError("means must be non-empty: a mixture needs m >= 1 components")
        if n == 0:
            raise ValueError("means must have n >= 1 coordinates")
        s = as_param("stds", stds, dtype, device)
        if s.ndim == 0:
            s = s.expand(m, n)
        elif s.ndim == 1 and s.shape[0] == m:
            s = s[:, None].expand(m, n)
        elif s.shape != (m, n):
            raise ValueError(f"stds must be a scalar or have shape ({m},) or ({m}, {n}), got {tuple(s.shape)}")
        if bool((s <= 0).any()):
            raise ValueError("stds must be > 0")
        w = as_param("weights", weights, dtype, device)
        if w.ndim == 1 and w.shape[0] != m:
            raise ValueError(f"weights has {w.shape[0]} entries but means has m = {m} rows")
        self._means = mu
        self._stds = s.contiguous()
        self._vars = self._stds * self._stds
        # isotropic components (one s_i per component): S_i = t^2 s_i^2 + (1-t)^2 per (row, component)
        iso = bool((self._stds == self._stds[:, :1]).all())
        self._iso_vars = self._vars[:, 0].contiguous() if iso else None
        super().__init__(n, w, dtype, device, max_memory_bytes)

    # ------------------------------------------------------------------ properties
    @property
    def means(self) -> Tensor:
        """Component means ``mu_i``, shape ``(m, n)``."""
        return self._means

    @property
    def stds(self) -> Tensor:
        """Component standard deviations ``s_i``, shape ``(m, n)``."""
        return self._stds

    @property
    def sigma(self) -> float:
        """The common standard deviation ``sigma`` (docs/theory.md §1.3: point boxes with ``K_sigma``).

        Raises:
            ValueError: if the components do not share one isotropic ``sigma``.
        """
        first = self._stds.reshape(-1)[0]
        if not bool((self._stds == first).all()):
            raise ValueError("sigma is defined only when all stds are equal (a common sigma)")
        return float(first)

    @property
    def lower(self) -> Tensor:
        """The means (point supports ``Omega_i = {mu_i}``)."""
        return self._means

    @property
    def upper(self) -> Tensor:
        """The means (point supports ``Omega_i = {mu_i}``)."""
        return self._means

    @property
    def mean(self) -> Tensor:
        """``E[x1] = sum_i w_i mu_i``."""
        return self._weights @ self._means

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianMixture:
        """A copy with parameters on ``device`` / of ``dtype``."""
        return GaussianMixture(
            self._means,
            self._stds,
            self._weights,
            dtype=dtype or self._dtype,
            device=device or self._device,
            max_memory_bytes=self._max_memory_bytes,
        )

    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``k`` samples ``x1 = mu_i + s_i * z``, ``i ~ w``, ``z ~ N(0, I)``; shape ``(k, n)``."""
        idx = self._sample_components(k, generator)
        z = torch.randn(k, self._n, generator=generator, dtype=self._dtype, device=self._device)
        return self._means[idx] + self._stds[idx] * z

    # ------------------------------------------------------------------ evaluation
    def _component_terms(
        self, x: Tensor, t: Tensor, comps: slice, request: _Request | None
    ) -> ComponentTerms:
        if self._iso_vars is not None:
            return self._isotropic_terms(x, t, comps, request)
        mu = self._means[comps]  # (mc, n)
        var = self._vars[comps]
        t3 = t[:, None, None]
        big_s = t3 * t3 * var + (1.0 - t3) ** 2  # S_i = t^2 s_i^2 + (1-t)^2, (B, mc, n)
        r = x[:, None, :] - t3 * mu  # x - t mu_i
        log_p = -0.5 * (r * r / big_s + torch.log(big_s)).sum(dim=2) - 0.5 * self._n * _LOG_2PI
        log_weight = self._log_weights[comps] + log_p
        if request is None:
            return ComponentTerms(log_weight)
        div = request.divergence
        score = vel_minus_x = k_sum = None
        if request.score or div:
            score = -r / big_s
        if request.velocity or div:
            # v_i - x = mu_i + k (x - t mu_i) - x = ((1-t)/S_i) (mu_i + (t s_i^2 + t - 2) x): exactly 0 at t = 1
            vel_minus_x = ((1.0 - t3) / big_s) * (mu + (t3 * var + t3 - 2.0) * x[:, None, :])
        if div:
            k_sum = ((t3 * var - (1.0 - t3)) / big_s).sum(dim=2)  # sum_d (t s_i^2 - (1-t)) / S_i
        return ComponentTerms(log_weight, a=score, b=vel_minus_x, c=k_sum)

    def _isotropic_terms(
        self, x: Tensor, t: Tensor, comps: slice, request: _Request | None
    ) -> ComponentTerms:
        """Isotropic components (``s_i`` the same in every coordinate): ``S_i`` is per (row,
        component), so ``log p`` needs only ``||x - t mu_i||^2`` from the ``(B, mc, n)`` tensors,
        and the score / velocity terms, affine in ``(mu_i, x)`` with per-(row, component)
        coefficients, are reduced in factored form (:class:`Affine`) unless the divergence's
        co-moment needs them in full."""
        mu = self._means[comps]  # (mc, n)
        var = self._iso_vars[comps]  # (mc,)
        n = self._n
        t2 = t[:, None]
        big_s = t2 * t2 * var + (1.0 - t2) ** 2  # S_i, (B, mc)
        r = torch.addcmul(x[:, None, :], t[:, None, None], mu, value=-1.0)  # x - t mu_i, (B, mc, n)
        d2 = torch.linalg.vector_norm(r, dim=2).square()  # ||x - t mu_i||^2, one pass over r
        log_p = -0.5 * (d2 / big_s + n * torch.log(big_s)) - 0.5 * n * _LOG_2PI
        log_weight = self._log_weights[comps] + log_p
        if request is None:
            return ComponentTerms(log_weight)
        one_m_t = 1.0 - t2
        if request.divergence:  # the co-moment needs the (B, mc, n) terms
            s3 = big_s[:, :, None]
            t3 = t[:, None, None]
            score = -r / s3
            vel_minus_x = ((1.0 - t3) / s3) * (mu + (t3 * var[:, None] + t3 - 2.0) * x[:, None, :])
            k_sum = n * ((t2 * var - one_m_t) / big_s)
            return ComponentTerms(log_weight, a=score, b=vel_minus_x, c=k_sum)
        score = vel_minus_x = None
        inv_s = 1.0 / big_s
        if request.score:
            # score_i = -(x - t mu_i) / S_i = (t / S_i) mu_i - (1 / S_i) x
            score = Affine(t2 * inv_s, -inv_s, mu, x)
        if request.velocity:
            # v_i - x = ((1-t)/S_i) mu_i + ((1-t)(t s_i^2 + t - 2)/S_i) x: exactly 0 at t = 1
            g = one_m_t * inv_s
            vel_minus_x = Affine(g, g * (t2 * var + t2 - 2.0), mu, x)
        return ComponentTerms(log_weight, a=score, b=vel_minus_x)

    def _finish(self, x: Tensor, t: Tensor, stats: PosteriorStats, request: _Request) -> FieldValues:
        div = None
        if request.divergence:
            div = stats.mean_c + stats.comoment
        return FieldValues(
            velocity=None if stats.mean_b is None else x + stats.mean_b,
            score=stats.mean_a,
            log_prob=stats.log_weight,
            divergence=div,
        )


class Gaussian(GaussianMixture):
    r"""A single Gaussian ``N(mu, diag(s^2))`` (``m = 1``): every map is in closed form.

    The flow map at time ``t`` is ``z -> t mu + sqrt(t^2 s^2 + (1 - t)^2) z`` (coordinate-wise;
    it is linear and pushes ``N(0, I)`` to ``N(t mu, diag(t^2 s^2 + (1-t)^2))``), hence
    ``G(z) = mu + s z`` (docs/theory.md §3.4) and ``F(x) = (x - mu) / s``.

    Args:
        mean: ``mu``, shape ``(n,)``.
        std: ``s > 0``, a scalar or shape ``(n,)``.
    """

    def __init__(
        self,
        mean: Any,
        std: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        dtype = resolve_dtype(dtype)
        device = resolve_device(device, mean, std)
        mu = as_param("mean", mean, dtype, device)
        if mu.ndim != 1:
            raise ValueError(f"mean must have shape (n,), got {tuple(mu.shape)}")
        s = as_param("std", std, dtype, device)
        if s.ndim == 0:
            s = s.expand(mu.shape[0])
        elif s.shape != mu.shape:
            raise ValueError(f"std must be a scalar or have shape ({mu.shape[0]},), got {tuple(s.shape)}")
        if bool((s <= 0).any()):
            raise ValueError("std must be > 0")
        super().__init__(
            mu[None], s[None], torch.ones(1, dtype=dtype, device=device),
            dtype=dtype, device=device, max_memory_bytes=max_memory_bytes,
        )

    @property
    def std(self) -> Tensor:
        """``s``, shape ``(n,)``."""
        return self._stds[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussian:
        return Gaussian(
            self._means[0], self._stds[0], dtype=dtype or self._dtype,
            device=device or self._device, max_memory_bytes=self._max_memory_bytes,
        )

    def _as_points(self, z: Any) -> Tensor:
        z = torch.as_tensor(z, dtype=self._dtype, device=self._device)
        if z.shape[-1] != self._n:
            raise ValueError(f"points must have last dimension n = {self._n}, got {tuple(z.shape)}")
        return z

    def trajectory(self, z: Any, t: float | Tensor) -> Tensor:
        """``x_t = t mu + sqrt(t^2 s^2 + (1 - t)^2) z``: the exact ODE solution from ``x_0 = z``.

        ``t`` is a float, a tensor of shape ``(B,)`` for ``z`` of shape ``(B, n)``, or any
        tensor broadcasting against ``z[..., :1]``.
        """
        z = self._as_points(z)
        t = torch.as_tensor(t, dtype=self._dtype, device=self._device)
        if t.ndim == 1 and z.ndim == 2:
            t = t[:, None]
        scale = torch.sqrt(t * t * self._vars[0] + (1.0 - t) ** 2)
        return t * self._means[0] + scale * z

    def flow_map(self, z: Any) -> Tensor:
        """Generation map ``G(z) = mu + s z``."""
        return self._means[0] + self._stds[0] * self._as_points(z)

    def inverse_map(self, x: Any) -> Tensor:
        """Inversion map ``F(x) = G^{-1}(x) = (x - mu) / s``."""
        return (self._as_points(x) - self._means[0]) / self._stds[0]
