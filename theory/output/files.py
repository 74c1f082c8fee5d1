"""What pfode writes and deletes: output folders with a manifest, and the one file writer.

The bottom layer (it imports nothing of pfode), so that every package writes the same way,
``theory.highdim.curves`` and ``theory.figures.save_png`` included. Rules:

1. **A folder pfode makes for results is claimed** (:func:`claim_folder`): it must be new,
   empty (pfode's own ``.lock`` aside) or already a folder of the *same kind* of run (one of
   :data:`KINDS`); its marker file ``.pfode-owned`` then holds the run kind and a **manifest**:
   every file pfode wrote there (path relative to the folder, size, SHA-256) and every folder it
   made. A folder made by one kind of run is never written into or replaced by another kind.
2. **Every file is written by** :func:`write_bytes` / :func:`write_text` (atomically: a
   temporary sibling, ``fsync``, ``os.replace``) or :func:`append_bytes` (append-only records),
   and recorded in the manifest of the nearest claimed folder above it. The path is entered in
   the manifest *before* the file is created (as pending) and completed after, so a ``kill -9``
   at any point leaves a manifest that names every file pfode may have written. No symbolic link
   is followed: a link at the path or at a folder between the claimed folder and the path is
   refused with one line, and a file already there that pfode did not write is never replaced.
3. **Deleting** (:mod:`theory.output.removal`: ``--fresh``, a model folder's replacement) removes exactly the manifest's files *that are unchanged since pfode wrote
   them* (same size and SHA-256; for an append-only record file, the recorded prefix), then the
   folders it made if they are empty. Anything else stays and is returned, for the caller to
   name in one line. A marker without a manifest (planted, or from an older pfode) deletes nothing.
4. **Files and folders follow the umask** (no forced 0600 / 0700).

:func:`check_out_path` holds the rules for an ``--out`` path (never ``''``, ``/``, the working
folder or an ancestor of it, of the project or of the home folder; ``~`` expanded, never a
symbolic link).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "KINDS",
    "LOCK_FILE",
    "MARKER_FILE",
    "append_bytes",
    "check_out_path",
    "claim_folder",
    "folder_kind",
    "foreign_entry",
    "file_mode",
    "folder_mode",
    "make_dirs",
    "move_file",
    "owned_by_pfode",
    "owner_of",
    "read_manifest",
    "record_tree",
    "write_bytes",
    "write_text",
]

#: marker file of a folder pfode claimed (JSON: what, kind, created, version, files, dirs)
MARKER_FILE = ".pfode-owned"
#: lock file of an output folder (``simulate.locking``)
LOCK_FILE = ".lock"
#: the kinds of run that own a folder; a folder of one kind is never taken over by another
KINDS = ("report", "simulate", "train", "rank", "explain", "study", "gallery", "curves")
#: manifest format (1: a marker without a manifest, from pfode before issue 30)
MANIFEST_VERSION = 2
#: names pfode itself may leave in a folder before or outside the manifest
_PFODE_NAMES = frozenset({LOCK_FILE, MARKER_FILE})
_PROJECT = Path(__file__).resolve().parents[1]


# ---- modes --------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """Mode of a new folder under the current umask (``0o777 & ~umask``)."""
    return 0o777 & ~_umask()


# ---- --out paths --------------------------------------------------------------------------
def _ancestors_or_self(path: Path) -> set[Path]:
    return {path, *path.parents}


def check_out_path(path: str | Path, flag: str = "--out") -> Path:
    """``path`` with ``~`` expanded, if pfode may claim it as an output folder.

    Refused (``ValueError`` naming ``flag``): the empty string, a symbolic link, ``/``, the
    working folder or any folder above it, the project's folder (this checkout) or any above
    it, the home folder or any above it: a run there would mark a folder full of the user's
    files as pfode's.
    """
    if str(path).strip() == "":
        raise ValueError(f"{flag} '' is empty; give a new folder (e.g. {flag} results)")
    p = Path(os.path.expanduser(str(path)))
    if p.is_symlink():
        raise ValueError(f"{flag} {p} is a symbolic link; pfode does not write through links: give the real folder")
    here = p.resolve() if p.exists() else p.absolute()
    cwd = Path.cwd().resolve()
    guarded = {"the working folder or a folder above it": _ancestors_or_self(cwd),
               "the project's folder or a folder above it": _ancestors_or_self(_PROJECT)}
    with contextlib.suppress(RuntimeError, KeyError):  # no home folder known: nothing to guard
        guarded["the home folder or a folder above it"] = _ancestors_or_self(Path.home().resolve())
    shown = "'' or ." if str(path) == "." else str(path)  # argparse's Path('') is Path('.')
    for what, folders in guarded.items():
        if here in folders:
            raise ValueError(f"{flag} {shown} is {what}; pfode writes only into a folder of its own: "
                             f"give a new folder (e.g. {flag} results)")
    return p


# ---- manifest -----------------------------------------------------------------------------
def _marker(folder: Path) -> Path | None:
    """``folder/.pfode-owned`` if it is a regular file (a link does not count)."""
    marker = folder / MARKER_FILE
    try:
        return marker if not marker.is_symlink() and marker.is_file() else None
    except OSError:
        return None


def owned_by_pfode(folder: str | Path) -> bool:
    """Whether ``folder`` is a folder (not a link) holding pfode's marker file."""
    folder = Path(folder)
    return not folder.is_symlink() and _marker(folder) is not None


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The marker of ``folder`` as a dict with ``files`` and ``dirs``, or ``None`` where there is
    no marker, or it holds no valid manifest (planted, or written by an older pfode)."""
    marker = _marker(Path(folder))
    if marker is None:
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("manifest") != MANIFEST_VERSION
            or not isinstance(data.get("files"), dict) or not isinstance(data.get("dirs"), list)):
        return None
    return data


def folder_kind(folder: str | Path) -> str | None:
    """The kind of run that claimed ``folder`` (``None``: not claimed, or an old marker)."""
    data = read_manifest(folder)
    return data.get("kind") if data else None


def _write_marker(folder: Path, data: dict[str, Any]) -> None:
    _replace_bytes(folder / MARKER_FILE, (json.dumps(data, indent=0, sort_keys=True) + "\n").encode(), sync=False)


@contextlib.contextmanager
def _manifest(folder: Path) -> Iterator[dict[str, Any] | None]:
    """Read-modify-write the manifest of ``folder`` under an exclusive ``flock`` on the folder
    itself (several processes of one run record into one manifest)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read_manifest(folder)
        before = json.dumps(data, sort_keys=True)
        yield data
        if data is not None and json.dumps(data, sort_keys=True) != before:
            _write_marker(folder, data)
    finally:
        os.close(fd)


