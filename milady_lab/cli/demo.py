"""``milady-lab demo-data``: write a database of realistic demo trajectories."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, cast

from .. import validation as v
from ..errors import InputError
from ._common import add_json_flag, print_json, settings_from

if TYPE_CHECKING:
    from ..demo import Shape


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo-data",
        help="write demo trajectories (Milady's table) to a SQLite file",
        description="Write realistic, messy elizaOS-style trajectories to a new SQLite "
        "file (replacing it). Same seed, same data.",
    )
    p.add_argument("--db", help="file to write (default: MILADY_LAB_TRAJECTORIES)")
    p.add_argument("--count", help="trajectories to write (default 1000)")
    p.add_argument("--seed", help="random seed (default 0)")
    p.add_argument(
        "--shape",
        help="agent (default: shaped like a real elizaOS 2.x agent's records: its prompt "
        "templates, characters, purposes, TOON replies with some mistakes, rewarded "
        "rollouts) or regular (short, one persona, one markup)",
    )
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="only when no agent's trajectories were found and the home has none: write "
        "<home>/trajectories.sqlite; either way print the home and the trajectory source",
    )
    add_json_flag(p)
    p.set_defaults(handler=_demo_data)


def _demo_data(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..demo import SHAPES, write_demo_db

    count = v.integer(args.count, "count", default=1000, minimum=1, maximum=10_000_000)
    seed = v.integer(args.seed, "seed", default=0, minimum=0, maximum=2**63 - 1)
    shape = cast("Shape", v.choice(args.shape, "shape", SHAPES, default="agent"))
    db = args.db or settings_from(args).trajectories
    if "://" in db:
        raise InputError(f"--db must be a file path, not {db.split('://', 1)[0]}://…")
    assert count is not None and seed is not None
    if args.if_missing:
        return _if_missing(args, count, seed, shape)
    bar = tqdm(total=count, unit="traj", desc="writing", disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    started = time.perf_counter()
    try:
        path = write_demo_db(db, count=count, seed=seed, progress=progress, shape=shape)
    except OSError as exc:
        raise InputError(f"cannot write {db}: {exc.strerror or exc}") from None
    finally:
        bar.close()
    body = {"path": str(path), "count": count, "seed": seed, "shape": shape}
    if args.json:
        print_json(body)
    else:
        took = time.perf_counter() - started
        kind = "agent-shaped " if shape == "agent" else "regular "
        print(f"wrote {count} {kind}trajectories to {path} in {took:.1f} s")
    return 0


def _if_missing(args: argparse.Namespace, count: int, seed: int, shape: Shape) -> int:
    """``make lab``'s step: demo data in the home only where the lab would read nothing,
    then where the lab keeps its state and what it reads (the CLI and notebooks read the same)."""
    from ..demo import write_demo_db

    settings = settings_from(args)
    target = settings.home / "trajectories.sqlite"
    wrote = False
    if settings.trajectories == str(target) and not target.exists():
        try:
            write_demo_db(target, count=count, seed=seed, shape=shape)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        wrote = True
    body = {
        "home": str(settings.home),
        "trajectorySource": settings.trajectories,
        "trajectorySourceFoundBy": settings.trajectories_how,
        "wroteDemoData": wrote,
    }
    if args.json:
        print_json(body)
        return 0
    if wrote:
        kind = "agent-shaped" if shape == "agent" else "regular"
        print(f"no agent found: wrote {count} {kind} demo trajectories to {target}")
    print(f"home:         {settings.home}  (MILADY_LAB_HOME, --home)")
    print(f"trajectories: {settings.trajectories}  ({settings.trajectories_how})")
    return 0
