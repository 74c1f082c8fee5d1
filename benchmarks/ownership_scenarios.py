"""Ownership scenarios (issue 30): nothing of the user's is lost or changed by what pfode writes or deletes.

    python benchmarks/ownership_scenarios.py [--only NAME] [--json out.json]

Not part of the test suite (the rules are tested in ``tests/simulate/test_store_manifest.py`` and
``tests/reports/test_safety_files.py``). Each scenario sets up a folder as a user (their files,
links, planted markers, earlier pfode runs), runs real ``pfode`` commands in a forked child (the
parent imports the package once), and checks:

* every user file is still there with the same bytes (SHA-256), and every link target is unchanged;
* each command ends with the expected exit status (2: one line on stderr, no traceback);
* where stated, what pfode must have done (kept and named a file, excluded its own outputs, ...).

Prints one line per scenario and the counts (scenarios passed, user files checked, lost, changed).
Uses a tiny random model (``largemodel/models/tiny.py``) and one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Outcome:
    name: str
    passed: bool = True
    files: int = 0
    lost: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run(argv: list[str], cwd: Path, umask: int | None = None) -> tuple[int, str]:
    """``reports.cli.main(argv)`` in a forked child with ``cwd``; (exit status, stderr)."""
    from reports.cli import main

    err = Path(tempfile.mkstemp(prefix="pfode-scenario-err-")[1])
    pid = os.fork()
    if pid == 0:
        rc = 70
        try:
            os.chdir(cwd)
            if umask is not None:
                os.umask(umask)
            fd = os.open(err, os.O_WRONLY | os.O_TRUNC)
            devnull = os.open(os.devnull, os.O_WRONLY)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(devnull, 1)
            os.dup2(fd, 2)
            rc = int(main(argv))
        except BaseException:  # noqa: BLE001 - an escaped exception is a traceback
            import traceback

            traceback.print_exc()
            rc = 1
        finally:
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    text = err.read_text(errors="replace")
    err.unlink()
    return os.waitstatus_to_exitcode(status), text


def digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Scenario:
    """One scenario's folder, user files and checks."""

    def __init__(self, name: str, root: Path, fx: dict[str, Path]) -> None:
        self.out = Outcome(name)
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.fx = fx
        self.user: dict[Path, str] = {}

    def user_file(self, rel: str, text: str = "the user's own words\n") -> Path:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.user[path] = digest(path)
        return path

    def user_link(self, rel: str, target: Path) -> Path:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        self.user[target] = digest(target)
        self.user[path] = digest(path)
        return path

    def adopt(self, *paths: Path) -> None:
        """Count files that exist now (an earlier pfode run's, copied) as the user's to keep."""
        for p in paths:
            for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())):
                self.user[f] = digest(f)

    def cli(self, argv: list[str], expect: set[int], cwd: Path | None = None, must_say: str | None = None,
            umask: int | None = None) -> str:
        rc, err = run(argv, cwd or self.dir, umask)
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
        errors = [ln for ln in lines if ln.startswith("pfode: error")]
        if "Traceback" in err or rc not in expect or (rc == 2 and len(errors) != 1):
            self.fail(f"{' '.join(argv[:3])}: rc {rc} (expected {sorted(expect)}): {' | '.join(lines[-2:])[:200]}")
        if must_say is not None and must_say not in err:
            self.fail(f"{' '.join(argv[:3])}: stderr does not say {must_say!r}: {' | '.join(lines[-2:])[:200]}")
        return err

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail(what)

    def fail(self, note: str) -> None:
        self.out.passed = False
        self.out.notes.append(note)

    def finish(self) -> Outcome:
        for path, before in self.user.items():
            if not path.exists() and not path.is_symlink():
                self.out.lost.append(str(path.relative_to(self.dir.parent)))
            elif digest(path) != before:
                self.out.changed.append(str(path.relative_to(self.dir.parent)))
        self.out.files = len(self.user)
        self.out.passed = self.out.passed and not self.out.lost and not self.out.changed
        return self.out


# ---- the scenarios ----------------------------------------------------------------------------
SMALL = ["--device", "cpu", "--steps", "2"]
TRAIN = ["--steps", "1", "--batch-size", "2", "--num-layers", "1", "--num-heads", "1", "--head-dim", "4",
         "--train-images", "16", "--heldout-images", "8", "--quality-samples", "0", "--no-progress"]
REPORT = ["report", "--suites", "theory"]
CURVES = ["theory", "curves", "--num", "4", "--n-max", "100"]


def _model(s: Scenario) -> list[str]:
    return ["--model", str(s.fx["model"]), "--images", str(s.fx["images"])]


def _report_copy(s: Scenario, name: str = "rep") -> Path:
    """A finished ``pfode report --suites theory`` folder (copied from the one made once)."""
    dst = s.dir / name
    shutil.copytree(s.fx["report"], dst, symlinks=True)
    return dst


