"""Run-folder safety (issue 12): nothing a user owns is deleted or executed; no run mixes with another.

Covers ``simulate.store`` (markers, ``remove_owned``, ``output_lock``, atomic writes, the
record store's errors) and its use by ``pfode report --fresh``, ``pfode simulate`` and
``largemodel.training.train`` (``weights_only`` checkpoints, atomic model folders, damaged cache entries).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simulate.store import (
    LOCK_FILE,
    MARKER_FILE,
    OutputBusy,
    RecordStore,
    atomic_folder,
    atomic_write_text,
    claim_folder,
    output_lock,
    owned_by_pfode,
    remove_owned,
)

ROOT = Path(__file__).resolve().parents[2]
STORE_PY = ROOT / "simulate" / "locking.py"  # output_lock's module (re-exported by simulate.store)

#: a helper process that holds ``output_lock`` on argv[1] until its stdin closes; it loads
#: locking.py by path (not the ``simulate`` package) so that it starts in a fraction of a second
HOLDER = textwrap.dedent(f"""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("pfode_store", {str(STORE_PY)!r})
    store = importlib.util.module_from_spec(spec); spec.loader.exec_module(store)
    with store.output_lock(sys.argv[1], command=sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def holder(tmp_path):
    """Start a helper process holding the lock of a folder; yields ``start(folder, command)``."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path, command: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def _lock_is_free(folder: Path) -> bool:
    with open(folder / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


# ---- markers and remove_owned -------------------------------------------------------------
def test_marker_and_remove_owned_deletes_only_pfode_folders(tmp_path):
    mine = claim_folder(tmp_path / "a" / "mine", "simulate", "test suite")
    assert owned_by_pfode(mine)
    marker = json.loads((mine / MARKER_FILE).read_text())
    assert marker["what"] == "test suite" and marker["created"] and "version" in marker
    atomic_write_text(mine / "result.json", "{}")
    created = marker["created"]
    claim_folder(mine, "simulate", "again")  # an existing marker is kept
    assert json.loads((mine / MARKER_FILE).read_text())["created"] == created
    assert remove_owned(mine) == [] and not mine.exists()
    assert remove_owned(mine) == []  # absent: nothing to do

    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "chapter1.tex").write_text("my thesis")
    with pytest.raises(ValueError, match=r"user.*chapter1\.tex"):
        remove_owned(user)
    with pytest.raises(ValueError, match=r"user.*chapter1\.tex"):
        claim_folder(user, "simulate", "would adopt the user's files")
    assert (user / "chapter1.tex").read_text() == "my thesis" and not owned_by_pfode(user)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert remove_owned(empty) == [] and empty.is_dir()  # not pfode's: left alone
    afile = tmp_path / "file"
    afile.write_text("x")
    for call in (lambda: remove_owned(afile), lambda: claim_folder(afile, "simulate")):
        with pytest.raises(ValueError, match="file"):
            call()
    assert afile.read_text() == "x"


# ---- report --fresh -----------------------------------------------------------------------
@pytest.fixture
def stub_theory(monkeypatch):
    """Replace the theory suite by a stub that counts its runs (the report itself is real)."""
    import reports.theory_suite

    calls: list[Path] = []

    def fake(out_dir, quick=True, progress=None):
        calls.append(out_dir)
        return [], {"stub": True}

    monkeypatch.setattr(reports.theory_suite, "run_theory_suite", fake)
    return calls


def test_report_fresh_in_a_checkout_deletes_nothing(tmp_path, stub_theory, capsys, monkeypatch):
    """``pfode report --out . --fresh`` in a (copy of a) checkout: refused, theory/ untouched."""
    from reports.cli import main

    checkout = tmp_path / "checkout"
    (checkout / "theory").mkdir(parents=True)
    (checkout / "theory" / "chapter1.tex").write_text("\\chapter{One}")
    (checkout / "theory" / "__init__.py").write_text("")
    (checkout / "README.md").write_text("readme")
    before = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*"))
    monkeypatch.chdir(checkout)
    assert main(["report", "--suites", "theory", "--out", ".", "--fresh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "working folder" in err[0] and "--out" in err[0], err
    monkeypatch.chdir(tmp_path)  # the same folder named from outside: not pfode's
    assert main(["report", "--suites", "theory", "--out", "checkout", "--fresh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pfode did not create" in err[0] and "--out" in err[0], err
    assert (checkout / "theory" / "chapter1.tex").read_text() == "\\chapter{One}"
    assert sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*")) == before
    assert stub_theory == []  # refused before any suite ran


def test_report_fresh_keeps_foreign_files_and_refuses_foreign_folders(tmp_path, stub_theory):
    from reports.report import run_report

    out = tmp_path / "run"
    run_report(out, suites=("theory",))
    assert owned_by_pfode(out) and owned_by_pfode(out / "theory") and (out / "theory" / "suite.json").is_file()
    assert _lock_is_free(out)  # released after the run
    (out / "notes.txt").write_text("mine")  # a user's file next to the suites
    run_report(out, suites=("theory",), fresh=True)
    assert len(stub_theory) == 2 and (out / "notes.txt").read_text() == "mine"
    assert (out / "theory" / "suite.json").is_file()
    # a folder the user made where a suite's folder goes: refused, and nothing deleted first
    (out / "simulate").mkdir()
    (out / "simulate" / "data.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"simulate.*data\.csv"):
        run_report(out, suites=("theory", "simulate"), fresh=True)
    assert (out / "simulate" / "data.csv").read_text() == "1,2"
    assert (out / "theory" / "suite.json").is_file() and len(stub_theory) == 2
    # a user's file planted inside a pfode suite folder under no marker of its own is refused too
    (out / "theory" / MARKER_FILE).unlink()
    with pytest.raises(ValueError, match="theory"):
        run_report(out, suites=("theory",), fresh=True)
    assert (out / "theory" / "suite.json").is_file()


# ---- output_lock --------------------------------------------------------------------------
def test_output_lock_busy_names_folder_and_pid(tmp_path, holder):
    folder = tmp_path / "out"
    proc = holder(folder, "pfode simulate lemma-d1")
    with pytest.raises(OutputBusy) as info:
        with output_lock(folder, command="pfode report"):
            pytest.fail("took a lock another process holds")
    msg = str(info.value)
    assert str(folder) in msg and f"pid {proc.pid}" in msg and "pfode simulate lemma-d1" in msg
    assert isinstance(info.value, ValueError) and "\n" not in msg
    proc.stdin.close()
    proc.wait(timeout=30)
    with output_lock(folder, command="after"):  # free once the holder is gone
        with output_lock(folder, command="nested"):  # re-entrant within one process
            pass
        assert not _lock_is_free(folder)
    assert _lock_is_free(folder)


def test_output_lock_released_on_interrupt(tmp_path):
    folder = tmp_path / "deep" / "out"
    with pytest.raises(KeyboardInterrupt):
        with output_lock(folder, command="x"):
            assert not _lock_is_free(folder)
            raise KeyboardInterrupt
    assert _lock_is_free(folder)
    afile = tmp_path / "f"
    afile.write_text("")
    with pytest.raises(ValueError, match="file"):
        with output_lock(afile, command="x"):
            pass


def test_second_simulate_on_a_locked_folder_exits_2_with_one_line(tmp_path, holder):
    out = tmp_path / "X"
    proc = holder(out, "pfode simulate lemma-d1")
    run = subprocess.run([sys.executable, "-m", "reports.cli", "simulate", "lemma-d1", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and f"pid {proc.pid}" in lines[0], lines
    assert not (out / "records.jsonl").exists() and not (out / "result.json").exists()


# ---- atomic writes ------------------------------------------------------------------------
def test_atomic_write_and_folder(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "model_index.json").write_text("{}")
            raise RuntimeError("cut before the last write")
    assert not final.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_folder(final) as tmp:
        claim_folder(tmp, "train", "model")
        (tmp / "v").write_text("1")
    with atomic_folder(final) as tmp:  # replaces a pfode-owned folder
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "model"]
    (final / "v").unlink()
    (final / "user.txt").write_text("mine")  # not in the manifest: not pfode's to replace
    with pytest.raises(ValueError, match=r"user\.txt.*left at") as info:
        with atomic_folder(final) as tmp:
            (tmp / "v").write_text("3")
    assert (final / "user.txt").read_text() == "mine"
    assert (tmp / "v").read_text() == "3" and str(tmp) in str(info.value)  # the new folder is not lost either
    assert sorted(p.name for p in tmp_path.iterdir()) == [tmp.name, "a.json", "model"]


# ---- record store -------------------------------------------------------------------------
def test_record_store_errors_name_the_file(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('this is not JSON\n{"key": "a", "value": {}}\n')
    with pytest.raises(ValueError, match=r"records\.jsonl: line 1 is not a pfode record header"):
        RecordStore(tmp_path, {"p": 1})
    store = RecordStore(tmp_path / "b", {"p": 1})
    store.add("a", {"x": 1.0})
    text = store.path.read_text()
    store.path.write_text(text + "garbage\n" + '{"key": "c", "value": {}}\n')
    with pytest.raises(ValueError, match=r"records\.jsonl: line 3 is not a pfode record"):
        RecordStore(tmp_path / "b", {"p": 1})


def test_stale_records_are_never_overwritten(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # every move in the same second
    for p in range(3):
        store = RecordStore(tmp_path, {"p": p})
        store.add("k", {"p": p})
    stale = sorted(tmp_path.glob("records.stale-*.jsonl"))
    assert len(stale) == 2
    kept = sorted(json.loads(s.read_text().splitlines()[1])["value"]["p"] for s in stale)
    assert kept == [0, 1]


# ---- training: checkpoints, atomic model folder, damaged cache ----------------------------
TINY = dict(steps=6, batch_size=16, num_layers=1, num_heads=2, head_dim=8, heldout_images=32, progress=False)


class _Planted:
    """Unpickling this object creates ``path`` (stands for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_planted_checkpoint_is_never_unpickled(tmp_path, capsys):
    pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from largemodel.training.train import CHECKPOINT_FILE, train_model
    from reports.cli import main

    sentinel = tmp_path / "PWNED"
    out = claim_folder(tmp_path / "model", "train", "pfode largemodel train: model folder")
    torch.save({"config_key": "x", "payload": _Planted(sentinel)}, out / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match=CHECKPOINT_FILE) as info:
        train_model("digits", 8, 64, out, **TINY)
    assert "\n" not in str(info.value) and not sentinel.exists()
    argv = ["largemodel", "train", "--out", str(out), "--steps", "6", "--batch-size", "16", "--num-layers", "1",
            "--num-heads", "2", "--head-dim", "8", "--train-images", "64", "--heldout-images", "32",
            "--no-progress", "--quality-samples", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and CHECKPOINT_FILE in err[0] and not sentinel.exists()
    # planted in a folder pfode did not create: refused before anything is read
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save(_Planted(sentinel), foreign / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="pfode did not create"):
        train_model("digits", 8, 64, foreign, **TINY)
    assert not sentinel.exists()


def test_model_folder_is_written_atomically_and_damage_is_named(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    pytest.importorskip("torch")
    from largemodel.models import folder as folder_mod
    from largemodel.training import train as train_mod
    from largemodel.models.folder import PFODE_META_FILE

    real_save = folder_mod.save_model_folder

    def cut_before_meta(out, *args, meta=None, **kwargs):
        real_save(out, *args, meta=None, **kwargs)  # everything but pfode_model.json
        raise KeyboardInterrupt

    out = tmp_path / "m"
    monkeypatch.setattr(train_mod, "save_model_folder", cut_before_meta)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_model("digits", 8, 64, out, **TINY)
    assert not (out / "model_index.json").exists()  # the cut folder never appeared
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    monkeypatch.setattr(train_mod, "save_model_folder", real_save)
    assert train_mod.train_model("digits", 8, 64, out, **TINY) == out  # retrains, not "a different model"
    assert (out / PFODE_META_FILE).is_file() and owned_by_pfode(out)
    assert not (out / train_mod.CHECKPOINT_FILE).exists()

    # a damaged cache entry is reported naming the file
    cache = tmp_path / "cache"
    entry = train_mod.cached_model("digits", 8, 64, cache_dir=cache, **TINY)
    (entry / PFODE_META_FILE).write_text('{"config_key": ')
    with pytest.raises(ValueError, match=PFODE_META_FILE):
        train_mod.cached_model("digits", 8, 64, cache_dir=cache, **TINY)
    (entry / PFODE_META_FILE).unlink()
    with pytest.raises(ValueError, match=PFODE_META_FILE):
        train_mod.cached_model("digits", 8, 64, cache_dir=cache, **TINY)


def test_train_on_a_locked_folder_is_refused(tmp_path, holder):
    pytest.importorskip("diffusers")
    from largemodel.training.train import train_model

    out = tmp_path / "model"
    proc = holder(out, "pfode largemodel train")
    with pytest.raises(OutputBusy, match=f"pid {proc.pid}"):
        train_model("digits", 8, 64, out, **TINY)
    assert not (out / "model_index.json").exists()
