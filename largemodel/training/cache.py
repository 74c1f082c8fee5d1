r"""Files of the models trained here: the model cache, training checkpoints, finished folders.

- ``default_cache_dir`` / ``cache_entry``: where ``largemodel.training.train.cached_model`` keeps trained
  folders, ``$PFODE_CACHE/models/<data>-<size>px-<key>`` (``key``: ``train_options.config_key``),
  with ``file_lock`` serialising concurrent trainings of one key.
- ``save_checkpoint`` / ``load_checkpoint``: the resumable training state, written atomically
  (a temporary file, then ``os.replace``) and read back with ``torch.load(weights_only=True)``,
  so a planted pickle runs no code.
- ``shipped_model``: the quick report's models shipped as package data (``largemodel/training/shipped/``),
  found by configuration key.
- ``existing_model``: whether a folder already holds the finished model of a configuration;
  ``model_dataset``: the train / held-out split a finished model was trained on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from largemodel.training.data import Dataset, dataset_from_split
from largemodel.models.folder import CLASS_PROMPTS_FILE, PFODE_META_FILE
from theory.output.files import make_dirs, write_bytes

__all__ = [
    "CHECKPOINT_FILE",
    "FILES",
    "SHIPPED_DIR",
    "SPECS",
    "cache_entry",
    "default_cache_dir",
    "existing_model",
    "file_lock",
    "load_checkpoint",
    "resume_from_checkpoint",
    "model_dataset",
    "save_checkpoint",
    "shipped_files",
    "shipped_model",
]

#: checkpoint written (atomically) in the output folder while training; removed at the end
CHECKPOINT_FILE = "train_checkpoint.pt"


def default_cache_dir() -> Path:
    """``$PFODE_CACHE/models`` if ``PFODE_CACHE`` is set, else ``~/.cache/pfode-instability/models``."""
    root = os.environ.get("PFODE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pfode-instability"
    return base / "models"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    from theory.output.files import file_mode

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())  # never through a link
    except OSError:
        if Path(path).is_symlink():
            raise ValueError(f"{path} is a symbolic link; pfode does not write through links: remove it") from None
        raise
    with os.fdopen(fd, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_entry(data: str, size: int, key: str, cache_dir: str | Path | None = None) -> Path:
    """The cache folder ``<cache_dir>/<data>-<size>px-<key>`` of a configuration (``cache_dir``
    default ``default_cache_dir()``, created if absent; the model folder itself is not)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    make_dirs(base)
    return base / f"{data}-{size}px-{key}"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``torch.save`` to memory, then
    ``theory.output.files.write_bytes``: recorded in the folder's manifest, no link followed)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
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


def resume_from_checkpoint(path: Path, key: str, model: Any, ema: Any, opt: Any,
                           gen: torch.Generator) -> tuple[list[float], int, float]:
    """Restore ``model``, ``ema``, ``opt`` and ``gen`` from the checkpoint at ``path`` (:func:`load_checkpoint`)
    and return its ``(losses, step, seconds)``; ``([], 0, 0.0)`` (nothing restored) when there is none."""
    state = load_checkpoint(path, key)
    if state is None:
        return [], 0, 0.0
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    return list(state["losses"]), int(state["step"]), float(state["seconds"])


def existing_model(out: Path, key: str) -> bool:
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


# ---- the models shipped with the package (largemodel/training/shipped/) ----------------------
#: the folder holding the shipped model folders (package data)
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"

#: the files of a model folder that are shipped (the training's ownership marker and locks are not)
FILES: tuple[str, ...] = ("model_index.json", "pfode_model.json", "null_prompt.safetensors",
                          "scheduler/scheduler_config.json", "transformer/config.json",
                          "transformer/diffusion_pytorch_model.safetensors")

#: the shipped configurations: ``(data, size, train images, steps, class_conditional)`` with the training
#: defaults otherwise (the class-conditional one with condition dropout 0.1: the report's guidance section)
SPECS: tuple[tuple[str, int, int, int, bool], ...] = (("digits", 8, 100, 1000, False), ("digits", 16, 100, 1000, False),
                                                      ("digits", 8, 500, 1000, True))


def shipped_files(class_conditional: bool) -> tuple[str, ...]:
    """The files of a shipped folder: :data:`FILES`, and a class-conditional model's class table."""
    return FILES + ((CLASS_PROMPTS_FILE,) if class_conditional else ())


def shipped_model(data: str, size: int, key: str) -> Path | None:
    """The shipped folder of the configuration with cache key ``key``, or ``None`` if none is shipped.

    A folder counts only if it holds every file of :data:`FILES` (and, for a class-conditional
    configuration, its class table: ``shipped_files``) and its ``pfode_model.json`` names the same
    ``config_key``; anything else is ignored (the caller trains).
    """
    folder = SHIPPED_DIR / f"{data}-{size}px-{key}"
    if folder.is_symlink() or not all((folder / rel).is_file() for rel in FILES):
        return None
    try:
        meta = json.loads((folder / "pfode_model.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("config_key") != key:
        return None
    classes = bool(isinstance(meta.get("config"), dict) and meta["config"].get("class_conditional"))
    return folder if all((folder / rel).is_file() for rel in shipped_files(classes)) else None
