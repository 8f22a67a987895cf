"""``milady-lab``: the command line, mirroring the REST routes.

Each command group lives in its own module and registers itself through
``register(subparsers)``. With ``--json`` a command prints exactly the body the
matching REST route answers with. Exit codes: 0 success, 2 bad input or unknown id
(one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import auto, datasets, demo, jobs, models, status, trajectories
from ._common import attach_flag_names, run_command

GROUPS = (status, trajectories, datasets, jobs, models, auto, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="milady-lab",
        description="Turn an agent's trajectories into datasets, LoRA adapters and better models.",
    )
    parser.add_argument("--home", help="state folder (MILADY_LAB_HOME)")
    parser.add_argument("--trajectories", help="trajectory source (MILADY_LAB_TRAJECTORIES)")
    parser.add_argument("--agent-config", help="agent config file (MILADY_LAB_AGENT_CONFIG)")
    parser.add_argument("--cache", help="converted base models (MILADY_LAB_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    attach_flag_names(parser)  # errors speak in flags (``--learning-rate``), not REST fields
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