def fresh_keeps_user_file_in_pfode_subfolder(s: Scenario) -> None:
    rep = _report_copy(s)
    s.user_file("rep/theory/my_notes.md")
    err = s.cli([*REPORT, "--out", str(rep), "--fresh"], {0}, must_say="my_notes.md")
    s.check("kept 1 file" in err, "the kept file is named in one warning line")


def fresh_on_untouched_folder_removes_exactly_pfodes(s: Scenario) -> None:
    rep = _report_copy(s)
    s.user_file("rep/notes-next-to-suites.txt")
    err = s.cli([*REPORT, "--out", str(rep), "--fresh"], {0})
    s.check("kept" not in err, "nothing of pfode's own is reported as kept")
    from simulate.store import unowned_files

    s.check(unowned_files(rep / "theory") == [], "the new theory/ holds only what this run wrote")


def planted_marker_deletes_nothing(s: Scenario) -> None:
    s.user_file("rep/theory/thesis.tex")
    s.user_file("rep/theory/.pfode-owned", '{"what": "planted"}')
    s.user_file("rep/.pfode-owned", '{"what": "planted"}')
    s.cli([*REPORT, "--out", str(s.dir / "rep"), "--fresh"], {0, 2})


def forged_manifest_deletes_nothing(s: Scenario) -> None:
    s.user_file("rep/theory/thesis.tex")
    forged = {"manifest": 2, "kind": "report", "dirs": [], "files": {"thesis.tex": {"size": 21, "sha256": "0" * 64}}}
    (s.dir / "rep" / "theory" / ".pfode-owned").write_text(json.dumps(forged))
    (s.dir / "rep" / ".pfode-owned").write_text(json.dumps({**forged, "files": {}, "dirs": ["theory"]}))
    s.cli([*REPORT, "--out", str(s.dir / "rep"), "--fresh"], {0, 2})


def user_edited_pfode_file_is_kept(s: Scenario) -> None:
    rep = _report_copy(s)
    s.user_file("rep/theory/suite.json", '{"my": "edits"}\n')
    s.cli([*REPORT, "--out", str(rep), "--fresh"], {0, 2}, must_say="suite.json")


def link_at_a_pfode_file_is_not_followed(s: Scenario) -> None:
    rep = _report_copy(s)
    (rep / "theory" / "suite.json").unlink()
    s.user_link("rep/theory/suite.json", s.user_file("victim.json", '{"precious": true}\n'))
    s.cli([*REPORT, "--out", str(rep), "--fresh"], {2}, must_say="symbolic link")


def train_over_a_report_folder(s: Scenario) -> None:
    rep = _report_copy(s)
    s.adopt(rep)
    s.cli(["largemodel", "train", "--out", str(rep), *TRAIN], {2}, must_say="report run")


def train_over_a_simulate_folder_with_notes(s: Scenario) -> None:
    s.cli(["simulate", "thm42", "--out", str(s.dir / "sim"), "--no-progress"], {0})
    s.user_file("sim/notes.md")
    s.adopt(s.dir / "sim")
    s.cli(["largemodel", "train", "--out", str(s.dir / "sim"), *TRAIN], {2}, must_say="simulate run")


def simulate_out_empty_string(s: Scenario) -> None:
    s.user_file("train.py", "print('my code')\n")
    s.user_file("data/x.csv", "1,2\n")
    s.cli(["simulate", "thm42", "--out", "", "--no-progress"], {2}, must_say="--out")
    s.check(not (s.dir / ".pfode-owned").exists(), "the working folder was not marked")


def train_out_empty_string(s: Scenario) -> None:
    s.user_file("train.py", "print('my code')\n")
    s.user_file("data/x.csv", "1,2\n")
    s.cli(["largemodel", "train", "--out", "", *TRAIN], {2}, must_say="--out")


def out_dot_and_parent(s: Scenario) -> None:
    s.user_file("work/paper.tex")
    s.user_file("above.txt")
    for out in (".", ".."):
        s.cli([*CURVES, "--out", out], {2}, cwd=s.dir / "work", must_say="working folder")


def out_tilde_is_expanded_not_created(s: Scenario) -> None:
    s.cli([*CURVES, "--out", "~"], {2}, must_say="home folder")
    s.check(not (s.dir / "~").exists(), "no folder literally named ~")


def out_is_a_link(s: Scenario) -> None:
    s.user_file("mine/keep.txt")
    (s.dir / "link").symlink_to(s.dir / "mine", target_is_directory=True)
    s.cli([*CURVES, "--out", str(s.dir / "link")], {2}, must_say="symbolic link")
    s.check(not (s.dir / "mine" / ".pfode-owned").exists(), "the link's target was not claimed")


