"""House rules that a reader cannot see in one file: function length, import direction."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def _functions(path: Path) -> list[tuple[str, int]]:
    """``(qualified name, length in lines)`` of every function and method in ``path``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                out.append((name, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return out


def _lengths() -> dict[str, int]:
    found = {}
    for folder in ("milady_lab", "jupyter_server_ext"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, length in _functions(path):
                found[f"{rel}::{name}"] = length
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    lengths = _lengths()
    too_long = {
        f"{where} is {n} lines (at most {MAX_LINES}): split it"
        for where, n in lengths.items()
        if n > MAX_LINES
    }
    assert not too_long, "\n".join(sorted(too_long))


def _imports(path: Path) -> set[str]:
    """Absolute names of the milady_lab modules ``path`` imports (relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def test_trajectories_do_not_import_demo() -> None:
    for path in sorted((ROOT / "milady_lab" / "trajectories").glob("*.py")):
        assert "milady_lab.demo" not in _imports(path), f"{path.name} imports milady_lab.demo"


def test_the_worker_does_not_import_the_job_manager() -> None:
    imported = _imports(ROOT / "milady_lab" / "training" / "worker.py")
    assert "milady_lab.training.jobs" not in imported, "worker.py imports training.jobs"
