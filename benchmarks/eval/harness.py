"""Evaluate a language model on a split: the search agent and two baselines, same model.

Three ways to answer with one model, so the benefit of *learning to search* is measured
against the obvious alternatives:

- ``direct``: no retrieval. One turn with the ``direct`` template; the env's retriever is
  replaced by one that returns nothing, so a model that tries to search anyway gets no
  documents (and, with ``max_turns=1``, no second turn).
- ``rag``: naive retrieval-augmented generation. The question itself is sent to the
  retriever once; its top-k documents are written into the prompt (``rag`` template), and
  the model answers in one turn (its own searches, if any, return nothing).
- ``agent``: the environment as configured (default template, multi-turn search).

All three play through the same :class:`~algorithms.rollout.RolloutEngine` in the same
vector env (:class:`~research_env.vector.SearchVectorEnv`, one retriever call per turn), so
EM/F1, format validity and response length mean the same thing in every row. Episodes are
decoded greedily with one sample per question, or sampled ``samples`` times for pass@k (the
unbiased estimator of Chen et al., 2021, on exact match).

    from benchmarks.eval.harness import evaluate_model
    result = evaluate_model(policy, {"split": "dev"}, baseline="agent", limit=50)
    print(result.overall["em"])

An optional LLM judge (:func:`make_judge`: a local model or an OpenAI-compatible endpoint)
adds a ``judge`` score: the share of answers the judge accepts as meaning a golden answer.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gymnasium.vector import AutoresetMode
from tqdm import tqdm

from benchmarks.eval.report import EvalResult
from research_env.env import MultiHopSearchEnv
from research_env.episode import Episode
from research_env.metrics import summarize
from research_env.retrievers.base import SearchHit
from research_env.templates import PromptTemplate, get_template
from research_env.vector import SearchVectorEnv

BASELINES = ("direct", "rag", "agent")
BASELINE_TEMPLATES = {"direct": "direct", "rag": "rag"}
# Extra per-episode numbers averaged next to the env's metrics.
EPISODE_METRICS = ("retrievals", "response_tokens", "judge")

# question, golden answers, prediction -> 1.0 if the judge accepts the prediction.
JudgeFn = Callable[[str, Sequence[str], str], float]


class NoRetriever:
    """A retriever with nothing in it: the baselines' answer to a search they should not make."""

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        return [[] for _ in queries]


class RetrieveOnceEnv(MultiHopSearchEnv):
    """Naive RAG as an env: on ``reset`` the question is sent to ``question_retriever``
    once and its top-k documents are written into the prompt, before the question.

    The episode's own searches go to :class:`NoRetriever`. The documents count as
    retrieved, so ``supporting_recall`` measures what the prompt held.
    """

    def __init__(self, *, question_retriever: Any, **env_kwargs: Any) -> None:
        super().__init__(**{**env_kwargs, "retriever": NoRetriever()})
        self.question_retriever = question_retriever

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        _, info = super().reset(seed=seed, options=options)
        assert self.episode is not None
        sample = self.episode.sample
        hits = self.question_retriever.search([sample.question], self.rules.top_k)[0]
        template = with_documents(self.template, hits[: self.rules.top_k])
        self.episode = Episode(sample, template, self.rules, self.reward_fn)
        self.episode.record.retrieved_doc_ids.extend(h.document.id for h in hits)
        self.episode.record.retrieved_texts.extend(h.document.contents for h in hits)
        info["messages"] = template.render_messages(sample.question)
        info["documents"] = [h.document.id for h in hits]
        return self.episode.prompt, info


