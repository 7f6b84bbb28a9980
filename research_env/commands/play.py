"""``research-env play``: type turns into an episode yourself (or pipe them in)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EPILOG = """\
Each turn is read until a line holding only '.' (or end of input when stdin is not a
terminal, where each line is one turn). Example, scripted:

  printf '%s\\n' 'plan</think><search>Brisa Telk</search>' \\
      '<think>ok</think><answer>\\\\boxed{Ostravel}</answer>' | research-env play --index 0
  research-env play --retriever http://127.0.0.1:8000    # documents from a server
  research-env play --template tool-call   # search with <tool_call>{"name": "search", ...}
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "play",
        help="play an episode by typing turns",
        description="Play ReSearch-MultiHop-v0 by hand: you are the policy.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="synthetic", help="dataset name or path")
    parser.add_argument("--split", default="dev", help="split to draw from (default: dev)")
    parser.add_argument("--index", type=int, default=None, help="question index in the split")
    parser.add_argument("--seed", type=int, default=None, help="seed for a random question")
    # The same flags, with the same meaning, as eval's and train's: passed to the env as
    # its ``retriever`` and ``corpus`` arguments (research_env.sources.resolve_retriever).
    parser.add_argument(
        "--retriever",
        default="bm25",
        help="retriever name (bm25, dense, hybrid, empty, random, ...) or server URL",
    )
    parser.add_argument(
        "--corpus", default=None, help="corpus jsonl for a named retriever (default: the dataset's)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="documents per search")
    parser.add_argument("--max-turns", type=int, default=4, help="turn budget")
    parser.add_argument(
        "--template",
        default="research",
        help="prompt template name (research, search-r1, tool-call, ...; default: research)",
    )
    parser.add_argument("--show-answer", action="store_true", help="print the gold at the end")
    parser.set_defaults(handler=run)


def _read_turn(interactive: bool) -> str | None:
    if not interactive:
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")
    print("\n--- your turn (end with a line '.') ---", flush=True)
    lines: list[str] = []
    for line in sys.stdin:
        if line.rstrip("\n") == ".":
            return "\n".join(lines)
        lines.append(line.rstrip("\n"))
    return "\n".join(lines) if lines else None


def run(args: argparse.Namespace) -> int:
    from research_env.env import MultiHopSearchEnv

    env = MultiHopSearchEnv(
        dataset=args.dataset,
        split=args.split,
        retriever=args.retriever,
        corpus=args.corpus,
        top_k=args.top_k,
        max_turns=args.max_turns,
        template=args.template,
    )
    options = {"index": args.index} if args.index is not None else None
    prompt, _ = env.reset(seed=args.seed, options=options)
    print(prompt, end="", flush=True)
    interactive = sys.stdin.isatty()
    while True:
        turn = _read_turn(interactive)
        if turn is None:
            print("\n(end of input: episode left unfinished)")
            return 1
        obs, reward, terminated, truncated, info = env.step(turn)
        print(obs, end="", flush=True)
        if terminated or truncated:
            break
    print(
        f"\n[{info['termination']}] reward={reward:.3f} em={info['em']:.0f} "
        f"f1={info['f1']:.2f} format_valid={info['format_valid']} searches={info['searches']}"
    )
    if "invalid_reason" in info:
        print(f"invalid ({info['invalid_reason']}): {info['invalid_detail']}")
    if args.show_answer:
        print(f"golden answers: {info['golden_answers']}")
    return 0
