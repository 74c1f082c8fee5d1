r"""The conditional flow-matching objective the models of ``largemodel.training.train`` minimise (docs/theory.md §10.5).

Convention (docs/theory.md §1.2, diffusers SD3): for a data image ``x1`` and noise
``x0 ~ N(0, I)``, ``x_sigma = (1 - sigma) x1 + sigma x0``; the transformer, called as
``transformer(hidden_states=x_sigma, timestep=1000 sigma, encoder_hidden_states=E,
pooled_projections=P)``, predicts ``u = x0 - x1`` under the loss

    ``L(theta) = E_{sigma, x1, x0} || u_theta(x_sigma, sigma) - (x0 - x1) ||^2 / n``

whose minimiser is ``u(x, sigma) = E[x0 - x1 | x_sigma = x]``, the PF-ODE field
``dx/dsigma`` that ``FlowModel.velocity`` returns. ``sigma`` is logit-normal or uniform
(``sample_sigmas``); ``(E, P)`` is the fixed null prompt (``null_conditioning``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from largemodel.training.options import CONTEXT_TOKENS, JOINT_DIM, POOLED_DIM, SIGMA_SAMPLINGS

__all__ = ["eval_loss", "flow_matching_loss", "null_conditioning", "sample_sigmas"]


def null_conditioning(seed: int) -> tuple[Tensor, Tensor]:
    """The fixed null prompt: ``E ~ N(0, I)`` of shape ``(1, 1, 32)``, ``P ~ N(0, I)`` ``(1, 32)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, CONTEXT_TOKENS, JOINT_DIM, generator=gen), torch.randn(1, POOLED_DIM, generator=gen)


def sample_sigmas(n: int, generator: torch.Generator, how: str = "logit_normal") -> Tensor:
    """``n`` training noise levels: logit-normal ``sigmoid(N(0, 1))`` or ``U(0, 1)``."""
    if how == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    if how == "uniform":
        return torch.rand(n, generator=generator)
    raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {how!r}")


def flow_matching_loss(transformer: torch.nn.Module, x1: Tensor, x0: Tensor, sigma: Tensor,
                       prompt_embeds: Tensor, pooled_prompt_embeds: Tensor) -> Tensor:
    r"""Conditional flow-matching loss ``mean || u_theta(x_sigma, sigma) - (x0 - x1) ||^2`` (docs/theory.md §10.5).

    Args:
        transformer: the network ``u_theta``.
        x1: data images ``(B, C, S, S)``.
        x0: noise of the same shape.
        sigma: ``(B,)`` noise levels in ``[0, 1]``.
        prompt_embeds, pooled_prompt_embeds: the null prompt, batch 1 (expanded here).

    Returns:
        The scalar mean squared error over batch, channels and pixels.
    """
    b = x1.shape[0]
    s = sigma.view(b, 1, 1, 1)
    x_sigma = (1.0 - s) * x1 + s * x0
    pred = transformer(
        hidden_states=x_sigma,
        timestep=1000.0 * sigma,
        encoder_hidden_states=prompt_embeds.expand(b, *prompt_embeds.shape[1:]),
        pooled_projections=pooled_prompt_embeds.expand(b, *pooled_prompt_embeds.shape[1:]),
        return_dict=False,
    )[0]
    return torch.mean((pred - (x0 - x1)) ** 2)


@torch.no_grad()
def eval_loss(transformer: torch.nn.Module, images: Tensor, cond: tuple[Tensor, Tensor], *, seed: int,
              limit: int = 256) -> float:
    """Flow-matching loss on up to ``limit`` images with fixed noise and ``sigma`` on a uniform
    grid (midpoints of ``limit`` equal bins), i.e. the loss weighted uniformly in ``sigma``."""
    x1 = images[:limit]
    n = x1.shape[0]
    if n == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(x1.shape, generator=gen)
    sigma = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    sigma = sigma[torch.randperm(n, generator=gen)]
    was_training = transformer.training
    transformer.eval()
    loss = float(flow_matching_loss(transformer, x1, x0, sigma, *cond))
    transformer.train(was_training)
    return loss
