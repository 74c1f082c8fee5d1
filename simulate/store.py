"""Run-folder safety: what pfode may write, lock, delete and resume in an output folder.

A newcomer reads this module alone. Every command that writes results (``pfode simulate``,
``pfode report``, ``pfode largemodel train|study|gallery``) follows four rules:

1. **One run per folder.** The run holds :func:`output_lock` on its output folder: a
   non-blocking exclusive ``flock`` on ``<folder>/.lock``, which records the holder's pid and
   command. A second run on the same folder fails at once with :class:`OutputBusy` (a
   ``ValueError``: the CLI prints one line and exits 2) instead of mixing its records with the
   first run's. The lock is released when the run ends, however it ends (the kernel drops a
   ``flock`` when its process dies, so a ``kill -9`` leaves no stale lock).
2. **Only what pfode created is deleted.** A folder pfode creates for its results carries a
   marker file ``.pfode-owned`` (:func:`mark_owned`). :func:`remove_owned` deletes a folder only
   if it holds the marker, and refuses a folder that holds anything without it. pfode never
   marks a folder that already holds files it did not write, so a user's files can never come
   under a marker.
3. **No half-written files or folders.** Files are written with :func:`atomic_write_text`
   (temporary file in the same folder, ``fsync``, ``os.replace``) and whole folders (a trained
   model) with :func:`atomic_folder` (built under a temporary sibling name, then renamed): a
   reader sees the old version or the new one, never a mixture.
4. **Resume exactly, or say why not.** :class:`RecordStore` is an append-only JSON-lines file
   of finished work units tied to a hash of the run's parameters: a rerun with the same
   parameters skips what is recorded, one with other parameters moves the old file aside
   (never overwriting an earlier one), and a damaged file is an error naming the file and line.

This module is the bottom layer (``simulate`` and everything above import it; it imports
nothing of pfode but :mod:`simulate.locking`, which holds rule 1 and whose ``LOCK_FILE``,
``OutputBusy`` and ``output_lock`` are re-exported here).
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

__all__ = [
    "LOCK_FILE",
    "MARKER_FILE",
    "OutputBusy",
    "RecordStore",
    "atomic_folder",
    "atomic_write_text",
    "foreign_entry",
    "json_ready",
    "mark_owned",
    "output_lock",
    "owned_by_pfode",
    "remove_owned",
]

#: marker file of a folder pfode created (JSON: what, created, version)
MARKER_FILE = ".pfode-owned"

#: format version written into the marker
MARKER_VERSION = 1

#: names pfode itself may leave in a folder before marking it
_PFODE_NAMES = frozenset({LOCK_FILE, MARKER_FILE})


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
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, ``fsync``,
    then ``os.replace``. A reader (or a crash) sees the old content or the new, never a part.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary sibling name; on success rename it to ``final``.

    Yields the temporary folder (``<parent>/.<name>.tmp-XXXX``, created empty). When the block
    succeeds it is renamed to ``final``; an existing ``final`` is replaced only if pfode owns
    it (``owned_by_pfode``) or it is empty, else ``ValueError``. When the block fails the
    temporary folder is removed and ``final`` is untouched. So ``final`` is never seen half
    written: it is absent, the old folder, or the complete new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        _check_replaceable(final)
        _fsync_dir(tmp)
        if final.exists():
            aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            os.rename(final, aside / final.name)
            os.rename(tmp, final)
            shutil.rmtree(aside)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(final: Path) -> None:
    _refuse_foreign(final, "remove it or choose another output folder",
                    "pfode will not replace it: choose another output folder")


def _refuse_foreign(folder: Path, if_file: str, if_foreign: str) -> None:
    """``ValueError`` if ``folder`` is a file, or holds an entry pfode cannot claim (``foreign_entry``)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; {if_file}")
    name = foreign_entry(folder)
    if name is not None:
        raise ValueError(f"{folder} holds files pfode did not create (e.g. {name}); {if_foreign}")


# ---- ownership ----------------------------------------------------------------------------
def owned_by_pfode(folder: str | Path) -> bool:
    """Whether ``folder`` is a folder holding pfode's marker file ``.pfode-owned``."""
    return (Path(folder) / MARKER_FILE).is_file()


def foreign_entry(folder: str | Path) -> str | None:
    """The name of one entry of ``folder`` that pfode cannot claim, or ``None``.

    ``None`` when ``folder`` is absent, carries the marker, or holds nothing but pfode's own
    lock file; otherwise the (alphabetically first) other entry.
    """
    folder = Path(folder)
    if not folder.is_dir() or owned_by_pfode(folder):
        return None
    names = sorted(p.name for p in folder.iterdir() if p.name not in _PFODE_NAMES)
    return names[0] if names else None


def mark_owned(folder: str | Path, what: str) -> Path:
    """Create ``folder`` (parents too) if needed and mark it as pfode's (``.pfode-owned``).

    An existing marker is kept as it is (its ``created`` time stays the first one).

    Args:
        folder: the folder pfode is about to write results into.
        what: what pfode keeps there (e.g. ``"pfode report theory suite"``), for the marker.

    Raises:
        ValueError: ``folder`` is a file, or already holds files without the marker (they
            would otherwise come under it and a later ``--fresh`` could delete them).
    """
    folder = Path(folder)
    _refuse_foreign(folder, "choose another --out", "choose another --out (an empty or new folder)")
    folder.mkdir(parents=True, exist_ok=True)
    if not owned_by_pfode(folder):
        from importlib import metadata

        try:
            version = metadata.version("pfode-instability")
        except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
            version = "unknown"
        marker = {"what": what, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "version": version}
        atomic_write_text(folder / MARKER_FILE, json.dumps(marker) + "\n")
    return folder


def remove_owned(folder: str | Path) -> bool:
    """Delete ``folder`` and everything in it, only if pfode created it (it holds the marker).

    Returns:
        ``True`` if the folder was removed; ``False`` if there was nothing to remove (absent,
        or holding nothing but pfode's lock file, in which case it is left as it is).

    Raises:
        ValueError: ``folder`` is a file, or holds files without pfode's marker (the message
            names the folder and one of those files); nothing is deleted.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return False
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"{folder} is not a folder pfode created; pfode will not delete it")
    if not owned_by_pfode(folder):
        name = foreign_entry(folder)
        if name is None:
            return False
        raise ValueError(f"{folder} was not created by pfode (it holds {name} and no {MARKER_FILE}); "
                         "pfode will not delete it: move it away or choose another --out")
    shutil.rmtree(folder)
    return True


# ---- resumable records --------------------------------------------------------------------
def _move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<stem>.stale-<time>[-k].jsonl`` without overwriting any file."""
    stamp = int(time.time())
    for k in range(10_000):
        target = path.with_name(f"{path.stem}.stale-{stamp}{'' if k == 0 else f'-{k}'}{path.suffix}")
        try:
            os.link(path, target)  # fails if target exists: never overwrites
        except FileExistsError:
            continue
        os.unlink(path)
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
        out_dir.mkdir(parents=True, exist_ok=True)
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
        with self.path.open("a") as fh:
            fh.write(json.dumps({"key": key, "value": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._records[key] = value

    def values(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
