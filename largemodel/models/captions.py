r"""Caption files: a prompt per image (``--captions``), read and checked before any computing.

Three formats, told apart by the file's suffix:

* ``.csv``: a header row with the columns ``file`` and ``prompt`` (others ignored);
* ``.jsonl``: one JSON object per line, ``{"file": ..., "prompt": ...}``;
* ``.json``: PIE-Bench's ``mapping_file.json`` read as it ships,
  ``{id: {"image_path": ..., "original_prompt": ..., ...}}``: the image is ``image_path``, the
  prompt its ``original_prompt`` (the source prompt an inversion uses) with PIE-Bench's edit
  brackets removed (``"a [cat] on a mat"`` -> ``"a cat on a mat"``).

``file`` is the image's path relative to ``--images``, with ``/`` separators (as the records name
images). The policy (``check_captions``): every entry must name an image of ``--images`` and every
image studied must have a caption; otherwise one ``ValueError`` names the flag, how many and the
first. An empty prompt ``""`` is the null prompt. Torch-free.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

__all__ = ["check_captions", "clean_pie_prompt", "conditioning_args", "read_captions"]


def clean_pie_prompt(text: str) -> str:
    """PIE-Bench's prompt without its edit brackets: ``[`` and ``]`` removed, spaces collapsed."""
    return re.sub(r"\s+", " ", text.replace("[", "").replace("]", "")).strip()


def _norm(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix().removeprefix("./")


def _add(out: dict[str, str], file: Any, prompt: Any, where: str, flag: str) -> None:
    if not isinstance(file, str) or not file.strip():
        raise ValueError(f"{flag}: {where}: the image file name is missing")
    if not isinstance(prompt, str):
        raise ValueError(f"{flag}: {where}: the prompt of {file!r} is not text")
    key = _norm(file.strip())
    if key in out and out[key] != prompt:
        raise ValueError(f"{flag}: {where}: {key!r} has two different captions")
    out[key] = prompt


def read_captions(path: str | Path, flag: str = "--captions") -> dict[str, str]:
    """``image path (relative, posix) -> prompt`` from a caption file (see the module).

    Raises:
        ValueError: naming ``flag``: an unreadable file, an unknown suffix, a malformed line or
            entry, an image given two different captions, or no entry at all.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag}: cannot read {p}: {exc}") from None
    out: dict[str, str] = {}
    suffix = p.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not {"file", "prompt"} <= set(reader.fieldnames):
            raise ValueError(f"{flag}: {p} needs a header row with the columns file,prompt")
        for i, row in enumerate(reader, start=2):
            _add(out, row.get("file"), row.get("prompt") if row.get("prompt") is not None else None, f"{p} line {i}", flag)
    elif suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{flag}: {p} line {i} is not JSON") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{flag}: {p} line {i} is not a JSON object with file and prompt")
            _add(out, obj.get("file"), obj.get("prompt"), f"{p} line {i}", flag)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{flag}: {p} is not JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{flag}: {p}: expected PIE-Bench's mapping {{id: {{image_path, original_prompt}}}}")
        for key, entry in data.items():
            if not isinstance(entry, dict) or "image_path" not in entry or "original_prompt" not in entry:
                raise ValueError(f"{flag}: {p}: entry {key!r} lacks image_path or original_prompt")
            prompt = entry["original_prompt"]
            _add(out, entry["image_path"], clean_pie_prompt(prompt) if isinstance(prompt, str) else prompt,
                 f"{p} entry {key!r}", flag)
    else:
        raise ValueError(f"{flag}: {p}: use a .csv (file,prompt), .jsonl ({{\"file\", \"prompt\"}}) or PIE-Bench's "
                         f"mapping_file.json, got {p.suffix or 'no suffix'}")
    if not out:
        raise ValueError(f"{flag}: {p} holds no caption")
    return out


def check_captions(captions: dict[str, str], images: Iterable[str], studied: Iterable[str],
                   flag: str = "--captions") -> None:
    """Refuse captions naming images absent from the folder (``images``: every image's relative path)
    and studied images without a caption (``studied``), each with one line naming how many and the first."""
    present = set(images)
    absent = [f for f in captions if f not in present]
    if absent:
        raise ValueError(f"{flag}: {len(absent)} captions name images absent from --images (first: {absent[0]}); "
                         "file names are paths relative to --images")
    missing = [f for f in studied if f not in captions]
    if missing:
        raise ValueError(f"{flag}: {len(missing)} images have no caption (first: {missing[0]}); every image studied "
                         "needs one (an empty prompt is the null prompt)")


def conditioning_args(args: Any) -> tuple[str | None, dict[str, str] | None]:
    """``(--prompt, --captions read)`` of a parsed command, checked before any computing: the two
    flags exclude each other (one prompt for every image, or one per image)."""
    prompt, path = getattr(args, "prompt", None), getattr(args, "captions", None)
    if prompt is not None and path is not None:
        raise ValueError("--prompt and --captions exclude each other: give one prompt for every image, or a caption "
                         "file with one per image")
    return prompt, (read_captions(path) if path is not None else None)
