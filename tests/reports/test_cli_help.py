"""``pfode --help`` and the sub-commands' help: fast (no torch, scipy or sympy imported before
parsing), every flag described, and the README's example error message the real one."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reports.cli import GROUPS, build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"
HEAVY = ("torch", "scipy", "sympy")

#: the help commands that must import none of HEAVY
LIGHT_HELP = [
    [], ["theory"], ["theory", "bound"], ["theory", "curves"], ["simulate"], ["report"], ["largemodel"],
    ["largemodel", "study"], ["largemodel", "gallery"], ["largemodel", "train"], ["largemodel", "rank"],
    ["largemodel", "explain"],
]


def heavy_imports(code: str) -> set[str]:
    """The top-level packages of HEAVY that running ``code`` in a fresh interpreter imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=300)
    names = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return names & set(HEAVY)


def test_the_import_check_sees_torch() -> None:
    """Control: the check finds torch where it is imported."""
    assert heavy_imports("import simulate; simulate.BoxMixture") >= {"torch"}


def test_help_imports_no_torch_scipy_sympy() -> None:
    """One interpreter per command would take minutes under load; the parser is built exactly as
    ``main`` builds it for each command, all in one fresh interpreter."""
    code = ("from reports.cli import build_parser\n"
            f"for words in {LIGHT_HELP!r}:\n"
            "    build_parser(words + ['--help'])\n")
    assert heavy_imports(code) == set()


def test_help_exits_0(capsys) -> None:
    for words in LIGHT_HELP:
        with pytest.raises(SystemExit) as exc:
            main([*words, "--help"])
        assert exc.value.code == 0
        assert "usage: pfode" in capsys.readouterr().out


def _parsers(parser: argparse.ArgumentParser, prog: str = "pfode"):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def undescribed_flags(parser: argparse.ArgumentParser) -> list[str]:
    """``"pfode theory curves --m"`` for every flag whose help says nothing but its default."""
    bad = []
    for prog, p in _parsers(parser):
        for action in p._actions:
            text = re.sub(r"\(default[^)]*\)", "", action.help or "").strip()
            if action.option_strings and action.help != argparse.SUPPRESS and len(text) < 3:
                bad.append(f"{prog} {action.option_strings[-1]}")
    return bad


def test_every_flag_is_described() -> None:
    control = argparse.ArgumentParser()
    control.add_argument("--m", type=int, default=3, help="(default %(default)s)")
    assert undescribed_flags(control) == ["pfode --m"]
    assert undescribed_flags(build_parser()) == []


def test_listed_help_is_the_registered_help() -> None:
    """The one-line help ``pfode --help`` shows without building a group is the group's own."""

    def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {c.dest: c.help for c in action._choices_actions}

    assert helps(build_parser()) == {name: text for name, (_, text) in GROUPS.items()}


def test_lazy_handler_runs_the_named_function() -> None:
    """The command's module is imported when the command runs, and its function gets the arguments."""
    from largemodel.diagnose.args import lazy_handler

    assert lazy_handler("os.path", "basename")("a/b.png") == "b.png"
    with pytest.raises(AttributeError):
        lazy_handler("os.path", "no_such_function")("x")


def test_readme_error_example_is_the_real_message(capsys) -> None:
    match = re.search(r"`(pfode [^`]+)` prints\s+`(pfode: error: [^`]+)`", README.read_text())
    assert match, "README.md states no example error message"
    assert main(match.group(1).split()[1:]) == 2
    assert capsys.readouterr().err.strip() == match.group(2)
