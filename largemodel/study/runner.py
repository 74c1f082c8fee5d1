r"""The reconstruction-instability study (paper Fig. 4c, Fig. A1, App. E.2, App. F).

For each image ``x`` (latent of a real image, the paper's ``p_r``):

1. invert: ``z~ = F~(x)`` (Euler or Heun on the model's sigma grid, on the field of the image's
   conditioning: the null prompt without guidance unless asked, docs/theory.md §10.7);
2. regenerate: ``x^ = G(z~)``; reconstruction error in latent and pixel space (MSE, PSNR);
3. instability at ``z~``: the paper's ``mu_bar`` over ``K`` perturbations of RMS size ``eps_rms``
   (the ``K`` regenerations batched with the reconstruction), ``lambda_G`` along random
   directions by JVP, optionally ``||J_G||_2`` by power iteration and ``log Lambda_G`` in the
   inversion pass (Hutchinson or exact divergence), which also gives ``log p_g(x)``;
4. ``||z~||^2 / n`` (Theorem 4.1's ``p2`` statistic).

Records are appended one JSON line per image as soon as its group is done, keyed on the
image's name, content and conditioning (``record_key``: the name, the SHA-256 of the file's bytes or
of the loaded pixels, the prompt and ``W``), so a rerun with the same parameters skips exactly the
images it has already studied, and an image with other pixels, prompt or ``W`` is studied again.
A group of images with several captions runs one sub-group per prompt (each on its conditioned field). An image that
cannot be read is skipped with one warning line and a record saying why. With several processes
(``accelerate launch``) each process takes every ``world``-th image and writes its own file;
``summarize`` merges them and reports the images of the latest run only (``study.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from simulate.store import RecordStore, atomic_write_text, json_ready, output_lock
from theory.estimators import mu_from_outputs, perturbed_rows

from largemodel.study import instability as ins
from largemodel.study.ode import generate, invert, nfe_per_map
from largemodel.models.flow_model import jvp_reductions
from largemodel.models.routes import resolve_route
from largemodel.models.load import FlowModel
from largemodel.study.config import StudyConfig
from largemodel.study.launch import check_owner, owed, owner_command, wait_for_owner, wait_for_ranks
from largemodel.study.items import (
    ImageItem,
    _pixels,
    _print_warning,
    _resolve,
    _Warnings,
    image_generators,
    items_from_folder,
    load_records,
    pixel_digest,
    recon_path,
    record_key,
)

__all__ = [
    "StudyConfig", "ImageItem", "run_study", "load_records", "summarize", "items_from_folder", "recon_path",
    "record_key", "pixel_digest",
]

#: how records are keyed; part of the resume signature, so files keyed otherwise are set aside
KEY_SCHEME = "name#content-sha256"

#: the lock holder's command, shown to a second run on the same folder
LOCK_COMMAND = "pfode largemodel study"

#: correlations reported by ``summarize``: (x key, y key)
CORRELATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("mu_bar", "mse_latent"),
    ("mu_bar", "mse_pixel"),
    ("lambda_jvp", "mse_latent"),
    ("spectral_norm", "mse_latent"),
    ("log_Lambda", "mse_latent"),
    ("z_norm2_over_n", "mse_latent"),
)


def _psnr(mse: float) -> float:
    """PSNR in dB of images on a [0, 1] scale."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def _mse01(a: Tensor, b: Tensor) -> Tensor:
    """Per-row MSE of images given in [-1, 1], measured on the [0, 1] scale."""
    return (((a - b) / 2.0).to(torch.float64) ** 2).flatten(1).mean(1)


