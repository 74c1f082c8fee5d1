"""The "Checked identities" section (reports.identities): rows from the experiments' numbers, the hook, rendering."""

from __future__ import annotations

from reports import controls
from reports.identities import identities_markdown, identities_of, rows_from
from simulate.experiments.thm41 import experiment as thm41
from simulate.experiments.thm41.judge import judge


def _rows(shift: float) -> list[dict]:
    numbers = judge(thm41.make_options(), [controls.planted_thm41_record(shift)]).numbers
    return identities_of("thm41", numbers)


def test_lemma_d2_identity_holds_on_exact_samples_and_not_on_broken_ones() -> None:
    good, bad = _rows(0.0), _rows(-1.0)
    assert [r["holds"] for r in good] == [True, True, True]
    assert good[0]["value"] == "0 violations"
    assert bad[0]["holds"] is False and bad[0]["value"] != "0 violations"
    md = identities_markdown(good + bad)
    assert md.startswith("## Checked identities") and "| **no** |" in md
    assert "verified" not in md  # no identity is called a verified claim


def test_hook_rows_and_empty_section() -> None:
    rows = rows_from({"identities": [{"name": "shares sum to 1", "checked": "32 images", "value": "max |1 - sum| 1e-16",
                                      "holds": True}]})
    assert rows == [{"name": "shares sum to 1", "checked": "32 images", "value": "max |1 - sum| 1e-16", "holds": True}]
    assert identities_of("fig3", {}) == [] and identities_markdown([]) == ""


def test_explain_style_identities_are_listed_without_a_tolerance() -> None:
    from reports.identities import identities_markdown, rows_from

    rows = rows_from({"identities": [{"name": "explain: shares sum to 1", "value": 1.0, "note": "by definition | sum"},
                                     {"name": "x", "checked": "y", "value": "0 violations", "holds": False}]})
    assert rows[0] == {"name": "explain: shares sum to 1", "checked": "by definition | sum", "value": "1",
                       "holds": None}
    text = identities_markdown(rows)
    assert "no tolerance" in text and "**no**" in text and "by definition \\| sum" in text
