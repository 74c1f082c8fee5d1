r"""Loading a local diffusers folder as a ``FlowModel`` (docs/theory.md §1.2 conventions).

``load_model`` reads SD3, SD3.5, FLUX and the models trained here, offline and safetensors only;
the null-prompt conditioning is computed before the transformer is loaded (and cached). The
velocity field itself is ``largemodel.models.flow_model.FlowModel``, re-exported here with
``math_attention``, as are the names other modules import from ``largemodel.models.load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from largemodel.models.flow_model import FlowModel, math_attention, resolve_dtype
from largemodel.models.folder import FolderInfo, ModelFolderError, inspect_folder
from largemodel.models.weights import check_config, check_finite, check_weights, scan_finite

__all__ = ["FlowModel", "check_model_folder", "load_model", "math_attention", "NULL_PROMPT_CACHE_NAME"]

#: file name of the cached null-prompt embeddings inside a ``null_prompt_cache`` folder
NULL_PROMPT_CACHE_NAME = "null_prompt_cache.safetensors"


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` where this diffusers reads it (it deprecates ``torch_dtype=``), else ``torch_dtype=``."""
    try:
        from diffusers.utils import deprecation_utils

        has_dtype = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:  # older diffusers: torch_dtype only
        has_dtype = False
    return {"dtype": dtype} if has_dtype else {"torch_dtype": dtype}


def _load_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """Offline, safetensors-only ``from_pretrained`` options, every default diffusers would warn
    about set explicitly: ``low_cpu_mem_usage`` only where ``accelerate`` is installed (without
    it diffusers prints a "Cannot initialize model with low cpu memory usage" notice)."""
    import importlib.util

    return {"local_files_only": True, "use_safetensors": True,
            "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None, **_dtype_kwargs(dtype)}


def _free_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _null_prompt_from_encoders(info: FolderInfo, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Encode the empty prompt once with the folder's own text encoders, then drop them (the
    returned tensors are on the CPU and the encoders' memory is released before returning)."""
    import diffusers

    pipe_cls = getattr(diffusers, info.pipeline_class)
    try:
        pipe = pipe_cls.from_pretrained(info.path, transformer=None, vae=None, **_load_kwargs(dtype))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{info.path}: cannot load the text encoders offline: {exc}") from None
    pipe.to(device)
    with torch.no_grad():
        if info.family == "flux":
            embeds, pooled, _ = pipe.encode_prompt(prompt="", prompt_2=None, device=device)
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt="", prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False
            )
    embeds, pooled = embeds.cpu(), pooled.cpu()
    del pipe
    _free_device_memory(device)
    return embeds, pooled


def _null_prompt(
    info: FolderInfo, device: torch.device, dtype: torch.dtype, cache: Path | None
) -> tuple[Tensor, Tensor]:
    """The null-prompt conditioning, before any other weight is loaded.

    Order: the folder's ``null_prompt.safetensors``; else ``cache`` (a file pfode wrote
    earlier for this folder and dtype); else the text encoders (loaded alone, run once, freed),
    whose output is then written to ``cache``. So the peak is max(encoders, transformer), not
    their sum, and a second run loads no encoder at all.
    """
    from safetensors.torch import load_file, save

    if info.null_prompt_file is not None:
        tensors = load_file(str(info.null_prompt_file))
        if {"prompt_embeds", "pooled_prompt_embeds"} - tensors.keys():
            raise ModelFolderError(f"{info.null_prompt_file}: needs prompt_embeds and pooled_prompt_embeds")
        return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    stamp = {"model": str(info.path.resolve()), "dtype": str(dtype),
             "model_index_mtime_ns": str((info.path / "model_index.json").stat().st_mtime_ns)}
    if cache is not None and cache.is_file() and not cache.is_symlink():
        cached = _read_null_prompt_cache(cache, stamp)
        if cached is not None:
            return cached
    embeds, pooled = _null_prompt_from_encoders(info, device, dtype)
    if cache is not None:  # atomic, recorded in the run folder's manifest, no link followed
        from theory.output.files import write_bytes

        write_bytes(cache, save({"prompt_embeds": embeds.contiguous(), "pooled_prompt_embeds": pooled.contiguous()},
                                metadata=stamp))
    return embeds, pooled


def _read_null_prompt_cache(cache: Path, stamp: dict[str, str]) -> tuple[Tensor, Tensor] | None:
    """The cached null prompt if ``cache`` was written for this folder and dtype (``stamp``);
    ``None`` (rebuild) if it was written for another, or if it is damaged: then one warning line
    on stderr names the file, and the rebuilt cache replaces it."""
    import sys

    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(cache), framework="pt") as fh:
            meta = fh.metadata() or {}
        if not all(meta.get(k) == v for k, v in stamp.items()):
            return None
        tensors = load_file(str(cache))
        return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    except Exception as exc:  # SafetensorError, OSError, KeyError: a damaged file, rebuilt
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        print(f"pfode: warning: damaged null-prompt cache {cache} ({reason}); rebuilding it", file=sys.stderr)
        return None


