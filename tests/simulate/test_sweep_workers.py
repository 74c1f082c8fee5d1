"""``runner.sweep`` with two worker processes: the same store, records and ``result.json`` as with one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from simulate.experiments.runner import SweepStats, sweep, sweep_workers
from simulate.experiments.thm43 import experiment as thm43
from simulate.store import RecordStore

TINY = dict(sigmas=(0.5, 2.0), ms=(1, 2), gap_ratios=(4.0,), taus=(1.0,), ns=(2, 8), num_points=4, num_points_p1=16,
            lln_nodes=16)


def _timeless(obj: Any) -> Any:
    """``obj`` without its wall-clock fields (``seconds*``): the only numbers that may differ between runs."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if not str(k).startswith("seconds")}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def _records(path: Path) -> list[tuple[str, Any]]:
    lines = path.read_text().splitlines()[1:]
    return [(rec["key"], _timeless(rec["value"])) for rec in map(json.loads, lines)]


def test_thm43_result_is_the_same_with_two_workers(tmp_path: Path) -> None:
    """results.json and the record file (order included) equal with 1 and 2 workers, and a
    different seed changes them (the comparison can fail)."""
    one = thm43.run(tmp_path / "one", progress=False, **TINY)
    with sweep_workers(2):
        two = thm43.run(tmp_path / "two", progress=False, **TINY)
    other = thm43.run(tmp_path / "other", progress=False, seed=1, **TINY)
    data = {k: _timeless(json.loads((tmp_path / k / "result.json").read_text())) for k in ("one", "two", "other")}
    assert data["one"] == data["two"]
    assert _records(tmp_path / "one" / "records.jsonl") == _records(tmp_path / "two" / "records.jsonl")
    # 12 first-pass units, then the sequential rounds (simulate.decide) add the same units with either count
    assert one.numbers["units_computed_this_run"] == two.numbers["units_computed_this_run"] >= 12
    assert data["one"]["numbers"]["units"] != data["other"]["numbers"]["units"]  # negative control
    assert other.verdict_for("thm43_p1").status is not None


def test_cost_cap_reads_earlier_records_with_two_workers(tmp_path: Path) -> None:
    """thm43's skip hook reads the cell's previous-n record (a whole n-wave earlier): the same cells stop."""
    small = {**TINY, "sigmas": (1.0,), "ms": (1, 2), "random_placement": False, "lln_nodes": 0, "ns": (2, 8, 16, 64)}
    base = thm43.run(tmp_path / "a", progress=False, **small)
    cap = base.numbers["units"][1]["nfe"] * 2
    one = thm43.run(tmp_path / "b", progress=False, **{**small, "max_unit_nfe": cap})
    with sweep_workers(2):
        two = thm43.run(tmp_path / "c", progress=False, **{**small, "max_unit_nfe": cap})
    assert one.numbers["cost_capped_cells"] == two.numbers["cost_capped_cells"] != {}
    assert _timeless(one.numbers["units"]) == _timeless(two.numbers["units"])


def _square(i: int) -> dict[str, Any]:
    return {"i": i, "square": i * i, "pid": os.getpid()}


def test_generic_sweep_order_skip_reuse_and_processes(tmp_path: Path) -> None:
    store = RecordStore(tmp_path, {"case": 1})
    store.add("u3", {"i": 3, "square": 9, "pid": 0})  # already recorded: reused, not recomputed
    asked: list[tuple[str, list[str]]] = []

    def skip(key: str) -> bool:
        asked.append((key, [k for k in (f"u{i}" for i in range(12)) if store.done(k)]))
        return key == "u7"

    units = [(f"u{i}", (lambda i=i: _square(i))) for i in range(12)]  # lambdas: inherited by fork, never pickled
    stats = sweep(store, units, desc="t", progress=False, skip=skip, skip_lag=2, workers=2)
    assert stats == SweepStats(computed=10, reused=1, skipped=1)
    keys = [k for k, _ in _records(store.path)]
    assert keys == ["u3"] + [f"u{i}" for i in range(12) if i not in (3, 7)]  # the units' order
    assert all(store.get(f"u{i}")["square"] == i * i for i in range(12) if i != 7)
    assert {store.get(f"u{i}")["pid"] for i in range(12) if i not in (3, 7)} - {os.getpid()}  # other processes
    for key, done in asked:  # every unit at least skip_lag = 2 places earlier is recorded (or skipped)
        i = int(key[1:])
        assert all(f"u{j}" in done for j in range(i - 1) if j != 7), (key, done)


def _fails() -> dict[str, Any]:
    raise ArithmeticError("unit 1 failed")


def test_a_failing_unit_raises_and_earlier_units_stay_recorded(tmp_path: Path) -> None:
    store = RecordStore(tmp_path, {"case": 2})
    units = [("a", lambda: _square(1)), ("b", _fails), ("c", lambda: _square(3))]
    with pytest.raises(ArithmeticError, match="unit 1 failed"):
        sweep(store, units, desc="t", progress=False, workers=2)
    assert store.done("a") and not store.done("b") and not store.done("c")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_integer(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        sweep(RecordStore(tmp_path, {}), [("a", lambda: {})], desc="t", progress=False, workers=bad)
    with pytest.raises(ValueError, match="workers"):
        with sweep_workers(bad):
            pass


def test_parallel_calls_keep_the_order_and_raise() -> None:
    from simulate.experiments.runner import parallel_calls

    calls = [(lambda i=i: _square(i)) for i in range(5)]
    one, two = parallel_calls(calls, workers=1), parallel_calls(calls, workers=2)
    assert [r["square"] for r in one] == [r["square"] for r in two] == [0, 1, 4, 9, 16]
    assert {r["pid"] for r in one} == {os.getpid()} and os.getpid() not in {r["pid"] for r in two}
    with pytest.raises(ArithmeticError, match="unit 1 failed"):
        parallel_calls([lambda: _square(0), _fails], workers=2)
    with sweep_workers(2):
        assert os.getpid() not in {r["pid"] for r in parallel_calls(calls)}  # the default follows sweep_workers


def test_call_in_background_runs_elsewhere_and_returns_or_raises() -> None:
    """The call runs in another process (its own sweeps may fork workers), its result comes back, its
    exception is raised by ``wait``, and ``cancel`` ends a call still running."""
    import time

    from simulate.experiments.runner import call_in_background

    with sweep_workers(2):
        job = call_in_background(lambda: [_square(3), *parallel_calls_pids()])
        first, *pids = job.wait()
    assert first["square"] == 9 and first["pid"] != os.getpid()
    assert len(pids) == 2 and not {first["pid"], os.getpid()} & set(pids)  # nested workers of the background process
    with pytest.raises(ArithmeticError, match="unit 1 failed"):
        call_in_background(_fails).wait()
    slow = call_in_background(lambda: time.sleep(60))
    t0 = time.perf_counter()
    slow.cancel()
    assert time.perf_counter() - t0 < 10 and not slow._proc.is_alive()


def parallel_calls_pids() -> list[int]:
    from simulate.experiments.runner import parallel_calls

    return [r["pid"] for r in parallel_calls([lambda: _square(1), lambda: _square(2)])]
