"""``research-env eval``: score scripted policies, or a language model and its baselines.

Without ``--model`` it plays the scripted policies (``--policy oracle random``). With
``--model`` it evaluates that model as the search agent and as the direct-answer and
naive-RAG baselines (``--baselines``), side by side; see :mod:`research_app.harness`.
``--controls`` adds the agent (or the scripted policies) under the control retrievers
``empty`` and ``random``, reported beside the real retriever's row. ``--out`` also gets
the run's ``fingerprint.json`` (``research-env compare`` reads it);
``--retriever-cache FILE`` replays searches from a sqlite query cache.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

HELP = "evaluate a model or scripted policies (EM, F1, format, searches, recall)"
DESCRIPTION = (
    "Score policies on the first --limit questions of a split and print a results "
    "table, overall, by hop count and by question type. With --model: a language "
    "model as the search agent and as two baselines with the same weights: direct "
    "(answer without retrieval) and rag (retrieve once with the question, put the "
    "top-k documents in the prompt, answer); transcripts go to --out. Without "
    "--model: scripted policies, oracle (follows the gold decomposition; measures "
    "whether retrieval makes questions solvable) and random."
)


EXAMPLES = """examples:
  research-env eval --policy oracle random --limit 200 --out runs/scripted
  research-env eval --model smollm2-135m --limit 50 --out runs/base
  research-env eval --model runs/x --baselines agent --limit 50 --out runs/trained
  research-env eval --model runs/x --baselines agent --controls empty random
  research-env compare runs/base runs/trained --ignore model
  research-env eval --suite searchr1 --data-dir data/flashrag --corpus wiki18.jsonl \\
      --model runs/x/final --out runs/suite
