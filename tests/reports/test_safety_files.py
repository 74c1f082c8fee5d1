"""Run-folder safety (issues 12, 30): nothing a user owns is deleted, overwritten or executed; no run mixes with another.

Covers ``simulate.store`` (claims, ``remove_owned``, ``output_lock``, atomic writes, the
record store's errors) and its use by ``pfode report --fresh``, ``pfode simulate``,
``largemodel.training.train`` (``weights_only`` checkpoints, atomic model folders, damaged cache
entries, checks before training) and ``pfode largemodel rank|study|explain`` (no user file
overwritten, no link followed, folder kinds, own outputs left out of ``--images``, summaries of
the current run). The manifest itself is tested in ``tests/simulate/test_store_manifest.py``.
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
    unowned_files,
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


# ---- issue 30: output folders of every sub-command ----------------------------------------------
def _tiny_cli_fixture(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny model folder (no VAE: 8 px) and a folder of three 8 x 8 images."""
    import numpy as np
    from PIL import Image

    from largemodel.models.tiny import build_tiny_folder

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"i{i}.png")
    return build_tiny_folder(tmp_path / "tiny", "sd3", with_vae=False), images


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pfode: error:"), err
    return err[0]


def test_rank_never_overwrites_a_users_file_nor_follows_a_link(tmp_path, capsys, single_thread):
    pytest.importorskip("diffusers")
    from reports.cli import main

    model, images = _tiny_cli_fixture(tmp_path)
    base = ["largemodel", "rank", "--model", str(model), "--images", str(images), "--device", "cpu", "--steps", "2"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "ranking.csv").write_text("my,ranking\n")
    assert main([*base, "--out", str(mine)]) == 2
    assert "ranking.csv" in _one_error_line(capsys) and (mine / "ranking.csv").read_text() == "my,ranking\n"
    out = tmp_path / "rk"
    assert main([*base, "--out", str(out)]) == 0  # a pfode rank folder
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    for name in ("gallery_riskiest.png", "ranking.csv", LOCK_FILE):
        (out / name).unlink(missing_ok=True)  # the .lock is gone after a finished run
        (out / name).symlink_to(victim)
        capsys.readouterr()
        assert main([*base, "--out", str(out)]) == 2
        assert "symbolic link" in _one_error_line(capsys) and victim.read_bytes() == b"precious"
        (out / name).unlink()
    # the control: the same link, written the way pfode wrote before issue 30, is followed
    (out / "ranking.csv").symlink_to(victim)
    (out / "ranking.csv").write_text("rank\n")
    assert victim.read_bytes() != b"precious"


