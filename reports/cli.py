"""The ``pfode`` command line: one sub-command group per package.

Errors are one line on stderr (``pfode: error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """An error to report as one line (exit status 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block and the message)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from largemodel import cli as largemodel_cli
    from reports import report_cli
    from simulate import cli as simulate_cli
    from theory import cli as theory_cli

    parser = _OneLineParser(
        prog="pfode",
        description="Verification and simulation suite for 'Instability in Diffusion ODEs'.",
    )
    groups = parser.add_subparsers(dest="group", metavar="{theory,simulate,largemodel,report}", parser_class=_OneLineParser)
    groups.required = True
    theory_cli.register(groups)
    simulate_cli.register(groups)
    largemodel_cli.register(groups)
    report_cli.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pfode`` console script; returns the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.handler(args) or 0)
    except (CliError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"pfode: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pfode: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal failure: still one line; PFODE_DEBUG=1 shows the traceback
        if os.environ.get("PFODE_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"pfode: error: {type(exc).__name__}: {first} (set PFODE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
