"""The large-model suite of the report: runs the large-model experiments and renders their rows.

The measuring and judging live in ``largemodel.experiments`` (no network and no GPU needed: small
flow-matching transformers trained here on offline data, held-out real images as ``p_r``):

1. :mod:`largemodel.experiments.fig4c.experiment` -- Fig. 4(c) / A1 (decided by
   :func:`largemodel.experiments.fig4c.judge.judge`, its ``decided_by`` in ``reports.claims.CLAIMS``;
   with ``model=DIR`` and ``images=DIR`` the user's own diffusers folder decides it), with the
   supplements Theorem 4.1 / 4.3 on trained models by resolution and Lemma D.1 against the full
   Jacobian;
2. :mod:`largemodel.experiments.explain.experiment` -- why images reconstruct badly
   (``reports.explain_suite``);
3. :mod:`largemodel.experiments.failure.experiment` -- which images fail (``reports.failure_suite``);
4. :mod:`largemodel.experiments.learned_vs_exact.experiment` -- learned vs exact flows on known mixtures: does a
   network trained on a Gaussian-neighbour mixture reproduce its instability? (``reports.learned_suite``; its
   own claim row);
5. :mod:`largemodel.experiments.guidance.experiment` -- guidance scale and prompt on the class-conditional
   digits model trained here (``run_guidance_section`` here; its own claim row, docs/theory.md §10.9).

This module turns their results into :class:`~reports.claims.ClaimRow` s and the suite's data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

# judge_fig4c is re-exported: the Fig. 4(c) verdict of one study
from largemodel.experiments.fig4c.judge import judge_fig4c
from reports.claims import SUPPLEMENT, ClaimRow
from reports.controls import run_controls

__all__ = ["run_largemodel_suite", "judge_fig4c", "SUPPLEMENT", "FOLDER", "GUIDANCE_FOLDER", "guidance_markdown",
           "run_guidance_section"]

#: the suite's folder in the report folder (figures in the rows are relative to the report folder)
FOLDER = "largemodel"


def run_largemodel_suite(*args: Any, **kwargs: Any) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run the suite (see ``_run``) with one intra-op torch thread: the trained models are tiny,
    gain nothing from threads, and lose up to 30x when another process shares the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


def _run(
    out_dir: Path,
    quick: bool = True,
    progress: Callable[[str], None] | None = None,
    model: Path | None = None,
    images: Path | None = None,
) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run the suite into ``out_dir / "largemodel"``; return the rows and the suite's data."""
    from largemodel.experiments.fig4c import experiment as fig4c
    from reports.explain_suite import run_explain_suite
    from reports.failure_suite import run_failure_section
    from reports.learned_suite import run_learned_section
    from simulate.experiments.runner import parallel_calls

    step = progress or (lambda msg: None)
    if (model is None) != (images is None):
        raise ValueError("give both --model and --images to study your own model")
    opts = fig4c.make_options(not quick)
    t0 = time.perf_counter()

    def timed(run: Callable[[], Any]) -> Callable[[], tuple[Any, float]]:
        def call() -> tuple[Any, float]:
            start = time.perf_counter()
            return run(), time.perf_counter() - start
        return call

    # five independent sections (own folders, own seeds, models shipped or cached): up to --workers processes;
    # a user's model (perhaps on a GPU, which a forked process cannot share) runs them here, in turn
    ((res, t_fig), ((explain_rows, explain_data), t_explain), (failure_data, t_failure),
     ((learned_rows, learned_data), t_learned), ((guidance_rows, guidance_data), t_guidance)) = parallel_calls([
        timed(lambda: fig4c.run(out_dir / FOLDER, full=not quick, progress=step, model=model, images=images)),
        timed(lambda: run_explain_suite(out_dir, quick=quick, progress=step)),
        timed(lambda: run_failure_section(out_dir, quick=quick, progress=step)),
        timed(lambda: run_learned_section(out_dir, quick=quick, progress=step)),
        timed(lambda: run_guidance_section(out_dir, quick=quick, progress=step)),
    ], workers=1 if model is not None else None)
    nums = res.numbers
    data: dict[str, Any] = {"scale": opts.scale(), "study_digits": nums["study_digits"]}
    if "study_user" in nums:
        data["study_user"] = nums["study_user"]
    data["trend"], data["lemma_d1_trained"] = nums["trend"], nums["lemma_d1_trained"]
    figures = {k: [f"{FOLDER}/{f}" for f in v] for k, v in nums["claim_figures"].items()}
    rows = [ClaimRow(c, res.verdict_for(c), figures=figures.get(c, [])) for c in ("fig4c", "thm43_pinst", "lemma_d1")]
    study_dir = out_dir / FOLDER / ("study-user" if "study_user" in nums else "study-digits")
    rows[0].controls = run_controls("fig4c", {"study_dir": study_dir})  # the Fig. 4(c) judge where the claim is false
    rows += explain_rows + learned_rows + guidance_rows
    data["explain"], data["failure"], data["learned"] = explain_data, failure_data, learned_data
    data["guidance"] = guidance_data
    data["seconds"] = time.perf_counter() - t0
    # the report's time budget (reports.budget): each section's own wall time (they may overlap)
    data["seconds_by_section"] = {"fig4c": t_fig, "explain": t_explain, "failure": t_failure, "learned": t_learned,
                                  "guidance": t_guidance}
    return rows, data


