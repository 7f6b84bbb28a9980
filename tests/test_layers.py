"""The floors: ``research_env`` below ``algorithms`` below ``research_app``, with
``benchmarks`` beside the app. No module imports a package above its own floor, by an
import statement or by a ``"module:attr"`` / ``"module.name"`` string."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABOVE = {
    "research_env": ("algorithms", "research_app", "benchmarks"),
    "algorithms": ("research_app", "benchmarks"),
    "research_app": ("benchmarks",),
}


def _imports_and_strings(path: Path) -> tuple[set[str], list[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    strings: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    return imported, strings


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_module_imports_a_floor_above_its_own(package):
    upper = ABOVE[package]
    # A module path in code: "pkg.mod:attr" or "pkg.mod" (a file path such as
    # "benchmarks/RESULTS.md" is data, not an import).
    module_string = re.compile(rf"^({'|'.join(upper)})((\.[a-z_]+)+(:[A-Za-z_]+)?|:[A-Za-z_]+)$")
    for path in sorted((ROOT / package).rglob("*.py")):
        imported, strings = _imports_and_strings(path)
        for name in imported:
            assert name.split(".")[0] not in upper, f"{path}: imports {name}"
        for text in strings:
            assert not module_string.match(text), f"{path}: names {text!r}"


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside ``if TYPE_CHECKING:`` blocks (lazy ones included)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at run time. ``from pkg import mod``
    counts as importing ``pkg.mod`` (not ``pkg``'s ``__init__``)."""
    modules: dict[str, Path] = {}
    for package in ABOVE:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.module and not node.level:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):
                    targets.append(node.module)
            else:
                targets = []
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle_of_more_than_two_modules():
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def strongly_connected(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongly_connected(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 2:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongly_connected(v)
    assert circles == []