def curves_into_a_user_folder(s: Scenario) -> None:
    s.user_file("mine/theory_curves.json", "my data\n")
    s.cli([*CURVES, "--out", str(s.dir / "mine")], {2}, must_say="pfode did not create")


def rank_over_a_users_ranking_csv(s: Scenario) -> None:
    s.user_file("mine/ranking.csv", "my,ranking\n")
    s.cli(["largemodel", "rank", *_model(s), "--out", str(s.dir / "mine"), *SMALL], {2}, must_say="ranking.csv")


def link_at_lock(s: Scenario) -> None:
    victim = s.user_file("victim.txt")
    (s.dir / "rk").mkdir()
    s.user_link("rk/.lock", victim)
    s.cli(["largemodel", "rank", *_model(s), "--out", str(s.dir / "rk"), *SMALL], {2}, must_say="symbolic link")


def _rank_folder(s: Scenario) -> Path:
    s.cli(["largemodel", "rank", *_model(s), "--out", str(s.dir / "rk"), *SMALL], {0})
    return s.dir / "rk"


def link_at_ranking_csv(s: Scenario) -> None:
    rk = _rank_folder(s)
    (rk / "ranking.csv").unlink()
    s.user_link("rk/ranking.csv", s.user_file("victim.csv", "precious\n"))
    s.cli(["largemodel", "rank", *_model(s), "--out", str(rk), *SMALL], {2}, must_say="symbolic link")


def link_at_gallery_png(s: Scenario) -> None:
    rk = _rank_folder(s)
    (rk / "gallery_riskiest.png").unlink()
    s.user_link("rk/gallery_riskiest.png", s.user_file("victim.png", "precious\n"))
    s.cli(["largemodel", "rank", *_model(s), "--out", str(rk), *SMALL], {2}, must_say="symbolic link")


def study_over_a_rank_folder(s: Scenario) -> None:
    rk = _rank_folder(s)
    s.adopt(rk)
    s.cli(["largemodel", "study", *_model(s), "--out", str(rk), *SMALL, "--perturbations", "1", "--no-progress"], {2},
          must_say="rank run")


def link_at_records(s: Scenario) -> None:
    victim = s.user_file("victim.jsonl", "precious\n")
    from simulate.store import claim_folder

    claim_folder(s.dir / "st", "study")
    s.user_link("st/records.jsonl", victim)
    s.cli(["largemodel", "study", *_model(s), "--out", str(s.dir / "st"), *SMALL, "--perturbations", "1",
           "--no-progress"], {2})


def train_over_a_model_with_a_user_file(s: Scenario) -> None:
    s.cli(["largemodel", "train", "--out", str(s.dir / "m"), *TRAIN], {0})
    s.user_file("m/my_eval.md")
    s.adopt(s.dir / "m")
    t0 = time.perf_counter()
    s.cli(["largemodel", "train", "--out", str(s.dir / "m"), *TRAIN, "--seed", "1"], {2}, must_say="different model")
    s.check(time.perf_counter() - t0 < 60, "refused before training")


def train_under_a_file(s: Scenario) -> None:
    s.user_file("a-file")
    s.cli(["largemodel", "train", "--out", str(s.dir / "a-file" / "m"), *TRAIN], {2})


def outputs_inside_images_are_not_inputs(s: Scenario) -> None:
    imgs = s.dir / "imgs"
    shutil.copytree(s.fx["images"], imgs)
    s.adopt(imgs)
    for cmd, extra in (("explain", ["--n-images", "3"]), ("rank", [])):
        counts = []
        for _ in range(2):
            s.cli(["largemodel", cmd, "--model", str(s.fx["model"]), "--images", str(imgs), "--out",
                   str(imgs / f"out-{cmd}"), *SMALL, *extra], {0})
            if cmd == "explain":
                counts.append(json.loads((imgs / "out-explain" / "summary.json").read_text()).get("n_records"))
            else:
                counts.append(len((imgs / "out-rank" / "ranking.csv").read_text().splitlines()) - 1)
        s.check(counts[0] == counts[1], f"{cmd}: the second run studied its own outputs ({counts})")


def explain_summary_is_this_runs(s: Scenario) -> None:
    other = s.dir / "other-images"
    other.mkdir()
    shutil.copy(next(iter(sorted(s.fx["images"].glob("*.png")))), other / "only.png")
    s.adopt(other)
    out = s.dir / "ex"
    s.cli(["largemodel", "explain", *_model(s), "--out", str(out), *SMALL], {0})
    s.cli(["largemodel", "explain", "--model", str(s.fx["model"]), "--images", str(other), "--out", str(out), *SMALL],
          {0})
    names = {r.split(",")[0] for r in (out / "explain.csv").read_text().splitlines()[1:]}
    s.check(len((out / "explain.csv").read_text().splitlines()) == 2, f"explain.csv holds only this run ({names})")


