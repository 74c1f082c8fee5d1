"""The one sweep runner of the experiments: resumable units, progress bar, torch threads.

Every experiment has the same shape:

* a frozen ``<Exp>Options`` dataclass, validated in ``__post_init__``, with ``FAST`` / ``FULL``
  instances and ``make_options(full, **overrides)`` (:func:`.common.replace_options`);
* units of work, each a ``(key, compute)`` pair where ``compute()`` returns one JSON-ready record
  (the experiment's ``compute_unit`` with its arguments bound);
* ``run`` = :func:`sweep` over the units into a :class:`.common.RecordStore`, then a ``judge``
  that turns the records into :class:`.common.Verdict` s, then the figures, then ``result.json``.

Usage::

    store = RecordStore(out_dir, {"seed": seed, **dataclasses.asdict(opts)})
    units = [(f"{kind}:n={n}", partial(compute_unit, kind, n, opts, seed)) for kind, n in grid]
    stats = sweep(store, units, desc="thm41", progress=progress, threads=opts.threads)
    records = [store.get(key) for key, _ in units]

Write ``compute`` so that it looks the unit function up when called (``partial`` of the module's
function, or ``lambda: compute_unit(...)``), so that tests can replace the function on the module.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from simulate.experiments.common import RecordStore, progress_iter

__all__ = ["SweepStats", "Unit", "sweep", "torch_threads"]

Unit = tuple[str, Callable[[], dict[str, Any]]]
"""One unit of work: its store key and a thunk that computes its record."""


@dataclass(frozen=True)
class SweepStats:
    """What one :func:`sweep` did: units ``computed`` now, ``reused`` from the store, ``skipped`` by the hook."""

    computed: int = 0
    reused: int = 0
    skipped: int = 0


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``n = 0`` keeps torch's setting); restore it after.

    Raises:
        ValueError: ``n < 0`` (before anything changes).
    """
    if int(n) < 0:
        raise ValueError(f"threads must be >= 0 (0 keeps torch's setting), got {n}")
    before = torch.get_num_threads()
    if int(n) > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sweep(
    store: RecordStore,
    units: Sequence[Unit],
    *,
    desc: str,
    progress: bool = True,
    threads: int = 0,
    skip: Callable[[str], bool] | None = None,
) -> SweepStats:
    """Run, in the given order, every unit of ``units`` whose key ``store`` has not recorded yet.

    Each unit ``(key, compute)`` is handled as follows: if ``store.done(key)`` it is reused (not
    computed, ``skip`` not asked); else if ``skip`` is given and ``skip(key)`` is true it is skipped
    (nothing recorded; a cost cap, for example); else ``store.add(key, compute())`` records it at
    once, so an interrupted sweep resumes at the first unit not recorded. ``skip`` is asked in the
    sweep's order, after every earlier unit was recorded, so it may read earlier records from the
    store. A ``tqdm`` progress bar (``desc``) on stderr when ``progress``; ``threads > 0`` sets
    torch's CPU threads for the sweep (:func:`torch_threads`).

    Raises:
        ValueError: two units with the same key (before anything is computed).
    """
    dup = sorted(k for k, count in Counter(key for key, _ in units).items() if count > 1)
    if dup:
        raise ValueError(f"sweep {desc}: duplicate unit keys {dup[:5]}")
    computed = reused = skipped = 0
    with torch_threads(threads):
        for key, compute in progress_iter(units, desc, progress, total=len(units)):
            if store.done(key):
                reused += 1
            elif skip is not None and skip(key):
                skipped += 1
            else:
                store.add(key, compute())
                computed += 1
    return SweepStats(computed, reused, skipped)
