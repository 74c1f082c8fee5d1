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

import multiprocessing as mp

import torch

from simulate.experiments.common import RecordStore, progress_iter

__all__ = ["Background", "SweepStats", "Unit", "call_in_background", "current_workers", "parallel_calls", "sweep", "sweep_workers",
           "torch_threads"]

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


#: worker processes of :func:`sweep` when its caller gives none (set by :func:`sweep_workers`)
_DEFAULT_WORKERS = [1]

#: the units of the sweep in progress, read by the forked workers (never pickled: a unit may be a lambda)
_UNITS: list[Unit] = []


@contextmanager
def sweep_workers(n: int) -> Iterator[None]:
    """Run the block with ``n`` worker processes as every :func:`sweep`'s default (the report's ``--workers``).

    Raises:
        ValueError: ``n < 1`` (before anything changes).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be an integer >= 1, got {n!r}")
    before = _DEFAULT_WORKERS[0]
    _DEFAULT_WORKERS[0] = n
    try:
        yield
    finally:
        _DEFAULT_WORKERS[0] = before


def current_workers() -> int:
    """The worker processes a :func:`sweep` or :func:`parallel_calls` gets by default (:func:`sweep_workers`)."""
    return _DEFAULT_WORKERS[0]


class Background:
    """A call running in a forked process (:func:`call_in_background`): ``wait()`` returns its result
    (or raises its exception); ``cancel()`` ends it (when this process fails first)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call: Callable[[], Any] | None = None
        if "fork" not in mp.get_all_start_methods():  # no fork: the call runs in this process, in wait()
            self._call, self._proc = call, None
            return
        ctx = mp.get_context("fork")
        self._receive, send = ctx.Pipe(duplex=False)
        _UNITS[:] = [("background", call)]
        try:
            self._proc = ctx.Process(target=_run_background, args=(send,), name="pfode-background")
            self._proc.start()  # forked here, inheriting _UNITS
        finally:
            _UNITS.clear()
        send.close()

    def wait(self) -> Any:
        if self._proc is None:
            assert self._call is not None
            return self._call()
        try:
            ok, value = self._receive.recv()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"the background process ended without a result (exit code {self._proc.exitcode})") from None
        self._proc.join()
        if ok:
            return value
        raise value

    def cancel(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


def call_in_background(call: Callable[[], Any]) -> Background:
    """Start ``call()`` in a forked process now (:class:`Background`; ``.wait()`` for its result). The
    process is not a daemon: its own sweeps and :func:`parallel_calls` fork workers as they would here,
    with the worker count of this process. For independent work with its own folders and seeds (the
    report's large-model suite while the simulator suite runs), whose result does not depend on the
    process that computes it. Without ``fork``, the call runs in this process when waited for.
    """
    return Background(call)


def _run_background(send: Any) -> None:
    """The background process: run the call :class:`Background` left in :data:`_UNITS`, send
    ``(True, result)`` or ``(False, exception)`` (an exception that cannot be pickled as a ``RuntimeError``
    naming it)."""
    try:
        message: tuple[bool, Any] = (True, _UNITS[0][1]())
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the waiting process
        message = (False, exc)
    try:
        send.send(message)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
        send.send((False, RuntimeError(f"background call failed: {message[1]!r} ({type(exc).__name__}: {exc})")))
    finally:
        send.close()


def _compute(index: int) -> Any:
    """A worker's job: the record of unit ``index`` of :data:`_UNITS` (inherited by ``fork``); sweeps
    nested in a unit run in the worker itself."""
    _DEFAULT_WORKERS[0] = 1
    return _UNITS[index][1]()


def sweep(
    store: RecordStore,
    units: Sequence[Unit],
    *,
    desc: str,
    progress: bool = True,
    threads: int = 0,
    skip: Callable[[str], bool] | None = None,
    skip_lag: int = 1,
    workers: int | None = None,
) -> SweepStats:
    """Run, in the given order, every unit of ``units`` whose key ``store`` has not recorded yet.

    Each unit ``(key, compute)`` is handled as follows: if ``store.done(key)`` it is reused (not
    computed, ``skip`` not asked); else if ``skip`` is given and ``skip(key)`` is true it is skipped
    (nothing recorded; a cost cap, for example); else ``store.add(key, compute())`` records it, in
    the units' order, so an interrupted sweep resumes at the first unit not recorded. ``skip`` is
    asked in the sweep's order, once every unit at least ``skip_lag`` places earlier is recorded
    (default 1: every earlier unit), so it may read those records from the store; with a ``skip``,
    at most ``skip_lag`` units are computed at once. A ``tqdm``
    progress bar (``desc``) on stderr when ``progress``; ``threads > 0`` sets torch's CPU threads
    for the sweep (:func:`torch_threads`).

    ``workers`` (default: :func:`sweep_workers`' setting, 1 outside it) computes up to that many
    units at once in forked worker processes (``fork``: the units are inherited, not pickled; each
    worker keeps the parent's torch threads). Each unit computes from its own seeds, and records
    are added in the units' order, so the store is the same as with one worker. Processes, not
    threads: the simulator's units are many small float64 tensor operations that hold the GIL
    (12 of thm43's quick units at n = 64 on the 2-core machine, 2026-12-07: one worker 13.3 s, two
    processes 8.9 s, two threads 17-18 s). Where ``fork`` is unavailable,
    or fewer than two units are left, the sweep runs in this process.

    Raises:
        ValueError: two units with the same key, ``workers < 1`` or ``skip_lag < 1`` (before anything
            is computed).
    """
    dup = sorted(k for k, count in Counter(key for key, _ in units).items() if count > 1)
    if dup:
        raise ValueError(f"sweep {desc}: duplicate unit keys {dup[:5]}")
    workers = _DEFAULT_WORKERS[0] if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"sweep {desc}: workers must be an integer >= 1, got {workers!r}")
    todo = sum(not store.done(key) for key, _ in units)
    with torch_threads(threads):
        if skip is not None:
            workers = min(workers, _positive_lag(skip_lag))
        if workers == 1 or todo < 2 or "fork" not in mp.get_all_start_methods():
            return _sequential(store, units, desc, progress, skip)
        return _parallel(store, units, desc, progress, skip, workers)


