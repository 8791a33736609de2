"""arqon status, arqon version: GET /status and /version from arqond's HTTP port."""

from __future__ import annotations

import argparse

from arqond.cli.common import add_http_arguments, http_get_json, http_url, print_json

ENDPOINTS = {"status": "connections, rooms, channels, messages, uptime and listeners",
             "version": "service, version and protocol"}


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, shows in ENDPOINTS.items():
        parser = subparsers.add_parser(name, help=f"print arqond's {shows} (GET /{name})",
                                       description=f"GET /{name} from the HTTP port and print "
                                       "it as JSON (sorted keys, two-space indent).")
        add_http_arguments(parser)
        parser.set_defaults(func=show, path=f"/{name}")


def show(args: argparse.Namespace) -> int:
    print_json(http_get_json(http_url(args), args.path, args.timeout_seconds))
    return 0
