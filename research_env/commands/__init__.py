"""The env's own ``research-env`` commands: ``data``, ``play``, ``serve`` and ``mcp``.

Each needs neither torch nor anything above this package. The application
(the package that owns the ``research-env`` entry point) lists these among its commands;
:data:`COMMANDS` is what it reads, as lazy ``"module:register"`` strings, so running one
command imports that command's module alone.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "data": "research_env.commands.data:register",
    "play": "research_env.commands.play:register",
    "serve": "research_env.commands.serve:register",
    "mcp": "research_env.commands.mcp_serve:register",
}
