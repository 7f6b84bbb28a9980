"""The ``research-env`` command line.

Every built-in subcommand is listed in :data:`COMMANDS` below, the one place to read to
find where a command lives: the env's own (``data``, ``play``, ``serve``, from
:data:`research_env.commands.COMMANDS`), ``train`` (:mod:`research_app.train`) and the
product commands of this package (``eval``, ``demo``, ``ablate``, ``compare``, ``view``).
Each entry is a lazy ``"module:register"`` string (as ``algorithms/registry.py`` names
algorithms). A string is resolved only when it is needed: running ``research-env NAME``
imports NAME's module alone; ``research-env --help`` (or a command line naming no known
command) imports every command's module to list its help line. A
``register(subparsers)`` function only adds arguments; heavy imports (torch,
transformers) happen inside the command's handler, so ``--help`` works, and the
torch-free commands (``data``, ``play``, ``serve``, ``compare``, ``eval`` of scripted
policies) run, without torch installed.

Other packages add commands without touching this file: a ``register`` function named
in the ``research_env.commands`` entry-point group of their ``pyproject.toml``::

    [project.entry-points."research_env.commands"]
    mine = "my_package.cli:register"

A plugin cannot replace a built-in: an entry point with a built-in's name is ignored.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from research_env.commands import COMMANDS as ENV_COMMANDS

COMMANDS: dict[str, str] = {
    **ENV_COMMANDS,
    "train": "research_app.train:register",
    "plan": "research_app.plan:register",
    "eval": "research_app.evaluate:register",
    "demo": "research_app.demo:register",
    "ablate": "research_app.ablate:register",
    "compare": "research_app.compare:register",
    "view": "research_app.view:register",
}
PLUGIN_GROUP = "research_env.commands"


def available_commands() -> dict[str, str]:
    """Name -> ``"module:register"`` of every subcommand: the built-ins, then plugins."""
    found = dict(COMMANDS)
    for ep in entry_points(group=PLUGIN_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def _resolve(target: str) -> Callable[[Any], None]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; when ``argv`` starts with a command name, only that command is loaded."""
    parser = argparse.ArgumentParser(
        prog="research-env",
        description="ReSearch-Gym: environments and RL for LLMs that reason with search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = available_commands()
    named = argv[0] if argv and argv[0] in commands else None
    for name in [named] if named else sorted(commands):
        _resolve(commands[name])(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        # User errors (bad names, files, configs, an unreachable retrieval server) print a
        # message, not a traceback.
        print(f"research-env {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user asked for something that cannot work (imported only
    when one is raised: the HTTP client is not needed to start the CLI)."""
    from research_env.retrievers.http import RetrievalError

    return (ValueError, FileNotFoundError, RetrievalError)


if __name__ == "__main__":
    raise SystemExit(main())
