r"""The learned field of the learned-vs-exact experiment: a time-conditioned MLP velocity net, as a simulator field.

Convention (docs/theory.md §1.2, §10.5): the net predicts the diffusers velocity
``u_theta(x, sigma)`` with ``sigma = 1 - t``, trained on ``x_sigma = (1 - sigma) x1 + sigma x0`` to
predict ``x0 - x1`` (:func:`largemodel.training.objective.flow_matching_loss`, whose call it accepts:
``hidden_states``, ``timestep = 1000 sigma``); the simulator's field is ``v(x, t) = -u_theta(x, 1 - t)``
(docs/theory.md §10.8).

* :class:`VelocityMLP` -- ``u_theta(x, sigma) = W3 s(W2 s(W1 [x, e(sigma)] + b1) + b2) + b3`` with ``s`` = SiLU
  and ``e(sigma) = (sin(pi 2^k sigma / 2), cos(pi 2^k sigma / 2))_{k < freqs}``; its divergence in closed form:
  ``div_x u = tr(W3 D2 W2 D1 W1x) = d2^T (W2 o M^T) d1`` with ``D_l = diag(d_l)``, ``d_l = s'(h_l)``,
  ``M = W1x W3`` (``W1x``: the columns of ``W1`` acting on ``x``), exact and ``O(width^2)`` per point;
* :class:`NetField` -- any net with ``u(x, sigma)`` and ``div_u(x, sigma)`` as a field the simulator's
  solvers and estimators take (``velocity``, ``divergence``, and ``evaluate`` for both from one pass through the
  net, as the solvers ask when they integrate the log-determinant; ``t`` a float or a ``(B,)`` tensor);
* :class:`FieldAsNet` -- the other way round: an exact simulator field posing as a net (the positive control:
  ``NetField(FieldAsNet(f))`` is ``f``, so the learned pipeline must reproduce the exact numbers).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["VelocityMLP", "NetField", "FieldAsNet"]


def _silu_grad(h: Tensor) -> Tensor:
    """``s'(h)`` of ``s(h) = h sigmoid(h)``: ``sigmoid(h) (1 + h (1 - sigmoid(h)))``."""
    g = torch.sigmoid(h)
    return g * (1.0 + h * (1.0 - g))


