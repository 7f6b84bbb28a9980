"""The ``research-env`` command line.

Subcommands are plugins: each is a module with ``register(subparsers)`` named in the
``research_env.commands`` entry-point group of ``pyproject.toml``. That keeps this
package free of torch while commands living in ``algorithms`` (train, eval with an LLM,
demo) still appear under the one ``research-env`` command. A ``register`` function only
adds arguments; heavy imports happen inside the command's handler.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

GROUP = "research_env.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="research-env",
        description="ReSearch-Gym: environments and RL for LLMs that reason with search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