#: the guidance section's folder in the report folder
GUIDANCE_FOLDER = "largemodel/guidance"

_LABEL = {"mse_latent": "latent MSE", "mu_bar": "mu_bar", "log_Lambda": "log Lambda"}


def guidance_markdown(numbers: dict[str, Any], row: ClaimRow, figures: list[str]) -> str:
    """The section as Markdown: a table of medians and one of paired changes."""
    from largemodel.experiments.guidance.judge import change_text

    e = numbers["effects"]
    ref = e["reference_scale"]
    lines = ["## Guidance and prompt on a class-conditional model", "",
             f"**{row.status}** ({row.verdict.key_number}). {numbers['images']} held-out digits of the class-conditional "
             f"model `{numbers['model']}` (trained here with condition dropout 0.1; docs/theory.md §10.9), each inverted "
             "and regenerated on the guided field `u_W = u_u + W (u_c - u_u)` with the null prompt and with its class "
             "prompt (`digit c`). A change is decided by the sign test (share of images whose value rises, "
             "Clopper-Pearson 95%, against 1/2): *undetermined* where that interval contains 1/2; *unchanged* where "
             "every difference is at float32 rounding. Medians with 95% bootstrap intervals.", "",
             "| metric | prompt | " + " | ".join(f"W = {w:g}" for w in e["scales"]) + " |",
             "|---|---|" + "---|" * len(e["scales"])]
    for metric in _LABEL:
        for mode in e["modes"]:
            cells = []
            for w in e["scales"]:
                m = e["medians"].get(f"{metric}|{mode}|{w:g}")
                cells.append("-" if m is None else f"{m['median']:.3g} [{m['ci'][0]:.3g}, {m['ci'][1]:.3g}]")
            lines.append(f"| {_LABEL[metric]} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "| change | metric | paired per-image difference |", "|---|---|---|"]
    for key, c in e["vs_reference"].items():
        metric, mode, w = key.split("|")
        lines.append(f"| W = {w} vs {ref:g}, {mode} prompt | {_LABEL[metric]} | {change_text(c)} |")
    for key, c in e["caption_vs_empty"].items():
        metric, w = key.split("|")
        lines.append(f"| class - null prompt at W = {w} | {_LABEL[metric]} | {change_text(c)} |")
    lines += ["", row.verdict.evidence, ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def run_guidance_section(out_dir: Path, quick: bool = True, progress: Callable[[str], None] | None = None,
                         ) -> tuple[list[ClaimRow], dict[str, Any]]:
    """Run (or resume) the guidance section (``largemodel.experiments.guidance``: the class-conditional digits
    model at each ``W`` with the null and the class prompt, docs/theory.md §10.9) into ``out_dir / GUIDANCE_FOLDER``;
    return its row (with its control, the null prompt where ``W`` changes nothing) and its data."""
    from largemodel.experiments.guidance import experiment as guidance
    res = guidance.run(out_dir / GUIDANCE_FOLDER, full=not quick, progress=progress)
    figs = [f"{GUIDANCE_FOLDER}/{f}" for f in res.figures]
    row = ClaimRow("guidance", res.verdict, figures=list(figs))
    row.controls = run_controls("guidance", res)
    data = {**res.numbers, "seconds": res.seconds, "markdown": guidance_markdown(res.numbers, row, figs)}
    return [row], data