def owner_of(path: str | Path) -> Path | None:
    """The nearest folder strictly above ``path`` claimed with a manifest (``None``: none)."""
    for parent in Path(os.path.abspath(path)).parents:
        if _marker(parent) is not None and read_manifest(parent) is not None:
            return parent
    return None


def _digest(path: Path, limit: int | None = None) -> tuple[int, str]:
    """(size, SHA-256) of a file, or of its first ``limit`` bytes; opened without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    h, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as fh:
        while True:
            want = 1 << 20 if limit is None else min(1 << 20, limit - size)
            chunk = fh.read(want) if want > 0 else b""
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


# ---- folders ------------------------------------------------------------------------------
def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; pfode does not write through links: remove it or choose another --out")


def make_dirs(folder: str | Path) -> Path:
    """Create ``folder`` and its missing parents (umask modes); a folder created inside a claimed
    folder is recorded in its manifest; a link on the way inside a claimed folder is refused."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for p in reversed(missing):
        owner = owner_of(p)
        if owner is not None:
            _check_inside(owner, p.parent)
            with _manifest(owner) as data:
                rel = _rel(p, owner)
                if data is not None and rel not in data["dirs"]:
                    data["dirs"].append(rel)
        with contextlib.suppress(FileExistsError):
            os.mkdir(p)
    owner = owner_of(folder)
    if owner is not None:
        _check_inside(owner, folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; choose another --out")
    return folder


def _rel(path: Path, owner: Path) -> str:
    return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(owner))).as_posix()


def _check_inside(owner: Path, path: Path) -> None:
    """Refuse a link at ``path`` or at any folder between ``owner`` and it."""
    probe = owner
    for part in Path(_rel(path, owner)).parts:
        probe = probe / part
        _refuse_link(probe)


def foreign_entry(folder: str | Path) -> str | None:
    """One entry of an unclaimed ``folder`` other than pfode's lock file, or ``None`` (absent,
    claimed, or holding nothing else)."""
    folder = Path(folder)
    if not folder.is_dir() or owned_by_pfode(folder):
        return None
    names = sorted(p.name for p in folder.iterdir()
                   if p.name not in _PFODE_NAMES and not p.name.startswith(f".{MARKER_FILE}."))  # a marker being written
    return names[0] if names else None


