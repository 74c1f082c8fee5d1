"""Analytic flow-matching fields for the solver and map tests, written independently of
``simulate.fields`` (closed forms of docs/theory.md §1.1, §3) so the tests cross-check it."""

from __future__ import annotations

import math

import scipy.linalg
import torch


def _tcol(t, x: torch.Tensor):
    """Time as a float or a (B, 1) column of x's dtype."""
    if isinstance(t, torch.Tensor):
        assert t.shape == x.shape[:1], (t.shape, x.shape)
        return t.to(x.dtype).reshape(-1, 1)
    return float(t)


class LinearField:
    def __init__(self, A: torch.Tensor):
        self.A = A

    def velocity(self, x, t):
        return x @ self.A.to(x).T

    def divergence(self, x, t):
        return torch.full(x.shape[:1], float(torch.trace(self.A)), dtype=x.dtype, device=x.device)

    def exact(self, x0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
        P = scipy.linalg.expm((t1 - t0) * self.A.numpy())
        return x0 @ torch.from_numpy(P).to(x0).T


class GaussianField:
    def __init__(self, mu: torch.Tensor, s: float):
        self.mu, self.s = mu, s

    def _coef(self, t):
        s2 = self.s**2
        return (t * s2 - (1 - t)) / (t * t * s2 + (1 - t) ** 2)

    def velocity(self, x, t):
        tc = _tcol(t, x)
        mu = self.mu.to(x)
        return mu + self._coef(tc) * (x - tc * mu)

    def divergence(self, x, t):
        c = self._coef(_tcol(t, x))
        if isinstance(c, torch.Tensor):
            return x.shape[1] * c[:, 0]
        return torch.full(x.shape[:1], x.shape[1] * c, dtype=x.dtype, device=x.device)

    def G(self, z):
        return self.mu.to(z) + self.s * z

    def F(self, x):
        return (x - self.mu.to(x)) / self.s


class MixtureField:
    def __init__(self, w, mu, s):
        self.w, self.mu, self.s = w, mu, s  # (m,), (m, n), (m,)

    def _parts(self, x, t):
        tc = _tcol(t, x)
        if not isinstance(tc, torch.Tensor):
            tc = torch.full((x.shape[0], 1), tc, dtype=x.dtype, device=x.device)
        mu, s2, w = self.mu.to(x), self.s.to(x) ** 2, self.w.to(x)
        S = tc**2 * s2 + (1 - tc) ** 2  # (B, m): variance of x_t given component i
        diff = x[:, None, :] - tc[:, :, None] * mu[None]  # (B, m, n)
        logp = torch.log(w) - 0.5 * x.shape[1] * torch.log(2 * math.pi * S)
        logp = logp - 0.5 * (diff**2).sum(-1) / S
        pi = torch.softmax(logp, dim=1)
        c = (tc * s2 - (1 - tc)) / S
        vi = mu[None] + c[..., None] * diff
        score_i = -diff / S[..., None]
        return pi, vi, score_i, c, logp

    def velocity(self, x, t):
        pi, vi, *_ = self._parts(x, t)
        return (pi[..., None] * vi).sum(1)

    def divergence(self, x, t):
        # docs/theory.md §3.2: sum_i pi_i div v_i + sum_i pi_i (score_i - score).(v_i - v)
        pi, vi, si, c, _ = self._parts(x, t)
        v = (pi[..., None] * vi).sum(1)
        score = (pi[..., None] * si).sum(1)
        between = (pi * ((si - score[:, None]) * (vi - v[:, None])).sum(-1)).sum(1)
        return (pi * x.shape[1] * c).sum(1) + between

    def log_density(self, x):
        return torch.logsumexp(self._parts(x, 1.0)[4], dim=1)


class RotationField:
    def velocity(self, x, t):
        r2 = (x * x).sum(1, keepdim=True)
        return r2 * torch.stack([-x[:, 1], x[:, 0]], dim=1)

    def exact(self, x0, t0, t1):
        ang = (x0 * x0).sum(1) * (t1 - t0)
        c, s = torch.cos(ang), torch.sin(ang)
        return torch.stack([c * x0[:, 0] - s * x0[:, 1], s * x0[:, 0] + c * x0[:, 1]], dim=1)
