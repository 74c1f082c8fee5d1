r"""Prompt embeddings: each distinct prompt encoded once, with the folder's own text encoders, cached.

``prompt_table`` returns ``prompt -> (embeds, pooled)`` for the prompts asked and the null prompt
``""`` (the unconditional branch of classifier-free guidance, docs/theory.md §10.7). Order, so that
the text encoders and the transformer are never resident together (the peak is their max, not
their sum) and a rerun loads no encoder at all:

1. the null prompt from the folder's ``null_prompt.safetensors`` when it has one (models trained
   here, tiny test folders);
2. the class names of a class-conditional model trained here from its ``class_prompts.safetensors``
   (``read_class_prompts``: ``"digit 3"`` -> its learned embeddings, docs/theory.md §10.9);
3. each remaining prompt from the cache, ``<out>/prompt_cache/<key>.safetensors``, keyed on the
   prompt text, the SHA-256 of every text-encoder and tokenizer file, the family and the dtype
   (a file whose metadata disagrees is not used; a damaged one is named and rebuilt);
4. the rest from the text encoders, loaded alone (``transformer=None, vae=None``), run once per
   prompt, freed; then written to the cache.

The encoding itself is the family pipeline's ``encode_prompt`` (``encode_with_pipeline``), the same
call ``from_pipeline`` makes on a user's loaded pipeline and the pipelines make on ``pipe(prompt=...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

from largemodel.models.folder import FolderInfo, ModelFolderError, _load_kwargs

__all__ = ["PROMPT_CACHE_DIR", "encode_with_pipeline", "encoder_digest", "prompt_cache_path", "prompt_table",
           "read_class_prompts"]

#: the cache folder inside a run's output folder
PROMPT_CACHE_DIR = "prompt_cache"

Table = dict[str, tuple[Tensor, Tensor]]

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-256, this process


def _file_sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_DIGESTS[memo] = h.hexdigest()
    return _FILE_DIGESTS[memo]


def encoder_digest(info: FolderInfo) -> str:
    """SHA-256 over every file of the folder's text encoders and tokenizers (relative path and content)."""
    h = hashlib.sha256()
    for name in sorted(k for k in info.components if k.startswith(("text_encoder", "tokenizer"))):
        for f in sorted(p for p in (info.path / name).rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(info.path).as_posix()}\0{_file_sha256(f)}\n".encode())
    return h.hexdigest()


def prompt_cache_path(cache_dir: Path, stamp: dict[str, str]) -> Path:
    """The cache file of one prompt: ``<cache_dir>/prompt_cache/<SHA-256 of the stamp, 24 hex>.safetensors``."""
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / PROMPT_CACHE_DIR / f"{key}.safetensors"


