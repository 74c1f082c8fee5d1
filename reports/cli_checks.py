"""Argument checks shared by every ``pfode`` command: one rule per kind of flag.

The error contract (README, issue 12): every bad value is refused before any computing, with one
line that names the user's flag, e.g. ``--seed must be an integer in [0, 4294967295], got -1``.

* Numbers are checked while parsing: :func:`bounded_int`, :func:`bounded_float`, :func:`seed`
  and :func:`threads` are ``argparse`` ``type=`` callables. They raise
  ``argparse.ArgumentTypeError("must be ...")``; the ``pfode`` parser prints it as
  ``--flag must be ...`` (see ``reports.cli``).
* Paths and the device are checked by the command before it starts work:
  :func:`check_out_dir`, :func:`check_out_file`, :func:`check_in_dir`, :func:`check_device`
  raise ``ValueError`` naming the flag.

This module imports no torch at import time (the parser is built for every command).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path
from typing import Callable

__all__ = [
    "SEED_MAX",
    "MIN_FREE_BYTES",
    "bounded_int",
    "bounded_float",
    "seed",
    "threads",
    "check_device",
    "check_out_dir",
    "check_out_file",
    "check_in_dir",
    "FLAG_RULES",
    "install_rules",
    "unruled_numeric_flags",
    "check_args",
]

SEED_MAX = 2**32 - 1
"""Largest seed: every generator the suite seeds keeps it losslessly (numpy's legacy seeding and
the experiments' seed hashing take 32 bits; ``seed * 1000 + m`` stays below torch's 2**64)."""

MIN_FREE_BYTES = 1 << 20
"""An output folder on a file system with less free space than this is refused up front."""


def _int_text(text: str) -> int | None:
    try:
        return int(text, 10)
    except (TypeError, ValueError):
        return None


def bounded_int(lo: int, hi: int | None) -> Callable[[str], int]:
    """``argparse`` type: a base-10 integer in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"

    def parse(text: str) -> int:
        value = _int_text(text)
        if value is None or value < lo or (hi is not None and value > hi):
            what = f"an integer in {span}" if hi is not None else f"an integer {span}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = "int"
    return parse


def bounded_float(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """``argparse`` type: a finite real in the interval from ``lo`` to ``hi`` (open ends as asked).

    ``nan``, ``inf`` and non-numbers are refused; ``hi = math.inf`` means no upper bound.
    """
    left, right = "(" if lo_open else "[", ")" if hi_open or math.isinf(hi) else "]"
    span = f"{left}{lo:g}, {'inf' if math.isinf(hi) else format(hi, 'g')}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def seed(text: str) -> int:
    """``argparse`` type of every ``--seed`` / ``--data-seed``: an integer in ``[0, SEED_MAX]``."""
    value = _int_text(text)
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {SEED_MAX}], got {text}")
    return value


