"""The report's "Which images fail" section: predicting bad reconstructions from one inversion pass.

Runs :mod:`largemodel.experiments.failure.experiment` (one-pass scores and regeneration scores against the
reconstruction error of every held-out image, AUROC / AP with bootstrap intervals, costs, measured
seconds, instability maps) and renders its result as the section (a table and two figures), written
with its summary to ``largemodel/failure/section.md`` and ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["NEEDS", "run_failure_section", "failure_markdown"]

#: what each score needs, for the table
NEEDS = {
    "log_Lambda": "inversion + Hutchinson", "neg_log_p_g_over_n": "inversion + Hutchinson",
    "z_norm2_over_n": "inversion", "velocity_rms": "inversion", "velocity_growth": "inversion",
    "velocity_change": "inversion", "mu_bar": "K regenerations", "lambda_jvp": "JVP through G",
    "combined_logistic": "one pass (all one-pass scores)", "combined_ridge": "one pass (all one-pass scores)",
}


def _fmt_ci(value: float, ci: Any) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def failure_markdown(result: dict[str, Any], costs: dict[str, dict[str, float]], seconds: dict[str, float],
                     label: str, figure: str | None) -> str:
    """The section as Markdown: the AUROC table (one row per score) and what limits it."""
    lines = [
        "## Which images fail",
        "",
        f"On the {label}: {result['n']} held-out images, positives = the worst {100 * result['fraction']:.0f}% "
        f"by latent reconstruction MSE ({result['positives']} images). AUROC and average precision (chance = "
        f"{result['positives'] / result['n']:.3f}) with paired-bootstrap 95% intervals; Spearman with log error. "
        "Costs in network evaluations relative to one reconstruction (inversion + regeneration); "
        f"measured: one reconstruction {seconds['reconstruction']:.3f} s/image, one-pass scores "
        f"{seconds['one_pass']:.3f} s/image ({seconds['one_pass'] / seconds['reconstruction']:.2f}x).",
        "",
        "| score | needs | cost (x reconstruction) | AUROC [95% CI] | AP [95% CI] | Spearman [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["scores"].items():
        cost_key = "log_Lambda" if name.startswith("combined_") else name
        cost = costs.get(cost_key, {}).get("per_reconstruction", float("nan"))
        lines.append(f"| {name} | {NEEDS.get(name, '')} | {cost:.2f} | {_fmt_ci(row['auroc'], row['auroc_ci'])} | "
                     f"{_fmt_ci(row['ap'], row['ap_ci'])} | {_fmt_ci(row['spearman'], row['spearman_ci'])} |")
    if figure:
        lines += ["", f"![{figure}]({figure})"]
    return "\n".join(lines) + "\n"


def run_failure_section(out_dir: Path, quick: bool = True, progress: Callable[[str], None] | None = None,
                        ) -> dict[str, Any]:
    """Run (or resume) the section into ``out_dir / "largemodel" / "failure"``.

    Returns:
        ``{"markdown", "figures", "result", "costs", "seconds", "maps", "model"}`` (JSON-ready; figures
        relative to ``out_dir``).
    """
    from largemodel.experiments.failure import experiment as failure
    from simulate.store import atomic_write_text, json_ready

    out = out_dir / "largemodel" / "failure"
    res = failure.run(out, full=not quick, progress=progress)
    rel, maps_rel = (str((out / f).relative_to(out_dir)) for f in res.figures)
    maps = res.maps
    markdown = failure_markdown(res.result, res.costs, res.seconds, res.label, rel)
    markdown += (f"\nInstability maps (per-pixel spread of the K = {res.options.perturbations} perturbed regenerations "
                 f"per unit RMS perturbation, next to the actual error map): spatial Spearman between the two maps, "
                 f"median {maps['median_spatial_spearman']:.2f} over {len(maps['spatial_spearman'])} held-out "
                 f"images; over the unclamped pixels only (saturated pixels have zero error and zero spread) "
                 f"median {maps['median_spatial_spearman_live']:.2f} "
                 f"({100 * maps['fraction_positive_spatial_spearman_live']:.0f}% of images positive)."
                 f"\n\n![{maps_rel}]({maps_rel})\n")
    data = json_ready({"markdown": markdown, "figures": [rel, maps_rel], "result": res.result, "costs": res.costs,
                       "seconds": res.seconds, "maps": maps, "model": res.model})
    atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in data.items() if k != "markdown"}, indent=1))
    atomic_write_text(out / "section.md", markdown)
    return data
