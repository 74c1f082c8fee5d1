"""report.md and the README read right on GitHub: every table row has as many cells as its header
when a GitHub-flavoured renderer (cmarkgfm) parses it, every figure of a run is linked exactly once,
and the figures are large enough to read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reports.claims import CLAIMS, ClaimRow
from reports.report import TABLE_LEGEND, render_markdown, table_cell

cmarkgfm = pytest.importorskip("cmarkgfm")

README = Path(__file__).resolve().parents[2] / "README.md"


def gfm_cells(row: str) -> int:
    """How many cells GitHub's table parser finds in one table row: the one k for which the row,
    as a header over a delimiter row of k columns, renders as a table (GFM renders a table only
    when the header and delimiter rows have as many cells; later rows are padded or cut silently,
    so counting the rendered cells of a body row would prove nothing)."""
    for k in range(1, 64):
        html = cmarkgfm.github_flavored_markdown_to_html(row + "\n" + "|---" * k + "|\n")
        if "<table>" in html:
            return k
    raise AssertionError(f"not a table row: {row!r}")


def tables(markdown: str) -> list[list[str]]:
    """The pipe tables of ``markdown`` (outside code fences), each as its list of source rows
    without the delimiter row."""
    found: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in markdown.splitlines() + [""]:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            current.append(line)
            continue
        if current:
            found.append([r for r in current if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", r)])
            current = []
    return found


def misrendered_rows(markdown: str) -> list[str]:
    """The table rows whose cell count under GFM differs from their header's."""
    bad = []
    for table in tables(markdown):
        header = gfm_cells(table[0])
        bad += [row for row in table[1:] if gfm_cells(row) != header]
    return bad


def test_the_cell_counter_sees_unescaped_pipes() -> None:
    """Negative control: the check fails on the table the report used to write."""
    md = "| claim | status |\n|---|---|\n| max mu >= ||J_f||_2 | verified |\n| `|x|` | ok |\n"
    assert misrendered_rows(md) == ["| max mu >= ||J_f||_2 | verified |", "| `|x|` | ok |"]
    fixed = "| claim | status |\n|---|---|\n" + f"| {table_cell('max mu >= ||J_f||_2')} | verified |\n"
    assert misrendered_rows(fixed) == []


def test_table_cell_round_trips_through_gfm() -> None:
    text = "||x^ - x|| <= kappa; `|det J_G(z)|`"
    html = cmarkgfm.github_flavored_markdown_to_html(f"| a | b |\n|---|---|\n| {table_cell(text)} | 1 |\n")
    assert "||x^ - x||" in html and "<code>|det J_G(z)|</code>" in html


def _rows() -> dict[str, ClaimRow]:
    """One row per claim, with pipes in every cell and figures shared between rows."""
    rows = {}
    for i, c in enumerate(CLAIMS):
        status = "holds in regime: sigma <= 0.1 | `|g/s| = 8`" if i % 2 else "verified"
        figures = ["simulate/thm43/a.png", f"simulate/{c.id}.png"] if c.id.startswith("thm43") else [f"{c.id}.png"]
        rows[c.id] = ClaimRow.of(c.id, status, f"||J|| = {i} [0.1, 0.2]", f"evidence {i}", figures=figures)
    return rows


META = {"run": "reports/runs/quick", "mode": "quick", "suites": ["theory", "simulate"], "seconds": 0.4,
        "compute_seconds": 123.4, "cached_suites": ["theory", "simulate"], "machine": "m"}


def test_report_tables_render_and_figures_are_linked_once() -> None:
    rows = _rows()
    section = "## Why images reconstruct badly\n\n| a | b |\n|---|---|\n| `\\|x\\|` \\| y | 2 |\n\n![e](largemodel/e.png)"
    figures = sorted({f for r in rows.values() for f in r.figures} | {"largemodel/e.png", "largemodel/extra.png"})
    rows["fig4c"].figures.append("largemodel/e.png")
    md = render_markdown(rows, META, [section], figures)
    assert misrendered_rows(md) == []
    assert len(tables(md)[0]) == 1 + len(CLAIMS)
    links = re.findall(r"\]\(([^)\s]+\.png)\)", md)
    assert sorted(links) == figures, "every figure of the run linked exactly once"
    assert TABLE_LEGEND in md
    # the header states the cached suites' computing time, not this invocation's 0.4 s alone
    assert "123.4 s of computing" in md and "`quick` (quick)" not in md


def test_readme_tables_render() -> None:
    assert misrendered_rows(README.read_text()) == []


def test_cheap_report_renders_and_links_each_figure_once(tmp_path) -> None:
    """A real (theory-suite) run: tables render, each PNG it wrote is linked once and is large
    enough to read, and no lock file stays behind."""
    from PIL import Image

    from reports.cli import main

    out = tmp_path / "run"
    assert main(["report", "--quick", "--suites", "theory", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert misrendered_rows(md) == []
    assert not list(out.rglob(".lock")), "a finished run leaves no lock file"
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs, "the theory suite draws figures"
    assert sorted(re.findall(r"\]\(([^)\s]+\.png)\)", md)) == pngs
    for png in pngs:
        with Image.open(out / png) as im:
            width, height = im.size
        assert width >= 600 and height >= 300, (png, im.size)
