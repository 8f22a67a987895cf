"""What every command shares: building the service, printing bodies, exit codes."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

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


def add_command(
    actions: argparse._SubParsersAction,
    name: str,
    help_text: str,
    handler: Handler,
    *,
    id_dest: str | None = None,
) -> argparse.ArgumentParser:
    """An action that takes no options but ``--json`` (and, with ``id_dest``, one ``ID``
    stored under that name) and runs ``handler``."""
    parser = actions.add_parser(name, help=help_text)
    if id_dest is not None:
        parser.add_argument(id_dest, metavar="ID")
    add_json_flag(parser)
    parser.set_defaults(handler=handler)
    return parser


def print_json(body: Any) -> None:
    """``body`` as indented JSON: the REST body, records (``api.schema``) as they encode."""
    json.dump(msgspec.to_builtins(body), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


_WHOLE = re.compile(r"[+-]?\d{1,30}")


def whole_number(text: str | None) -> int | str | None:
    """A flag's text as the integer it spells, for a body field typed as one; any other
    text as it is, so the service's refusal names it (``seed must be an integer, got
    'x'``)."""
    return int(text) if text is not None and _WHOLE.fullmatch(text.strip()) else text


def print_table(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> None:
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


# -- the CLI's own names for the REST fields -----------------------------------------------------
def _camel(dest: str) -> str:
    head, *rest = dest.split("_")
    return head + "".join(part.capitalize() for part in rest)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, tuple[str, bool]]:
    """REST field → (the flag that sets it, whether the flag takes no value), from a
    parser's own options: ``--learning-rate`` (dest ``learning_rate``) sets
    ``learningRate``. The one mapping; nothing lists the flags a second time."""
    out: dict[str, tuple[str, bool]] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in ("help", "json"):
            out[_camel(action.dest)] = (longs[0], action.nargs == 0)
    return out


def attach_flag_names(parser: argparse.ArgumentParser, inherited: dict | None = None) -> None:
    """Give every command (the leaf parsers) the field → flag mapping of its options and
    the global ones, for ``cli_message``."""
    names = {**(inherited or {}), **flag_names(parser)}
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in subparsers:
        for child in set(sub.choices.values()):
            attach_flag_names(child, names)
    if not subparsers:
        parser.set_defaults(flag_names=names)


def cli_message(message: str, names: dict[str, tuple[str, bool]]) -> str:
    """A service message with the REST field names a command line user did not type
    replaced by the flags they did: ``learningRate must be a number`` → ``--learning-rate
    must be a number``, ``pass force=true`` → ``pass --force``. A one-word field is
    replaced only where it is plainly the field (``iterations must …``, ``force=true``,
    ``set model to …``),
    so the word ``model`` in a sentence stays a word."""
    for field, (flag, no_value) in names.items():
        edge = r"(?<![\w\-./])"
        if no_value:
            message = re.sub(rf"{edge}{re.escape(field)}=true\b", flag, message)
        if any(c.isupper() for c in field):
            pattern = rf"{edge}{re.escape(field)}(?![\w\-])"
        else:
            pattern = (
                rf"{edge}{re.escape(field)}(?=(?: must\b| is longer\b|=))"
                rf"|(?<=\bset ){re.escape(field)}(?= to\b)"
            )
        message = re.sub(pattern, flag, message)
    return message


def run_command(args: argparse.Namespace) -> int:
    """Run the handler the subcommand set, turning errors into one line and an exit code.

    Service errors keep their exit codes (2: bad input or unknown id; 1: the rest) and
    speak in flags; a file or database the service did not expect to fail (a home that
    vanished mid-command) is still one line, never a traceback."""
    handler: Handler = args.handler
    names = getattr(args, "flag_names", {})
    try:
        return handler(args)
    except (InputError, NotFoundError) as exc:
        return fail(cli_message(exc.message, names), EXIT_USAGE)
    except MiladyLabError as exc:
        return fail(cli_message(exc.message, names), EXIT_ERROR)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
    except sqlite3.DatabaseError as exc:
        return fail(f"the state database cannot be used: {exc}", EXIT_ERROR)