def _study_group(
    model: FlowModel, cfg: StudyConfig, images: Tensor, sigmas: Tensor, gen: ins.Generators
) -> tuple[list[dict[str, Any]], Tensor, Tensor]:
    """Invert, regenerate and measure a group of images; return records and reconstructions."""
    vel = model.velocity
    t0 = time.perf_counter()
    x = model.encode(images)
    n = x[0].numel()
    rec: dict[str, Any] = {}
    with torch.no_grad():
        route = resolve_route(cfg.jacobian_route, model.device.type)
        if cfg.log_lambda == "none":
            z = invert(vel, x, sigmas, solver=cfg.solver)
        else:
            one = ins.log_lambda_one_pass(
                vel, x, sigmas, solver=cfg.solver, probes=cfg.probes, exact=cfg.log_lambda == "exact", generator=gen,
                route=route,
            )
            z = one["z"]
            rec["log_Lambda"] = one["log_Lambda"].tolist()
            rec["log_p_g"] = one["log_p_g"].tolist()
        b, k, dl = x.shape[0], cfg.perturbations, cfg.jvp_directions
        method = cfg.lambda_method if cfg.lambda_method != "auto" else ("fd" if model.device.type == "cuda" else "jvp")
        eps = cfg.eps_rms * math.sqrt(n)  # ||D||
        # the reconstruction, the K perturbed regenerations and the central-difference rows of
        # lambda (method fd) share the transformer calls
        rows = [z]
        if k > 0:
            d_mu = ins.unit_directions((b * k, *z.shape[1:]), gen, z).view(b, k, *z.shape[1:])
            rows.append(perturbed_rows(z, d_mu, eps))
        if dl > 0:
            dirs = ins.unit_directions((b * dl, *z.shape[1:]), gen, z).view(b, dl, *z.shape[1:])
            if method == "fd":
                rows.append(ins.fd_rows(z, dirs, eps))
        allrows = torch.cat(rows)
        out = torch.cat(
            [generate(vel, allrows[i : i + cfg.batch_size], sigmas, solver=cfg.solver) for i in range(0, allrows.shape[0], cfg.batch_size)]
        )
        xr = out[:b]
        if k > 0:
            mu = mu_from_outputs(out[b : b + b * k], xr, eps)
            rec["mu_bar"] = mu.mean(1).tolist()
            rec["mu_max"] = mu.max(1).values.tolist()
            rec["mu_std"] = (mu.std(1) if k > 1 else torch.zeros(b, dtype=torch.float64)).tolist()
    if dl > 0:
        if method == "fd":
            lam = ins.fd_lambda_from_outputs(out[b + b * k :], eps, b, dl)
        else:
            lam = ins.jvp_lambda(vel, z, sigmas, dirs, solver=cfg.solver, batch_size=cfg.batch_size)
        rec["lambda_jvp"] = lam.mean(1).tolist()  # lambda_G whichever the method
        rec["lambda_method"] = [method] * b
    if cfg.power_iters > 0:
        sn = ins.spectral_norm_G(vel, z, sigmas, solver=cfg.solver, iters=cfg.power_iters, generator=gen,
                                 route=route, network_dtype=model.dtype, fd_scheme=cfg.fd_scheme).value
        rec["spectral_norm"] = sn.tolist()
        if route == "vjp-fd":
            rec["fd_scheme"] = [cfg.fd_scheme] * b
    if cfg.power_iters > 0 or cfg.log_lambda == "hutchinson":
        rec["jacobian_route"] = [route] * b
    zf = z.flatten(1).to(torch.float64)
    rec["z_norm2_over_n"] = ((zf * zf).sum(1) / n).tolist()
    rec["mse_latent"] = ((xr - x).flatten(1).to(torch.float64) ** 2).mean(1).tolist()
    pixel_rec = model.decode(xr)
    imgs = images.to(pixel_rec.device, pixel_rec.dtype)
    mse_pix = _mse01(pixel_rec, imgs)
    rec["mse_pixel"] = mse_pix.tolist()
    rec["psnr"] = [_psnr(float(m)) for m in mse_pix]
    if model.vae is not None:
        rec["mse_pixel_vae_only"] = _mse01(model.decode(x), imgs).tolist()
    rec["n"] = [n] * b
    dt = (time.perf_counter() - t0) / b
    rec["seconds"] = [dt] * b
    records = [{key: vals[i] for key, vals in rec.items()} for i in range(b)]
    return records, pixel_rec.cpu(), z.cpu()


