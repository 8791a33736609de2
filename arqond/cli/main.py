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
from arqond.cli import bus, call, completion, mcp, moo, narrative, pane, serve, status
from arqond.cli.common import CliError, add_config_argument, fail

PARTS = (status, bus, moo, call, pane, serve, narrative, mcp, completion)


def leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser of a subcommand that runs something (``zgent register``, not ``zgent``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                has_children = any(isinstance(a, argparse._SubParsersAction)
                                   for a in sub._actions)
                yield from leaf_parsers(sub) if has_children else (sub,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arqon", description="Talk to arqond: its status, the bus, Zgents and narratives.")
    parser.add_argument("--version", action="version", version=f"arqon {__version__}")
    add_config_argument(parser)
    subparsers = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    for part in PARTS:
        part.register(subparsers)
    # --config is taken before or after the subcommand; after it, only when given, so that
    # the subcommand's default never hides `arqon --config FILE SUBCOMMAND`.
    for leaf in leaf_parsers(parser):
        add_config_argument(leaf, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        return fail(str(exc), exc.status)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`arqon tail --follow | head`): not an error worth a word.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
