"""Re-record the expected outputs of the tutorials after editing them.

    .venv/bin/python tests/notebooks/refresh_outputs.py [NOTEBOOK ...]

Runs each notebook top to bottom in the same environment the nbval run uses (this
folder's ``nbval_setup.py``: demo data in a throw-away home, a Jupyter server for the REST
tutorial), then keeps only the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` (images
dropped) and clears every other output, so the notebooks are committed clean and nbval
compares exactly what those cells print.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nbval_setup  # noqa: E402  (this folder's nbval set-up)

NOTEBOOKS = nbval_setup.NOTEBOOKS

MARKER = "NBVAL_CHECK_OUTPUT"
KEEP_MIME = ("text/plain",)


def strip(nb: nbformat.NotebookNode) -> None:
    """Outputs only where nbval checks them; no timings or images, stable counts."""
    nb.metadata.pop("widgets", None)
    number = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        number += 1
        if MARKER not in cell.source:
            cell.execution_count = None
            cell.outputs = []
            continue
        # nbval compares only cells that ran in the reference: they need a count.
        cell.execution_count = number
        kept = []
        for out in cell.outputs:
            if "execution_count" in out:
                out.execution_count = number
            if "data" in out:
                out.data = {k: v for k, v in out.data.items() if k in KEEP_MIME}
                if not out.data:
                    continue
            kept.append(out)
        cell.outputs = kept


def main(argv: list[str]) -> int:
    paths = [Path(p).resolve() for p in argv] or sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    nbval_setup.pytest_configure(None)
    try:
        if any(p.name == nbval_setup.REST_NOTEBOOK for p in paths):
            nbval_setup._start_server()
        for path in paths:
            print(f"running {path.name} …", flush=True)
            nb = nbformat.read(path, as_version=4)
            NotebookClient(
                nb,
                timeout=1200,
                kernel_name="python3",
                resources={"metadata": {"path": str(NOTEBOOKS)}},
            ).execute()
            if os.environ.get("NB_EXECUTED_DIR"):  # full copies, to look at the plots
                nbformat.write(nb, Path(os.environ["NB_EXECUTED_DIR"]) / path.name)
            strip(nb)
            nbformat.write(nb, path)
    finally:
        nbval_setup.pytest_unconfigure(None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
