"""``research-env mcp``: the retriever as an MCP tool server (stdio or HTTP)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Serve a retriever over a FlashRAG corpus as a Model Context Protocol (MCP) server with
one tool, search(query, top_k), which answers with the top documents as
'Doc i (Title: ...) text' lines. Any MCP client can search the corpus: an agent
framework, an IDE, or this library's env (research_env.mcp_tools.McpToolbox).

  --transport stdio   the client starts this command and speaks over stdin/stdout
  --transport http    streamable HTTP at http://HOST:PORT/mcp (127.0.0.1 by default)
"""

EPILOG = """\
examples:
  research-env mcp --corpus synthetic                       # stdio
  research-env mcp --corpus wiki.jsonl --transport http --port 8765
  # then, in Python:
  tools = McpToolbox("http://127.0.0.1:8765/mcp")
  env = gym.make("ReSearch-MultiHop-v0", template=tools.template(), retriever=tools)

Over HTTP the server binds 127.0.0.1 unless --host says otherwise; it has no
authentication.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve a retriever as an MCP tool server (stdio or streamable HTTP)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--retriever", default="bm25", help="bm25 (default), dense, hybrid, empty, random"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        required=True,
        help="corpus jsonl, a dataset directory with a corpus.jsonl, or a dataset name "
        "('synthetic': the embedded world's corpus)",
    )
    parser.add_argument("--index-dir", type=Path, default=None, help="index cache directory")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="http: interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="http: TCP port (default: 8765)")
    parser.add_argument("--top-k", type=int, default=3, help="documents when a call gives no top_k")
    parser.add_argument("--max-top-k", type=int, default=20, help="largest top_k a call may ask")
    parser.add_argument(
        "--max-doc-words", type=int, default=None, help="cut each document to its first N words"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from research_env.commands.serve import build_retriever
    from research_env.mcp_server import mcp_server, run_mcp_server
    from research_env.mcp_tools import require_mcp

    try:
        require_mcp()
    except ImportError as err:
        print(f"research-env mcp: {err}", file=sys.stderr)
        return 2

    settings = argparse.Namespace(
        retriever=args.retriever, corpus=args.corpus, index_dir=args.index_dir,
        model=None, torch_threads=None, index_kind="flat",
    )  # fmt: skip
    # Over stdio, stdout is the protocol's: anything an index build prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        retriever = build_retriever(settings)
        server = mcp_server(
            retriever, default_top_k=args.top_k, max_top_k=args.max_top_k,
            max_doc_words=args.max_doc_words,
        )  # fmt: skip
    run_mcp_server(server, args.transport, args.host, args.port)
    return 0
