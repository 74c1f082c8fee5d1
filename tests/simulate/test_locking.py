"""``simulate.locking``: the output folder's lock leaves no ``.lock`` file behind, and the
removal keeps the lock exclusive (a descriptor of the removed file does not count as the lock)."""

from __future__ import annotations

import fcntl
import os

import pytest

from simulate.locking import LOCK_FILE, OutputBusy, _lock_file, output_lock


def test_no_lock_file_after_release_and_reentrant(tmp_path) -> None:
    with output_lock(tmp_path, command="outer"):
        with output_lock(tmp_path, command="inner"):
            assert (tmp_path / LOCK_FILE).is_file()
        assert (tmp_path / LOCK_FILE).is_file()  # still held by the outer block
    assert not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path, command="fails"):
            raise RuntimeError
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_descriptor_of_the_removed_file_is_not_the_lock(tmp_path) -> None:
    """A second run opened ``.lock`` while the first held it; the first removes it and releases.
    The stale descriptor can flock the removed file (control: the naive open-then-flock would
    count that as the lock), but the path no longer names it, so ``_lock_file`` takes a new file
    and a third run is refused while it is held."""
    path = tmp_path / LOCK_FILE
    with output_lock(tmp_path, command="first"):
        stale = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # control: succeeds on the removed file
        assert not path.exists()
        fd = _lock_file(path, fcntl)
        try:
            assert os.fstat(fd).st_ino == os.stat(path).st_ino != os.fstat(stale).st_ino
            with pytest.raises(BlockingIOError):
                _lock_file(path, fcntl)
        finally:
            os.close(fd)
    finally:
        os.close(stale)


def test_busy_folder_is_refused(tmp_path) -> None:
    path = tmp_path / LOCK_FILE
    other = os.open(path, os.O_RDWR | os.O_CREAT)  # another process's lock, held by this descriptor
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        # output_lock is re-entrant per process for its own locks only; this flock is foreign
        with pytest.raises(OutputBusy, match="in use by another pfode run"):
            with output_lock(tmp_path, command="second"):
                pass
        assert path.exists()  # the refused run removes nothing
    finally:
        os.close(other)


def test_symlinked_lock_file_is_not_followed(tmp_path) -> None:
    target = tmp_path / "users_file"
    target.write_text("keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_FILE).symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        with output_lock(tmp_path / "out", command="x"):
            pass
    assert target.read_text() == "keep"
