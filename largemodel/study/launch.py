"""Several processes on one study folder (``torchrun`` / ``accelerate launch``): who they are, who owns
the folder, and how rank 0 gathers the other ranks' records without a fatal barrier.

* ``launch_from_env``: this process's rank, the number of processes and the launch's run id. The run
  id is drawn by rank 0 and broadcast once over the process group (the launcher's, or gloo),
  so every rank of one launch carries the same id and no other run does.
* The folder's lock (``simulate.locking.output_lock``) is taken by rank 0 with the run id in its
  command; every other rank reads the lock file and goes on only when it names its own run id
  (``check_owner``), before writing anything and again before each record, so a folder held by a
  foreign run is refused on every rank.
* ``wait_for_ranks``: rank 0 waits for the other ranks' record files while they make progress (the
  patience grows with the measured time per image), then merges whatever is complete; a rank that
  died leaves its images to a rerun, which redoes only those. No collective call waits under the
  process group's timeout, so a rank that finishes early does not kill the run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

from simulate.locking import LOCK_FILE, OutputBusy

__all__ = ["Launch", "check_owner", "launch_from_env", "owed", "owner_command", "wait_for_owner", "wait_for_ranks"]


@dataclass(frozen=True)
class Launch:
    """This process within its launch: ``rank`` of ``world`` processes, sharing ``run_id``; ``device``
    is the launcher's device for this rank (``None``: the CLI's default)."""

    rank: int = 0
    world: int = 1
    run_id: str = ""
    device: str | None = None


def launch_from_env() -> Launch:
    """The launch this process belongs to, from the launcher's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK`` as ``torchrun`` and ``accelerate launch`` set them); one process without them.

    Initialises the default process group where the launcher did not (gloo: the run id is its only
    collective), then broadcasts rank 0's run id once; each rank's device is ``cuda:<LOCAL_RANK>``
    where CUDA is available, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Launch(run_id=uuid.uuid4().hex)
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():  # the run id is the only collective: gloo, on the CPU, whatever the device
        dist.init_process_group("gloo")
    if cuda:
        torch.cuda.set_device(local)
    box = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return Launch(rank=dist.get_rank(), world=dist.get_world_size(), run_id=str(box[0]),
                  device=f"cuda:{local}" if cuda else "cpu")


def owner_command(command: str, run_id: str) -> str:
    """The command rank 0 writes into the lock file: ``command`` and the launch's run id."""
    return f"{command} [run {run_id}]"


def _lock_holder(folder: Path) -> tuple[str, str] | None:
    """(pid, command) of the lock file, ``None`` while it is absent, empty or being written."""
    try:
        info = json.loads((folder / LOCK_FILE).read_text())
        return str(info.get("pid", "?")), str(info.get("command", "?"))
    except (OSError, ValueError, AttributeError):
        return None


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def check_owner(folder: Path, run_id: str) -> None:
    """Refuse to write into ``folder`` unless its lock names ``run_id`` (this launch's rank 0).

    Raises:
        OutputBusy: naming the folder and the holder's pid and command.
    """
    holder = _lock_holder(folder)
    if holder is None or f"[run {run_id}]" not in holder[1]:
        pid, command = holder or ("?", "none")
        raise OutputBusy(f"{folder} is not held by this run (lock holder: pid {pid}, {command}); "
                         "wait for the other run to finish or choose another --out")


def wait_for_owner(folder: Path, run_id: str, *, timeout: float = 600.0, poll: float = 0.2) -> None:
    """On a rank > 0: wait until rank 0 holds ``folder``'s lock for ``run_id``. A lock held by a live
    process of another run is refused at once; an absent or released lock is waited for (rank 0
    may still be loading), up to ``timeout`` seconds.

    Raises:
        OutputBusy: another run holds the folder, or rank 0 never took it.
    """
    deadline = time.monotonic() + timeout
    while True:
        holder = _lock_holder(folder)
        if holder is not None and f"[run {run_id}]" in holder[1]:
            return
        if holder is not None and _alive(holder[0]):
            check_owner(folder, run_id)  # raises, naming the foreign holder
        if time.monotonic() > deadline:
            raise OutputBusy(f"{folder}: rank 0 of this run did not take the folder's lock within {timeout:.0f} s")
        time.sleep(poll)


def wait_for_ranks(
    remaining: Callable[[], int], *, seconds_per_image: float, poll: float = 0.5, min_patience: float = 60.0,
    on_wait: Callable[[int], None] | None = None,
) -> int:
    """On rank 0: wait while the other ranks still owe records and make progress; return how many
    they still owe when they stop making progress (0 when all are done).

    ``remaining()`` counts the other ranks' images not yet recorded. The patience, reset at every
    new record, is ``max(min_patience (60 s), 3 x seconds_per_image)``: long enough for one image at the measured
    pace, so an imbalance of one image never ends the wait, and a dead rank ends it after one
    image's time.
    """
    patience = max(float(min_patience), 3.0 * float(seconds_per_image))
    left, since = remaining(), time.monotonic()
    while left > 0 and time.monotonic() - since < patience:
        time.sleep(poll)
        now = remaining()
        if now < left:
            left, since = now, time.monotonic()
            if on_wait is not None:
                on_wait(left)
    return left


def owed(records_done: Collection[str], keys: Collection[str]) -> int:
    """How many of ``keys`` are not in ``records_done``."""
    done = set(records_done)
    return sum(1 for k in keys if k not in done)
