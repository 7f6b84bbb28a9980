"""The README's "How it fits together" names only things that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _python_sources() -> str:
    files = [
        *ROOT.glob("research_env/**/*.py"),
        *ROOT.glob("algorithms/**/*.py"),
        *ROOT.glob("research_app/**/*.py"),
    ]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_how_it_fits_together_names_real_modules_and_functions():
    section = _section("How it fits together")
    names = re.findall(r"`([^`]+)`", section)
    assert len(names) > 20
    sources = _python_sources()
    py_files = {p.name for p in ROOT.glob("**/*.py") if ".venv" not in p.parts}
    for name in names:
        if name.startswith('"'):
            continue  # a registry key, e.g. "grpo"
        if name.endswith("/") or "/" in name:
            assert (ROOT / name).exists(), name
        elif name.endswith(".py"):
            assert name in py_files, name
        else:
            last = name.split(".")[-1]
            defined = re.search(
                rf"^\s*(def|class) {re.escape(last)}\b|^{re.escape(last)} = ", sources, re.M
            )
            assert defined, name
