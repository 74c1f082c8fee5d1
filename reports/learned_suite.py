"""Report section: learned vs exact flows on known mixtures (issue 28).

Runs :mod:`largemodel.experiments.learned_vs_exact.experiment` (small MLP velocity nets trained here on samples
of box mixtures in three regimes of the Theorem 4.3 geometry, measured against the exact fields at the same
points and noise; docs/theory.md §10.8) and renders its verdict (:mod:`largemodel.experiments.learned_vs_exact.judge`)
as the claim's table row, with its negative control, and the "Learned vs exact flows" section: per regime and
``n`` the exact and learned ``P_inst`` with their intervals, the per-point gap and Spearman of
``(1/n) log Lambda``, the learned density error, Spearman of error against ``mu_bar`` for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from reports.claims import ClaimRow

__all__ = ["FOLDER", "run_learned_section", "learned_markdown"]

#: the section's folder in the report folder
FOLDER = "largemodel/learned_vs_exact"


def _pi(d: dict[str, Any]) -> str:
    return f"{d['estimate']:.2f} [{d['lower']:.2f}, {d['upper']:.2f}]"


def _ci(d: dict[str, Any], key: str = "mean", digits: int = 2) -> str:
    lo, hi = d["ci"]
    value = d[key]
    if value is None or lo is None or hi is None or value != value:
        return "-"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def learned_markdown(numbers: dict[str, Any], row: ClaimRow, figures: list[str]) -> str:
    """The section as Markdown: one table row per regime, ``n`` and learned budget."""
    lines = [
        "## Learned vs exact flows on known mixtures",
        "",
        f"**{row.status}** ({row.verdict.key_number}). Decided per regime on `P_inst(tau = 1)` at `x ~ U[0,1]^n` "
        "(Theorem 4.3's law; docs/theory.md §10.8): the learned net *inherits* the exact instability when both "
        "Clopper-Pearson intervals lie on the same side of the level, *damps* / *exaggerates* it when they lie on "
        "opposite sides, else undetermined. Gap: per-point `ell_learned - ell_exact` of `ell = (1/n) log Lambda_G(F(x))` "
        "(mean, 95% bootstrap); density error: `(log p_theta(x) - log p_g(x)) / n` at held-out `x ~ p_g`; "
        f"{numbers['points']} points per law.",
        "",
        "| regime | n | budget (steps) | P_inst exact | P_inst learned | word | gap at p_r | Spearman ell at p_r | "
        "P_inst at p_g (exact / learned) | density error | Spearman err~mu_bar exact / learned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in numbers["cells"]:
        ex = cell["models"]["exact"]
        for name, m in cell["models"].items():
            if name == "exact":
                continue
            label = "control (sigma x %g)" % numbers["control"]["sigma_factor"] if name == "control" else str(m["budget"])
            sp_e, sp_l = ex["spearman_err_mu_bar"]["p_r"], m["spearman_err_mu_bar"]["p_r"]
            lines.append(
                f"| {cell['regime']} | {cell['n']} | {label} | {_pi(ex['P_inst']['p_r'])} | {_pi(m['P_inst']['p_r'])} | "
                f"{m['decision']['word']} | {_ci(m['gap_log_Lambda']['p_r'])} | {_ci(m['spearman_log_Lambda']['p_r'], 'rho')} | "
                f"{ex['P_inst']['p_g']['estimate']:.2f} / {m['P_inst']['p_g']['estimate']:.2f} | "
                f"{_ci(m['density_error'], digits=3)} | {_ci(sp_e, 'rho')} / {_ci(sp_l, 'rho')} |")
    lines += ["", row.verdict.evidence, ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def run_learned_section(out_dir: Path, quick: bool = True, progress: Callable[[str], None] | None = None,
                        ) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run (or resume) the section into ``out_dir / FOLDER``; return its row (with its control) and its data."""
    from largemodel.experiments.learned_vs_exact import experiment as learned
    from reports.controls import run_controls

    res = learned.run(out_dir / FOLDER, full=not quick, progress=progress)
    figs = [f"{FOLDER}/{f}" for f in res.figures]
    row = ClaimRow("learned_vs_exact", res.verdict_for("learned_vs_exact"), figures=list(figs))
    row.controls = run_controls("learned_vs_exact", res)
    numbers = {k: v for k, v in res.numbers.items() if k not in ("log_Lambda", "claim_figures")}
    data = {**numbers, "seconds": res.seconds, "markdown": learned_markdown(res.numbers, row, figs)}
    return [row], data
