"""The paper's claims the report gives a verdict on, in the order of its verdict table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CLAIMS", "Verdict", "not_run"]

#: (id, claim as the paper states it, where it is in the paper)
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("prop21", "Prop. 2.1: mu_f(x, s u) -> lambda_f(x, u) and max mu >= ||J_f||_2 - eps", "Section 2.2"),
    ("thm31", "Thm. 3.1: reconstruction error <= kappa (hM/2L)(e^L - 1) <= (hM/2L) e^L (e^L - 1)", "Section 3.2"),
    ("lemma_d1", "Lemma D.1: |det J_G(z)| = phi(z) / p_g(G(z)) (= exp of the divergence integral)", "Appendix D"),
    ("thm41", "Thm. 4.1: P_inst(tau) >= 1 - p1(tau, c) - p2(c)", "Section 4.1"),
    ("thm42", "Thm. 4.2: mixtures of Gaussian neighbours are dense", "Section 4.2"),
    ("thm43_p1", "Thm. 4.3: p1 -> 0 as n -> inf (c_n = (1 + eps) n)", "Section 4.3"),
    ("thm43_p2", "Thm. 4.3: p2 -> 0 as n -> inf", "Section 4.3"),
    ("thm43_pinst", "Thm. 4.3: P_inst -> 1 as n -> inf", "Section 4.3"),
    ("fig3", "Fig. 3: the 2-D generation map expands a region along the x-axis (lambda > 1)", "Section 3.1"),
    ("fig4b", "Fig. 4(b): reconstruction error correlates with the instability coefficient (2-D)", "Section 3.2"),
    ("fig4c", "Fig. 4(c) / A1: the same correlation on SD3.5 / FLUX", "Section 3.2, App. B"),
)


@dataclass
class Verdict:
    """One row of the verdict table."""

    claim_id: str
    status: str  # "verified", "holds in regime ...", "refuted", "not run: why"
    key_number: str
    evidence: str
    section: str = ""
    figures: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_run(claim_id: str, why: str) -> Verdict:
    """A row for a claim no suite of this run measured."""
    return Verdict(claim_id=claim_id, status=f"not run: {why}", key_number="-", evidence=why)
