"""Tiny randomly initialised SD3, SD3.5 and FLUX folders built from configs (no download).

They have the real architectures (joint attention; SD3.5's dual-attention layers and q/k
RMS-norm; FLUX's packed 2x2 latents, rotary ids and guidance embedding), shrunk to run in
milliseconds on a CPU, and are saved and loaded back through the same loader users use. Tests
and the GPU benchmark build them; they say nothing about trained models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from largemodel.models.folder import save_model_folder

FAMILIES = ("sd3", "sd3.5", "flux")

#: joint (text) and pooled embedding widths of the tiny models
TEXT_DIM, POOLED_DIM, TEXT_LEN = 16, 8, 4


def tiny_transformer(family: str, *, latent_channels: int = 4, sample_size: int = 8, seed: int = 0) -> torch.nn.Module:
    """A two-block transformer of the given family with random weights (seeded)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(seed)
    if family in ("sd3", "sd3.5"):
        extra: dict[str, Any] = {"dual_attention_layers": (0,), "qk_norm": "rms_norm"} if family == "sd3.5" else {}
        return SD3Transformer2DModel(
            sample_size=sample_size, patch_size=2, in_channels=latent_channels, out_channels=latent_channels,
            num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
            caption_projection_dim=16, pooled_projection_dim=POOLED_DIM, pos_embed_max_size=max(16, sample_size),
            **extra,
        )
    if family == "flux":
        return FluxTransformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
            guidance_embeds=True, axes_dims_rope=(2, 2, 4),
        )
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def tiny_vae(latent_channels: int = 4, seed: int = 0) -> torch.nn.Module:
    """A two-level ``AutoencoderKL`` (scale factor 2) with random weights."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16,
        scaling_factor=1.5, shift_factor=0.1,
    )


def tiny_scheduler(family: str) -> Any:
    """The family's scheduler config: shift 3 (SD3/SD3.5) or dynamic shifting (FLUX)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if family == "flux":
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def build_tiny_folder(out: str | Path, family: str, *, with_vae: bool = True, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model to ``out``; return the folder.

    With a VAE the native resolution is 16 px (latents 4 x 8 x 8); without one the model works
    on 3 x 8 x 8 pixel images.
    """
    channels = 4 if with_vae else 3
    transformer = tiny_transformer(family, latent_channels=channels, sample_size=8, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    embeds = 0.5 * torch.randn(1, TEXT_LEN, TEXT_DIM, generator=gen)
    pooled = 0.5 * torch.randn(1, POOLED_DIM, generator=gen)
    meta = {"resolution": 16 if with_vae else 8, "image_channels": 3, "source": "tiny random model"}
    return save_model_folder(
        out, transformer, tiny_scheduler(family), prompt_embeds=embeds, pooled_prompt_embeds=pooled,
        vae=tiny_vae(channels, seed) if with_vae else None, meta=meta,
    )
