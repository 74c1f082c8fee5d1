"""The ``pfode`` command line: one sub-command group per package.

Errors are one line on stderr (``pfode: error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from typing import Sequence

from reports.cli_checks import check_args, install_rules

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """An error to report as one line (exit status 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block and the message)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # a flag's rule (reports.cli_checks) says "must be ...": print "--flag must be ..."
        match = re.fullmatch(r"argument (\S+): (must .*)", message.splitlines()[0] if message else "")
        if match:
            message = f"{match.group(1).split('/')[-1]} {match.group(2)}"
        raise CliError(f"{message} (see {self.prog} --help)")


#: each sub-command group: the module whose ``register`` builds it, and its one-line help
#: (``pfode --help`` lists the groups from this table without importing them)
GROUPS: dict[str, tuple[str, str]] = {
    "theory": ("theory.cli", "the paper's bounds (Theorem 4.3) in log space"),
    "simulate": ("simulate.cli", "simulator experiments checking each claim of the paper"),
    "largemodel": ("largemodel.cli", "the study on real diffusion models (SD3, SD3.5, FLUX) or models trained here"),
    "report": ("reports.report_cli", "run the suites and write report.md + results.json"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``pfode`` parser. With ``argv``, only the group ``argv`` names is built in full (its
    module imported); the other groups are listed by name and help only, so that ``pfode --help``
    and ``pfode <group> ... --help`` import no torch, scipy or sympy. Without ``argv``, every group
    is built (tests, the CLI fuzzer)."""
    import importlib

    parser = _OneLineParser(
        prog="pfode",
        description="Verification and simulation suite for 'Instability in Diffusion ODEs'.",
    )
    groups = parser.add_subparsers(dest="group", metavar="{theory,simulate,largemodel,report}", parser_class=_OneLineParser)
    groups.required = True
    wanted = set(GROUPS) if argv is None else {a for a in list(argv)[:1] if a in GROUPS}
    for name, (module, help_text) in GROUPS.items():
        if name in wanted:
            importlib.import_module(module).register(groups, argv=None if argv is None else list(argv)[1:])
        else:
            groups.add_parser(name, help=help_text)
    install_rules(parser)
    return parser


def _user_error(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input or machine, else ``None``.

    Bad values, unreadable or unwritable files (``OSError``: full or read-only disk, a path that
    is a file), sizes too large for memory, unreadable weight files (safetensors).
    """
    first = str(exc).splitlines()[0].strip() if str(exc).strip() else ""
    if isinstance(exc, (CliError, ValueError)):
        return first or type(exc).__name__
    if isinstance(exc, OSError):
        return first or f"{type(exc).__name__} (input/output error)"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory ({first or type(exc).__name__}); use smaller sizes"
    if type(exc).__name__ == "SafetensorError":
        return f"unreadable safetensors file: {first}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pfode`` console script; returns the exit status.

    The error contract: a bad argument, file or machine gives one line on stderr and exit status 2,
    checked before any computing where it can be (``reports.cli_checks``); an internal failure gives
    one line and exit status 1 (``PFODE_DEBUG=1`` shows the traceback). Warnings (numpy's
    RuntimeWarnings, libraries' deprecations) are silenced: results carry their own checks.
    """
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings():
        if not os.environ.get("PFODE_DEBUG"):
            warnings.simplefilter("ignore")
        return _main(argv)


def _flags_by_name(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{"patch_size": "--patch-size", ...}`` for every flag of every sub-command whose name is its
    parameter's name (the library's messages start with that name)."""
    names: dict[str, str] = {}
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.option_strings[-1] == "--" + action.dest.replace("_", "-"):
                names[action.dest] = action.option_strings[-1]
    return names


def _name_the_flag(message: str, names: dict[str, str]) -> str:
    """A library message that starts with a parameter's name (``steps must be ...``,
    ``patch_size=3 must divide ...``, ``suites: ...``) restated with the user's flag."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(=|:? )", message)
    if not match or match.group(1) not in names:
        return message
    sep = " " if match.group(2) == "=" else match.group(2)
    return names[match.group(1)] + sep + message[match.end():]


def _main(argv: Sequence[str] | None) -> int:
    parser = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        check_args(args)
        return int(args.handler(args) or 0)
    except ValueError as exc:
        message = _user_error(exc) or ""
        if parser is not None:
            message = _name_the_flag(message, _flags_by_name(parser))
        print(f"pfode: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pfode: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout piped into `head` (or closed): stop quietly, as a filter does
        with open(os.devnull, "w") as devnull:  # the interpreter's final flush would raise again
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 141
    except Exception as exc:
        message = _user_error(exc)
        if message is not None:
            print(f"pfode: error: {message}", file=sys.stderr)
            return 2
        if os.environ.get("PFODE_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"pfode: error: {type(exc).__name__}: {first} (set PFODE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
