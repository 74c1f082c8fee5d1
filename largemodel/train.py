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
``(1, 32)``, standard normal draws seeded by the training seed, expanded to the batch. The
model saved is the exponential moving average (EMA) of the weights, ``theta_ema <- d theta_ema
+ (1 - d) theta`` with ``d = min(ema_decay, (1 + k) / (10 + k))`` at the ``k``-th update.
Optimiser: AdamW, linear warm-up then cosine decay of the learning rate to a tenth, gradient
norm clipped at 1. Training is resumable (periodic checkpoints in the output folder) and
bit-for-bit deterministic given the arguments on a given machine.

``cached_model`` keeps trained folders under a cache directory keyed by a hash of the
arguments, so reports reuse them; ``add_train_arguments`` / ``run_train`` are the CLI hooks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from simulate.store import atomic_folder, mark_owned, output_lock

from .data import DATASETS, DEFAULT_SIZE, Dataset, dataset_from_split, load_dataset, resolve_counts
from .folder import PFODE_META_FILE, save_model_folder

__all__ = [
    "Arch",
    "CHECKPOINT_FILE",
    "DEFAULTS",
    "add_train_arguments",
    "build_transformer",
    "cached_model",
    "config_key",
    "default_cache_dir",
    "default_patch_size",
    "flow_matching_loss",
    "model_dataset",
    "null_conditioning",
    "run_train",
    "sample_sigmas",
    "train_config",
    "train_model",
]

#: bump when a change to training would make old cached models stale
TRAIN_VERSION = 1

#: checkpoint written (atomically) in the output folder while training; removed at the end
CHECKPOINT_FILE = "train_checkpoint.pt"

#: joint-attention (text) width, pooled width and number of null-prompt tokens
JOINT_DIM, POOLED_DIM, CONTEXT_TOKENS = 32, 32, 1

SIGMA_SAMPLINGS = ("logit_normal", "uniform")

#: training defaults (tuned so that digits at 8 px trains in a few minutes on 2 CPU cores)
DEFAULTS: dict[str, Any] = {
    "steps": 2500,
    "batch_size": 128,
    "lr": 3e-3,
    "ema_decay": 0.999,
    "seed": 0,
    "data_seed": 0,
    "heldout_images": None,
    "warmup": None,
    "sigma_sampling": "logit_normal",
    "patch_size": None,
    "num_layers": 4,
    "num_heads": 4,
    "head_dim": 16,
}


@dataclass(frozen=True)
class Arch:
    """Size of the ``SD3Transformer2DModel``.

    Attributes:
        patch_size: side of the square pixel patches that become tokens.
        num_layers: joint-attention blocks.
        num_heads: attention heads; the width is ``num_heads * head_dim``.
        head_dim: channels per head.
    """

    patch_size: int
    num_layers: int
    num_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim


