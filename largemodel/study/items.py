"""Images and records of the reconstruction study: content keys, reconstruction file names,
reading the records back, and the warnings about skipped images.

A record is keyed on ``record_key(name, digest, prompt, guidance_scale)``: the image's name and the
SHA-256 of its content (the file's bytes for images read from a folder, else the loaded pixels), and
its conditioning when it is not the null prompt without guidance, so rerunning a study on a folder
holding other pixels under the same names, or with another prompt or guidance scale, studies them
afresh, while an unchanged image is never studied twice. ``study.json`` lists the record keys of the latest run;
``load_records(..., keys=...)`` and ``summarize`` use it to report that run only.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import torch
from torch import Tensor

__all__ = ["ImageItem", "conditioning_tag", "selected_prompts", "image_generators", "items_from_folder", "pixel_digest", "record_key",
           "recon_path", "load_records"]


@dataclass(frozen=True)
class ImageItem:
    """An image to study: a name, a loader returning ``(C, R, R)`` in ``[-1, 1]`` and its content.

    Attributes:
        key: the image's name (unique within a study; shown in records and figures).
        load: returns the pixels; raises ``ValueError`` or ``OSError`` if they cannot be read.
        content_hash: SHA-256 (hex) of what the image is made of (e.g. its file's bytes); when
            ``None`` the study hashes the loaded pixels (``pixel_digest``).
        prompt: the image's caption (``--captions``), or ``None`` for the model's own prompt.
    """

    key: str
    load: Callable[[], Tensor]
    content_hash: str | None = None
    prompt: str | None = None


def _listing(folder: str | Path, n_images: int, seed: int, exclude: str | Path | None) -> tuple[list[Path], list[Path], Callable[[Path], str]]:
    from largemodel.models.images import list_images, select_images, shown_name

    root = Path(folder)
    listed = list_images(root, exclude=exclude)
    return listed, select_images(listed, n_images, seed, root=root), (lambda p: shown_name(p.relative_to(root).as_posix()))


def selected_prompts(folder: str | Path, n_images: int, seed: int, captions: dict[str, str], *,
                     exclude: str | Path | None = None) -> list[str]:
    """The distinct prompts of the images ``items_from_folder`` selects, after ``check_captions`` (no
    image is read): what the text encoders must encode before the transformer loads."""
    from largemodel.models.captions import check_captions

    listed, paths, name = _listing(folder, n_images, seed, exclude)
    check_captions(captions, [name(p) for p in listed], [name(p) for p in paths])
    return list(dict.fromkeys(captions[name(p)] for p in paths))


def items_from_folder(folder: str | Path, n_images: int, seed: int, resolution: int, channels: int, *,
                      exclude: str | Path | None = None, captions: dict[str, str] | None = None) -> list[ImageItem]:
    """A seeded random subset of an image folder, centre-cropped and resized on loading.

    ``exclude`` (the command's own output folder) and everything in it are left out when it lies
    inside ``folder`` (``list_images``), so a run never studies its own reconstructions or plots.

    The subset is drawn from the names alone (``select_images``), before any file is read, so
    an unreadable file does not change which other images are chosen; each item's content hash
    is the SHA-256 of its file's bytes. ``captions`` (``--captions``, relative path -> prompt) gives
    each item its prompt, after ``largemodel.models.captions.check_captions``.
    """
    from largemodel.models.captions import check_captions
    from largemodel.models.images import file_digest, load_image

    listed, paths, name = _listing(folder, n_images, seed, exclude)
    if captions is not None:
        check_captions(captions, [name(p) for p in listed], [name(p) for p in paths])
    return [
        ImageItem(key=name(p), load=(lambda p=p: load_image(p, resolution, channels=channels)),
                  content_hash=file_digest(p), prompt=None if captions is None else captions[name(p)])
        for p in paths
    ]


def pixel_digest(pixels: Tensor) -> str:
    """SHA-256 (hex) of an image tensor: its dtype, shape and bytes (on the CPU, contiguous)."""
    t = pixels.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def record_key(name: str, digest: str | None, prompt: str = "", guidance_scale: float = 1.0) -> str:
    """The key of an image's record: its name and content, ``name#<16 hex digits>``
    (``name#unreadable`` for an image whose content could not be read), then its conditioning
    ``~<conditioning_tag>`` unless it is the null prompt without guidance (so keys of earlier runs stay)."""
    key = f"{name}#{digest[:16] if digest else 'unreadable'}"
    return key if (prompt == "" and guidance_scale == 1.0) else f"{key}~{conditioning_tag(prompt, guidance_scale)}"


def conditioning_tag(prompt: str, guidance_scale: float) -> str:
    """``p<12 hex digits of the prompt's SHA-256>w<W>``: the conditioning part of a resume key."""
    return f"p{hashlib.sha256(prompt.encode()).hexdigest()[:12]}w{float(guidance_scale):g}"


def recon_path(out: str | Path, key: str) -> Path:
    """The reconstruction PNG of the record with record key ``key`` (``record["record_key"]``).

    A readable form of the name plus a short hash of the whole key, so names that flatten to
    the same characters (``a b.png``, ``a_b.png``, ``a?b.png``) and same-named images with other
    content get distinct files.
    """
    name = key.rsplit("#", 1)[0]
    return Path(out) / "recon" / f"{_safe_name(name)[:96]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.png"


def _pixels(item: ImageItem) -> Tensor:
    """Load an item and check it: a ``(C, H, W)`` tensor of finite values (``ValueError`` otherwise)."""
    pixels = item.load()
    if not isinstance(pixels, Tensor) or pixels.ndim != 3:
        raise ValueError(f"image {item.key}: expected a (C, H, W) tensor")
    if not bool(torch.isfinite(pixels).all()):
        raise ValueError(f"image {item.key}: non-finite pixel values (NaN or inf)")
    return pixels


def _resolve(item: ImageItem, prompt: str = "", guidance_scale: float = 1.0) -> tuple[str, str | None]:
    """(record key, why the image cannot be read or ``None``); loads it if it carries no hash. The
    key includes the conditioning (``prompt``, ``guidance_scale``) the image is studied with."""
    if item.content_hash is not None:
        return record_key(item.key, item.content_hash, prompt, guidance_scale), None
    try:
        return record_key(item.key, pixel_digest(_pixels(item)), prompt, guidance_scale), None
    except (ValueError, OSError) as err:
        return record_key(item.key, None, prompt, guidance_scale), str(err)


def _records_files(out: Path) -> list[Path]:
    return sorted(out.glob("records*.jsonl"))


def load_records(
    out: str | Path,
    signature: str | None = None,
    *,
    keys: Collection[str] | None = None,
    skipped: bool = False,
) -> list[dict[str, Any]]:
    """Records of a study folder, merged over processes (each record key once), sorted by name.

    Args:
        out: the study folder.
        signature: when given, files whose header has another signature are ignored.
        keys: when given, only these record keys (e.g. ``study.json``'s ``keys``: the latest run).
        skipped: return the records of skipped (unreadable) images instead of the studied ones.
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in _records_files(Path(out)):
        if ".stale-" in path.name:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if not lines:
            continue
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line 1 is not a pfode record header; move the file away") from None
        if signature is not None and (not isinstance(header, dict) or header.get("signature") != signature):
            continue
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                merged.setdefault(rec["key"], rec["value"])
            except (json.JSONDecodeError, TypeError, KeyError):  # a line cut by an interruption
                continue
    wanted = set(keys) if keys is not None else None
    chosen = [
        (k, v) for k, v in merged.items()
        if isinstance(v, dict) and (wanted is None or k in wanted) and ("skipped" in v) == skipped
    ]
    return [v for _, v in sorted(chosen, key=lambda kv: (str(kv[1].get("key", "")), kv[0]))]


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _print_warning(line: str) -> None:
    print(f"pfode: warning: {line}", file=sys.stderr, flush=True)


class _Warnings:
    """Warning lines about skipped images, held back until an image of the run is studied: if
    none is, ``finish`` raises one ``ValueError`` instead of printing several lines."""

    def __init__(self, warn: Callable[[str], None], *, studied: bool) -> None:
        self.warn = warn
        self.studied = studied
        self.held: list[str] = []

    def add(self, line: str) -> None:
        if self.studied:
            self.warn(line)
        else:
            self.held.append(line)

    def studied_one(self) -> None:
        if not self.studied:
            self.studied = True
            for line in self.held:
                self.warn(line)
            self.held.clear()

    def finish(self, *, single_process: bool, total: int) -> None:
        if self.held and single_process:
            more = f" (and {len(self.held) - 1} more)" if len(self.held) > 1 else ""
            raise ValueError(f"none of the {total} selected images can be read: {self.held[0]}{more}")
        for line in self.held:
            self.warn(line)
        self.held.clear()


def image_generators(seed: int, keys: Sequence[str]) -> list[torch.Generator]:
    """One generator per image (perturbations, directions, probes), seeded by the run's ``seed``
    and the image's own record key (its name and content, not its conditioning: the same draws
    whatever its prompt and guidance scale), never by the other images of its group.

    Every draw of the study, ``scores``, ``maps`` and ``explain`` takes each image's rows from its
    own generator (``largemodel.study.instability.draw_per_image``), so a record does not depend on
    ``--images-per-batch``, on the number of processes, or on where an interrupted run resumed.
    """
    return [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(hashlib.sha256(_unconditioned(k).encode()).hexdigest()[:8], 16))
            for k in keys]


def _unconditioned(key: str) -> str:
    """``key`` without its conditioning tag: an image draws the same perturbations, directions and probes
    whatever its prompt and guidance scale (common random numbers when comparing them)."""
    return re.sub(r"~p[0-9a-f]{12}w[^~@#]*", "", key)
