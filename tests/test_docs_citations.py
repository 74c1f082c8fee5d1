"""The mathematics the code cites is in the repository: every ``docs/theory.md §X.Y`` cited in a
docstring or comment names a numbered heading of docs/theory.md, and nothing cites the
original specification (docs/theory.md), which is not part of the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "simulate", "largemodel", "reports", "tests", "benchmarks")
#: "docs/theory.md §8.3", "docs/theory.md §1-§4, §6.1", "docs/theory.md §8.2, §8.4"
CITATION = re.compile(r"docs/theory\.md(?:``)? (§[0-9][0-9.]*(?:(?:, |-| and )§[0-9][0-9.]*)*)")


def _python_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def _headings() -> set[str]:
    text = (ROOT / "docs" / "theory.md").read_text()
    return set(re.findall(r"^#+ (§[0-9][0-9.]*) ", text, flags=re.MULTILINE))


def test_every_cited_section_exists() -> None:
    headings = _headings()
    assert {"§1", "§2.5", "§6.1", "§8.3", "§11.5"} <= headings
    missing = []
    cited = 0
    for path in _python_files():
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            for group in CITATION.findall(line):
                for section in re.findall(r"§[0-9][0-9.]*", group):
                    cited += 1
                    if section.rstrip(".") not in headings:
                        missing.append(f"{path.relative_to(ROOT)}:{line_no}: {section}")
    assert cited > 50, cited
    assert not missing, "cited sections absent from docs/theory.md:\n" + "\n".join(missing)


def test_no_citation_of_the_original_specification() -> None:
    this = Path(__file__).resolve()
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _python_files() if p.resolve() != this
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"(?<![/\w])THEORY\.md", line)
    ]
    assert not offenders, "cite docs/theory.md, not THEORY.md: " + ", ".join(offenders)
