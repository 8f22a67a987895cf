"""The tutorials' folder as the lab's file browser shows it: the notebooks and nothing else.

Their set-up (``nbval_setup.py``), output refresher and sanitizer live here, in tests/;
``make test`` also checks that running them leaves ``git status`` as it was.
"""

from __future__ import annotations

import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_the_notebook_folder_holds_only_the_numbered_tutorials() -> None:
    names = sorted(p.name for p in NOTEBOOKS.iterdir() if p.name != ".ipynb_checkpoints")
    assert names and all(re.fullmatch(r"\d\d-[a-z0-9-]+\.ipynb", n) for n in names), names
