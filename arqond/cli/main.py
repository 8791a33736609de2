"""arqon: placeholder entry point, filled in by the CLI work (issue 3)."""

import sys

from arqond import __version__


def main(argv: list[str] | None = None) -> int:
    print(f"arqon {__version__}: no subcommands yet", file=sys.stderr)
    return 1
