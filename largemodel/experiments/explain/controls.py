r"""Synthetic controls of the explanation study: fields where its findings come out otherwise.

The same code as the trained model (``largemodel.diagnose.explain_cli.run_explain``: exact inversion,
decomposition, linearization, inverters, summary) runs on three velocity fields in float64 on the
same held-out digits (``n = 64``), through :class:`FieldModel` (identity "VAE", uniform sigma grid):

* ``random linear field`` ``u(x, sigma) = M x`` with ``M = c W / sqrt(n)``, ``W`` standard normal:
  ``G_N`` is linear, so the amplification ``A`` depends on the direction of ``z~ - z*`` only, not on
  its size, and ``mu_bar`` is nearly the same for every image: ``mu_bar`` cannot predict the error
  (Spearman near 0) and the linearization at the real discrepancy is exact (ratio 1, angle 0);
* ``untrained network``: a tanh MLP with PyTorch's default initialisation (seeded);
* ``Gaussian mixture field``: the exact field of ``simulate.GaussianMixture`` with one component of
  standard deviation ``gmm_std`` on each training digit of the trained model (docs/theory.md §3.3).

docs/theory.md §5.3. Nothing here is trained; every field is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["CONTROLS", "FieldModel", "control_model"]

#: the controls, in the order the report lists them
CONTROLS: tuple[str, ...] = ("random linear field", "untrained network", "Gaussian mixture field")


@dataclass
class FieldModel:
    """A velocity ``u(x, sigma)`` on latents of shape ``shape`` with the parts of a loaded model that
    ``run_explain`` uses: identity encoder / decoder (pixel space), uniform sigma grid, float64."""

    velocity: Callable[[Tensor, Any], Tensor]
    shape: tuple[int, int, int]
    resolution: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float64
    state_dtype: torch.dtype = torch.float64
    guidance: float | None = None

    @property
    def image_channels(self) -> int:
        return self.shape[0]

    def latent_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        if resolution not in (None, self.resolution):
            raise ValueError(f"--resolutions: this field works at {self.resolution} px only, got {resolution}")
        return self.shape

    def sigmas(self, steps: int, latent_shape: Any = None) -> Tensor:
        return torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float64)

    def encode(self, images: Tensor) -> Tensor:
        return images.to(torch.float64)

    def decode(self, latents: Tensor) -> Tensor:
        return latents


def _linear(n: int, gain: float, seed: int) -> Callable[[Tensor, Any], Tensor]:
    m = gain * torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / math.sqrt(n)

    def u(x: Tensor, sigma: Any) -> Tensor:
        return (x.reshape(x.shape[0], n).to(torch.float64) @ m.T).reshape(x.shape).to(x.dtype)

    return u


def _untrained(n: int, width: int, seed: int) -> Callable[[Tensor, Any], Tensor]:
    with torch.random.fork_rng():  # nn.Linear draws its default initialisation from the global generator
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(n + 1, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                                  torch.nn.Tanh(), torch.nn.Linear(width, n)).to(torch.float64)
    for p in net.parameters():
        p.requires_grad_(False)

    def u(x: Tensor, sigma: Any) -> Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0]).reshape(-1, 1)
        rows = torch.cat([x.reshape(x.shape[0], n).to(torch.float64), s], dim=1)
        return net(rows).reshape(x.shape).to(x.dtype)

    return u


def control_model(name: str, train_images: Tensor, *, gain: float = 1.5, width: int = 256, gmm_std: float = 0.3,
                  seed: int = 0) -> FieldModel:
    """The control ``name`` (one of :data:`CONTROLS`) at the shape of ``train_images`` ``(M, C, R, R)``."""
    from largemodel.diagnose.exact_inversion import velocity_from_field
    from simulate import GaussianMixture

    shape = tuple(int(v) for v in train_images.shape[1:])
    n = int(math.prod(shape))
    if name == CONTROLS[0]:
        u = _linear(n, gain, seed)
    elif name == CONTROLS[1]:
        u = _untrained(n, width, seed)
    elif name == CONTROLS[2]:
        means = train_images.reshape(train_images.shape[0], n).to(torch.float64)
        weights = torch.full((means.shape[0],), 1.0 / means.shape[0], dtype=torch.float64)
        u = velocity_from_field(GaussianMixture(means, gmm_std, weights), shape)
    else:
        raise ValueError(f"control must be one of {CONTROLS}, got {name!r}")
    return FieldModel(u, shape, shape[-1])  # type: ignore[arg-type]


def control_folder(root: Path, name: str) -> Path:
    """``root / "explain-control-<name with dashes>"``."""
    return Path(root) / ("explain-control-" + name.replace(" ", "-"))
