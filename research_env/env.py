"""``ReSearch-MultiHop-v0``: answer multi-hop questions by searching a corpus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from research_env.data.types import QASample
from research_env.episode import Episode, EpisodeRules, InvalidTurnPolicy, TurnOutcome
from research_env.protocol import FormatMode
from research_env.retrievers.base import Retriever, as_hits, retrieve
from research_env.rewards import RewardFn, get_reward
from research_env.shaping import SearchShaping
from research_env.sources import resolve_dataset, resolve_retriever
from research_env.spaces import FreeText
from research_env.storage import cache_root
from research_env.templates import PromptTemplate, get_template
from research_env.termination import Termination


class UnsupportedRenderMode(TypeError, ValueError):
    """A ``render_mode`` the env cannot draw. A ``TypeError`` too, because that is how
    Stable-Baselines3's ``make_vec_env`` learns that an env takes no ``rgb_array``: it
    passes ``render_mode="rgb_array"``, catches ``TypeError`` and makes the env without it."""


class MultiHopSearchEnv(gym.Env[str, str]):
    """Answer a multi-hop question by searching a document corpus.

    ## Description
    Each episode poses one question from a QA dataset. The agent is a language model
    whose every action is one assistant turn of text. It may think in
    ``<think>...</think>``, search the corpus with ``<search>query</search>``, and
    finish with ``<answer>...</answer>`` (ideally ``\\boxed{short answer}`` inside), as
    in the ReSearch and Search-R1 papers. Searching is how the agent learns facts it
    does not know; the default dataset is a fictional world no model has memorized.

    ## Action Space
    ``FreeText(max_action_chars)``: one assistant turn. Any string is valid input.
    A turn holding ``<answer>`` ends the episode. Otherwise a turn with a complete
    ``<search>...</search>`` runs its *last* query. A turn with neither is invalid.
    With ``template="tool-call"`` the turn searches by calling a ``search`` tool
    (``<tool_call>{"name": "search", "arguments": {"query": ...}}</tool_call>``) and
    answers in plain text with ``\\boxed{}``; a malformed call is an invalid turn whose
    step ``info`` says why (:mod:`research_env.tool_calls`).

    ## Observation Space
    ``FreeText(max_observation_chars)``. ``reset`` returns the prompt (instructions,
    a worked example for the default template, the question, and the template's
    prefill such as ``<think>``). After a search, the observation is the retrieved
    documents: ``\\n<result>\\nDoc 1 (Title: ...) ...\\n</result>\\n``. After an invalid
    turn it is a short correction (or the episode ends, see ``on_invalid``). The final
    observation is the empty string. Observations are increments: the agent's context
    is the prompt followed by its turns and these observations, in order. With the
    ``tool-call`` template, documents come back inside ``<tool_response>``, the step
    ``info["message"]`` holds the same reply as a chat message (a ``tool`` message, or a
    ``user`` correction) for a trainer to render with its chat template, and the reset
    ``info["tools"]`` holds the search tool's JSON schema.

    ## Rewards
    0 on every non-final step. At the end, ``reward`` (a name or a callable of the
    :class:`~research_env.rewards.EpisodeRecord`) scores the episode:
    ``research`` (default; 0 if malformed, token F1 when > 0, else 0.1),
    ``search-r1`` (exact match), ``em``, ``f1``, or ``research+support`` (``research``
    plus 0.2 x the share of the question's supporting documents retrieved, for well-formed
    responses); minus ``search_cost`` per search.
    With ``shaping`` (off by default) the env also pays step-level search rewards
    (:mod:`research_env.shaping`): a search turn's reward is its shaping terms, the answer
    turn's is the answer reward plus its terms, and the final ``info`` keeps the answer's
    own reward as ``answer_reward`` and each term's episode total in ``shaping``.
    A response is malformed when it breaks the protocol (see
    :func:`research_env.protocol.is_valid_format`), answers with several different
    answers, or answers without searching when ``require_search=True``.

    ## Starting State
    A question drawn uniformly from the split with the env's own seeded generator;
    ``reset(options={"index": i})`` (or ``{"question_id": id}``) picks one, so a
    group of envs can play the same question.

    ## Episode End
    Terminated when the agent answers (or on an invalid turn with
    ``on_invalid="terminate"``). Truncated after ``max_turns`` turns without an answer;
    the truncated episode still gets its final reward from the same reward function
    (usually the malformed one). Never both. A trainer may also end an episode between
    turns with :meth:`end_early` (token budget: truncated; EOS: terminated). The final
    ``info`` holds ``prediction``, ``golden_answers``, ``em``, ``f1``, ``format_valid``,
    ``searches``, ``turns``, ``retrieved_doc_ids``, ``termination`` (a
    :class:`~research_env.termination.Termination` value: answered, turn_budget,
    invalid_output, token_budget, eos),
    ``supporting_recall`` when the dataset lists supporting documents, and ``hops`` /
    ``type`` when known. When ``format_valid`` is False it also holds why:
    ``invalid_reason``, a stable code (``no_answer``, ``unclosed_answer``,
    ``multiple_answers``, ``conflicting_answers``, ``invalid_turn`` for a turn the env had
    to correct, ``repeated_prefill`` for a first turn that opens the prefilled ``<think>``
    again, ``unclosed_think``, ``unboxed_answer``, ``search_without_result``,
    ``answered_without_search``, ...; see
    :data:`research_env.episode.INVALID_REASONS`), and ``invalid_detail``, a sentence
    saying the same for people. Golden answers never appear in an observation.

    ## Arguments
    - ``dataset="synthetic"``: a dataset name, a FlashRAG jsonl file, a directory of
      ``<split>.jsonl`` files, or a list of :class:`QASample`.
    - ``split="train"``: which split to draw questions from.
    - ``retriever="bm25"``: a registered retriever name or any object with
      ``search(queries, k)``.
    - ``corpus=None``: corpus jsonl for a named retriever (default: the dataset's own).
    - ``top_k=3``: documents per search. ``max_turns=5``: turn budget (a 4-hop
      question needs four searches and an answer).
    - ``reward="research"``: reward name or callable. ``template="research"``: prompt
      template name, :class:`PromptTemplate`, or a format string with ``{question}``.
    - ``reward_kwargs=None``: arguments of a reward built from them, e.g. the LLM judge
      (``reward="judge"``, ``reward_kwargs={"url": "http://host:8000/v1"}``;
      :class:`~research_env.rewards.JudgeReward`).
    - ``on_invalid="correct"``: ``"correct"`` (reply with a correction, Search-R1
      style) or ``"terminate"``. ``format_mode="strict"``: ``"strict"`` (ReSearch
      rules) or ``"loose"`` (just one answer block).
    - ``search_cost=0.0``, ``require_search=False``: guards against reward gaming.
    - ``shaping=None``: step-level search rewards, a mapping of term weights such as
      ``{"retrieval_gain": 0.2, "redundant_query": 0.1, "no_search_multihop": 0.5}`` or a
      :class:`~research_env.shaping.SearchShaping`; ``None`` or all 0 = off.
    - ``max_doc_words=None``: keep only each retrieved document's first N words (then
      `` ...``) in observations; cheaper episodes to train on (Search-R1 caps
      observations too). ``None``: whole documents.
    - ``hops=None``: play only the questions with these hop counts (their ``hops``
      metadata), e.g. ``[2, 3, 4]`` to train where one search is not enough. ``None``: all.
    - ``cache_dir=None``: where generated data and indexes live
      (default ``$RESEARCH_GYM_CACHE`` or ``~/.cache/research-gym``).
    - ``retriever_kwargs=None``: passed to the retriever factory.
    - ``retriever_cache=None``: a sqlite file of query -> documents answers, keyed by the
      retriever's fingerprint (:mod:`research_env.retrievers.query_cache`): replays a
      remote or paid retriever for free. The final ``info`` then holds
      ``retrieval_cache_hit_rate`` (over the cache's life in this process).
    - ``max_action_chars``, ``max_observation_chars``: text space bounds.
    - ``render_mode=None``: ``"ansi"`` returns, ``"human"`` prints, the transcript.

    A search whose retriever raises leaves the episode unchanged, so the step can be
    retried. Many episodes searching at once: :class:`research_env.vector.SearchVectorEnv`
    (``gym.make_vec``), which makes one retriever call per step for all of them.

    ## Version History
    - v0: initial release; ``shaping`` added later (off by default, so v0 runs unchanged).
    """

    metadata = {"render_modes": ["human", "ansi"]}  # noqa: RUF012 (Gymnasium convention)

    def __init__(
        self,
        dataset: str | Path | Sequence[QASample] = "synthetic",
        split: str = "train",
        retriever: str | Retriever = "bm25",
        corpus: str | Path | None = None,
        top_k: int = 3,
        max_turns: int = 5,
        reward: str | RewardFn = "research",
        reward_kwargs: dict[str, Any] | None = None,
        template: str | PromptTemplate = "research",
        on_invalid: InvalidTurnPolicy = "correct",
        format_mode: FormatMode = "strict",
        search_cost: float = 0.0,
        require_search: bool = False,
        shaping: SearchShaping | Mapping[str, float] | None = None,
        max_doc_words: int | None = None,
        hops: Sequence[int] | None = None,
        cache_dir: str | Path | None = None,
        retriever_kwargs: dict[str, Any] | None = None,
        retriever_cache: str | Path | None = None,
        max_action_chars: int = 1_000_000,
        max_observation_chars: int = 1_000_000,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UnsupportedRenderMode(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got "
                f"{render_mode!r}: the episode is text, there are no pixels to draw"
            )
        self.render_mode = render_mode
        self.rules = EpisodeRules(
            max_turns=max_turns,
            top_k=top_k,
            on_invalid=on_invalid,
            format_mode=format_mode,
            search_cost=search_cost,
            require_search=require_search,
            shaping=SearchShaping.coerce(shaping),
            max_doc_words=max_doc_words,
        )
        self.reward_fn = get_reward(reward, reward_kwargs)
        self.template = get_template(template)
        cache = cache_root(cache_dir)
        self.samples, bundled_corpus = resolve_dataset(dataset, split, cache)
        if hops is not None:
            self.samples = with_hops(self.samples, hops, split)
        corpus = corpus or bundled_corpus
        self.retriever = resolve_retriever(retriever, corpus, cache, retriever_kwargs)
        if retriever_cache is not None:
            from research_env.retrievers.query_cache import with_query_cache

            self.retriever = with_query_cache(self.retriever, retriever_cache)
        # What the run's fingerprint hashes as the corpus (research_env.fingerprint).
        self.corpus_path = Path(corpus) if corpus is not None else None
        self._index_by_id = {s.id: i for i, s in enumerate(self.samples)}
        self.action_space = FreeText(max_action_chars)
        self.observation_space = FreeText(max_observation_chars)
        self.episode: Episode | None = None

    # -- Gymnasium API -------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        index = self._pick_index(options or {})
        sample = self.samples[index]
        self.episode = Episode(sample, self.template, self.rules, self.reward_fn)
        info = {
            "index": index,
            "question_id": sample.id,
            "question": sample.question,
            "messages": self.template.render_messages(sample.question),
            "prefill": self.template.prefill,
        }
        if self.template.tools:
            # For apply_chat_template(messages, tools=...): the template's action format
            # is tool calls (the ``tool-call`` template).
            info["tools"] = self.template.tools
        return self.episode.prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        episode = self._require_episode()
        query = episode.begin_turn(action)
        # A search that raises leaves the episode unchanged: begin_turn records nothing.
        hits = (
            None
            if query is None
            else as_hits(
                retrieve(self.retriever, [query], self.rules.top_k, [episode.sample]),
                self.retriever,
            )[0]
        )
        outcome = self.with_retrieval_stats(episode.end_turn(hits))
        if self.render_mode == "human":
            print(action + outcome.observation, end="", flush=True)
        return outcome.as_step()

    def render(self) -> str | None:
        if self.episode is None:
            return None
        text = self.episode.prompt + self.episode.record.response
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def end_early(
        self, reason: Termination = Termination.TOKEN_BUDGET
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """End the episode between turns (a token budget ran out, or the model emitted
        EOS); rewarded as usual. See :meth:`research_env.episode.Episode.end_early`."""
        return self.with_retrieval_stats(self._require_episode().end_early(reason)).as_step()

    def with_retrieval_stats(self, outcome: TurnOutcome) -> TurnOutcome:
        """``outcome``, with ``retrieval_cache_hit_rate`` in a final info when the
        retriever is a cache (anything with a ``hit_rate``)."""
        hit_rate = getattr(self.retriever, "hit_rate", None)
        if outcome.done and isinstance(hit_rate, float):
            outcome.info["retrieval_cache_hit_rate"] = hit_rate
        return outcome

    # -- helpers ------------------------------------------------------------------

    def _require_episode(self) -> Episode:
        if self.episode is None or self.episode.done:
            raise RuntimeError("call reset() before step(); the episode is over or never began")
        return self.episode

    def _pick_index(self, options: dict[str, Any]) -> int:
        unknown = set(options) - {"index", "question_id"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; use 'index' or 'question_id'"
            )
        if "question_id" in options:
            qid = options["question_id"]
            if qid not in self._index_by_id:
                raise ValueError(f"no question with id {qid!r} in this split")
            return self._index_by_id[qid]
        if "index" in options:
            raw = options["index"]
            # Integers only (NumPy's too): int() would take "3" or 2.7, and None is a TypeError.
            if isinstance(raw, bool) or not hasattr(type(raw), "__index__"):
                raise ValueError(
                    f"reset option 'index' must be an integer in [0, {len(self.samples)}), "
                    f"got {raw!r}; leave it out to draw a random question"
                )
            index = raw.__index__()
            if not 0 <= index < len(self.samples):
                raise ValueError(f"index {index} out of range: the split has {len(self.samples)}")
            return index
        return int(self.np_random.integers(len(self.samples)))


def with_hops(samples: Sequence[QASample], hops: Sequence[int], split: str) -> list[QASample]:
    """The samples whose ``hops`` metadata is one of ``hops``; a clear error when none is."""
    wanted = {int(h) for h in hops}
    kept = [s for s in samples if s.metadata.get("hops") in wanted]
    if not kept:
        known = sorted({s.metadata["hops"] for s in samples if "hops" in s.metadata})
        have = f"hop counts {known}" if known else "no 'hops' metadata on any question"
        raise ValueError(
            f"hops={sorted(wanted)} keeps no question of split {split!r}: it has {have}; "
            "choose hop counts it has, or hops=None for every question"
        )
    return kept
