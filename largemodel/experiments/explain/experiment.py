r"""Why images reconstruct badly, on the flow models trained here (docs/theory.md §5.3).

On the held-out images of ``ExplainOptions.model`` (:mod:`.trained`), ``largemodel.diagnose.explain_cli.run_explain``
measures per image the discrepancy ``D = ||z~ - z*||`` of the plain inversion against the exact
discrete inverse ``z*``, the amplification ``A = ||G_N(z~) - G_N(z*)|| / D`` (so that the error is
``A D``), the linearization at the real discrepancy, ``mu_bar`` against the actual error and the
inverters at equal NFE with ``G_N``'s floor. The same code runs on the synthetic controls of
:mod:`.controls` (``control_images`` of the same held-out images). Across the ``trend_models``'
resolutions a light run gives ``mu_bar``, ``(1/n) log Lambda``, ``P_inst`` and the error against ``n``
(the main model's resolution reuses the main run's records). :mod:`.judge` decides the findings on
intervals, on the model and on each control. Every run resumes from its records.
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

from largemodel.experiments.trained import HUTCHINSON_ROUTE, ModelSpec, check_spec, heldout_items, trained_model

__all__ = ["NAME", "ExplainOptions", "FAST", "FULL", "make_options", "explain_model", "run"]

NAME = "explain"


@dataclass(frozen=True)
class ExplainOptions:
    """Options of the explanation study (validated on construction).

    ``model`` (:data:`.trained.ModelSpec`) and ``images`` held-out images for the full explanation
    (``steps`` Euler steps, ``power_iters`` for the top singular direction, ``budgets`` the inverters' NFE
    budgets as multiples of ``N``'s); ``trend_models`` and
    ``trend_images`` for the light run by resolution (``trend_budgets``, ``trend_sizes``,
    ``trend_causal_directions``, no power iteration); ``causal_directions`` random directions of the
    differentiability check; ``control_images`` per synthetic control (:mod:`.controls`, ``gmm_std``
    the Gaussian mixture's component standard deviation); ``images_per_batch`` per group.
    """

    model: ModelSpec = ("digits", 8, 100, 1000)
    images: int = 32
    steps: int = 100
    power_iters: int = 0
    budgets: tuple[int, ...] = (1, 2)
    causal_directions: int = 1
    # quick: the main model only (its images, already explained); the Theorem 4.1 quantities at 16 px are
    # the Fig. 4(c) experiment's trend (not measured twice)
    trend_models: tuple[ModelSpec, ...] = (("digits", 8, 100, 1000),)
    trend_images: int = 16
    trend_budgets: tuple[int, ...] = (1,)
    trend_sizes: tuple[float, ...] = (1e-3, 1e-2)
    trend_causal_directions: int = 2
    control_images: int = 64
    gmm_std: float = 0.5
    images_per_batch: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", check_spec(self.model, "model"))
        object.__setattr__(self, "trend_models", tuple(check_spec(s, "trend_models") for s in self.trend_models))
        require_ints(self, ("images", "steps", "trend_images", "trend_causal_directions", "causal_directions",
                            "control_images", "images_per_batch"))
        require_ints(self, ("power_iters",), minimum=0)
        if not (float(self.gmm_std) > 0):
            raise ValueError(f"gmm_std must be > 0, got {self.gmm_std}")


FAST = ExplainOptions()
FULL = dataclasses.replace(FAST, images=128, power_iters=8, budgets=(1, 2, 4), causal_directions=4, control_images=128,
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


def explain_controls(spec: ModelSpec, n_images: int, root: Path, cfg: Any, step: Callable[[str], None],
                     gmm_std: float, images_per_batch: int = 16) -> dict[str, dict[str, Any]]:
    """Run the explanation with ``cfg`` on each synthetic control (:mod:`.controls`) on the first ``n_images``
    held-out images of ``spec``; their summaries by control name."""
    from largemodel.diagnose.explain_cli import run_explain
    from largemodel.training.train import model_dataset

    from largemodel.experiments.explain.controls import CONTROLS, control_folder, control_model

    folder = trained_model(spec)
    train = model_dataset(folder).train
    out = {}
    for name in CONTROLS:
        step(f"explain: control {name}, {n_images} held-out images")
        model = control_model(name, train, gmm_std=gmm_std)
        out[name] = run_explain(model, {model.resolution: heldout_items(folder, n_images)}, control_folder(root, name),
                                cfg, model_id=f"control:{name}:gmm_std={gmm_std}:{folder.name}",
                                images_per_batch=images_per_batch, command="report explain")
    return out


def _trend_entry(summary: dict[str, Any], size: int) -> dict[str, Any]:
    ((_, t),) = summary["by_resolution"].items()  # medians["log_Lambda"] is (1/n) log |det J_G|
    return {"size": size, "n": t["n"], "n_images": t["n_images"], "P_inst": t.get("P_inst"), **t.get("medians", {})}


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        **overrides: Any) -> ExperimentResult:
    """Explain the main model into ``out_dir / "explain-digits"``, the controls into
    ``out_dir / "explain-control-<name>"`` and each trend model other than the main one into
    ``out_dir / "explain-trend-<data>-<size>"`` (resuming); judge (:func:`.judge.judge`).

    ``numbers``: ``explain_digits`` (the main summary), ``explain_controls`` (summary per control),
    ``explain_trend`` (per trend model: size, ``n``, ``P_inst`` and the medians), ``decisions``
    (per field, each finding's status), ``controls`` (per supplement, ``[{name, finding, status,
    key_number}]``), ``identities`` (``[{name, value, note}]``: consistency checks, not findings);
    figures relative to ``out_dir``; ``claim_verdicts``: the supplements ``thm31`` and ``fig4c``.
    Decides no claim (``claim_ids`` empty).
    """
    from largemodel.diagnose.explain import ExplainConfig
    from largemodel.diagnose.explain_plots import controls_figure

    from largemodel.experiments.explain.judge import RHO_LEVEL, SHARE_LEVEL, controls_table, decide, judge

    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    root = Path(out_dir)
    t0 = time.perf_counter()
    with torch_threads(1):  # tiny models: threads only lose when the cores are shared
        # Hutchinson by VJP where nothing else uses the route (no power iteration: its J v stays exact)
        cfg = ExplainConfig(steps=opts.steps, power_iters=opts.power_iters, budgets=opts.budgets,
                            causal_directions=opts.causal_directions,
                            jacobian_route=HUTCHINSON_ROUTE if opts.power_iters == 0 else "auto")
        main = explain_model(opts.model, opts.images, root / "explain-digits", cfg, step, opts.images_per_batch)
        controls = explain_controls(opts.model, opts.control_images, root, cfg, step, opts.gmm_std,
                                    opts.images_per_batch)
        light = ExplainConfig(steps=opts.steps, power_iters=0, budgets=opts.trend_budgets, sizes=opts.trend_sizes,
                              causal_directions=opts.trend_causal_directions, floor=False, jacobian_route=HUTCHINSON_ROUTE)
        trend = []
        for spec in opts.trend_models:
            if spec == opts.model:  # the main run already explained these images (more of them)
                trend.append(_trend_entry(main, spec[1]))
                continue
            sub = explain_model(spec, opts.trend_images, root / f"explain-trend-{spec[0]}-{spec[1]}", light, step,
                                opts.images_per_batch)
            trend.append(_trend_entry(sub, spec[1]))
    ((_, s),) = main["by_resolution"].items()
    fields = {"trained model": s, **{k: next(iter(v["by_resolution"].values())) for k, v in controls.items()}}
    fig = controls_figure(fields, root / "explain-digits" / "controls.png", share_level=SHARE_LEVEL, rho_level=RHO_LEVEL)
    figures = [f"explain-digits/{Path(f).name}" for f in [*main.get("figures", []), fig]]
    judged = judge(main, trend, controls, opts.steps)
    identities = list(s["identities"])
    lin = next(iter(controls["random linear field"]["by_resolution"].values()))
    identities.append({"name": "explain: linearization exact on the random linear field",
                       "value": lin["linear_ratio_median"]["value"],
                       "note": "||J(z~ - z*)|| / ||G_N(z~) - y|| is 1 when G_N is linear (up to ||G_N(z*) - y||)"})
    numbers = {"explain_digits": main, "explain_controls": controls, "explain_trend": trend,
               "decisions": {name: decide(f) for name, f in fields.items()},
               "controls": controls_table(main, controls), "identities": identities}
    return ExperimentResult(
        name=NAME, claim_ids=[], verdict=judged.overall, params={"full": full, **dataclasses.asdict(opts)},
        numbers=numbers, figures=figures, seconds=time.perf_counter() - t0, claim_verdicts=dict(judged.claims))
