"""Tiny randomly initialised SD3, SD3.5 and FLUX folders built from configs (no download).

They have the real architectures (joint attention; SD3.5's dual-attention layers and q/k
RMS-norm; FLUX's packed 2x2 latents, rotary ids and guidance embedding), shrunk to run in
milliseconds on a CPU, and are saved and loaded back through the same loader users use. Tests
and the GPU benchmark build them; they say nothing about trained models.

With ``text_encoders=True`` a folder also holds the family's text encoders and tokenizers, tiny and
random (SD3: two ``CLIPTextModelWithProjection`` and a ``T5EncoderModel``; FLUX: a ``CLIPTextModel``
and a ``T5EncoderModel``; tokenizers over a character vocabulary built here, no download), and no
``null_prompt.safetensors``: prompts, the null prompt included, are encoded as on a real folder, so
parity with the diffusers pipelines covers prompt encoding and classifier-free guidance.
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


#: characters of the tiny tokenizers' vocabulary (others map to the unknown token)
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
#: tokens of the tiny CLIP tokenizers (and positions of the tiny CLIP encoders)
CLIP_LEN = 16


def tiny_tokenizers() -> tuple[Any, Any]:
    """A CLIP and a T5 tokenizer over a character vocabulary (``_CHARS``), built without any file."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    clip = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_LEN)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in _CHARS] + [("\u2581" + c, -2.5) for c in _CHARS]
    t5 = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    return clip, t5


def tiny_text_encoders(family: str, seed: int = 0) -> dict[str, Any]:
    """The family's text encoders and tokenizers, tiny and random, as pipeline components.

    Widths fit the tiny transformers: SD3's two CLIP hidden states (8 + 8) fill ``TEXT_DIM`` and
    their projections (4 + 4) ``POOLED_DIM``; FLUX's CLIP pools to ``POOLED_DIM``; T5's width is
    ``TEXT_DIM``.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_tok, t5_tok = tiny_tokenizers()
    torch.manual_seed(seed + 7)
    clip = dict(vocab_size=len(clip_tok), num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                max_position_embeddings=CLIP_LEN, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=TEXT_DIM, d_kv=4, d_ff=16, num_layers=1,
                                 num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    if family == "flux":
        return {"text_encoder": CLIPTextModel(CLIPTextConfig(hidden_size=POOLED_DIM, **clip)), "tokenizer": clip_tok,
                "text_encoder_2": t5, "tokenizer_2": t5_tok}
    half = TEXT_DIM // 2
    return {
        "text_encoder": CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=half, projection_dim=POOLED_DIM // 2, **clip)),
        "tokenizer": clip_tok,
        "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=half, projection_dim=POOLED_DIM // 2, **clip)),
        "tokenizer_2": clip_tok,
        "text_encoder_3": t5,
        "tokenizer_3": t5_tok,
    }


def _save_with_encoders(out: Path, family: str, transformer: torch.nn.Module, vae: torch.nn.Module | None,
                        meta: dict[str, Any], seed: int) -> Path:
    """Save a pipeline with tiny text encoders, as ``DiffusionPipeline.save_pretrained`` writes it."""
    import json

    import diffusers

    cls = diffusers.FluxPipeline if family == "flux" else diffusers.StableDiffusion3Pipeline
    pipe = cls(transformer=transformer, scheduler=tiny_scheduler(family), vae=vae, **tiny_text_encoders(family, seed))
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "pfode_model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def build_tiny_folder(out: str | Path, family: str, *, with_vae: bool = True, seed: int = 0,
                      text_encoders: bool = False) -> Path:
    """Save a tiny random ``family`` model to ``out``; return the folder.

    With a VAE the native resolution is 16 px (latents 4 x 8 x 8); without one the model works
    on 3 x 8 x 8 pixel images. ``text_encoders``: with tiny text encoders and tokenizers instead of
    ``null_prompt.safetensors`` (a VAE is then required, as the pipelines need one).
    """
    channels = 4 if with_vae else 3
    transformer = tiny_transformer(family, latent_channels=channels, sample_size=8, seed=seed)
    if text_encoders:
        if not with_vae:
            raise ValueError("text_encoders=True needs with_vae=True")
        meta = {"resolution": 16, "image_channels": 3, "source": "tiny random model with tiny text encoders"}
        return _save_with_encoders(Path(out), family, transformer, tiny_vae(channels, seed), meta, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    embeds = 0.5 * torch.randn(1, TEXT_LEN, TEXT_DIM, generator=gen)
    pooled = 0.5 * torch.randn(1, POOLED_DIM, generator=gen)
    meta = {"resolution": 16 if with_vae else 8, "image_channels": 3, "source": "tiny random model"}
    return save_model_folder(
        out, transformer, tiny_scheduler(family), prompt_embeds=embeds, pooled_prompt_embeds=pooled,
        vae=tiny_vae(channels, seed) if with_vae else None, meta=meta,
    )
