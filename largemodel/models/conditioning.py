r"""What the velocity field is conditioned on: a prompt and a classifier-free guidance scale ``W``.

A ``Conditioning`` holds the conditional embeddings (a prompt's, or anything else a model is
conditioned on: a class-conditional model trained here would give its class embedding), the
unconditional ones (the null prompt's, or the dropped class), and ``W``. ``FlowModel.velocity``
applies it as the family's diffusers pipeline does (docs/theory.md §10.7):

    u_W(x, sigma) = u_u(x, sigma) + W (u_c(x, sigma) - u_u(x, sigma)),

``u_c`` the network on the conditional embeddings, ``u_u`` on the unconditional ones; ``W = 1`` is
``u_c`` alone (one network pass, no unconditional rows), as in diffusers, which guides only when
``W > 1``. Inversion and regeneration integrate the same ``u_W``, so the study measures the
instability of the guided map ``G``.

Torch-light: this module holds tensors but runs no network; the embeddings are computed by
``largemodel.models.prompts`` (a folder's text encoders) or ``largemodel.models.pipeline`` (a
loaded diffusers pipeline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["Conditioning", "check_guidance_scale"]


def check_guidance_scale(value: Any, flag: str = "--guidance-scale") -> float:
    """``value`` as a float if it is a finite number ``>= 1``, else ``ValueError`` naming ``flag``.

    diffusers' SD3 and FLUX pipelines apply classifier-free guidance only when the scale exceeds 1
    (``do_classifier_free_guidance = guidance_scale > 1``; FLUX's ``true_cfg_scale > 1``) and run
    the conditional field alone otherwise, so a scale below 1 would silently mean 1 there: refused.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 1
    if not ok:
        raise ValueError(f"{flag} must be a finite number >= 1 (1 = no classifier-free guidance, as in diffusers' "
                         f"pipelines, which guide only above 1), got {value!r}")
    return float(value)


def _check_embeds(embeds: Tensor, pooled: Tensor, what: str) -> None:
    if not isinstance(embeds, Tensor) or embeds.ndim != 3 or embeds.shape[0] != 1:
        raise ValueError(f"{what}: prompt embeddings must have shape (1, L, D), got "
                         f"{tuple(embeds.shape) if isinstance(embeds, Tensor) else type(embeds).__name__}")
    if not isinstance(pooled, Tensor) or pooled.ndim != 2 or pooled.shape[0] != 1:
        raise ValueError(f"{what}: pooled embeddings must have shape (1, P), got "
                         f"{tuple(pooled.shape) if isinstance(pooled, Tensor) else type(pooled).__name__}")
    if not (embeds.is_floating_point() and pooled.is_floating_point()):
        raise ValueError(f"{what}: embeddings must be floating point")
    if not (bool(torch.isfinite(embeds).all()) and bool(torch.isfinite(pooled).all())):
        raise ValueError(f"{what}: embeddings hold NaN or inf")


@dataclass(frozen=True, eq=False)
class Conditioning:
    """The conditioning of one velocity field ``u_W`` (docs/theory.md §10.7).

    Attributes:
        prompt: the prompt text (``""`` is the null prompt); for a conditioning that does not come
            from text, a label that names it in records (e.g. ``"class 3"``).
        prompt_embeds, pooled_prompt_embeds: the conditional embeddings, ``(1, L, D)`` and ``(1, P)``.
        negative_prompt_embeds, negative_pooled_prompt_embeds: the unconditional embeddings (the
            null prompt's; the pipelines' empty negative prompt), needed when ``W > 1``. SD3 stacks
            both in one batch, so there they must have the conditional ones' shapes.
        guidance_scale: ``W >= 1``; ``1`` runs the conditional field alone.
    """

    prompt: str
    prompt_embeds: Tensor
    pooled_prompt_embeds: Tensor
    negative_prompt_embeds: Tensor | None = None
    negative_pooled_prompt_embeds: Tensor | None = None
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(self.prompt).__name__}")
        object.__setattr__(self, "guidance_scale", check_guidance_scale(self.guidance_scale))
        _check_embeds(self.prompt_embeds, self.pooled_prompt_embeds, f"prompt {self.prompt!r}")
        neg = (self.negative_prompt_embeds, self.negative_pooled_prompt_embeds)
        if (neg[0] is None) != (neg[1] is None):
            raise ValueError("negative_prompt_embeds and negative_pooled_prompt_embeds go together")
        if neg[0] is None:
            if self.guided:
                raise ValueError(f"guidance scale {self.guidance_scale:g} > 1 needs the unconditional "
                                 "(null-prompt) embeddings")
            return
        _check_embeds(neg[0], neg[1], "the unconditional (negative) prompt")
        if neg[0].shape[2] != self.prompt_embeds.shape[2] or neg[1].shape[1] != self.pooled_prompt_embeds.shape[1]:
            raise ValueError(f"unconditional embeddings {tuple(neg[0].shape)}, {tuple(neg[1].shape)} do not match the "
                             f"conditional ones {tuple(self.prompt_embeds.shape)}, {tuple(self.pooled_prompt_embeds.shape)}")

    @property
    def guided(self) -> bool:
        """Whether the field is guided (``W > 1``: two network passes, or one batch of twice the rows)."""
        return self.guidance_scale > 1.0

    def record(self) -> dict[str, Any]:
        """What a record carries about its conditioning (and what resume keys include)."""
        return {"prompt": self.prompt, "guidance_scale": self.guidance_scale}

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Conditioning:
        """The same conditioning with every tensor on ``device`` in ``dtype``."""
        move = (lambda t: None if t is None else t.to(device=device, dtype=dtype))  # noqa: E731
        return replace(self, prompt_embeds=move(self.prompt_embeds), pooled_prompt_embeds=move(self.pooled_prompt_embeds),
                       negative_prompt_embeds=move(self.negative_prompt_embeds),
                       negative_pooled_prompt_embeds=move(self.negative_pooled_prompt_embeds))

    def rows(self, batch: int, negative: bool = False) -> tuple[Tensor, Tensor]:
        """The (conditional, or with ``negative`` the unconditional) embeddings for ``batch`` rows."""
        e, p = (self.negative_prompt_embeds, self.negative_pooled_prompt_embeds) if negative else (
            self.prompt_embeds, self.pooled_prompt_embeds)
        assert e is not None and p is not None
        return e.expand(batch, *e.shape[1:]), p.expand(batch, *p.shape[1:])

    @classmethod
    def from_table(cls, table: dict[str, tuple[Tensor, Tensor]], prompt: str, guidance_scale: float = 1.0) -> Conditioning:
        """The conditioning on ``prompt`` at scale ``guidance_scale`` from a table of encoded prompts
        (prompt text -> ``(embeds, pooled)``) that holds the null prompt ``""`` as the unconditional branch.

        Raises:
            ValueError: ``prompt`` (or ``""``, when ``W > 1``) was not encoded.
        """
        if prompt not in table:
            raise ValueError(f"prompt {prompt!r} was not encoded when the model was loaded "
                             "(pass it to load_model(prompt=...) or from_pipeline(prompt=...))")
        w = check_guidance_scale(guidance_scale)
        neg = table.get("") if w > 1 else None
        if w > 1 and neg is None:
            raise ValueError("classifier-free guidance needs the null prompt's embeddings")
        return cls(prompt, *table[prompt], *(neg if neg is not None else (None, None)), guidance_scale=w)
