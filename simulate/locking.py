"""One run per output folder: the folder's exclusive lock (rule 1 of :mod:`simulate.store`).

A run holds :func:`output_lock` on its output folder: a non-blocking exclusive ``flock`` on
``<folder>/.lock`` (:data:`LOCK_FILE`), which records the holder's pid and command. A second
run on the same folder fails at once with :class:`OutputBusy` (a ``ValueError``: the CLI prints
one line and exits 2). The lock is released when the run ends, however it ends (the kernel
drops a ``flock`` when its process dies, so a ``kill -9`` leaves no stale lock), and a run that
ends normally removes its ``.lock`` file as it releases it (a ``kill -9`` leaves an unlocked one,
which the next run takes over). Re-entrant within one process. The lock file is opened without
following a link (a link there is refused with one line). :mod:`simulate.store` re-exports these
names; this module imports nothing of pfode but :mod:`theory.output.files` (folder creation, modes).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from theory.output.files import LOCK_FILE, file_mode, make_dirs

__all__ = ["LOCK_FILE", "OutputBusy", "output_lock"]


class OutputBusy(ValueError):
    """Another pfode run holds the output folder's lock."""


#: folders this process holds the lock of (resolved path -> nesting depth); re-entrant
_HELD: dict[str, int] = {}


def _holder(lock_path: Path) -> tuple[str, str]:
    """(pid, command) recorded in a lock file, ``"?"`` where unreadable."""
    try:
        info = json.loads(lock_path.read_text())
        return str(info.get("pid", "?")), str(info.get("command", "?"))
    except (OSError, ValueError, AttributeError):
        return "?", "?"


@contextlib.contextmanager
def output_lock(folder: str | Path, *, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of output folder ``folder`` for the duration of the block.

    Creates ``folder`` (parents too), takes a non-blocking exclusive ``fcntl.flock`` on
    ``folder/.lock`` and writes the holder's pid and ``command`` into it. Re-entrant within one
    process (a nested lock on the same folder is a no-op). Released on exit, also on
    exceptions and ``KeyboardInterrupt``; the kernel releases it if the process dies.

    Raises:
        OutputBusy: another process holds the lock; the message names the folder, the
            holder's pid and command.
        ValueError: ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise ValueError(f"{folder} is a symbolic link; pfode does not write through links: give the real folder")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; choose another --out")
    make_dirs(folder)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield folder
        return
    lock_path = folder / LOCK_FILE
    try:
        fd = _lock_file(lock_path, fcntl)
    except BlockingIOError:
        pid, other = _holder(lock_path)
        raise OutputBusy(f"{folder} is in use by another pfode run (pid {pid}, {other}); "
                         "wait for it to finish or choose another --out") from None
    except OSError:
        if lock_path.is_symlink():
            raise ValueError(f"{lock_path} is a symbolic link; pfode does not write through links: "
                             "remove it or choose another --out") from None
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        os.fsync(fd)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            # removed while still held: a process that opened the old file before this unlink
            # finds, once it holds the flock, that the path no longer names it, and retries
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_file(lock_path: Path, fcntl: Any) -> int:
    """An open descriptor of ``lock_path`` holding its exclusive ``flock`` (``BlockingIOError``
    when another process holds it).

    The holder removes the file before it releases the lock (no empty ``.lock`` stays behind after
    a run), so a descriptor opened just before that removal may win the ``flock`` of a file that
    is gone: the lock counts only if ``lock_path`` still names the locked file (same inode);
    otherwise the descriptor is closed and the file opened again. ``O_NOFOLLOW``: a symbolic link
    at ``lock_path`` is refused (``OSError``), never followed.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
