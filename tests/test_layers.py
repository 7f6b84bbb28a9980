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
