r"""What a study's cost depends on: the transformer's shape, its token counts and its FLOPs.

``PlanArch`` describes an architecture for ``largemodel.plan.cost`` (docs/theory.md §10: one forward row
is one network evaluation ``u(x, sigma)`` at the study's resolution): width, heads, blocks,
parameters and buffers (counted on the meta device by
``largemodel.models.transformer_configs.count_parameters``), text tokens of the null prompt and the VAE
factor. ``KNOWN_MODELS`` names the architectures whose configs are kept in the repository; forward
FLOPs are hand counts (``largemodel.models.fullsize.sd3_forward_flops``, ``flux_forward_flops`` here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from largemodel.models.fullsize import SD3_TEXT_TOKENS, sd3_forward_flops
from largemodel.models.transformer_configs import CONFIG_DIR, count_parameters, is_flux_config, load_config

__all__ = ["KNOWN_MODELS", "PlanArch", "arch_from_config", "flux_forward_flops", "known_arch"]

#: named architectures: config file, text tokens of the null prompt, VAE factor
KNOWN_MODELS: dict[str, tuple[str, int, int]] = {
    "sd3.5-medium": ("sd35_medium_transformer.json", SD3_TEXT_TOKENS, 8),
    "sd3.5-large": ("sd35_large_transformer.json", SD3_TEXT_TOKENS, 8),
    "flux.1-dev": ("flux1_dev_transformer.json", 512, 8),
}


@dataclass(frozen=True)
class PlanArch:
    """What the cost depends on: the transformer's shape and the token counts."""

    name: str
    family: str  # "sd3" or "flux"
    config: dict[str, Any]
    parameters: int  # parameters + buffers (what the weights occupy)
    width: int
    heads: int
    blocks: int
    text_tokens: int
    vae_factor: int

    def image_tokens(self, resolution: int) -> int:
        patch = 2 if self.family == "flux" else int(self.config.get("patch_size", 2))
        side = resolution // self.vae_factor // patch
        return side * side

    def latent_numel(self, resolution: int) -> int:
        """``n``: entries of one image's latent (``C H W``; FLUX's packed channels unpacked)."""
        channels = int(self.config["in_channels"]) // (4 if self.family == "flux" else 1)
        return channels * (resolution // self.vae_factor) ** 2

    def forward_flops(self, resolution: int) -> int:
        latent = resolution // self.vae_factor
        if self.family == "flux":
            return flux_forward_flops(self.config, image_tokens=self.image_tokens(resolution), text_tokens=self.text_tokens)
        return sd3_forward_flops(self.config, latent_size=latent, text_tokens=self.text_tokens)

    def attention_flops(self, resolution: int) -> int:
        """The part of ``forward_flops`` in attention's two ``L x L`` products (``4 L^2 d`` per attention)."""
        n, d = self.image_tokens(resolution), self.width
        seq = n + self.text_tokens
        if self.family == "flux":
            return (int(self.config["num_layers"]) + int(self.config["num_single_layers"])) * 4 * seq * seq * d
        dual = len(self.config.get("dual_attention_layers") or ())
        return int(self.config["num_layers"]) * 4 * seq * seq * d + dual * 4 * n * n * d

    def backward_factor(self, resolution: int) -> float:
        """FLOPs of an input-gradient backward pass over a forward's (frozen parameters: no weight gradients).

        A linear layer's backward is one product (``dX = dY W^T``: 1x its forward); a fused attention
        backward recomputes ``Q K^T`` and forms ``dV``, ``dP``, ``dQ``, ``dK`` (5 products for the
        forward's 2: 2.5x). With ``a`` the attention share of the forward: ``1 + 1.5 a``.
        """
        a = self.attention_flops(resolution) / self.forward_flops(resolution)
        return 1.0 + 1.5 * a


def arch_from_config(
    config: dict[str, Any], *, name: str, text_tokens: int | None = None, vae_factor: int = 8
) -> PlanArch:
    """An ``PlanArch`` from a transformer ``config.json`` (parameters and buffers counted on the meta device)."""
    family = "flux" if is_flux_config(config) else "sd3"
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    blocks = int(config["num_layers"]) + int(config.get("num_single_layers", 0))
    tokens = text_tokens if text_tokens is not None else (512 if family == "flux" else SD3_TEXT_TOKENS)
    return PlanArch(name=name, family=family, config=dict(config), parameters=sum(count_parameters(config)),
                width=heads * head_dim, heads=heads, blocks=blocks, text_tokens=int(tokens), vae_factor=vae_factor)


def known_arch(name: str) -> PlanArch:
    """One of ``KNOWN_MODELS`` (configs kept in ``largemodel/models/configs``)."""
    if name not in KNOWN_MODELS:
        raise ValueError(f"--plan model must be one of {sorted(KNOWN_MODELS)} or a model folder, got {name!r}")
    cfg_file, tokens, factor = KNOWN_MODELS[name]
    return arch_from_config(load_config(CONFIG_DIR / cfg_file), name=name, text_tokens=tokens, vae_factor=factor)


def flux_forward_flops(config: dict[str, Any], *, image_tokens: int, text_tokens: int = 512, batch: int = 1) -> int:
    """Matmul FLOPs (2 per multiply-add) of one ``FluxTransformer2DModel`` forward, by hand.

    Double blocks: per stream adaLN (``6d``), QKV, output projection and a ``4d`` MLP, joint
    attention over ``L = image + text`` tokens (``4 L^2 d``); single blocks: adaLN (``3d``),
    one ``d -> 7d`` projection (QKV and MLP in), attention, one ``5d -> d`` projection.
    """
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    n, t = int(image_tokens), int(text_tokens)
    seq = n + t
    lin = lambda rows, fan_in, fan_out: 2 * rows * fan_in * fan_out  # noqa: E731
    f = lin(n, int(config["in_channels"]), d) + lin(t, int(config["joint_attention_dim"]), d)
    f += lin(1, 256, d) * 2 + lin(1, d, d) * 2 + lin(1, int(config["pooled_projection_dim"]), d) + lin(1, d, d)
    for rows in (n, t):
        f += int(config["num_layers"]) * (lin(1, d, 6 * d) + lin(rows, d, 3 * d) + lin(rows, d, d) + lin(rows, d, 4 * d) + lin(rows, 4 * d, d))
    f += int(config["num_layers"]) * 4 * seq * seq * d
    f += int(config["num_single_layers"]) * (lin(1, d, 3 * d) + lin(seq, d, 7 * d) + 4 * seq * seq * d + lin(seq, 5 * d, d))
    f += lin(1, d, 2 * d) + lin(n, d, int(config["in_channels"]))
    return int(batch) * f
