r"""The full-size SD3.5 Medium transformer from a config kept in the repo, with random weights.

For throughput measurements (``benchmarks/bench_largemodel_throughput.py``) and GPU tests: no
download, no gated repository, nothing trained. The architecture is the real one; the weights are
diffusers' default initialisation, so the *values* it produces mean nothing, but every matmul and
attention has the real shape and cost.

Configs (``largemodel/models/configs``):

- ``sd35_medium_transformer.json``: the ``transformer/config.json`` of
  ``stabilityai/stable-diffusion-3.5-medium`` (24 MMDiT-X blocks, 24 heads of dim 64 = width 1536,
  dual attention in blocks 0..12, q/k RMS-norm, ``pos_embed_max_size`` 384, text width 4096,
  pooled 2048, 16 latent channels, patch 2), ``_name_or_path`` dropped. Source: the
  ``save_pretrained`` copy of the official snapshot at
  https://huggingface.co/Prgckwb/trpfrog-sd3.5-medium/blob/afb7aebc8f5fe41e8700e7b173bd28daf7a56fa7/transformer/config.json
  (its ``_name_or_path`` is the local cache of ``stabilityai/stable-diffusion-3.5-medium``,
  snapshot ``b940f670``); the same values appear in the ControlNet built on it
  (``tensorart/SD3.5M-Controlnet-Canny``, 23 layers) and in SD3.5 Medium configs hard-coded by
  other diffusers-based projects.
- ``sd35_medium_scheduler.json``: its ``scheduler/scheduler_config.json``
  (``FlowMatchEulerDiscreteScheduler``, ``shift`` 3.0, no dynamic shifting), as published in the
  official public release ("SD3.5 Medium Public Release" commit, seen in the mirror
  https://huggingface.co/frankjoshua/stable-diffusion-3.5-medium/blob/9e00742220210d11327d9ecb970f8b0b2b69fb7d/scheduler/scheduler_config.json).

Size: 2,243,171,520 parameters plus the 384 x 384 x 1536 positional-embedding buffer
(226,492,416 values, stored in checkpoints): 2.47 B, the "2.5 B" of the model card.

What is left out, and why:

- the VAE: the study's cost is the ODE (``steps`` x rows transformer calls per map); encoding and
  decoding happen once per image. The model here works directly on 16-channel latents, so an
  "image" of side ``R`` px is a ``16 x R/8 x R/8`` latent (the SD3 VAE's factor 8), e.g. 1024 px
  -> ``16 x 128 x 128``, 4096 image tokens.
- the text encoders: the study conditions on the null prompt, computed once. Its shape is what
  the SD3 pipeline feeds the transformer: CLIP-L and CLIP-G hidden states (77 tokens, padded to
  4096 wide) concatenated with T5-XXL's (``max_sequence_length`` 256), so ``(1, 333, 4096)``, and
  pooled ``768 + 1280 = 2048``. Random values of that shape stand in for it.

The network itself comes from ``largemodel.models.transformer_configs.build_transformer`` (re-exported
here, as are ``load_config``, ``CONFIG_DIR`` and the config paths). ``build_flow_model``
assembles the ``FlowModel`` in memory (a 5 GB safetensors file that nobody will load again is not
written); ``build_config_folder`` writes a folder ``load_model`` can read (for running the study
CLI on the random model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from largemodel.models.conditioning import Conditioning
from largemodel.models.flow_model import FlowModel
from largemodel.models.folder import FolderInfo, family_of, save_model_folder
from largemodel.models.transformer_configs import (
    CONFIG_DIR,
    SD35_MEDIUM_SCHEDULER,
    SD35_MEDIUM_TRANSFORMER,
    build_transformer,
    count_parameters,
    load_config,
    quiet_diffusers,
)

__all__ = [
    "CONFIG_DIR",
    "SD35_MEDIUM_TRANSFORMER",
    "SD35_MEDIUM_SCHEDULER",
    "SD3_TEXT_TOKENS",
    "SD3_VAE_FACTOR",
    "load_config",
    "build_transformer",
    "parameter_count",
    "null_prompt",
    "flow_model_from_transformer",
    "build_flow_model",
    "build_config_folder",
    "sd3_forward_flops",
]

#: tokens of SD3's prompt embedding: CLIP (77, zero-padded to the T5 width) + T5 (256)
SD3_TEXT_TOKENS = 77 + 256
#: spatial factor of the SD3 / SD3.5 VAE (pixels per latent cell)
SD3_VAE_FACTOR = 8

#: ``(parameters, buffer values)`` of a transformer config (default SD3.5 Medium), on the meta device
parameter_count = count_parameters
#: the former private name of ``transformer_configs.quiet_diffusers`` (the benchmark uses it)
_quiet_diffusers = quiet_diffusers


def null_prompt(
    config: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER,
    *,
    text_tokens: int = SD3_TEXT_TOKENS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Random stand-ins for the null-prompt conditioning: ``(1, text_tokens, joint_attention_dim)``
    and ``(1, pooled_projection_dim)``, entries ``N(0, 1/4)`` (seeded, drawn on the CPU)."""
    cfg = load_config(config)
    gen = torch.Generator().manual_seed(seed + 1)
    embeds = 0.5 * torch.randn(1, int(text_tokens), int(cfg["joint_attention_dim"]), generator=gen)
    pooled = 0.5 * torch.randn(1, int(cfg["pooled_projection_dim"]), generator=gen)
    return embeds.to(device, dtype), pooled.to(device, dtype)


