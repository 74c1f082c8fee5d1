"""The manifest of what pfode wrote (issue 30): ``theory.output.files`` via ``simulate.store``.

Each protection is checked together with a negative control: the same scenario with the
protection taken away (a folder-wide ``rmtree``, a writer that follows links, ...) must be
caught by the same check, so the check can fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulate.store import (
    MARKER_FILE,
    RecordStore,
    atomic_folder,
    atomic_write_text,
    check_out_path,
    claim_folder,
    folder_kind,
    output_lock,
    remove_owned,
    unowned_files,
    write_bytes,
)
from theory.output import files as output_files


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (links read as their target's name)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[p.relative_to(root).as_posix()] = "link:" + os.readlink(p)
        elif p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def lost_or_changed(before: dict[str, str], root: Path) -> list[str]:
    """The user files of ``before`` that are gone or changed under ``root``."""
    now = snapshot(root)
    return sorted(k for k, v in before.items() if now.get(k) != v)


def _pfode_run(folder: Path) -> None:
    """What a run writes: files at two depths, an append-only record file, a folder it made."""
    claim_folder(folder, "simulate", "test run")
    atomic_write_text(folder / "result.json", '{"ok": true}')
    write_bytes(folder / "figs" / "a.png", b"\x89PNG fake")
    store = RecordStore(folder, {"p": 1})
    store.add("u1", {"x": 1.0})


# ---- rule 3: --fresh removes exactly what pfode wrote ------------------------------------------
def test_remove_owned_deletes_exactly_what_pfode_wrote(tmp_path):
    out = tmp_path / "out"
    _pfode_run(out)
    (out / "figs" / "my_notes.md").write_text("mine")  # a user's file inside pfode's own subfolder
    (out / "thesis.tex").write_text("chapter")
    (out / "result.json").write_text('{"edited by": "the user"}')  # a pfode file the user changed
    user = {k: v for k, v in snapshot(out).items() if k in ("figs/my_notes.md", "thesis.tex", "result.json")}
    assert unowned_files(out) == ["figs/my_notes.md", "result.json", "thesis.tex"]
    kept = remove_owned(out)
    assert kept == ["figs/my_notes.md", "result.json", "thesis.tex"]
    assert lost_or_changed(user, out) == []
    assert not (out / "records.jsonl").exists() and not (out / "figs" / "a.png").exists()
    assert json.loads((out / MARKER_FILE).read_text())["files"] == {}  # still pfode's folder, nothing of its own


def test_negative_control_a_folder_wide_delete_is_caught(tmp_path):
    out = tmp_path / "out"
    _pfode_run(out)
    (out / "figs" / "my_notes.md").write_text("mine")
    user = {"figs/my_notes.md": snapshot(out)["figs/my_notes.md"]}
    shutil.rmtree(out)  # the old rule: the marker stood for the whole folder
    out.mkdir()
    assert lost_or_changed(user, out) == ["figs/my_notes.md"]


def test_remove_owned_removes_everything_of_an_untouched_run(tmp_path):
    out = tmp_path / "out"
    _pfode_run(out)
    with output_lock(out, command="x"):
        pass
    (out / ".result.json.0123abcd.tmp").write_bytes(b"cut")  # left by a write killed before its rename
    assert remove_owned(out) == [] and not out.exists()


def test_planted_marker_deletes_nothing(tmp_path):
    user = tmp_path / "user"
    (user / "theory").mkdir(parents=True)
    (user / "theory" / "thesis.tex").write_text("my thesis")
    (user / MARKER_FILE).write_text('{"what": "planted"}')  # no manifest
    before = snapshot(user)
    assert remove_owned(user) == ["theory/thesis.tex"]
    assert lost_or_changed({k: v for k, v in before.items() if k != MARKER_FILE}, user) == []
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "thesis.tex").write_text("my thesis")
    (forged / MARKER_FILE).write_text(json.dumps({"manifest": 2, "kind": "report", "dirs": [], "files": {
        "thesis.tex": {"size": 9, "sha256": "0" * 64}}}))  # names the file, with a hash it does not have
    assert remove_owned(forged) == ["thesis.tex"] and (forged / "thesis.tex").read_text() == "my thesis"


def test_append_only_records_survive_a_cut_between_append_and_manifest(tmp_path):
    out = tmp_path / "out"
    _pfode_run(out)
    with open(out / "records.jsonl", "ab") as fh:  # appended, manifest not yet updated (kill -9)
        fh.write(b'{"key": "u2", "value": {}}\n')
    assert unowned_files(out) == []
    (out / "records.jsonl").write_text("rewritten by the user\n")  # the recorded prefix changed
    assert unowned_files(out) == ["records.jsonl"]


def test_a_name_claimed_before_a_kill_is_pfodes(tmp_path):
    out = claim_folder(tmp_path / "out", "study")
    owner, rel = output_files._prepare(out / "recon.png")  # announced, then killed before writing
    (out / "recon.png").write_bytes(b"half")
    assert json.loads((out / MARKER_FILE).read_text())["files"][rel] == {"size": None, "sha256": None}
    assert remove_owned(out) == [] and not out.exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["", "a/", "a/b/"]), st.sampled_from(["x", "y", "z.png"]),
                          st.booleans()), min_size=1, max_size=8, unique_by=lambda t: t[0] + t[1]))
def test_property_remove_owned_leaves_exactly_the_user_files(tmp_path_factory, entries):
    out = tmp_path_factory.mktemp("prop") / "out"
    claim_folder(out, "report")
    user = {}
    for sub, name, by_pfode in entries:
        path = out / sub / name
        if by_pfode:
            write_bytes(path, f"pfode {sub}{name}".encode())
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            path.write_text(f"user {sub}{name}")
            user[f"{sub}{name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = remove_owned(out)
    assert sorted(kept) == sorted(user) and lost_or_changed(user, out) == []
    left = {k for k in snapshot(out) if not k.endswith((MARKER_FILE, ".lock"))} if out.exists() else set()
    assert left == set(user)


# ---- rule 1: kinds ------------------------------------------------------------------------------
def test_a_folder_of_one_kind_is_never_taken_by_another(tmp_path):
    out = claim_folder(tmp_path / "rep", "report")
    assert folder_kind(out) == "report" and claim_folder(out, "report") == out
    with pytest.raises(ValueError, match=r"rep is a folder of a pfode report run; a train run"):
        claim_folder(out, "train")
    with pytest.raises(ValueError, match=r"pfode report run"):
        with atomic_folder(out, kind="train") as tmp:
            (tmp / "weights").write_bytes(b"w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # the model was not left anywhere either


def test_atomic_folder_replaces_only_pfodes_files(tmp_path):
    final = tmp_path / "model"
    with atomic_folder(final, kind="train") as tmp:
        (tmp / "w.safetensors").write_bytes(b"v1")  # a library writes; the folder's manifest records it
    with atomic_folder(final, kind="train") as tmp:
        (tmp / "w.safetensors").write_bytes(b"v2")
    assert (final / "w.safetensors").read_bytes() == b"v2" and unowned_files(final) == []


# ---- rule 2: no link followed, nothing of the user's overwritten -------------------------------
def test_no_link_is_followed_and_no_user_file_overwritten(tmp_path):
    out = claim_folder(tmp_path / "out", "rank")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "ranking.csv").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        atomic_write_text(out / "ranking.csv", "rank,file\n")
    (out / "sub").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        write_bytes(out / "sub" / "victim.txt", b"x")
    (out / "verify.csv").write_text("the user's")
    with pytest.raises(ValueError, match="not written by pfode"):
        atomic_write_text(out / "verify.csv", "pfode's")
    (out / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        with output_lock(out, command="x"):
            pass
    assert victim.read_text() == "precious" and (out / "verify.csv").read_text() == "the user's"


def test_negative_control_a_plain_write_follows_the_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "ranking.csv").symlink_to(victim)
    (tmp_path / "ranking.csv").write_text("rank,file\n")  # what `open(path, "w")` did
    assert victim.read_text() != "precious"


def test_record_store_moves_stale_records_under_the_manifest(tmp_path):
    out = claim_folder(tmp_path / "out", "study")
    RecordStore(out, {"p": 1}).add("a", {})
    RecordStore(out, {"p": 2}).add("b", {})
    stale = sorted(p.name for p in out.glob("records.stale-*.jsonl"))
    assert len(stale) == 1 and unowned_files(out) == []
    assert remove_owned(out) == [] and not out.exists()


# ---- rule 4: umask ------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / "out"
        _pfode_run(out)
        with atomic_folder(tmp_path / "model", kind="train") as tmp:
            write_bytes(tmp / "w", b"1")
    finally:
        os.umask(old)
    for path, full in ((out / "result.json", 0o666), (out / "records.jsonl", 0o666), (out / MARKER_FILE, 0o666),
                       (out / "figs", 0o777), (tmp_path / "model", 0o777), (tmp_path / "model" / "w", 0o666)):
        assert stat.S_IMODE(path.stat().st_mode) == full & ~mask, path


# ---- --out paths ------------------------------------------------------------------------------------
def test_out_paths_that_would_claim_the_users_folders_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home" / "me").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    monkeypatch.chdir(work)
    for bad, why in (("", "empty"), (".", "working folder"), ("..", "working folder"), ("/", "working folder"),
                     ("~", "home folder"), (str(Path(output_files.__file__).parents[1]), "project")):
        with pytest.raises(ValueError, match=why):
            check_out_path(bad)
        with pytest.raises(ValueError, match=why):
            claim_folder(bad, "simulate")
    (work / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="symbolic link"):
        check_out_path("link")
    assert check_out_path("~/results") == tmp_path / "home" / "me" / "results"
    assert claim_folder("~/results", "curves").is_dir() and not (work / "~").exists() and not Path("~").exists()
    assert not (work / MARKER_FILE).exists() and not (tmp_path / "home" / "me" / MARKER_FILE).exists()
