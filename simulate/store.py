"""Run-folder safety: what pfode may write, lock, delete and resume in an output folder.

A newcomer reads this module alone. Every command that writes results (``pfode simulate``,
``pfode report``, ``pfode largemodel train|study|gallery``) follows four rules:

1. **One run per folder.** The run holds :func:`output_lock` on its output folder: a
   non-blocking exclusive ``flock`` on ``<folder>/.lock``, which records the holder's pid and
   command. A second run on the same folder fails at once with :class:`OutputBusy` (a
   ``ValueError``: the CLI prints one line and exits 2) instead of mixing its records with the
   first run's. The lock is released when the run ends, however it ends (the kernel drops a
   ``flock`` when its process dies, so a ``kill -9`` leaves no stale lock).
2. **Only what pfode wrote is deleted.** A folder pfode writes results into is claimed for one
   kind of run (:func:`claim_folder`); its marker file ``.pfode-owned`` holds a manifest of
   every file pfode wrote there (size, SHA-256) and every folder it made, and
   :func:`remove_owned` (``--fresh``, replacing a model folder) deletes exactly those files that
   are unchanged, then the folders if empty, and returns the rest for the caller to name.
   A folder of one kind of run is never written into or replaced by another kind. The rules
   and the writer live in :mod:`theory.output.files` and :mod:`theory.output.removal` (the
   bottom layer, so that theory's curves write the same way); they are re-exported here.
3. **No half-written files or folders, no link followed.** Files are written with
   :func:`atomic_write_text` (temporary file in the same folder, ``fsync``, ``os.replace``;
   a symbolic link at the path is refused, a file pfode did not write is never replaced) and
   whole folders (a trained model) with :func:`atomic_folder` (built under a temporary sibling
   name, then renamed): a reader sees the old version or the new one, never a mixture. Files
   and folders follow the umask.
4. **Resume exactly, or say why not.** :class:`RecordStore` is an append-only JSON-lines file
   of finished work units tied to a hash of the run's parameters: a rerun with the same
   parameters skips what is recorded, one with other parameters moves the old file aside
   (never overwriting an earlier one), and a damaged file is an error naming the file and line.

This module is the bottom of ``simulate`` (everything above imports it; it imports nothing of
pfode but :mod:`simulate.locking`, which holds rule 1, and :mod:`theory.output.files`, which
holds rules 2 and 3 with :mod:`theory.output.removal`; their names are re-exported here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from simulate.locking import LOCK_FILE, OutputBusy, output_lock
from theory.output.files import (
    KINDS,
    MARKER_FILE,
    append_bytes,
    check_out_path,
    claim_folder,
    folder_kind,
    folder_mode,
    foreign_entry,
    make_dirs,
    move_file,
    owned_by_pfode,
    record_tree,
    write_bytes,
    write_text,
)
from theory.output.removal import remove_owned, unowned_files

__all__ = [
    "KINDS",
    "LOCK_FILE",
    "MARKER_FILE",
    "OutputBusy",
    "RecordStore",
    "atomic_folder",
    "atomic_write_text",
    "check_out_path",
    "claim_folder",
    "describe_kept",
    "folder_kind",
    "foreign_entry",
    "json_ready",
    "output_lock",
    "owned_by_pfode",
    "remove_owned",
    "unowned_files",
    "write_bytes",
]


# ---- JSON ---------------------------------------------------------------------------------
def json_ready(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, Paths and non-finite floats to JSON-safe values
    (non-finite floats become ``None``)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---- atomic writes ------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; best effort where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (``theory.output.files.write_text``: temporary file,
    ``fsync``, ``os.replace``; recorded in the claimed folder's manifest; no link followed, no
    file pfode did not write replaced). Returns ``Path(path)``."""
    path = write_text(path, text)
    _fsync_dir(path.parent)
    return path


def describe_kept(folder: str | Path, kept: list[str], limit: int = 5) -> str:
    """One line naming what pfode kept in ``folder`` because it did not write it (or it changed)."""
    names = ", ".join(kept[:limit]) + (f" and {len(kept) - limit} more" if len(kept) > limit else "")
    return (f"kept {len(kept)} file(s) in {folder} that pfode did not write or that changed since: {names}")


