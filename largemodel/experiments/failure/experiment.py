r"""Which images fail: predicting bad reconstructions from one inversion pass.

On the digits model trained here (:mod:`.trained`) every held-out image (up to
``FailureOptions.images``) gets the one-pass scores of ``largemodel.diagnose.scores`` (Lemma D.1's
``log Lambda_G`` and ``log p_g`` by the Hutchinson divergence integral, docs/theory.md §6.1, §9.4;
``||z~||^2 / n``; the inversion's velocity statistics), the study's regeneration scores ``mu_bar``
and ``lambda_jvp``, and its reconstruction error (:func:`.failure_measure.failure_records`,
resumable). ``largemodel.diagnose.predict.evaluate_scores`` then gives, for "worst decile by reconstruction
error", the AUROC and average precision of each score and of the cross-validated combinations,
with bootstrap 95% intervals (§9.6), and each score's cost relative to one reconstruction
(``largemodel.diagnose.scores.score_costs``, and measured seconds); instability maps of the worst images
(:func:`.failure_measure.spatial_maps`). No claim of the paper is decided here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from theory._validate import require_ints
from simulate.experiments.common import replace_options
from simulate.experiments.runner import torch_threads

from largemodel.experiments.trained import ModelSpec, check_spec, trained_model

__all__ = ["NAME", "FailureOptions", "FailureResult", "FAST", "FULL", "make_options", "run"]

NAME = "failure"


@dataclass(frozen=True)
class FailureOptions:
    """Options of the "which images fail" experiment (validated on construction).

    ``model`` (:data:`.trained.ModelSpec`), ``images`` (held out), ``steps`` (Euler ``N``), ``probes``
    (Hutchinson), ``perturbations`` (``K`` of ``mu_bar``), ``eps_rms``, ``jvp_directions`` (of
    ``lambda_jvp``), ``n_boot`` (bootstrap resamples), ``images_per_batch``, ``seed``,
    ``timing_images`` (the timed batch), ``map_images`` (spatial Spearman) and ``map_figure_images``
    (the worst images drawn).
    """

    model: ModelSpec = ("digits", 8, 100, 1000)
    images: int = 128
    steps: int = 100
    probes: int = 1
    perturbations: int = 8
    eps_rms: float = 1e-2
    jvp_directions: int = 1
    n_boot: int = 2000
    images_per_batch: int = 64
    seed: int = 0
    timing_images: int = 16
    map_images: int = 12
    map_figure_images: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", check_spec(self.model, "model"))
        require_ints(self, ("images", "steps", "probes", "perturbations", "n_boot", "images_per_batch", "timing_images",
                            "map_images", "map_figure_images"))
        require_ints(self, ("jvp_directions",), minimum=0)
        if not (math.isfinite(float(self.eps_rms)) and float(self.eps_rms) > 0):
            raise ValueError(f"eps_rms must be a finite number > 0, got {self.eps_rms}")


FAST = FailureOptions()
FULL = dataclasses.replace(FAST, model=("digits", 8, 100, 2500), images=256, steps=500, probes=8, n_boot=5000)


def make_options(full: bool = False, **overrides: Any) -> FailureOptions:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


@dataclass
class FailureResult:
    """What :func:`run` returns: the options, the model folder and its label, the evaluation
    (``largemodel.diagnose.predict.evaluate_scores``), score costs, measured seconds per image, the maps
    summary, and the figures (relative to the experiment's folder)."""

    options: FailureOptions
    model: str
    label: str
    result: dict[str, Any]
    costs: dict[str, dict[str, float]]
    seconds: dict[str, float]
    maps: dict[str, Any]
    figures: list[str] = field(default_factory=list)


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        **overrides: Any) -> FailureResult:
    """Score (resuming) the held-out images into ``out_dir``, evaluate the scores, time them, draw the
    ROC / calibration figure (``roc_calibration.png``) and the instability maps (``maps_worst.png``)."""
    from largemodel.models.load import load_model
    from largemodel.diagnose.predict import calibration_figure, evaluate_scores
    from largemodel.diagnose.scores import ONE_PASS_SCORES, score_costs

    from largemodel.experiments.failure.measure import failure_records, measured_seconds, spatial_maps

    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    out = Path(out_dir)
    data_name, size, n_train, _ = opts.model
    step(f"which images fail: model trained on {data_name} {size}px (shipped with the package, else trained once and cached)")
    folder = trained_model(opts.model)
    with torch_threads(1):
        model = load_model(folder, device="cpu", dtype="float32")  # loaded once for the whole experiment
        records = failure_records(folder, out, opts, progress=step, model=model)
        seconds = measured_seconds(folder, opts, model=model)
    scores = [*ONE_PASS_SCORES, "mu_bar", "lambda_jvp"]
    result = evaluate_scores(records, scores, combine=ONE_PASS_SCORES, n_boot=opts.n_boot)
    costs = score_costs(opts.steps, "euler", opts.probes, perturbations=opts.perturbations,
                        jvp_directions=opts.jvp_directions)
    label = f"{data_name} {size}px model trained here on {n_train or 'all'} images ({opts.steps} Euler steps)"
    fig = calibration_figure(result, out / "roc_calibration.png", title=f"which images fail: {label}")
    step("which images fail: instability maps")
    with torch_threads(1):
        maps = spatial_maps(folder, out, result, opts, model=model)
    figures = [str(Path(fig).relative_to(out)), str(Path(maps["figure"]).relative_to(out))]
    return FailureResult(opts, str(folder), label, result, costs, seconds, maps, figures)
