r"""Why images reconstruct badly, on the flow models trained here (docs/theory.md §5.3).

On the held-out images of ``ExplainOptions.model`` (:mod:`.trained`), ``largemodel.diagnose.explain_cli.run_explain``
measures per image the discrepancy ``D = ||z~ - z*||`` of the plain inversion against the exact
discrete inverse ``z*``, the amplification ``A = ||G_N(z~) - G_N(z*)|| / D`` (so that the error is
``A D``), the causal test from ``z*`` and the inverters at equal NFE; across the ``trend_models``'
resolutions a light run gives ``mu_bar``, ``(1/n) log Lambda``, ``P_inst`` and the error against ``n``.
:mod:`.explain_judge` turns the summaries into supplement verdicts on Theorem 3.1 (error =
instability x discrepancy) and Fig. 4(c). Every run resumes from its records.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from theory._validate import require_ints
from simulate.experiments.common import ExperimentResult, replace_options
from simulate.experiments.runner import torch_threads

from largemodel.experiments.trained import ModelSpec, check_spec, heldout_items, trained_model

__all__ = ["NAME", "ExplainOptions", "FAST", "FULL", "make_options", "explain_model", "run"]

NAME = "explain"


@dataclass(frozen=True)
class ExplainOptions:
    """Options of the explanation study (validated on construction).

    ``model`` (:data:`.trained.ModelSpec`) and ``images`` held-out images for the full explanation
    (``steps`` Euler steps, ``power_iters`` for the top singular direction); ``trend_models`` and
    ``trend_images`` for the light run by resolution (``trend_budgets``, ``trend_sizes``,
    ``trend_causal_directions``, no power iteration); ``images_per_batch`` per group.
    """

    model: ModelSpec = ("digits", 8, 100, 1000)
    images: int = 32
    steps: int = 100
    power_iters: int = 3
    trend_models: tuple[ModelSpec, ...] = (("digits", 8, 100, 1000), ("digits", 16, 100, 1000))
    trend_images: int = 16
    trend_budgets: tuple[int, ...] = (1,)
    trend_sizes: tuple[float, ...] = (1e-3, 1e-2)
    trend_causal_directions: int = 2
    images_per_batch: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", check_spec(self.model, "model"))
        object.__setattr__(self, "trend_models", tuple(check_spec(s, "trend_models") for s in self.trend_models))
        require_ints(self, ("images", "steps", "trend_images", "trend_causal_directions", "images_per_batch"))
        require_ints(self, ("power_iters",), minimum=0)


FAST = ExplainOptions()
FULL = dataclasses.replace(FAST, images=128, power_iters=8,
                           trend_models=tuple(("digits", s, 100, 2500) for s in (8, 16, 24)), trend_images=64)


def make_options(full: bool = False, **overrides: Any) -> ExplainOptions:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def explain_model(spec: ModelSpec, n_images: int, out: Path, cfg: Any, step: Callable[[str], None],
                  images_per_batch: int = 16) -> dict[str, Any]:
    """Explain (or resume) the first ``n_images`` held-out images of the model ``spec`` into ``out``;
    its summary (``largemodel.diagnose.explain_cli.run_explain``) with the model folder."""
    from largemodel.diagnose.explain_cli import run_explain
    from largemodel.models.load import load_model

    data, size, train_images, steps = spec
    step(f"explain: {data} {size}px model ({train_images} images, {steps} training steps), {n_images} held-out images")
    folder = trained_model(spec)
    model = load_model(folder, device="cpu", dtype="float32")
    summary = run_explain(model, {model.resolution: heldout_items(folder, n_images)}, out, cfg, model_id=str(folder),
                          images_per_batch=images_per_batch, command="report explain")
    return {"model": str(folder), **summary}


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        **overrides: Any) -> ExperimentResult:
    """Explain the main model into ``out_dir / "explain-digits"`` and each trend model into
    ``out_dir / "explain-trend-<data>-<size>"`` (resuming), judge (:func:`.explain_judge.judge`).

    ``numbers``: ``explain_digits`` (the main summary), ``explain_trend`` (per trend model: size, ``n``,
    ``P_inst`` and the medians); figures relative to ``out_dir``; ``claim_verdicts``: the supplements
    ``thm31`` (decomposition) and ``fig4c`` (causal test). Decides no claim (``claim_ids`` empty).
    """
    from largemodel.diagnose.explain import ExplainConfig

    from largemodel.experiments.explain.judge import judge

    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    root = Path(out_dir)
    t0 = time.perf_counter()
    with torch_threads(1):  # tiny models: threads only lose when the cores are shared
        cfg = ExplainConfig(steps=opts.steps, power_iters=opts.power_iters)
        main = explain_model(opts.model, opts.images, root / "explain-digits", cfg, step, opts.images_per_batch)
        light = ExplainConfig(steps=opts.steps, power_iters=0, budgets=opts.trend_budgets, sizes=opts.trend_sizes,
                              causal_directions=opts.trend_causal_directions)
        trend = []
        for spec in opts.trend_models:
            sub = explain_model(spec, opts.trend_images, root / f"explain-trend-{spec[0]}-{spec[1]}", light, step,
                                opts.images_per_batch)
            ((_, t),) = sub["by_resolution"].items()  # medians["log_Lambda"] is (1/n) log |det J_G|
            trend.append({"size": spec[1], "n": t["n"], "P_inst": t.get("P_inst"), **t.get("medians", {})})
    figures = [f"explain-digits/{Path(f).name}" for f in main.get("figures", [])]
    judged = judge(main, trend, opts.steps)
    return ExperimentResult(
        name=NAME, claim_ids=[], verdict=judged.overall, params={"full": full, **dataclasses.asdict(opts)},
        numbers={"explain_digits": main, "explain_trend": trend}, figures=figures,
        seconds=time.perf_counter() - t0, claim_verdicts=dict(judged.claims))
