r"""The velocity field of a flow-matching model's probability-flow ODE (``FlowModel``).

Convention (docs/theory.md §1.2, diffusers / SD3 / FLUX): ``x_sigma = (1 - sigma) x1 +
sigma x0`` with ``x1`` the (latent) image and ``x0 ~ N(0, I)``; the transformer predicts
``u(x, sigma) = x0 - x1`` so that ``dx/dsigma = u`` and, with ``t = 1 - sigma``,
``v(x, t) = -u(x, 1 - t)``. The model is conditioned on a ``Conditioning``: the *null* prompt
without classifier-free guidance by default, or a prompt with guidance scale ``W`` applied as the
family's diffusers pipeline does (docs/theory.md §10.7); inversion and regeneration integrate the
very same (guided) ODE.

``FlowModel.velocity`` is the only place the network is called; everything else (solvers,
instability coefficients, the study) sees a function of ``(x, sigma)`` on latents of shape
``(B, C, H, W)``. Also here: ``math_attention`` (the attention kernel forward-mode AD needs)
and ``resolve_dtype`` (the ``--dtype`` names). Loading a folder into a ``FlowModel`` is
``largemodel.models.load.load_model``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from largemodel.models.conditioning import Conditioning
from largemodel.models.folder import FolderInfo

__all__ = ["FlowModel", "JVP_REDUCTIONS", "jvp_reductions", "math_attention", "resolve_dtype"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Force PyTorch's math attention kernel: fused kernels lack forward-mode AD."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


#: how the math attention kernel (the one forward-mode AD runs on) reduces bf16 / fp16 inputs
JVP_REDUCTIONS = ("fp32", "reduced")


@contextlib.contextmanager
def jvp_reductions(mode: str = "fp32") -> Iterator[None]:
    """How the math attention kernel reduces bf16 / fp16 attention inside the block.

    ``"fp32"`` (PyTorch's default): the kernel upcasts bf16 / fp16 query, key and value to fp32 for
    the softmax and both matrix products, so a JVP through a bf16 model runs its attention in fp32
    on non-tensor-core paths. ``"reduced"``: the reductions stay in the model's dtype
    (``torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp``), the cheaper choice on GPU; the JVP
    then carries the rounding of a bf16 attention. fp32 / fp64 models are unaffected. The previous
    setting is restored on exit (also on error).
    """
    if mode not in JVP_REDUCTIONS:
        raise ValueError(f"--jvp-reductions must be one of {', '.join(JVP_REDUCTIONS)}, got {mode!r}")
    before = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(mode == "reduced")
    try:
        yield
    finally:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(before)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
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
    """A diffusers flow-matching transformer with its conditioning (docs/theory.md §10.1, §10.7).

    Attributes:
        info: what the folder holds (family, configs).
        transformer: the network (eval mode, no gradients for its parameters).
        scheduler_config: the scheduler's config (shift, dynamic shifting).
        vae: the autoencoder, or ``None`` for pixel-space models.
        conditioning: the prompt and guidance scale the field is conditioned on (the null prompt,
            ``W = 1``, unless asked); ``prompt_embeds`` / ``pooled_prompt_embeds`` are its
            conditional embeddings.
        device, dtype: where and in what precision the network runs.
        state_dtype: precision of the ODE state and of all sums (float32 unless asked).
        guidance: FLUX's guidance-embedding value (``None`` for models without it).
        resolution: default image side in pixels.
        image_channels: channels of the images the model works with (3, or 1 for grayscale
            pixel-space models).
        offload: keep the VAE on the CPU except while encoding or decoding.
        prompts: every prompt encoded when the model was loaded -> ``(embeds, pooled)``, kept on
            the CPU, the null prompt ``""`` among them (``conditioned`` picks from it).
    """

    info: FolderInfo
    transformer: torch.nn.Module
    scheduler_config: dict[str, Any]
    vae: torch.nn.Module | None
    conditioning: Conditioning
    device: torch.device
    dtype: torch.dtype
    state_dtype: torch.dtype
    guidance: float | None
    resolution: int
    image_channels: int
    offload: bool = False
    prompts: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    # ---- conditioning ---------------------------------------------------------------------
    @property
    def prompt_embeds(self) -> Tensor:
        return self.conditioning.prompt_embeds

    @property
    def pooled_prompt_embeds(self) -> Tensor:
        return self.conditioning.pooled_prompt_embeds

    @property
    def guidance_scale(self) -> float:
        return self.conditioning.guidance_scale

    def conditioned(self, prompt: str | None = None, guidance_scale: float | None = None) -> FlowModel:
        """The same network conditioned on ``prompt`` with scale ``guidance_scale`` (each defaults to
        this model's): a shallow copy sharing the transformer and VAE. The prompt must have been
        encoded when the model was loaded (``prompts``); ``W > 1`` needs the null prompt there.
        """
        p = self.conditioning.prompt if prompt is None else prompt
        w = self.conditioning.guidance_scale if guidance_scale is None else guidance_scale
        table = self.prompts or {self.conditioning.prompt: (self.prompt_embeds, self.pooled_prompt_embeds)}
        return replace(self, conditioning=Conditioning.from_table(table, p, w).to(self.device, self.dtype))

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

    def _network(self, h: Tensor, sig: Tensor, enc: Tensor, pooled: Tensor) -> Tensor:
        """One transformer call on latents ``h`` (model dtype) at ``sig`` ``(B,)``, in the model's dtype."""
        b = h.shape[0]
        if self.family != "flux":
            return self.transformer(hidden_states=h, timestep=self.timestep(sig), encoder_hidden_states=enc,
                                    pooled_projections=pooled, return_dict=False)[0]
        _, c, hh, ww = h.shape
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
        return out.view(b, hh // 2, ww // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)

    def velocity(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        r"""``u_W(x, sigma) = dx/dsigma``, the transformer's (guided) prediction of ``x0 - x1``.

        With ``W = conditioning.guidance_scale > 1``, classifier-free guidance as the family's
        diffusers pipeline applies it (docs/theory.md §10.7), ``u_W = u_u + W (u_c - u_u)`` in the
        model's dtype: SD3 / SD3.5 (``StableDiffusion3Pipeline``) run the unconditional and the
        conditional rows in one batch of ``2B`` rows; FLUX (``FluxPipeline``'s ``true_cfg_scale``,
        negative prompt ``""``) runs the conditional pass, then the unconditional one, each with
        the guidance embedding (``--guidance``). With ``W = 1`` one pass on the conditional rows.

        Args:
            x: latents ``(B, C, H, W)`` in any float dtype (cast to the model's dtype).
            sigma: a float or a ``(B,)`` tensor in ``[0, 1]``.

        Returns:
            ``(B, C, H, W)`` in ``x``'s dtype.
        """
        b = x.shape[0]
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=self.device)
        sig = sig.expand(b) if sig.ndim == 0 else sig
        cond = self.conditioning
        h = x.to(self.dtype)
        if not cond.guided:
            out = self._network(h, sig, *cond.rows(b))
        else:
            w = cond.guidance_scale
            if self.family == "flux":
                u_c = self._network(h, sig, *cond.rows(b))
                u_u = self._network(h, sig, *cond.rows(b, negative=True))
            else:
                (e_u, p_u), (e_c, p_c) = cond.rows(b, negative=True), cond.rows(b)
                u_u, u_c = self._network(torch.cat([h, h]), torch.cat([sig, sig]), torch.cat([e_u, e_c]),
                                         torch.cat([p_u, p_c])).chunk(2)
            out = u_u + w * (u_c - u_u)
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
