r"""Measurements of the "which images fail" experiment (:mod:`.failure`): per-image scores and errors
(resumable), wall-clock seconds per image, and spatial instability maps.

The scores are those of ``largemodel.diagnose.scores`` (Lemma D.1's ``log Lambda_G`` and ``log p_g`` by the
Hutchinson divergence integral, docs/theory.md §6.1, §9.4; ``||z~||^2 / n``; the inversion's velocity
statistics) and the study's regeneration scores ``mu_bar`` (§2.5) and ``lambda_jvp`` (§9.1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from largemodel.experiments.trained import HUTCHINSON_ROUTE

__all__ = ["failure_records", "measured_seconds", "spatial_maps"]


def _score_config(opts: Any) -> Any:
    """The one-pass scores' configuration of the experiment (Hutchinson by VJP: ``HUTCHINSON_ROUTE``)."""
    from largemodel.diagnose.scores import ScoreConfig

    return ScoreConfig(steps=opts.steps, probes=opts.probes, seed=opts.seed, jacobian_route=HUTCHINSON_ROUTE)


def failure_records(model_dir: Path, out: Path, opts: Any, *, progress: Callable[[str], None] | None = None,
                    model: Any = None) -> list[dict[str, Any]]:
    """Score every held-out image (up to ``opts.images``; resumable in ``out``, a ``RecordStore``): the
    one-pass and regeneration scores and the reconstruction error (latent MSE of ``G(F~(x))``).
    ``model``: ``model_dir`` already loaded (loaded on the CPU in float32 when ``None``)."""
    from largemodel.models.load import load_model
    from largemodel.diagnose.scores import score_group, image_generators
    from largemodel.training.train import model_dataset
    from simulate.store import RecordStore, output_lock

    seed, images_per_batch = opts.seed, opts.images_per_batch
    cfg = _score_config(opts)
    held = model_dataset(model_dir).heldout[: opts.images]
    keys = [f"heldout{i:04d}" for i in range(held.shape[0])]
    params = {"model": str(model_dir), "config": cfg.__dict__, "perturbations": opts.perturbations,
              "eps_rms": opts.eps_rms, "jvp_directions": opts.jvp_directions, "images_per_batch": images_per_batch}
    with output_lock(out, command="pfode report: which images fail"):
        model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
        store = RecordStore(out, params)
        for start in range(0, len(keys), images_per_batch):
            group = [k for k in keys[start : start + images_per_batch] if not store.done(k)]
            if not group:
                continue
            idx = [keys.index(k) for k in group]
            t0 = time.perf_counter()
            recs, _ = score_group(model, held[idx], cfg, image_generators(seed, group),
                                  perturbations=opts.perturbations, jvp_directions=opts.jvp_directions)
            dt = (time.perf_counter() - t0) / len(group)
            for k, r in zip(group, recs):
                r.pop("velocity_norms", None)
                store.add(k, {**r, "key": k, "seconds": dt})
            if progress is not None:
                progress(f"which images fail: {len(store)}/{len(keys)} images scored")
        return [store.get(k) for k in keys]


def measured_seconds(model_dir: Path, opts: Any, model: Any = None) -> dict[str, float]:
    """Wall-clock seconds per image of a reconstruction (invert + regenerate), a plain inversion and
    the one-pass scores (Hutchinson inversion), on one batch of ``opts.timing_images`` held-out images."""
    from largemodel.models.load import load_model
    from largemodel.study.ode import generate, invert
    from largemodel.diagnose.scores import one_pass_scores
    from largemodel.training.train import model_dataset

    model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
    x = model.encode(model_dataset(model_dir).heldout[: opts.timing_images])
    sig = model.sigmas(opts.steps)
    cfg = _score_config(opts)
    with torch.no_grad():
        t0 = time.perf_counter()
        z = invert(model.velocity, x, sig)
        t1 = time.perf_counter()
        generate(model.velocity, z, sig)
        t2 = time.perf_counter()
        one_pass_scores(model.velocity, x, sig, cfg, torch.Generator().manual_seed(opts.seed))
        t3 = time.perf_counter()
    b = x.shape[0]
    return {"reconstruction": (t2 - t0) / b, "inversion": (t1 - t0) / b, "one_pass": (t3 - t2) / b}


def spatial_maps(model_dir: Path, out: Path, result: dict[str, Any], opts: Any, *, model: Any = None) -> dict[str, Any]:
    """Instability maps (``largemodel.diagnose.maps``) of the ``opts.map_figure_images`` worst-reconstructed
    held-out images (figure ``out / "maps_worst.png"``), and the spatial Spearman between instability
    and error maps over the first ``opts.map_images`` images (all pixels, and the unclamped ones)."""
    import numpy as np

    from largemodel.diagnose.maps import instability_map, maps_figure
    from largemodel.models.load import load_model
    from largemodel.study.runner import ImageItem, StudyConfig
    from largemodel.training.train import model_dataset

    model = model if model is not None else load_model(model_dir, device="cpu", dtype="float32")
    held = model_dataset(model_dir).heldout
    cfg = StudyConfig(steps=opts.steps, perturbations=opts.perturbations, eps_rms=opts.eps_rms, jvp_directions=0,
                      log_lambda="none", images_per_batch=1, seed=opts.seed)
    item = lambda k: ImageItem(k, (lambda i=int(k[7:]): held[i]))  # noqa: E731 - keys are heldoutNNNN
    worst = [result["keys"][i] for i in np.argsort(result["errors"])[::-1][: opts.map_figure_images]]
    fig = maps_figure(model, [item(k) for k in worst], cfg, out / "maps_worst.png")
    maps = [instability_map(model, held[i], f"heldout{i:04d}", cfg) for i in range(min(opts.map_images, held.shape[0]))]
    out_d: dict[str, Any] = {"figure": fig["figure"], "worst": fig["images"]}
    for key in ("spatial_spearman", "spatial_spearman_live"):
        rhos = [m[key] for m in maps]
        finite = [r for r in rhos if r == r]
        out_d[key] = rhos
        out_d[f"median_{key}"] = float(np.median(finite)) if finite else float("nan")
        out_d[f"fraction_positive_{key}"] = float(np.mean([r > 0 for r in finite])) if finite else float("nan")
    return out_d
