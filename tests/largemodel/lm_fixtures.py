"""Shared fixtures of the large-model tests: one tiny SD3.5 folder (random weights, with a VAE)
per test module, its loaded model, and seeded random images as study items.

Use: ``from lm_fixtures import model, random_items, tiny  # noqa: F401`` (fixtures are found by name).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from largemodel.models.load import load_model
from largemodel.study.runner import ImageItem
from largemodel.models.tiny import build_tiny_folder

__all__ = ["tiny", "model", "random_items"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD3.5 folder with a VAE, built from configs (random weights)."""
    return build_tiny_folder(tmp_path_factory.mktemp("m") / "sd35", "sd3.5", with_vae=True)


@pytest.fixture(scope="module")
def model(tiny: Path):
    """The tiny folder loaded on the CPU in float32."""
    return load_model(tiny, device="cpu", dtype="float32")


def random_items(names: int | list[str], seed: int = 0) -> list[ImageItem]:
    """Study items of uniform random 16 x 16 RGB images in [-1, 1]; ``names`` or ``img00.png``...."""
    if isinstance(names, int):
        names = [f"img{i:02d}.png" for i in range(names)]
    g = torch.Generator().manual_seed(seed)
    imgs = [torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in names]
    return [ImageItem(n, (lambda i=i: imgs[i])) for i, n in enumerate(names)]
