"""The fixtures of the opt-in ``pfode`` pytest plugin (:mod:`largemodel.pytest_plugin`), as
module-level functions: the plugin registers this module when switched on (pytest 9 deprecates
fixtures defined as methods of a plugin object, ``PytestRemovedIn10Warning``).

Session-scoped and deterministic; each imports what it needs when first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["pfode_gmm_2d", "pfode_box_8d", "pfode_tiny_folder"]


@pytest.fixture(scope="session")
def pfode_gmm_2d() -> Any:
    """The 2-D mixture of three Gaussians (means (-2, 0), (2, 0), (0, 2.5), std 0.3)."""
    from simulate.experiments.lemma_d1.experiment import paper_gmm_2d

    return paper_gmm_2d()


@pytest.fixture(scope="session")
def pfode_box_8d() -> Any:
    """Four separated boxes of side 0.1 in ``[0, 1]^8``, kernel ``sigma = 0.05``, equal weights."""
    import torch

    from simulate import BoxMixture

    m, n, side = 4, 8, 0.1
    gen = torch.Generator().manual_seed(8)
    lower = torch.rand(m, n, generator=gen, dtype=torch.float64) * (1.0 - side)
    # separate along the first axis: box i in the slot [i/m, (i+1)/m], centred
    lower[:, 0] = torch.arange(m, dtype=torch.float64) / m + (1.0 / m - side) / 2
    return BoxMixture(lower, lower + side, torch.full((m,), 1.0 / m, dtype=torch.float64), 0.05)


@pytest.fixture(scope="session")
def pfode_tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD3 diffusers folder (transformer + scheduler, no VAE), built once per session."""
    from largemodel.models.tiny import build_tiny_folder

    return build_tiny_folder(tmp_path_factory.mktemp("pfode_tiny") / "sd3", "sd3", with_vae=False)
