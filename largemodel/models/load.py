r"""Loading a local diffusers folder as a ``FlowModel`` (docs/theory.md §1.2 conventions).

``load_model`` reads SD3, SD3.5, FLUX and the models trained here, offline and safetensors only;
the prompt embeddings (the null prompt's, and any prompt asked) are computed before the transformer
is loaded, and cached (``largemodel.models.prompts``). A diffusers pipeline object already in
memory is ``largemodel.models.pipeline.from_pipeline``'s. The
velocity field itself is ``largemodel.models.flow_model.FlowModel``, re-exported here with
``math_attention``, as are the names other modules import from ``largemodel.models.load``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from largemodel.models.conditioning import Conditioning, check_guidance_scale
from largemodel.models.flow_model import FlowModel, math_attention, resolve_dtype
from largemodel.models.folder import FolderInfo, ModelFolderError, _dtype_kwargs, _load_kwargs, inspect_folder  # noqa: F401
from largemodel.models.prompts import prompt_table
from largemodel.models.weights import check_config, check_finite, check_weights, scan_finite

__all__ = ["FlowModel", "assemble", "check_model_folder", "load_model", "math_attention"]


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
    prompt: str | None = None,
    guidance_scale: float = 1.0,
    prompts: Sequence[str] = (),
    prompt_cache: str | Path | None = None,
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
            are never resident with the transformer anyway (see ``prompt_cache``).
        prompt: the prompt the field is conditioned on (default: the null prompt ``""``).
        guidance_scale: classifier-free guidance scale ``W >= 1`` (docs/theory.md §10.7); 1 = none.
        prompts: further prompts to encode now (e.g. every caption of a study), so that
            ``model.conditioned(p)`` needs no encoder later.
        prompt_cache: a folder (the run's ``--out``) where each prompt's embeddings are cached in
            ``prompt_cache/`` (``largemodel.models.prompts``). The text encoders are loaded first,
            run once per prompt, freed, and only then the transformer is loaded; with a cache the
            next run skips the encoders. The model folder is never written to.
        guidance: FLUX guidance-embedding value (ignored by models without one; the PF-ODE is
            the same both ways whatever its value).
        resolution: default image side; defaults to the model's native resolution.

    Raises:
        ModelFolderError: see ``inspect_folder``; also a config that does not build or exceeds the
            machine's memory, a tensor the configs define missing, misshapen or NaN/inf
            (``largemodel.models.weights``), and weights that fail to load.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_model takes a model folder, got a {type(path).__name__} object: for a loaded diffusers "
                        "pipeline use largemodel.from_pipeline(pipe, prompt=..., guidance_scale=...)")
    w = check_guidance_scale(guidance_scale, "guidance_scale")
    info = inspect_folder(path)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = resolve_dtype(dtype, dev)
    prompt = "" if prompt is None else prompt
    tf_cls = FluxTransformer2DModel if info.family == "flux" else SD3Transformer2DModel
    _check_complete(info, tf_cls, AutoencoderKL, dt, dev)  # headers only, before anything is allocated
    # encoders first (then freed), transformer after
    table = prompt_table(info, [prompt, *prompts], dev, dt, None if prompt_cache is None else Path(prompt_cache))
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
    return assemble(info, transformer, scheduler_config, vae, table, prompt=prompt, guidance_scale=w, device=dev,
                    dtype=dt, state_dtype=state_dtype, guidance=guidance, resolution=resolution, offload=offload)


def assemble(
    info: FolderInfo, transformer: torch.nn.Module, scheduler_config: dict[str, Any], vae: torch.nn.Module | None,
    table: dict[str, tuple[torch.Tensor, torch.Tensor]], *, prompt: str, guidance_scale: float, device: torch.device,
    dtype: torch.dtype, state_dtype: torch.dtype, guidance: float | None, resolution: int | None, offload: bool,
) -> FlowModel:
    """The ``FlowModel`` of loaded components (``load_model``'s and ``from_pipeline``'s one route): the
    image channels and native resolution from the VAE and transformer configs (and ``pfode_model.json``),
    FLUX's guidance embedding where the transformer has one, the conditioning on ``prompt`` at
    ``guidance_scale`` from ``table`` (prompt -> embeddings, the null prompt among them)."""
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
        conditioning=Conditioning.from_table(table, prompt, guidance_scale).to(device, dtype),
        device=device,
        dtype=dtype,
        state_dtype=state_dtype,
        guidance=float(guidance) if (has_guidance and guidance is not None) else None,
        resolution=int(resolution) if resolution is not None else native,
        image_channels=image_channels,
        offload=offload,
        prompts={p: (e.to(dtype), pooled.to(dtype)) for p, (e, pooled) in table.items()},
    )
    model.latent_shape()  # validates the resolution
    return model
