"""``milady-lab datasets list|build``."""

from __future__ import annotations

import argparse
import sys

from ._common import add_json_flag, print_json, print_table, service_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="build and list training datasets")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = dsub.add_parser("list", help="list built datasets")
    add_json_flag(ls)
    ls.set_defaults(handler=_list)
    build = dsub.add_parser("build", help="build a dataset from the trajectories")
    build.add_argument("--limit", help="at most this many qualifying trajectories")
    build.add_argument("--min-llm-calls", help="usable LLM calls a trajectory needs (default 1)")
    add_json_flag(build)
    build.set_defaults(handler=_build)


def _list(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).list_datasets()
    if args.json:
        print_json(body)
    else:
        print_table(
            body["datasets"],
            ["id", "createdAt", "trajectoryCount", "exampleCount", "trainCount", "validCount"],
        )
    return 0


def _build(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    service = service_from(args, reconcile=False)
    request = {}
    if args.limit is not None:
        request["limit"] = args.limit
    if args.min_llm_calls is not None:
        request["minLlmCallsPerTrajectory"] = args.min_llm_calls
    bar = tqdm(total=0, unit="traj", desc="building", disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        body = service.build_dataset(request, progress=progress)
    finally:
        bar.close()
    if args.json:
        print_json(body)
    else:
        ds = body["dataset"]
        print(
            f"built {ds['id']}: {ds['trajectoryCount']} trajectories, "
            f"{ds['exampleCount']} examples ({ds['trainCount']} train, {ds['validCount']} valid)"
        )
        print(ds["path"])
    return 0
