"""The CLI error contract (issue 12): every error is one line on stderr, exit status 2, no traceback,
checked before any computing; one seed rule; flags named, not internal variables; no warnings.

Each case failed on the code before the contract (exit 1, several lines, a value accepted, or work
done before the check); all run in-process through ``reports.cli.main`` and finish in seconds.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import pytest

from reports import cli_checks
from reports.cli import build_parser, main
from reports.cli_checks import SEED_MAX, unruled_numeric_flags


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pfode: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch):
    """Fail the test if an experiment, a training run or a report starts: checks come first."""

    def boom(*_a, **_k):
        raise AssertionError("work started before the arguments were checked")

    import largemodel.training.train as train
    import reports.report as report
    import simulate.experiments as experiments

    monkeypatch.setattr(experiments, "load", boom)
    monkeypatch.setattr(train, "train_model", boom)
    monkeypatch.setattr(train, "cached_model", boom)
    monkeypatch.setattr(report, "run_report", boom)
    return boom


# ---- one seed rule ---------------------------------------------------------------------------
SEED_COMMANDS = [
    ["simulate", "lemma-d1"],
    ["largemodel", "study", "--model", "m", "--images", "i", "--out", "o"],
    ["largemodel", "gallery", "--model", "m", "--images", "i", "--out", "o"],
    ["largemodel", "train"],
]


@pytest.mark.parametrize("command", SEED_COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("seed", ["-1", str(SEED_MAX + 1), "1.5", "x"])
def test_one_seed_rule_for_every_command(command: list[str], seed: str, capsys, no_work) -> None:
    line = _one_line_error(capsys, [*command, "--seed", seed])
    assert f"--seed must be an integer in [0, {SEED_MAX}], got {seed}" in line


def test_largest_seed_is_accepted_by_the_parser() -> None:
    args = build_parser().parse_args(["simulate", "lemma-d1", "--seed", str(SEED_MAX)])
    assert args.seed == SEED_MAX


# ---- every number has bounds, named by its flag ----------------------------------------------
def test_every_numeric_flag_has_a_rule() -> None:
    assert unruled_numeric_flags(build_parser()) == []


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["largemodel", "study", "--model", "m", "--images", "i", "--out", "o", "--eps-rms", "1e30"], "--eps-rms"),
        (["largemodel", "study", "--model", "m", "--images", "i", "--out", "o", "--guidance", "nan"], "--guidance"),
        (["largemodel", "study", "--model", "m", "--images", "i", "--out", "o", "--steps", "10000000"], "--steps"),
        (["largemodel", "study", "--model", "m", "--images", "i", "--out", "o", "--jvp-directions", "-1"],
         "--jvp-directions"),
        (["largemodel", "gallery", "--model", "m", "--images", "i", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["largemodel", "train", "--quality-samples", "-1"], "--quality-samples"),
        (["largemodel", "train", "--num-layers", "100000"], "--num-layers"),
        (["largemodel", "train", "--lr", "inf"], "--lr"),
        (["largemodel", "train", "--threads", str((os.cpu_count() or 1) + 1)], "--threads"),
        (["report", "--threads", "-3"], "--threads"),
        (["theory", "curves", "--num", "1000000000"], "--num"),  # was a MemoryError / a hang
        (["theory", "bound", "--n", "1000000000000000"], "--n"),  # was a MemoryError (exit 1)
        (["theory", "bound", "--n", "5", "--sigma", "inf"], "--sigma"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(argv: list[str], flag: str, capsys, no_work) -> None:
    line = _one_line_error(capsys, argv, f"{flag} must be")
    assert line.count("must be") == 1


def test_theory_errors_name_flags_not_internal_variables(capsys) -> None:
    line = _one_line_error(capsys, ["theory", "bound", "--n", "5", "--sigma", "1e300", "--tau", "1e302"], "--sigma")
    assert not line.startswith("pfode: error: r must")


def test_numpy_warnings_never_reach_stderr(capsys) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["theory", "bound", "--n", "5", "--sigma", "1e200", "--json"]) == 0
    assert capsys.readouterr().err == "" and seen == []


# ---- paths and devices, checked before work --------------------------------------------------
def test_out_that_is_a_file_fails_before_computing(tmp_path: Path, capsys, no_work) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("mine")
    _one_line_error(capsys, ["simulate", "fig3", "--out", str(afile)], "--out", "not a folder")
    _one_line_error(capsys, ["simulate", "fig3", "--out", str(afile / "below")], "--out", "not a folder")
    _one_line_error(capsys, ["theory", "curves", "--out", os.devnull], "--out", "not a folder")
    assert afile.read_text() == "mine"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path: Path, capsys, no_work) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line_error(capsys, ["simulate", "fig3", "--out", str(ro / "x")], "--out", "not writable")
    finally:
        ro.chmod(0o700)


def test_full_disk_is_refused_up_front(tmp_path: Path, capsys, monkeypatch, no_work) -> None:
    import shutil

    monkeypatch.setattr(cli_checks.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    _one_line_error(capsys, ["simulate", "fig3", "--out", str(tmp_path / "x")], "--out", "no space left")


@pytest.mark.parametrize("device, needle", [("bogus", "must be cpu, cuda"), ("meta", "must be cpu, cuda"),
                                            ("cuda:99", "cuda:99")])
def test_bad_devices_are_refused_before_loading(tmp_path: Path, device: str, needle: str, capsys) -> None:
    if device == "cuda:99":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 99:  # pragma: no cover
            pytest.skip("a machine with 100 GPUs")
    argv = ["largemodel", "study", "--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
            "--device", device]
    _one_line_error(capsys, argv, "--device", needle)
    assert not (tmp_path / "o").exists()


def test_cuda_without_cuda_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["largemodel", "gallery", "--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
            "--device", "cuda"]
    _one_line_error(capsys, argv, "--device cuda", "no CUDA device")


def test_report_checks_the_model_before_training(tmp_path: Path, capsys, no_work) -> None:
    _one_line_error(capsys, ["report", "--suites", "largemodel", "--out", str(tmp_path / "r"),
                             "--model", str(tmp_path / "missing"), "--images", str(tmp_path)], "--model", "does not exist")
    _one_line_error(capsys, ["report", "--suites", "largemodel", "--out", str(tmp_path / "r"),
                             "--model", str(tmp_path), "--images", str(tmp_path)], "--model")
    _one_line_error(capsys, ["report", "--suites", "theory,nope", "--out", str(tmp_path / "r")], "--suites")


# ---- errors at run time still keep the contract ----------------------------------------------
@pytest.mark.parametrize(
    "exc, needle",
    [
        (OSError(28, "No space left on device"), "No space left on device"),
        (PermissionError(13, "Permission denied"), "Permission denied"),
        (MemoryError("Unable to allocate 93.1 TiB"), "out of memory"),
        (type("SafetensorError", (Exception,), {})("Error while deserializing header: HeaderTooLarge"),
         "unreadable safetensors file"),
    ],
    ids=["oserror", "permission", "memory", "safetensors"],
)
def test_runtime_errors_of_the_machine_exit_2(tmp_path: Path, exc: BaseException, needle: str, capsys,
                                              monkeypatch) -> None:
    import theory.highdim.curves  # the handler imports write_theory_curves from here when it runs

    def fail(*_a, **_k):
        raise exc

    monkeypatch.setattr(theory.highdim.curves, "write_theory_curves", fail)
    _one_line_error(capsys, ["theory", "curves", "--out", str(tmp_path / "c")], needle)


def test_internal_failures_stay_exit_1_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import theory.highdim.curves

    def fail(*_a, **_k):
        raise KeyError("bug")

    monkeypatch.setattr(theory.highdim.curves, "write_theory_curves", fail)
    assert main(["theory", "curves", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "PFODE_DEBUG" in err


def test_rules_are_argparse_types() -> None:
    rule = cli_checks.bounded_float(0, 1, lo_open=True)
    assert rule("0.5") == 0.5
    for bad in ("0", "nan", "-inf", "1.0000001", "abc", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a finite number in \(0, 1\]"):
            rule(bad)
    assert cli_checks.bounded_int(0, 3)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[0, 3\], got 4"):
        cli_checks.bounded_int(0, 3)("4")


@pytest.mark.parametrize("message, expected", [
    ("patch_size=3 must divide size=8", "--patch-size 3 must divide size=8"),
    ("steps must be an integer >= 1, got 0", "--steps must be an integer >= 1, got 0"),
    ("data_seed must be an integer >= 0, got -1", "--data-seed must be an integer >= 0, got -1"),
])
def test_library_messages_are_restated_with_the_flag(tmp_path: Path, message: str, expected: str, capsys,
                                                     monkeypatch) -> None:
    import largemodel.training.train as train

    def fail(*_a, **_k):
        raise ValueError(message)

    monkeypatch.setattr(train, "train_model", fail)
    _one_line_error(capsys, ["largemodel", "train", "--out", str(tmp_path / "m")], expected)
