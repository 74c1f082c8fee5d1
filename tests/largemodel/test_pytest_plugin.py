"""The opt-in ``pfode`` pytest plugin: a user's test runs its fixtures under ``-W error``
(pytest 9 deprecates fixtures defined on plugin objects with ``PytestRemovedIn10Warning``)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ("pytester",)

USER_TEST = """
import torch

def test_fixtures(pfode_gmm_2d, pfode_box_8d):
    x = pfode_gmm_2d.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 2) and x.dtype == torch.float64
    assert pfode_box_8d.n == 8
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess with the plugin: through its ``pytest11`` entry point where the
    package is installed, else named with ``-p``."""
    installed = any(ep.value == "largemodel.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = () if installed else ("-p", "largemodel.pytest_plugin")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *plugin, *args)


def test_user_test_with_fixtures_passes_under_W_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    _run(pytester, "-W", "error", "--pfode-fixtures").assert_outcomes(passed=1)


def test_fixtures_absent_without_the_switch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_it(pfode_gmm_2d):\n    pass\n")
    _run(pytester, "-W", "error").assert_outcomes(errors=1)  # opt-in: no fixtures unless asked


def test_control_fixtures_on_a_plugin_object_fail_under_W_error(pytester: pytest.Pytester) -> None:
    """Negative control: the old design (fixtures as methods of a registered object) errors under
    ``-W error`` on this pytest, so the test above can tell the two apart."""
    if int(pytest.__version__.split(".")[0]) < 9:
        pytest.skip("the deprecation exists from pytest 9")
    pytester.makeconftest(
        "import pytest\n"
        "class Fixtures:\n"
        "    @pytest.fixture(scope='session')\n"
        "    def old_style(self):\n"
        "        return 1\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(Fixtures(), 'old-style')\n")
    pytester.makepyfile(test_user="def test_it(old_style):\n    assert old_style == 1\n")
    result = _run(pytester, "-W", "error")
    assert result.ret != 0 and "PytestRemovedIn10Warning" in result.stdout.str() + result.stderr.str()
