"""Time one ``env.step`` on hostile policy turns at several sizes, to show it stays linear.

A policy can emit anything, including text built to make a parser backtrack. Each case
repeats a unit (an unclosed tag, a box, a brace pair, ...) up to a size in bytes and times
the protocol's work on it (``parse_turn`` and ``is_valid_format``) and one whole
``env.step`` (which also scores the extracted answer). Linear parsing shows as a time that doubles, not quadruples, when the
size doubles (the ``x prev`` column). The retriever is a stub, so only the env's own work
is measured.

    python -m benchmarks.hostile_inputs [--sizes 128000,256000,512000,1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from research_env.data.types import Document, QASample
from research_env.env import MultiHopSearchEnv
from research_env.protocol import is_valid_format, parse_turn
from research_env.retrievers.base import SearchHit


def _repeat(prefix: str, unit: str, size: int, suffix: str = "") -> str:
    return prefix + unit * max(1, (size - len(prefix) - len(suffix)) // len(unit)) + suffix


def _numbered(template: str, size: int) -> str:
    """Distinct blocks (``template`` formatted with a counter) up to ``size`` characters."""
    parts, total, i = [], 0, 0
    while total < size:
        part = template.format(i=i)
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)


# name -> builder of a turn of about ``size`` characters.
CASES: dict[str, Callable[[int], str]] = {
    # Unclosed opening tags: each one started a lazy regex scan to the end of the text.
    "unclosed <answer>": lambda n: _repeat("", "<answer>", n),
    "unclosed <search>": lambda n: _repeat("", "<search>", n),
    # Unclosed boxes: each one scanned to the end of the answer for its brace.
    "unclosed \\boxed{": lambda n: _repeat("<answer>", "\\boxed{", n),
    # Brace-dense answers: one closing brace every other character.
    "\\boxed{ + {}...": lambda n: _repeat("<answer>\\boxed{", "{}", n, "}</answer>"),
    "\\boxed{ + {{..}}": lambda n: (
        "<answer>\\boxed{" + "{" * (n // 2) + "}" * (n // 2) + "}</answer>"
    ),
    # Many complete blocks: distinct answers that all extract to the same box.
    "many answers": lambda n: _numbered("<answer>{i}\\boxed{{a}}</answer>", n),
    "many searches": lambda n: _repeat("", "<search>q</search>", n),
    # Tag soup mixing everything above.
    "tag soup": lambda n: _repeat(
        "", "<search><answer>\\boxed{x{</search></answer>}<think>\\boxed{", n
    ),
}


_HITS = [SearchHit(Document("d0", '"Title"\nsome words'), 1.0)]


class _StubRetriever:
    def search(self, queries, k):
        return [_HITS[:k] for _ in queries]


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def time_protocol(turn: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds for what the env asks of the protocol on one turn."""
    return _best_seconds(lambda: (parse_turn(turn), is_valid_format(turn)), repeats)


def time_step(env: MultiHopSearchEnv, turn: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds for one ``env.step`` on ``turn`` from a fresh episode."""

    def step() -> None:
        env.reset(options={"index": 0})
        env.step(turn)

    return _best_seconds(step, repeats)


def _table(title: str, sizes: list[int], time_turn: Callable[[str], float]) -> None:
    print(f"\n{title}")
    print(f"{'case':<20}" + "".join(f"{f'{s // 1000} KB':>17}" for s in sizes))
    for name, build in CASES.items():
        row, previous = [], None
        for size in sizes:
            seconds = time_turn(build(size))
            growth = f" x{seconds / previous:.1f}" if previous else ""
            row.append(f"{seconds * 1e3:.1f} ms{growth}")
            previous = seconds
        print(f"{name:<20}" + "".join(f"{cell:>17}" for cell in row))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128000,256000,512000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    sample = QASample("q0", "Who?", ("a",), {})
    env = MultiHopSearchEnv(dataset=[sample], retriever=_StubRetriever(), max_turns=2)
    _table(
        "parse_turn + is_valid_format (the protocol's share)",
        sizes,
        lambda turn: time_protocol(turn, args.repeats),
    )
    _table(
        "env.step (adds the reward on the extracted answer)",
        sizes,
        lambda turn: time_step(env, turn, args.repeats),
    )


if __name__ == "__main__":
    main()
