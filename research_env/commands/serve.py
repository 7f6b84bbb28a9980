"""``research-env serve``: a retrieval server over a local corpus, for remote rollouts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Serve a BM25 or dense index of a FlashRAG corpus (jsonl, one {"id", "contents"} per
line) over HTTP, in the protocols RL stacks already speak:

  POST /retrieve      Search-R1: {"queries": [...], "topk": 3, "return_scores": true}
                      (also SkyRL's {"query": "..."} and GEM's msgpack body)
  POST /search        FlashRAG/ReSearch: {"query": "...", "top_n": 3, "return_score": true}
  POST /batch_search  FlashRAG/ReSearch: {"query": [...], "top_n": 3, "return_score": true}
  GET  /health        status, corpus size, batching statistics
  GET  /docs          interactive API documentation

Concurrent requests are answered together: their queries are gathered into one
retriever call (micro-batching), which is what makes a single CPU process keep up
with many rollout workers. The index is built on first use and cached in --index-dir.

No client can hold the server's memory or connections: bodies over --max-body-mb are
refused (413) before they are read, a request asking for more than
--max-hits-per-request hits (queries x topk) is refused (413) before it is searched, a
request must arrive whole within --request-timeout seconds (408), an answer its client
does not read is dropped and its connection aborted after --send-timeout seconds, idle
kept-alive connections close after --keep-alive-timeout seconds, and beyond
--max-connections open connections requests get 503.
"""