"""


def register(subparsers: Any) -> None:
    from research_app.baselines import BASELINES
    from research_app.harness import CONTROLS

    parser = subparsers.add_parser(
        "eval",
        help=HELP,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to evaluate")
    what.add_argument("--model", default=None, help="offline name or HF directory of an LLM")
    what.add_argument(
        "--baselines",
        nargs="+",
        default=list(BASELINES),
        choices=BASELINES,
        help="with --model: which ways of answering (default: direct rag agent)",
    )
    what.add_argument(
        "--policy",
        nargs="+",
        default=["oracle", "random"],
        choices=["oracle", "random"],
        help="without --model: scripted policies (default: oracle random)",
    )
    what.add_argument(
        "--controls",
        nargs="*",
        default=None,
        choices=list(CONTROLS),
        metavar="RETRIEVER",
        help=(
            "also run the agent (without --model: each policy) under these control "
            "retrievers, reported side by side (default with the flag: empty random): "
            "a policy whose EM does not drop under 'empty' is not using search"
        ),
    )
    suite = parser.add_argument_group("benchmark suite (research_app/suite.py)")
    suite.add_argument(
        "--suite",
        default=None,
        choices=["searchr1"],
        help=(
            "run the seven standard datasets (NQ, TriviaQA, PopQA test; HotpotQA, 2Wiki, "
            "MuSiQue dev; Bamboogle test) from --data-dir and print the published numbers "
            "beside ours; --limit is then per dataset (default: whole splits)"
        ),
    )
    suite.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --suite: FlashRAG folder with <dataset>/<split>.jsonl",
    )
    env = parser.add_argument_group("environment")
    env.add_argument("--dataset", default="synthetic", help="dataset name or path")
    env.add_argument("--split", default="dev", help="split (default: dev)")
    env.add_argument("--retriever", default="bm25", help="retriever name or server URL")
    env.add_argument("--corpus", default=None, help="corpus jsonl for the retriever")
    env.add_argument(
        "--retriever-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "an argument of the retriever (repeatable; VALUE read as JSON when it parses), "
            "e.g. --retriever serper --retriever-arg max_requests=500 --retriever-arg "
            "max_cost=0.5"
        ),
    )
    env.add_argument(
        "--retriever-cache",
        type=Path,
        default=None,
        metavar="FILE",
        help="sqlite query->documents cache keyed by the retriever's fingerprint (replay)",
    )
    env.add_argument("--top-k", type=int, default=3, help="documents per search (default 3)")
    env.add_argument(
        "--max-turns", type=int, default=5, help="agent's turn budget (default 5; baselines: 1)"
    )
    env.add_argument(
        "--template", default=None, help="agent's prompt template (default: the env's, research)"
    )
    env.add_argument("--limit", type=int, default=None, help="only the first N questions")
    env.add_argument("--seed", type=int, default=0, help="sampling / random-policy seed")
    llm = parser.add_argument_group("decoding (with --model)")
    llm.add_argument(
        "--samples-per-question",
        type=int,
        default=1,
        metavar="K",
        help="K samples per question for pass@k (default 1: greedy)",
    )
    llm.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: greedy for K=1, 1.0 for K>1)",
    )
    llm.add_argument("--max-turn-tokens", type=int, default=128, help="tokens per turn (128)")
    llm.add_argument(
        "--max-total-tokens", type=int, default=1024, help="tokens per response (1024)"
    )
    llm.add_argument("--batch-size", type=int, default=16, help="episodes decoded together")
    llm.add_argument(
        "--prompt-format", default="auto", choices=["auto", "text", "chat"], help="see rollout"
    )
    llm.add_argument(
        "--rollout-dtype",
        default="auto",
        choices=["auto", "bfloat16", "float32", "int8", "policy"],
        help=(
            "decode with a frozen copy of the weights in this dtype, or 'policy' to decode with "
            "the policy's own weights (default auto, as train and demo: bfloat16 where the "
            "hardware multiplies in bf16 -- CUDA, AVX-512 BF16/AMX -- else float32, where "
            "emulated bf16 is slower; int8: the 8-bit copy, opt-in; the run's fingerprint "
            "records the dtype used)"
        ),
    )
    llm.add_argument(
        "--no-pack-weights",
        dest="pack_weights",
        action="store_false",
        help="do not pre-pack the rollout copy's linears for oneDNN (packed by default on CPU)",
    )
    llm.add_argument(
        "--no-fused",
        dest="fused",
        action="store_false",
        help=(
            "decode Llama-family models with the transformers forward instead of the fused "
            "one (algorithms/rollout/fused_llama.py); other architectures always use their own"
        ),
    )
    llm.add_argument(
        "--judge", default=None, help="LLM-as-judge: a model name/directory or an endpoint URL"
    )
    llm.add_argument("--judge-model", default="default", help="model name sent to a judge endpoint")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write results.json/.md and transcripts here (with --model default: runs/eval-*)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    env_kwargs: dict[str, Any] = {
        "dataset": args.dataset,
        "split": args.split,
        "retriever": args.retriever,
        "corpus": args.corpus,
        "top_k": args.top_k,
        "max_turns": args.max_turns,
    }
    if args.retriever_cache is not None:
        env_kwargs["retriever_cache"] = args.retriever_cache
    if args.retriever_arg:
        env_kwargs["retriever_kwargs"] = retriever_args(args.retriever_arg)
    if args.suite is not None:
        return _run_suite(args, env_kwargs)
    if args.model is None:
        return _run_scripted(args, env_kwargs)
    return _run_model(args, env_kwargs)


def retriever_args(pairs: list[str]) -> dict[str, Any]:
    """``["max_requests=500", "base_url=http://x"]`` -> ``{"max_requests": 500, ...}``."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--retriever-arg {pair!r}: expected KEY=VALUE, e.g. max_requests=500")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _run_scripted(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> int:
    from research_app.harness import evaluate_scripted, scripted_controls
    from research_app.report import report, save_results

    if args.template is not None:
        env_kwargs["template"] = args.template
    results = [
        evaluate_scripted(name, limit=args.limit, seed=args.seed, **env_kwargs)
        for name in args.policy
    ]
    for name in args.policy if args.controls is not None else ():
        results += scripted_controls(
            name, _controls(args), limit=args.limit, seed=args.seed, **env_kwargs
        )
    print(report(results))
    if args.out is not None:
        save_results(results, args.out)
        print(f"results written to {args.out}/results.json, results.md and fingerprint.json")
    return 0


def _controls(args: argparse.Namespace) -> list[str]:
    """The control retrievers asked for: ``--controls`` alone means all of them."""
    from research_app.harness import CONTROLS

    if args.controls is None:
        return []
    return list(args.controls) or list(CONTROLS)


def _model_setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The policy and the evaluation arguments (sampling, judge, decoding) the flags ask for."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from algorithms.policy import load_policy
    from algorithms.rollout import Sampling
    from research_app.judge import make_judge

    policy = load_policy(args.model)
    judge = None
    if args.judge:
        judge = make_judge(args.judge, args.judge_model, os.environ.get("OPENAI_API_KEY"))
    # Greedy for one sample per question unless a temperature is asked for; pass@k samples.
    greedy = args.samples_per_question == 1 and not args.temperature
    sampling = Sampling(
        temperature=args.temperature or 1.0,
        greedy=greedy,
        max_turn_tokens=args.max_turn_tokens,
        max_total_tokens=args.max_total_tokens,
        seed=args.seed,
    )
    return policy, {
        "limit": args.limit,
        "sampling": sampling,
        "samples": args.samples_per_question,
        "batch_size": args.batch_size,
        "judge": judge,
        "prompt_format": args.prompt_format,
        "rollout_dtype": None if args.rollout_dtype == "policy" else args.rollout_dtype,
        "pack_weights": args.pack_weights and args.rollout_dtype != "policy",
        "fused": args.fused,
    }


def _run_suite(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> int:
    """``--suite``: every dataset of the suite with the agent (or the first scripted
    policy without --model), then the report with the published rows."""
    from research_app.harness import evaluate_model, evaluate_scripted
    from research_app.suite import run_suite, save_suite, suite_report

    if args.data_dir is None:
        raise SystemExit(
            f"--suite {args.suite} needs --data-dir DIR, a folder of FlashRAG files "
            "<dataset>/<split>.jsonl (e.g. nq/test.jsonl, hotpotqa/dev.jsonl)"
        )
    for key in ("dataset", "split"):
        env_kwargs.pop(key, None)
    if args.template is not None:
        env_kwargs["template"] = args.template
    if args.model is not None:
        policy, options = _model_setup(args)

        def evaluate(kwargs: dict[str, Any]) -> Any:
            return evaluate_model(policy, kwargs, baseline="agent", **options)
    else:

        def evaluate(kwargs: dict[str, Any]) -> Any:
            return evaluate_scripted(args.policy[0], limit=args.limit, seed=args.seed, **kwargs)

    rows = run_suite(args.suite, args.data_dir, evaluate, env_kwargs)
    print(suite_report(rows, args.suite))
    if args.out is not None:
        save_suite(rows, args.out, args.suite)
        print(f"report: {args.out}/suite.md; numbers and fingerprints: {args.out}/suite.json")
    return 0


def _run_model(args: argparse.Namespace, env_kwargs: dict[str, Any]) -> int:
    from research_app.harness import evaluate_baselines
    from research_app.report import report, save_results, write_transcripts_text

    if args.template is not None:
        env_kwargs["template"] = args.template
    policy, options = _model_setup(args)
    out = args.out or Path("runs") / f"eval-{datetime.now():%Y%m%d-%H%M%S}"

    def save(results: list[Any]) -> None:
        save_results(results, out)
        write_transcripts_text(results[-1], out / "transcripts" / f"{results[-1].name}.txt")

    results = evaluate_baselines(
        policy,
        {k: v for k, v in env_kwargs.items() if v is not None},
        baselines=args.baselines,
        on_result=save,
        controls=_controls(args),
        token_transcripts=out / "transcripts" / "eval.tokens.jsonl",
        **options,
    )
    print(report(results))
    print(
        f"results: {out}/results.json, results.md, fingerprint.json; "
        f"transcripts: {out}/transcripts/ (token view: research-env view {out})"
    )
    return 0
