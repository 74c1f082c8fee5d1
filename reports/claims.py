"""The registry of the paper's claims the report gives a verdict on, in the order of its table.

Each :class:`Claim` names where the paper states it, where docs/theory.md states its mathematics,
and ``decided_by``: the dotted path of the one function whose result decides its verdict (an
experiment of ``simulate.experiments``, run by the simulator suite, or of ``largemodel.experiments``,
run by the large-model suite). The theory suite gives bound-level verdicts on some claims first; a measured verdict
replaces them (``reports.report``). The report's rows are :class:`ClaimRow`: a claim, its
:class:`~simulate.verdict.Verdict` and the figures and data behind it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from simulate.verdict import Status, StatusKind, Verdict

__all__ = ["Claim", "CLAIMS", "CLAIM_IDS", "ClaimRow", "SUPPLEMENT", "claim", "not_run"]

#: status of a row that adds evidence to a claim another suite decides (not a verdict)
SUPPLEMENT = Status.of(StatusKind.SUPPLEMENT)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Attributes:
        id: short name (``results.json``'s ``claim_id``).
        text: the claim as the paper states it (the report's table row).
        paper_section: where the paper states it.
        theory_section: where docs/theory.md states its mathematics.
        decided_by: dotted path ``package.module.function`` of the function that decides the verdict.
        controls: the names of its negative controls in :mod:`reports.controls` (inputs where the claim is
            known false, run through the same judge, which must say "fails"; issue 25).
    """

    id: str
    text: str
    paper_section: str
    theory_section: str
    decided_by: str
    controls: tuple[str, ...] = ()

    @property
    def suite(self) -> str:
        """The report suite whose run decides the claim (``simulate`` or ``largemodel``)."""
        if self.decided_by.startswith("simulate."):
            return "simulate"
        if self.decided_by.startswith("largemodel.experiments."):
            return "largemodel"
        raise ValueError(f"claim {self.id}: no suite runs {self.decided_by}")

    def decider(self) -> Callable[..., Any]:
        """The function ``decided_by`` names (imports its module)."""
        module, _, name = self.decided_by.rpartition(".")
        return getattr(importlib.import_module(module), name)


CLAIMS: tuple[Claim, ...] = (
    Claim("prop21", "Prop. 2.1: mu_f(x, s u) -> lambda_f(x, u) and max mu >= ||J_f||_2 - eps", "Section 2.2",
          "docs/theory.md §2.4", "simulate.experiments.prop21.judge.judge", ("prop21_not_differentiable",)),
    Claim("thm31", "Thm. 3.1: reconstruction error <= kappa (hM/2L)(e^L - 1) <= (hM/2L) e^L (e^L - 1)", "Section 3.2",
          "docs/theory.md §5.1", "simulate.experiments.thm31.judge.judge", ("thm31_planted_offset",)),
    Claim("lemma_d1", "Lemma D.1: |det J_G(z)| = phi(z) / p_g(G(z)) (= exp of the divergence integral)", "Appendix D",
          "docs/theory.md §6.1", "simulate.experiments.lemma_d1.judge.judge", ("lemma_d1_wrong_logdet",)),
    Claim("thm41", "Thm. 4.1: P_inst(tau) >= 1 - p1(tau, c) - p2(c)", "Section 4.1",
          "docs/theory.md §6.3", "simulate.experiments.thm41.judge.judge", ("thm41_wrong_log_lambda",)),
    Claim("thm42", "Thm. 4.2: mixtures of Gaussian neighbours are dense", "Section 4.2",
          "docs/theory.md §7", "simulate.experiments.thm42.judge.judge", ("thm42_outside_target",)),
    Claim("thm43_p1", "Thm. 4.3: p1 -> 0 as n -> inf (c_n = (1 + eps) n)", "Section 4.3",
          "docs/theory.md §8.2", "simulate.experiments.thm43.judge.judge", ("thm43_p1_nearly_uniform",)),
    Claim("thm43_p2", "Thm. 4.3: p2 -> 0 as n -> inf", "Section 4.3",
          "docs/theory.md §8.4", "simulate.experiments.thm43.judge.judge", ("thm43_p2_single_box",)),
    Claim("thm43_pinst", "Thm. 4.3: P_inst -> 1 as n -> inf", "Section 4.3",
          "docs/theory.md §8.5", "simulate.experiments.thm43.judge.judge", ("thm43_pinst_single_box",)),
    Claim("fig3", "Fig. 3: the 2-D generation map expands a region along the x-axis (lambda > 1)", "Section 3.1",
          "docs/theory.md §11.7", "simulate.experiments.fig3.judge.judge", ("fig3_contracting",)),
    Claim("fig4b", "Fig. 4(b): reconstruction error correlates with the instability coefficient (2-D)", "Section 3.2",
          "docs/theory.md §5.3", "simulate.experiments.fig4.judge.judge", ("fig4b_shuffled",)),
    Claim("fig4c", "Fig. 4(c) / A1: the same correlation on SD3.5 / FLUX", "Section 3.2, App. B",
          "docs/theory.md §10.4", "largemodel.experiments.fig4c.judge.judge", ("fig4c_reversed", "fig4c_shuffled")),
    Claim("learned_vs_exact", "Does a network trained on a Gaussian-neighbour mixture reproduce its instability?",
          "Sections 1, 4.2-4.3 (the paper's argument: data are mixtures of Gaussian neighbours, hence unstable models)",
          "docs/theory.md §10.8", "largemodel.experiments.learned_vs_exact.judge.judge", ("learned_wrong_sigma",)),
    Claim("guidance", "Does classifier-free guidance (W = 7 vs 1, class prompt) raise the reconstruction error?",
          "Section 3.2 (reconstruction error); issue 27: inversion with a source prompt and guidance",
          "docs/theory.md §10.9", "largemodel.experiments.guidance.judge.judge", ("guidance_null_prompt",)),
)

