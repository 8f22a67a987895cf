"""``milady-lab jobs``: filled in by its owner."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Placeholder until the jobs commands land."""
