"""``milady-lab datasets list|preview|build``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from ..api.schema import BuildDatasetRequest, JsonObject
from ._common import add_command, add_json_flag, print_json, print_table, service_from
from ._flags import add_body_flags, body_from

#: Build filters that may be given several times (any of the values).
_REPEATED = ("source", "status", "purpose", "model", "scenario_id", "batch_id")
#: Flags shorter than their field.
_RENAMED = {"min_llm_calls_per_trajectory": "min_llm_calls"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="build and list training datasets")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(dsub, "list", "list built datasets", _list)
    preview = dsub.add_parser("preview", help="count what a build would give; writes nothing")
    build = dsub.add_parser("build", help="build a dataset from the trajectories")
    for parser, handler in ((preview, _preview), (build, _build)):
        add_body_flags(
            parser,
            BuildDatasetRequest,
            skip=("include_archived", "privacy"),
            renamed=_RENAMED,
            repeated=_REPEATED,
        )
        parser.add_argument(
            "--no-redact",
            dest="redact",
            action="store_false",
            help="keep secrets and contacts as recorded (redaction is on by default)",
        )
        parser.add_argument(
            "--anonymize-handles",
            action="store_true",
            help="replace the handles of the people the agent talks to with pseudonyms",
        )
        parser.add_argument(
            "--no-archived",
            dest="include_archived",
            action="store_false",
            help="leave out trajectories the agent archived (older than 30 days)",
        )
        add_json_flag(parser)
        parser.set_defaults(handler=handler)


def _request(args: argparse.Namespace) -> JsonObject:
    """The build body the flags describe (the service checks every value)."""
    request = body_from(args, BuildDatasetRequest)
    if not args.include_archived:
        request["includeArchived"] = False
    request["privacy"] = {"redact": args.redact, "anonymizeHandles": args.anonymize_handles}
    return request


def _redactions(counts: dict[str, int]) -> str:
    """``redacted: 3 email, 1 openai_key`` (or that nothing was)."""
    if not counts:
        return "redacted: nothing"
    return "redacted: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())


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


def _preview(args: argparse.Namespace) -> int:
    request = _request(args)
    body = service_from(args, reconcile=False).preview_dataset(request)
    if args.json:
        print_json(body)
    else:
        print(f"{body['trajectoryCount']} trajectories → {body['exampleCount']} examples")
        if request["privacy"]["redact"]:
            print(_redactions(body.get("redactions", {})))
    return 0


def _build(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    service = service_from(args, reconcile=False)
    request = _request(args)
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
        if ds.get("heldOutFrom") is not None:
            since = datetime.fromtimestamp(ds["heldOutFrom"] / 1000, UTC)
            print(f"valid: the trajectories started from {since:%Y-%m-%d %H:%M:%S} UTC on")
        if ds.get("pairCount") is not None:
            print(f"{ds['pairCount']} preference pairs")
        if ds.get("labelCounts"):
            print("labels: " + ", ".join(f"{n} {rule}" for rule, n in ds["labelCounts"].items()))
        if request["privacy"]["redact"]:
            print(_redactions(ds.get("redactions") or {}))
        if ds.get("skippedRows"):
            print(f"skipped {ds['skippedRows']} unreadable rows of the source", file=sys.stderr)
        for warning in ds.get("warnings") or ():
            print(f"warning: {warning}", file=sys.stderr)
        print(ds["path"])
    return 0
