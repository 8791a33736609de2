"""The arqon command line client."""

from arqond.cli.main import main

__all__ = ["main"]
