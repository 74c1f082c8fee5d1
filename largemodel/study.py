r"""The reconstruction-instability study (paper Fig. 4c, Fig. A1, App. E.2, App. F).

For each image ``x`` (latent of a real image, the paper's ``p_r``):

1. invert: ``z~ = F~(x)`` (Euler or Heun on the model's sigma grid, null prompt, no CFG);
2. regenerate: ``x^ = G(z~)``; reconstruction error in latent and pixel space (MSE, PSNR);
3. instability at ``z~``: the paper's ``mu_bar`` over ``K`` perturbations of RMS size ``eps``
   (the ``K`` regenerations batched with the reconstruction), ``lambda_G`` along random
   directions by JVP, optionally ``||J_G||_2`` by power iteration and ``log Lambda_G`` in the
   inversion pass (Hutchinson or exact divergence), which also gives ``log p_g(x)``;
4. ``||z~||^2 / n`` (Theorem 4.1's ``p2`` statistic).

Records are appended one JSON line per image as soon as its group is done; a rerun with the
same parameters skips recorded images, so an interrupted study resumes without losing or
repeating an image. With several processes (``accelerate launch``) each process takes every
``world``-th remaining image and writes its own file; ``summarize`` merges them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from simulate.experiments.common import RecordStore, json_ready

from . import instability as ins
from .ode import generate, invert, nfe_per_step
from .model import FlowModel

__all__ = ["StudyConfig", "ImageItem", "run_study", "load_records", "summarize", "items_from_folder"]

#: correlations reported by ``summarize``: (x key, y key)
CORRELATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("mu_bar", "mse_latent"),
    ("mu_bar", "mse_pixel"),
    ("lambda_jvp", "mse_latent"),
    ("spectral_norm", "mse_latent"),
    ("log_Lambda", "mse_latent"),
    ("z_norm2_over_n", "mse_latent"),
)


@dataclass(frozen=True)
class StudyConfig:
    """Parameters of a study; those that change results form the resume signature.

    Attributes:
        steps: ODE steps for inversion and for regeneration (paper: 500; App. F: 100).
        solver: ``"euler"`` (paper default) or ``"heun"`` (App. B.1).
        perturbations: ``K`` for the paper's ``mu_bar`` (0 disables it).
        eps: RMS size of a perturbation per latent coordinate (``||D|| = eps sqrt(n)``).
        jvp_directions: random directions for ``lambda_G`` by JVP (0 disables).
        power_iters: power iterations for ``||J_G||_2`` (0 disables).
        log_lambda: ``"none"``, ``"hutchinson"`` or ``"exact"`` (exact: small ``n`` only).
        probes: Hutchinson probes per evaluation.
        batch_size: rows per transformer call (perturbed regenerations are grouped).
        images_per_batch: images inverted and regenerated together.
        seed: seeds the image subset, the perturbations and the probes.
    """

    steps: int = 500
    solver: str = "euler"
    perturbations: int = 8
    eps: float = 1e-2
    jvp_directions: int = 1
    power_iters: int = 0
    log_lambda: str = "none"
    probes: int = 1
    batch_size: int = 16
    images_per_batch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.solver not in ("euler", "heun"):
            raise ValueError(f"solver must be 'euler' or 'heun', got {self.solver!r}")
        for name in ("perturbations", "jvp_directions", "power_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive finite number, got {self.eps!r}")
        if self.log_lambda not in ("none", "hutchinson", "exact"):
            raise ValueError(f"log_lambda must be 'none', 'hutchinson' or 'exact', got {self.log_lambda!r}")
        if self.probes < 1 or self.batch_size < 1 or self.images_per_batch < 1:
            raise ValueError("probes, batch_size and images_per_batch must be >= 1")

    def signature_params(self) -> dict[str, Any]:
        """The parameters that change a record (batching does not)."""
        d = asdict(self)
        d.pop("batch_size")
        d.pop("images_per_batch")
        return d


@dataclass(frozen=True)
class ImageItem:
    """An image to study: a stable key and a loader returning ``(C, R, R)`` in ``[-1, 1]``."""

    key: str
    load: Callable[[], Tensor]


def items_from_folder(folder: str | Path, n_images: int, seed: int, resolution: int, channels: int) -> list[ImageItem]:
    """A seeded random subset of an image folder, centre-cropped and resized on loading."""
    from .images import list_images, load_image, select_images

    root = Path(folder)
    paths = select_images(list_images(root), n_images, seed)
    return [
        ImageItem(key=str(p.relative_to(root)), load=(lambda p=p: load_image(p, resolution, channels=channels)))
        for p in paths
    ]


def _psnr(mse: float) -> float:
    """PSNR in dB of images on a [0, 1] scale."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def _mse01(a: Tensor, b: Tensor) -> Tensor:
    """Per-row MSE of images given in [-1, 1], measured on the [0, 1] scale."""
    return (((a - b) / 2.0).to(torch.float64) ** 2).flatten(1).mean(1)


