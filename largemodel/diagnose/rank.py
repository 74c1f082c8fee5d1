r"""``pfode largemodel rank``: rank a folder of images by predicted reconstruction risk (issue 15).

One inversion pass per image (``largemodel.diagnose.scores.one_pass_scores``: Lemma D.1's ``log Lambda_G``
and ``log p_g`` by the Hutchinson divergence integral, ``||z~||^2 / n`` and the inversion's
velocity statistics; no regeneration), then

- ``ranking.csv``: every image, riskiest first (by ``--risk``), with each score;
- ``gallery_riskiest.png``: the ``--gallery`` riskiest images (none with ``--gallery 0``);
- with ``--verify K``: the top and bottom ``K`` are reconstructed (``G(F~(x))``) and
  ``verify.csv`` / ``verify.png`` show predicted risk against the actual error.

Images are keyed by the SHA-256 of their file content, so a rerun (same parameters) skips the
images already scored, renamed or not, and an interrupted run resumes; the output folder is
locked for the run (``simulate.store.output_lock``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from simulate.store import RecordStore, atomic_write_text, claim_folder, output_lock
from theory.figures import save_png

from largemodel.models.images import file_digest
from largemodel.diagnose.score_names import DEFAULT_RISK
from largemodel.diagnose.scores import ScoreConfig, available_scores, score_group, image_generators

__all__ = ["run_rank", "rank_folder", "DEFAULT_RISK"]

def _check_args(args: argparse.Namespace) -> ScoreConfig:
    """What the parser cannot check (the numeric bounds are ``reports.cli_checks.FLAG_RULES``')."""
    if getattr(args, "plan", None) is None:  # a plan reads no image and may name an architecture
        if not args.images.is_dir():
            raise ValueError(f"--images: {args.images} is not a folder")
        if not args.model.is_dir():
            raise ValueError(f"--model: {args.model} is not a folder")
    cfg = ScoreConfig(steps=args.steps, solver=args.solver, probes=args.probes, seed=args.seed,
                      divergence=not args.inversion_only, jacobian_route=args.jacobian_route)
    if args.risk not in available_scores(cfg):
        raise ValueError(f"--risk {args.risk} needs the divergence integral: drop --inversion-only")
    return cfg


def _resume_key(path: Path) -> str:
    """The resume key of an image: the first 16 hex digits of the SHA-256 of its file's bytes
    (``images.file_digest``), or ``unreadable:<name>`` for a file that cannot be read."""
    from largemodel.models.images import shown_name

    digest = file_digest(path)
    return digest[:16] if digest is not None else f"unreadable:{shown_name(path)}"


def rank_folder(model: Any, images: Path, out: Path, cfg: ScoreConfig, *, risk: str = DEFAULT_RISK,
                images_per_batch: int = 8, model_id: str = "", captions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Score every image of ``images`` (resumable by content hash and conditioning) and write ``ranking.csv``.

    Each image is scored on the model's conditioning, or with ``captions`` (relative path -> prompt,
    ``--captions``) on its own prompt at the model's guidance scale (a group with several prompts runs
    one sub-group per prompt); records carry ``prompt`` and ``guidance_scale``.

    Returns:
        the rows of ``ranking.csv``, riskiest first: ``rank``, ``file``, ``sha256``, ``risk``
        and each score of ``available_scores(cfg)``.
    """
    from largemodel.models.images import list_images, load_image

    names = available_scores(cfg)
    if risk not in names:
        raise ValueError(f"--risk must be one of {names}, got {risk!r}")
    paths = list_images(images, exclude=out)  # not our own outputs
    if not paths:
        raise ValueError(f"--images: no images found in {images}")
    from largemodel.models.images import shown_name

    # one image policy (largemodel.models.images): an unreadable image is skipped with one warning and
    # a record; names are shown escaped where they are not UTF-8
    from largemodel.models.captions import check_captions
    from largemodel.study.items import conditioning_tag

    names_of = {p: shown_name(p.relative_to(images).as_posix()) for p in paths}
    if captions is not None:
        check_captions(captions, list(names_of.values()), list(names_of.values()))
    w = model.conditioning.guidance_scale
    prompt_of = {p: model.conditioning.prompt if captions is None else captions[names_of[p]] for p in paths}

    def resume_key(p: Path) -> str:  # content, then the conditioning unless it is the null prompt without guidance
        key = _resume_key(p)
        return key if (prompt_of[p] == "" and w == 1.0) else f"{key}~{conditioning_tag(prompt_of[p], w)}"

    keyed = [(resume_key(p), p) for p in paths]
    params = {"model": model_id, "config": cfg.signature_params(), "resolution": model.resolution, "dtype": str(model.dtype)}
    store = RecordStore(out, params, name="scores.jsonl")
    unique: dict[str, Path] = {}
    for key, path in keyed:
        unique.setdefault(key, path)
    items = list(unique.items())

    def skip(key: str, path: Path, why: str) -> None:
        if not store.done(key):
            store.add(key, {"file": shown_name(path.relative_to(images)), "skipped": why})
        print(f"pfode: warning: skipped {shown_name(path.relative_to(images))}: {why}", file=sys.stderr, flush=True)

    # fixed groups of the whole list, each image's draws from its own key: a group cut by a kill is
    # computed whole again and only its missing records are added, so a resume changes no number
    for start in range(0, len(items), images_per_batch):
        chunk = items[start : start + images_per_batch]
        if all(store.done(k) for k, _ in chunk):
            for k, p in chunk:
                if "skipped" in store.get(k):
                    skip(k, p, store.get(k)["skipped"])
            continue
        group, imgs = [], []
        for key, path in chunk:
            try:
                imgs.append(load_image(path, model.resolution, channels=model.image_channels))
                group.append((key, path))
            except (ValueError, OSError) as err:
                skip(key, path, str(err))
        if not group:
            continue
        for prompt in dict.fromkeys(prompt_of[p] for _, p in group):  # one conditioning per sub-group
            sub = [i for i, (_, p) in enumerate(group) if prompt_of[p] == prompt]
            m = model if prompt == model.conditioning.prompt else model.conditioned(prompt)
            recs, _ = score_group(m, torch.stack([imgs[i] for i in sub]), cfg,
                                  image_generators(cfg.seed, [group[i][0] for i in sub]))
            for i, rec in zip(sub, recs):
                if not store.done(group[i][0]):
                    store.add(group[i][0], {**{k: rec[k] for k in (*names, "log_p_g", "n") if k in rec},
                                            **m.conditioning.record()})
    rows = [{"file": shown_name(p.relative_to(images)), "sha256": key, "_path": p, **store.get(key)}
            for key, p in keyed if "skipped" not in store.get(key)]
    if not rows:
        raise ValueError(f"--images: none of the {len(paths)} images in {shown_name(images)} can be read")
    rows.sort(key=lambda r: (-r[risk], r["file"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
        r["risk"] = r[risk]
    extra = ["log_p_g"] if cfg.divergence else []
    _write_csv(out / "ranking.csv", rows, ["rank", "file", "sha256", "risk", *names, *extra])
    return rows


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in columns})
    return atomic_write_text(path, buf.getvalue())


def _gallery(model: Any, images: Path, rows: Sequence[dict[str, Any]], out_png: Path, risk: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from largemodel.models.images import load_image

    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, r in zip(axes.flat, rows):
        img = load_image(r["_path"], model.resolution, channels=model.image_channels)
        arr = ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        ax.imshow(arr[:, :, 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"#{r['rank']} {Path(r['file']).name[:18]}\n{risk} = {r['risk']:.3g}", fontsize=7)
    fig.suptitle(f"riskiest images by {risk} (one inversion pass)", fontsize=9)
    save_png(fig, out_png, dpi=120)
    return out_png


def _verify(model: Any, images: Path, rows: list[dict[str, Any]], out: Path, cfg: ScoreConfig, k: int) -> dict[str, Any]:
    """Reconstruct the top and bottom ``k`` images; write ``verify.csv`` and ``verify.png``."""
    from largemodel.models.images import load_image
    from largemodel.study.ode import generate, invert
    from largemodel.study.plots import failure_gallery

    k = min(k, len(rows) // 2) if len(rows) > 1 else 1
    chosen = rows[:k] + [r for r in rows[-k:] if r not in rows[:k]]
    imgs = torch.stack([load_image(r["_path"], model.resolution, channels=model.image_channels) for r in chosen])
    sig = model.sigmas(cfg.steps)
    with torch.no_grad():
        x = model.encode(imgs)
        xr = torch.empty_like(x)
        prompts = [r.get("prompt", model.conditioning.prompt) for r in chosen]
        for prompt in dict.fromkeys(prompts):  # each image on its own conditioning
            vel = model.conditioned(prompt).velocity
            idx = torch.tensor([i for i, p in enumerate(prompts) if p == prompt], device=x.device)
            xr[idx] = generate(vel, invert(vel, x[idx], sig, solver=cfg.solver), sig, solver=cfg.solver)
        pix = model.decode(xr).cpu()
    mse_lat = ((xr - x).flatten(1).to(torch.float64) ** 2).mean(1)
    mse_pix = (((pix - imgs.to(pix.dtype)) / 2).to(torch.float64) ** 2).flatten(1).mean(1)
    out_rows = []
    for i, r in enumerate(chosen):
        psnr = float("inf") if float(mse_pix[i]) <= 0 else -10 * math.log10(float(mse_pix[i]))
        out_rows.append({"group": "top" if i < k else "bottom", "rank": r["rank"], "file": r["file"], "risk": r["risk"],
                         "mse_latent": float(mse_lat[i]), "mse_pixel": float(mse_pix[i]), "psnr": psnr})
    _write_csv(out / "verify.csv", out_rows, ["group", "rank", "file", "risk", "mse_latent", "mse_pixel", "psnr"])
    items = [{"name": f"{o['group']} #{o['rank']} {Path(o['file']).name[:24]}", "original": imgs[i],
              "reconstruction": pix[i], "numbers": {"risk": o["risk"], "PSNR": o["psnr"]}} for i, o in enumerate(out_rows)]
    failure_gallery(items, out / "verify.png", title="predicted risk (top / bottom) against the actual reconstruction")
    top = [o["mse_latent"] for o in out_rows if o["group"] == "top"]
    bottom = [o["mse_latent"] for o in out_rows if o["group"] == "bottom"]
    return {"top_mean_mse": sum(top) / len(top), "bottom_mean_mse": sum(bottom) / len(bottom) if bottom else float("nan")}


def run_rank(args: argparse.Namespace) -> int:
    """The ``rank`` subcommand: ranking, gallery, optional verification; prints where they are."""
    from largemodel.models.load import load_model
    from largemodel.plan.commands import check_plan, check_resolution_fits, plan_memory_arg, print_plan, rank_plan

    from largemodel.models.captions import check_captions, conditioning_args
    from largemodel.models.conditioning import check_guidance_scale
    from largemodel.models.images import list_images, shown_name
    from largemodel.study.ode import warn_solver

    cfg = _check_args(args)
    check_guidance_scale(args.guidance_scale)
    prompt, captions = conditioning_args(args)
    if captions is not None:  # every image of the folder is ranked: each needs a caption (checked before loading)
        names = [shown_name(p.relative_to(args.images).as_posix()) for p in list_images(args.images, exclude=args.out)]
        check_captions(captions, names, names)
    plan_for = lambda dev: rank_plan(args.model, cfg, resolution=args.resolution, dtype=args.dtype,  # noqa: E731
                                     images_per_batch=args.images_per_batch, verify=args.verify, device_bytes=dev,
                                     out=args.out, guidance_scale=args.guidance_scale)
    if args.plan is not None:
        return print_plan(plan_for(plan_memory_arg(args.plan, args.device)))
    check_resolution_fits(args.model, args.resolution, dtype=args.dtype, device=args.device)  # before allocating
    check_plan(plan_for, args.device)
    claim_folder(args.out, "rank", "pfode largemodel rank")  # never a user's folder: its ranking.csv stays theirs
    with output_lock(args.out, command="pfode largemodel rank"):
        model = load_model(args.model, device=args.device, dtype=args.dtype, resolution=args.resolution,
                           guidance=args.guidance, prompt=prompt, guidance_scale=args.guidance_scale,
                           prompts=sorted(set(captions.values())) if captions else (), prompt_cache=args.out)
        warn_solver(args.solver, model.family)
        rows = rank_folder(model, args.images, args.out, cfg, risk=args.risk, captions=captions,
                           images_per_batch=args.images_per_batch, model_id=str(args.model.resolve()))
        print(f"{len(rows)} images ranked by {args.risk}; wrote {args.out / 'ranking.csv'}")
        if args.gallery > 0 and rows:
            print(f"wrote {_gallery(model, args.images, rows[: args.gallery], args.out / 'gallery_riskiest.png', args.risk)}")
        if args.verify:
            v = _verify(model, args.images, rows, args.out, cfg, args.verify)
            print(f"verify: mean latent MSE of the top {args.verify} = {v['top_mean_mse']:.3g}, "
                  f"bottom {args.verify} = {v['bottom_mean_mse']:.3g}; wrote {args.out / 'verify.csv'}, "
                  f"{args.out / 'verify.png'}")
    return 0