@contextlib.contextmanager
def atomic_folder(final: str | Path, kind: str = "train") -> Iterator[Path]:
    """Build a folder under a temporary sibling name; on success it replaces ``final``.

    Yields the temporary folder (``<parent>/.<name>.tmp-XXXX``, created empty, umask mode,
    claimed for ``kind``). When the block succeeds, every file in it is recorded in its
    manifest, ``final``'s own files are removed (``remove_owned``: only
    what pfode wrote, unchanged) and the new folder is renamed to ``final``. When the block
    fails the temporary folder is removed and ``final`` is untouched.

    Raises:
        ValueError: ``final`` is a link or a file, belongs to another kind of run or to no
            run, or keeps files pfode did not write (then the new folder is left at its
            temporary name, named in the message, and nothing of the user's is touched).
    """
    final = Path(final)
    make_dirs(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, folder_mode())
    try:
        claim_folder(tmp, kind)
        yield tmp
        record_tree(tmp)
        _fsync_dir(tmp)
        if os.path.lexists(final):
            claim_folder(final, kind)  # refuses a link, a file, another kind, a foreign folder
            kept = remove_owned(final)
            if os.path.lexists(final):
                raise ValueError(f"{describe_kept(final, kept)}; the new folder is left at {tmp}")
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        if not (isinstance(exc, ValueError) and str(tmp) in str(exc)):
            shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- resumable records --------------------------------------------------------------------
def _move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<stem>.stale-<time>[-k].jsonl`` without overwriting any file."""
    stamp = int(time.time())
    for k in range(10_000):
        target = path.with_name(f"{path.stem}.stale-{stamp}{'' if k == 0 else f'-{k}'}{path.suffix}")
        try:
            move_file(path, target)  # fails if target exists: never overwrites
        except FileExistsError:
            continue
        return target
    raise ValueError(f"{path}: cannot find a free name to move the old records aside")  # pragma: no cover


class RecordStore:
    """Append-only JSON-lines store of finished work units, keyed, tied to a parameter hash.

    Line 1 is the header ``{"signature": ..., "params": ...}``; every other line is
    ``{"key": ..., "value": ...}``. ``store.done(key)`` tells whether a unit is recorded;
    ``store.add(key, record)`` appends it and ``fsync``s at once, so an interruption loses at
    most the unit in progress (a last line cut by a kill is dropped on reopening). A file with
    another signature is moved aside to ``<stem>.stale-<time>.jsonl`` (never overwriting an
    earlier one) and a fresh store starts.

    Raises:
        ValueError: (on opening) a complete line that is not a valid header or record; the
            message names the file and the line.
    """

    def __init__(self, out_dir: Path, params: dict[str, Any], name: str = "records.jsonl") -> None:
        make_dirs(out_dir)
        self.path = out_dir / name
        self.signature = hashlib.sha256(json.dumps(json_ready(params), sort_keys=True).encode()).hexdigest()[:16]
        self._records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._open_existing()
        if not self.path.exists():
            atomic_write_text(self.path, json.dumps({"signature": self.signature, "params": json_ready(params)}) + "\n")

    def _open_existing(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        if text and not text.endswith("\n"):  # drop a last line cut by an interruption
            text = text[: text.rfind("\n") + 1]
            atomic_write_text(self.path, text)
        lines = text.splitlines()
        if not lines:
            header: dict[str, Any] = {}
        else:
            try:
                header = json.loads(lines[0])
            except json.JSONDecodeError:
                header = None  # type: ignore[assignment]
            if not isinstance(header, dict) or "signature" not in header:
                raise ValueError(f"{self.path}: line 1 is not a pfode record header; "
                                 "move the file away (or choose another --out) to start afresh")
        if header.get("signature") != self.signature:
            _move_aside(self.path)
            return
        for number, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
                self._records[rec["key"]] = rec["value"]
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ValueError(f"{self.path}: line {number} is not a pfode record; "
                                 "move the file away (or choose another --out) to start afresh") from None

    def done(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any]:
        return self._records[key]

    def add(self, key: str, value: dict[str, Any]) -> None:
        if key in self._records:
            raise ValueError(f"key {key!r} is already recorded")
        value = json_ready(value)
        append_bytes(self.path, (json.dumps({"key": key, "value": value}) + "\n").encode("utf-8"))
        self._records[key] = value

    def values(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
