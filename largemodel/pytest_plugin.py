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

Use them with :mod:`simulate.testing` (``assert_theorem31(pfode_gmm_2d, x, steps=50)``). The
fixtures are module-level functions in :mod:`largemodel.pytest_fixtures`, registered as a plugin
only when switched on, so ``pytest -W error`` runs them without pytest's deprecation of fixtures on
plugin objects. Needs ``pytest`` and ``hypothesis``: ``pip install -e ".[testing]"``.
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_addoption", "pytest_configure"]

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
            from largemodel import pytest_fixtures

            config.pluginmanager.register(pytest_fixtures, "pfode-fixtures")