class VelocityMLP(nn.Module):
    """Two-hidden-layer SiLU MLP ``u_theta(x, sigma)`` on ``[x, e(sigma)]`` (module docstring).

    Args:
        n: data dimension.
        width: hidden width.
        freqs: frequencies of the time features (``2 freqs`` features).
        seed: initialisation seed.
    """

    def __init__(self, n: int, width: int, freqs: int = 8, *, seed: int = 0) -> None:
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.l1 = nn.Linear(n + 2 * freqs, width)
            self.l2 = nn.Linear(width, width)
            self.l3 = nn.Linear(width, n)
        finally:
            torch.random.set_rng_state(gen_state)
        self.n = n
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(freqs, dtype=torch.float32) / 2.0)

    def _hidden(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        a = sigma[:, None].to(x.dtype) * self.freqs.to(x.dtype)
        h1 = self.l1(torch.cat([x, torch.sin(a), torch.cos(a)], dim=1))
        h2 = self.l2(nn.functional.silu(h1))
        return h1, h2

    def u(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``u_theta(x, sigma)`` for ``x`` ``(B, n)`` and ``sigma`` ``(B,)``."""
        _, h2 = self._hidden(x, sigma)
        return self.l3(nn.functional.silu(h2))

    def u_and_div_u(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """``u_theta(x, sigma)`` and ``div_x u_theta(x, sigma) = d2^T (W2 o M^T) d1``, ``M = W1x W3`` (exact;
        module docstring) from one pass through the hidden layers: ``(B, n)`` and ``(B,)``."""
        h1, h2 = self._hidden(x, sigma)
        m = self.l1.weight[:, : self.n] @ self.l3.weight  # (width, width): M[b, a] = sum_i W1x[b, i] W3[i, a]
        core = self.l2.weight * m.T  # (W2 o M^T)[a, b]
        return self.l3(nn.functional.silu(h2)), ((_silu_grad(h1) @ core.T) * _silu_grad(h2)).sum(dim=1)

    def div_u(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``div_x u_theta(x, sigma)`` (:meth:`u_and_div_u`), ``(B,)``."""
        return self.u_and_div_u(x, sigma)[1]

    def forward(self, hidden_states: Tensor, timestep: Tensor, encoder_hidden_states: Any = None,
                pooled_projections: Any = None, return_dict: bool = False) -> tuple[Tensor]:
        """The call :func:`largemodel.training.objective.flow_matching_loss` makes (``timestep = 1000 sigma``;
        the prompt is ignored): ``hidden_states`` of shape ``(B, 1, 1, n)``, returned in that shape."""
        b = hidden_states.shape[0]
        out = self.u(hidden_states.reshape(b, self.n), timestep / 1000.0)
        return (out.reshape(hidden_states.shape),)


class NetField:
    """A net with ``u(x, sigma)`` and ``div_u(x, sigma)`` as a simulator field: ``v(x, t) = -u(x, 1 - t)``,
    ``div v = -div_u`` (docs/theory.md §1.2, §10.8). Duck-typed like :class:`simulate.solvers.SupportsDivergence`.

    The net is used as it is (put it in float64 and ``eval`` mode for the simulator); ``n`` is its dimension.
    """

    def __init__(self, net: Any, n: int) -> None:
        self.net = net
        self.n = int(n)

    def _sigma(self, x: Tensor, t: Any) -> Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return (1.0 - tt).expand(x.shape[0]) if tt.ndim == 0 else 1.0 - tt

    def velocity(self, x: Tensor, t: Any) -> Tensor:
        """``v(x, t) = -u(x, 1 - t)``."""
        return -self.net.u(x, self._sigma(x, t))

    def divergence(self, x: Tensor, t: Any) -> Tensor:
        """``div_x v(x, t) = -div_x u(x, 1 - t)``."""
        return -self.net.div_u(x, self._sigma(x, t))

    def evaluate(self, x: Tensor, t: Any, *, velocity: bool = True, score: bool = False, log_prob: bool = False,
                 divergence: bool = False) -> Any:
        """Velocity and divergence in one call (:class:`simulate.fields.FieldValues`), as the solvers ask for them
        when they integrate the log-determinant: one pass through the net when it has ``u_and_div_u``. A net knows
        no score or log density.

        Raises:
            ValueError: ``score`` or ``log_prob`` asked for."""
        from simulate.fields.base import FieldValues

        if score or log_prob:
            raise ValueError("a learned field has no closed-form score or log density")
        if not divergence:
            return FieldValues(velocity=self.velocity(x, t) if velocity else None)
        sigma = self._sigma(x, t)
        fused = getattr(self.net, "u_and_div_u", None)
        u, div = fused(x, sigma) if callable(fused) else (self.net.u(x, sigma), self.net.div_u(x, sigma))
        return FieldValues(velocity=-u if velocity else None, divergence=-div)

    def __repr__(self) -> str:
        return f"NetField({type(self.net).__name__}, n={self.n})"


class FieldAsNet:
    """An exact field ``v`` as a net: ``u(x, sigma) = -v(x, 1 - sigma)``, ``div_u = -div v`` (docs/theory.md §1.2)."""

    def __init__(self, field: Any) -> None:
        self.field = field

    def u(self, x: Tensor, sigma: Tensor) -> Tensor:
        return -self.field.velocity(x, 1.0 - sigma)

    def div_u(self, x: Tensor, sigma: Tensor) -> Tensor:
        return -self.field.divergence(x, 1.0 - sigma)
