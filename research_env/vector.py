"""``SearchVectorEnv``: many search episodes stepped together, one retriever call per step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from research_env.env import MultiHopSearchEnv
from research_env.episode import Episode, TurnOutcome
from research_env.retrievers.base import SearchHit, as_hits, retrieve
from research_env.templates import PromptTemplate
from research_env.termination import Termination

Observations = tuple[str, ...]
Actions = Sequence[str | None]


class SearchVectorEnv(VectorEnv[Observations, Actions, np.ndarray]):
    """``num_envs`` episodes of :class:`~research_env.env.MultiHopSearchEnv` stepped as one.

    ## Description
    The batched form of ``ReSearch-MultiHop-v0`` (``gym.make_vec`` builds it). Every
    sub-env plays its own question, but a step is one batch: each sub-episode's turn is
    parsed (:meth:`~research_env.episode.Episode.begin_turn`), the queries of all
    sub-episodes that search go to the retriever in **one** ``search(queries, k)`` call,
    and then each turn is finished with its hits
    (:meth:`~research_env.episode.Episode.end_turn`). The sub-envs share one dataset list
    and one retriever object, so there is one index in memory however many there are.

    ## Action Space
    A sequence of ``num_envs`` turns, one ``str`` per sub-env (see the single env). When
    autoreset is disabled, a sub-env whose episode is over takes ``None`` (it sits the
    step out); any other action for it is an error, and so is ``None`` for a live one.
    ``action_space`` batches ``single_action_space`` (``FreeText``) ``num_envs`` times.

    ## Observation Space
    A tuple of ``num_envs`` strings: per sub-env, what the single env's ``step`` returns
    (documents, a correction, or ``""`` at the end). A sub-env that sat the step out
    observes ``""``.

    ## Rewards
    Per sub-env, as the single env: 0 until the episode ends, then the reward function's
    score (with ``shaping``, each search turn's shaping terms too). A float64 array of
    shape ``(num_envs,)``.

    ## Starting State
    ``reset(seed=..., options=...)``. ``seed`` is ``None``, an int (sub-env ``i`` gets
    ``seed + i``) or one seed per sub-env. ``options`` may hold ``{"index": i}`` or
    ``{"question_id": id}`` (every sub-env plays that question, e.g. a GRPO group),
    ``{"indices": [i0, i1, ...]}`` (one question per sub-env), and Gymnasium's
    ``{"reset_mask": bool array}`` (reset only those sub-envs; ``indices`` is then still
    one entry per sub-env, read where the mask is true).

    ## Episode End
    As in the single env, per sub-env; ``infos`` is Gymnasium's dict of arrays (key
    ``k`` holds every sub-env's ``info[k]``; ``_k`` marks which sub-envs have one).
    :meth:`end_early` ends chosen sub-episodes between steps (a trainer's token budget,
    or the model's EOS). A search whose retriever raises changes no sub-episode: the
    step can be retried as it was.

    Autoreset (``autoreset_mode``): ``NEXT_STEP`` (default, Gymnasium's usual
    semantics): the step after a sub-episode ends resets that sub-env instead of
    stepping it (its action is ignored; reward 0, not terminated, the new prompt as its
    observation and the reset's info). ``DISABLED``: finished sub-episodes stay finished
    until ``reset`` (with a ``reset_mask`` for some of them); pass ``None`` for them.

    For code that handles episodes one by one (a rollout engine), :meth:`step_turns`
    is the same batched step without the array packing and the autoreset: it takes a
    ``{sub-env index: turn}`` mapping and returns each sub-env's
    :class:`~research_env.episode.TurnOutcome`, with ``info`` a plain dict.

    ## Arguments
    - ``num_envs=1``: how many episodes run together.
    - ``autoreset_mode=AutoresetMode.NEXT_STEP``: see above (``"NextStep"`` /
      ``"Disabled"`` as strings).
    - ``env_class=MultiHopSearchEnv``: the sub-env class (a subclass may, e.g., write
      documents into its prompt on reset); it gets ``env_kwargs``.
    - ``**env_kwargs``: :class:`~research_env.env.MultiHopSearchEnv` arguments, shared
      by every sub-env.

    Attributes: ``envs`` holds the sub-envs (``envs[i]`` is an ordinary
    ``MultiHopSearchEnv``: ``envs[i].episode``, ``envs[i].samples``, ``envs[i].template``).
    Stepping one of them directly (``envs[i].step``) plays its episode alone, bypassing
    the batch.

    ## Version History
    - v0: initial release (a ``SyncVectorEnv`` that pre-fetched hits before stepping;
      now a vector env whose step is the batch).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium convention)
        "render_modes": ["human", "ansi"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        env_class: Callable[..., MultiHopSearchEnv] = MultiHopSearchEnv,
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        first = env_class(**env_kwargs)
        # Later sub-envs reuse the first one's loaded dataset and retriever.
        shared = {
            **env_kwargs,
            "dataset": first.samples,
            "retriever": first.retriever,
            "reward": first.reward_fn,  # one judge (client, cache, counters) for all
        }
        make_env = partial(env_class, **shared)
        self._setup([first, *(make_env() for _ in range(num_envs - 1))], make_env, autoreset_mode)

    def _setup(
        self,
        envs: list[MultiHopSearchEnv],
        make_env: Callable[[], MultiHopSearchEnv],
        autoreset_mode: str | AutoresetMode,
    ) -> None:
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be NextStep or Disabled, got {mode.value!r}")
        self.envs = envs
        self._make_env = make_env
        self.num_envs = len(envs)
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = envs[0].render_mode
        self.single_action_space = envs[0].action_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = envs[0].observation_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        # NEXT_STEP: which sub-envs ended last step (reset instead of stepped next).
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)

    def resized(self, num_envs: int) -> SearchVectorEnv:
        """A vector env of ``num_envs`` sub-envs: this one's first ones (the same objects,
        so use one of the two afterwards, not both), plus new ones sharing the dataset
        and retriever. A rollout engine uses it to fit each batch."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        extra = [self._make_env() for _ in range(num_envs - self.num_envs)]
        other = object.__new__(type(self))
        other._setup(self.envs[:num_envs] + extra, self._make_env, self.autoreset_mode)
        return other

    @property
    def template(self) -> PromptTemplate:
        """The prompt template every sub-env renders its question with."""
        return self.envs[0].template

    @property
    def num_questions(self) -> int:
        """How many questions the shared split holds."""
        return len(self.envs[0].samples)

    # -- Gymnasium API -------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Observations, dict[str, Any]]:
        n = self.num_envs
        seeds = _per_env_seeds(seed, n)
        if isinstance(seed, int) or seed is None:
            super().reset(seed=seed)
        options = dict(options or {})
        mask = _reset_mask(options.pop("reset_mask", None), n)
        indices = options.pop("indices", None)
        if indices is not None and len(indices) != n:
            raise ValueError(f"options['indices'] needs one question index per sub-env ({n})")
        observations = [""] * n
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            env_options = options if indices is None else {**options, "index": indices[i]}
            observations[i], info = self.envs[i].reset(seed=seeds[i], options=env_options)
            infos = self._add_info(infos, info, int(i))
        self._autoreset[mask] = False
        return tuple(observations), infos

    def step(
        self, actions: Actions
    ) -> tuple[Observations, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if isinstance(actions, str) or len(actions) != n:
            raise ValueError(f"step() needs a sequence of {n} actions, one per sub-env")
        to_reset = [i for i in range(n) if self._autoreset[i]]
        turns = {i: a for i, a in enumerate(actions) if not self._autoreset[i] and a is not None}
        for i, action in enumerate(actions):
            live = self._is_live(i)
            if self._autoreset[i] or live == (action is not None):
                continue
            if live:
                raise ValueError(f"sub-env {i} is in an episode: its action must be a str")
            raise ValueError(
                f"sub-env {i} has no episode running (it ended and autoreset is disabled, or "
                "it was never reset): pass None as its action, or reset it first "
                "(reset(options={'reset_mask': mask}))"
            )
        outcomes = self.step_turns(turns)  # raises before anything changes, if it raises

        observations = [""] * n
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=np.bool_)
        truncated = np.zeros(n, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for i in to_reset:
            observations[i], info = self.envs[i].reset()
            infos = self._add_info(infos, info, i)
        for i, outcome in outcomes.items():
            observations[i], rewards[i] = outcome.observation, outcome.reward
            terminated[i], truncated[i] = outcome.terminated, outcome.truncated
            infos = self._add_info(infos, outcome.info, i)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = terminated | truncated
        return tuple(observations), rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...]:
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    # -- the batched turn ----------------------------------------------------------

    def step_turns(self, turns: Mapping[int, str]) -> dict[int, TurnOutcome]:
        """One turn for each sub-env in ``turns`` (``{sub-env index: text}``); the others
        are untouched. Every turn is begun, each retriever is called once with all the
        queries for it, then every turn is ended. If a search raises, no sub-episode has
        changed (a begun turn is recorded only when it ends)."""
        episodes = {i: self._episode(i) for i in turns}
        queries: dict[int, str] = {}
        for i, text in turns.items():
            query = episodes[i].begin_turn(text)
            if query is not None:
                queries[i] = query
        hits = self._search(queries)
        self._prefetch_rewards(episodes)
        return {
            i: self.envs[i].with_retrieval_stats(episodes[i].end_turn(hits.get(i))) for i in turns
        }

    def end_early(
        self, indices: Sequence[int], reason: Termination = Termination.TOKEN_BUDGET
    ) -> dict[int, TurnOutcome]:
        """End these sub-episodes now, between steps, for ``reason`` (``TOKEN_BUDGET``:
        truncated; ``EOS``: terminated); each is rewarded as usual. With NEXT_STEP
        autoreset, they are reset on the next step like any finished sub-episode."""
        outcomes = {
            i: self.envs[i].with_retrieval_stats(self._episode(i).end_early(reason))
            for i in indices
        }
        self._autoreset[list(outcomes)] = self.autoreset_mode == AutoresetMode.NEXT_STEP
        return outcomes

    # -- helpers ------------------------------------------------------------------

    def _search(self, queries: Mapping[int, str]) -> dict[int, list[SearchHit]]:
        """Each retriever's queries in one call; ``k`` is the largest ``top_k`` asking
        (each episode keeps its own ``top_k`` of the hits)."""
        by_retriever: dict[int, list[int]] = {}
        for i in queries:
            by_retriever.setdefault(id(self.envs[i].retriever), []).append(i)
        hits: dict[int, list[SearchHit]] = {}
        for members in by_retriever.values():
            retriever = self.envs[members[0]].retriever
            k = max(self.envs[i].rules.top_k for i in members)
            contexts = [self._episode(i).sample for i in members]
            results = retrieve(retriever, [queries[i] for i in members], k, contexts)
            if len(results) != len(members):
                raise RuntimeError(
                    f"{type(retriever).__name__}.search returned {len(results)} hit lists "
                    f"for {len(members)} queries; it must return one per query"
                )
            hits.update(zip(members, as_hits(results, retriever), strict=True))
        return hits

    def _prefetch_rewards(self, episodes: Mapping[int, Episode]) -> None:
        """Hand a batching reward (an LLM judge) all of this step's answers at once, so
        scoring them costs one batch, not one call per episode."""
        by_reward: dict[int, tuple[Any, list[tuple[str, tuple[str, ...], str]]]] = {}
        for episode in episodes.values():
            answer = episode.pending_answer()
            prefetch = getattr(episode.reward_fn, "prefetch", None)
            if answer and prefetch is not None:
                record = episode.record
                entry = by_reward.setdefault(id(episode.reward_fn), (prefetch, []))
                entry[1].append((record.question, record.golden_answers, answer))
        for prefetch, items in by_reward.values():
            prefetch(items)

    def _episode(self, i: int) -> Episode:
        if not 0 <= i < self.num_envs:
            raise IndexError(f"sub-env index {i} out of range for {self.num_envs} sub-envs")
        episode = self.envs[i].episode
        if episode is None or episode.done:
            raise RuntimeError(f"sub-env {i} has no episode running: reset it first")
        return episode

    def _is_live(self, i: int) -> bool:
        episode = self.envs[i].episode
        return episode is not None and not episode.done


def _per_env_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, int):
        return [seed + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"seed lists need one seed per sub-env ({n}), got {len(seed)}")
    return list(seed)


def _reset_mask(mask: Any, n: int) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=np.bool_)
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
        raise ValueError(
            f"options['reset_mask'] must be a bool array of shape ({n},) with a True in it"
        )
    return mask
