"""arqon: the command line client of arqond.

Plugin contract: each module listed in PARTS exposes ``register(subparsers)``, which adds its
subcommands with ``subparsers.add_parser(...)`` and sets ``func=callable(args) -> int`` on each
(``parser.set_defaults(func=...)``). A subcommand fails by raising ``common.CliError``.
"""

from __future__ import annotations

import argparse
import os
import sys

from arqond import __version__
from arqond.cli import bus, moo, narrative, status
from arqond.cli.common import CliError, fail

PARTS = (status, bus, moo, narrative)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arqon", description="Talk to arqond: its status, the bus, Zgents and narratives.")
    parser.add_argument("--version", action="version", version=f"arqon {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    for part in PARTS:
        part.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`arqon tail --follow | head`): not an error worth a word.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
