r"""Fig. 4(c) / A1 on real networks, and Theorem 4.1 / 4.3 and Lemma D.1 on models trained here.

No network and no GPU are needed: the models are small flow-matching transformers trained here on
offline data (:mod:`.trained`), with held-out real images as ``p_r`` (docs/theory.md §10.4):

1. Fig. 4(c) / A1: the study (``largemodel.study.runner``) of the held-out images of
   ``Fig4cOptions.study_model``: Spearman and Pearson correlation of the reconstruction error
   with the averaged instability coefficient ``mu_bar`` (§2.5), with bootstrap intervals (§9.6);
   with ``model=DIR`` and ``images=DIR`` the user's own diffusers folder is studied too, and its
   correlation decides the claim (:func:`.fig4c_judge.judge`);
2. Theorem 4.1 / 4.3 on trained models (§6.3, §8): ``P_inst(tau)``, ``p1``, ``p2`` with
   ``c = c_over_n n`` and the median ``||F(x)||^2 / n`` as the resolution (hence ``n``) grows
   (:func:`theorem41_numbers`), drawn by :mod:`.fig4c_figures`;
3. Lemma D.1 (§6.1): ``log Lambda_G`` by the one-pass divergence integral against the slogdet of
   the full Jacobian of the discrete generation map (:func:`jacobian_check`).

Every study resumes from its records (``largemodel.study.runner.run_study``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from simulate.experiments.common import ExperimentResult, replace_options, write_result
from theory._validate import require_ints
from theory.thm41 import lemma_d2_log_threshold

from largemodel.experiments.trained import HUTCHINSON_ROUTE, ModelSpec, check_spec, heldout_items, trained_model

__all__ = ["NAME", "CLAIM_IDS", "Fig4cOptions", "FAST", "FULL", "make_options", "SCALE_KEYS", "study_label",
           "theorem41_numbers", "jacobian_check", "run"]

NAME = "fig4c"
CLAIM_IDS = ["fig4c"]
#: the options the report's ``results.json`` lists as the suite's ``scale`` (the keys it always held)
SCALE_KEYS = ("study_model", "study_images", "steps", "trend_models", "trend_images", "jacobian_images", "user_images")


@dataclass(frozen=True)
class Fig4cOptions:
    """Options of the Fig. 4(c) experiment (validated on construction).

    Models (:data:`.trained.ModelSpec`): ``study_model`` (Fig. 4(c), Lemma D.1) and ``trend_models``
    (Theorem 4.1 / 4.3 by resolution; a small training set: the sparse generation distribution of
    Assumption 4.4). Images: ``study_images``, ``trend_images`` (held out), ``jacobian_images``,
    ``user_images`` (from the user's folder). ``steps``: Euler steps ``N``; ``jacobian_max_steps``
    caps them for the full Jacobian. Study: ``perturbations`` (``K``), ``eps_rms`` (``||D|| = eps_rms
    sqrt(n)``), ``probes`` (Hutchinson); ``jacobian_probes`` for Lemma D.1. Theorem 4.1: ``tau``,
    ``c_over_n`` (``c = c_over_n n``).
    """

    study_model: ModelSpec = ("digits", 8, 100, 1000)
    study_images: int = 48
    steps: int = 100
    trend_models: tuple[ModelSpec, ...] = (("digits", 8, 100, 1000), ("digits", 16, 100, 1000))
    trend_images: int = 48
    jacobian_images: int = 2
    user_images: int = 24
    perturbations: int = 8
    eps_rms: float = 1e-2
    probes: int = 4
    jacobian_max_steps: int = 50
    jacobian_probes: int = 8
    tau: float = 1.0
    c_over_n: float = 1.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "study_model", check_spec(self.study_model, "study_model"))
        object.__setattr__(self, "trend_models", tuple(check_spec(s, "trend_models") for s in self.trend_models))
        if not self.trend_models:
            raise ValueError("trend_models must name at least one model")
        require_ints(self, ("study_images", "steps", "trend_images", "jacobian_images", "user_images", "perturbations",
                            "probes", "jacobian_max_steps", "jacobian_probes"))
        for name in ("eps_rms", "tau", "c_over_n"):
            if not (math.isfinite(float(getattr(self, name))) and float(getattr(self, name)) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")

    def scale(self) -> dict[str, Any]:
        """The report's ``scale``: the fields :data:`SCALE_KEYS` (models as lists, as JSON writes them)."""
        out = {k: getattr(self, k) for k in SCALE_KEYS}
        out["trend_models"] = list(out["trend_models"])
        return out


FAST = Fig4cOptions()
FULL = dataclasses.replace(
    FAST, study_model=("digits", 8, None, 2500), study_images=200, steps=500,
    trend_models=tuple(("digits", s, 100, 2500) for s in (8, 16, 24)), trend_images=200, jacobian_images=8,
    user_images=100)


def make_options(full: bool = False, **overrides: Any) -> Fig4cOptions:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def study_label(spec: ModelSpec) -> str:
    """How the text names a model trained here, e.g. ``digits 8px model trained here on 100 images``."""
    data, size, train_images, _ = spec
    return f"{data} {size}px model trained here on {train_images or 'all'} images"


def _announce(step: Callable[[str], None], spec: ModelSpec) -> Path:
    """Say whether the model ``spec`` is loaded from the model cache or trained now, then get it."""
    from largemodel.training.cache import cache_entry, existing_model, shipped_model
    from largemodel.training.options import config_key, train_config

    data, size, train_images, steps = spec
    key = config_key(train_config(data, size, train_images, steps=steps))
    how = ("shipped with the package" if shipped_model(data, size, key) is not None
           else "loaded from the model cache" if existing_model(cache_entry(data, size, key), key)
           else "training it now, then cached")
    step(f"largemodel: model trained on {data} {size}px ({train_images or 'all'} images, {steps} steps): {how}")
    return trained_model(spec)


def _study(model_dir: Path, items: list, out: Path, cfg: Any, *, model: Any = None, title: str | None = None) -> dict[str, Any]:
    """Run (or resume) a study of ``items`` and summarise it. ``model``: the user's model, already
    loaded (its images are saved); ``None``: a model trained here, loaded on the CPU in float32.
    ``title``: the scatter's title (default: the model folder's name)."""
    from largemodel.models.load import load_model
    from largemodel.study.runner import run_study, summarize

    user = model is not None
    if not user:
        model = load_model(model_dir, device="cpu", dtype="float32")
    run_study(model, items, out, cfg, model_id=str(model_dir), progress=False, save_images=user)
    return summarize(out, title=title or model_dir.name)


def _study_has_trend(opts: Fig4cOptions, spec: ModelSpec) -> bool:
    """Whether the Fig. 4(c) study already measured the Theorem 4.1 quantities of trend model ``spec``:
    the same model, the same held-out images (the first ``trend_images``), the same Euler steps and
    Hutchinson probes (its one inversion pass records ``log_Lambda``, ``log_p_g``, ``||F(x)||^2 / n``)."""
    return spec == opts.study_model and opts.trend_images == opts.study_images


def theorem41_numbers(out: Path, tau: float = 1.0, c_over_n: float = 1.1) -> dict[str, Any]:
    """Theorem 4.1 (docs/theory.md §6.3) on a finished study in ``out``: the fractions of its images with
    ``log Lambda_G > log tau`` (``P_inst(tau)``), ``log p_g(x) >=`` Lemma D.2's level
    ``-(n/2) log 2 pi - c/2 - n log tau`` (``p1``) and ``||F(x)||^2 >= c`` (``p2``), ``c = c_over_n n``;
    whether ``P_inst >= 1 - p1 - p2`` holds, and the medians of ``||F(x)||^2 / n`` and ``log Lambda_G``."""
    import json

    from largemodel.study.runner import load_records

    meta = json.loads((out / "study.json").read_text())
    recs = [r for r in load_records(out, meta["signature"]) if "log_Lambda" in r]
    n = recs[0]["n"]
    c = c_over_n * n
    log_lam = np.array([r["log_Lambda"] for r in recs])
    log_pg = np.array([r["log_p_g"] for r in recs])
    z2 = np.array([r["z_norm2_over_n"] for r in recs]) * n
    threshold = float(lemma_d2_log_threshold(n, tau, c))  # Lemma D.2's p1 level
    p_inst = float(np.mean(log_lam > math.log(tau)))
    p1 = float(np.mean(log_pg >= threshold))
    p2 = float(np.mean(z2 >= c))
    return {"n": n, "images": len(recs), "P_inst": p_inst, "p1": p1, "p2": p2,
            "lower_bound": 1 - p1 - p2, "bound_holds": p_inst >= 1 - p1 - p2 - 1e-12,
            "median_z2_over_n": float(np.median(z2 / n)), "median_log_Lambda": float(np.median(log_lam))}


def jacobian_check(model_dir: Path, n_images: int, steps: int, probes: int = 8) -> dict[str, Any]:
    """Lemma D.1 (docs/theory.md §6.1) on a trained model: ``log Lambda_G = log |det J_G(z)|`` by the
    one-pass divergence integral (exact divergence, and Hutchinson with ``probes`` probes, §9.4) against
    the slogdet of the full Jacobian of the discrete generation map (§9.3), in float64."""
    from largemodel.study import instability as ins
    from largemodel.models.load import load_model
    from largemodel.training.train import model_dataset

    model = load_model(model_dir, device="cpu", dtype="float64", state_dtype=torch.float64)
    x = model_dataset(model_dir).heldout[:n_images].to(torch.float64)
    sig = model.sigmas(steps)
    one = ins.log_lambda_one_pass(model.velocity, x, sig, exact=True)
    hut = ins.log_lambda_one_pass(model.velocity, x, sig, probes=probes, generator=torch.Generator().manual_seed(0))
    jac = ins.log_lambda_jacobian(model.velocity, one["z"], sig)
    return {
        "steps": steps,
        "images": int(x.shape[0]),
        "log_Lambda_one_pass_exact": one["log_Lambda"].tolist(),
        "log_Lambda_one_pass_hutchinson": hut["log_Lambda"].tolist(),
        "log_Lambda_jacobian": jac.tolist(),
        "max_abs_diff_exact_vs_jacobian": float((one["log_Lambda"] - jac).abs().max()),
        "max_abs_diff_hutchinson_vs_exact": float((hut["log_Lambda"] - one["log_Lambda"]).abs().max()),
    }


def _user_study(root: Path, opts: Fig4cOptions, model: Path, images: Path, step: Callable[[str], None]) -> dict[str, Any]:
    from largemodel.models.load import load_model
    from largemodel.study.runner import StudyConfig, items_from_folder

    step(f"largemodel: study on {model}")
    m = load_model(model)  # loaded once: a real model folder takes minutes
    cfg = StudyConfig(steps=opts.steps, perturbations=opts.perturbations, eps_rms=opts.eps_rms, jvp_directions=0)
    items = items_from_folder(images, opts.user_images, 0, m.resolution, m.image_channels)
    user = _study(Path(model), items, root / "study-user", cfg, model=m)
    del m
    return {"model": str(model), **user}


def run(out_dir: Path, *, full: bool = False, progress: Callable[[str], None] | None = None,
        model: Path | None = None, images: Path | None = None, **overrides: Any) -> ExperimentResult:
    """Measure (resuming), judge, draw, write ``out_dir / "result.json"``; return the result.

    ``numbers``: ``study_digits`` (the study summary of the trained model), ``study_user`` (with
    ``model``), ``trend`` (:func:`theorem41_numbers` per trend model), ``lemma_d1_trained``
    (:func:`jacobian_check`), ``claim_figures`` (claim id -> figures); figures are relative to
    ``out_dir``. ``claim_verdicts``: ``fig4c`` (the verdict) and the supplements ``thm43_pinst``,
    ``lemma_d1`` (:func:`.fig4c_judge.judge`).

    Raises:
        ValueError: only one of ``model`` and ``images``, or a bad override (before anything runs).
    """
    from largemodel.study.runner import StudyConfig

    from largemodel.experiments.fig4c.figures import draw_figures
    from largemodel.experiments.fig4c.judge import judge

    if (model is None) != (images is None):
        raise ValueError("give both --model and --images to study your own model")
    opts = make_options(full, **overrides)
    step = progress or (lambda msg: None)
    root = Path(out_dir)
    t0 = time.perf_counter()
    numbers: dict[str, Any] = {}

    # 1. Fig. 4(c) on the trained study model
    folder = _announce(step, opts.study_model)
    label = study_label(opts.study_model)
    cfg = StudyConfig(steps=opts.steps, perturbations=opts.perturbations, eps_rms=opts.eps_rms, jvp_directions=1,
                      log_lambda="hutchinson", probes=opts.probes, images_per_batch=48, batch_size=512,
                      jacobian_route=HUTCHINSON_ROUTE)
    step(f"largemodel: study on {label}, {opts.study_images} held-out images")
    summary = _study(folder, heldout_items(folder, opts.study_images), root / "study-digits", cfg,
                     title=f"Fig. 4(c): {label}\n{opts.study_images} held-out images, {opts.steps} Euler steps")
    numbers["study_digits"] = {"model": str(folder), **summary}
    fig4c_figures = ["study-digits/scatter_mu_vs_error.png"] if "figure" in summary else []

    # 2. the user's own model, if given: it decides the Fig. 4(c) verdict
    if model is not None and images is not None:
        numbers["study_user"] = user = _user_study(root, opts, model, images, step)
        fig4c_figures = ["study-user/scatter_mu_vs_error.png"] if "figure" in user else []

    # 3. Theorem 4.1 / 4.3 quantities by resolution
    trend = []
    trend_cfg = StudyConfig(steps=opts.steps, perturbations=0, jvp_directions=0, log_lambda="hutchinson",
                            probes=opts.probes, images_per_batch=48, batch_size=512, jacobian_route=HUTCHINSON_ROUTE)
    for spec in opts.trend_models:
        tf = _announce(step, spec)
        step(f"largemodel: Theorem 4.1 quantities, {spec[0]} {spec[1]}px")
        if _study_has_trend(opts, spec):  # the Fig. 4(c) study inverted these very images: not twice
            sub = root / "study-digits"
        else:
            sub = root / f"trend-{spec[0]}-{spec[1]}"
            _study(tf, heldout_items(tf, opts.trend_images), sub, trend_cfg)
        trend.append({"data": spec[0], "size": spec[1], "train_images": spec[2], "folder": sub.name,
                      **theorem41_numbers(sub, opts.tau, opts.c_over_n)})
    numbers["trend"] = trend
    trend_figures = draw_figures(root, trend)

    # 4. Lemma D.1 on the trained study model
    step("largemodel: Lemma D.1, one-pass log Lambda vs full Jacobian")
    numbers["lemma_d1_trained"] = jacobian_check(folder, opts.jacobian_images, min(opts.steps, opts.jacobian_max_steps),
                                                 opts.jacobian_probes)

    judged = judge(numbers, label, Path(model).name if model is not None else None)
    numbers["claim_figures"] = {"fig4c": fig4c_figures, "thm43_pinst": trend_figures}
    result = ExperimentResult(
        name=NAME, claim_ids=list(CLAIM_IDS), verdict=judged.overall,
        params={"full": full, **dataclasses.asdict(opts), "model": model, "images": images},
        numbers=numbers, figures=[*fig4c_figures, *trend_figures], seconds=time.perf_counter() - t0,
        claim_verdicts=dict(judged.claims))
    write_result(root, result)
    return result
