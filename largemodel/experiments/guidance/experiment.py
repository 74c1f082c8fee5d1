r"""Guidance as a study axis on the class-conditional digits model trained here (docs/theory.md §10.9).

The model: ``GuidanceOptions.model`` trained with ``class_conditional=True`` (condition dropout 0.1;
shipped with the package at the quick scale). Its first ``images`` held-out digits, each captioned
with its class (``"digit 3"``), are studied (``largemodel.study.runner.run_study``: inversion with the
one-pass Hutchinson ``log Lambda``, regeneration, ``mu_bar`` over ``perturbations`` directions) once per
prompt mode (null prompt, class prompt) and ``W`` of ``scales`` (``largemodel.study.guidance``), each
condition in its own resumable folder. :mod:`.judge` decides.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from simulate.experiments.common import ExperimentResult, replace_options, write_result

from largemodel.experiments.trained import HUTCHINSON_ROUTE, ModelSpec, check_spec

__all__ = ["NAME", "CLAIM_IDS", "FAST", "FULL", "GuidanceOptions", "make_options", "run"]

NAME = "guidance"
CLAIM_IDS = ["guidance"]


@dataclass(frozen=True)
class GuidanceOptions:
    """Options of the guidance section (validated on construction).

    Attributes:
        model: the class-conditional model's ``(data, size, train images, steps)``.
        images: held-out images studied.
        scales: the guidance scales ``W`` (the smallest is the reference).
        null_scales: the scales the null prompt (the control, where ``u_W = u_u`` for every ``W``) is measured
            at: a subset of ``scales`` holding its smallest and largest, the pair the control's judge compares.
        steps: Euler steps each way.
        perturbations: ``K`` of ``mu_bar``.
        probes: Hutchinson probes of the one-pass ``log Lambda``.
        seed: seed of the perturbations and probes.
    """

    model: ModelSpec = ("digits", 8, 500, 1000)
    images: int = 24
    scales: tuple[float, ...] = (1.0, 3.5, 7.0)
    null_scales: tuple[float, ...] = (1.0, 7.0)
    steps: int = 50
    perturbations: int = 4
    probes: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        from largemodel.study.guidance import parse_guidance_scales

        check_spec(self.model, "model")
        parse_guidance_scales(",".join(map(str, self.scales)), "scales")
        if not (set(self.null_scales) <= set(self.scales) and {min(self.scales), max(self.scales)} <= set(self.null_scales)):
            raise ValueError(f"null_scales must be scales of {self.scales} holding {min(self.scales):g} and "
                             f"{max(self.scales):g}, got {self.null_scales!r}")
        for name in ("images", "steps", "perturbations", "probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


FAST = GuidanceOptions()
FULL = dataclasses.replace(FAST, images=96, steps=100, perturbations=8, null_scales=FAST.scales)


def make_options(full: bool = False, **overrides: Any) -> GuidanceOptions:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        **overrides: Any) -> ExperimentResult:
    """Measure every (prompt mode, W) into ``out_dir`` (resuming), judge, draw; ``numbers`` holds the
    effects (``guidance_effects``) and the control's verdict."""
    from largemodel.experiments.guidance.judge import control_verdict, judge
    from largemodel.experiments.trained import heldout_items
    from largemodel.models.load import load_model
    from largemodel.study.config import StudyConfig
    from largemodel.study.guidance import run_guidance_axis
    from largemodel.study.runner import load_records, run_study
    from largemodel.training.train import cached_model
    from simulate.store import claim_folder

    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    claim_folder(out_dir, "study", "pfode report: guidance section")
    data, size, train_images, steps = opts.model
    folder = cached_model(data, size, train_images, steps=steps, class_conditional=True, progress=False)
    model = load_model(folder, device="cpu", dtype="float32")
    items = heldout_items(folder, opts.images, captions=True)
    cfg = StudyConfig(steps=opts.steps, perturbations=opts.perturbations, jvp_directions=0, log_lambda="hutchinson",
                      probes=opts.probes, batch_size=512, images_per_batch=opts.images, seed=opts.seed,
                      jacobian_route=HUTCHINSON_ROUTE)

    def measure(m: Any, its: list[Any], sub: Path) -> list[dict[str, Any]]:
        step(f"guidance: {sub.name}")
        claim_folder(sub, "study", "pfode report: guidance section")
        run_study(m, its, sub, cfg, model_id=str(folder), save_images=False, progress=False)
        meta = json.loads((sub / "study.json").read_text())
        return [{**r, "name": r["key"]} for r in load_records(sub, meta["signature"], keys=meta["keys"])]

    effects = run_guidance_axis(model, items, out_dir, opts.scales, measure, seed=opts.seed,
                                mode_scales={"empty": opts.null_scales})
    control = control_verdict(effects)
    numbers = {"effects": effects, "model": str(folder.name), "images": opts.images,
               "control": {"status": str(control.status), "key_number": control.key_number}}
    result = ExperimentResult(NAME, list(CLAIM_IDS), judge(effects), dataclasses.asdict(opts), numbers,
                              figures=[Path(effects["figure"]).name], seconds=time.perf_counter() - t0)
    write_result(out_dir, result)
    return result