# ---- validation ---------------------------------------------------------------------------
def _pos_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _pos_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def default_patch_size(size: int) -> int:
    """The largest divisor of ``size`` not above ``max(1, size // 4)``: about 4 x 4 tokens
    (8 -> 2, 16 -> 4, 25 -> 5, 12 -> 3), so the cost per step hardly grows with the size."""
    target = max(1, size // 4)
    return max(p for p in range(1, target + 1) if size % p == 0)


def _arch(size: int, patch_size: int | None, num_layers: Any, num_heads: Any, head_dim: Any) -> Arch:
    """Validated architecture; ``patch_size=None`` = ``default_patch_size(size)``."""
    p = default_patch_size(size) if patch_size is None else _pos_int(patch_size, "patch_size")
    if size % p:
        raise ValueError(f"patch_size={p} must divide size={size}")
    return Arch(p, _pos_int(num_layers, "num_layers"), _pos_int(num_heads, "num_heads"), _pos_int(head_dim, "head_dim"))


def train_config(data: str, size: int, train_images: int | None, **kwargs: Any) -> dict[str, Any]:
    """The full, validated training configuration (everything that determines the model).

    Args:
        data, size, train_images: as for ``train_model``.
        **kwargs: any of ``DEFAULTS``' keys; missing ones take the default.

    Returns:
        A JSON-serialisable dict; ``train_images`` and ``heldout_images`` resolved to counts,
        ``warmup`` to a step count, ``arch`` to a dict. Its hash is the cache key.

    Raises:
        ValueError: an unknown keyword or an invalid value (the message names it).
    """
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    opts = {**DEFAULTS, **kwargs}
    if data not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {data!r}")
    counts = resolve_counts(data, size, train_images, opts["heldout_images"])
    data_seed = _pos_int(opts["data_seed"], "data_seed", 0)
    steps = _pos_int(opts["steps"], "steps")
    warmup = min(100, steps // 10) if opts["warmup"] is None else _pos_int(opts["warmup"], "warmup", 0)
    if opts["sigma_sampling"] not in SIGMA_SAMPLINGS:
        raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {opts['sigma_sampling']!r}")
    decay = opts["ema_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be a number in [0, 1), got {decay!r}")
    arch = _arch(size, opts["patch_size"], opts["num_layers"], opts["num_heads"], opts["head_dim"])
    return {
        "version": TRAIN_VERSION,
        "data": data,
        "size": size,
        "train_images": counts[0],
        "heldout_images": counts[1],
        "data_seed": data_seed,
        "steps": steps,
        "batch_size": _pos_int(opts["batch_size"], "batch_size"),
        "lr": _pos_float(opts["lr"], "lr"),
        "ema_decay": float(decay),
        "seed": _pos_int(opts["seed"], "seed", 0),
        "warmup": warmup,
        "sigma_sampling": opts["sigma_sampling"],
        "arch": asdict(arch),
    }


def config_key(config: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the configuration's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# ---- model pieces -------------------------------------------------------------------------
def build_transformer(channels: int, size: int, arch: Arch, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised (seeded) pixel-space ``SD3Transformer2DModel`` for ``C x S x S``."""
    from diffusers import SD3Transformer2DModel

    with _seeded(seed):
        return SD3Transformer2DModel(
            sample_size=size, patch_size=arch.patch_size, in_channels=channels, out_channels=channels,
            num_layers=arch.num_layers, attention_head_dim=arch.head_dim, num_attention_heads=arch.num_heads,
            joint_attention_dim=JOINT_DIM, caption_projection_dim=arch.width, pooled_projection_dim=POOLED_DIM,
            pos_embed_max_size=size // arch.patch_size,
        )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)``, restoring the global CPU RNG after."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def null_conditioning(seed: int) -> tuple[Tensor, Tensor]:
    """The fixed null prompt: ``E ~ N(0, I)`` of shape ``(1, 1, 32)``, ``P ~ N(0, I)`` ``(1, 32)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, CONTEXT_TOKENS, JOINT_DIM, generator=gen), torch.randn(1, POOLED_DIM, generator=gen)


def sample_sigmas(n: int, generator: torch.Generator, how: str = "logit_normal") -> Tensor:
    """``n`` training noise levels: logit-normal ``sigmoid(N(0, 1))`` or ``U(0, 1)``."""
    if how == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    if how == "uniform":
        return torch.rand(n, generator=generator)
    raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {how!r}")


def flow_matching_loss(transformer: torch.nn.Module, x1: Tensor, x0: Tensor, sigma: Tensor,
                       prompt_embeds: Tensor, pooled_prompt_embeds: Tensor) -> Tensor:
    r"""Conditional flow-matching loss ``mean || u_theta(x_sigma, sigma) - (x0 - x1) ||^2``.

    Args:
        transformer: the network ``u_theta``.
        x1: data images ``(B, C, S, S)``.
        x0: noise of the same shape.
        sigma: ``(B,)`` noise levels in ``[0, 1]``.
        prompt_embeds, pooled_prompt_embeds: the null prompt, batch 1 (expanded here).

    Returns:
        The scalar mean squared error over batch, channels and pixels.
    """
    b = x1.shape[0]
    s = sigma.view(b, 1, 1, 1)
    x_sigma = (1.0 - s) * x1 + s * x0
    pred = transformer(
        hidden_states=x_sigma,
        timestep=1000.0 * sigma,
        encoder_hidden_states=prompt_embeds.expand(b, *prompt_embeds.shape[1:]),
        pooled_projections=pooled_prompt_embeds.expand(b, *pooled_prompt_embeds.shape[1:]),
        return_dict=False,
    )[0]
    return torch.mean((pred - (x0 - x1)) ** 2)


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


# ---- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def _eval_loss(transformer: torch.nn.Module, images: Tensor, cond: tuple[Tensor, Tensor], *, seed: int,
               limit: int = 256) -> float:
    """Flow-matching loss on up to ``limit`` images with fixed noise and ``sigma`` on a uniform
    grid (midpoints of ``limit`` equal bins), i.e. the loss weighted uniformly in ``sigma``."""
    x1 = images[:limit]
    n = x1.shape[0]
    if n == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(x1.shape, generator=gen)
    sigma = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    sigma = sigma[torch.randperm(n, generator=gen)]
    was_training = transformer.training
    transformer.eval()
    loss = float(flow_matching_loss(transformer, x1, x0, sigma, *cond))
    transformer.train(was_training)
    return loss


# ---- checkpoints --------------------------------------------------------------------------
def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if any, loaded with ``torch.load(weights_only=True)``.

    Only tensors and plain Python values are unpickled (our checkpoints hold nothing else), so
    a planted pickle runs no code: it is refused with one line naming the file.

    Raises:
        ValueError: the file is not a checkpoint pfode can load safely, or it belongs to
            another configuration.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: never unpickle further
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a training checkpoint pfode can load safely ({reason[:160]}); "
                         "remove it or choose another output folder") from None
    if not isinstance(state, dict) or state.get("config_key") != key:
        raise ValueError(
            f"out={path.parent} holds a checkpoint of a different training configuration ({path.name}); "
            "remove it or choose another output folder"
        )
    return state


def _existing_model(out: Path, key: str) -> bool:
    """Whether ``out`` already holds the finished model of this configuration.

    Raises:
        ValueError: ``out`` holds a different model, or a damaged one (the message names the
            file: a missing or unreadable ``pfode_model.json``).
    """
    if not (out / "model_index.json").is_file():
        return False
    meta_path = out / PFODE_META_FILE
    if not meta_path.is_file():
        raise ValueError(f"out={out} holds a model folder without {meta_path.name} (not trained by pfode, or "
                         "damaged); remove it or choose another output folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_path}: damaged ({type(exc).__name__}); remove {out} to retrain it") from None
    if isinstance(meta, dict) and meta.get("config_key") == key:
        return True
    raise ValueError(f"out={out} already holds a different model; remove it or choose another output folder")


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
    progress: bool = True,
    checkpoint_every: int = 500,
    callback: Callable[[int, float], None] | None = None,
    num_threads: int | None = 1,
) -> Path:
    """Train a pixel-space flow-matching ``SD3Transformer2DModel``; save its EMA to ``out``.

    The folder loads with ``largemodel.model.load_model`` and carries ``pfode_model.json``
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
    )
    checkpoint_every = _pos_int(checkpoint_every, "checkpoint_every", 0)
    key = config_key(config)
    threads = None if num_threads is None else _pos_int(num_threads, "num_threads")
    root = Path(out)
    if _existing_model(root, key):
        return root
    mark_owned(root, "pfode largemodel train: model folder")
    with output_lock(root, command="pfode largemodel train"):
        if _existing_model(root, key):  # finished by another run meanwhile
            return root
        dataset = load_dataset(data, size, train_images=config["train_images"],
                               heldout_images=config["heldout_images"], seed=config["data_seed"])
        with _threads(threads):
            return _train(dataset, config, key, root, progress=progress, checkpoint_every=checkpoint_every,
                          callback=callback)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` (``None``: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(before)


def _train(dataset: Dataset, config: dict[str, Any], key: str, root: Path, *, progress: bool,
           checkpoint_every: int, callback: Callable[[int, float], None] | None) -> Path:
    """The training loop of ``train_model`` (arguments already validated)."""
    from torch.optim.swa_utils import AveragedModel
    from tqdm import tqdm

    arch = Arch(**config["arch"])
    model = build_transformer(dataset.channels, dataset.size, arch, seed=config["seed"])
    model.train()
    ema = AveragedModel(model, multi_avg_fn=_ema_update_fn(config["ema_decay"]), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    cond = null_conditioning(config["seed"])
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    losses: list[float] = []
    start, seconds = 0, 0.0
    ckpt_path = root / CHECKPOINT_FILE
    state = _load_checkpoint(ckpt_path, key)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        losses, start, seconds = list(state["losses"]), int(state["step"]), float(state["seconds"])
    x_all = dataset.train
    bar = tqdm(total=config["steps"], initial=start, disable=not progress, desc=f"train {dataset.name}",
               dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step in range(start, config["steps"]):
            loss = _train_step(model, opt, x_all, cond, gen, config, step)
            if not math.isfinite(loss):
                raise ValueError(f"training diverged at step {step + 1} (loss {loss}); lower lr={config['lr']}")
            ema.update_parameters(model)
            losses.append(loss)
            done = step + 1
            bar.update(1)
            if done % 10 == 0 or done == config["steps"]:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
            if checkpoint_every and done % checkpoint_every == 0 and done < config["steps"]:
                _save_checkpoint(ckpt_path, {
                    "config_key": key, "step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                    "opt": opt.state_dict(), "gen": gen.get_state(), "losses": losses,
                    "seconds": seconds + time.perf_counter() - t0,
                })
            if callback is not None:
                callback(done, loss)
    finally:
        bar.close()
    seconds += time.perf_counter() - t0
    with atomic_folder(root) as tmp:  # the finished folder replaces the one with the checkpoint
        mark_owned(tmp, "pfode largemodel train: model folder")
        _save_final(tmp, ema.module, dataset, config, key, cond, losses, seconds)
    return root


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x_all: Tensor, cond: tuple[Tensor, Tensor],
                gen: torch.Generator, config: dict[str, Any], step: int) -> float:
    """One AdamW step on a batch drawn with replacement; returns the batch loss."""
    b = config["batch_size"]
    idx = torch.randint(x_all.shape[0], (b,), generator=gen)
    x1 = x_all[idx]
    x0 = torch.randn(x1.shape, generator=gen)
    sigma = sample_sigmas(b, gen, config["sigma_sampling"])
    for group in opt.param_groups:
        group["lr"] = _lr_at(step, config)
    loss = flow_matching_loss(model, x1, x0, sigma, *cond)
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
    """Write the EMA model folder with its metadata (``pfode_model.json`` last)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    tail = max(1, min(100, len(losses) // 10))
    ema_model.eval()
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
        "eval_loss_train": _eval_loss(ema_model, dataset.train, cond, seed=config["seed"] + 2),
        "eval_loss_heldout": _eval_loss(ema_model, dataset.heldout, cond, seed=config["seed"] + 2),
        "train_seconds": seconds,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    save_model_folder(root, ema_model, FlowMatchEulerDiscreteScheduler(shift=1.0), prompt_embeds=cond[0],
                      pooled_prompt_embeds=cond[1], vae=None, meta=meta)


def model_dataset(model_dir: str | Path) -> Dataset:
    """The train / held-out ``Dataset`` a model trained here was trained on (from its metadata).

    Raises:
        ValueError: the folder has no ``pfode_model.json`` with a ``split``.
    """
    meta_path = Path(model_dir) / PFODE_META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "split" not in meta:
        raise ValueError(f"{model_dir}: not a model trained by pfode (no split in {PFODE_META_FILE})")
    return dataset_from_split(meta["split"])


# ---- cache --------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$PFODE_CACHE/models`` if ``PFODE_CACHE`` is set, else ``~/.cache/pfode-instability/models``."""
    root = os.environ.get("PFODE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pfode-instability"
    return base / "models"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_model(data: str, size: int, train_images: int | None, *, cache_dir: str | Path | None = None,
                 **train_kwargs: Any) -> Path:
    """The trained model folder for these arguments, trained into the cache if absent.

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
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    folder = base / f"{data}-{size}px-{key}"
    with _file_lock(base / f".{folder.name}.lock"):
        if _existing_model(folder, key):
            return folder
        return train_model(data, size, train_images, folder, **train_kwargs, **runtime)


# ---- CLI hooks ----------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pfode largemodel train`` flags to ``parser``."""
    parser.add_argument("--data", choices=DATASETS, default="digits", help="training images (default digits)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: digits 8, faces 16, patches 16)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="training images (default: all not held out; patches 4096)")
    parser.add_argument("--heldout-images", type=int, default=None,
                        help="held-out images (default: 256; faces 20)")
    parser.add_argument("--out", default=None,
                        help="output model folder (default: the model cache, reused if already trained)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--ema-decay", type=float, default=DEFAULTS["ema_decay"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--data-seed", type=int, default=DEFAULTS["data_seed"], help="seed of the held-out split")
    parser.add_argument("--sigma-sampling", choices=SIGMA_SAMPLINGS, default=DEFAULTS["sigma_sampling"])
    parser.add_argument("--patch-size", type=int, default=None,
                        help="pixels per token side (default: about 4 x 4 tokens, e.g. 8 px -> 2, 16 px -> 4)")
    parser.add_argument("--num-layers", type=int, default=DEFAULTS["num_layers"])
    parser.add_argument("--num-heads", type=int, default=DEFAULTS["num_heads"])
    parser.add_argument("--head-dim", type=int, default=DEFAULTS["head_dim"])
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while training (default 1; 0: keep torch's setting)")
    parser.add_argument("--quality-samples", type=int, default=256, help="samples for the quality check (0: skip)")
    parser.add_argument("--sample-steps", type=int, default=50, help="Euler steps of the quality samples")
    parser.add_argument("--png", default=None, help="sample grid (default: <model folder>/samples.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Train (or reuse) the model ``args`` describe, print where it is and its quality; return 0.

    Raises:
        ValueError: invalid arguments (the message names the flag's parameter).
    """
    from .quality import quality_report

    size = DEFAULT_SIZE[args.data] if args.size is None else args.size
    kwargs = dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay, seed=args.seed,
        data_seed=args.data_seed, heldout_images=args.heldout_images, sigma_sampling=args.sigma_sampling,
        patch_size=args.patch_size, num_layers=args.num_layers, num_heads=args.num_heads, head_dim=args.head_dim,
        progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
        num_threads=None if args.threads == 0 else args.threads,
    )
    if args.out is None:
        folder = cached_model(args.data, size, args.train_images, **kwargs)
    else:
        folder = train_model(args.data, size, args.train_images, args.out, **kwargs)
    meta = json.loads((folder / PFODE_META_FILE).read_text())
    print(f"model: {folder}")
    print(f"  {meta['data']} {meta['resolution']}px, {meta['train_images']} training images, {meta['steps']} steps, "
          f"{meta['train_seconds']:.0f} s; final loss {meta['final_loss']:.4f} "
          f"(EMA: train {meta['eval_loss_train']:.4f}, held-out {meta['eval_loss_heldout']:.4f})")
    if args.quality_samples:
        png = Path(args.png) if args.png else folder / "samples.png"
        with _threads(kwargs["num_threads"]):
            report = quality_report(folder, n_samples=args.quality_samples, steps=args.sample_steps,
                                    seed=args.seed, out_png=png)
        for line in report["summary"]:
            print(f"  {line}")
        print(f"  samples: {png}")
    return 0
