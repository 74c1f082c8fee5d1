"""The report's "Which images fail" section: predicting bad reconstructions from one inversion pass.

On the digits model trained here (``largemodel.train.cached_model``, the large-model suite's quick
study model) every held-out image (``model_dataset(folder).heldout``, up to ``images``) gets

- the one-pass scores of ``largemodel.scores`` (Lemma D.1's ``log Lambda_G`` and ``log p_g`` by
  the Hutchinson divergence integral, ``||z~||^2 / n``, the inversion's velocity statistics),
- the regeneration scores the study uses (``mu_bar``, ``lambda_jvp``) for comparison,
- its reconstruction error (latent MSE of ``G(F~(x))``),

resumably (``simulate.store.RecordStore``). ``largemodel.predict.evaluate_scores`` then gives,
for "worst decile by reconstruction error", the AUROC and average precision of each score and
of the cross-validated combinations, with bootstrap 95% intervals, and each score's cost
relative to one reconstruction (``largemodel.scores.score_costs``, and measured seconds).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["FAILURE_SCALES", "failure_records", "run_failure_section", "failure_markdown"]

#: a model is (data, size, train images or None for all, training steps) as in ``largemodel_suite.SCALES``
FAILURE_SCALES: dict[str, dict[str, Any]] = {
    "quick": {"model": ("digits", 8, 100, 1000), "images": 256, "steps": 100, "probes": 1, "perturbations": 8,
              "jvp_directions": 1, "n_boot": 2000},
    "full": {"model": ("digits", 8, 100, 2500), "images": 256, "steps": 500, "probes": 8, "perturbations": 8,
             "jvp_directions": 1, "n_boot": 5000},
}

#: what each score needs, for the table
NEEDS = {
    "log_Lambda": "inversion + Hutchinson", "neg_log_p_g_over_n": "inversion + Hutchinson",
    "z_norm2_over_n": "inversion", "velocity_rms": "inversion", "velocity_growth": "inversion",
    "velocity_change": "inversion", "mu_bar": "K regenerations", "lambda_jvp": "JVP through G",
    "combined_logistic": "one pass (all one-pass scores)", "combined_ridge": "one pass (all one-pass scores)",
}


def failure_records(model_dir: Path, out: Path, scale: dict[str, Any], *, seed: int = 0,
                    images_per_batch: int = 16, progress: Callable[[str], None] | None = None,
                    model: Any = None) -> list[dict[str, Any]]:
    """Score every held-out image (resumable): one-pass and regeneration scores and the error.
    ``model``: ``model_dir`` already loaded (loaded on the CPU in float32 when ``None``)."""
    from largemodel.model import load_model
    from largemodel.scores import ScoreConfig, score_group, study_generator
    from largemodel.train import model_dataset
    from simulate.store import RecordStore, output_lock

    cfg = ScoreConfig(steps=scale["steps"], probes=scale["probes"], seed=seed)
    held = model_dataset(model_dir).heldout[: scale["images"]]
    keys = [f"heldout{i:04d}" for i in range(held.shape[0])]
    params = {"model": str(model_dir), "config": cfg.__dict__, "perturbations": scale["perturbations"], "eps_rms": 1e-2,
              "jvp_directions": scale["jvp_directions"], "images_per_batch": images_per_batch}
    with output_lock(out, command="pfode report: which images fail"):
        model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
        store = RecordStore(out, params)
        for start in range(0, len(keys), images_per_batch):
            group = [k for k in keys[start : start + images_per_batch] if not store.done(k)]
            if not group:
                continue
            idx = [keys.index(k) for k in group]
            t0 = time.perf_counter()
            recs, _ = score_group(model, held[idx], cfg, study_generator(seed, group[0]),
                                  perturbations=scale["perturbations"], jvp_directions=scale["jvp_directions"])
            dt = (time.perf_counter() - t0) / len(group)
            for k, r in zip(group, recs):
                r.pop("velocity_norms", None)
                store.add(k, {**r, "key": k, "seconds": dt})
            if progress is not None:
                progress(f"which images fail: {len(store)}/{len(keys)} images scored")
        return [store.get(k) for k in keys]


def measured_seconds(model_dir: Path, scale: dict[str, Any], images: int = 16, seed: int = 0,
                     model: Any = None) -> dict[str, float]:
    """Wall-clock seconds per image of a reconstruction (invert + regenerate), a plain inversion and
    the one-pass scores (Hutchinson inversion), on one batch of held-out images."""
    from largemodel.model import load_model
    from largemodel.ode import generate, invert
    from largemodel.scores import ScoreConfig, one_pass_scores
    from largemodel.train import model_dataset

    model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
    x = model.encode(model_dataset(model_dir).heldout[:images])
    sig = model.sigmas(scale["steps"])
    cfg = ScoreConfig(steps=scale["steps"], probes=scale["probes"], seed=seed)
    with torch.no_grad():
        t0 = time.perf_counter()
        z = invert(model.velocity, x, sig)
        t1 = time.perf_counter()
        generate(model.velocity, z, sig)
        t2 = time.perf_counter()
        one_pass_scores(model.velocity, x, sig, cfg, torch.Generator().manual_seed(seed))
        t3 = time.perf_counter()
    b = x.shape[0]
    return {"reconstruction": (t2 - t0) / b, "inversion": (t1 - t0) / b, "one_pass": (t3 - t2) / b}


def spatial_maps(model_dir: Path, out: Path, result: dict[str, Any], scale: dict[str, Any], *, n_stat: int = 12,
                 n_figure: int = 4, seed: int = 0, model: Any = None) -> dict[str, Any]:
    """Instability maps (``largemodel.maps``) of the ``n_figure`` worst-reconstructed held-out images,
    and the spatial Spearman between instability and error maps over the first ``n_stat`` images."""
    import numpy as np

    from largemodel.maps import instability_map, maps_figure
    from largemodel.model import load_model
    from largemodel.study import ImageItem, StudyConfig
    from largemodel.train import model_dataset

    model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
    held = model_dataset(model_dir).heldout
    cfg = StudyConfig(steps=scale["steps"], perturbations=scale["perturbations"], eps_rms=1e-2, jvp_directions=0,
                      log_lambda="none", images_per_batch=1, seed=seed)
    item = lambda k: ImageItem(k, (lambda i=int(k[7:]): held[i]))  # noqa: E731 - keys are heldoutNNNN
    worst = [result["keys"][i] for i in np.argsort(result["errors"])[::-1][:n_figure]]
    fig = maps_figure(model, [item(k) for k in worst], cfg, out / "maps_worst.png")
    maps = [instability_map(model, held[i], f"heldout{i:04d}", cfg) for i in range(min(n_stat, held.shape[0]))]
    out_d: dict[str, Any] = {"figure": fig["figure"], "worst": fig["images"]}
    for key in ("spatial_spearman", "spatial_spearman_live"):
        rhos = [m[key] for m in maps]
        finite = [r for r in rhos if r == r]
        out_d[key] = rhos
        out_d[f"median_{key}"] = float(np.median(finite)) if finite else float("nan")
        out_d[f"fraction_positive_{key}"] = float(np.mean([r > 0 for r in finite])) if finite else float("nan")
    return out_d


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
        ``{"markdown", "figures", "result", "costs", "seconds", "model"}`` (JSON-ready).
    """
    from largemodel.model import load_model
    from largemodel.predict import calibration_figure, evaluate_scores
    from largemodel.scores import ONE_PASS_SCORES, score_costs
    from largemodel.train import cached_model
    from simulate.store import atomic_write_text, json_ready

    scale = FAILURE_SCALES["quick" if quick else "full"]
    step = progress or (lambda msg: None)
    data_name, size, n_train, train_steps = scale["model"]
    step(f"which images fail: model trained on {data_name} {size}px (trained once, then cached)")
    folder = cached_model(data_name, size, n_train, steps=train_steps, progress=False)
    out = out_dir / "largemodel" / "failure"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model(folder, device="cpu", dtype="float32")  # loaded once for the whole section
        records = failure_records(folder, out, scale, progress=step, model=model)
        seconds = measured_seconds(folder, scale, model=model)
    finally:
        torch.set_num_threads(before)
    scores = [*ONE_PASS_SCORES, "mu_bar", "lambda_jvp"]
    result = evaluate_scores(records, scores, combine=ONE_PASS_SCORES, n_boot=scale["n_boot"])
    costs = score_costs(scale["steps"], "euler", scale["probes"], perturbations=scale["perturbations"],
                        jvp_directions=scale["jvp_directions"])
    label = f"{data_name} {size}px model trained here on {n_train or 'all'} images ({scale['steps']} Euler steps)"
    fig = calibration_figure(result, out / "roc_calibration.png", title=f"which images fail: {label}")
    rel = str(fig.relative_to(out_dir))
    step("which images fail: instability maps")
    torch.set_num_threads(1)
    try:
        maps = spatial_maps(folder, out, result, scale, model=model)
    finally:
        torch.set_num_threads(before)
    maps_rel = str(Path(maps["figure"]).relative_to(out_dir))
    markdown = failure_markdown(result, costs, seconds, label, rel)
    markdown += (f"\nInstability maps (per-pixel spread of the K = {scale['perturbations']} perturbed regenerations "
                 f"per unit RMS perturbation, next to the actual error map): spatial Spearman between the two maps, "
                 f"median {maps['median_spatial_spearman']:.2f} over {len(maps['spatial_spearman'])} held-out "
                 f"images; over the unclamped pixels only (saturated pixels have zero error and zero spread) "
                 f"median {maps['median_spatial_spearman_live']:.2f} "
                 f"({100 * maps['fraction_positive_spatial_spearman_live']:.0f}% of images positive)."
                 f"\n\n![{maps_rel}]({maps_rel})\n")
    data = json_ready({"markdown": markdown, "figures": [rel, maps_rel], "result": result, "costs": costs,
                       "seconds": seconds, "maps": maps, "model": str(folder)})
    atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in data.items() if k != "markdown"}, indent=1))
    atomic_write_text(out / "section.md", markdown)
    return data
