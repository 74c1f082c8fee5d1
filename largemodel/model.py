r"""A loaded flow-matching model as the velocity field of its probability-flow ODE.

Convention (docs/theory.md §1.2, diffusers / SD3 / FLUX): ``x_sigma = (1 - sigma) x1 +
sigma x0`` with ``x1`` the (latent) image and ``x0 ~ N(0, I)``; the transformer predicts
``u(x, sigma) = x0 - x1`` so that ``dx/dsigma = u`` and, with ``t = 1 - sigma``,
``v(x, t) = -u(x, 1 - t)``. The model is always conditioned on the *null* prompt, with no
classifier-free guidance, so that inversion and regeneration integrate the very same ODE.

``FlowModel.velocity`` is the only place the network is called; everything else (solvers,
instability coefficients, the study) sees a function of ``(x, sigma)`` on latents of shape
``(B, C, H, W)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from .folder import FolderInfo, ModelFolderError, inspect_folder

__all__ = ["FlowModel", "load_model", "math_attention", "NULL_PROMPT_CACHE_NAME"]

#: file name of the cached null-prompt embeddings inside a ``null_prompt_cache`` folder
NULL_PROMPT_CACHE_NAME = "null_prompt_cache.safetensors"


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Force PyTorch's math attention kernel: fused kernels lack forward-mode AD."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64, "fp64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)} or 'auto', got {dtype!r}")
    return table[dtype]


@dataclass
class FlowModel:
    """A diffusers flow-matching transformer with its null-prompt conditioning.

    Attributes:
        info: what the folder holds (family, configs).
        transformer: the network (eval mode, no gradients for its parameters).
        scheduler_config: the scheduler's config (shift, dynamic shifting).
        vae: the autoencoder, or ``None`` for pixel-space models.
        prompt_embeds, pooled_prompt_embeds: the null-prompt conditioning, batch 1.
        device, dtype: where and in what precision the network runs.
        state_dtype: precision of the ODE state and of all sums (float32 unless asked).
        guidance: FLUX's guidance-embedding value (``None`` for models without it).
        resolution: default image side in pixels.
        image_channels: channels of the images the model works with (3, or 1 for grayscale
            pixel-space models).
        offload: keep the VAE on the CPU except while encoding or decoding.
    """

    info: FolderInfo
    transformer: torch.nn.Module
    scheduler_config: dict[str, Any]
    vae: torch.nn.Module | None
    prompt_embeds: Tensor
    pooled_prompt_embeds: Tensor
    device: torch.device
    dtype: torch.dtype
    state_dtype: torch.dtype
    guidance: float | None
    resolution: int
    image_channels: int
    offload: bool = False

    # ---- geometry -------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.info.family

    @property
    def latent_channels(self) -> int:
        c = int(self.transformer.config.in_channels)
        return c // 4 if self.family == "flux" else c

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latent of a square image of side ``resolution`` pixels."""
        res = self.resolution if resolution is None else int(resolution)
        f = self.vae_scale_factor
        multiple = f * (2 if self.family == "flux" else int(self.transformer.config.patch_size))
        if res <= 0 or res % multiple:
            raise ValueError(f"resolution must be a positive multiple of {multiple} for this model, got {res}")
        return (self.latent_channels, res // f, res // f)

    # ---- sigma grid -----------------------------------------------------------------------
    def sigmas(self, steps: int, latent_shape: tuple[int, int, int] | None = None) -> Tensor:
        """The model's own sigma grid for ``steps`` steps: ``steps + 1`` values from ~1 down to 0.

        Built by the model's ``FlowMatchEulerDiscreteScheduler`` exactly as its diffusers
        pipeline does: static ``shift`` from the config, or dynamic shifting with ``mu`` from the
        image sequence length (FLUX, and SD3 configs that enable it); FLUX's pipeline passes
        ``sigmas = linspace(1, 1/steps, steps)`` before the shift.
        """
        from diffusers import FlowMatchEulerDiscreteScheduler

        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        steps = int(steps)
        sched = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        c, h, w = latent_shape if latent_shape is not None else self.latent_shape()
        kwargs: dict[str, Any] = {}
        if sched.config.get("use_dynamic_shifting", False):
            patch = 2 if self.family == "flux" else int(self.transformer.config.patch_size)
            seq_len = (h // patch) * (w // patch)
            cfg = sched.config
            base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
            base_shift, max_shift = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
            slope = (max_shift - base_shift) / (max_len - base_len)
            kwargs["mu"] = base_shift + slope * (seq_len - base_len)
        if self.family == "flux":
            kwargs["sigmas"] = np.linspace(1.0, 1.0 / steps, steps)
            sched.set_timesteps(**kwargs)
        else:
            sched.set_timesteps(num_inference_steps=steps, **kwargs)
        sig = sched.sigmas.to(torch.float64)
        if sig.numel() != steps + 1 or float(sig[-1]) != 0.0:
            raise RuntimeError(f"unexpected sigma grid from the scheduler: {sig.tolist()[:4]}...")
        return sig

    # ---- the field ------------------------------------------------------------------------
    def timestep(self, sigma: Tensor) -> Tensor:
        """The ``timestep`` argument the family's diffusers pipeline feeds the transformer at ``sigma``.

        Both pipelines take ``t = 1000 sigma`` from the scheduler in float32. SD3 / SD3.5
        (``StableDiffusion3Pipeline``) pass ``t`` as it is, float32 whatever the model's dtype
        (``1000 sigma`` rounded to bf16 would merge neighbouring steps of a 500-step grid);
        FLUX (``FluxPipeline``) casts ``t`` to the latents' dtype (the model's) and divides by
        1000 in that dtype.
        """
        t = 1000.0 * torch.as_tensor(sigma, dtype=torch.float32, device=self.device)
        return t.to(self.dtype) / 1000 if self.family == "flux" else t

    def _cond(self, batch: int) -> tuple[Tensor, Tensor]:
        e = self.prompt_embeds.expand(batch, *self.prompt_embeds.shape[1:])
        p = self.pooled_prompt_embeds.expand(batch, *self.pooled_prompt_embeds.shape[1:])
        return e, p

    def velocity(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        r"""``u(x, sigma) = dx/dsigma``, the transformer's prediction of ``x0 - x1``.

        Args:
            x: latents ``(B, C, H, W)`` in any float dtype (cast to the model's dtype).
            sigma: a float or a ``(B,)`` tensor in ``[0, 1]``.

        Returns:
            ``(B, C, H, W)`` in ``x``'s dtype.
        """
        b = x.shape[0]
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=self.device)
        sig = sig.expand(b) if sig.ndim == 0 else sig
        enc, pooled = self._cond(b)
        h = x.to(self.dtype)
        if self.family == "flux":
            _, c, hh, ww = x.shape
            packed = h.view(b, c, hh // 2, 2, ww // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (hh // 2) * (ww // 2), c * 4)
            img_ids = torch.zeros(hh // 2, ww // 2, 3, device=self.device, dtype=self.dtype)
            img_ids[..., 1] += torch.arange(hh // 2, device=self.device, dtype=self.dtype)[:, None]
            img_ids[..., 2] += torch.arange(ww // 2, device=self.device, dtype=self.dtype)[None, :]
            txt_ids = torch.zeros(enc.shape[1], 3, device=self.device, dtype=self.dtype)
            guidance = None
            if self.guidance is not None:
                guidance = torch.full((b,), float(self.guidance), device=self.device, dtype=torch.float32)
            out = self.transformer(
                hidden_states=packed,
                timestep=self.timestep(sig),
                guidance=guidance,
                pooled_projections=pooled,
                encoder_hidden_states=enc,
                txt_ids=txt_ids,
                img_ids=img_ids.reshape(-1, 3),
                return_dict=False,
            )[0]
            out = out.view(b, hh // 2, ww // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)
        else:
            out = self.transformer(
                hidden_states=h,
                timestep=self.timestep(sig),
                encoder_hidden_states=enc,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
        return out.to(x.dtype)

    # ---- images <-> latents ---------------------------------------------------------------
    @contextlib.contextmanager
    def _vae_on_device(self) -> Iterator[torch.nn.Module]:
        assert self.vae is not None
        if self.offload:
            self.vae.to(self.device)
        try:
            yield self.vae
        finally:
            if self.offload:
                self.vae.to("cpu")

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in ``[-1, 1]``, ``(B, image_channels, R, R)`` -> latents (the VAE's mode,
        shifted and scaled as the pipelines do); the identity for pixel-space models."""
        if images.ndim != 4 or images.shape[1] != self.image_channels:
            raise ValueError(f"images must have shape (B, {self.image_channels}, R, R), got {tuple(images.shape)}")
        if self.vae is None:
            return images.to(self.device, self.state_dtype)
        cfg = self.vae.config
        with self._vae_on_device() as vae:
            lat = vae.encode(images.to(self.device, vae.dtype)).latent_dist.mode()
        shift = cfg.get("shift_factor", None) or 0.0
        return ((lat.to(self.state_dtype) - shift) * cfg.scaling_factor).to(self.state_dtype)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> images in ``[-1, 1]`` (clamped)."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        cfg = self.vae.config
        shift = cfg.get("shift_factor", None) or 0.0
        with self._vae_on_device() as vae:
            img = vae.decode((latents / cfg.scaling_factor + shift).to(vae.dtype), return_dict=False)[0]
        return img.to(self.state_dtype).clamp(-1, 1)


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
    from safetensors.torch import load_file, save_file

    if info.null_prompt_file is not None:
        tensors = load_file(str(info.null_prompt_file))
        if {"prompt_embeds", "pooled_prompt_embeds"} - tensors.keys():
            raise ModelFolderError(f"{info.null_prompt_file}: needs prompt_embeds and pooled_prompt_embeds")
        return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    stamp = {"model": str(info.path.resolve()), "dtype": str(dtype),
             "model_index_mtime_ns": str((info.path / "model_index.json").stat().st_mtime_ns)}
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as fh:
            meta = fh.metadata() or {}
        if all(meta.get(k) == v for k, v in stamp.items()):
            tensors = load_file(str(cache))
            return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    embeds, pooled = _null_prompt_from_encoders(info, device, dtype)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"prompt_embeds": embeds.contiguous(), "pooled_prompt_embeds": pooled.contiguous()}, str(cache),
                  metadata=stamp)
    return embeds, pooled


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
        ModelFolderError: see ``inspect_folder``; also weights that fail to load.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    info = inspect_folder(path)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = _resolve_dtype(dtype, dev)
    cache = None if null_prompt_cache is None else Path(null_prompt_cache)
    if cache is not None and cache.suffix != ".safetensors":
        cache = cache / NULL_PROMPT_CACHE_NAME
    embeds, pooled = _null_prompt(info, dev, dt, cache)  # encoders first (then freed), transformer after
    tf_cls = FluxTransformer2DModel if info.family == "flux" else SD3Transformer2DModel
    common = _load_kwargs(dt)
    try:
        transformer = tf_cls.from_pretrained(info.path, subfolder="transformer", **common)
        vae = AutoencoderKL.from_pretrained(info.path, subfolder="vae", **common) if info.has_vae else None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFolderError(f"{info.path}: cannot load weights: {exc}") from None
    # an explicit cast: without accelerate, diffusers can leave some parameters in the saved dtype
    _cast(transformer, dev, dt).eval().requires_grad_(False)
    if vae is not None:
        _cast(vae, torch.device("cpu") if offload else dev, dt).eval().requires_grad_(False)
    import json

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
