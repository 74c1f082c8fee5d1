"""The README's example of a user's test (the block after ``<!-- testing-example -->``) runs and passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- testing-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block after <!-- testing-example -->"
    return match.group(1)


def test_readme_example_is_short() -> None:
    lines = [ln for ln in _example().splitlines() if ln.strip()]
    assert len(lines) <= 12 and any(ln.startswith("def test_") for ln in lines)


def test_readme_testing_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_example=_example())
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)

