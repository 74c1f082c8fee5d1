"""One claim registry, one Verdict, one Status (issue 18).

The registry (``reports.claims.CLAIMS``) names for every claim the one function that decides it;
every experiment's ``CLAIM_IDS`` are registry ids; statuses parse into a ``StatusKind`` and write
back exactly the text the results files always held.
"""

from __future__ import annotations

import copy
import importlib
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports.claims import CLAIM_IDS, CLAIMS, ClaimRow, claim, not_run
from simulate.verdict import Status, StatusKind, Verdict

#: every status text the code produces today (experiments, theory suite, report rows)
KNOWN = {
    "verified": (StatusKind.VERIFIED, ""),
    "verified (given the density-ratio constant K stays bounded)":
        (StatusKind.VERIFIED, "(given the density-ratio constant K stays bounded)"),
    "verified (bound-level, default parameters)": (StatusKind.VERIFIED, "(bound-level, default parameters)"),
    "holds in regime: sigma 0.1, 0.3": (StatusKind.HOLDS_IN_REGIME, "sigma 0.1, 0.3"),
    "holds in regime n <= 8 (to tol 1e-06; larger n exceed it)":
        (StatusKind.HOLDS_IN_REGIME, "n <= 8 (to tol 1e-06; larger n exceed it)"),
    "holds in regime m <= 4 (the distance decreases up to there, then stops decreasing)":
        (StatusKind.HOLDS_IN_REGIME, "m <= 4 (the distance decreases up to there, then stops decreasing)"),
    "holds in regime (see p1 row)": (StatusKind.HOLDS_IN_REGIME, "(see p1 row)"),
    "refuted": (StatusKind.REFUTED, ""),
    "inconclusive: the interval contains 0": (StatusKind.INCONCLUSIVE, "the interval contains 0"),
    "not run: the simulate suite was not selected": (StatusKind.NOT_RUN, "the simulate suite was not selected"),
    "supplement": (StatusKind.SUPPLEMENT, ""),
}


# ---- the registry ---------------------------------------------------------------------------
def _experiment_claims() -> dict[str, list[str]]:
    """experiment module name -> its CLAIM_IDS"""
    from simulate.experiments import EXPERIMENTS, load

    return {load(name).__name__.rsplit(".", 2)[1]: list(load(name).CLAIM_IDS) for name in EXPERIMENTS}


def test_registry_ids_are_unique_and_sections_cited() -> None:
    assert len(set(CLAIM_IDS)) == len(CLAIMS) == 13
    for c in CLAIMS:
        assert c.text and c.paper_section and c.theory_section.startswith("docs/theory.md §"), c


@pytest.mark.parametrize("c", CLAIMS, ids=CLAIM_IDS)
def test_decided_by_is_a_function_defined_where_it_says(c) -> None:
    module, _, name = c.decided_by.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    assert callable(fn) and fn is c.decider()
    assert fn.__module__ == module, f"{c.decided_by} is re-exported from {fn.__module__}: register where it is defined"
    assert c.suite in ("simulate", "largemodel")


def test_every_claim_is_decided_in_exactly_one_place() -> None:
    by_module = _experiment_claims()
    owners: dict[str, list[str]] = {cid: [] for cid in CLAIM_IDS}
    for module, ids in by_module.items():
        for cid in ids:
            assert cid in owners, f"experiment {module} checks {cid!r}, which is not in reports.claims.CLAIMS"
            owners[cid].append(module)
    for c in CLAIMS:
        if c.suite == "simulate":
            assert len(owners[c.id]) == 1, (c.id, owners[c.id])
            (module,) = owners[c.id]
            where = c.decided_by.rpartition(".")[0]
            assert where.startswith(f"simulate.experiments.{module}."), \
                f"{c.id}: decided by {c.decided_by}, but experiment {module} lists it"
        else:  # decided by a large-model experiment: no simulator experiment claims it, its own module does
            assert owners[c.id] == [], (c.id, owners[c.id])
            where = c.decided_by.rpartition(".")[0]
            assert where.startswith("largemodel.experiments."), c.decided_by
            module = importlib.import_module(where.rpartition(".")[0] + ".experiment")
            assert c.id in module.CLAIM_IDS, (c.id, module.__name__)


def test_claim_lookup_names_the_ids() -> None:
    assert claim("thm41").paper_section == "Section 4.1"
    with pytest.raises(ValueError, match="unknown claim 'thm99'.*prop21"):
        claim("thm99")
    with pytest.raises(ValueError, match="unknown claim"):
        ClaimRow.of("thm99", "verified", "-", "x")


# ---- Status ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", sorted(KNOWN))
def test_known_statuses_parse_and_round_trip(text: str) -> None:
    s = Status.parse(text)
    assert (s.kind, s.detail) == KNOWN[text]
    assert s == text and str(s) == text and type(str(s)) is str
    assert json.dumps({"status": s}) == json.dumps({"status": text})
    assert Status.of(s.kind, s.detail, ": " if text[len(s.kind.value):].startswith(":") else " ") == text


@given(st.sampled_from(list(StatusKind)), st.text(min_size=1), st.sampled_from([": ", " "]))
def test_status_of_parse_round_trip(kind: StatusKind, detail: str, sep: str) -> None:
    s = Status.of(kind, detail, sep)
    back = Status.parse(str(s))
    assert (back.kind, back.detail, str(back)) == (kind, detail, str(s))


