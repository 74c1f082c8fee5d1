"""Shared pytest configuration: ``--runslow`` enables tests marked ``slow``; ``gpu`` tests skip without CUDA."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# Hypothesis profiles: ``default`` (hypothesis' own settings, as before; tests that fix
# ``max_examples`` keep it) and ``deep`` (tests/simulate/test_deep_profile.py draws DEEP_EXAMPLES per test, 5 tests:
# >= 10,000 draws in all over the theory bounds and the fields). Select with
# ``PFODE_HYPOTHESIS=deep`` or ``--hypothesis-profile deep``.
try:
    from hypothesis import HealthCheck, settings

    DEEP_EXAMPLES = 2500
    settings.register_profile(
        "deep", max_examples=DEEP_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    if os.environ.get("PFODE_HYPOTHESIS"):  # unset: hypothesis' own choice (its default, or its CI profile)
        settings.load_profile(os.environ["PFODE_HYPOTHESIS"])
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture
def single_thread():
    """One intra-op thread: tiny networks gain nothing from threads and lose much when the
    machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
