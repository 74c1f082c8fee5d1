r"""A class-conditional model trained here: the class is its conditioning, with condition dropout (docs/theory.md §10.9).

The network is the same pixel-space ``SD3Transformer2DModel``; the conditioning enters where a prompt
does in SD3, through ``encoder_hidden_states`` and ``pooled_projections``, as a *learned* embedding per
class ``c in {0..K-1}`` plus one learned null embedding ``c = K`` (the unconditional branch):

    ``(E_c, P_c)``, ``E_c`` of shape ``(1, 1, 32)``, ``P_c`` of shape ``(1, 32)``.

Condition dropout: each training image's label is replaced by the null class with probability
``p`` (``cond_dropout``), so that one network learns both ``u_c = E[x0 - x1 | x_sigma, c]`` and
``u_u = E[x0 - x1 | x_sigma]``, and the guided field ``u_W = u_u + W (u_c - u_u)``
(``largemodel.models.conditioning``) means what it means in SD3 / FLUX.

The trained table is saved as the model folder's ``class_prompts.safetensors`` (prompt names
``class_prompt(c)`` = ``"digit c"``) and its null row as ``null_prompt.safetensors``, so that
``load_model(folder, prompt="digit 3", guidance_scale=W)`` builds the ``Conditioning`` with no text
encoder (``largemodel.models.prompts``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from largemodel.training.options import CONTEXT_TOKENS, JOINT_DIM, POOLED_DIM

__all__ = ["ClassConditioned", "class_prompt", "drop_labels"]


def class_prompt(label: int) -> str:
    """The prompt name of class ``label`` in a class-conditional digits model: ``"digit 3"``."""
    return f"digit {int(label)}"


def drop_labels(labels: Tensor, p: float, generator: torch.Generator, null: int) -> Tensor:
    """Condition dropout: each label replaced by the null class ``null`` with probability ``p``
    (one uniform draw per row from ``generator``)."""
    keep = torch.rand(labels.shape[0], generator=generator) >= p
    return torch.where(keep, labels, torch.full_like(labels, null))


class ClassConditioned(torch.nn.Module):
    """The transformer with its learned class table ``(E_c, P_c)``, ``c = 0..K`` (``K`` = null).

    Called like the transformer (``forward`` passes every keyword through), so the objective and the
    EMA treat it as one network; ``embed(labels)`` gives the rows' ``(E, P)``.
    """

    def __init__(self, transformer: torch.nn.Module, num_classes: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 3)
        self.transformer = transformer
        self.num_classes = int(num_classes)
        self.embeds = torch.nn.Parameter(torch.randn(num_classes + 1, CONTEXT_TOKENS, JOINT_DIM, generator=gen))
        self.pooled = torch.nn.Parameter(torch.randn(num_classes + 1, POOLED_DIM, generator=gen))

    def forward(self, **kwargs: Tensor):  # noqa: ANN201 - the transformer's output
        return self.transformer(**kwargs)

    def embed(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(E, P)`` of each row's class, ``(B, 1, 32)`` and ``(B, 32)``."""
        return self.embeds[labels], self.pooled[labels]

    def null(self) -> tuple[Tensor, Tensor]:
        """The null class's ``(E_K, P_K)``, ``(1, 1, 32)`` and ``(1, 32)``."""
        return self.embed(torch.tensor([self.num_classes]))

    def table(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``class_prompt(c) -> (E_c, P_c)`` for ``c = 0..K-1`` (detached, on the CPU, batch 1)."""
        return {class_prompt(c): tuple(t.detach().cpu() for t in self.embed(torch.tensor([c])))
                for c in range(self.num_classes)}


def batch_conditioning(model: torch.nn.Module, labels: Tensor | None, null: tuple[Tensor, Tensor], cond_dropout: float | None):
    """``(idx, generator) -> (E, P)`` for a training batch of images ``idx``: the fixed null prompt
    ``null`` for an unconditional model (``labels`` unused, no draw), else each image's class
    embedding after condition dropout (``drop_labels``, one draw per row)."""
    if not isinstance(model, ClassConditioned):
        return lambda idx, generator: null
    assert labels is not None and cond_dropout is not None
    return lambda idx, generator: model.embed(drop_labels(labels[idx], cond_dropout, generator, model.num_classes))


def eval_conditioning(model: torch.nn.Module, labels: Tensor | None, null: tuple[Tensor, Tensor],
                      limit: int = 256) -> tuple[Tensor, Tensor]:
    """The conditioning of ``objective.eval_loss`` on the first ``limit`` images: the null prompt, or
    each image's own class embedding (the conditional loss)."""
    if not isinstance(model, ClassConditioned):
        return null
    assert labels is not None
    with torch.no_grad():
        return model.embed(labels[:limit])