@pytest.mark.parametrize("bad", ["", "maybe", "Verified", "verifiedx", "holds in regime:", "not run:", "refuted:x", "inconclusive "])
def test_unknown_status_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="status must be verified / holds in regime"):
        Status(bad)
    with pytest.raises(ValueError):
        Verdict(bad, "1", "e")


def test_status_survives_copy_pickle_and_asdict() -> None:
    from simulate.experiments.common import ExperimentResult

    s = Status("holds in regime: sigma 1")
    for other in (copy.copy(s), copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert type(other) is Status and other == s and other.kind is StatusKind.HOLDS_IN_REGIME
    v = Verdict("refuted", "k", "e")
    assert type(v.status) is Status and v.kind is StatusKind.REFUTED
    res = ExperimentResult("x", ["thm41"], v, {}, {}, claim_verdicts={"thm41": Verdict(s, "k", "e")})
    text = json.dumps(res.as_dict())
    assert '"status": "refuted"' in text and '"status": "holds in regime: sigma 1"' in text


def test_experiments_use_the_one_verdict() -> None:
    import simulate.experiments as exps
    from simulate.experiments import common

    assert common.Verdict is exps.Verdict is Verdict


# ---- report rows ----------------------------------------------------------------------------
def test_claim_row_json_keys_and_inverse() -> None:
    row = ClaimRow.of("thm31", "verified", "k", "ev", section="Theorem 3.1", figures=["a.png"])
    d = row.as_dict()
    assert list(d) == ["claim_id", "status", "key_number", "evidence", "section", "figures", "data", "controls"]
    assert d == {"claim_id": "thm31", "status": "verified", "key_number": "k", "evidence": "ev",
                 "section": "Theorem 3.1", "figures": ["a.png"], "data": {}, "controls": []}
    assert type(d["status"]) is str
    assert ClaimRow.from_dict(json.loads(json.dumps(d))).as_dict() == d
    nr = not_run("fig4c", "the largemodel suite was not selected").as_dict()
    assert nr["status"] == "not run: the largemodel suite was not selected" and nr["key_number"] == "-"


def test_markdown_names_where_each_claim_is_decided() -> None:
    from reports.report import render_markdown, table_cell

    rows = {c.id: not_run(c.id, "test") for c in CLAIMS}
    meta = {"run": "r", "mode": "quick", "suites": ["theory"], "seconds": 1.0, "machine": "m"}
    md = render_markdown(rows, meta)
    for c in CLAIMS:
        assert f"| {table_cell(c.text)} | not run | - | test |" in md
        assert f"Decided by `{c.decided_by}` (mathematics: {c.theory_section})." in md


def test_fig4c_judge_statuses() -> None:
    from largemodel.experiments.fig4c.judge import judge_fig4c

    def corr(lo: float, hi: float) -> dict:
        return {"spearman_rho": (lo + hi) / 2, "spearman_ci": [lo, hi], "n": 40, "spearman_p": 0.01,
                "pearson_r": 0.5, "pearson_ci": [0.2, 0.7]}

    stand_in = judge_fig4c(corr(0.2, 0.8), "digits", True)
    assert stand_in.status == "holds in regime: small flow models trained here (SD3.5/FLUX not run)"
    assert stand_in.key_number == "Spearman 0.50 [0.20, 0.80], n = 40 (digits)"
    assert "standing in for SD3.5 / FLUX" in stand_in.evidence
    assert judge_fig4c(corr(0.2, 0.8), "mine", False).status == "verified"
    assert judge_fig4c(corr(-0.8, -0.2), "mine", False).status == "refuted"
    assert judge_fig4c(corr(-0.2, 0.3), "mine", True).status == "inconclusive: the interval contains 0"


def test_merge_replaces_bound_level_rows_and_adds_supplements() -> None:
    """The rows the old ``reports.claims.Verdict`` code produced (expected dicts recorded from it)."""
    from reports.claims import SUPPLEMENT
    from reports.report import _merge

    rows: dict[str, ClaimRow] = {}
    origins: dict[str, str] = {}
    _merge(rows, ClaimRow.of("thm31", "verified", "k0", "bound.", section="Theorem 3.1", figures=["t.png"]), "theory", origins)
    _merge(rows, ClaimRow.of("thm31", "refuted", "k1", "measured.", figures=["s.png"]), "simulate", origins)
    _merge(rows, ClaimRow.of("thm31", SUPPLEMENT, "k2", "large.", figures=["l.png", "s.png"]), "largemodel", origins)
    _merge(rows, ClaimRow.of("lemma_d1", SUPPLEMENT, "k3", "large.", figures=["l.png"]), "largemodel", origins)
    assert {k: v.as_dict() for k, v in rows.items()} == {
        "thm31": {"claim_id": "thm31", "status": "refuted", "key_number": "k1",
                  "evidence": "measured. The theory suite's verdict before it: verified; bound. Large-model suite: large.",
                  "section": "", "figures": ["s.png", "t.png", "l.png"], "data": {}, "controls": []},
        "lemma_d1": {"claim_id": "lemma_d1",
                     "status": "not run: the simulate suite was not selected (run with --suites theory,simulate,largemodel)",
                     "key_number": "k3", "evidence": "Large-model suite: large.", "section": "", "figures": ["l.png"],
                     "data": {}, "controls": []},
    }
