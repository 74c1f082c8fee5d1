"""What pfode deletes: exactly the files a run folder's manifest records as pfode's, unchanged.

Rule 3 of :mod:`theory.output.files` (which holds the manifest and the writer; read it first).
:func:`remove_owned` (``--fresh``, a model folder's replacement) removes the manifest's files
that are unchanged since pfode wrote them (same size and SHA-256; for an append-only record file,
the recorded prefix, so a record appended just before a ``kill -9`` does not make the file look
foreign; a name announced but not completed before a kill counts as pfode's), the temporary
siblings a cut write left, then the folders pfode made if they are empty. Anything else stays and
is returned, for the caller to name in one line. A marker without a manifest deletes nothing.
:func:`unowned_files` lists, without deleting, what would stay.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from theory.output.files import (
    _PFODE_NAMES,
    MARKER_FILE,
    LOCK_FILE,
    _check_inside,
    _digest,
    _manifest,
    _rel,
    foreign_entry,
    owned_by_pfode,
    owner_of,
    read_manifest,
)

__all__ = ["remove_owned", "unowned_files"]


def _unchanged(path: Path, entry: Any) -> bool:
    """Whether ``path`` is still what pfode wrote (``entry`` of the manifest)."""
    if path.is_symlink() or not path.is_file() or not isinstance(entry, dict):
        return False
    if entry.get("sha256") is None:  # pending: pfode claimed the free name, then was cut
        return True
    try:
        if entry.get("append"):
            size, digest = _digest(path, limit=int(entry["size"]))
            return size == entry["size"] and digest == entry["sha256"]
        size, digest = _digest(path)
    except (OSError, ValueError, TypeError):
        return False
    return size == entry.get("size") and digest == entry.get("sha256")


def _tmp_target(path: Path) -> Path | None:
    """The file a temporary sibling ``.<name>.<8 hex>.tmp`` of :func:`write_bytes` stands for."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp") and len(name) > 14 and name[-13] == "."):
        return None
    token = name[-12:-4]
    if not all(c in "0123456789abcdef" for c in token):
        return None
    return path.with_name(name[1:-13])


def unowned_files(folder: str | Path) -> list[str]:
    """Paths (relative to ``folder``) that :func:`remove_owned` would keep: every file or link
    that no manifest in ``folder`` (its own or a nested claimed folder's) records unchanged."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    kept = []
    manifests: dict[Path, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if (p.is_dir() and not p.is_symlink()) or p.name in _PFODE_NAMES:
            continue
        owner = owner_of(p)
        if owner is None or folder not in (owner, *owner.parents):
            kept.append(p.relative_to(folder).as_posix())
            continue
        files = manifests.setdefault(owner, read_manifest(owner) or {"files": {}})["files"]
        target = _tmp_target(p)
        if not (_unchanged(p, files.get(_rel(p, owner))) or (target is not None and _rel(target, owner) in files)):
            kept.append(p.relative_to(folder).as_posix())
    return kept


def remove_owned(folder: str | Path) -> list[str]:
    """Delete what pfode wrote in ``folder`` (rule 3); return what was kept, relative to ``folder``.

    Files of the manifest that are unchanged are deleted, then (nested claimed folders handled
    the same way) the folders pfode made, if empty, then the marker, the lock and ``folder``
    itself if nothing else is left. Where something is left, the marker stays with an emptied
    manifest: the folder is still pfode's to write into, and the kept files are not its to delete.

    Raises:
        ValueError: ``folder`` is a link or a file, or an unclaimed folder holding files; nothing
            is deleted.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"{folder} is not a folder pfode created; pfode will not delete it")
    if not owned_by_pfode(folder):
        name = foreign_entry(folder)
        if name is None:
            return []
        raise ValueError(f"{folder} was not created by pfode (it holds {name} and no {MARKER_FILE}); "
                         "pfode will not delete it: move it away or choose another --out")
    kept: list[str] = []
    with _manifest(folder) as data:
        if data is None:  # a marker without a manifest deletes nothing
            return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*"))
                    if p.name not in _PFODE_NAMES and not (p.is_dir() and not p.is_symlink())]
        for rel, entry in sorted(data["files"].items()):
            path = folder / rel
            try:
                _check_inside(folder, path)
            except ValueError:
                continue
            if _unchanged(path, entry):
                path.unlink()
            for tmp in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else []:
                if _tmp_target(tmp) == path and not tmp.is_symlink():
                    tmp.unlink()
        for rel in sorted(data["dirs"], key=lambda r: -len(Path(r).parts)):
            sub = folder / rel
            if sub.is_symlink() or not sub.is_dir():
                continue
            if owned_by_pfode(sub):
                kept += [f"{rel}/{k}" for k in remove_owned(sub)]
            with contextlib.suppress(OSError):
                sub.rmdir()
        data["files"] = {}
        data["dirs"] = [r for r in data["dirs"] if (folder / r).is_dir()]
        kept = sorted(set(kept) | {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                                   if not (p.is_dir() and not p.is_symlink()) and p.name not in _PFODE_NAMES})
    if not any(p.name not in _PFODE_NAMES for p in folder.iterdir()):
        for name in (MARKER_FILE, LOCK_FILE):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
    return kept

