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


def start_quick_report(config: pytest.Config) -> dict:
    """Start the README's main job, ``pfode report --quick`` with every suite, as a user runs it: a subprocess
    in a fresh folder with an empty ``PFODE_CACHE`` (so the large-model suite must use the models shipped with
    the package). Returns ``{"proc", "out", "cache"}``; the folder is removed and a still-running report
    stopped when the session ends."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="pfode-quick-report-"))
    out, cache = root / "run", root / "cache"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PFODE_CACHE": str(cache), "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # its output goes to files (a pipe nobody reads while the other tests run could fill and stall it)
    with open(root / "stdout.txt", "w") as stdout, open(root / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "reports.cli", "report", "--quick", "--out", str(out)],
                                cwd=root, env=env, stdout=stdout, stderr=stderr, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)

    config.add_cleanup(stop)
    return {"proc": proc, "out": out, "cache": cache, "stdout": root / "stdout.txt", "stderr": root / "stderr.txt"}


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: start the report only for tests that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the ``quick_report`` fixture's report (tests/reports/conftest.py), started now to run while the other tests do
    config.pfode_start_quick_report = start_quick_report
    if any("quick_report" in getattr(item, "fixturenames", ()) for item in items):
        config.pfode_quick_report = start_quick_report(config)
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