def claim_folder(folder: str | Path, kind: str, what: str | None = None) -> Path:
    """Create (parents too) and claim ``folder`` for a run of ``kind`` (rule 1).

    An existing claim of the same kind is kept as it is (its manifest goes on).

    Raises:
        ValueError: ``kind`` unknown; ``folder`` is a link or a file, a folder claimed by
            another kind of run (the message names the folder and its kind), a marker without a
            manifest, or a folder holding files without pfode's marker (they would otherwise
            come under it).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    folder = check_out_path(folder, flag="out")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; choose another --out")
    if owned_by_pfode(folder):
        data = read_manifest(folder)
        if data is None:
            raise ValueError(f"{folder} holds a {MARKER_FILE} without a manifest (an older pfode's run folder, or "
                             "not pfode's): pfode will neither write into nor delete it: move it away (or delete an "
                             "older pfode's folder yourself) or choose another --out")
        if data.get("kind") != kind:
            raise ValueError(f"{folder} is a folder of a pfode {data.get('kind')} run; a {kind} run will not write into "
                             "or replace it: choose another --out")
        return folder
    name = foreign_entry(folder)
    if name is not None:
        raise ValueError(f"{folder} holds files pfode did not create (e.g. {name}); pfode will not write into it: "
                         "choose another --out (an empty or new folder)")
    make_dirs(folder)
    if not owned_by_pfode(folder):
        _write_marker(folder, _new_marker(kind, what))
    return folder


def _new_marker(kind: str, what: str | None) -> dict[str, Any]:
    from importlib import metadata

    try:
        version = metadata.version("pfode-instability")
    except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
        version = "unknown"
    data = {"what": what or f"pfode {kind}", "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "version": version, "manifest": MANIFEST_VERSION, "files": {}, "dirs": []}
    return data


# ---- writing files ------------------------------------------------------------------------
def _prepare(path: Path) -> tuple[Path | None, str | None]:
    """Check and announce a write to ``path``: (its claimed folder, its relative name), both
    ``None`` outside claimed folders."""
    _refuse_link(path)
    make_dirs(path.parent)
    owner = owner_of(path)
    if owner is None:
        return None, None
    _check_inside(owner, path)
    rel = _rel(path, owner)
    with _manifest(owner) as data:
        if data is None:  # the manifest became unreadable meanwhile: write only new names
            if path.exists():
                raise ValueError(f"{path} was not written by pfode (its folder {owner} has no manifest); pfode will "
                                 "not overwrite it: move it away or choose another --out")
            return None, None
        if path.exists() and rel not in data["files"]:
            raise ValueError(f"{path} was not written by pfode; pfode will not overwrite it: move it away or choose "
                             "another --out")
        data["files"].setdefault(rel, {"size": None, "sha256": None})
    return owner, rel


def _record(owner: Path | None, rel: str | None, path: Path, append: bool = False) -> None:
    if owner is None or rel is None:
        return
    size, digest = _digest(path)
    with _manifest(owner) as data:
        if data is not None:
            data["files"][rel] = {"size": size, "sha256": digest, **({"append": True} if append else {})}


def _replace_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write a temporary sibling (exclusive, no link followed, umask mode), then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, recorded in its claimed folder's manifest (rules 2, 4).

    Raises:
        ValueError: a link at ``path`` (or on the way from its claimed folder), or a file there
            that pfode did not write.
    """
    path = Path(path)
    owner, rel = _prepare(path)
    _replace_bytes(path, data)
    _record(owner, rel, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def append_bytes(path: str | Path, data: bytes) -> Path:
    """Append ``data`` to ``path`` (created if absent), ``fsync``, and record the new size and hash."""
    path = Path(path)
    owner, rel = _prepare(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, file_mode())
    with os.fdopen(fd, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    _record(owner, rel, path, append=True)
    return path


def move_file(src: str | Path, dst: str | Path) -> Path:
    """Rename a file pfode wrote to ``dst`` (same claimed folder), never replacing a file
    (``FileExistsError``); the manifest follows the move."""
    src, dst = Path(src), Path(dst)
    _refuse_link(src)
    os.link(src, dst, follow_symlinks=False)
    owner = owner_of(src)
    if owner is not None:
        with _manifest(owner) as data:
            if data is not None:
                entry = data["files"].pop(_rel(src, owner), None)
                if entry is not None:
                    data["files"][_rel(dst, owner)] = entry
    os.unlink(src)
    return dst


def record_tree(folder: str | Path) -> None:
    """Record every file and folder under the claimed ``folder`` in its manifest: for a folder
    pfode has just built privately (``simulate.store.atomic_folder``'s temporary folder, written
    by libraries such as diffusers' ``save_pretrained``). Links are not recorded."""
    folder = Path(folder)
    with _manifest(folder) as data:
        if data is None:
            raise ValueError(f"{folder} is not a folder pfode claimed")
        for p in sorted(folder.rglob("*")):
            if p.is_symlink() or p.name in _PFODE_NAMES or owner_of(p) != folder:
                continue
            rel = _rel(p, folder)
            if p.is_dir():
                if rel not in data["dirs"]:
                    data["dirs"].append(rel)
            else:
                size, digest = _digest(p)
                data["files"][rel] = {"size": size, "sha256": digest}
