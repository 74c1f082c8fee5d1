r"""The report's "Checked identities" section: consistency checks kept apart from findings (issue 25).

A quantity that holds by construction (a sample-wise implication, two estimators of one quantity, shares
that sum to 1, the differentiability slope of ``G_N``) cannot come out otherwise on correct code: checking
it finds bugs, it does not verify a claim of the paper. Each :class:`Identity` row says what was checked,
on what, the largest deviation and whether it is within its tolerance; no row is called a verified claim.

Sources (one function per experiment, :data:`EXTRACTORS`, reading the experiment's ``result.json`` numbers):

* ``thm41`` -- Lemma D.2's sample-wise implication (``Lambda > tau`` wherever ``p_g(x)`` is small and
  ``||F(x)||^2 < c``, docs/theory.md §6.2): violations over every sample and case; hence Theorem 4.1's
  ``P_inst >= 1 - p1 - p2`` at every case (it follows sample by sample); ``log Lambda`` by the density
  ratio and by the divergence integral (Lemma D.1, §6.1) on the same samples.
* ``thm43`` -- the same Lemma D.2 / Theorem 4.1 check on every Theorem 4.3 unit.
* ``lemma-d1`` -- ``log Lambda`` three ways (density ratio, divergence integral, slogdet), §6.1.

Other rooms add rows through the hook :func:`rows_from` (a result's ``numbers["identities"]``, a list of
``{name, checked, value, holds}``): the explain experiment (shares that sum to 1, differentiability of
``G_N``) provides its own there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from reports.cells import table_cell

__all__ = ["Identity", "EXTRACTORS", "identities_of", "rows_from", "identities_markdown"]


@dataclass(frozen=True)
class Identity:
    """One checked identity: its name (with the docs/theory.md section), what was checked on what, the
    measured deviation as text, and whether it is within tolerance."""

    name: str
    checked: str
    value: str
    holds: bool | None  # None: a measured consistency number with no tolerance set

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _thm41(numbers: dict[str, Any]) -> list[Identity]:
    cases = numbers["cases"]
    units = numbers["units"]
    diff = max(u["max_abs_diff_log_Lambda"] for u in units)
    samples = sum(u["samples"] for u in units)
    t41 = sum(1 for c in cases if c["holds"] and c["divergence"]["holds"])
    return [
        Identity("Lemma D.2, sample by sample (docs/theory.md §6.2)",
                 f"{samples} samples x {len(cases) // max(1, len(units))} (tau, c) cases of the thm41 experiment, both "
                 "log Lambda estimates", f"{numbers['violations_total']} violations", numbers["violations_total"] == 0),
        Identity("Theorem 4.1 as a consequence of Lemma D.2 (§6.3)",
                 f"P_inst >= 1 - p1 - p2 on the same samples ({len(cases)} cases)", f"holds in {t41}/{len(cases)} cases",
                 t41 == len(cases)),
        Identity("log Lambda two ways: density ratio vs divergence integral (Lemma D.1, §6.1)",
                 f"thm41 samples ({len(units)} (field, n) units)",
                 f"max |difference| {diff:.1e} (tol {numbers['tol_log_Lambda']:.0e})", diff <= numbers["tol_log_Lambda"]),
    ]


def _thm43(numbers: dict[str, Any]) -> list[Identity]:
    checks = numbers["theorem41_checks"]
    units = numbers["units"]
    return [Identity("Lemma D.2 / Theorem 4.1, sample by sample (§6.2, §6.3)",
                     f"every Theorem 4.3 unit ({len(units)} (cell, n) units, {sum(u['points'] for u in units)} inverted points)",
                     f"{checks['failures']} failures", checks["failures"] == 0)]


def _lemma_d1(numbers: dict[str, Any]) -> list[Identity]:
    by_pair = numbers["max_diff_by_pair"]
    worst = max(by_pair.values()) if by_pair else float("nan")
    return [Identity("log Lambda three ways: density ratio, divergence integral, slogdet (Lemma D.1, §6.1)",
                     f"{len(numbers['units'])} (field, n) units of the lemma_d1 experiment",
                     f"max |difference| {worst:.1e} (tol {numbers['tol']:.0e})", bool(worst <= numbers["tol"]))]


#: experiment name -> the identities read from its result numbers
EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Identity]]] = {"thm41": _thm41, "thm43": _thm43, "lemma-d1": _lemma_d1}


def rows_from(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    """The hook for other rooms: a result's own ``numbers["identities"]``, each ``{name, checked, value,
    holds}`` or, for a consistency number with no tolerance (the explain experiment's), ``{name, value,
    note}`` (``note`` says what it checks; ``holds`` is then ``None``)."""
    rows = []
    for r in numbers.get("identities", []):
        value = r["value"]
        text = f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        holds = r.get("holds")
        rows.append(Identity(str(r["name"]), str(r.get("checked", r.get("note", ""))), text,
                             None if holds is None else bool(holds)).as_dict())
    return rows


def identities_of(name: str, numbers: dict[str, Any]) -> list[dict[str, Any]]:
    """The identities experiment ``name`` checked (its extractor's rows and its own ``identities``)."""
    rows = [i.as_dict() for i in EXTRACTORS[name](numbers)] if name in EXTRACTORS else []
    return rows + rows_from(numbers)


def identities_markdown(rows: list[dict[str, Any]]) -> str:
    """The "Checked identities" section (empty string when there is none)."""
    if not rows:
        return ""
    lines = ["## Checked identities", "",
             "Consistency checks: each holds by construction on correct code (a sample-wise implication, two "
             "estimators of one quantity, shares that sum to 1), so it finds bugs but verifies no claim of the paper.",
             "", "| identity | checked on | deviation | within tolerance |", "|---|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "no tolerance (a measured number)"}
    lines += [f"| {table_cell(r['name'])} | {table_cell(r['checked'])} | {table_cell(r['value'])} | {verdict[r['holds']]} |"
              for r in rows]
    return "\n".join(lines) + "\n"