def files_follow_the_umask(s: Scenario) -> None:
    s.cli([*CURVES, "--out", str(s.dir / "c")], {0}, umask=0o002)
    modes = {oct(p.stat().st_mode & 0o777) for p in (s.dir / "c").iterdir()} | {oct((s.dir / "c").stat().st_mode & 0o777)}
    s.check(modes == {"0o664", "0o775"}, f"modes under umask 002: {sorted(modes)}")


SCENARIOS: list[Callable[[Scenario], None]] = [
    fresh_keeps_user_file_in_pfode_subfolder, fresh_on_untouched_folder_removes_exactly_pfodes,
    planted_marker_deletes_nothing, forged_manifest_deletes_nothing, user_edited_pfode_file_is_kept,
    link_at_a_pfode_file_is_not_followed, train_over_a_report_folder, train_over_a_simulate_folder_with_notes,
    simulate_out_empty_string, train_out_empty_string, out_dot_and_parent, out_tilde_is_expanded_not_created,
    out_is_a_link, curves_into_a_user_folder, rank_over_a_users_ranking_csv, link_at_lock, link_at_ranking_csv,
    link_at_gallery_png, study_over_a_rank_folder, link_at_records, train_over_a_model_with_a_user_file,
    train_under_a_file, outputs_inside_images_are_not_inputs, explain_summary_is_this_runs, files_follow_the_umask,
]


# ---- fixtures and main ------------------------------------------------------------------------
def build_fixtures(root: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    from largemodel.models.tiny import build_tiny_folder

    fx: dict[str, Path] = {"model": build_tiny_folder(root / "tiny", "sd3", with_vae=False)}
    rng = np.random.default_rng(0)
    fx["images"] = root / "images"
    fx["images"].mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(fx["images"] / f"img{i}.png")
    fx["report"] = root / "report"
    rc, err = run([*REPORT, "--out", str(fx["report"])], root)
    if rc != 0:
        raise SystemExit(f"could not make the report fixture: {err[-500:]}")
    return fx


def _take_protections_away() -> None:
    """The old rules, for ``--control``: ``--fresh`` deletes the whole folder, links are followed,
    every ``--out`` and every folder is accepted."""
    import reports.report
    from theory.output import files as output_files, removal as output_removal

    def remove_all(folder):  # noqa: ANN001, ANN202
        shutil.rmtree(folder, ignore_errors=True)
        return []

    output_removal.remove_owned = reports.report.remove_owned = remove_all
    output_files._refuse_link = lambda path: None
    output_files.check_out_path = lambda path, flag="--out": Path(os.path.expanduser(str(path)))
    output_files.foreign_entry = lambda folder: None
    output_removal.unowned_files = lambda folder: []
    import largemodel.training.train

    largemodel.training.train.unowned_files = lambda folder: []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    ap.add_argument("--json", type=Path, default=None, help="write every outcome here")
    ap.add_argument("--control", action="store_true",
                    help="negative control: run with the protections taken away (a folder-wide delete, links "
                         "followed, any --out accepted); the scenarios must then fail")
    args = ap.parse_args(argv)
    if args.control:
        _take_protections_away()
    t_start = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(1)
    import largemodel.models.load  # noqa: F401 - imported once, before forking
    import reports.report  # noqa: F401

    root = Path(tempfile.mkdtemp(prefix="pfode-ownership-"))
    outcomes = []
    try:
        fx = build_fixtures(root / "fixtures")
        for fn in SCENARIOS:
            if args.only and args.only not in fn.__name__:
                continue
            t0 = time.perf_counter()
            s = Scenario(fn.__name__, root / "scenarios", fx)
            try:
                fn(s)
            except Exception as exc:  # noqa: BLE001 - a scenario that cannot run counts as failed
                s.fail(f"scenario error: {type(exc).__name__}: {exc}")
            out = s.finish()
            out.seconds = time.perf_counter() - t0
            outcomes.append(out)
            print(f"{'ok  ' if out.passed else 'FAIL'} {out.name} ({out.files} user files, {out.seconds:.0f} s)"
                  + "".join(f"\n     - {n}" for n in out.notes + [f"lost {x}" for x in out.lost]
                            + [f"changed {x}" for x in out.changed]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    files = sum(o.files for o in outcomes)
    print(f"{len(outcomes)} scenarios in {time.perf_counter() - t_start:.0f} s: {sum(o.passed for o in outcomes)} passed, "
          f"{sum(not o.passed for o in outcomes)} failed; {files} user files checked, "
          f"{sum(len(o.lost) for o in outcomes)} lost, {sum(len(o.changed) for o in outcomes)} changed")
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
