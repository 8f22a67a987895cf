"""``milady-lab trajectories list|show``."""

from __future__ import annotations

import argparse

from ._common import add_json_flag, cell, print_json, print_table, service_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trajectories", help="browse the agent's trajectories")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = tsub.add_parser("list", help="list trajectories, newest first")
    ls.add_argument("--limit", help="page size, 1-500 (default 100)")
    ls.add_argument("--offset", help="rows to skip (default 0)")
    add_json_flag(ls)
    ls.set_defaults(handler=_list)
    show = tsub.add_parser("show", help="one trajectory with its LLM calls")
    show.add_argument("id")
    add_json_flag(show)
    show.set_defaults(handler=_show)


def _list(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).list_trajectories(args.limit, args.offset)
    if args.json:
        print_json(body)
        return 0
    print_table(
        body["trajectories"],
        ["id", "source", "status", "llmCallCount", "startTime", "durationMs"],
    )
    shown = len(body["trajectories"])
    print(f"{body['offset'] + 1 if shown else 0}-{body['offset'] + shown} of {body['total']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).get_trajectory(args.id)
    if args.json:
        print_json(body)
        return 0
    traj = body["trajectory"]
    for key in ("id", "source", "status", "startTime", "endTime", "llmCallCount"):
        print(f"{key}: {cell(traj.get(key), key)}")
    for call in traj.get("llmCalls", []):
        print(f"\n--- {call.get('stepId')} · {call.get('model')} · {call.get('purpose')}")
        print(f"user: {_fold(call.get('userPrompt'))}")
        print(f"reply: {_fold(call.get('response'))}")
    return 0


def _fold(text: object, width: int = 400) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= width else s[:width] + f"… ({len(s)} chars)"