def _save_png(img: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import io

    from theory.output.files import write_bytes

    arr = ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    if arr.shape[2] == 1:
        plt.imsave(buf, arr[:, :, 0], cmap="gray", vmin=0, vmax=1, format="png")
    else:
        plt.imsave(buf, arr, format="png")
    write_bytes(path, buf.getvalue())  # atomic, recorded in the study folder's manifest, no link followed


def run_study(
    model: FlowModel,
    items: Sequence[ImageItem],
    out: str | Path,
    cfg: StudyConfig,
    *,
    model_id: str | None = None,
    rank: int = 0,
    world: int = 1,
    run_id: str | None = None,
    save_images: bool = True,
    progress: bool = True,
    on_record: Callable[[str, dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Run (or resume) the study on ``items``; return the records file of this process.

    Holds ``output_lock(out)`` throughout; with ``world > 1`` rank 0 holds it for the launch
    ``run_id`` and every other rank checks that the lock names ``run_id`` before writing anything
    and before each record (``largemodel.study.launch``), so a folder another run holds is refused
    on every rank. Rank 0 then waits for the other ranks' records while they make progress, with no
    collective call (``launch.wait_for_ranks``). Each image's record is keyed on its name and content
    (``record_key``); recorded keys are skipped. An image that cannot be read (or holds
    non-finite pixels) is skipped: one warning line and a record ``{"key", "record_key",
    "skipped": why}``. ``study.json`` (written atomically) lists the record keys of this run,
    which ``summarize`` reports.

    Args:
        model: a loaded ``FlowModel``.
        items: images (names must be unique).
        out: the study folder (records, reconstructions, summary).
        cfg: parameters.
        model_id: identifies the model in the resume signature (default: its folder path).
        rank, world: this process and the number of processes (images are split round-robin).
        run_id: the launch's run id, shared by its ranks (required when ``world > 1``).
        save_images: write each reconstruction to ``recon_path(out, record_key)`` (gallery).
        on_record: called after each image is recorded (progress hooks, tests).
        warn: receives each warning line (default: printed to stderr as
            ``pfode: warning: skipped <image>: <why>``).

    Raises:
        ValueError: no items, repeated names, the folder is in use (``OutputBusy``), or (one
            process) none of the images can be read.
    """
    names = [it.key for it in items]
    if len(set(names)) != len(names):
        raise ValueError("image keys must be unique")
    if not items:
        raise ValueError("no images to study")
    if world > 1 and not run_id:
        raise ValueError("run_id: several processes need the launch's run id (largemodel.study.launch)")
    out = Path(out)
    command = owner_command(LOCK_COMMAND, run_id) if world > 1 else LOCK_COMMAND
    with output_lock(out, command=command) if rank == 0 else contextlib.nullcontext():
        if rank > 0:
            out.mkdir(parents=True, exist_ok=True)
            wait_for_owner(out, str(run_id))  # before writing anything: a foreign run is refused here
        return _run_locked(model, items, out, cfg, model_id=model_id, rank=rank, world=world, run_id=run_id,
                           save_images=save_images, progress=progress, on_record=on_record,
                           warn=warn if warn is not None else _print_warning)


def _run_locked(
    model: FlowModel, items: Sequence[ImageItem], out: Path, cfg: StudyConfig, *, model_id: str | None,
    rank: int, world: int, run_id: str | None, save_images: bool, progress: bool,
    on_record: Callable[[str, dict[str, Any]], None] | None, warn: Callable[[str], None],
) -> Path:
    params = {
        "config": cfg.signature_params(),
        "model": model_id if model_id is not None else str(model.info.path),
        "resolution": model.resolution,
        "dtype": str(model.dtype),
        "guidance": model.guidance,
        "record_keys": KEY_SCHEME,
    }
    name = "records.jsonl" if world == 1 else f"records.rank{rank}.jsonl"
    owner = (lambda: check_owner(out, str(run_id))) if rank > 0 else (lambda: None)
    owner()
    store = RecordStore(out, params, name=name)
    w = model.conditioning.guidance_scale
    prompt_of = {it.key: it.prompt if it.prompt is not None else model.conditioning.prompt for it in items}
    resolved = [(it, *_resolve(it, prompt_of[it.key], w)) for it in items]  # keys carry prompt and W
    done = {r["record_key"] for r in load_records(out, store.signature)}
    failed = {r["record_key"]: r["skipped"] for r in load_records(out, store.signature, skipped=True)}
    # split the full list (not the remaining one) so that processes started at different
    # moments never disagree on who owns an image; recorded images are then skipped
    mine = resolved[rank::world]
    todo = [(it, key, why) for it, key, why in mine if key not in done and key not in failed]
    meta = {"params": params, "signature": store.signature, "keys": [k for _, k, _ in resolved]}
    if rank == 0:  # one writer of the run's summary file
        atomic_write_text(out / "study.json", json.dumps(json_ready(meta), indent=2))
    warnings = _Warnings(warn, studied=any(k in done for _, k, _ in mine))
    for it, key, _ in mine:
        if key in failed:
            warnings.add(f"skipped {it.key}: {failed[key]}")
    sigmas = model.sigmas(cfg.steps)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"study ({len(items) - len(todo)} done)", unit="img", disable=not progress)
    nfe = nfe_per_map(cfg.solver, cfg.steps)
    started = time.perf_counter()
    recorded = done | set(failed)

    def study(group: list[tuple[ImageItem, str, Tensor]]) -> None:
        for prompt in dict.fromkeys(prompt_of[g[0].key] for g in group):  # one conditioning per sub-group
            sub = [g for g in group if prompt_of[g[0].key] == prompt]
            m = model if prompt == model.conditioning.prompt else model.conditioned(prompt)
            gen = image_generators(cfg.seed, [g[1] for g in sub])  # each image's draws from its own record key
            with jvp_reductions(cfg.jvp_reductions):
                records, recon, _ = _study_group(m, cfg, torch.stack([g[2] for g in sub]), sigmas, gen)
            for (it, key, _), rec, img in zip(sub, records, recon):
                if key in recorded:  # recomputed with its group only so that the others see the same batch
                    continue
                rec.update(key=it.key, record_key=key, nfe_per_map=nfe, **m.conditioning.record())
                owner()
                if save_images:
                    _save_png(img, recon_path(out, key))
                store.add(key, rec)
                warnings.studied_one()
                if on_record is not None:
                    on_record(it.key, rec)
                bar.update(1)

    # fixed groups of this process's list: a resumed group is computed whole again (its recorded
    # images are not recorded twice), so every record comes from the batch an uninterrupted run uses
    size = cfg.images_per_batch
    try:
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            if all(key in recorded for _, key, _ in chunk):
                continue
            group = []
            for it, key, why in chunk:
                pixels = None
                if why is None and key not in failed:
                    try:
                        pixels = _pixels(it)
                    except (ValueError, OSError) as err:
                        why = str(err)
                if pixels is not None:
                    group.append((it, key, pixels))
                elif key not in recorded:
                    owner()
                    store.add(key, {"key": it.key, "record_key": key, "skipped": why})
                    warnings.add(f"skipped {it.key}: {why}")
                    bar.update(1)
            if group:
                study(group)
    finally:
        bar.close()
    warnings.finish(single_process=world == 1, total=len(mine))
    if rank == 0 and world > 1:
        studied = max(len(todo), 1)
        others = [k for r in range(1, world) for _, k, _ in resolved[r::world]]
        left = wait_for_ranks(lambda: owed(_recorded(out, store.signature), others),
                              seconds_per_image=(time.perf_counter() - started) / studied)
        if left:
            warn(f"{left} images of the other processes are not recorded (a process stopped); "
                 "the summary covers the others: rerun the same command to finish them")
    return store.path


def _recorded(out: Path, signature: str) -> set[str]:
    """Record keys recorded in any process's file of ``out`` (studied or skipped)."""
    return {r["record_key"] for skipped in (False, True) for r in load_records(out, signature, skipped=skipped)}


def summarize(
    out: str | Path,
    *,
    keys: Collection[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    title: str | None = None,
) -> dict[str, Any]:
    """Correlations (Pearson, Spearman, bootstrap 95% intervals) and the Fig. 4c scatter.

    Only the images of ``keys`` (record keys; default: those of the latest run, from
    ``study.json``) are summarised, so a folder that once held 4 images and was then run on 2
    reports 2. Skipped images are listed under ``skipped``. Correlations are computed on
    logarithms of the positive quantities (errors, coefficients), which leaves Spearman
    unchanged and makes Pearson measure the log-log relation. Writes ``summary.json`` and
    ``scatter_mu_vs_error.png`` into ``out``.
    """
    from largemodel.study.plots import scatter_instability
    from largemodel.study.stats import correlate

    out = Path(out)
    meta = json.loads((out / "study.json").read_text()) if (out / "study.json").is_file() else {}
    if keys is None:
        keys = meta.get("keys")
    records = load_records(out, meta.get("signature"), keys=keys)
    if not records:
        raise ValueError(f"no study records in {out}")
    summary: dict[str, Any] = {"n_images": len(records), "params": meta.get("params"), "correlations": {}}
    skipped = load_records(out, meta.get("signature"), keys=keys, skipped=True)
    if skipped:
        summary["skipped"] = [{"key": r.get("key"), "reason": r.get("skipped")} for r in skipped]
    for xk, yk in CORRELATION_PAIRS:
        pairs = [(r[xk], r[yk]) for r in records if xk in r and yk in r]
        if len(pairs) < 3:
            continue
        xs, ys = np.array(pairs, dtype=float).T
        if xk != "log_Lambda":
            xs = np.log(xs)
        ys = np.log(ys)
        summary["correlations"][f"{xk}~{yk}"] = correlate(xs, ys, n_boot=n_boot, seed=seed)
    for key in ("mse_latent", "mse_pixel", "psnr", "mu_bar", "lambda_jvp", "spectral_norm", "log_Lambda", "z_norm2_over_n"):
        vals = np.array([r[key] for r in records if key in r], dtype=float)
        if vals.size:
            summary.setdefault("medians", {})[key] = float(np.median(vals))
    main = summary["correlations"].get("mu_bar~mse_latent")
    if main is not None:
        summary["figure"] = scatter_instability(
            records, "mu_bar", "mse_latent", out / "scatter_mu_vs_error.png",
            title=title or "reconstruction error vs averaged instability coefficient", stats=main,
            xlabel="averaged instability coefficient mu_bar of G",
            ylabel="reconstruction error (mean squared error, latent space)",
        )
    atomic_write_text(out / "summary.json", json.dumps(json_ready(summary), indent=2))
    return summary

