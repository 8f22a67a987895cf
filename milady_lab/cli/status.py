"""``milady-lab status``."""

from __future__ import annotations

import argparse

from ._common import add_json_flag, print_json, service_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="training service status")
    add_json_flag(p)
    p.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    body = service_from(args).status()
    if args.json:
        print_json(body)
    else:
        for key, value in body.items():
            print(f"{key}: {value}")
    return 0
