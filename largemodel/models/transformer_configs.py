r"""Diffusers transformers built from configs: the one place a random network is constructed.

A config is a ``config.json`` of a diffusers ``SD3Transformer2DModel`` or
``FluxTransformer2DModel`` (a path, or a dict). ``build_transformer`` makes the network with
diffusers' default initialisation under a fixed seed; the full-size SD3.5 Medium model
(``largemodel.models.fullsize``, random weights, for throughput and GPU tests), the plan's parameter
counts (``largemodel.plan.arch``) and the small pixel-space models trained here
(``largemodel.training.train``, docs/theory.md §10.5) all come from it.

Configs kept in the repository: ``largemodel/models/configs`` (sources in ``largemodel.models.fullsize``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from largemodel.models.flow_model import resolve_dtype

__all__ = [
    "CONFIG_DIR",
    "SD35_MEDIUM_SCHEDULER",
    "SD35_MEDIUM_TRANSFORMER",
    "build_transformer",
    "count_parameters",
    "is_flux_config",
    "load_config",
    "quiet_diffusers",
]

CONFIG_DIR = Path(__file__).with_name("configs")
SD35_MEDIUM_TRANSFORMER = CONFIG_DIR / "sd35_medium_transformer.json"
SD35_MEDIUM_SCHEDULER = CONFIG_DIR / "sd35_medium_scheduler.json"


def load_config(path: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER) -> dict[str, Any]:
    """A diffusers config as a dict (a dict is returned as a copy)."""
    if isinstance(path, dict):
        return dict(path)
    return json.loads(Path(path).read_text())


def is_flux_config(config: dict[str, Any]) -> bool:
    """Whether ``config`` describes a ``FluxTransformer2DModel`` (else an ``SD3Transformer2DModel``)."""
    return config.get("_class_name") == "FluxTransformer2DModel" or "num_single_layers" in config


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' warning about casting with ``.to(dtype)`` (no fp32-only modules here)."""
    from diffusers.utils import logging as dlog

    before = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(before)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)``; the global RNG states it touched (the CPU's,
    and ``device``'s if CUDA) are restored after, so building a model draws nothing from them."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def build_transformer(
    config: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.bfloat16,
    seed: int = 0,
    trainable: bool = False,
) -> torch.nn.Module:
    """A transformer from ``config`` with diffusers' default random initialisation, seeded.

    Built under ``torch.device(device)``: parameters are created and initialised directly on the
    target device (on a GPU the 2.2 B-parameter SD3.5 Medium initialisation takes about a second;
    no CPU copy, no host-to-device transfer), in float32, then cast to ``dtype``. ``device="meta"``
    gives a shape-only model (no memory, for counting parameters or FLOPs). The weights depend on
    ``(config, seed, device)`` only: the global RNG is seeded for the construction and restored
    after it.

    Args:
        config: a config file or dict (SD3 / SD3.5 or FLUX, see ``is_flux_config``).
        device, dtype: where and in what precision (``"auto"``, ``"bf16"``... as ``--dtype``).
        seed: seed of the initialisation.
        trainable: return the model in training mode with gradients on its parameters (for
            ``largemodel.training.train``); otherwise in eval mode with ``requires_grad`` off.
    """
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cfg = load_config(config)
    cls = FluxTransformer2DModel if is_flux_config(cfg) else SD3Transformer2DModel
    dev = torch.device(device)
    dt = resolve_dtype(dtype, dev)
    with _seeded(seed, dev), quiet_diffusers(), torch.device(dev):
        model = cls.from_config(cfg).to(dt)
    return model.train() if trainable else model.eval().requires_grad_(False)


def _count_on_meta(cfg: dict[str, Any]) -> tuple[int, int]:
    model = build_transformer(cfg, device="meta", dtype=torch.float32)
    return sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())


#: configs with at most this many blocks are counted block by block; deeper ones by extrapolation
_DIRECT_COUNT_BLOCKS = 8


def count_parameters(config: str | Path | dict[str, Any] = SD35_MEDIUM_TRANSFORMER) -> tuple[int, int]:
    """``(parameters, buffer values)`` of the transformer ``config`` describes, counted on the
    meta device (no memory, no initialisation cost).

    The count is affine in each layer count (``num_layers``, and FLUX's ``num_single_layers``:
    every block past the SD3.5 dual-attention indices has the same tensors), so a deep config is
    counted on two or three shallow copies and extrapolated exactly: a config declaring 10^6
    layers is priced in milliseconds instead of building 10^6 blocks.
    """
    cfg = load_config(config)
    keys = ["num_layers"] + (["num_single_layers"] if "num_single_layers" in cfg else [])
    depth = {k: int(cfg.get(k, 0)) for k in keys}
    if sum(depth.values()) <= _DIRECT_COUNT_BLOCKS:
        return _count_on_meta(cfg)
    # below `low`, blocks may differ (dual-attention layers are listed by index)
    low = {k: 1 for k in keys}
    low["num_layers"] = max([int(i) for i in cfg.get("dual_attention_layers") or ()] + [-1]) + 2
    low = {k: min(v, depth[k]) for k, v in low.items()}
    base = _count_on_meta({**cfg, **low})
    total = list(base)
    for k in keys:
        if depth[k] > low[k]:
            step = _count_on_meta({**cfg, **low, k: low[k] + 1})
            total = [t + (s - b) * (depth[k] - low[k]) for t, s, b in zip(total, step, base)]
    return total[0], total[1]
