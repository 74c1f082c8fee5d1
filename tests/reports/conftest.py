"""Session fixtures of the report tests: each report runs once per test session, and every test that
only reads its output shares it (CI runs the quick report once, not once per test).

* ``theory_report``: ``pfode report --quick --suites theory`` (seconds).
* ``quick_report``: the README's main job, ``pfode report --quick`` with every suite, run as a user
  runs it (a subprocess; an empty ``PFODE_CACHE``, so the large-model suite must use the models
  shipped with the package); its exit status, stdout and stderr are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ReportRun:
    """One ``pfode report`` run: its output folder, model cache and what it printed."""

    out: Path
    cache: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def theory_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of ``pfode report --quick --suites theory`` (shared: do not write into it)."""
    from reports.cli import main

    out = tmp_path_factory.mktemp("theory_report") / "run"
    assert main(["report", "--quick", "--suites", "theory", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def quick_report(request: pytest.FixtureRequest) -> ReportRun:
    """The default report (all suites, quick) in a fresh folder with an empty model cache: started when
    the tests were collected (tests/conftest.py ``start_quick_report``), so it ran alongside the other
    tests; here it is waited for."""
    config = request.config
    job = getattr(config, "pfode_quick_report", None) or config.pfode_start_quick_report(config)
    returncode = job["proc"].wait(timeout=3600)
    return ReportRun(job["out"], job["cache"], returncode, job["stdout"].read_text(), job["stderr"].read_text())
