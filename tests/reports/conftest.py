"""Session fixtures of the report tests: each report runs once per test session, and every test that
only reads its output shares it (CI runs the quick report once, not once per test).

* ``theory_report``: ``pfode report --quick --suites theory`` (seconds).
* ``quick_report``: the README's main job, ``pfode report --quick`` with every suite, run as a user
  runs it (a subprocess; an empty ``PFODE_CACHE``, so the large-model suite must use the models
  shipped with the package); its exit status, stdout and stderr are kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    """The default report (all suites, quick) in a fresh folder with an empty model cache."""
    root = tmp_path_factory.mktemp("quick_report")
    out, cache = root / "run", root / "cache"
    env = {**os.environ, "PFODE_CACHE": str(cache), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "reports.cli", "report", "--quick", "--out", str(out)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    return ReportRun(out, cache, proc.returncode, proc.stdout, proc.stderr)