EPILOG = """\
examples:
  research-env serve --retriever bm25 --corpus wiki.jsonl --port 8000
  research-env serve --corpus synthetic        # the embedded world's corpus
  research-env serve --retriever dense --corpus wiki.jsonl --index-kind hnsw \\
      --index-dir ~/indexes
  # then, in training:
  gym.make("ReSearch-MultiHop-v0", retriever="http://127.0.0.1:8000")
  curl -s localhost:8000/retrieve -H 'content-type: application/json' \\
      -d '{"queries": ["capital of France"], "topk": 3, "return_scores": true}'

The server binds 127.0.0.1 (this machine only) unless --host says otherwise; it has
no authentication, so put it behind your cluster's network rules before --host 0.0.0.0.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a retriever over HTTP (Search-R1 / FlashRAG protocols)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to serve")
    what.add_argument(
        "--retriever",
        default="bm25",
        help="bm25 (default), dense, hybrid, or another registered retriever name",
    )
    what.add_argument(
        "--corpus",
        type=Path,
        required=True,
        help="corpus jsonl (FlashRAG: id + contents), a dataset directory holding a "
        "corpus.jsonl, or a dataset name: 'synthetic' serves the embedded world's corpus",
    )
    what.add_argument(
        "--index-dir",
        type=Path,
        default=None,
        help="where indexes are built and cached (default: ~/.cache/research-gym)",
    )
    what.add_argument(
        "--model",
        default=None,
        help="dense/hybrid: sentence-transformers model (default: bundled all-MiniLM-L6-v2)",
    )
    what.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="dense/hybrid: torch CPU threads for the query encoder (default: torch's "
        "choice; 1 is faster on a CPU shared with other busy processes)",
    )
    what.add_argument(
        "--index-kind",
        choices=("flat", "hnsw", "ivfpq"),
        default="flat",
        help="dense/hybrid: faiss index kind (default: flat, exact)",
    )

    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    net.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    net.add_argument("--access-log", action="store_true", help="log every request")
    net.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="HTTP parser (default: auto = httptools when installed, else h11)",
    )
    net.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default: auto = uvloop when installed, else asyncio)",
    )

    batching = parser.add_argument_group("batching and limits")
    batching.add_argument(
        "--max-batch", type=int, default=256, help="most queries per retriever call (default: 256)"
    )
    batching.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="extra time to gather a batch after its first request (default: 0; batches "
        "still form while the previous one is searched)",
    )
    batching.add_argument(
        "--no-batching",
        action="store_true",
        help="answer each request with its own retriever call (for comparison)",
    )
    batching.add_argument(
        "--default-topk", type=int, default=3, help="topk when a request gives none (default: 3)"
    )
    batching.add_argument(
        "--max-topk", type=int, default=100, help="largest topk accepted (default: 100)"
    )
    batching.add_argument(
        "--max-queries-per-request",
        type=int,
        default=1024,
        help="largest batch one request may send (default: 1024)",
    )
    batching.add_argument(
        "--max-hits-per-request",
        type=int,
        default=25_600,
        help="most hits (queries x topk) one request may ask for; more gets 413. Bounds "
        "an answer's size and memory (default: 25600)",
    )

    conn = parser.add_argument_group("connections (what one slow or hostile client may hold)")
    conn.add_argument(
        "--max-body-mb",
        type=float,
        default=16.0,
        help="largest request body in MiB; a larger Content-Length gets 413 before the body "
        "is read, a chunked body as soon as it grows past it (default: 16)",
    )
    conn.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a whole request from its first byte (a new "
        "connection: from connecting); then 408 and the connection closes. Stops idle and "
        "trickling clients (default: 30)",
    )
    conn.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=5.0,
        help="seconds an idle kept-alive connection stays open between requests (default: 5)",
    )
    conn.add_argument(
        "--send-timeout",
        type=float,
        default=30.0,
        help="seconds an answer may wait for its client to read it (its unsent part above "
        "64 KiB); then the connection is aborted and the answer's memory freed (default: 30)",
    )
    conn.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open connections served at once; requests beyond get 503. Keep it below "
        "`ulimit -n` (default: 1024)",
    )


def build_retriever(args: argparse.Namespace) -> Any:
    """The retriever named by ``--retriever`` over ``--corpus``."""
    from research_env.sources import RETRIEVERS

    # A dataset name or directory becomes its corpus file (index_dir None: the default cache).
    args = argparse.Namespace(**{**vars(args), "corpus": corpus_file(args.corpus, args.index_dir)})
    name = args.retriever
    kwargs: dict[str, Any] = {}
    dense_kwargs = {"model": args.model, "index": args.index_kind}
    if args.torch_threads is not None:
        dense_kwargs["num_threads"] = args.torch_threads
    if name == "dense":
        kwargs = dense_kwargs
    elif name == "hybrid":
        kwargs = {"dense": dense_kwargs}
    factory = RETRIEVERS.get(name)
    if factory is None:
        from research_env.retrievers.dense import dense_factory
        from research_env.retrievers.hybrid import hybrid_factory

        local: dict[str, Any] = {"dense": dense_factory, "hybrid": hybrid_factory}
        factory = local.get(name)
    if factory is None:
        choices = sorted({*RETRIEVERS, "dense", "hybrid"} - {"http"})
        raise ValueError(f"unknown retriever {name!r}; choose one of {choices}")
    from research_env.storage import cache_root

    return factory(args.corpus, cache_dir=cache_root(args.index_dir), **kwargs)


def corpus_file(corpus: Path, cache_dir: Path | None = None) -> Path:
    """The jsonl that ``--corpus`` names: a file, a dataset directory's ``corpus.jsonl``,
    or a named dataset's own corpus (``synthetic``: generated into ``cache_dir``, default
    the research-gym cache, on first use), as every other command and
    ``gym.make(dataset=...)`` resolve it."""
    from research_env import data

    if corpus.is_file():
        return corpus
    if (corpus / "corpus.jsonl").is_file():
        return corpus / "corpus.jsonl"
    name = str(corpus)
    if name in data.DATASETS:
        found = data.corpus_path(name, cache_dir)
        if found is None:
            raise FileNotFoundError(f"dataset {name!r} comes without a corpus to serve")
        return found
    raise FileNotFoundError(
        f"corpus file {corpus} does not exist, and {name!r} is not a dataset name "
        f"({', '.join(sorted(data.DATASETS))}) or a directory with a corpus.jsonl"
    )


def run(args: argparse.Namespace) -> int:
    from research_env.retrievers.server import ServerLimits, serve

    if args.max_batch < 1 or args.max_topk < 1 or not 1 <= args.default_topk <= args.max_topk:
        raise ValueError("need --max-batch >= 1 and 1 <= --default-topk <= --max-topk")
    # Built before the index so that a bad limit fails at once (ServerLimits checks them).
    limits = ServerLimits(
        default_topk=args.default_topk,
        max_topk=args.max_topk,
        max_queries_per_request=args.max_queries_per_request,
        max_hits_per_request=args.max_hits_per_request,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout=args.request_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        send_timeout=args.send_timeout,
        max_connections=args.max_connections,
    )
    print(f"loading {args.retriever} index of {args.corpus} ...", file=sys.stderr, flush=True)
    retriever = build_retriever(args)
    size = len(retriever) if hasattr(retriever, "__len__") else "?"
    mode = "off" if args.no_batching else f"on (max {args.max_batch} queries per call)"
    print(
        f"serving {size} documents at http://{args.host}:{args.port}  "
        f"[POST /retrieve /search /batch_search, GET /health /docs]  batching {mode}",
        file=sys.stderr,
        flush=True,
    )
    serve(
        retriever,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        http=args.http,
        loop=args.loop,
        log_level="info" if args.access_log else "warning",
        batching=not args.no_batching,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        limits=limits,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m research_env.commands.serve`` works before the entry point is installed."""
    parser = argparse.ArgumentParser(
        prog="research-env serve",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"research-env serve: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
