"""Fuzz the ``pfode`` command line: every sub-command over bad values of each flag (issue 12).

    python benchmarks/fuzz_cli.py [--timeout 60] [--only largemodel] [--show 20] [--json out.json]

Not part of the test suite. Each case runs ``reports.cli.main(argv)`` in a forked child process
(the parent imports the package once, so a case costs a fork, not a Python start-up), with its
stdout/stderr in files, its working directory in a scratch folder and a timeout. Cases that
should be refused are refused before heavy work; the few that should run use the smallest sizes
(a tiny model folder from ``largemodel/models/tiny.py``, 1-step training).

Outcomes, counted and printed:

* ``traceback``: ``Traceback`` on stderr;
* ``hang``: still running at the timeout (killed);
* ``exit-1``: exit status other than 0 and 2 (an internal failure, a signal);
* ``multi-line error``: exit 2 with other than one error line on stderr (``pfode: warning:`` lines,
  one per skipped image under the one image policy, are warnings, not the error);
* ``silently accepted``: exit 0 on a value that should be refused;
* ``wrongly refused``: exit 2 on a valid value;
* ``ok-rejected`` / ``ok-accepted``: as expected.

Goal: all zero except the two ``ok`` rows. Uses one thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REJECT, ACCEPT, EITHER = "reject", "accept", "either"
OUTCOMES = ("traceback", "hang", "exit-1", "multi-line error", "silently accepted", "wrongly refused",
            "ok-rejected", "ok-accepted", "ok-either")


@dataclass
class Case:
    group: str
    label: str
    argv: list[str]
    expect: str = REJECT
    timeout: float | None = None


@dataclass
class Result:
    case: Case
    outcome: str
    rc: int | None
    seconds: float
    stderr: str = ""
    extra: dict = field(default_factory=dict)


# ---- bad values ------------------------------------------------------------------------------
NON_NUMBERS = ["abc", "", "1,5", "0x10", "--"]
BAD_FLOATS = ["nan", "-nan", "inf", "-inf", "1e999", "-1"]
BAD_INTS = ["-1", "1.5", "1e3", "nan", "inf", "99999999999999999999999999"]


def int_cases(flag: str, *, zero_ok: bool, huge: str = "1000000000000") -> list[tuple[str, str]]:
    """(value, expectation) pairs for an integer count flag."""
    out = [(v, REJECT) for v in BAD_INTS + NON_NUMBERS[:3]]
    out.append(("0", EITHER if zero_ok else REJECT))
    out.append((huge, REJECT))
    return out


def float_cases(*, zero_ok: bool = False, huge_ok: bool = False, extra_bad: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    out = [(v, REJECT) for v in BAD_FLOATS + NON_NUMBERS[:3] + list(extra_bad)]
    out.append(("0", EITHER if zero_ok else REJECT))
    out.append(("1e30", EITHER if huge_ok else REJECT))
    return out


SEED_CASES = [("-1", REJECT), ("4294967296", REJECT), ("18446744073709551616", REJECT), ("1.5", REJECT),
              ("abc", REJECT), ("", REJECT), ("nan", REJECT), ("1e3", REJECT)]


# ---- fixtures ------------------------------------------------------------------------------
def build_fixtures(root: Path) -> dict[str, Path]:
    """Files and folders the cases point at: odd paths, images, a tiny model and damaged copies."""
    import numpy as np
    from PIL import Image

    from largemodel.models.tiny import build_tiny_folder

    fx: dict[str, Path] = {}
    root.mkdir(parents=True, exist_ok=True)
    fx["file"] = root / "a-file.txt"
    fx["file"].write_text("not a folder\n")
    fx["empty"] = root / "empty"
    fx["empty"].mkdir()
    fx["missing"] = root / "does-not-exist"
    fx["under_file"] = fx["file"] / "below"
    fx["devnull"] = Path(os.devnull)
    fx["readonly"] = root / "read-only"
    fx["readonly"].mkdir()
    fx["readonly"].chmod(0o500)

    rng = np.random.default_rng(0)
    good = root / "images"
    good.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(good / f"img{i}.png")
    fx["images"] = good
    mixed = root / "images-mixed"
    shutil.copytree(good, mixed)
    (mixed / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (mixed / "empty.jpg").write_bytes(b"")
    Image.fromarray(rng.integers(0, 256, (1, 1), dtype=np.uint8)).save(mixed / "one-pixel-gray.png")
    Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)).save(mixed / "sixteen-bit.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(mixed / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (4000, 2, 3), dtype=np.uint8)).save(mixed / "very-tall.png")
    fx["images_mixed"] = mixed
    corrupt = root / "images-corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"not an image")
    (corrupt / "b.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    (corrupt / "c.png").write_bytes(b"")
    fx["images_corrupt"] = corrupt
    no_images = root / "no-images"
    no_images.mkdir()
    (no_images / "notes.txt").write_text("no pictures here")
    fx["no_images"] = no_images

    fx["model"] = build_tiny_folder(root / "tiny-sd3", "sd3", with_vae=False)
    garbage = root / "tiny-garbage-null-prompt"
    shutil.copytree(fx["model"], garbage)
    (garbage / "null_prompt.safetensors").write_bytes(b"\x00\x01garbage" * 100)
    fx["model_garbage_prompt"] = garbage
    empty_sched = root / "tiny-empty-scheduler"
    shutil.copytree(fx["model"], empty_sched)
    (empty_sched / "scheduler" / "scheduler_config.json").write_text("{}")
    fx["model_empty_scheduler"] = empty_sched
    no_index = root / "tiny-no-index"
    shutil.copytree(fx["model"], no_index)
    (no_index / "model_index.json").unlink()
    fx["model_no_index"] = no_index
    cut = root / "tiny-cut-weights"
    shutil.copytree(fx["model"], cut)
    for w in (cut / "transformer").glob("*.safetensors"):
        w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    fx["model_cut_weights"] = cut
    bad_json = root / "tiny-bad-json"
    shutil.copytree(fx["model"], bad_json)
    (bad_json / "model_index.json").write_text("{not json")
    fx["model_bad_json"] = bad_json

    from simulate.store import atomic_write_text, claim_folder  # output folders (issue 30)

    for kind in ("report", "simulate"):
        fx[f"{kind}_folder"] = claim_folder(root / f"a-{kind}-folder", kind)
        atomic_write_text(fx[f"{kind}_folder"] / "result.json", "{}")
    fx["link_to_folder"] = root / "link-to-empty"
    fx["link_to_folder"].symlink_to(fx["empty"], target_is_directory=True)
    return fx


# ---- the cases -----------------------------------------------------------------------------
def _flag(flag: str, value: str) -> list[str]:
    """``--flag=value`` when argparse would read the value as a flag (``-1``, ``--``, empty)."""
    return [f"{flag}={value}"] if value.startswith("-") or value == "" else [flag, value]


def _flag_cases(group: str, base: list[str], flag: str, values: list[tuple[str, str]]) -> list[Case]:
    return [Case(group, f"{flag} {v!r}", [*base, *_flag(flag, v)], exp) for v, exp in values]


def out_cases(group: str, base: list[str], fx: dict[str, Path], flag: str = "--out") -> list[Case]:
    cases = [Case(group, f"{flag} a file", [*base, flag, str(fx["file"])]),
             Case(group, f"{flag} /dev/null", [*base, flag, str(fx["devnull"])]),
             Case(group, f"{flag} under a file", [*base, flag, str(fx["under_file"] / "x")])]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append(Case(group, f"{flag} read-only", [*base, flag, str(fx["readonly"] / "x")]))
    return cases


def theory_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    cases: list[Case] = []
    bound = ["theory", "bound", "--n", "5", "--json"]
    cases += _flag_cases("theory bound", ["theory", "bound", "--json"], "--n", int_cases("--n", zero_ok=False, huge="10000000000000"))
    cases += _flag_cases("theory bound", bound, "--m", int_cases("--m", zero_ok=False, huge="100000000000000000000"))
    for flag in ("--sigma", "--tau", "--c", "--rho-max"):
        cases += _flag_cases("theory bound", bound, flag, float_cases(huge_ok=True))
    cases += _flag_cases("theory bound", bound, "--side", float_cases(zero_ok=True, huge_ok=True))
    cases += _flag_cases("theory bound", bound, "--density-ratio", float_cases(huge_ok=True, extra_bad=("0.5",)))
    cases.append(Case("theory bound", "extremes through r*", [*bound, "--sigma", "1e300", "--tau", "1e302"], EITHER))
    cases.append(Case("theory bound", "defaults", bound, ACCEPT))
    curves = ["theory", "curves", "--out", str(scratch / "curves"), "--num", "4", "--n-max", "100"]
    cases += _flag_cases("theory curves", curves[:4], "--num", int_cases("--num", zero_ok=False, huge="1000000000"))
    cases += _flag_cases("theory curves", curves[:6], "--n-max", float_cases(extra_bad=("1",)))
    for flag in ("--sigma", "--tau", "--eps", "--rho-max"):
        cases += _flag_cases("theory curves", curves, flag, [(v, e) for v, e in float_cases(huge_ok=True) if v != "1e30"])
    cases += _flag_cases("theory curves", curves, "--m", [("0", REJECT), ("-3", REJECT), ("x", REJECT)])
    cases += out_cases("theory curves", ["theory", "curves", "--num", "4", "--n-max", "100"], fx)
    cases.append(Case("theory curves", "smallest", curves, ACCEPT))
    return cases


def simulate_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    from simulate.experiments import EXPERIMENTS

    cases: list[Case] = []
    for exp in EXPERIMENTS:
        base = ["simulate", exp, "--out", str(scratch / f"sim-{exp}"), "--no-progress"]
        cases += _flag_cases(f"simulate {exp}", base, "--seed", SEED_CASES)
        cases += out_cases(f"simulate {exp}", ["simulate", exp, "--no-progress"], fx)
    cases.append(Case("simulate", "unknown experiment", ["simulate", "nosuch"]))
    return cases


def _model_cases(group: str, base_wo: list[str], fx: dict[str, Path]) -> list[Case]:
    """--model / --images / --device / --dtype odd values; ``base_wo`` lacks --model and --images."""
    good = ["--model", str(fx["model"]), "--images", str(fx["images"])]
    cases = []
    for key in ("missing", "file", "empty", "model_garbage_prompt", "model_empty_scheduler", "model_no_index",
                "model_cut_weights", "model_bad_json"):
        cases.append(Case(group, f"--model {key}", [*base_wo, "--model", str(fx[key]), "--images", str(fx["images"])]))
    for key in ("missing", "file", "empty", "no_images", "images_corrupt"):
        cases.append(Case(group, f"--images {key}", [*base_wo, "--model", str(fx["model"]), "--images", str(fx[key])]))
    cases.append(Case(group, "--images mixed good/corrupt/odd", [*base_wo, "--model", str(fx["model"]), "--images",
                                                                  str(fx["images_mixed"])], EITHER))
    for dev in ("bogus", "meta", "cuda:99", "", "cpu:0:1", "mps"):
        cases.append(Case(group, f"--device {dev!r}", [*base_wo, *good, f"--device={dev}"]))
    cases.append(Case(group, "--dtype fp8", [*base_wo, *good, "--dtype", "fp8"]))
    return cases


def largemodel_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    cases: list[Case] = []
    for cmd in ("study", "gallery"):
        group = f"largemodel {cmd}"
        out = ["--out", str(scratch / f"lm-{cmd}")]
        small = ["--device", "cpu", "--steps", "2", "--perturbations", "1", "--n-images", "1", "--no-progress"]
        base_wo = ["largemodel", cmd, *out, *small]
        good = ["--model", str(fx["model"]), "--images", str(fx["images"])]
        base = [*base_wo, *good]
        cases += _model_cases(group, base_wo, fx)
        cases += out_cases(group, ["largemodel", cmd, *small, *good], fx)
        cases += _flag_cases(group, base, "--seed", SEED_CASES)
        for flag, zero_ok in (("--steps", False), ("--perturbations", False), ("--batch-size", False),
                              ("--images-per-batch", False), ("--n-images", False), ("--resolution", False)):
            cases += _flag_cases(group, base, flag, int_cases(flag, zero_ok=zero_ok))
        cases += _flag_cases(group, base, "--eps-rms", float_cases())
        cases += _flag_cases(group, base, "--guidance", float_cases(zero_ok=True))
        cases.append(Case(group, "--resolution 7 (not a multiple of the patch)", [*base, "--resolution", "7"]))
        if cmd == "study":
            for flag, zero_ok in (("--jvp-directions", True), ("--power-iters", True), ("--probes", False)):
                cases += _flag_cases(group, base, flag, int_cases(flag, zero_ok=zero_ok))
            cases.append(Case(group, "--log-lambda bogus", [*base, "--log-lambda", "bogus"]))
        else:
            cases += _flag_cases(group, base, "--top", int_cases("--top", zero_ok=False))
        cases.append(Case(group, "smallest run", [*base, "--jvp-directions", "0"] if cmd == "study" else base, ACCEPT,
                          timeout=180))

    group = "largemodel train"
    tr = ["largemodel", "train", "--out", str(scratch / "lm-train"), "--steps", "1", "--batch-size", "2",
          "--num-layers", "1", "--num-heads", "1", "--head-dim", "4", "--train-images", "16", "--heldout-images", "8",
          "--quality-samples", "0", "--no-progress"]
    for flag, zero_ok in (("--size", False), ("--train-images", False), ("--steps", False), ("--batch-size", False),
                          ("--patch-size", False), ("--num-layers", False), ("--num-heads", False),
                          ("--head-dim", False), ("--sample-steps", False)):
        cases += _flag_cases(group, tr, flag, int_cases(flag, zero_ok=zero_ok))
    for flag in ("--heldout-images", "--checkpoint-every", "--quality-samples", "--threads"):
        cases += _flag_cases(group, tr, flag, [(v, e) for v, e in int_cases(flag, zero_ok=True)])
    cases += _flag_cases(group, tr, "--threads", [(str((os.cpu_count() or 1) + 1), REJECT)])
    cases += _flag_cases(group, tr, "--lr", float_cases())
    cases += _flag_cases(group, tr, "--ema-decay", float_cases(zero_ok=True, extra_bad=("1", "1.5")))
    cases += _flag_cases(group, tr, "--seed", SEED_CASES)
    cases += _flag_cases(group, tr, "--data-seed", SEED_CASES)
    cases.append(Case(group, "--data bogus", [*tr, "--data", "bogus"]))
    cases.append(Case(group, "--size 3 (no patch divides into 4x4 tokens)", [*tr, "--size", "3", "--patch-size", "2"]))
    cases.append(Case(group, "--heldout-images leaves no training images", [*tr, "--heldout-images", "100000"]))
    cases += out_cases(group, [c for c in tr if c not in ("--out", str(scratch / "lm-train"))], fx)
    cases.append(Case(group, "--png a folder", [*tr, "--quality-samples", "4", "--png", str(fx["empty"])]))
    cases.append(Case(group, "--png under a file", [*tr, "--quality-samples", "4", "--png", str(fx["under_file"])]))
    cases.append(Case(group, "smallest run", tr, ACCEPT, timeout=300))
    for i, case in enumerate(cases):  # runs that may train get their own folder (else "a different model")
        if case.group == group and case.expect != REJECT and str(scratch / "lm-train") in case.argv:
            case.argv = [f"{a}-{i}" if a == str(scratch / "lm-train") else a for a in case.argv]
            case.timeout = 300
    return cases


def report_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    group = "report"
    base = ["report", "--suites", "theory", "--out", str(scratch / "report")]
    cases = _flag_cases(group, base, "--threads", [(v, e) for v, e in int_cases("--threads", zero_ok=True) if v != "0"])
    cases += _flag_cases(group, base, "--threads", [(str((os.cpu_count() or 1) + 1), REJECT)])
    for suites in ("", "nope", "theory,nope", ",", "THEORY"):
        cases.append(Case(group, f"--suites {suites!r}", ["report", f"--suites={suites}", "--out", str(scratch / "report")]))
    cases += out_cases(group, ["report", "--suites", "theory"], fx)
    lm = ["report", "--suites", "largemodel", "--out", str(scratch / "report-lm")]
    cases.append(Case(group, "--model missing", [*lm, "--model", str(fx["missing"]), "--images", str(fx["images"])]))
    cases.append(Case(group, "--model without --images", [*lm, "--model", str(fx["model"])]))
    cases.append(Case(group, "--model a file", [*lm, "--model", str(fx["file"]), "--images", str(fx["images"])]))
    cases.append(Case(group, "--model garbage null prompt", [*lm, "--model", str(fx["model_garbage_prompt"]), "--images",
                                                             str(fx["images"])]))
    cases.append(Case(group, "--images missing", [*lm, "--model", str(fx["model"]), "--images", str(fx["missing"])]))
    cases.append(Case(group, "--model with the theory suite only", [*base, "--model", str(fx["model"]), "--images",
                                                                    str(fx["images"])]))
    cases.append(Case(group, "--quick --full", [*base, "--quick", "--full"]))
    return cases


def output_folder_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    """``--out`` values that would make pfode write into or over what is not its own (issue 30):
    every command that writes a folder refuses them with one line."""
    good = ["--model", str(fx["model"]), "--images", str(fx["images"])]
    small = ["--device", "cpu", "--steps", "2", "--perturbations", "1", "--n-images", "1", "--no-progress"]
    commands = {
        "theory curves": ["theory", "curves", "--num", "4", "--n-max", "100"],
        "simulate lemma-d1": ["simulate", "lemma-d1", "--no-progress"],
        "largemodel study": ["largemodel", "study", *small, *good],
        "largemodel gallery": ["largemodel", "gallery", *small, *good],
        "largemodel rank": ["largemodel", "rank", "--device", "cpu", "--steps", "2", *good],
        "largemodel explain": ["largemodel", "explain", "--device", "cpu", "--steps", "2", *good],
        "largemodel train": ["largemodel", "train", "--steps", "1", "--batch-size", "2", "--num-layers", "1",
                             "--num-heads", "1", "--head-dim", "4", "--train-images", "16", "--heldout-images", "8",
                             "--quality-samples", "0", "--no-progress"],
        "report": ["report", "--suites", "theory"],
    }
    cases: list[Case] = []
    for group, base in commands.items():
        other_kind = fx["simulate_folder"] if group == "report" else fx["report_folder"]
        for label, value in (("''", ""), (".", "."), ("..", ".."), ("/", "/"), ("~", "~"),
                             ("a link to a folder", str(fx["link_to_folder"])),
                             ("a folder of another kind of run", str(other_kind)),
                             ("a user's folder with files", str(fx["no_images"]))):
            cases.append(Case(f"{group} (output folder)", f"--out {label}", [*base, *_flag("--out", value)]))
    study = ["largemodel", "study", "--out", str(scratch / "lm-plan"), *small, *good]
    for value in ("inf", "nan", "1e999", "-1", "0"):
        cases.append(Case("largemodel study (output folder)", f"--plan {value}", [*study, f"--plan={value}"]))
    return cases


def extra_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    """Commands added after the contract (rank, explain): their shared flags."""
    from reports.cli import build_parser

    cases: list[Case] = []
    parser = build_parser()
    lm = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["largemodel"]
    subs = next(a for a in lm._actions if isinstance(a, argparse._SubParsersAction)).choices
    for cmd in sorted(set(subs) - {"study", "gallery", "train"}):
        group = f"largemodel {cmd}"
        base_wo = ["largemodel", cmd, "--out", str(scratch / f"lm-{cmd}"), "--device", "cpu"]
        base = [*base_wo, "--model", str(fx["model"]), "--images", str(fx["images"])]
        flags = {a.option_strings[-1] for a in subs[cmd]._actions if a.option_strings}
        cases += _model_cases(group, [c for c in base_wo if c not in ("--device", "cpu")], fx)
        cases += out_cases(group, ["largemodel", cmd, "--device", "cpu", "--model", str(fx["model"]), "--images",
                                   str(fx["images"])], fx)
        if "--seed" in flags:
            cases += _flag_cases(group, base, "--seed", SEED_CASES)
        for flag in ("--steps", "--probes", "--images-per-batch", "--n-images", "--perturbations", "--batch-size"):
            if flag in flags:
                cases += _flag_cases(group, base, flag, int_cases(flag, zero_ok=False))
        for flag in ("--eps-rms",):
            if flag in flags:
                cases += _flag_cases(group, base, flag, float_cases())
    for case in cases:  # a command written elsewhere: the mixed-images run may do real work
        if case.expect == EITHER:
            case.timeout = 180
    return cases


# ---- issue 30, models / inputs / processes (h30b): incomplete models, refusals before allocating,
# one image policy, perturbation sizes ------------------------------------------------------------
def _issue30_models(fx: dict[str, Path], root: Path) -> dict[str, Path]:
    """Damaged copies of the tiny model: one tensor removed, a NaN weight, no matching tensors, a
    non-floating tensor, ``patch_size: 0``, 10^6 layers, a custom pipeline class, a remote-code config."""
    import torch
    from safetensors.torch import load_file, save_file

    def variant(name: str, edit: Any) -> Path:
        folder = root / f"tiny-{name}"
        if not folder.exists():
            shutil.copytree(fx["model"], folder)
            edit(folder)
        return folder

    def tensors(folder: Path, fn: Any) -> None:
        f = folder / "transformer" / "diffusion_pytorch_model.safetensors"
        save_file(fn(load_file(str(f))), str(f))

    def config(folder: Path, file: str, **changes: Any) -> None:
        path = folder / file
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    def nan(t: dict[str, Any]) -> dict[str, Any]:
        t["proj_out.weight"][0, 0] = float("nan")
        return t

    return {
        "one tensor removed": variant("drop-one", lambda f: tensors(f, lambda t: {k: v for k, v in t.items() if k != "proj_out.bias"})),
        "NaN weight": variant("nan", lambda f: tensors(f, nan)),
        "no matching tensors": variant("renamed", lambda f: tensors(f, lambda t: {"x." + k: v for k, v in t.items()})),
        "integer tensor": variant("int", lambda f: tensors(f, lambda t: {**t, "proj_out.bias": t["proj_out.bias"].to(torch.int32)})),
        "patch_size 0": variant("patch0", lambda f: config(f, "transformer/config.json", patch_size=0)),
        "10^6 layers": variant("layers", lambda f: config(f, "transformer/config.json", num_layers=10**6)),
        "custom pipeline class": variant("custom", lambda f: config(f, "model_index.json", _class_name=["pipe", "MyPipeline"])),
        "remote-code config": variant("remote", lambda f: config(f, "transformer/config.json", auto_map={"AutoModel": "m.X"})),
    }


def _issue30_images(fx: dict[str, Path], root: Path) -> Path:
    """Good images plus a zero-byte, a truncated, a decompression-bomb image and a non-UTF-8 name."""
    from PIL import Image

    folder = root / "images-issue30"
    if not folder.exists():
        shutil.copytree(fx["images"], folder)
        (folder / "zero.png").write_bytes(b"")
        (folder / "truncated.png").write_bytes((fx["images"] / "img0.png").read_bytes()[:120])
        Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")  # 1e8 pixels > Image.MAX_IMAGE_PIXELS
        shutil.copy(fx["images"] / "img1.png", os.fsencode(folder) + b"/caf\xe9.png")
    return folder


def issue30_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    models = _issue30_models(fx, scratch.parent / "issue30-fixtures")
    images = _issue30_images(fx, scratch.parent / "issue30-fixtures")
    study = ["--n-images", "2", "--steps", "2", "--perturbations", "1", "--device", "cpu", "--no-progress"]
    small = {
        "study": study,
        "gallery": study,
        "rank": ["--steps", "2", "--device", "cpu"],
        "explain": ["--n-images", "2", "--steps", "2", "--power-iters", "0", "--budgets", "1", "--causal-directions", "1",
                    "--sizes", "1e-3,1e-2", "--perturbations", "1", "--device", "cpu"],
    }
    cases: list[Case] = []
    for cmd, args in small.items():
        group = f"issue30 {cmd}"
        base = ["largemodel", cmd, "--out", str(scratch / f"i30-{cmd}"), *args]
        for what, folder in models.items():
            cases.append(Case(group, f"--model {what}", [*base, "--model", str(folder), "--images", str(fx["images"])]))
        cases.append(Case(group, "--images zero-byte/truncated/bomb/non-UTF-8 name",
                          [*base, "--model", str(fx["model"]), "--images", str(images)], ACCEPT, timeout=240))
    for what, folder in models.items():
        cases.append(Case("issue30 report", f"--model {what}", ["report", "--suites", "largemodel", "--out",
                                                                 str(scratch / "i30-report"), "--model", str(folder),
                                                                 "--images", str(fx["images"])]))
    good = ["--model", str(fx["model"]), "--images", str(fx["images"])]
    cases.append(Case("issue30 rank", "--resolution 4096 on the CPU",
                      ["largemodel", "rank", "--out", str(scratch / "i30-r"), *small["rank"], *good, "--resolution", "4096"]))
    cases.append(Case("issue30 explain", "--resolutions 8,4096 on the CPU",
                      ["largemodel", "explain", "--out", str(scratch / "i30-e"), *small["explain"], *good,
                       "--resolutions", "8,4096"]))
    cases.append(Case("issue30 explain", "--budgets 1,100000", ["largemodel", "explain", "--out", str(scratch / "i30-b"),
                                                                 *small["explain"], *good, "--budgets", "1,100000"]))
    for cmd in ("study", "gallery", "explain"):
        base = ["largemodel", cmd, "--out", str(scratch / f"i30-eps-{cmd}"), *small[cmd], *good]
        for value in ("1e-300", "1e-6", "0", "nan"):
            cases.append(Case(f"issue30 {cmd}", f"--eps-rms {value}", [*base, "--eps-rms", value]))
    base = ["largemodel", "explain", "--out", str(scratch / "i30-sizes"), *small["explain"], *good]
    for value in ("1e-300,1e-2", "1e-6,1e-2", ",", "nan,1e-2", "x"):
        cases.append(Case("issue30 explain", f"--sizes {value}", [*base, "--sizes", value]))
    return cases


# ---- issue 27: prompts, captions, guidance, Jacobian routes, plans of explain / rank ------------
def _issue27_fixtures(fx: dict[str, Path], root: Path) -> dict[str, Path]:
    """A tiny SD3 folder with tiny text encoders (prompts are encoded), caption files good and bad."""
    from largemodel.models.tiny import build_tiny_folder

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    out["model_text"] = root / "tiny-sd3-text"
    if not out["model_text"].exists():
        build_tiny_folder(out["model_text"], "sd3", with_vae=True, text_encoders=True)
    names = sorted(p.name for p in fx["images"].iterdir())
    files = {
        "good.csv": "file,prompt\n" + "".join(f"{n},a photo number {i}\n" for i, n in enumerate(names)),
        "good.jsonl": "".join(json.dumps({"file": n, "prompt": f"a cat {i}"}) + "\n" for i, n in enumerate(names)),
        "mapping_file.json": json.dumps({f"{i:03d}": {"image_path": n, "original_prompt": f"a [red] car {i}"}
                                         for i, n in enumerate(names)}),
        "missing-one.csv": "file,prompt\n" + "".join(f"{n},p\n" for n in names[:-1]),
        "unknown-image.csv": "file,prompt\n" + "".join(f"{n},p\n" for n in names) + "nosuch.png,p\n",
        "no-header.csv": "".join(f"{n},p\n" for n in names),
        "duplicate.csv": "file,prompt\n" + "".join(f"{n},p\n" for n in names) + f"{names[0]},again\n",
        "empty.csv": "",
        "bad.jsonl": "{not json\n",
        "wrong-keys.jsonl": json.dumps({"image": names[0], "text": "x"}) + "\n",
        "list.json": json.dumps([1, 2, 3]),
        "garbage.json": "{",
    }
    for name, text in files.items():
        out[name] = root / name
        out[name].write_text(text)
    out["binary.csv"] = root / "binary.csv"
    out["binary.csv"].write_bytes(bytes(range(256)) * 4)
    return out


def issue27_cases(fx: dict[str, Path], scratch: Path) -> list[Case]:
    """The flags of issue 27 on study, gallery, explain and rank (groups ``largemodel ... (issue 27)``)."""
    fx27 = _issue27_fixtures(fx, scratch.parent / "issue27-fixtures")
    text = ["--model", str(fx27["model_text"]), "--images", str(fx["images"])]
    plain = ["--model", str(fx["model"]), "--images", str(fx["images"])]
    study = ["--n-images", "2", "--steps", "2", "--perturbations", "1", "--device", "cpu", "--no-progress"]
    small = {
        "study": [*study, "--jvp-directions", "0"],
        "gallery": study,
        "rank": ["--steps", "2", "--device", "cpu", "--images-per-batch", "2", "--gallery", "0"],
        "explain": ["--n-images", "2", "--steps", "2", "--power-iters", "1", "--budgets", "1", "--causal-directions", "1",
                    "--sizes", "1e-3,1e-2", "--perturbations", "1", "--device", "cpu", "--no-floor"],
    }
    cases: list[Case] = []
    for cmd, args in small.items():
        group = f"largemodel {cmd} (issue 27)"
        out = ["--out", str(scratch / f"i27-{cmd}")]
        base, base_plain = ["largemodel", cmd, *out, *args, *text], ["largemodel", cmd, *out, *args, *plain]
        # --prompt: text is free; a folder without text encoders refuses it unless it is the null prompt
        for value, expect in (("a red car", ACCEPT), ("", EITHER), ("x" * 5000, EITHER), ("caf\u00e9 \u732b\n\t", EITHER)):
            cases.append(Case(group, f"--prompt {value[:12]!r}", [*base, *_flag("--prompt", value)], expect, timeout=240))
        cases.append(Case(group, "--prompt on a folder without text encoders", [*base_plain, "--prompt", "a red car"],
                          EITHER, timeout=240))
        # --captions
        for key in ("good.csv", "good.jsonl", "mapping_file.json"):
            cases.append(Case(group, f"--captions {key}", [*base, "--captions", str(fx27[key])], ACCEPT, timeout=240))
        for key in ("missing-one.csv", "unknown-image.csv", "no-header.csv", "duplicate.csv", "empty.csv", "bad.jsonl",
                    "wrong-keys.jsonl", "list.json", "garbage.json", "binary.csv"):
            cases.append(Case(group, f"--captions {key}", [*base, "--captions", str(fx27[key])], EITHER, timeout=240))
        for key in ("missing", "empty", "devnull"):
            cases.append(Case(group, f"--captions {key}", [*base, "--captions", str(fx[key])]))
        cases.append(Case(group, "--prompt with --captions", [*base, "--prompt", "x", "--captions", str(fx27["good.csv"])]))
        # --guidance-scale W >= 1
        cases += _flag_cases(group, base, "--guidance-scale", [(v, REJECT) for v in (*BAD_FLOATS, "0", "0.5", "abc", "")])
        cases.append(Case(group, "--guidance-scale 3.5", [*base, "--prompt", "a red car", "--guidance-scale", "3.5"],
                          ACCEPT, timeout=240))
        cases.append(Case(group, "--guidance-scale 1e30", [*base, "--guidance-scale", "1e30"], EITHER, timeout=240))
        if cmd == "gallery":  # no route, no plan
            continue
        # --jacobian-route, --plan
        cases.append(Case(group, "--jacobian-route bogus", [*base, "--jacobian-route", "bogus"]))
        for value in ("inf", "nan", "1e999", "-1", "0", "abc", ""):
            cases.append(Case(group, f"--plan {value!r}", [*base, f"--plan={value}"]))
        for value in ("80", "1e-3"):
            cases.append(Case(group, f"--plan {value}", [*base, "--plan", value], EITHER))
        cases.append(Case(group, "--plan (this device)", [*base, "--plan"], ACCEPT))
        if cmd in ("study", "explain"):
            route = ["--jacobian-route", "vjp-fd"] + (["--power-iters", "1", "--log-lambda", "hutchinson"]
                                                     if cmd == "study" else [])
            for scheme in ("forward", "central"):
                cases.append(Case(group, f"--jacobian-route vjp-fd --fd-scheme {scheme}",
                                  [*base, *route, "--fd-scheme", scheme], ACCEPT, timeout=240))
            for value in ("bogus", "", "FORWARD"):
                cases.append(Case(group, f"--fd-scheme {value!r}", [*base, *_flag("--fd-scheme", value)]))
            # --guidance-scales W1,W2,...
            for value in ("1", "1,1", "abc", "", ",", "1,nan", "0.5,2", "1,inf", "1,-2", "1;3"):
                cases.append(Case(group, f"--guidance-scales {value!r}", [*base, *_flag("--guidance-scales", value)]))
            cases.append(Case(group, "--guidance-scales with --guidance-scale",
                              [*base, "--guidance-scales", "1,2", "--guidance-scale", "2"]))
            cases.append(Case(group, "--guidance-scales 1,3.5,7 --plan 80",
                              [*base, "--guidance-scales", "1,3.5,7", "--prompt", "a car", "--plan", "80"], ACCEPT))
            cases.append(Case(group, "--guidance-scales 1,3.5 --prompt", [*base, "--guidance-scales", "1,3.5", "--prompt",
                                                                          "a red car"], ACCEPT, timeout=400))
        if cmd == "rank":
            cases += _flag_cases(group, base, "--guidance", float_cases(zero_ok=True))
            cases.append(Case(group, "--guidance 3.5", [*base, "--guidance", "3.5"], ACCEPT, timeout=240))
    return cases


# ---- running -------------------------------------------------------------------------------
def run_case(case: Case, scratch: Path, timeout: float) -> Result:
    """``reports.cli.main(case.argv)`` in a forked child; classify its outcome."""
    from reports.cli import main

    work = Path(tempfile.mkdtemp(dir=scratch, prefix="case-"))
    out_f, err_f = work / "stdout", work / "stderr"
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        rc = 70
        try:
            os.chdir(work)
            fo = os.open(out_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fe = os.open(err_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            os.setsid()
            rc = int(main(case.argv))
        except SystemExit as exc:  # --help and friends
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - an escaped exception is a traceback
            import traceback

            traceback.print_exc()
            rc = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(rc)
    limit = case.timeout or timeout
    status = None
    while time.perf_counter() - t0 < limit:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return Result(case, "hang", None, time.perf_counter() - t0, err_f.read_text(errors="replace")[-500:])
    seconds = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    err = err_f.read_text(errors="replace")
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("pfode: warning:")]
    if "Traceback" in err:
        outcome = "traceback"
    elif rc not in (0, 2):
        outcome = "exit-1"
    elif rc == 2 and len(lines) != 1:
        outcome = "multi-line error"
    elif rc == 0 and case.expect == REJECT:
        outcome = "silently accepted"
    elif rc == 2 and case.expect == ACCEPT:
        outcome = "wrongly refused"
    else:
        outcome = {REJECT: "ok-rejected", ACCEPT: "ok-accepted", EITHER: "ok-either"}[case.expect]
    shutil.rmtree(work, ignore_errors=True)
    return Result(case, outcome, rc, seconds, err[-2000:])


def warm_imports() -> None:
    """Import what the commands import lazily, once, before forking."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import diffusers  # noqa: F401

    import largemodel.models.load  # noqa: F401
    import largemodel.study.runner  # noqa: F401
    import reports.report  # noqa: F401
    from simulate.experiments import EXPERIMENTS, load

    for exp in EXPERIMENTS:
        load(exp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default %(default)s)")
    ap.add_argument("--only", default=None, help="run only groups whose name contains this")
    ap.add_argument("--show", type=int, default=30, help="failing cases listed (default %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="write every result here")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    warm_imports()
    root = Path(tempfile.mkdtemp(prefix="pfode-fuzz-"))
    scratch = root / "scratch"
    scratch.mkdir()
    try:
        fx = build_fixtures(root / "fixtures")
        cases = (theory_cases(fx, scratch) + simulate_cases(fx, scratch) + largemodel_cases(fx, scratch)
                 + report_cases(fx, scratch) + extra_cases(fx, scratch) + output_folder_cases(fx, scratch)
                 + issue30_cases(fx, scratch) + issue27_cases(fx, scratch))
        if args.only:
            cases = [c for c in cases if args.only in c.group]
        results = []
        for i, case in enumerate(cases, 1):
            res = run_case(case, scratch, args.timeout)
            results.append(res)
            if not res.outcome.startswith("ok"):
                print(f"[{i}/{len(cases)}] {res.outcome}: {case.group} {case.label}", file=sys.stderr, flush=True)
    finally:
        if (root / "fixtures" / "read-only").exists():
            (root / "fixtures" / "read-only").chmod(0o700)
        shutil.rmtree(root, ignore_errors=True)

    counts = {k: 0 for k in OUTCOMES}
    by_group: dict[str, dict[str, int]] = {}
    for r in results:
        counts[r.outcome] += 1
        group = by_group.setdefault(r.case.group, {})
        group[r.outcome] = group.get(r.outcome, 0) + 1
    print(f"{len(results)} cases in {time.perf_counter() - t_start:.0f} s")
    for k in OUTCOMES:
        print(f"  {k:<18} {counts[k]}")
    print("by command:")
    for g, c in sorted(by_group.items()):
        print(f"  {g:<22} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    bad = [r for r in results if not r.outcome.startswith("ok")]
    for r in bad[: args.show]:
        last = r.stderr.strip().splitlines()[-3:] if r.stderr.strip() else []
        print(f"- {r.outcome}: {r.case.group} {r.case.label} (rc {r.rc}): {' | '.join(last)[:300]}")
    if args.json:
        args.json.write_text(json.dumps([{"group": r.case.group, "label": r.case.label, "argv": r.case.argv,
                                          "expect": r.case.expect, "outcome": r.outcome, "rc": r.rc,
                                          "seconds": round(r.seconds, 3), "stderr": r.stderr} for r in results],
                                        indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