def _positive_lag(lag: int) -> int:
    """``lag`` checked: an integer >= 1 (``ValueError`` otherwise)."""
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise ValueError(f"skip_lag must be an integer >= 1, got {lag!r}")
    return lag


def parallel_calls(calls: Sequence[Callable[[], Any]], workers: int | None = None) -> list[Any]:
    """``[call() for call in calls]``, computed by up to ``workers`` forked processes (default:
    :func:`sweep_workers`' setting), in the same order. For independent units whose results do not
    depend on which process computes them (each draws from its own seeds): the report's large-model
    sections. A call's exception is raised here; one worker, one call or no ``fork``: in this process.

    Raises:
        ValueError: ``workers < 1``.
    """
    workers = _DEFAULT_WORKERS[0] if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if workers == 1 or len(calls) < 2 or "fork" not in mp.get_all_start_methods():
        return [call() for call in calls]
    from concurrent.futures import ProcessPoolExecutor

    _UNITS[:] = [(str(i), call) for i, call in enumerate(calls)]
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_compute, i) for i in range(len(calls))]
            return [f.result() for f in futures]
    finally:
        _UNITS.clear()


def _sequential(store: RecordStore, units: Sequence[Unit], desc: str, progress: bool,
                skip: Callable[[str], bool] | None) -> SweepStats:
    """:func:`sweep` in this process."""
    computed = reused = skipped = 0
    for key, compute in progress_iter(units, desc, progress, total=len(units)):
        if store.done(key):
            reused += 1
        elif skip is not None and skip(key):
            skipped += 1
        else:
            store.add(key, compute())
            computed += 1
    return SweepStats(computed, reused, skipped)


def _parallel(store: RecordStore, units: Sequence[Unit], desc: str, progress: bool,
              skip: Callable[[str], bool] | None, workers: int) -> SweepStats:
    """:func:`sweep` with ``workers`` forked processes: a window of ``workers`` consecutive units,
    each decided (reused / skipped / submitted) on entering it, recorded in order on leaving it."""
    from concurrent.futures import Future, ProcessPoolExecutor

    computed = reused = skipped = 0
    _UNITS[:] = list(units)
    running: dict[int, Future] = {}
    bar = progress_iter(range(len(units)), desc, progress, total=len(units))
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            entered = 0
            for leaving in bar:
                while entered < len(units) and entered - leaving < workers:
                    key = units[entered][0]
                    if store.done(key):
                        reused += 1
                    elif skip is not None and skip(key):
                        skipped += 1
                    else:
                        running[entered] = pool.submit(_compute, entered)
                    entered += 1
                if leaving in running:
                    store.add(units[leaving][0], running.pop(leaving).result())
                    computed += 1
    finally:
        for future in running.values():
            future.cancel()
        _UNITS.clear()
    return SweepStats(computed, reused, skipped)
