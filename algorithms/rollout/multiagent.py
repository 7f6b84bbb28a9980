"""Team rollouts: LLM policies play the cooperative multi-agent search env.

:class:`TeamRolloutEngine` plays many team games at once over
:class:`research_env.multiagent.TeamGames` (itself one :class:`SearchVectorEnv`, so every
step's searches go to the retriever in one call) and returns one
:class:`~algorithms.buffer.Trajectory` per role per game, which the ordinary trainer
(:meth:`OnPolicyAlgorithm.learn_from <algorithms.trainer.OnPolicyAlgorithm.learn_from>`)
trains on:

- ``prompt_ids``: that role's prompt (its instructions, the team, the question);
- ``response_ids``: its context afterwards, in order: what the board showed it (teammates'
  messages, retrieved documents, its turn cue) with loss mask 0, and its own turns with
  loss mask 1 and their sampling log-probs. An agent's loss never covers another agent's
  text or a document;
- ``reward``: the team reward plus the role's shaping, at the end; ``info["role"]``;
- ``group``: ``question * n_roles + role``: a GRPO group is one role on one question.

One policy can play every role (the role is in its prompt), or each role its own policy
(``{"planner": p1, "searcher": p2, "answerer": p3}``; train each on its role's
trajectories). Each policy decodes its acting agents in one batch on a KV cache kept across
turns (:class:`~algorithms.rollout.decoder.DecodeState`). A turn ends at one of the roles'
stop strings, EOS, or the turn budget; a game whose next observation would overflow some
agent's ``max_total_tokens`` ends with ``Termination.TOKEN_BUDGET``.

    engine = TeamRolloutEngine(policy, {"split": "train"})
    trajectories = engine.collect([3, 17], group_size=4)   # 8 games x 3 roles
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from algorithms.buffer import Trajectory
from algorithms.rollout.decoder import DecodeState
from algorithms.rollout.engine import episode_questions
from algorithms.rollout.sampling import Sampling
from research_env.multiagent import AgentStep, TeamGames
from research_env.termination import Termination


class TeamRolloutEngine:
    """Plays team games with one shared policy or one policy per role.

    Args:
        policies: an :class:`algorithms.policy.Policy` for every role, or ``{role: policy}``
            naming every role.
        env_kwargs: :class:`~research_env.multiagent.TeamGames` arguments: ``roles``,
            ``turn_order``, ``shaping``, ``max_steps`` and any ``MultiHopSearchEnv`` argument.
        sampling: default :class:`Sampling` of :meth:`collect`.
    """

    def __init__(
        self,
        policies: Any,
        env_kwargs: Mapping[str, Any] | None = None,
        *,
        sampling: Sampling | None = None,
    ) -> None:
        self.games = TeamGames(1, **dict(env_kwargs or {}))
        self.agents = list(self.games.agents)
        if isinstance(policies, Mapping):
            missing = set(self.agents) - set(policies)
            if missing:
                raise ValueError(f"no policy for roles {sorted(missing)}")
            self.policies = {a: policies[a] for a in self.agents}
        else:
            self.policies = dict.fromkeys(self.agents, policies)
        self.sampling = sampling or Sampling()
        stops = {s for a in self.agents for s in self.games.roles[a].stop_strings}
        self.stop_strings = tuple(sorted(stops))

    @property
    def num_questions(self) -> int:
        return self.games.vector.num_questions

    def collect(
        self,
        question_indices: Sequence[int],
        group_size: int = 1,
        *,
        sampling: Sampling | None = None,
    ) -> list[Trajectory]:
        """Play each question ``group_size`` times. Trajectory ``g * n_roles + r`` is role
        ``r`` (in ``engine.agents`` order) of game ``g``; game ``g`` plays
        ``question_indices[g // group_size]``."""
        s = sampling or self.sampling
        questions = episode_questions(question_indices, group_size)
        n = len(questions)
        if n == 0:
            return []
        if self.games.num_games != n:
            self.games = self.games.resized(n)
        games = self.games
        starts = games.reset(seed=s.seed, options={"indices": questions})
        n_roles = len(self.agents)

        def seq(g: int, agent: str) -> int:
            return g * n_roles + self.agents.index(agent)

        trajectories: list[Trajectory] = []
        for g, (observations, _) in enumerate(starts):
            for r, agent in enumerate(self.agents):
                ids = self._encode(agent, observations[agent]["text"])
                group = (g // group_size) * n_roles + r
                trajectories.append(Trajectory(prompt_ids=ids, group=group))

        # One decode state per distinct policy, over the sequences it plays.
        states: dict[int, tuple[Any, DecodeState, list[int]]] = {}
        for policy in {id(p): p for p in self.policies.values()}.values():
            seqs = [seq(g, a) for g in range(n) for a in self.agents if self.policies[a] is policy]
            prompts = [trajectories[k].prompt_ids for k in seqs]
            capacity = max(map(len, prompts)) + s.max_turn_tokens
            states[id(policy)] = (
                policy,
                DecodeState(policy.model, prompts, capacity=capacity),
                seqs,
            )
        local = {k: (pid, i) for pid, (_, _, seqs) in states.items() for i, k in enumerate(seqs)}

        generator = None
        if s.seed is not None and not s.greedy:
            generator = torch.Generator().manual_seed(s.seed)
        used = [0] * len(trajectories)  # response tokens so far, per (game, role)
        live = list(range(n))
        while live:
            texts = self._decode_turns(games, live, states, local, trajectories, used, s, generator)
            results = games.step(texts)
            appended: dict[int, dict[int, list[int]]] = {pid: {} for pid in states}
            over = []
            for g in live:
                step = results[g]
                if step.done:
                    continue
                increments = {
                    seq(g, a): self._encode(a, obs["text"])
                    for a, obs in step.observations.items()
                    if obs["text"]
                }
                if any(used[k] + len(ids) >= s.max_total_tokens for k, ids in increments.items()):
                    over.append(g)
                    continue
                for k, ids in increments.items():
                    trajectories[k].add_observation_tokens(ids)
                    used[k] += len(ids)
                    pid, i = local[k]
                    appended[pid][i] = ids
            if over:
                results |= games.end_early(over, Termination.TOKEN_BUDGET)
            for pid, obs in appended.items():
                if obs:
                    states[pid][1].append(obs)
            finished = [g for g in live if results[g].done]
            for g in finished:
                _finish(trajectories, results[g], [seq(g, a) for a in self.agents], self.agents)
            live = [g for g in live if not results[g].done]
            if finished and live:
                for pid, (_, state, _) in states.items():
                    gone = [local[seq(g, a)][1] for g in finished for a in self.agents
                            if local[seq(g, a)][0] == pid]  # fmt: skip
                    if gone:
                        state.release(gone)
        return trajectories

    def _decode_turns(
        self,
        games: TeamGames,
        live: list[int],
        states: Mapping[int, tuple[Any, DecodeState, list[int]]],
        local: Mapping[int, tuple[int, int]],
        trajectories: list[Trajectory],
        used: list[int],
        s: Sampling,
        generator: torch.Generator | None,
    ) -> dict[int, str]:
        """The acting agent's turn in every live game, each policy decoding its agents in
        one batch; the tokens are added to the agents' trajectories (loss mask 1)."""
        n_roles = len(self.agents)
        acting = {g: g * n_roles + self.agents.index(games.acting(g)) for g in live}
        texts: dict[int, str] = {}
        for pid, (policy, state, _) in states.items():
            mine = {g: k for g, k in acting.items() if local[k][0] == pid}
            if not mine:
                continue
            budgets = {
                local[k][1]: max(1, min(s.max_turn_tokens, s.max_total_tokens - used[k]))
                for k in mine.values()
            }
            outputs = state.decode(
                max_new_tokens=budgets,
                seq_indices=list(budgets),
                sampling=s,
                stop_strings=self.stop_strings,
                tokenizer=policy.tokenizer,
                generator=generator,
            )
            for g, k in mine.items():
                out = outputs[local[k][1]]
                trajectories[k].add_model_tokens(out.token_ids, out.logprobs)
                used[k] += len(out.token_ids)
                texts[g] = policy.tokenizer.decode(out.token_ids, skip_special_tokens=True)
        return texts

    def _encode(self, agent: str, text: str) -> list[int]:
        """Token ids of a prompt or an observation, for the policy playing ``agent``."""
        tokenizer = self.policies[agent].tokenizer
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _finish(
    trajectories: list[Trajectory], step: AgentStep, seqs: Sequence[int], agents: Sequence[str]
) -> None:
    for k, agent in zip(seqs, agents, strict=True):
        trajectories[k].reward = float(step.rewards[agent])
        trajectories[k].info = step.infos[agent]
        trajectories[k].finish_reason = Termination(step.infos[agent]["termination"])
