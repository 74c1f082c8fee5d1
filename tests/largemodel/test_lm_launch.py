"""Several processes and resumes on one study folder (issue 30): a foreign run is refused on every
rank, a rank that stops does not hang rank 0, two processes give the one-process records, and an
interruption between two records of one group resumes with the draws an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from largemodel.study.launch import check_owner, owner_command, wait_for_owner, wait_for_ranks
from largemodel.study.runner import StudyConfig, run_study
from simulate.locking import OutputBusy, output_lock
from lm_fixtures import model, random_items, tiny  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

CFG = StudyConfig(steps=3, perturbations=2, jvp_directions=1, eps_rms=1e-2, log_lambda="hutchinson", images_per_batch=3)


def _record_lines(folder: Path, name: str = "records.jsonl") -> list[str]:
    """The record lines of a file with each record's timing removed (the only field that differs
    between two runs of the same work)."""
    lines = []
    for line in (folder / name).read_text().splitlines()[1:]:
        rec = json.loads(line)
        rec["value"].pop("seconds", None)
        lines.append(json.dumps(rec, sort_keys=True))
    return lines


def test_a_rank_refuses_a_folder_held_by_another_run(model, tmp_path):
    with output_lock(tmp_path, command="pfode largemodel study"):  # a single-process study is working
        with pytest.raises(OutputBusy, match="not held by this run"):
            wait_for_owner(tmp_path, "launch-2", timeout=5)
        with pytest.raises(OutputBusy, match="not held by this run"):
            run_study(model, random_items(2), tmp_path, CFG, rank=1, world=2, run_id="launch-2", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # rank 1 wrote nothing (the holder removed its .lock)
    with output_lock(tmp_path, command=owner_command("pfode largemodel study", "launch-2")):  # the control
        wait_for_owner(tmp_path, "launch-2", timeout=5)
        check_owner(tmp_path, "launch-2")


def test_rank0_stops_waiting_when_the_others_stop_progressing():
    owed = iter([3, 2, 2, 2] + [2] * 1000)
    t0 = time.monotonic()
    assert wait_for_ranks(lambda: next(owed), seconds_per_image=0.1, poll=0.05, min_patience=0.5) == 2
    assert time.monotonic() - t0 < 5
    assert wait_for_ranks(lambda: 0, seconds_per_image=100.0) == 0  # all done: no wait


def test_interruption_inside_a_group_resumes_with_the_same_draws(model, tmp_path):
    """A kill between two records of one group, then a rerun: the records of an uninterrupted run."""
    items = random_items(6)
    run_study(model, items, tmp_path / "whole", CFG, progress=False, save_images=False)

    def stop_after_four(key, rec, seen=[]):  # noqa: B006 - the count of this run
        seen.append(key)
        if len(seen) == 4:  # the second group (3 images) is half recorded
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(model, items, tmp_path / "cut", CFG, progress=False, save_images=False, on_record=stop_after_four)
    run_study(model, items, tmp_path / "cut", CFG, progress=False, save_images=False)
    assert _record_lines(tmp_path / "cut") == _record_lines(tmp_path / "whole")


def _images(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(folder / f"im{i}.png")
    return folder


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


STUDY = ["largemodel", "study", "--n-images", "6", "--steps", "3", "--perturbations", "2", "--device", "cpu",
         "--no-progress", "--images-per-batch", "3"]


@pytest.mark.slow
def test_two_processes_give_the_one_process_records_and_refuse_a_foreign_run(tiny, tmp_path):
    images = _images(tmp_path / "imgs", 6)
    # one image per batch: the same transformer batches in both runs, so equal bits (with larger groups
    # the draws are still equal, the batched float32 arithmetic only to rounding)
    args = [*STUDY, "--images-per-batch", "1", "--model", str(tiny), "--images", str(images)]
    one = subprocess.run([sys.executable, "-m", "reports.cli", *args, "--out", str(tmp_path / "one")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "reports.cli", *args]
    two = subprocess.run([*torchrun, "--out", str(tmp_path / "two")], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr
    merged = sorted(_record_lines(tmp_path / "two", "records.rank0.jsonl") + _record_lines(tmp_path / "two", "records.rank1.jsonl"))
    assert merged == sorted(_record_lines(tmp_path / "one"))
    # a folder another run holds: refused on both ranks, nothing written
    busy = tmp_path / "busy"
    with output_lock(busy, command="pfode largemodel study"):
        refused = subprocess.run([*torchrun, "--out", str(busy)], env=_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert refused.stderr.count("is in use by another pfode run") + refused.stderr.count("not held by this run") == 2
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]


EXPLAIN = ["largemodel", "explain", "--n-images", "6", "--steps", "3", "--device", "cpu", "--images-per-batch", "3",
           "--power-iters", "0", "--budgets", "1", "--causal-directions", "1", "--sizes", "1e-3,1e-2",
           "--perturbations", "2"]
RANK = ["largemodel", "rank", "--steps", "3", "--device", "cpu", "--images-per-batch", "3"]
RECORDS = {"study": "records.jsonl", "rank": "scores.jsonl", "explain": "explain.jsonl"}


@pytest.mark.slow
@pytest.mark.parametrize("command", [STUDY, RANK, EXPLAIN], ids=["study", "rank", "explain"])
def test_kill_9_then_rerun_gives_the_uninterrupted_records(command, tiny, tmp_path):
    images = _images(tmp_path / "imgs", 6)
    args = [sys.executable, "-m", "reports.cli", *command, "--model", str(tiny), "--images", str(images)]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], env=_env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    name = RECORDS[command[1]]
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "cut")], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    path = tmp_path / "cut" / name
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= 2:  # the first record is written
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run([*args, "--out", str(tmp_path / "cut")], env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _record_lines(tmp_path / "cut", name) == _record_lines(tmp_path / "whole", name)
    shutil.rmtree(tmp_path / "imgs")


def test_perturbation_floor_is_one_number():
    """The CLI's literal bound of --eps-rms is the library's PERTURBATION_RMS_MIN, and the library
    refuses below it (the control: the floor itself is accepted)."""
    from largemodel.study.config import PERTURBATION_RMS_MIN, check_perturbation_size
    from reports.cli_checks import PERTURBATION_RMS_MIN as CLI_MIN

    assert CLI_MIN == PERTURBATION_RMS_MIN
    assert check_perturbation_size(PERTURBATION_RMS_MIN, "--eps-rms") == PERTURBATION_RMS_MIN
    with pytest.raises(ValueError, match="--eps-rms must be in"):
        StudyConfig(eps_rms=PERTURBATION_RMS_MIN / 2)
