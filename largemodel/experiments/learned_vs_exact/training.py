r"""Training the learned field on samples of ``p_g``, cached by content and resumable (docs/theory.md §10.5, §10.8).

One training run per ``(exact field, net configuration)``: a :class:`~.model.VelocityMLP` trained with the
project's conditional flow-matching loss (:func:`largemodel.training.objective.flow_matching_loss`, noise levels
from :func:`largemodel.training.objective.sample_sigmas`) on fresh samples ``x1 ~ p_g`` of the exact field at
every step (``p_g`` known: unlimited data), AdamW with a linear warm-up then a constant learning rate, and an
exponential moving average (EMA) of the weights. The EMA weights are saved at every training budget of
:attr:`NetSpec.budgets` (the same run stopped at each budget: the budgets are nested).

Cache: ``$PFODE_CACHE/models/learned-<label>-n<n>-<key>/`` (:func:`largemodel.training.cache.default_cache_dir`)
with ``key`` the hash of the configuration, which holds a digest of the exact field's parameters (its boxes,
weights and ``sigma``): ``budget-<steps>.safetensors`` per budget, ``meta.json`` last. A checkpoint
(:func:`largemodel.training.cache.save_checkpoint`, read back with ``weights_only=True``) every
``checkpoint_every`` steps makes an interrupted training resume; a lock serialises two trainings of one key.

Shipped nets: the quick scale's nets (:data:`.experiment.FAST`, every regime and ``n``) come with the package in
:data:`SHIPPED_DIR` (``shipped_nets/learned-<label>-n<n>-<key>/``: the same files as a cache folder, produced by
this module's training with its fixed seeds, :func:`.shipped.regenerate`). :func:`trained_nets` loads a shipped
folder whose ``meta.json`` names the requested key and trains nothing; any other configuration is trained into
the cache. A change to the training bumps :data:`TRAIN_VERSION`, which changes every key: the shipped folders
then stop matching (regenerate them with ``python -m largemodel.experiments.learned_vs_exact.shipped WORK``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from largemodel.experiments.learned_vs_exact.model import VelocityMLP

__all__ = ["NetSpec", "TRAIN_VERSION", "SHIPPED_DIR", "field_digest", "train_config", "folder_name", "cache_folder",
           "shipped_folder", "shipped_files", "trained_nets", "load_net"]

#: bump when a change to the training makes cached nets stale
TRAIN_VERSION = 1
META_FILE = "meta.json"
CHECKPOINT = "train_checkpoint.pt"
#: the folder holding the shipped nets of the quick scale (package data)
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_nets"


@dataclass(frozen=True)
class NetSpec:
    """How the learned field is trained: ``width`` / ``freqs`` of the MLP, the nested training ``budgets``
    (steps), ``batch_size``, ``lr`` (after ``warmup`` steps of linear warm-up), ``ema_decay``,
    ``sigma_sampling`` (:data:`largemodel.training.options.SIGMA_SAMPLINGS`) and ``seed``. Validated by
    the experiment's options (``LearnedOptions.net_spec``, whose defaults are the only ones)."""

    width: int
    freqs: int
    budgets: tuple[int, ...]
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    sigma_sampling: str = "uniform"
    seed: int = 0


def field_digest(field: Any) -> str:
    """16 hex digits of the SHA-256 of the exact box mixture's parameters (corners, weights, ``sigma``)."""
    h = hashlib.sha256()
    for t in (field.lower, field.upper, field.weights):
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    h.update(repr(float(field.sigma)).encode())
    return h.hexdigest()[:16]


def train_config(field: Any, spec: NetSpec) -> dict[str, Any]:
    """Everything that determines the trained nets (its hash is the cache key)."""
    return {"version": TRAIN_VERSION, "n": int(field.n), "field": field_digest(field),
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()}}


def folder_name(field: Any, spec: NetSpec, label: str) -> tuple[str, str]:
    """``(name, key)``: the folder name ``learned-<label>-n<n>-<key>`` of the nets of ``field`` and ``spec``
    (``label`` names the regime) and the configuration key."""
    from largemodel.training.options import config_key

    key = config_key(train_config(field, spec))
    return f"learned-{label}-n{field.n}-{key}", key


