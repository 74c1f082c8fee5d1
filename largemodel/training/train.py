r"""Train small pixel-space flow-matching models offline (diffusers ``SD3Transformer2DModel``).

Convention (docs/theory.md §1.2, diffusers SD3): for a data image ``x1`` and noise
``x0 ~ N(0, I)``,

    ``x_sigma = (1 - sigma) x1 + sigma x0``,

and the transformer, called as ``transformer(hidden_states=x_sigma, timestep=1000 sigma,
encoder_hidden_states=E, pooled_projections=P)``, is trained to predict ``u = x0 - x1`` with
the conditional flow-matching loss

    ``L(theta) = E_{sigma, x1, x0} || u_theta(x_sigma, sigma) - (x0 - x1) ||^2 / n``

(``n`` pixels times channels). Its minimiser is ``u(x, sigma) = E[x0 - x1 | x_sigma = x]``, the
PF-ODE field ``dx/dsigma`` that ``FlowModel.velocity`` returns. ``sigma`` is drawn from the
logit-normal ``sigma = 1 / (1 + exp(-z))``, ``z ~ N(0, 1)`` (SD3's default; weights the middle of
the path) or uniformly on ``(0, 1)`` (``sigma_sampling="uniform"``).

The conditioning is a fixed null prompt: ``E`` of shape ``(1, 1, 32)`` and ``P`` of shape
``(1, 32)``, standard normal draws seeded by the training seed, expanded to the batch; or, with
``class_conditional``, each image's learned class embedding with condition dropout
(``largemodel.training.classes``, docs/theory.md §10.9). The
model saved is the exponential moving average (EMA) of the weights, ``theta_ema <- d theta_ema
+ (1 - d) theta`` with ``d = min(ema_decay, (1 + k) / (10 + k))`` at the ``k``-th update.
Optimiser: AdamW, linear warm-up then cosine decay of the learning rate to a tenth, gradient
norm clipped at 1. Training is resumable (periodic checkpoints in the output folder) and
bit-for-bit deterministic given the arguments on a given machine.

``cached_model`` keeps trained folders under a cache directory keyed by a hash of the arguments;
the quick report's models ship with the package (``largemodel.training.shipped``).

Where the pieces live (all re-exported here): the configuration, its validation and cache key in
``largemodel.training.options``; the objective (``flow_matching_loss``, ``null_conditioning``,
``sample_sigmas``) in ``largemodel.training.objective``; the cache folders, checkpoints and
finished-model checks in ``largemodel.training.cache``; the network in
``largemodel.models.transformer_configs.build_transformer``. The CLI (``pfode largemodel train``) is
``largemodel.training.cli``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from simulate.experiments.runner import torch_threads
from simulate.store import atomic_folder, claim_folder, describe_kept, output_lock, unowned_files
from theory._validate import require_int

from largemodel.training.classes import ClassConditioned, batch_conditioning, eval_conditioning
from largemodel.training.data import Dataset, load_dataset
from largemodel.models.folder import save_model_folder
from largemodel.training.cache import (
    CHECKPOINT_FILE,
    cache_entry,
    default_cache_dir,
    existing_model,
    file_lock,
    resume_from_checkpoint,
    model_dataset,
    save_checkpoint,
    shipped_model,
)
from largemodel.training.objective import eval_loss, flow_matching_loss, null_conditioning, sample_sigmas
from largemodel.training.options import (
    DEFAULTS,
    SIGMA_SAMPLINGS,
    TRAIN_VERSION,
    Arch,
    config_key,
    default_patch_size,
    train_config,
    transformer_config,
)
from largemodel.models.transformer_configs import build_transformer as _build

__all__ = [
    "Arch",
    "CHECKPOINT_FILE",
    "DEFAULTS",
    "SIGMA_SAMPLINGS",
    "TRAIN_VERSION",
    "build_transformer",
    "cached_model",
    "config_key",
    "default_cache_dir",
    "default_patch_size",
    "flow_matching_loss",
    "model_dataset",
    "null_conditioning",
    "sample_sigmas",
    "train_config",
    "train_model",
]


def build_transformer(channels: int, size: int, arch: Arch, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised (seeded) pixel-space ``SD3Transformer2DModel`` for ``C x S x S``, in
    training mode: ``transformer_configs.build_transformer`` of ``transformer_config``."""
    return _build(transformer_config(channels, size, arch), device="cpu", dtype=torch.float32, seed=seed,
                  trainable=True)