def _cast(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move ``module`` to ``device`` and its floating tensors to ``dtype``, in place.

    Tensors of the submodules the class keeps in float32 (``_keep_in_fp32_modules``, as
    diffusers' own loader does) stay as loaded. Parameters are cast one by one rather than by
    ``module.to(dtype)``, which diffusers warns about for exactly that reason.
    """
    module.to(device=device)
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and tensor.dtype != dtype and not any(k in name.split(".") for k in keep):
                tensor.data = tensor.data.to(dtype)
    return module


def _check_complete(info: FolderInfo, tf_cls: type, vae_cls: type, dtype: torch.dtype, device: torch.device) -> None:
    """The transformer config (buildable, within memory) and every tensor the transformer and VAE
    configs define, present with its shape (``largemodel.models.weights``)."""
    check_config(info.transformer_config, info.path / "transformer" / "config.json", dtype=dtype, device=device)
    check_weights(info.path / "transformer", tf_cls, info.transformer_config)
    if info.has_vae:
        vae_config_path = info.path / "vae" / "config.json"
        try:
            vae_config = json.loads(vae_config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"{vae_config_path}: cannot read the VAE config ({exc})") from None
        if not isinstance(vae_config, dict):
            raise ModelFolderError(f"{vae_config_path}: not a JSON object")
        check_weights(info.path / "vae", vae_cls, vae_config)


def check_model_folder(
    path: str | Path, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = "auto"
) -> FolderInfo:
    """Everything ``load_model`` refuses that can be seen without loading a weight: the folder
    (``inspect_folder``), the transformer config (buildable, within the memory of ``device``) and
    every tensor the configs define, and no NaN/inf weight (sampled in files over 1 GiB;
    ``largemodel.models.weights``). The CLI calls it on ``--model`` before any work; ``load_model``
    checks the headers again and every value for NaN/inf after loading.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    info = inspect_folder(path)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tf_cls = FluxTransformer2DModel if info.family == "flux" else SD3Transformer2DModel
    _check_complete(info, tf_cls, AutoencoderKL, resolve_dtype(dtype, dev), dev)
    for name in ("transformer", "vae") if info.has_vae else ("transformer",):
        scan_finite(info.path / name)
    return info


def load_model(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "auto",
    state_dtype: torch.dtype = torch.float32,
    offload: bool = False,
    guidance: float | None = 3.5,
    resolution: int | None = None,
    null_prompt_cache: str | Path | None = None,
) -> FlowModel:
    """Load a local diffusers folder (SD3, SD3.5 Medium/Large, FLUX, or a model trained here).

    Offline only (``local_files_only``), safetensors only, no remote code: the transformer,
    scheduler and VAE classes come from diffusers by a fixed table.

    Args:
        path: the model folder (``model_index.json`` at its top).
        device: ``"cuda"``, ``"cpu"``...; default CUDA if available.
        dtype: the network's dtype, ``"auto"`` = bf16 on CUDA, float32 on CPU.
        state_dtype: dtype of the ODE state and reductions.
        offload: keep the VAE on the CPU except while it encodes or decodes (``--offload``). It
            does not offload the transformer (it runs at every step) nor the text encoders: they
            are never resident with the transformer anyway (see ``null_prompt_cache``).
        null_prompt_cache: where to keep the null-prompt embeddings of a folder without
            ``null_prompt.safetensors`` (a ``.safetensors`` file, or a folder that gets
            ``null_prompt_cache.safetensors``; the study passes its output folder). The text
            encoders are loaded first, run once, freed, and only then the transformer is
            loaded; with a cache the next run skips the encoders. The model folder is never
            written to.
        guidance: FLUX guidance-embedding value (ignored by models without one; the PF-ODE is
            the same both ways whatever its value).
        resolution: default image side; defaults to the model's native resolution.

    Raises:
        ModelFolderError: see ``inspect_folder``; also a config that does not build or exceeds the
            machine's memory, a tensor the configs define missing, misshapen or NaN/inf
            (``largemodel.models.weights``), and weights that fail to load.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    info = inspect_folder(path)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = resolve_dtype(dtype, dev)
    cache = None if null_prompt_cache is None else Path(null_prompt_cache)
    if cache is not None and cache.suffix != ".safetensors":
        cache = cache / NULL_PROMPT_CACHE_NAME
    tf_cls = FluxTransformer2DModel if info.family == "flux" else SD3Transformer2DModel
    _check_complete(info, tf_cls, AutoencoderKL, dt, dev)  # headers only, before anything is allocated
    embeds, pooled = _null_prompt(info, dev, dt, cache)  # encoders first (then freed), transformer after
    common = _load_kwargs(dt)
    try:
        transformer = tf_cls.from_pretrained(info.path, subfolder="transformer", **common)
        vae = AutoencoderKL.from_pretrained(info.path, subfolder="vae", **common) if info.has_vae else None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFolderError(f"{info.path}: cannot load weights: {exc}") from None
    # an explicit cast: without accelerate, diffusers can leave some parameters in the saved dtype
    _cast(transformer, dev, dt).eval().requires_grad_(False)
    check_finite(transformer, info.path / "transformer")
    if vae is not None:
        _cast(vae, torch.device("cpu") if offload else dev, dt).eval().requires_grad_(False)
        check_finite(vae, info.path / "vae")
    scheduler_config = json.loads((info.path / "scheduler" / "scheduler_config.json").read_text())
    if vae is not None:
        image_channels = int(vae.config.in_channels)
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        native = int(info.meta.get("resolution", int(info.transformer_config.get("sample_size", 128)) * f))
    else:
        image_channels = int(info.meta.get("image_channels", info.transformer_config["in_channels"] // (4 if info.family == "flux" else 1)))
        native = int(info.meta.get("resolution", info.transformer_config.get("sample_size", 0)))
    has_guidance = info.family == "flux" and bool(transformer.config.get("guidance_embeds", False))
    model = FlowModel(
        info=info,
        transformer=transformer,
        scheduler_config=scheduler_config,
        vae=vae,
        prompt_embeds=embeds.to(dev, dt),
        pooled_prompt_embeds=pooled.to(dev, dt),
        device=dev,
        dtype=dt,
        state_dtype=state_dtype,
        guidance=float(guidance) if (has_guidance and guidance is not None) else None,
        resolution=int(resolution) if resolution is not None else native,
        image_channels=image_channels,
        offload=offload,
    )
    model.latent_shape()  # validates the resolution
    return model
