"""The one lazy loader (``theory._lazy.lazy_package``) behind ``largemodel`` and ``reports``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from theory._lazy import lazy_package

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_importing_the_packages_loads_nothing_heavy() -> None:
    res = _run("""
        import sys, largemodel, reports
        heavy = sorted(m for m in ("torch", "diffusers", "scipy", "matplotlib") if m in sys.modules)
        print(heavy)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_names_and_submodules_load_on_first_access() -> None:
    res = _run("""
        import sys, reports, largemodel
        assert "reports.claims" not in sys.modules
        from reports import CLAIMS
        import reports.claims as claims
        assert CLAIMS is claims.CLAIMS and "CLAIMS" in vars(reports)   # cached in the package
        assert largemodel.study.__name__ == "largemodel.study"          # a listed submodule
        assert reports.report_cli.__name__ == "reports.report_cli"
        assert {"run_report", "cli_checks"} <= set(dir(reports)) and "StudyConfig" in largemodel.__all__
        for bad in ("no_such_name", "_private"):
            try:
                getattr(largemodel, bad)
            except AttributeError as e:
                assert repr(bad) in str(e)
            else:
                raise SystemExit(f"{bad} did not raise")
        print("ok")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_a_package_of_its_own(tmp_path: Path) -> None:
    """On a package built here: exported names come from their module, unknown names fail."""
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from theory._lazy import lazy_package\n"
        "__all__, __getattr__, __dir__ = lazy_package(__name__, {'VALUE': 'defs'}, ('sub',))\n")
    (pkg / "defs.py").write_text("VALUE = 42\n")
    (pkg / "sub.py").write_text("X = 1\n")
    (pkg / "other.py").write_text("Y = 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import lazypkg  # type: ignore[import-not-found]

        assert "lazypkg.defs" not in sys.modules
        assert lazypkg.VALUE == 42 and "lazypkg.defs" in sys.modules
        assert lazypkg.sub.X == 1 and lazypkg.other.Y == 2  # listed, and found on disk
        assert lazypkg.__all__ == ["VALUE", "sub"] and {"VALUE", "sub"} <= set(dir(lazypkg))
        with pytest.raises(AttributeError, match="'missing'"):
            lazypkg.missing
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "lazypkg" or m.startswith("lazypkg.")]:
            del sys.modules[name]