def _records_files(out: Path) -> list[Path]:
    return sorted(out.glob("records*.jsonl"))


def load_records(out: str | Path, signature: str | None = None) -> list[dict[str, Any]]:
    """All records of a study folder, merged over processes (each key once).

    Files whose header signature differs from ``signature`` (when given) are ignored.
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in _records_files(Path(out)):
        if ".stale-" in path.name:
            continue
        lines = path.read_text().splitlines()
        if not lines:
            continue
        header = json.loads(lines[0])
        if signature is not None and header.get("signature") != signature:
            continue
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            merged.setdefault(rec["key"], rec["value"])
    return [merged[k] for k in sorted(merged)]


def _group(items: Sequence[ImageItem], size: int) -> Iterable[list[ImageItem]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _study_group(
    model: FlowModel, cfg: StudyConfig, images: Tensor, sigmas: Tensor, gen: torch.Generator
) -> tuple[list[dict[str, Any]], Tensor, Tensor]:
    """Invert, regenerate and measure a group of images; return records and reconstructions."""
    vel = model.velocity
    t0 = time.perf_counter()
    x = model.encode(images)
    n = x[0].numel()
    rec: dict[str, Any] = {}
    with torch.no_grad():
        if cfg.log_lambda == "none":
            z = invert(vel, x, sigmas, solver=cfg.solver)
        else:
            one = ins.log_lambda_one_pass(
                vel, x, sigmas, solver=cfg.solver, probes=cfg.probes, exact=cfg.log_lambda == "exact", generator=gen
            )
            z = one["z"]
            rec["log_Lambda"] = one["log_Lambda"].tolist()
            rec["log_p_g"] = one["log_p_g"].tolist()
        b, k = x.shape[0], cfg.perturbations
        if k > 0:
            # the reconstruction and the K perturbed regenerations share the transformer calls
            d = ins.unit_directions((b * k, *z.shape[1:]), gen, z)
            size = cfg.eps * math.sqrt(n)
            rows = torch.cat([z, z.repeat_interleave(k, dim=0) + size * d])
            out = torch.cat(
                [generate(vel, rows[i : i + cfg.batch_size], sigmas, solver=cfg.solver) for i in range(0, rows.shape[0], cfg.batch_size)]
            )
            xr, gp = out[:b], out[b:]
            mu = (gp - xr.repeat_interleave(k, dim=0)).flatten(1).to(torch.float64).norm(dim=1).div(size).view(b, k)
            rec["mu_bar"] = mu.mean(1).tolist()
            rec["mu_max"] = mu.max(1).values.tolist()
            rec["mu_std"] = (mu.std(1) if k > 1 else torch.zeros(b, dtype=torch.float64)).tolist()
        else:
            xr = torch.cat([generate(vel, z[i : i + cfg.batch_size], sigmas, solver=cfg.solver) for i in range(0, b, cfg.batch_size)])
    if cfg.jvp_directions > 0:
        dirs = ins.unit_directions((b * cfg.jvp_directions, *z.shape[1:]), gen, z).view(b, cfg.jvp_directions, *z.shape[1:])
        lam = ins.jvp_lambda(vel, z, sigmas, dirs, solver=cfg.solver)
        rec["lambda_jvp"] = lam.mean(1).tolist()
    if cfg.power_iters > 0:
        sn, _ = ins.spectral_norm_G(vel, z, sigmas, solver=cfg.solver, iters=cfg.power_iters, generator=gen)
        rec["spectral_norm"] = sn.tolist()
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

    arr = ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.shape[2] == 1:
        plt.imsave(path, arr[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, arr)


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def run_study(
    model: FlowModel,
    items: Sequence[ImageItem],
    out: str | Path,
    cfg: StudyConfig,
    *,
    model_id: str | None = None,
    rank: int = 0,
    world: int = 1,
    save_images: bool = True,
    progress: bool = True,
    on_record: Callable[[str, dict[str, Any]], None] | None = None,
) -> Path:
    """Run (or resume) the study on ``items``; return the records file of this process.

    Args:
        model: a loaded ``FlowModel``.
        items: images (keys must be unique).
        out: the study folder (records, reconstructions, summary).
        cfg: parameters.
        model_id: identifies the model in the resume signature (default: its folder path).
        rank, world: this process and the number of processes (images are split round-robin
            among the remaining ones).
        save_images: write each reconstruction as ``recon/<key>.png`` (for the gallery).
        on_record: called after each image is recorded (progress hooks, tests).
    """
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique")
    if not items:
        raise ValueError("no images to study")
    out = Path(out)
    params = {
        "config": cfg.signature_params(),
        "model": model_id if model_id is not None else str(model.info.path),
        "resolution": model.resolution,
        "dtype": str(model.dtype),
        "guidance": model.guidance,
    }
    name = "records.jsonl" if world == 1 else f"records.rank{rank}.jsonl"
    store = RecordStore(out, params, name=name)
    done = {r_key for r_key in _done_keys(out, store.signature)}
    # split the full list (not the remaining one) so that processes started at different
    # moments never disagree on who owns an image; recorded images are then skipped
    todo = [it for it in items[rank::world] if it.key not in done]
    (out / "study.json").write_text(json.dumps(json_ready({"params": params, "signature": store.signature}), indent=2))
    sigmas = model.sigmas(cfg.steps)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"study ({len(items) - len(todo)} done)", unit="img", disable=not progress)
    nfe = nfe_per_step(cfg.solver) * cfg.steps
    try:
        for group in _group(todo, cfg.images_per_batch):
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + _stable_hash(group[0].key))
            images = torch.stack([it.load() for it in group])
            records, recon, _ = _study_group(model, cfg, images, sigmas, gen)
            for it, rec, img in zip(group, records, recon):
                rec["key"] = it.key
                rec["nfe_per_map"] = nfe
                if save_images:
                    _save_png(img, out / "recon" / (_safe_name(it.key) + ".png"))
                store.add(it.key, rec)
                if on_record is not None:
                    on_record(it.key, rec)
                bar.update(1)
    finally:
        bar.close()
    return store.path


def _done_keys(out: Path, signature: str) -> set[str]:
    return {r["key"] for r in load_records(out, signature)}


def _stable_hash(key: str) -> int:
    import hashlib

    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def summarize(out: str | Path, *, n_boot: int = 2000, seed: int = 0, title: str | None = None) -> dict[str, Any]:
    """Correlations (Pearson, Spearman, bootstrap 95% intervals) and the Fig. 4c scatter.

    Correlations are computed on logarithms of the positive quantities (errors, coefficients),
    which leaves Spearman unchanged and makes Pearson measure the log-log relation. Writes
    ``summary.json`` and ``scatter_mu_vs_error.png`` into ``out``.
    """
    from .plots import scatter_instability
    from .stats import correlate

    out = Path(out)
    meta = json.loads((out / "study.json").read_text()) if (out / "study.json").is_file() else {}
    records = load_records(out, meta.get("signature"))
    if not records:
        raise ValueError(f"no study records in {out}")
    summary: dict[str, Any] = {"n_images": len(records), "params": meta.get("params"), "correlations": {}}
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
        )
    (out / "summary.json").write_text(json.dumps(json_ready(summary), indent=2))
    return summary