def cache_folder(field: Any, spec: NetSpec, label: str, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """``(folder, key)`` of the nets of ``field`` and ``spec`` in the model cache (``label`` names the regime)."""
    from largemodel.training.cache import default_cache_dir
    from theory.output.files import make_dirs

    name, key = folder_name(field, spec, label)
    base = make_dirs(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    return base / name, key


def _snapshot_name(budget: int) -> str:
    return f"budget-{budget}.safetensors"


def shipped_files(spec: NetSpec) -> tuple[str, ...]:
    """The files of a finished folder that are shipped: one snapshot per budget and ``meta.json``."""
    return (*(_snapshot_name(b) for b in spec.budgets), META_FILE)


def shipped_folder(field: Any, spec: NetSpec, label: str) -> Path | None:
    """The shipped folder of these nets (:data:`SHIPPED_DIR`), or ``None`` if none is shipped: it counts only
    if it holds every file of :func:`shipped_files` and its ``meta.json`` names the configuration's key."""
    name, key = folder_name(field, spec, label)
    folder = SHIPPED_DIR / name
    if folder.is_symlink() or not all((folder / f).is_file() for f in shipped_files(spec)):
        return None
    return folder if _finished(folder, key) else None


def load_net(folder: Path, budget: int, n: int, spec: NetSpec) -> VelocityMLP:
    """The EMA net saved at ``budget`` in ``folder``, in float64 and ``eval`` mode, gradients off.

    Raises:
        ValueError: the file is missing a tensor or holds an unexpected one (``strict`` loading)."""
    from safetensors.torch import load

    net = VelocityMLP(n, spec.width, spec.freqs)
    state = load((folder / _snapshot_name(budget)).read_bytes())
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{folder / _snapshot_name(budget)}: not the weights of this net ({str(exc).splitlines()[0]})") from None
    net = net.double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _finished(folder: Path, key: str) -> bool:
    meta = folder / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("config_key") == key
    except (OSError, ValueError):
        return False


def trained_nets(field: Any, spec: NetSpec, label: str, *, cache_dir: str | Path | None = None,
                 checkpoint_every: int = 500) -> tuple[dict[int, VelocityMLP], dict[str, Any]]:
    """The nets trained on samples of ``field``'s ``p_g`` at every budget of ``spec`` (shipped with the package,
    else cached, else trained now into the cache), each in float64 and ``eval`` mode, and the training's metadata
    (losses, seconds: those of the training that produced them)."""
    from largemodel.training.cache import file_lock

    folder = shipped_folder(field, spec, label)
    if folder is None:  # not shipped: the cache, trained into it unless there
        folder, key = cache_folder(field, spec, label, cache_dir)
        with file_lock(folder.parent / f".{folder.name}.lock"):
            if not _finished(folder, key):
                _train(field, spec, folder, key, checkpoint_every)
    meta = json.loads((folder / META_FILE).read_text())
    return {b: load_net(folder, b, field.n, spec) for b in spec.budgets}, meta


def _train(field: Any, spec: NetSpec, folder: Path, key: str, checkpoint_every: int) -> None:
    """The training loop (module docstring); writes the snapshots, then ``meta.json``."""
    from safetensors.torch import save
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from largemodel.training.cache import resume_from_checkpoint, save_checkpoint
    from largemodel.training.objective import flow_matching_loss, sample_sigmas
    from theory.output.files import claim_folder, write_bytes, write_text

    claim_folder(folder, "train", "pfode learned_vs_exact: velocity MLP trained on a box mixture")
    n = field.n
    net = VelocityMLP(n, spec.width, spec.freqs, seed=spec.seed)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    losses, start, seconds = resume_from_checkpoint(folder / CHECKPOINT, key, net, ema, opt, gen)
    no_prompt = (torch.zeros(1, 1, 1), torch.zeros(1, 1))  # the MLP takes no prompt
    b = spec.batch_size
    t0 = time.perf_counter()
    for step in range(start, max(spec.budgets)):
        for group in opt.param_groups:
            group["lr"] = spec.lr * min(1.0, (step + 1) / max(1, spec.warmup))
        x1 = field.sample(b, gen).to(torch.float32).view(b, 1, 1, n)
        x0 = torch.randn(b, 1, 1, n, generator=gen)
        sigma = sample_sigmas(b, gen, spec.sigma_sampling)
        loss = flow_matching_loss(net, x1, x0, sigma, *no_prompt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema.update_parameters(net)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"training diverged at step {step + 1} (loss {value}); lower lr={spec.lr}")
        losses.append(value)
        done = step + 1
        if done in spec.budgets:
            weights = {k: v.detach().contiguous() for k, v in ema.module.state_dict().items()}
            write_bytes(folder / _snapshot_name(done), save(weights))
        if checkpoint_every and done % checkpoint_every == 0 and done < max(spec.budgets):
            save_checkpoint(folder / CHECKPOINT, {
                "config_key": key, "step": done, "model": net.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict(), "gen": gen.get_state(), "losses": losses,
                "seconds": seconds + time.perf_counter() - t0})
    seconds += time.perf_counter() - t0
    tail = {str(bud): float(sum(losses[max(0, bud - 50):bud]) / len(losses[max(0, bud - 50):bud])) for bud in spec.budgets}
    write_text(folder / META_FILE, json.dumps({"config_key": key, "config": train_config(field, spec),
                                               "loss_at_budget": tail, "train_seconds": seconds}, indent=1))
