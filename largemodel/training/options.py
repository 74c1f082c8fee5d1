r"""The configuration of a training run (``largemodel.training.train``): defaults, validation, cache key.

``train_config`` turns the user's arguments into the full, validated configuration that
determines a trained model (data and its held-out split, optimisation, the architecture
``Arch`` of the pixel-space ``SD3Transformer2DModel``, docs/theory.md §10.5); ``config_key`` hashes
it, naming the model in the cache. ``transformer_config`` is the diffusers config of the
network for a ``C x S x S`` image, built by ``largemodel.models.transformer_configs.build_transformer``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from theory._validate import require_int

from largemodel.training.datasets import DATASETS

__all__ = [
    "Arch",
    "CONTEXT_TOKENS",
    "DEFAULTS",
    "DEFAULT_COND_DROPOUT",
    "JOINT_DIM",
    "POOLED_DIM",
    "SIGMA_SAMPLINGS",
    "TRAIN_VERSION",
    "config_key",
    "default_patch_size",
    "train_config",
    "transformer_config",
]

#: bump when a change to training would make old cached models stale
TRAIN_VERSION = 1

#: joint-attention (text) width, pooled width and number of null-prompt tokens
JOINT_DIM, POOLED_DIM, CONTEXT_TOKENS = 32, 32, 1

SIGMA_SAMPLINGS = ("logit_normal", "uniform")

#: training defaults (tuned so that digits at 8 px trains in a few minutes on 2 CPU cores)
DEFAULTS: dict[str, Any] = {
    "steps": 2500,
    "batch_size": 128,
    "lr": 3e-3,
    "ema_decay": 0.999,
    "seed": 0,
    "data_seed": 0,
    "heldout_images": None,
    "warmup": None,
    "sigma_sampling": "logit_normal",
    "patch_size": None,
    "num_layers": 4,
    "num_heads": 4,
    "head_dim": 16,
    "class_conditional": False,
    "cond_dropout": None,
}

#: condition dropout of a class-conditional model when ``cond_dropout`` is not given
DEFAULT_COND_DROPOUT = 0.1


@dataclass(frozen=True)
class Arch:
    """Size of the ``SD3Transformer2DModel``.

    Attributes:
        patch_size: side of the square pixel patches that become tokens.
        num_layers: joint-attention blocks.
        num_heads: attention heads; the width is ``num_heads * head_dim``.
        head_dim: channels per head.
    """

    patch_size: int
    num_layers: int
    num_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim


# ---- validation ---------------------------------------------------------------------------
def _pos_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def default_patch_size(size: int) -> int:
    """The largest divisor of ``size`` not above ``max(1, size // 4)``: about 4 x 4 tokens
    (8 -> 2, 16 -> 4, 25 -> 5, 12 -> 3), so the cost per step hardly grows with the size."""
    target = max(1, size // 4)
    return max(p for p in range(1, target + 1) if size % p == 0)


def _arch(size: int, patch_size: int | None, num_layers: Any, num_heads: Any, head_dim: Any) -> Arch:
    """Validated architecture; ``patch_size=None`` = ``default_patch_size(size)``."""
    p = default_patch_size(size) if patch_size is None else require_int("patch_size", patch_size)
    if size % p:
        raise ValueError(f"patch_size={p} must divide size={size}")
    return Arch(p, require_int("num_layers", num_layers), require_int("num_heads", num_heads),
                require_int("head_dim", head_dim))


def train_config(data: str, size: int, train_images: int | None, **kwargs: Any) -> dict[str, Any]:
    """The full, validated training configuration (everything that determines the model).

    Args:
        data, size, train_images: as for ``train_model``.
        **kwargs: any of ``DEFAULTS``' keys; missing ones take the default.

    Returns:
        A JSON-serialisable dict; ``train_images`` and ``heldout_images`` resolved to counts,
        ``warmup`` to a step count, ``arch`` to a dict. Its hash is the cache key.

    Raises:
        ValueError: an unknown keyword or an invalid value (the message names it).
    """
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    opts = {**DEFAULTS, **kwargs}
    if data not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {data!r}")
    from largemodel.training.data import resolve_counts

    counts = resolve_counts(data, size, train_images, opts["heldout_images"])
    data_seed = require_int("data_seed", opts["data_seed"], 0)
    steps = require_int("steps", opts["steps"])
    warmup = min(100, steps // 10) if opts["warmup"] is None else require_int("warmup", opts["warmup"], 0)
    if opts["sigma_sampling"] not in SIGMA_SAMPLINGS:
        raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {opts['sigma_sampling']!r}")
    decay = opts["ema_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be a number in [0, 1), got {decay!r}")
    arch = _arch(size, opts["patch_size"], opts["num_layers"], opts["num_heads"], opts["head_dim"])
    classes = _class_options(data, opts["class_conditional"], opts["cond_dropout"])
    return {
        "version": TRAIN_VERSION,
        "data": data,
        "size": size,
        "train_images": counts[0],
        "heldout_images": counts[1],
        "data_seed": data_seed,
        "steps": steps,
        "batch_size": require_int("batch_size", opts["batch_size"]),
        "lr": _pos_float(opts["lr"], "lr"),
        "ema_decay": float(decay),
        "seed": require_int("seed", opts["seed"], 0),
        "warmup": warmup,
        "sigma_sampling": opts["sigma_sampling"],
        "arch": asdict(arch),
        **classes,
    }


def _class_options(data: str, class_conditional: Any, cond_dropout: Any) -> dict[str, Any]:
    """The configuration's class-conditioning entries (``largemodel.training.classes``, docs/theory.md
    §10.9): none for an unconditional model (so the keys of the models trained before it stay the
    same), ``class_conditional`` and ``cond_dropout`` in ``[0, 1)`` otherwise (default
    ``DEFAULT_COND_DROPOUT``)."""
    if not isinstance(class_conditional, bool):
        raise ValueError(f"class_conditional must be True or False, got {class_conditional!r}")
    if not class_conditional:
        if cond_dropout is not None:
            raise ValueError("cond_dropout applies to a class-conditional model only (--class-conditional)")
        return {}
    if data != "digits":
        raise ValueError(f"class_conditional needs class labels, which only digits has, got data={data!r}")
    p = DEFAULT_COND_DROPOUT if cond_dropout is None else cond_dropout
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"cond_dropout must be a number in [0, 1), got {p!r}")
    return {"class_conditional": True, "cond_dropout": float(p)}


def config_key(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the configuration's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def transformer_config(channels: int, size: int, arch: Arch) -> dict[str, Any]:
    """The ``SD3Transformer2DModel`` config of a pixel-space model for ``C x S x S`` images: patches
    of ``arch.patch_size`` pixels, ``arch.num_layers`` joint-attention blocks of width
    ``arch.width``, the null prompt's ``JOINT_DIM`` / ``POOLED_DIM`` conditioning widths."""
    return dict(
        sample_size=size, patch_size=arch.patch_size, in_channels=channels, out_channels=channels,
        num_layers=arch.num_layers, attention_head_dim=arch.head_dim, num_attention_heads=arch.num_heads,
        joint_attention_dim=JOINT_DIM, caption_projection_dim=arch.width, pooled_projection_dim=POOLED_DIM,
        pos_embed_max_size=size // arch.patch_size,
    )
