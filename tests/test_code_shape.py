"""House rules that a reader cannot see in one file: function length, import direction,
no import cycles, no reaching into another module's private names."""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80
PRODUCT = ("milady_lab", "jupyter_server_ext")


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


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

    visit(_tree(path), "")
    return out


def _lengths() -> dict[str, int]:
    found = {}
    for folder in PRODUCT:
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


# -- import cycles and private names ---------------------------------------------------------
#
# The rule, exactly:
#
# * Nodes are the modules of ``milady_lab/`` and ``jupyter_server_ext/`` (a package is its
#   ``__init__``). An edge is every import statement written in a module — at module
#   level, inside a function or method, and under ``if TYPE_CHECKING:`` alike: an import
#   inside a function only delays a cycle, it does not remove the dependency.
#   ``from P import x`` is an edge to the module ``P.x`` when that is a module, else to
#   ``P`` (so a submodule taking a name that ``P/__init__`` defines or re-exports depends
#   on ``P``). Python's implicit "run ``P/__init__`` before ``P.x``" is not an edge:
#   counting it would make every package whose ``__init__`` imports a submodule a cycle,
#   though that order is always safe (the package is in ``sys.modules`` before any
#   submodule runs); what breaks is a submodule needing a name from its half-run
#   ``__init__``, and that is an explicit edge. So an ``__init__`` that imports its
#   submodules for re-export is fine as long as none of them imports the package back.
# * Forbidden (a): any strongly connected component of more than one module.
# * Forbidden (b): ``from M import _name`` and ``m._name`` (``m`` bound to module ``M`` by an
#   import) where ``_name`` is not a module: another module's private name. Dunders
#   (``__version__``) are public. Aliasing a public name privately (``import x as _x``)
#   is the importer's business and fine.
# * A module whose own name starts with ``_`` (``widgets/_panel.py``) is private to its
#   package: any module inside that package (siblings, the ``__init__``, subpackages)
#   may import it and its public names; a module outside may not.
# * Only the product's own modules are judged; third-party private APIs are not. Names an
#   import binds are tracked per file, not per scope (a local that shadows a module
#   alias would be judged as the module: rename it).


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def _modules(root: Path = ROOT, folders: tuple[str, ...] = PRODUCT) -> dict[str, Path]:
    """Dotted name → file, for every module under ``root/<folder>``."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _from_base(mods: dict[str, Path], module: str, node: ast.ImportFrom) -> str:
    """The absolute module ``from <base> import ...`` names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    is_package = mods[module].name == "__init__.py"
    parts = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
    return ".".join([*parts, *([node.module] if node.module else [])])


class _Import(NamedTuple):
    line: int
    #: The product module the statement names.
    target: str
    #: ``from target import name``: the name, when it is not itself a module.
    name: str | None
    #: The local name bound to ``target`` as a module, if any.
    local: str | None
    #: False for the top package that ``import a.b.c`` binds without depending on it.
    depends: bool = True


def _imports_of(mods: dict[str, Path], module: str) -> Iterator[_Import]:
    """Every import of a module of ``mods`` written in ``module``, wherever it stands."""
    for node in ast.walk(_tree(mods[module])):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    yield _Import(node.lineno, a.name, None, a.asname)
                    if not a.asname:  # ``import a.b.c`` loads ``a.b.c`` and binds ``a``
                        top = a.name.split(".")[0]
                        yield _Import(node.lineno, top, None, top, depends=top == a.name)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(mods, module, node)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in mods:
                    yield _Import(node.lineno, sub, None, a.asname or a.name)
                elif base in mods:
                    yield _Import(node.lineno, base, None if a.name == "*" else a.name, None)