def encode_with_pipeline(pipe: Any, family: str, prompts: Iterable[str], device: torch.device) -> Table:
    """``prompt -> (embeds, pooled)`` (on the CPU) by the pipeline's own ``encode_prompt``, batch 1 per
    prompt with its defaults (SD3: CLIP-L, CLIP-G and T5, 256 T5 tokens; FLUX: CLIP pooled, 512 T5
    tokens), as ``pipe(prompt=...)`` encodes the prompt and its empty negative prompt."""
    out: Table = {}
    with torch.no_grad():
        for p in dict.fromkeys(prompts):
            if family == "flux":
                embeds, pooled, _ = pipe.encode_prompt(prompt=p, prompt_2=None, device=device)
            else:
                embeds, _, pooled, _ = pipe.encode_prompt(prompt=p, prompt_2=None, prompt_3=None, device=device,
                                                          do_classifier_free_guidance=False)
            out[p] = (embeds.cpu(), pooled.cpu())
    return out


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bars and no notices from diffusers / transformers while the encoders load (their
    previous settings restored after)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = (dlog.get_verbosity(), tlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.set_verbosity_error(), tlog.set_verbosity_error(), dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(before[0]), tlog.set_verbosity(before[1])
        if before[2]:
            dlog.enable_progress_bar()
        if before[3]:
            tlog.enable_progress_bar()


def _from_encoders(info: FolderInfo, prompts: list[str], device: torch.device, dtype: torch.dtype) -> Table:
    """Encode ``prompts`` with the folder's text encoders, loaded alone and freed before returning."""
    import gc

    import diffusers

    try:
        with _quiet_loading():
            pipe_cls = getattr(diffusers, info.pipeline_class)  # importing it imports transformers' processors
            pipe = pipe_cls.from_pretrained(info.path, transformer=None, vae=None, **_load_kwargs(dtype))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{info.path}: cannot load the text encoders offline: {exc}") from None
    pipe.to(device)
    table = encode_with_pipeline(pipe, info.family, prompts, device)
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return table


def _read_cache(path: Path, stamp: dict[str, str]) -> tuple[Tensor, Tensor] | None:
    """The cached embeddings if ``path`` was written for ``stamp``; ``None`` (rebuild) otherwise, and
    for a damaged file one warning line on stderr naming it (the rebuilt cache replaces it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file() or path.is_symlink():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if not all(meta.get(k) == v for k, v in stamp.items()):
            return None
        tensors = load_file(str(path))
        return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    except Exception as exc:  # SafetensorError, OSError, KeyError: a damaged file, rebuilt
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        print(f"pfode: warning: damaged prompt cache {path} ({reason}); rebuilding it", file=sys.stderr)
        return None


def read_class_prompts(path: Path) -> Table:
    """A class-conditional model's table from ``class_prompts.safetensors``: ``name -> (embeds (1, L, D),
    pooled (1, P))``, the names in the metadata's ``prompts`` (a JSON list), row ``i`` of each stacked tensor.

    Raises:
        ModelFolderError: an unreadable file, or names and rows that do not match.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            names = json.loads((fh.metadata() or {}).get("prompts", "null"))
            embeds, pooled = fh.get_tensor("prompt_embeds"), fh.get_tensor("pooled_prompt_embeds")
    except Exception as exc:  # SafetensorError, OSError, JSONDecodeError: named, never guessed around
        raise ModelFolderError(f"{path}: not a readable class-prompt table ({type(exc).__name__}: {exc})") from None
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)
            or embeds.ndim != 3 or pooled.ndim != 2 or not embeds.shape[0] == pooled.shape[0] == len(names)):
        raise ModelFolderError(f"{path}: needs distinct prompt names in its metadata and one row of "
                               "prompt_embeds (K, L, D) and pooled_prompt_embeds (K, P) per name")
    return {n: (embeds[i:i + 1], pooled[i:i + 1]) for i, n in enumerate(names)}


def prompt_table(info: FolderInfo, prompts: Iterable[str], device: torch.device, dtype: torch.dtype,
                 cache_dir: Path | None) -> Table:
    """``prompt -> (embeds, pooled)`` on the CPU for ``prompts`` and the null prompt ``""`` (see the module).

    Raises:
        ModelFolderError: a prompt other than ``""`` for a folder without text encoders.
    """
    from safetensors.torch import load_file, save

    # a class table is small: all of it is kept, so ``FlowModel.conditioned("digit 5")`` needs no reload
    classes = read_class_prompts(info.class_prompts_file) if info.class_prompts_file is not None else {}
    wanted = list(dict.fromkeys(["", *prompts, *classes]))
    table: Table = {}
    if info.null_prompt_file is not None:
        tensors = load_file(str(info.null_prompt_file))
        if {"prompt_embeds", "pooled_prompt_embeds"} - tensors.keys():
            raise ModelFolderError(f"{info.null_prompt_file}: needs prompt_embeds and pooled_prompt_embeds")
        table[""] = (tensors["prompt_embeds"], tensors["pooled_prompt_embeds"])
    table.update({p: e for p, e in classes.items() if p})
    missing = [p for p in wanted if p not in table]
    if missing and not info.has_text_encoders:
        known = f"its class prompts {', '.join(map(repr, classes))} or the null prompt" if classes else (
            f"the null prompt only (its {info.null_prompt_file.name if info.null_prompt_file else 'null prompt'})")
        raise ModelFolderError(f"{info.path}: no text encoders, so it can be conditioned on {known}; "
                               f"cannot encode {missing[0]!r}")
    stamps: dict[str, dict[str, str]] = {}
    if missing and cache_dir is not None:
        digest = encoder_digest(info)
        for p in missing:
            stamps[p] = {"prompt": p, "encoders_sha256": digest, "family": info.family, "dtype": str(dtype)}
            cached = _read_cache(prompt_cache_path(cache_dir, stamps[p]), stamps[p])
            if cached is not None:
                table[p] = cached
        missing = [p for p in missing if p not in table]
    if missing:
        encoded = _from_encoders(info, missing, device, dtype)
        table.update(encoded)
        if cache_dir is not None:  # atomic, recorded in the run folder's manifest, no link followed
            from theory.output.files import write_bytes

            for p, (e, pooled) in encoded.items():
                write_bytes(prompt_cache_path(cache_dir, stamps[p]),
                            save({"prompt_embeds": e.contiguous(), "pooled_prompt_embeds": pooled.contiguous()},
                                 metadata=stamps[p]))
    return {p: table[p] for p in wanted}