def test_study_of_another_kind_of_folder_and_its_own_outputs(tmp_path, capsys, single_thread):
    pytest.importorskip("diffusers")
    from largemodel.models.images import list_images
    from reports.cli import main

    model, images = _tiny_cli_fixture(tmp_path)
    base = ["largemodel", "study", "--model", str(model), "--images", str(images), "--device", "cpu", "--steps", "2",
            "--perturbations", "1", "--n-images", "10", "--no-progress"]
    rep = claim_folder(tmp_path / "rep", "report")
    assert main([*base, "--out", str(rep)]) == 2
    assert "pfode report run" in _one_error_line(capsys) and sorted(p.name for p in rep.iterdir()) == [MARKER_FILE]
    out = images / "study-out"  # --out inside --images
    for _ in range(2):
        assert main([*base, "--out", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["n_images"] == 3  # never its own PNGs
    assert len(list_images(images)) > 3 and len(list_images(images, exclude=out)) == 3  # the control: they are there


def test_explain_summary_covers_the_current_run_only(tmp_path, single_thread):
    pytest.importorskip("diffusers")
    from reports.cli import main

    model, images = _tiny_cli_fixture(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "only.png").write_bytes((images / "i0.png").read_bytes())
    out = tmp_path / "ex"
    argv = ["largemodel", "explain", "--model", str(model), "--out", str(out), "--device", "cpu", "--steps", "2",
            "--power-iters", "1", "--perturbations", "1", "--causal-directions", "1", "--budgets", "1", "--probes", "1"]
    assert main([*argv, "--images", str(images)]) == 0
    assert json.loads((out / "summary.json").read_text())["n_records"] == 3
    assert main([*argv, "--images", str(other)]) == 0
    assert json.loads((out / "summary.json").read_text())["n_records"] == 1
    assert (out / "explain.csv").read_text().count("\n") == 2
    assert len((out / "explain.jsonl").read_text().splitlines()) == 1 + 4  # the earlier records are kept, not shown


def test_train_refuses_before_training(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    import tempfile

    from largemodel.training import train as train_mod

    trained = []
    kwargs = dict(TINY, callback=lambda step, loss: trained.append(step))
    rep = claim_folder(tmp_path / "rep", "report")
    atomic_write_text(rep / "report.md", "# my report")
    with pytest.raises(ValueError, match=r"rep is a folder of a pfode report run"):
        train_mod.train_model("digits", 8, 64, rep, **kwargs)
    assert (rep / "report.md").read_text() == "# my report"
    mine = claim_folder(tmp_path / "m", "train")
    (mine / "my_eval.md").write_text("mine")  # a user's file in pfode's model folder: it would be replaced
    with pytest.raises(ValueError, match=r"my_eval\.md"):
        train_mod.train_model("digits", 8, 64, mine, **kwargs)
    real = tempfile.mkdtemp

    def no_sibling(*args, **kw):
        if ".probe-" in str(kw.get("prefix", "")):
            raise PermissionError(13, "Permission denied")
        return real(*args, **kw)

    monkeypatch.setattr(tempfile, "mkdtemp", no_sibling)
    with pytest.raises(ValueError, match="temporary sibling folder"):
        train_mod.train_model("digits", 8, 64, tmp_path / "new", **kwargs)
    assert trained == [] and (mine / "my_eval.md").read_text() == "mine"


def test_null_prompt_cache_is_atomic_and_a_damaged_one_is_named_and_rebuilt(tmp_path, monkeypatch, capsys):
    pytest.importorskip("safetensors")
    import types

    import torch

    from largemodel.models import prompts as prompts_mod

    calls = []

    def encoders(info, prompts, device, dtype):
        calls.append(1)
        return {p: (torch.ones(1, 2, 3), torch.ones(1, 4)) for p in prompts}

    monkeypatch.setattr(prompts_mod, "_from_encoders", encoders)
    (tmp_path / "model").mkdir()
    info = types.SimpleNamespace(null_prompt_file=None, class_prompts_file=None, path=tmp_path / "model", components={}, has_text_encoders=True,
                                 family="sd3")
    out = claim_folder(tmp_path / "study", "study")
    prompts_mod.prompt_table(info, [], "cpu", torch.float32, out)
    prompts_mod.prompt_table(info, [], "cpu", torch.float32, out)
    (cache,) = (out / prompts_mod.PROMPT_CACHE_DIR).iterdir()
    assert len(calls) == 1 and unowned_files(out) == []  # cached, and recorded as pfode's
    cache.write_bytes(cache.read_bytes()[:20])  # truncated
    embeds, _ = prompts_mod.prompt_table(info, [], "cpu", torch.float32, out)[""]
    err = capsys.readouterr().err
    assert len(calls) == 2 and str(cache) in err and "damaged" in err and torch.equal(embeds, torch.ones(1, 2, 3))
    assert prompts_mod.prompt_table(info, [], "cpu", torch.float32, out) is not None and len(calls) == 2  # rebuilt


def test_broken_pipe_is_quiet_and_plan_inf_is_refused(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "reports.cli", "theory", "bound", "--n", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # `| head -0`: the reader is gone before pfode writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
    (tmp_path / "imgs").mkdir()
    run = subprocess.run([sys.executable, "-m", "reports.cli", "largemodel", "study", "--model", "sd3.5-large", "--images",
                          str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--plan", "inf"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--plan" in run.stderr and "finite" in run.stderr