def with_documents(template: PromptTemplate, hits: Sequence[SearchHit]) -> PromptTemplate:
    """``template`` whose question is preceded by a ``Documents:`` block listing ``hits``
    (the layout of the ``rag`` template's worked example)."""
    lines = [
        f"Doc {i} (Title: {h.document.title}) {h.document.text.strip()}"
        for i, h in enumerate(hits, 1)
    ]
    block = "Documents:\n" + ("\n".join(lines) if lines else "No documents found.") + "\n"
    escaped = block.replace("{", "{{").replace("}", "}}")  # the block goes into a format string
    return replace(template, question_format=escaped + template.question_format)


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
    prompt_format: str = "auto",
    rollout_dtype: str | None = None,
    pack_weights: bool = False,
    fused: bool = True,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    show_progress: bool = True,
    base_env: MultiHopSearchEnv | None = None,
) -> EvalResult:
    """Score ``policy`` (an :class:`algorithms.policy.Policy`, or anything with ``model``,
    ``tokenizer`` and ``name``) on a split, as one of :data:`BASELINES`.

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
        "pack_weights": pack_weights,
        "fused": fused,
        "questions": len(indices),
        "judge": getattr(judge, "name", type(judge).__name__) if judge is not None else None,
        **(settings or {}),
    }
    if baseline == "direct":
        recorded["retriever"] = "none"
    return EvalResult(
        name=name or baseline,
        settings=recorded,
        overall={
            **summarize_episodes(episodes, samples),
            "seconds_per_question": seconds / max(1, len(indices)),
        },
        by_hops=summarize_groups(episodes, "hops", samples),
        by_type=summarize_groups(episodes, "type", samples),
        seconds=seconds,
        episodes=episodes,
    )


def evaluate_baselines(
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    baselines: Sequence[str] = BASELINES,
    on_result: Callable[[list[EvalResult]], None] | None = None,
    **kwargs: Any,
) -> list[EvalResult]:
    """:func:`evaluate_model` for each baseline, sharing one loaded dataset and retriever.

    ``on_result(results_so_far)`` runs after each baseline (e.g. to save them, so an
    interrupted run keeps what it finished).
    """
    base = MultiHopSearchEnv(**(env_kwargs or {}))
    results: list[EvalResult] = []
    for b in baselines:
        results.append(evaluate_model(policy, env_kwargs, baseline=b, base_env=base, **kwargs))
        if on_result is not None:
            on_result(results)
    return results


# -- metrics ---------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: the chance that at
    least one of ``k`` samples drawn without replacement is correct,
    ``1 - C(n - c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass_at_k_values(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over questions, for each ``k`` in ``ks``; ``correct[q]`` lists whether
    each sample of question ``q`` was right."""
    out = {}
    for k in ks:
        scores = [pass_at_k(len(c), sum(c), k) for c in correct]
        out[f"pass@{k}"] = sum(scores) / len(scores) if scores else 0.0
    return out


def reported_ks(samples: int) -> list[int]:
    """1, the powers of two below ``samples``, and ``samples`` itself."""
    ks = {1, samples}
    k = 2
    while k < samples:
        ks.add(k)
        k *= 2
    return sorted(ks)