def _ema_update_fn(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """``AveragedModel`` multi-average function: EMA with warm-up ``min(d, (1+k)/(10+k))``."""

    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        k = int(num_averaged)
        d = min(decay, (1.0 + k) / (10.0 + k))
        for a, c in zip(averaged, current):
            a.lerp_(c.detach().to(a.dtype), 1.0 - d)

    return update


def _lr_at(step: int, config: dict[str, Any]) -> float:
    """Learning rate at (0-based) ``step``: linear warm-up, then cosine from ``lr`` to ``lr/10``."""
    lr, warm, total = config["lr"], config["warmup"], config["steps"]
    if step < warm:
        return lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


# ---- training -----------------------------------------------------------------------------
def train_model(
    data: str,
    size: int,
    train_images: int | None,
    out: str | Path,
    *,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    ema_decay: float = DEFAULTS["ema_decay"],
    seed: int = DEFAULTS["seed"],
    data_seed: int = DEFAULTS["data_seed"],
    heldout_images: int | None = DEFAULTS["heldout_images"],
    warmup: int | None = DEFAULTS["warmup"],
    sigma_sampling: str = DEFAULTS["sigma_sampling"],
    patch_size: int | None = DEFAULTS["patch_size"],
    num_layers: int = DEFAULTS["num_layers"],
    num_heads: int = DEFAULTS["num_heads"],
    head_dim: int = DEFAULTS["head_dim"],
    class_conditional: bool = DEFAULTS["class_conditional"],
    cond_dropout: float | None = DEFAULTS["cond_dropout"],
    progress: bool = True,
    checkpoint_every: int = 500,
    callback: Callable[[int, float], None] | None = None,
    num_threads: int | None = 1,
) -> Path:
    """Train a pixel-space flow-matching ``SD3Transformer2DModel``; save its EMA to ``out``.

    The folder loads with ``largemodel.models.load.load_model`` and carries ``pfode_model.json``
    with ``resolution``, ``image_channels``, the data, the held-out split definition
    (``split``; see ``model_dataset``), the configuration, ``final_loss`` (mean training loss of
    the last 10% of steps, at most 100) and EMA losses on train / held-out images.

    If ``out`` holds a checkpoint of the same configuration, training resumes from it; if it
    already holds the finished model of the same configuration, it is returned as is.
    ``out`` must be new, empty or a folder pfode created (``.pfode-owned``); the run holds its
    lock (``simulate.store.output_lock``: a second run on it fails at once), and the finished
    folder is built under a temporary name and renamed into place (``atomic_folder``), so a
    folder cut between two writes never exists. Checkpoints load with ``weights_only=True``.

    Args:
        data: ``"digits"``, ``"faces"`` or ``"patches"``.
        size: image side ``S`` in pixels.
        train_images: number of training images (``None``: see ``load_dataset``).
        out: output folder.
        steps: optimiser steps.
        batch_size: images per step (drawn with replacement).
        lr: peak AdamW learning rate.
        ema_decay: EMA decay ``d`` of the saved weights.
        seed: seed of the initialisation, the null prompt, batches, noise and sigmas.
        data_seed: seed of the train / held-out split.
        heldout_images: held-out images (``None``: the dataset's default).
        warmup: warm-up steps (``None``: ``min(100, steps // 10)``).
        sigma_sampling: ``"logit_normal"`` or ``"uniform"``.
        patch_size, num_layers, num_heads, head_dim: the architecture (see ``Arch``).
        class_conditional, cond_dropout: train on the class as conditioning, dropped to the null
            class with probability ``cond_dropout`` (default 0.1; ``largemodel.training.classes``).
        progress: show a tqdm progress bar.
        checkpoint_every: steps between checkpoints (0: none).
        callback: called as ``callback(step, loss)`` after every optimiser step (``step``
            counts completed steps); an exception it raises stops training.
        num_threads: torch intra-op threads while training, restored afterwards. 1 by
            default: a model this small gains little from intra-op parallelism, and on shared,
            oversubscribed cores a multi-threaded run is many times slower. ``None`` keeps
            torch's setting. Does not change the result's configuration key.

    Returns:
        ``Path(out)``.

    Raises:
        ValueError: invalid arguments, ``out`` holding another configuration's checkpoint
            or model, files pfode did not create, a checkpoint that is not safely loadable,
            or a non-finite training loss (divergence: lower ``lr``).
        OutputBusy: another run holds ``out``.
    """
    config = train_config(
        data, size, train_images, steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
        data_seed=data_seed, heldout_images=heldout_images, warmup=warmup, sigma_sampling=sigma_sampling,
        patch_size=patch_size, num_layers=num_layers, num_heads=num_heads, head_dim=head_dim,
        class_conditional=class_conditional, cond_dropout=cond_dropout,
    )
    checkpoint_every = require_int("checkpoint_every", checkpoint_every, 0)
    key = config_key(config)
    threads = None if num_threads is None else require_int("num_threads", num_threads)
    root = Path(out)
    if existing_model(root, key):
        return root
    claim_folder(root, "train", "pfode largemodel train: model folder")
    with output_lock(root, command="pfode largemodel train"):
        if existing_model(root, key):  # finished by another run meanwhile
            return root
        check_model_output(root)
        dataset = load_dataset(data, size, train_images=config["train_images"],
                               heldout_images=config["heldout_images"], seed=config["data_seed"])
        with torch_threads(0 if threads is None else threads):  # 0: torch's setting kept
            return _train(dataset, config, key, root, progress=progress, checkpoint_every=checkpoint_every,
                          callback=callback)


#: free space a model folder of this size needs (weights, EMA checkpoint, temporary copy): 64 MiB
MODEL_FREE_BYTES = 64 << 20


def check_model_output(root: Path) -> None:
    """The checks of a model folder's place before any training (they would otherwise fail only
    when the trained model is written): ``root`` holds nothing pfode did not write (it will be
    replaced), its parent is writable and a temporary sibling folder can be created there, and
    the disk has ``MODEL_FREE_BYTES`` free.

    Raises:
        ValueError: naming ``out`` and the reason.
    """
    import shutil
    import tempfile

    kept = unowned_files(root)
    if kept:
        raise ValueError(f"out={root}: {describe_kept(root, kept)}; pfode will not replace this folder: "
                         "move them away or choose another --out")
    try:
        probe = tempfile.mkdtemp(dir=root.absolute().parent, prefix=f".{root.name}.probe-")
    except OSError as exc:
        raise ValueError(f"out={root}: cannot create the temporary sibling folder the model is built in, in "
                         f"{root.absolute().parent} ({exc.strerror or exc}); choose another --out") from None
    os.rmdir(probe)
    free = shutil.disk_usage(root.absolute().parent).free
    if free < MODEL_FREE_BYTES:
        raise ValueError(f"out={root}: {free >> 20} MiB free on its disk, a model folder needs {MODEL_FREE_BYTES >> 20} "
                         "MiB; free some space or choose another --out")


def _train(dataset: Dataset, config: dict[str, Any], key: str, root: Path, *, progress: bool,
           checkpoint_every: int, callback: Callable[[int, float], None] | None) -> Path:
    """The training loop of ``train_model`` (arguments already validated)."""
    from torch.optim.swa_utils import AveragedModel
    from tqdm import tqdm

    arch = Arch(**config["arch"])
    model = build_transformer(dataset.channels, dataset.size, arch, seed=config["seed"])  # in training mode
    if config.get("class_conditional"):
        model = ClassConditioned(model, 10, config["seed"])
    ema = AveragedModel(model, multi_avg_fn=_ema_update_fn(config["ema_decay"]), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    cond = null_conditioning(config["seed"])
    conds = batch_conditioning(model, dataset.labels_train, cond, config.get("cond_dropout"))
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    ckpt_path = root / CHECKPOINT_FILE
    losses, start, seconds = resume_from_checkpoint(ckpt_path, key, model, ema, opt, gen)
    x_all = dataset.train
    bar = tqdm(total=config["steps"], initial=start, disable=not progress, desc=f"train {dataset.name}",
               dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step in range(start, config["steps"]):
            loss = _train_step(model, opt, x_all, conds, gen, config, step)
            if not math.isfinite(loss):
                raise ValueError(f"training diverged at step {step + 1} (loss {loss}); lower lr={config['lr']}")
            ema.update_parameters(model)
            losses.append(loss)
            done = step + 1
            bar.update(1)
            if done % 10 == 0 or done == config["steps"]:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
            if checkpoint_every and done % checkpoint_every == 0 and done < config["steps"]:
                save_checkpoint(ckpt_path, {
                    "config_key": key, "step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                    "opt": opt.state_dict(), "gen": gen.get_state(), "losses": losses,
                    "seconds": seconds + time.perf_counter() - t0,
                })
            if callback is not None:
                callback(done, loss)
    finally:
        bar.close()
    seconds += time.perf_counter() - t0
    with atomic_folder(root, kind="train") as tmp:  # the finished folder replaces the one with the checkpoint
        claim_folder(tmp, "train", "pfode largemodel train: model folder")
        _save_final(tmp, ema.module, dataset, config, key, cond, losses, seconds)
    return root


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x_all: Tensor, conds: Callable[..., tuple[Tensor, Tensor]],
                gen: torch.Generator, config: dict[str, Any], step: int) -> float:
    """One AdamW step on a batch drawn with replacement (``conds(idx, gen)``: its conditioning,
    drawn after the noise levels); returns the batch loss."""
    b = config["batch_size"]
    idx = torch.randint(x_all.shape[0], (b,), generator=gen)
    x1 = x_all[idx]
    x0 = torch.randn(x1.shape, generator=gen)
    sigma = sample_sigmas(b, gen, config["sigma_sampling"])
    for group in opt.param_groups:
        group["lr"] = _lr_at(step, config)
    loss = flow_matching_loss(model, x1, x0, sigma, *conds(idx, gen))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def _loss_curve(losses: list[float], bins: int = 100) -> list[float]:
    """Mean loss in (at most) ``bins`` consecutive, equal chunks of steps."""
    if not losses:
        return []
    t = torch.tensor(losses, dtype=torch.float64)
    return [float(c.mean()) for c in torch.tensor_split(t, min(bins, len(losses)))]


def _save_final(root: Path, ema_model: torch.nn.Module, dataset: Dataset, config: dict[str, Any], key: str,
                cond: tuple[Tensor, Tensor], losses: list[float], seconds: float) -> None:
    """Write the EMA model folder (a class-conditional one with its class table) and ``pfode_model.json``."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    tail = max(1, min(100, len(losses) // 10))
    ema_model.eval()
    cond_train = eval_conditioning(ema_model, dataset.labels_train, cond)
    cond_held = eval_conditioning(ema_model, dataset.labels_heldout, cond)
    meta = {
        "source": "pfode largemodel train",
        "data": dataset.name,
        "resolution": dataset.size,
        "image_channels": dataset.channels,
        "train_images": config["train_images"],
        "heldout_images": config["heldout_images"],
        "seed": config["seed"],
        "steps": config["steps"],
        "config": config,
        "config_key": key,
        "split": dataset.split,
        "final_loss": float(sum(losses[-tail:]) / tail),
        "loss_curve": _loss_curve(losses),
        "eval_loss_train": eval_loss(ema_model, dataset.train, cond_train, seed=config["seed"] + 2),
        "eval_loss_heldout": eval_loss(ema_model, dataset.heldout, cond_held, seed=config["seed"] + 2),
        "train_seconds": seconds,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    classes = isinstance(ema_model, ClassConditioned)  # its learned null class is the null prompt
    null = ema_model.null() if classes else cond
    save_model_folder(root, ema_model.transformer if classes else ema_model, FlowMatchEulerDiscreteScheduler(shift=1.0),
                      prompt_embeds=null[0], pooled_prompt_embeds=null[1], vae=None, meta=meta,
                      class_prompts=ema_model.table() if classes else None)


def cached_model(data: str, size: int, train_images: int | None, *, cache_dir: str | Path | None = None,
                 **train_kwargs: Any) -> Path:
    """The trained model folder for these arguments: the shipped one if the package holds it
    (``largemodel.training.shipped``), else the cached one, trained into the cache if absent.

    The folder is ``<cache_dir>/<data>-<size>px-<key>`` with ``key`` the hash of the full
    configuration (``train_config``), so equal configurations share one folder whether
    defaults are spelled out or not. A lock file serialises concurrent trainings of one key;
    an interrupted training resumes from its checkpoint.

    Args:
        data, size, train_images: as for ``train_model``.
        cache_dir: cache directory (default ``default_cache_dir()``).
        **train_kwargs: ``train_model`` keywords; ``progress``, ``checkpoint_every``,
            ``callback`` and ``num_threads`` do not enter the key.

    Raises:
        ValueError: invalid arguments.
    """
    runtime = {k: train_kwargs.pop(k) for k in ("progress", "checkpoint_every", "callback", "num_threads")
               if k in train_kwargs}
    config = train_config(data, size, train_images, **train_kwargs)
    key = config_key(config)
    shipped = shipped_model(data, size, key)
    if shipped is not None:  # the quick report's models come with the package: nothing to train
        return shipped
    folder = cache_entry(data, size, key, cache_dir)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if existing_model(folder, key):
            return folder
        return train_model(data, size, train_images, folder, **train_kwargs, **runtime)
