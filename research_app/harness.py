"""Play a policy over a dataset split and score it: EM, F1, format validity, searches,
supporting-doc recall, reward (:mod:`research_env.metrics`), overall, by hop count and by
question type, into one :class:`EvalResult` per policy.

- :func:`evaluate_scripted`: the env's scripted policies (``oracle``, ``random``); needs
  nothing but the environment (no torch).
- :func:`evaluate_model`: a language model as the search agent or as one of the baselines
  (:mod:`~research_app.baselines`: ``direct``, ``rag``), all through the same
  :class:`~algorithms.rollout.RolloutEngine` in the same vector env
  (:class:`~research_env.vector.SearchVectorEnv`, one retriever call per turn), so EM/F1,
  format validity and response length mean the same thing in every row. Episodes are
  decoded greedily with one sample per question, or sampled ``samples`` times for pass@k.
  An optional judge (:mod:`~research_app.judge`) adds a ``judge`` score.
- :func:`evaluate_baselines`: :func:`evaluate_model` for each baseline, sharing one
  loaded dataset and retriever, then (``controls``) the agent again under the control
  retrievers ``empty`` and ``random``: a policy whose EM does not drop under ``empty`` is
  not using search (:func:`evaluate_controls`; scripted policies: :func:`scripted_controls`).

Every result carries the run's fingerprint (:mod:`research_env.fingerprint`), which
:func:`~research_app.report.save_results` writes as ``fingerprint.json``.

    from research_app.harness import evaluate_model
    result = evaluate_model(policy, {"split": "dev"}, baseline="agent", limit=50)
    print(result.overall["em"])

:mod:`~research_app.report` turns results into markdown, ``results.json`` and
transcripts.

Why one file of ~460 lines: it is one idea, scoring policies the same way in every row
(scripted, model, baselines, controls), and the rows share one loaded env and retriever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from gymnasium.vector import AutoresetMode
from tqdm import tqdm

from research_app.baselines import BASELINES, baseline_vector_env
from research_app.judge import JudgeFn, judge_episodes
from research_env.env import MultiHopSearchEnv
from research_env.fingerprint import fingerprint
from research_env.metrics import METRICS, summarize, summarize_by
from research_env.policies import get_policy
from research_env.vector import SearchVectorEnv

if TYPE_CHECKING:
    from algorithms.rollout.engine import PromptFormat

# Per-episode numbers a language model's evaluation averages next to the env's metrics.
LLM_METRICS = (*METRICS, "retrievals", "response_tokens", "judge")
# The control retrievers (research_env.retrievers.controls) an evaluation can add.
CONTROLS = ("empty", "random")


@dataclass
class EvalResult:
    """Scores of one policy on one split, with the settings that make runs comparable.

    ``overall`` and each group of ``by_hops`` / ``by_type`` map metric names (see
    :data:`COLUMNS`, :data:`EXTRA_COLUMNS`, ``pass@k``) to means over episodes; ``n`` counts
    questions. ``episodes`` holds one record per episode (the env's final info plus what
    the evaluator adds, e.g. the transcript). ``fingerprint`` is the run's
    (:func:`research_env.fingerprint.fingerprint`: dataset, corpus, retriever, rules,
    template, reward, model); a control row's names its control retriever.
    """

    name: str
    settings: dict[str, Any]
    overall: dict[str, float]
    by_hops: dict[Any, dict[str, float]]
    seconds: float
    episodes: list[dict[str, Any]] = field(default_factory=list)
    by_type: dict[Any, dict[str, float]] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None

    def to_json(self, *, with_episodes: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "settings": self.settings,
            "overall": self.overall,
            "by_hops": {str(k): v for k, v in self.by_hops.items()},
            "by_type": {str(k): v for k, v in self.by_type.items()},
            "seconds": self.seconds,
        }
        if self.fingerprint is not None:
            data["fingerprint"] = self.fingerprint["hash"]
        if with_episodes:
            data["episodes"] = self.episodes
        return data


def evaluate_scripted(
    policy_name: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    show_progress: bool = True,
    **env_kwargs: Any,
) -> EvalResult:
    """Play ``policy_name`` once on each of the first ``limit`` questions of the split,
    ``batch_size`` questions at a time in a vector env (one retriever call per turn)."""
    envs = SearchVectorEnv(1, autoreset_mode=AutoresetMode.DISABLED, **env_kwargs)
    env = envs.envs[0]
    policy = get_policy(policy_name, seed=seed)
    n = len(env.samples) if limit is None else min(limit, len(env.samples))
    episodes: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=n, desc=policy_name, disable=not show_progress, leave=False)
    for first in range(0, n, batch_size):
        chunk = list(range(first, min(first + batch_size, n)))
        envs = envs.resized(len(chunk))
        envs.reset(seed=[seed] * len(chunk), options={"indices": chunk})
        totals = [0.0] * len(chunk)
        final: dict[int, dict[str, Any]] = {}
        while len(final) < len(chunk):
            live = [j for j in range(len(chunk)) if j not in final]
            outcomes = envs.step_turns({j: policy.act(envs.envs[j]) for j in live})
            for j, outcome in outcomes.items():
                totals[j] += outcome.reward
                if outcome.done:
                    final[j] = outcome.info
        for j in range(len(chunk)):
            text = envs.envs[j].render() or ""
            episodes.append({**final[j], "reward": totals[j], "transcript": text})
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    settings = {
        "policy": policy_name,
        **{k: str(v) for k, v in env_kwargs.items()},
        "top_k": env.rules.top_k,
        "max_turns": env.rules.max_turns,
        "template": env.template.name,
        **_cache_settings(env),
    }
    return EvalResult(
        name=policy_name,
        settings=settings,
        overall=summarize(episodes),
        by_hops=summarize_by(episodes, "hops"),
        seconds=elapsed,
        episodes=episodes,
        by_type=summarize_by(episodes, "type"),
        fingerprint=fingerprint(env, model="scripted", questions=n),
    )


def evaluate_model(
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    *,
    baseline: str = "agent",
    limit: int | None = None,
    question_indices: Sequence[int] | None = None,
    sampling: Any = None,
    samples: int = 1,
    batch_size: int = 16,
    judge: JudgeFn | None = None,
    prompt_format: PromptFormat = "auto",
    rollout_dtype: str | None = None,
    pack_weights: bool = False,
    fused: bool = True,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    show_progress: bool = True,
    base_env: MultiHopSearchEnv | None = None,
    token_transcripts: str | Path | None = None,
) -> EvalResult:
    """Score ``policy`` (an :class:`algorithms.policy.Policy`, or anything with ``model``,
    ``tokenizer`` and ``name``) on a split, as one of :data:`~research_app.baselines.BASELINES`.

    Args:
        env_kwargs: ``MultiHopSearchEnv`` arguments (dataset, split, retriever, corpus,
            top_k, max_turns, template, reward...). ``direct`` and ``rag`` override
            ``template`` and set ``max_turns=1``.
        limit: evaluate the first ``limit`` questions of the split (all by default), so
            evaluations before and after training see the same slice.
        question_indices: exactly these questions instead (overrides ``limit``).
        sampling: an :class:`algorithms.rollout.Sampling` (decoding and token budgets);
            greedy by default. Its ``seed`` seeds each batch (``seed + 100003 * batch``).
        samples: episodes per question; more than one (with a sampled, not greedy,
            ``sampling``) adds pass@k.
        batch_size: episodes decoded together (questions x samples).
        judge: optional :data:`JudgeFn`; adds the ``judge`` metric.
        prompt_format, rollout_dtype, pack_weights, fused: see :class:`RolloutEngine`.
        name: the result's row name (default: the baseline).
        settings: extra or overriding settings to record (e.g. ``dataset="synthetic"``
            when ``env_kwargs`` holds already-loaded samples).
        base_env: an env whose samples and retriever to reuse (saves loading them again
            when evaluating several baselines).
        token_transcripts: append every episode's token transcript
            (:mod:`algorithms.transcripts`) to this ``*.tokens.jsonl`` file, for
            ``research-env view``.
    """
    from algorithms.rollout import RolloutEngine, Sampling

    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {BASELINES}")
    sampling = sampling or Sampling(greedy=True)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1 and sampling.greedy:
        raise ValueError(
            f"samples={samples} with greedy decoding repeats one episode; pass a sampled "
            "Sampling (greedy=False, a temperature) for pass@k"
        )
    env_kwargs = dict(env_kwargs or {})
    base = base_env or MultiHopSearchEnv(**env_kwargs)
    if question_indices is None:
        count = len(base.samples) if limit is None else min(limit, len(base.samples))
        question_indices = range(count)
    indices = list(question_indices)
    per_batch = max(1, batch_size // samples)
    n_envs = min(per_batch, len(indices) or 1) * samples
    envs = baseline_vector_env(baseline, env_kwargs, base, n_envs)
    decoder = _decoding_policy(policy, rollout_dtype, pack_weights, fused)
    engine = RolloutEngine(decoder, vector_env=envs, prompt_format=prompt_format)

    questions = {s.id: s.question for s in base.samples}
    episodes: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=len(indices), desc=name or baseline, disable=not show_progress, unit="q")
    for batch_number, first in enumerate(range(0, len(indices), per_batch)):
        chunk = indices[first : first + per_batch]
        seed = sampling.seed
        if seed is not None and not sampling.greedy:
            seed += 100_003 * batch_number
        trajectories = engine.collect(
            chunk, group_size=samples, sampling=replace(sampling, seed=seed)
        )
        for j, trajectory in enumerate(trajectories):
            record = _episode_record(trajectory, baseline, policy.tokenizer)
            record["question"] = questions[record["question_id"]]
            record["sample"] = j % samples
            episodes.append(record)
        if token_transcripts is not None:
            _write_token_transcripts(
                token_transcripts, trajectories, policy, name or baseline, questions
            )
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    if judge is not None:
        judge_episodes(judge, episodes)

    env = envs.envs[0]
    recorded = {
        "model": getattr(policy, "name", type(policy).__name__),
        "baseline": baseline,
        **describe_env(env_kwargs),
        "top_k": env.rules.top_k,
        "max_turns": env.rules.max_turns,
        "template": env.template.name,
        "prompt_format": prompt_format,
        "samples": samples,
        "decoding": sampling.describe(),
        "max_turn_tokens": sampling.max_turn_tokens,
        "max_total_tokens": sampling.max_total_tokens,
        "rollout_dtype": rollout_dtype or "policy's own",
        "decode_dtype": _decode_dtype(policy, rollout_dtype),
        "pack_weights": pack_weights,
        "fused": fused,
        "questions": len(indices),
        "judge": getattr(judge, "name", type(judge).__name__) if judge is not None else None,
        **_cache_settings(base),
        **(settings or {}),
    }
    if baseline == "direct":
        recorded["retriever"] = "none"
    # Compared by ``research-env compare``: runs that decoded differently measure different things.
    decoding = {k: recorded[k] for k in ("decoding", "decode_dtype", "max_turn_tokens",
                                         "max_total_tokens")}  # fmt: skip
    return EvalResult(
        name=name or baseline,
        settings=recorded,
        overall={
            **summarize(episodes, LLM_METRICS),
            "seconds_per_question": seconds / max(1, len(indices)),
        },
        by_hops=summarize_by(episodes, "hops", LLM_METRICS),
        by_type=summarize_by(episodes, "type", LLM_METRICS),
        seconds=seconds,
        episodes=episodes,
        fingerprint=fingerprint(
            base, model=recorded["model"], questions=len(indices), decoding=decoding
        ),
    )


def evaluate_baselines(
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    baselines: Sequence[str] = BASELINES,
    on_result: Callable[[list[EvalResult]], None] | None = None,
    controls: Sequence[str] = (),
    **kwargs: Any,
) -> list[EvalResult]:
    """:func:`evaluate_model` for each baseline, sharing one loaded dataset and retriever;
    then the ``agent`` baseline once under each retriever in ``controls`` (e.g.
    :data:`CONTROLS`; see :func:`evaluate_controls`).

    ``on_result(results_so_far)`` runs after each result (e.g. to save them, so an
    interrupted run keeps what it finished).
    """
    base = MultiHopSearchEnv(**(env_kwargs or {}))
    results: list[EvalResult] = []
    for b in baselines:
        results.append(evaluate_model(policy, env_kwargs, baseline=b, base_env=base, **kwargs))
        if on_result is not None:
            on_result(results)
    for control in controls:
        results += evaluate_controls(policy, env_kwargs, [control], **kwargs)
        if on_result is not None:
            on_result(results)
    return results


def control_env_kwargs(env_kwargs: dict[str, Any] | None, control: str) -> dict[str, Any]:
    """``env_kwargs`` with the retriever replaced by the control ``control`` (same dataset
    and corpus; the real retriever's own arguments and query cache dropped)."""
    kwargs = {**(env_kwargs or {}), "retriever": control}
    kwargs.pop("retriever_kwargs", None)
    kwargs.pop("retriever_cache", None)
    return kwargs


def evaluate_controls(
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    controls: Sequence[str] = CONTROLS,
    **kwargs: Any,
) -> list[EvalResult]:
    """The ``agent`` baseline under each control retriever (``empty``: no documents;
    ``random``: documents drawn at random from the corpus), as rows ``agent@<control>``
    whose settings hold ``control``. Beside the agent's own row they show what search is
    worth: a policy whose EM does not drop under ``empty`` is not using it."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("baseline", "name", "base_env")}
    given = kwargs.pop("settings", None) or {}
    results = []
    for control in controls:
        result = evaluate_model(
            policy,
            control_env_kwargs(env_kwargs, control),
            baseline="agent",
            name=f"agent@{control}",
            settings={**given, "control": control, "controls": "agent"},
            **kwargs,
        )
        results.append(result)
    return results


def scripted_controls(
    policy_name: str, controls: Sequence[str] = CONTROLS, **kwargs: Any
) -> list[EvalResult]:
    """:func:`evaluate_scripted` under each control retriever, as rows ``<policy>@<control>``
    (the oracle under ``empty`` shows the questions need retrieval)."""
    run_keys = ("limit", "seed", "batch_size", "show_progress")
    env_kwargs = {k: v for k, v in kwargs.items() if k not in run_keys}
    run = {"show_progress": False, **{k: v for k, v in kwargs.items() if k in run_keys}}
    results = []
    for control in controls:
        result = evaluate_scripted(policy_name, **run, **control_env_kwargs(env_kwargs, control))
        result.name = f"{policy_name}@{control}"
        result.settings |= {"control": control, "controls": policy_name}
        results.append(result)
    return results


def _cache_settings(env: MultiHopSearchEnv) -> dict[str, Any]:
    """The query cache's hit rate, when the env's retriever is a persistent cache."""
    stats = getattr(env.retriever, "stats", None)
    if not callable(stats) or not hasattr(env.retriever, "path"):
        return {}
    return {"retrieval_cache_hit_rate": round(float(stats()["hit_rate"]), 4)}


def describe_env(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Dataset, split, corpus and retriever as short strings (loaded objects by kind)."""

    def name(value: Any, default: str) -> str:
        if value is None:
            return default
        if isinstance(value, (str, Path)):
            return str(value)
        if isinstance(value, Sequence):
            return f"{len(value)} in-memory samples"
        return type(value).__name__

    return {
        "dataset": name(env_kwargs.get("dataset"), "synthetic"),
        "split": env_kwargs.get("split", "train"),
        "corpus": name(env_kwargs.get("corpus"), "the dataset's own"),
        "retriever": name(env_kwargs.get("retriever"), "bm25"),
    }


def _decode_dtype(policy: Any, rollout_dtype: str | None) -> str:
    """The dtype the evaluation decodes in: ``rollout_dtype`` with ``auto`` resolved for the
    policy's device, or the policy's own (None, or ``auto`` where bf16 is not native)."""
    from algorithms.precision import AUTO, resolve_precision

    parameter = next(policy.model.parameters())
    if rollout_dtype == AUTO:
        rollout_dtype = resolve_precision(AUTO, parameter.device)
    return rollout_dtype or str(parameter.dtype).removeprefix("torch.")


def _decoding_policy(
    policy: Any, rollout_dtype: str | None, pack_weights: bool, fused: bool = True
) -> Any:
    """The policy itself, or one rollout copy made once for the whole evaluation."""
    from algorithms.precision import AUTO, resolve_precision

    if rollout_dtype == AUTO:
        rollout_dtype = resolve_precision(AUTO, next(policy.model.parameters()).device)
    if rollout_dtype is None and not pack_weights:
        return policy
    from algorithms.precision import rollout_torch_dtype
    from algorithms.rollout import rollout_copy

    dtype = rollout_torch_dtype(rollout_dtype)
    model = rollout_copy(policy.model, dtype, pack_weights=pack_weights, fused=fused)
    name = getattr(policy, "name", type(policy).__name__)
    return SimpleNamespace(model=model, tokenizer=policy.tokenizer, name=name)


def _write_token_transcripts(
    path: str | Path,
    trajectories: Sequence[Any],
    policy: Any,
    source: str,
    questions: dict[str, str],
) -> None:
    from algorithms.transcripts import transcript_record, write_transcripts

    records = [
        transcript_record(
            t,
            policy.tokenizer,
            source=source,
            extra={"question": questions.get(t.info.get("question_id"), "")},
        )
        for t in trajectories
    ]
    write_transcripts(path, records)


def _episode_record(trajectory: Any, baseline: str, tokenizer: Any) -> dict[str, Any]:
    """The env's final info plus reward, lengths and the decoded transcript."""
    info = dict(trajectory.info)
    retrievals = 0 if baseline == "direct" else 1 if baseline == "rag" else info.get("searches", 0)
    return {
        **info,
        "reward": trajectory.reward,
        "finish_reason": trajectory.finish_reason,
        "response_tokens": trajectory.n_generated,
        "retrievals": retrievals,
        **transcript(trajectory, tokenizer),
    }


def transcript(trajectory: Any, tokenizer: Any) -> dict[str, Any]:
    """The exact text the model saw and wrote: ``prompt`` and ``turn_texts`` (each the model's
    text and the observation that followed it), decoded from the trajectory's tokens."""
    ids = trajectory.response_ids
    spans = list(trajectory.turn_spans)
    turns = []
    for i, (start, end) in enumerate(spans):
        after = spans[i + 1][0] if i + 1 < len(spans) else len(ids)
        turns.append(
            {
                "model": tokenizer.decode(ids[start:end]),
                "observation": tokenizer.decode(ids[end:after]),
            }
        )
    return {"prompt": tokenizer.decode(trajectory.prompt_ids), "turn_texts": turns}