def summarize_episodes(episodes: Sequence[dict[str, Any]], samples: int = 1) -> dict[str, float]:
    """Means over episodes of the env's metrics and :data:`EPISODE_METRICS`, ``n`` = number
    of questions, and pass@k by exact match."""
    out = summarize(episodes, [e["reward"] for e in episodes])
    for key in EPISODE_METRICS:
        values = [float(e[key]) for e in episodes if e.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    by_question: dict[str, list[bool]] = defaultdict(list)
    for e in episodes:
        by_question[str(e["question_id"])].append(float(e.get("em") or 0.0) >= 1.0)
    out["n"] = float(len(by_question))
    if samples > 1 and by_question:
        groups = list(by_question.values())
        n = min(len(g) for g in groups)
        out |= pass_at_k_values(groups, reported_ks(n))
    return out


def summarize_groups(
    episodes: Sequence[dict[str, Any]], key: str, samples: int = 1
) -> dict[Any, dict[str, float]]:
    """:func:`summarize_episodes` per value of ``key`` (``hops`` or ``type``)."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in episodes:
        if e.get(key) is not None:
            groups[e[key]].append(e)
    return {
        value: summarize_episodes(members, samples)
        for value, members in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }


# -- judge -----------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "You grade answers to questions. Reply with one word: yes or no.\n"
    "Question: {question}\n"
    "Reference answer(s): {golden}\n"
    "Predicted answer: {prediction}\n"
    "Does the predicted answer mean the same as a reference answer?"
)


def judge_episodes(judge: JudgeFn, episodes: Sequence[dict[str, Any]]) -> None:
    """Set ``episode["judge"]``: 1.0/0.0 from ``judge``; 0.0 without calling it when there
    is no prediction. Identical (question, prediction) pairs are judged once."""
    verdicts: dict[tuple[str, str], float] = {}
    for e in episodes:
        prediction = e.get("prediction")
        if not prediction:
            e["judge"] = 0.0
            continue
        pair = (e["question"], prediction)
        if pair not in verdicts:
            verdicts[pair] = float(judge(e["question"], e["golden_answers"], prediction))
        e["judge"] = verdicts[pair]


def judge_prompt(question: str, golden: Sequence[str], prediction: str) -> str:
    return JUDGE_PROMPT.format(question=question, golden=" | ".join(golden), prediction=prediction)


class LocalJudge:
    """A Hugging Face model as judge: accepts when, after the judge prompt (through the
    chat template when it has one), the next token is likelier "yes" than "no"."""

    def __init__(self, policy: Any):
        self.model, self.tokenizer = policy.model, policy.tokenizer
        self.name = getattr(policy, "name", "local")
        self._yes = self._first_tokens(["yes", "Yes", " yes", " Yes"])
        self._no = self._first_tokens(["no", "No", " no", " No"])

    def _first_tokens(self, words: Sequence[str]) -> list[int]:
        ids = {self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}
        return sorted(ids)

    def __call__(self, question: str, golden: Sequence[str], prediction: str) -> float:
        import torch

        text = judge_prompt(question, golden, prediction)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": text}]
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text += "\nAnswer:"
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(device)).logits[0, -1].float()
        yes = torch.logsumexp(logits[self._yes], 0)
        no = torch.logsumexp(logits[self._no], 0)
        return float(yes > no)


class EndpointJudge:
    """An OpenAI-compatible chat-completions endpoint as judge (``url`` such as
    ``http://localhost:8000/v1``); accepts when the reply starts with "yes"."""

    def __init__(
        self,
        url: str,
        model: str = "default",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        client: Any = None,
    ):
        import httpx

        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.name = f"{model} @ {url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)

    def __call__(self, question: str, golden: Sequence[str], prediction: str) -> float:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": judge_prompt(question, golden, prediction)}],
            "max_tokens": 4,
            "temperature": 0.0,
        }
        response = self.client.post(self.url, json=body)
        response.raise_for_status()
        reply = response.json()["choices"][0]["message"]["content"] or ""
        return float(reply.strip().lower().startswith("yes"))


def make_judge(spec: str, model: str = "default", api_key: str | None = None) -> JudgeFn:
    """An :class:`EndpointJudge` for an ``http(s)://`` URL, else a :class:`LocalJudge` on
    ``load_policy(spec)`` (an offline name or a model directory)."""
    if spec.startswith(("http://", "https://")):
        return EndpointJudge(spec, model, api_key=api_key)
    from algorithms.policy import load_policy

    return LocalJudge(load_policy(spec))


# -- helpers ---------------------------------------------------------------------------------


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


def baseline_vector_env(
    baseline: str, env_kwargs: dict[str, Any], base: MultiHopSearchEnv, num_envs: int
) -> SearchVectorEnv:
    """A vector env of ``num_envs`` episodes of ``baseline``, over ``base``'s loaded
    samples and retriever (autoreset disabled: the rollout engine resets it)."""
    kwargs = {**env_kwargs, "dataset": base.samples, "retriever": base.retriever}
    env_class: Any = MultiHopSearchEnv
    if baseline != "agent":
        kwargs |= {"template": get_template(BASELINE_TEMPLATES[baseline]), "max_turns": 1}
    if baseline == "direct":
        kwargs["retriever"] = NoRetriever()
    if baseline == "rag":
        kwargs["question_retriever"] = kwargs.pop("retriever")
        env_class = RetrieveOnceEnv
    return SearchVectorEnv(
        num_envs, autoreset_mode=AutoresetMode.DISABLED, env_class=env_class, **kwargs
    )


def _decoding_policy(
    policy: Any, rollout_dtype: str | None, pack_weights: bool, fused: bool = True
) -> Any:
    """The policy itself, or one rollout copy made once for the whole evaluation."""
    if rollout_dtype is None and not pack_weights:
        return policy
    import torch

    from algorithms.rollout import rollout_copy

    dtype = getattr(torch, rollout_dtype) if rollout_dtype else None
    model = rollout_copy(policy.model, dtype, pack_weights=pack_weights, fused=fused)
    name = getattr(policy, "name", type(policy).__name__)
    return SimpleNamespace(model=model, tokenizer=policy.tokenizer, name=name)


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


def transcript_text(episode: dict[str, Any]) -> str:
    """One episode as readable text: prompt, then each turn and its observation."""
    parts = [episode.get("prompt", "")]
    for turn in episode.get("turn_texts", []):
        parts += [turn["model"], turn["observation"]]
    return "".join(parts)


def write_transcripts_text(result: EvalResult, path: Path) -> None:
    """A human-readable transcript file: a header per episode, then its full text."""
    with Path(path).open("w") as f:
        for e in result.episodes:
            keys = ("question_id", "sample", "prediction", "golden_answers", "em", "f1")
            header = {k: e.get(k) for k in (*keys, "format_valid")}
            f.write(f"### {json.dumps(header, ensure_ascii=False)}\n{transcript_text(e)}\n\n")
