"""A loopback MCP server for tests/test_mcp.py, started as a subprocess over stdio:
``echo`` answers, ``slow`` sleeps, ``die`` ends the process mid-call."""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("loopback", log_level="ERROR")


@server.tool()
def echo(text: str, times: int = 1) -> str:
    """Repeat text."""
    return text * times


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after a while."""
    await anyio.sleep(seconds)
    return "done"


@server.tool()
def die() -> str:
    """Exit the server process at once."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
