"""``research-env demo``: a policy learning to search, end to end, on the embedded defaults.

1. generate the synthetic multi-hop world and build the BM25 index (both cached);
2. evaluate the untrained model on a dev slice;
3. warm-start it by behaviour cloning on oracle episodes (``--no-warmstart`` skips this:
   the pure-RL path of the ReSearch paper), then evaluate again;
4. train it with GRPO;
5. evaluate the trained policy on the same dev slice;
6. write ``runs/<timestamp>/report.md`` with the table, curves and example transcripts,
   and ``view.html``: every evaluated episode (and a few trained ones per step) token by
   token, coloured by what the loss did with it (``research-env view``).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from research_app.demo_change import Stage, rl_change
from research_env.intervals import rate_half_width

QUICK = {"eval_questions": 4, "baseline_questions": 4, "sft_steps": 2, "rl_steps": 2,
         "questions_per_step": 1, "rl_min_hops": 1, "rl_max_hops": 2,
         "untrained_turn_tokens": 48}  # fmt: skip
# The full demo's RL stage is the multi-seed ablation's recipe (RESULTS.md): 6 steps of
# 2 questions x group 4 = 48 episodes from the same warm start. The warm start and the
# trained policy are scored on 100 dev questions, so the paired interval of RL's change is
# about +-0.035 (+-0.10 at the 30 questions used before); the base model's three rows only
# show where the search agent starts, and are scored on the first 10 of them to save time.
FULL = {"eval_questions": 100, "baseline_questions": 10, "sft_steps": 10, "rl_steps": 6,
        "questions_per_step": 2, "rl_min_hops": 1, "rl_max_hops": 2,
        "untrained_turn_tokens": 48}  # fmt: skip
# Token budgets for every episode the demo plays: oracle turns are at most ~64 tokens and
# oracle episodes (turns plus retrieved documents) at most ~1,000 on the synthetic world.
TURN_TOKENS, TOTAL_TOKENS = 96, 1024
# The untrained agent's turns (``untrained_turn_tokens`` above) are cut at half that: an
# untrained model rarely closes a tag, so every turn ran to the 96-token budget (41 s per
# question on an AVX2-only CPU, issue 28), and its row only shows where the agent starts.
# On the pure-RL path the untrained agent is RL's starting point, scored like the trained
# policy, with TURN_TOKENS.
# Blocks RL trains (from the top); the warm start trains all of them.
RL_TRAIN_LAYERS = 6
# Episodes per backward pass (the loss is the same for any size): the update's peak grows
# with it, ~2.6 GB at 1 vs 4.7 GB at 4 on the same ~1,000-token episodes in RL, 3.97 vs
# 4.24 GB at 1 vs 2 in the warm start, at no cost in time (RESULTS.md, "Demo memory").
RL_MICRO_BATCH = SFT_MICRO_BATCH = 1
# Episodes decoded together in the demo's evaluations (their KV caches are the peak): 32
# questions took 64 s at 16, 77 s at 8 and 68 s at 32 (one batch waits for its longest
# episode), peaking at 2,167, 1,837 and 2,523 MiB (RESULTS.md, "Demo memory").
EVAL_BATCH = 16
# Trained episodes per step whose token transcripts go to view.html (with the eval ones).
TRAIN_TRANSCRIPTS = 4


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="watch a policy learn to search: evaluate, warm-start, GRPO, evaluate, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny slice and 2 steps (~3 min)")
    parser.add_argument("--no-warmstart", action="store_true", help="pure RL from the base model")
    parser.add_argument("--algo", default="grpo", help="RL algorithm (grpo, ppo, reinforce)")
    parser.add_argument("--model", default="smollm2-135m", help="model name or directory")
    parser.add_argument("--steps", type=int, default=None, help="RL steps (default 6; quick 2)")
    parser.add_argument("--sft-steps", type=int, default=None, help="warm-start steps")
    parser.add_argument(
        "--eval-questions",
        type=int,
        default=None,
        help="dev questions the warm start and the trained policy are scored on (default 100)",
    )
    parser.add_argument(
        "--baseline-questions",
        type=int,
        default=None,
        help="dev questions the base model's rows (direct, naive RAG, untrained agent) are "
        "scored on (default 10; never more than --eval-questions)",
    )
    parser.add_argument(
        "--rl-max-hops",
        type=int,
        default=None,
        help="RL trains on questions of at most this many hops (default 2: a small model's "
        "groups then disagree often enough to learn from; 0 = all)",
    )
    parser.add_argument(
        "--rl-min-hops",
        type=int,
        default=None,
        help="RL trains on questions of at least this many hops (default 1)",
    )
    parser.add_argument(
        "--untrained-turn-tokens",
        type=int,
        default=None,
        help="token budget of one turn of the untrained agent's row (default 48, half the "
        "other rows' 96: an untrained model runs every turn to the budget); on the pure-RL "
        "path (--no-warmstart) that row is RL's start and uses 96 like the trained policy",
    )
    parser.add_argument(
        "--rl-reward",
        default="research",
        help="the reward RL trains on (research, research+support, search-r1, em, f1); "
        "evaluations always report EM/F1",
    )
    parser.add_argument(
        "--rollout-dtype",
        default="auto",
        choices=("auto", "bfloat16", "float32", "int8"),
        help="precision of the copy that decodes evaluation and RL episodes (default auto: "
        "bf16 where the hardware multiplies bf16, else float32); int8 is faster on a CPU "
        "without bf16 and RL then corrects the mismatch with trainer.tis_cap=2 (README, "
        "'8-bit decoding')",
    )
    parser.add_argument("--dataset", default="synthetic", help="dataset name or path")
    parser.add_argument("--retriever", default="bm25", help="retriever name or server URL")
    parser.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/<time>)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def expected_time(quick: bool) -> str:
    """The banner's estimate for this machine. The demo decodes and trains in bf16 only
    where the hardware multiplies bf16; elsewhere it runs in float32, slower (README: 10.5-13.8
    min on a 2-core EPYC with AVX-512 BF16; 21 min on the same CPU limited to AVX2, idle;
    59 min on an AVX2-only EPYC shared with other jobs)."""
    import torch

    from algorithms.precision import cpu_has_native_bf16

    if torch.cuda.is_available():
        return "a few minutes on a GPU"
    if cpu_has_native_bf16():
        return f"expect about {'2-3' if quick else '10-15'} minutes on a 2-core CPU with bf16"
    span = "several times the 2-3 minutes of a CPU with bf16" if quick else "20-60 minutes"
    return (f"expect {span} on a 2-core CPU: this one has no native bf16 (AVX-512 BF16 or "
            "AMX), so the demo runs in float32")  # fmt: skip


def _settings(args: argparse.Namespace) -> dict[str, int]:
    s = dict(QUICK if args.quick else FULL)
    if args.steps is not None:
        s["rl_steps"] = args.steps
    if args.sft_steps is not None:
        s["sft_steps"] = args.sft_steps
    if args.eval_questions is not None:
        s["eval_questions"] = args.eval_questions
    if args.baseline_questions is not None:
        s["baseline_questions"] = args.baseline_questions
    if args.rl_max_hops is not None:
        s["rl_max_hops"] = args.rl_max_hops
    if args.rl_min_hops is not None:
        s["rl_min_hops"] = args.rl_min_hops
    if args.untrained_turn_tokens is not None:
        if args.untrained_turn_tokens < 1:
            raise SystemExit(
                f"--untrained-turn-tokens must be >= 1, got {args.untrained_turn_tokens}"
            )
        s["untrained_turn_tokens"] = args.untrained_turn_tokens
    if args.no_warmstart:  # the untrained agent is RL's start: scored like the trained policy
        s["untrained_turn_tokens"] = TURN_TOKENS
    return s


def question_counts(s: dict[str, int], n_dev: int, no_warmstart: bool) -> tuple[int, int, int]:
    """Dev questions scored by (the warm start and the trained policy, the base model's
    direct and RAG rows, the untrained agent). RL's change is paired over the same
    questions, so on the pure-RL path the untrained agent, its starting point, is scored on
    as many as the trained policy."""
    n_eval = min(s["eval_questions"], n_dev)
    n_base = min(s["baseline_questions"], n_eval)
    return n_eval, n_base, n_eval if no_warmstart else n_base


def _config(
    args: argparse.Namespace,
    out: Path,
    algo: str,
    steps: int,
    q: int,
    lr: float,
    train_layers: int | None = None,
):
    from algorithms.config import TrainConfig

    return TrainConfig.from_dict(
        {
            "algo": algo,
            "output_dir": str(out),
            "model": {"name": args.model},
            "rollout": {
                "questions_per_step": q,
                "group_size": 4,
                "temperature": 1.0,
                "max_turn_tokens": TURN_TOKENS,
                "max_total_tokens": TOTAL_TOKENS,
                # auto: bf16 where the hardware does it (CUDA, AVX-512 BF16/AMX), else
                # float32: emulated bf16 is several times slower (algorithms.precision).
                "rollout_dtype": args.rollout_dtype,
                "pack_weights": True,
            },
            "optim": {"lr": lr, "warmup_steps": 0, "max_grad_norm": 1.0},
            "trainer": {
                "steps": steps,
                "micro_batch_size": SFT_MICRO_BATCH if algo == "sft" else RL_MICRO_BATCH,
                "seed": args.seed,
                "autocast_dtype": "auto",
                "filter_zero_variance_groups": True,
                # RL trains the top 6 of SmolLM2's 30 blocks: 1.4x cheaper updates, and the
                # gradients and Adam state of 21M weights instead of 135M (RESULTS.md,
                # "Episode cost"; the multi-seed ablation uses the same setting).
                "train_layers": train_layers,
                # An int8 sampler is further from the learner: truncated importance
                # sampling corrects the policy gradient for it (README, "8-bit decoding").
                "tis_cap": 2.0 if args.rollout_dtype == "int8" else None,
            },
            "eval": {"every": 0},
            "logging": {"wandb": False},
            "checkpoint": {"every": 0, "export_final": algo != "sft"},
            "grpo": {"kl_coef": 0.0},
            "ppo": {"kl_coef": 0.0},
            "reinforce": {"baseline": "rloo"},
        }
    )


def evaluate(
    policy: Any,
    env_kwargs: dict[str, Any],
    dev: Any,
    n: int,
    name: str,
    baseline: str = "agent",
    transcripts: Path | None = None,
    turn_tokens: int = TURN_TOKENS,
    rollout_dtype: str = "auto",
) -> Stage:
    """Greedy episodes on the first ``n`` dev questions, decoded with a packed copy in
    ``rollout_dtype`` (``auto``: bf16 where the hardware does bf16, else float32), turns of
    at most ``turn_tokens``; their token transcripts are appended to ``transcripts``, if
    given."""
    from algorithms.rollout import Sampling
    from research_app.harness import evaluate_model

    result = evaluate_model(
        policy,
        env_kwargs,
        baseline=baseline,
        limit=n,
        sampling=Sampling(greedy=True, max_turn_tokens=turn_tokens, max_total_tokens=TOTAL_TOKENS),
        rollout_dtype=rollout_dtype,
        pack_weights=True,
        batch_size=EVAL_BATCH,
        name=name,
        base_env=dev,
        token_transcripts=transcripts,
    )
    overall = dict(result.overall)
    em, count = overall.get("em", 0.0), max(1.0, overall.get("n", 1.0))
    overall["em_ci95"] = rate_half_width(em, count)
    print(f"  {name}: EM {em:.3f} ± {overall['em_ci95']:.3f}  F1 {overall.get('f1', 0):.3f}  "
          f"format {overall.get('format_valid', 0):.2f}  searches {overall.get('searches', 0):.2f}"
          f"  ({result.seconds:.0f} s)", flush=True)  # fmt: skip
    episodes = result.episodes
    return Stage(
        name,
        overall,
        result.by_hops,
        [_transcript(e) for e in episodes[:3]],
        scores=[float(e.get("em", 0.0)) for e in episodes],
        searches=[float(e.get("searches", 0)) for e in episodes],
        hops=[e.get("hops") for e in episodes],
    )


def _transcript(episode: dict[str, Any]) -> str:
    """The model's turns and the env's replies (the prompt's instructions left out)."""
    text = "".join(t["model"] + t["observation"] for t in episode.get("turn_texts", []))
    prefill = "<think>" if episode.get("prompt", "").rstrip().endswith("<think>") else ""
    gold = ", ".join(episode.get("golden_answers", []))
    return (
        f"Question: {episode.get('question', '?')}\n\n{prefill}{text.strip()}\n\n"
        f"(gold: {gold}; EM {episode.get('em', 0):.0f}; reward {episode.get('reward', 0):.2f})"
    )


def run(args: argparse.Namespace) -> int:
    from research_app.memory import cap_kernel_caches

    cap_kernel_caches()  # before torch makes its first oneDNN kernel
    import torch

    from algorithms.policy import load_policy, set_gradient_checkpointing
    from algorithms.precision import resolve_precision
    from algorithms.registry import make_algorithm
    from algorithms.sft import SFT
    from algorithms.trainer.freeze import decoder_blocks
    from algorithms.transcripts import SUFFIX
    from research_app.demo_change import changes_by_hops, hop_change_lines
    from research_app.demo_report import write_report
    from research_app.memory import StagePeaks, give_back
    from research_app.view import write_view
    from research_env.env import MultiHopSearchEnv
    from research_env.rewards import get_reward

    s = _settings(args)
    try:  # fail now, not after the first evaluations
        get_reward(args.rl_reward)
    except ValueError as error:
        raise SystemExit(f"--rl-reward: {error}") from None
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print(f"ReSearch-Gym demo -> {out}  ({expected_time(args.quick)})")
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    print("[1/6] synthetic multi-hop world and BM25 index")
    base = {"dataset": args.dataset, "retriever": args.retriever, "top_k": 3, "max_turns": 5}
    dev = MultiHopSearchEnv(**base, split="dev")
    n_eval, n_base, n_agent = question_counts(s, len(dev.samples), args.no_warmstart)
    train = MultiHopSearchEnv(**base).samples
    train_kwargs = {**base, "split": "train", "dataset": train, "retriever": dev.retriever}
    rl_questions = _with_hops(train, s["rl_min_hops"], s["rl_max_hops"])
    rl_kwargs = {**train_kwargs, "dataset": rl_questions, "reward": args.rl_reward}
    eval_kwargs = {**base, "dataset": dev.samples, "retriever": dev.retriever}

    agent = f" ({n_agent} for the search agent)" if n_agent != n_base else ""
    print(f"[2/6] loading {args.model} and evaluating it on {n_base} dev questions{agent}")
    peaks = StagePeaks()  # each stage's peak resident memory, for the report
    with peaks.stage("load and evaluate the base model"):
        policy = load_policy(args.model)
        tokens = out / "transcripts" / f"eval{SUFFIX}"  # every evaluated episode, for view.html
        tokens.unlink(missing_ok=True)  # a rerun into the same directory starts afresh
        dtype = args.rollout_dtype
        stages = [
            evaluate(policy, eval_kwargs, dev, n_base, "direct answer (no search)", "direct",
                     tokens, rollout_dtype=dtype),
            evaluate(policy, eval_kwargs, dev, n_base, "naive RAG (retrieve once)", "rag",
                     tokens, rollout_dtype=dtype),
            evaluate(policy, eval_kwargs, dev, n_agent, "search agent: untrained",
                     transcripts=tokens, turn_tokens=s["untrained_turn_tokens"],
                     rollout_dtype=dtype),
        ]  # fmt: skip
    untrained = stages[-1]

    curves: dict[str, list[dict[str, float]]] = {}
    if not args.no_warmstart:
        print(f"[3/6] warm start: {s['sft_steps']} steps of behaviour cloning on oracle episodes")
        sft_cfg = _config(
            args, out / "sft", "sft", s["sft_steps"], 2 * s["questions_per_step"], 1e-4
        )
        sft_cfg.logging.save_transcripts = TRAIN_TRANSCRIPTS
        with peaks.stage("warm start (SFT)"):
            # Every block trains here: recomputing activations in backward keeps the
            # stage's peak memory near the RL stage's (RESULTS.md, "Demo memory").
            set_gradient_checkpointing(policy.model, True)
            sft = SFT(policy, train_kwargs, sft_cfg)
            sft.learn(s["sft_steps"])
            set_gradient_checkpointing(policy.model, False)
            sft.close()
            del sft  # its optimizer state: twice the model's size
            give_back(policy.model)
        with peaks.stage("evaluate the warm start"):
            stages.append(
                evaluate(
                    policy, eval_kwargs, dev, n_eval, "search agent: warm start",
                    transcripts=tokens, rollout_dtype=dtype,
                )
            )  # fmt: skip
        curves["sft"] = _read_metrics(out / "sft")
    else:
        print("[3/6] warm start skipped (--no-warmstart): pure RL from the base model")

    hops = f"{s['rl_min_hops']}-{s['rl_max_hops'] or 'any'}"
    print(f"[4/6] {args.algo.upper()}: {s['rl_steps']} steps, {s['questions_per_step']} "
          f"questions x group 4 per step, from {len(rl_questions)} questions of {hops} hops")  # fmt: skip
    blocks = len(decoder_blocks(policy.model)[0])
    rl_cfg = _config(
        args, out / args.algo, args.algo, s["rl_steps"], s["questions_per_step"], 2e-5,
        train_layers=min(RL_TRAIN_LAYERS, blocks),
    )  # fmt: skip
    rl_cfg.logging.save_transcripts = TRAIN_TRANSCRIPTS
    with peaks.stage(f"RL ({args.algo})"):
        algo = make_algorithm(args.algo, policy, rl_kwargs, rl_cfg)
        algo.learn(s["rl_steps"])
        algo.close()
        del algo
        give_back(policy.model)
    curves["rl"] = _read_metrics(out / args.algo)

    print(f"[5/6] evaluating the trained policy on the same {n_eval} dev questions")
    after = f"search agent: after {args.algo.upper()}"
    start = stages[-1]  # the warm start, or the untrained agent on the pure-RL path
    with peaks.stage("evaluate after RL"):
        stages.append(
            evaluate(policy, eval_kwargs, dev, n_eval, after, transcripts=tokens,
                     rollout_dtype=dtype)
        )  # fmt: skip
    change = rl_change(start, stages[-1])
    per_hop = hop_change_lines(changes_by_hops(start, stages[-1]), start.name, after)
    print("\n".join(["  RL's change per hop count:", *per_hop[2:]]), flush=True)

    print("[6/6] writing the report")
    minutes = (time.perf_counter() - t_start) / 60
    view = write_view(out, out / "view.html", title=f"ReSearch-Gym demo {out.name}: token view")
    report = write_report(
        out,
        stages=stages,
        curves=curves,
        view=view,
        change=change,
        by_hops=per_hop,
        memory=peaks.lines(),
        settings={**s, "model": args.model, "algo": args.algo, "warm_start": not args.no_warmstart,
                  "rl_reward": args.rl_reward,
                  "dataset": args.dataset, "retriever": args.retriever, "top_k": 3,
                  "max_turns": 5, "template": dev.template.name, "turn_tokens": TURN_TOKENS,
                  "decode_dtype": resolve_precision(args.rollout_dtype, policy.device)
                  or "float32", "minutes": round(minutes, 1)},
    )  # fmt: skip
    print(f"\nRL: {change.sentence()}")
    print("peak resident MiB per stage: "
          + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.mib.items()))  # fmt: skip
    print(f"report: {report}\ntoken view: {view}")
    print(f"trained model: {out / args.algo / 'final'}  (research-env eval --model <that dir>)")
    first, last = untrained.overall, stages[-1].overall
    print(f"untrained agent -> after {args.algo.upper()}: EM {first.get('em', 0):.3f} -> "
          f"{last.get('em', 0):.3f}, format-valid {first.get('format_valid', 0):.2f} -> "
          f"{last.get('format_valid', 0):.2f} (on {n_agent} and {n_eval} questions), "
          f"in {minutes:.1f} min")  # fmt: skip
    return 0


def _with_hops(samples: list[Any], min_hops: int, max_hops: int) -> list[Any]:
    """The questions of ``min_hops`` to ``max_hops`` hops (0: no upper bound). Questions that
    do not say their hops are kept; a range that keeps nothing is an error."""

    def wanted(hops: int) -> bool:
        return min_hops <= hops and (max_hops <= 0 or hops <= max_hops)

    kept = [q for q in samples if "hops" not in q.metadata or wanted(q.metadata["hops"])]
    if not kept:
        bound = max_hops if max_hops > 0 else "any"
        raise SystemExit(f"no training question has {min_hops} to {bound} hops; widen the range")
    return kept


def _read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