#: the registry's ids, in table order
CLAIM_IDS: tuple[str, ...] = tuple(c.id for c in CLAIMS)
_BY_ID: dict[str, Claim] = {c.id: c for c in CLAIMS}


def claim(claim_id: str) -> Claim:
    """The registered claim ``claim_id`` (``ValueError`` listing the ids otherwise)."""
    try:
        return _BY_ID[claim_id]
    except KeyError:
        raise ValueError(f"unknown claim {claim_id!r}; registered: {', '.join(CLAIM_IDS)}") from None


@dataclass
class ClaimRow:
    """One row of the verdict table: a registered claim, its verdict, and what backs it.

    ``section`` is the suite's own pointer (e.g. the theory suite's "Theorem 3.1"), ``figures``
    paths relative to the report folder. ``as_dict`` is the row of ``results.json``.
    """

    claim_id: str
    verdict: Verdict
    section: str = ""
    figures: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    controls: list[dict[str, str]] = field(default_factory=list)
    """the claim's negative controls, each ``{name, status, key, judge_status}`` (:mod:`reports.controls`)"""

    def __post_init__(self) -> None:
        claim(self.claim_id)

    @classmethod
    def of(cls, claim_id: str, status: str, key_number: str, evidence: str, *, section: str = "",
           figures: list[str] | None = None) -> ClaimRow:
        """A row from its verdict's parts (``status`` parsed into a :class:`~simulate.verdict.Status`)."""
        return cls(claim_id, Verdict(status, key_number, evidence), section, list(figures or []))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimRow:
        """The inverse of :meth:`as_dict` (a cached suite's rows)."""
        return cls(d["claim_id"], Verdict(d["status"], d["key_number"], d["evidence"]), d.get("section", ""),
                   list(d.get("figures", [])), dict(d.get("data", {})), [dict(c) for c in d.get("controls", [])])

    @property
    def claim(self) -> Claim:
        return claim(self.claim_id)

    @property
    def status(self) -> Status:
        return self.verdict.status

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {"claim_id": self.claim_id, "status": str(v.status), "key_number": v.key_number,
                "evidence": v.evidence, "section": self.section, "figures": list(self.figures),
                "data": dict(self.data), "controls": [dict(c) for c in self.controls]}


def not_run(claim_id: str, why: str) -> ClaimRow:
    """A row for a claim no suite of this run measured."""
    return ClaimRow.of(claim_id, Status.of(StatusKind.NOT_RUN, why), "-", why)