def flow_model_from_transformer(
    transformer: torch.nn.Module,
    scheduler_config: dict[str, Any],
    prompt_embeds: Tensor,
    pooled_prompt_embeds: Tensor,
    *,
    latent_size: int,
    state_dtype: torch.dtype = torch.float32,
    source: str = "random weights",
) -> FlowModel:
    """A VAE-less ``FlowModel`` around an SD3-family transformer already on its device.

    The model's "images" are its latents: ``image_channels = in_channels`` and
    ``resolution = latent_size`` (the latent side), so ``encode`` is the identity and ``decode``
    a clamp, as for the pixel-space models trained here.
    """
    param = next(transformer.parameters())
    cfg = dict(transformer.config)
    info = FolderInfo(
        path=Path(f"<in memory: {source}>"),
        pipeline_class="StableDiffusion3Pipeline",
        family=family_of("StableDiffusion3Pipeline", cfg),
        components={},
        transformer_config=cfg,
        has_vae=False,
        has_text_encoders=False,
        null_prompt_file=None,
        meta={"resolution": int(latent_size), "image_channels": int(cfg["in_channels"]), "source": source},
    )
    model = FlowModel(
        info=info,
        transformer=transformer,
        scheduler_config=dict(scheduler_config),
        vae=None,
        conditioning=Conditioning("", prompt_embeds, pooled_prompt_embeds).to(param.device, param.dtype),
        device=param.device,
        dtype=param.dtype,
        state_dtype=state_dtype,
        guidance=None,
        resolution=int(latent_size),
        image_channels=int(cfg["in_channels"]),
    )
    model.latent_shape()  # validates the size against the patch size
    return model


def build_flow_model(
    config: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER,
    scheduler_config: str | Path | dict[str, Any] = SD35_MEDIUM_SCHEDULER,
    *,
    device: str | torch.device = "cuda",
    dtype: str | torch.dtype = torch.bfloat16,
    seed: int = 0,
    latent_size: int | None = None,
    text_tokens: int = SD3_TEXT_TOKENS,
    state_dtype: torch.dtype = torch.float32,
) -> FlowModel:
    """The random full-size model (default: SD3.5 Medium) as a ``FlowModel``, in memory.

    ``latent_size`` defaults to the config's ``sample_size`` (128 for SD3.5 Medium = 1024 px).
    """
    cfg = load_config(config)
    transformer = build_transformer(cfg, device=device, dtype=dtype, seed=seed)
    embeds, pooled = null_prompt(cfg, text_tokens=text_tokens, seed=seed)
    size = int(cfg.get("sample_size", 128)) if latent_size is None else int(latent_size)
    name = Path(config).name if not isinstance(config, dict) else "config dict"
    return flow_model_from_transformer(
        transformer, load_config(scheduler_config), embeds, pooled, latent_size=size, state_dtype=state_dtype,
        source=f"random weights from {name}",
    )


