"""This library's retriever as an MCP tool server (the official ``mcp`` SDK).

:func:`mcp_server` wraps any retriever in an ``MCPServer`` with one tool, ``search(query,
top_k)``, which answers with the top documents as the env writes them (``Doc i (Title:
...) text``, one per line). ``research-env mcp`` runs it over stdio (for a client
that starts it) or streamable HTTP (``http://127.0.0.1:8765/mcp``); any MCP client, an
agent framework or this library's own :class:`~research_env.mcp_tools.McpToolbox`, can
then search the corpus.
"""

from __future__ import annotations

from typing import Any, Literal

from research_env.mcp_tools import require_mcp
from research_env.retrievers.base import Retriever, as_hits
from research_env.templates import get_template

__all__ = ["mcp_server", "run_mcp_server"]

SEARCH_DESCRIPTION = (
    "Search the document collection. Returns the top_k documents for the query, one per "
    "line, as 'Doc i (Title: ...) text'."
)


def mcp_server(
    retriever: Retriever,
    *,
    name: str = "research-gym",
    default_top_k: int = 3,
    max_top_k: int = 20,
    max_doc_words: int | None = None,
) -> Any:
    """An ``mcp.server.mcpserver.MCPServer`` whose ``search`` tool asks ``retriever``.

    A blank query or a ``top_k`` outside ``[1, max_top_k]`` is a tool error (the caller
    sees why); each document is cut to ``max_doc_words`` words when given."""
    require_mcp()
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    if not 1 <= default_top_k <= max_top_k:
        raise ValueError(
            f"need 1 <= default_top_k <= max_top_k, got {default_top_k} and {max_top_k}"
        )
    documents = get_template("tool-call").documents
    server = MCPServer(name, instructions=SEARCH_DESCRIPTION, log_level="WARNING")

    async def search(query: str, top_k: int = default_top_k) -> str:
        if not query.strip():
            raise ToolError("query must be a non-empty string")
        if not 1 <= top_k <= max_top_k:
            raise ToolError(f"top_k must be between 1 and {max_top_k}, got {top_k}")

        def run() -> str:
            hits = as_hits(retriever.search([query], top_k), retriever)[0]
            return documents(hits, max_doc_words)

        # The retriever blocks; the server keeps answering other calls meanwhile.
        return await anyio.to_thread.run_sync(run)

    server.add_tool(search, name="search", description=SEARCH_DESCRIPTION)
    return server


def run_mcp_server(
    server: Any,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Serve until stopped: over stdin/stdout, or streamable HTTP at
    ``http://host:port/mcp``."""
    if transport == "stdio":
        server.run("stdio")
    elif transport == "http":
        server.run("streamable-http", host=host, port=port)
    else:
        raise ValueError(f"transport must be 'stdio' or 'http', got {transport!r}")