def threads(text: str) -> int:
    """``argparse`` type of ``--threads``: ``0`` (keep torch's setting) to ``os.cpu_count()``."""
    top = os.cpu_count() or 1
    value = _int_text(text)
    if value is None or not 0 <= value <= top:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {top}] (this machine's CPU count), got {text}")
    return value


def check_device(value: str | None, flag: str = "--device") -> str | None:
    """``value`` if torch can run on it here: ``cpu``, ``cuda`` or ``cuda:<index>`` (``None`` passes).

    Raises:
        ValueError: an unknown device string, a device type other than cpu/cuda (``meta``...),
            CUDA on a build or machine without it, an index past the device count.
    """
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{flag} must be cpu, cuda or cuda:<index>, got {value!r}") from None
    if dev.type == "cpu":
        return value
    if dev.type != "cuda":
        raise ValueError(f"{flag} must be cpu, cuda or cuda:<index>, got {value!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{flag} {value}: no CUDA device is available to this torch build (use --device cpu)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{flag} {value}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
    return value


def _first_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_writable_folder(folder: Path, flag: str, path: Path) -> None:
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {folder} is not writable")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover - odd file systems: let the write itself report
        return
    if free < MIN_FREE_BYTES:
        raise ValueError(f"{flag} {path}: no space left on the disk holding {folder} ({free} bytes free)")


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``Path(path)`` if it is, or can be created as, a writable folder with some free space.

    ``~`` is expanded (``theory.output.files.check_out_path``, which also refuses ``''``, a link,
    ``/`` and the working, project and home folders or any folder above them).

    Raises:
        ValueError: ``path`` is a file or a device (``/dev/null``), or its nearest existing
            ancestor is not a writable folder, or its disk is full.
    """
    from theory.output.files import check_out_path  # '', ~, links, the working / project / home folders

    p = check_out_path(path, flag)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {p} exists and is not a folder")
    _check_writable_folder(_first_existing(p.absolute()), flag, p)
    return p


def check_out_file(path: str | Path, flag: str) -> Path:
    """``Path(path)`` if it can be written as a file (not a folder; its folder writable or creatable)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a folder; give a file name")
    if p.exists() and not p.is_file():
        raise ValueError(f"{flag} {p} exists and is not a regular file")
    _check_writable_folder(_first_existing(p.absolute().parent), flag, p)
    return p


def check_in_dir(path: str | Path, flag: str) -> Path:
    """``Path(path)`` if it is an existing, readable folder."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{flag} {p} does not exist")
    if not p.is_dir():
        raise ValueError(f"{flag} {p} is not a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise ValueError(f"{flag} {p} is not readable")
    return p


# ---- the bounds of every numeric flag ----------------------------------------------------------
_INF = math.inf
#: = theory.highdim.steiner.N_MAX (kept literal so that the CLI starts without importing scipy; a test checks it)
STEINER_N_MAX = 10**10
_Rule = Callable[[str], object]
#: = largemodel.study.config.PERTURBATION_RMS_MIN (``--eps-rms``, ``explain --sizes``): below it float32
#: rounding of the regenerations swamps the perturbation (kept literal: no torch import; a test checks it)
PERTURBATION_RMS_MIN = 1e-5

FLAG_RULES: dict[tuple[str, ...], dict[str, _Rule]] = {
    # theory: Theorem 4.3's parameters (docs/theory.md §8). --n <= theory.highdim.steiner.N_MAX (1e10): the
    # Steiner window sums grow like sqrt(n) (the library refuses larger n itself).
    ("theory", "bound"): {
        "--n": bounded_int(1, STEINER_N_MAX), "--m": bounded_int(1, 2**53),
        "--sigma": bounded_float(0, _INF, lo_open=True), "--side": bounded_float(0, _INF),
        "--tau": bounded_float(0, _INF, lo_open=True), "--c": bounded_float(0, _INF, lo_open=True),
        "--rho-max": bounded_float(0, _INF, lo_open=True), "--density-ratio": bounded_float(1, _INF),
    },
    ("theory", "curves"): {
        "--num": bounded_int(2, 100_000), "--n-max": bounded_float(2, float(STEINER_N_MAX)), "--m": bounded_int(1, 2**53),
        "--sigma": bounded_float(0, _INF, lo_open=True), "--side": bounded_float(0, _INF),
        "--tau": bounded_float(0, _INF, lo_open=True), "--eps": bounded_float(0, _INF, lo_open=True),
        "--rho-max": bounded_float(0, _INF, lo_open=True), "--density-ratio": bounded_float(1, _INF),
    },
    ("largemodel", "train"): {
        "--size": bounded_int(2, 512), "--train-images": bounded_int(1, 10_000_000),
        "--heldout-images": bounded_int(0, 1_000_000), "--steps": bounded_int(1, 10_000_000),
        "--batch-size": bounded_int(1, 65_536), "--lr": bounded_float(0, 10, lo_open=True),
        "--ema-decay": bounded_float(0, 1, hi_open=True), "--patch-size": bounded_int(1, 512),
        "--num-layers": bounded_int(1, 64), "--num-heads": bounded_int(1, 64), "--head-dim": bounded_int(1, 1024),
        "--checkpoint-every": bounded_int(0, 10_000_000), "--quality-samples": bounded_int(0, 100_000),
        "--sample-steps": bounded_int(1, 100_000), "--cond-dropout": bounded_float(0, 1, hi_open=True),
    },
    ("report",): {"--workers": bounded_int(1, 64)},  # worker processes (simulate.experiments.runner.sweep_workers)
    # any command (after the command's own rules)
    (): {
        "--seed": seed, "--data-seed": seed, "--threads": threads,
        "--steps": bounded_int(1, 100_000), "--perturbations": bounded_int(1, 1024),
        "--eps": bounded_float(0, 10, lo_open=True), "--eps-rms": bounded_float(PERTURBATION_RMS_MIN, 10),
        "--jvp-directions": bounded_int(0, 1024),
        "--power-iters": bounded_int(0, 10_000), "--probes": bounded_int(1, 1024),
        "--resolution": bounded_int(1, 8192), "--batch-size": bounded_int(1, 65_536),
        "--images-per-batch": bounded_int(1, 1024), "--n-images": bounded_int(1, 1_000_000),
        "--guidance": bounded_float(0, 100), "--guidance-scale": bounded_float(1, 100),
        "--top": bounded_int(1, 1000), "--gallery": bounded_int(0, 1000),
        "--verify": bounded_int(0, 100_000), "--tol": bounded_float(0, 1, lo_open=True, hi_open=True),
        "--max-iter": bounded_int(1, 10_000), "--fixed-size": bounded_float(0, 10, lo_open=True),
        "--causal-directions": bounded_int(1, 1024),
    },
}
"""Rule of each numeric flag: by command path first, then for any command (key ``()``)."""


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))
        elif action.option_strings:
            yield path, action


def _is_plain_number(action: argparse.Action) -> bool:
    return action.type in (int, float)


def install_rules(parser: argparse.ArgumentParser) -> None:
    """Give every plain ``int``/``float`` flag of ``parser`` (all sub-commands) its rule from
    :data:`FLAG_RULES`; flags with their own ``type`` callables keep them."""
    for path, action in _walk(parser, ()):
        if not _is_plain_number(action):
            continue
        flag = action.option_strings[-1]
        rule = FLAG_RULES.get(path, {}).get(flag) or FLAG_RULES[()].get(flag)
        if rule is not None:
            action.type = rule


def unruled_numeric_flags(parser: argparse.ArgumentParser) -> list[str]:
    """``"command --flag"`` for every plain ``int``/``float`` flag left without a rule (should be none)."""
    return [f"{' '.join(path)} {a.option_strings[-1]}" for path, a in _walk(parser, ()) if _is_plain_number(a)]


def check_args(args: argparse.Namespace) -> None:
    """The checks that need the file system or torch, for whatever the parsed command has:
    ``--device``, ``--out`` (a folder), ``--png`` (a file), ``--model`` / ``--images`` (existing
    folders). Defaults that name a path (``simulate``'s and ``report``'s ``--out``) are resolved here
    first, so the command writes exactly where it was checked."""
    group = getattr(args, "group", None)
    if group == "simulate" and getattr(args, "out", None) is None:
        args.out = Path("simulate-results") / args.experiment
    if group == "report" and getattr(args, "out", None) is None:
        args.out = Path("reports") / "runs" / ("full" if getattr(args, "full", False) else "quick")
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if group == "report":
        from reports.report import SUITES

        given = [x.strip() for x in str(args.suites).split(",") if x.strip()]
        unknown = [x for x in given if x not in SUITES]
        if not given or unknown:
            raise ValueError(f"--suites must be a comma-separated list of {', '.join(SUITES)}, got {args.suites!r}")
        if (args.model is None) != (args.images is None):
            raise ValueError("give both --model and --images to study your own model")
    if getattr(args, "plan", None) is not None and getattr(args, "model", None) is not None:
        from largemodel.plan.cost import KNOWN_MODELS  # `study --plan` may name an architecture instead of a folder

        if str(args.model) in KNOWN_MODELS and not Path(args.model).exists():
            args.model = str(args.model)
    for flag in ("model", "images"):
        if isinstance(getattr(args, flag, None), Path):
            check_in_dir(getattr(args, flag), f"--{flag}")
    if isinstance(getattr(args, "model", None), Path):
        from largemodel.models.folder import inspect_folder  # a model folder is checked whole before any work
        from largemodel.models.load import check_model_folder  # ... and every tensor its configs define

        try:
            if getattr(args, "plan", None) is not None:
                inspect_folder(args.model)  # a plan may be for a device larger than this machine
            else:
                check_model_folder(args.model, device=getattr(args, "device", None), dtype=getattr(args, "dtype", "auto"))
        except ValueError as exc:
            raise ValueError(f"--model {exc}") from None
    if getattr(args, "out", None) is not None:
        args.out = type(args.out)(check_out_dir(args.out))  # with ~ expanded
    if getattr(args, "png", None) is not None:
        check_out_file(args.png, "--png")
