"""What every command shares: building the service, printing bodies, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..errors import InputError, MiladyLabError, NotFoundError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        home=args.home,
        trajectories=args.trajectories,
        agent_config=args.agent_config,
        cache=args.cache,
    )


def service_from(args: argparse.Namespace, *, reconcile: bool = True):
    from ..service import TrainingService

    return TrainingService(settings_from(args), reconcile=reconcile)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the REST body as JSON")


def print_json(body: Any) -> None:
    json.dump(body, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table; empty cells for missing values."""
    if not rows:
        print("(none)")
        return
    cells = [[cell(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


#: Fields holding ms since epoch besides the ``…At`` ones.
_TIME_FIELDS = ("startTime", "endTime", "timestamp")
#: 9999-12-31T23:59:59.999Z, the last instant ``datetime`` can show; larger stays a number.
_LAST_MS = 253_402_300_799_999


def cell(value: Any, key: str = "") -> str:
    """A value as a person reads it: timestamps in UTC, floats short (``--json`` keeps
    the raw values)."""
    if value is None:
        return ""
    is_time = key.endswith("At") or key in _TIME_FIELDS
    if is_time and type(value) is int and 0 <= value <= _LAST_MS:
        stamp = datetime.fromtimestamp(value / 1000, UTC)
        return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"milady-lab: {message}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    """Run the handler the subcommand set, turning errors into one line and an exit code."""
    handler: Handler = args.handler
    try:
        return handler(args)
    except (InputError, NotFoundError) as exc:
        return fail(exc.message, EXIT_USAGE)
    except MiladyLabError as exc:
        return fail(exc.message, EXIT_ERROR)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
