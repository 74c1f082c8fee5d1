r"""A diffusers pipeline already loaded in memory as a ``FlowModel`` (``largemodel.from_pipeline``).

For a notebook user holding ``pipe = StableDiffusion3Pipeline.from_pretrained(...)`` (or a
``FluxPipeline``), with their own attention processors, LoRA weights or offloading: the field is the
one ``load_model`` builds from a folder (``largemodel.models.load.assemble``, one route), on the
pipeline's own transformer, scheduler config, VAE and text encoders. Nothing is copied, cast or
moved: the modules are used as the pipeline holds them (their attention processors, adapters and
offload hooks kept); the network runs on the pipeline's execution device in the transformer's dtype.
The prompts are encoded once, now, by the pipeline's own ``encode_prompt`` (as ``pipe(prompt=...)``
encodes them, ``largemodel.models.prompts.encode_with_pipeline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from largemodel.models.conditioning import check_guidance_scale
from largemodel.models.flow_model import FlowModel
from largemodel.models.folder import SUPPORTED_PIPELINES, FolderInfo, check_scheduler_config, family_of
from largemodel.models.load import assemble
from largemodel.models.prompts import encode_with_pipeline

__all__ = ["from_pipeline"]


def from_pipeline(
    pipe: Any,
    prompt: str | None = None,
    guidance_scale: float = 1.0,
    *,
    prompts: Sequence[str] = (),
    guidance: float | None = 3.5,
    resolution: int | None = None,
    state_dtype: torch.dtype = torch.float32,
) -> FlowModel:
    """The ``FlowModel`` of a loaded diffusers SD3 / SD3.5 / FLUX pipeline object.

    Args:
        pipe: a ``StableDiffusion3Pipeline``, ``FluxPipeline`` (or their img2img variants) with its
            transformer, a ``FlowMatchEulerDiscreteScheduler`` and its text encoders.
        prompt: the prompt the field is conditioned on (default: the null prompt ``""``).
        guidance_scale: classifier-free guidance scale ``W >= 1`` (docs/theory.md §10.7); 1 = none.
        prompts: further prompts to encode now, for ``model.conditioned(p)`` later.
        guidance: FLUX's guidance-embedding value (ignored by models without one).
        resolution: default image side in pixels (default: the model's native one).
        state_dtype: dtype of the ODE state and of all sums.

    Raises:
        ValueError: not a supported pipeline, no transformer, a scheduler config that is not a
            flow-matching one, no text encoders, or a guidance scale below 1.
    """
    cls = type(pipe).__name__
    if cls not in SUPPORTED_PIPELINES:
        raise ValueError(f"from_pipeline takes a diffusers pipeline object of class {', '.join(sorted(SUPPORTED_PIPELINES))}; "
                         f"got {cls}")
    w = check_guidance_scale(guidance_scale, "guidance_scale")
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError(f"{cls} has no transformer")
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise ValueError(f"{cls} has no text encoders: load it with them (the null prompt and any prompt are encoded "
                         "by the pipeline's own encode_prompt)")
    scheduler_config = dict(pipe.scheduler.config)  # the grid is FlowMatchEulerDiscreteScheduler's (FlowModel.sigmas)
    sched_cls = type(pipe.scheduler).__name__
    scheduler_config["_class_name"] = "FlowMatchEulerDiscreteScheduler" if sched_cls.startswith("FlowMatch") else sched_cls
    check_scheduler_config(scheduler_config, Path(f"<{cls}.scheduler>"))
    tf_config = dict(transformer.config)
    vae = getattr(pipe, "vae", None)
    device = torch.device(pipe._execution_device)
    info = FolderInfo(path=Path(f"<in memory: {cls}>"), pipeline_class=cls, family=family_of(cls, tf_config),
                      components={}, transformer_config=tf_config, has_vae=vae is not None, has_text_encoders=True,
                      null_prompt_file=None, meta={})
    prompt = "" if prompt is None else prompt
    table = encode_with_pipeline(pipe, info.family, ["", prompt, *prompts], device)
    return assemble(info, transformer, scheduler_config, vae, table, prompt=prompt, guidance_scale=w, device=device,
                    dtype=transformer.dtype, state_dtype=state_dtype, guidance=guidance, resolution=resolution,
                    offload=False)