def build_config_folder(
    out: str | Path,
    config_json: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER,
    *,
    dtype: str | torch.dtype = torch.bfloat16,
    seed: int = 0,
    scheduler_json: str | Path | dict[str, Any] = SD35_MEDIUM_SCHEDULER,
    text_tokens: int = SD3_TEXT_TOKENS,
    device: str | torch.device = "cpu",
) -> Path:
    """Write a random model built from ``config_json`` as a folder ``load_model`` reads.

    No VAE and no text encoders: ``null_prompt.safetensors`` holds random conditioning of the
    real shape and ``pfode_model.json`` says ``resolution = sample_size`` (latent side) and
    ``image_channels = in_channels``. For SD3.5 Medium this writes ~4.9 GB (bf16); the benchmark
    does not use it (``build_flow_model`` builds the same model in memory).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = load_config(config_json)
    transformer = build_transformer(cfg, device=device, dtype=dtype, seed=seed)
    embeds, pooled = null_prompt(cfg, text_tokens=text_tokens, seed=seed)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(load_config(scheduler_json))
    meta = {
        "resolution": int(cfg.get("sample_size", 128)),
        "image_channels": int(cfg["in_channels"]),
        "source": "random weights (largemodel.models.fullsize.build_config_folder): no VAE, random null prompt",
    }
    return save_model_folder(
        out, transformer.to("cpu"), scheduler, prompt_embeds=embeds, pooled_prompt_embeds=pooled, meta=meta
    )


def sd3_forward_flops(
    config: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER,
    *,
    latent_size: int = 128,
    text_tokens: int = SD3_TEXT_TOKENS,
    batch: int = 1,
) -> int:
    """Matmul FLOPs (2 per multiply-add) of one ``SD3Transformer2DModel`` forward, by hand.

    An independent check of ``torch.utils.flop_counter.FlopCounterMode`` (which the benchmark
    uses): linear layers, the patch-embedding convolution, and attention (``QK^T`` and ``AV``,
    ``2 L^2 d`` each per head); norms, activations and softmax are not counted (the usual MFU
    convention).
    """
    cfg = load_config(config)
    d = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    p, c_in = int(cfg["patch_size"]), int(cfg["in_channels"])
    c_out = int(cfg.get("out_channels") or c_in)
    n = (latent_size // p) ** 2  # image tokens
    t = int(text_tokens)
    layers = int(cfg["num_layers"])
    dual = set(cfg.get("dual_attention_layers") or ())
    lin = lambda rows, fan_in, fan_out: 2 * rows * fan_in * fan_out  # noqa: E731
    attn = lambda seq: 4 * seq * seq * d  # noqa: E731  (QK^T and AV over all heads)
    f = lin(n, c_in * p * p, d)  # patch embedding (a stride-p convolution)
    f += lin(1, 256, d) + lin(1, d, d) + lin(1, int(cfg["pooled_projection_dim"]), d) + lin(1, d, d)  # time + pooled
    f += lin(t, int(cfg["joint_attention_dim"]), int(cfg["caption_projection_dim"]))  # context embedder
    for i in range(layers):
        last = i == layers - 1  # context_pre_only: no context output projection, no context MLP
        f += lin(1, d, (9 if i in dual else 6) * d)  # adaLN of the image stream
        f += lin(1, d, (2 if last else 6) * d)  # adaLN of the text stream
        f += lin(n, d, 3 * d) + lin(t, d, 3 * d) + attn(n + t) + lin(n, d, d)  # joint attention
        if not last:
            f += lin(t, d, d)
        if i in dual:  # SD3.5's second, image-only attention
            f += lin(n, d, 3 * d) + attn(n) + lin(n, d, d)
        f += lin(n, d, 4 * d) + lin(n, 4 * d, d)  # image MLP
        if not last:
            f += lin(t, d, 4 * d) + lin(t, 4 * d, d)
    f += lin(1, d, 2 * d) + lin(n, d, p * p * c_out)  # final adaLN and projection
    return int(batch) * f