def _import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module → {imported module: line of one such import}."""
    graph: dict[str, dict[str, int]] = {}
    for module in mods:
        edges = graph.setdefault(module, {})
        for imp in _imports_of(mods, module):
            if imp.depends and imp.target != module:
                edges.setdefault(imp.target, imp.line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _cycle_report(mods: dict[str, Path]) -> list[str]:
    """Each cycle, with the imports that close it."""
    graph = _import_graph(mods)
    report = []
    for component in _cycles(graph):
        inside = set(component)
        edges = [
            f"    {m}:{line} imports {t}"
            for m in component
            for t, line in sorted(graph[m].items())
            if t in inside
        ]
        report.append(f"cycle of {len(component)} modules:\n" + "\n".join(edges))
    return report


def test_no_import_cycles() -> None:
    report = _cycle_report(_modules())
    assert not report, "\n".join(report)


def _reaches_in(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import module ``target``: a private module of a package
    that ``importer`` is not inside of; None when allowed."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        owner = ".".join(parts[:i])
        if _is_private(part) and importer != owner and not importer.startswith(owner + "."):
            return f"{target} is private to {owner}"
    return None


def _private_uses(mods: dict[str, Path], module: str) -> Iterator[str]:
    """Where ``module`` takes another module's private name or a private module that is
    not its package's."""
    bound: dict[str, str] = {}
    for imp in _imports_of(mods, module):
        why = _reaches_in(module, imp.target)
        if why:
            yield f"{module}:{imp.line} imports {imp.target} ({why})"
        if imp.name and _is_private(imp.name) and imp.target != module:
            yield f"{module}:{imp.line} imports {imp.target}.{imp.name}"
        if imp.local:
            bound[imp.local] = imp.target
    for node in ast.walk(_tree(mods[module])):
        if not isinstance(node, ast.Attribute):
            continue
        chain = [node.attr]
        value = node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue
        current = bound[value.id]
        for attr in chain:
            if f"{current}.{attr}" in mods:
                current = f"{current}.{attr}"
                why = _reaches_in(module, current)
                if why:
                    yield f"{module}:{node.lineno} uses {current} ({why})"
            else:
                if _is_private(attr) and current != module:
                    yield f"{module}:{node.lineno} uses {current}.{attr}"
                break


def _private_report(mods: dict[str, Path]) -> list[str]:
    return sorted({use for module in mods for use in _private_uses(mods, module)})


def test_no_module_takes_another_modules_private_names() -> None:
    found = _private_report(_modules())
    assert not found, "\n".join(found)


#: A made-up product that breaks every rule once, and keeps each allowed case once.
_FIXTURE = {
    "app/__init__.py": "from .core import run\nfrom . import loop_b\n",
    "app/core.py": "import app.util\nfrom .util import __all__, helper\n\n"
    "run = helper or app.util._hidden or __all__\n",
    "app/util.py": "__all__ = ['helper']\n_hidden = 1\nhelper = 2\n",
    "app/loop_a.py": "def later() -> None:\n    from . import loop_b\n",
    "app/loop_b.py": "from .loop_a import later\n",
    "app/pkg/__init__.py": "from .mod import VALUE\n",
    "app/pkg/mod.py": "from . import _inner\nfrom .sub import deep\n\nVALUE = _inner.X\n",
    "app/pkg/_inner.py": "X = 1\n",
    "app/pkg/sub/deep.py": "from .. import VALUE\nfrom .._inner import X\n",
    "app/outside.py": "from .pkg import _inner\nfrom .util import _hidden\n",
}


def test_the_import_rules_find_what_they_forbid(tmp_path: Path) -> None:
    for name, text in _FIXTURE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    mods = _modules(tmp_path, ("app",))
    assert _cycle_report(mods) == [
        "cycle of 2 modules:\n"
        "    app.loop_a:2 imports app.loop_b\n    app.loop_b:1 imports app.loop_a",
        "cycle of 3 modules:\n"
        "    app.pkg:1 imports app.pkg.mod\n"
        "    app.pkg.mod:2 imports app.pkg.sub.deep\n"
        "    app.pkg.sub.deep:1 imports app.pkg",
    ]
    assert _private_report(mods) == [
        "app.core:4 uses app.util._hidden",
        "app.outside:1 imports app.pkg._inner (app.pkg._inner is private to app.pkg)",
        "app.outside:2 imports app.util._hidden",
    ]
