"""Opt-in pytest plugin ``pfode``: fixtures for testing your code against the paper's results.

Installed as the ``pytest11`` entry point ``pfode``; it does nothing until switched on with
``pytest --pfode-fixtures`` or ``pfode_fixtures = true`` in the ``[pytest]`` ini section (or
``[tool.pytest.ini_options]``). Loading it imports only pytest (no torch, no diffusers); the
fixtures import what they need when first used. Fixtures (session-scoped, deterministic):

* ``pfode_gmm_2d`` -- the 2-D three-component Gaussian mixture of the Fig. 3/4 experiments
  (:class:`simulate.GaussianMixture`, exact velocity, score, density and divergence);
* ``pfode_box_8d`` -- an 8-D mixture of four Gaussian neighbours of separated boxes in
  ``[0, 1]^8`` (side 0.1, ``sigma = 0.05``; :class:`simulate.BoxMixture`, Assumption 4.3);
* ``pfode_tiny_folder`` -- a tiny random SD3 diffusers folder (no VAE: 3 x 8 x 8 pixel images)
  built from configs by :func:`largemodel.models.tiny.build_tiny_folder` in a session temporary
  directory; load it with :func:`largemodel.models.load.load_model`.

Use them with :mod:`simulate.testing` (``assert_theorem31(pfode_gmm_2d, x, steps=50)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["pytest_addoption", "pytest_configure", "PfodeFixtures"]

_OPTION = "--pfode-fixtures"
_INI = "pfode_fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pfode", "pfode-instability fixtures (simulate.testing)")
    group.addoption(_OPTION, action="store_true", default=False,
                    help="register the pfode fixtures (pfode_gmm_2d, pfode_box_8d, pfode_tiny_folder)")
    parser.addini(_INI, type="bool", default=False, help="register the pfode fixtures (same as --pfode-fixtures)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption(_OPTION, default=False) or config.getini(_INI):
        if not config.pluginmanager.has_plugin("pfode-fixtures"):
            config.pluginmanager.register(PfodeFixtures(), "pfode-fixtures")


class PfodeFixtures:
    """The fixtures, registered as a plugin object only when the switch is on."""

    @pytest.fixture(scope="session")
    def pfode_gmm_2d(self) -> Any:
        """The 2-D mixture of three Gaussians (means (-2, 0), (2, 0), (0, 2.5), std 0.3)."""
        from simulate.experiments.lemma_d1.experiment import paper_gmm_2d

        return paper_gmm_2d()

    @pytest.fixture(scope="session")
    def pfode_box_8d(self) -> Any:
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
    def pfode_tiny_folder(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """A tiny random SD3 diffusers folder (transformer + scheduler, no VAE), built once per session."""
        from largemodel.models.tiny import build_tiny_folder

        return build_tiny_folder(tmp_path_factory.mktemp("pfode_tiny") / "sd3", "sd3", with_vae=False)
