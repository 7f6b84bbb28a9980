"""Cooperative multi-agent search: role-specialised agents solve one question together.

A team of agents (by default a ``planner``, a ``searcher`` and an ``answerer``) takes turns
writing text on a shared board. Under the board lies one ordinary
:class:`~research_env.episode.Episode` of ``ReSearch-MultiHop-v0``: a turn whose action
its role may take (a search for the searcher, an answer for the answerer) is played as a
turn of that episode, through :meth:`SearchVectorEnv.step_turns
<research_env.vector.SearchVectorEnv.step_turns>`, so parsing, retrieval (one call for
every game that searches in a step), format checks and rewards are the single-agent code.
Every other turn is a message to the team.

- :class:`CooperativeSearchEnv`: the PettingZoo ``ParallelEnv`` (one game);
  :func:`aec_env` gives the AEC form through PettingZoo's ``parallel_to_aec``.
- :class:`TeamGames`: many games stepped as one batch (what the LLM team rollout driver
  above this package plays, and what the ParallelEnv wraps, with one game).

PettingZoo is imported only by the ParallelEnv (``pip install research-gym[multiagent]``).

Why one file of ~550 lines: it is one idea, the team game (roles, turn order, messages,
shaping) over one shared episode; most of its length is the protocol documented in the
class docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from research_env.actions import TagActions
from research_env.episode import TurnOutcome
from research_env.protocol import clean_text, parse_turn
from research_env.rewards import EpisodeRecord, supporting_recall
from research_env.spaces import FreeText
from research_env.templates import PromptTemplate, get_template
from research_env.termination import Termination
from research_env.vector import SearchVectorEnv

try:  # PettingZoo is an optional dependency; TeamGames works without it.
    from pettingzoo import ParallelEnv
except ImportError:  # pragma: no cover - exercised only without the extra
    ParallelEnv = object  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class Role:
    """One agent of the team.

    Attributes:
        name: the agent id (also the ``from`` of its messages).
        instructions: what the role does, shown at the top of its prompt.
        actions: which episode actions the role may take: ``"search"``, ``"answer"``. A turn
            is played in the shared episode when :func:`~research_env.protocol.parse_turn`
            finds one of them; otherwise it is a message to the team.
        stop_strings: strings that end the role's turn when an LLM writes it.
    """

    name: str
    instructions: str
    actions: frozenset[str] = frozenset()
    stop_strings: tuple[str, ...] = ()


ROLES: dict[str, Role] = {
    "planner": Role(
        "planner",
        "You are the planner. Break the question into simple sub-questions that each need "
        "one search, and use the facts found so far. On your turn, write the next "
        "sub-question for the searcher inside <plan> and </plan>.",
        stop_strings=("</plan>",),
    ),
    "searcher": Role(
        "searcher",
        "You are the searcher. On your turn, turn the planner's latest sub-question into a "
        "short search query inside <search> and </search>. The documents found are shown "
        "to the whole team.",
        actions=frozenset({"search"}),
        stop_strings=("</search>",),
    ),
    "answerer": Role(
        "answerer",
        "You are the answerer. On your turn, if the documents found so far answer the "
        "question, write <answer>The answer is \\boxed{short answer}</answer>; otherwise "
        "say what is still missing inside <request> and </request>.",
        actions=frozenset({"answer"}),
        stop_strings=("</answer>", "</request>"),
    ),
    # The single-agent protocol as a one-member team: search and answer.
    "solo": Role(
        "solo",
        "You work alone. Search with <search>query</search> as often as you need; when you "
        "know the answer, write <answer>The answer is \\boxed{short answer}</answer>.",
        actions=frozenset({"search", "answer"}),
        stop_strings=("</search>", "</answer>"),
    ),
}
DEFAULT_TEAM = ("planner", "searcher", "answerer")


@dataclass
class RoleStats:
    """What one role did in a game (shaping functions and the final info read it)."""

    role: str
    turns: int = 0
    episode_turns: int = 0  # turns played in the shared episode (searches, answers)
    off_role_turns: int = 0  # turns holding a search/answer the role may not take
    chars: int = 0  # characters written

    def as_info(self) -> dict[str, int]:
        return {
            "role_chars": self.chars,
            "role_turns": self.turns,
            "role_episode_turns": self.episode_turns,
            "role_off_role_turns": self.off_role_turns,
        }


RoleShaping = Callable[[EpisodeRecord, RoleStats], float]


def support_shaping(record: EpisodeRecord, stats: RoleStats) -> float:
    """0.2 x the share of the question's supporting documents retrieved (0 when unknown)."""
    return 0.2 * (supporting_recall(record.metadata, record.retrieved_doc_ids) or 0.0)


def off_role_shaping(record: EpisodeRecord, stats: RoleStats) -> float:
    """-0.1 per turn in which the role tried an action that is not its own."""
    return -0.1 * stats.off_role_turns


def brevity_shaping(record: EpisodeRecord, stats: RoleStats) -> float:
    """-0.05 per 100 characters the role wrote: talk is not free."""
    return -0.0005 * stats.chars


SHAPINGS: dict[str, RoleShaping] = {
    "support": support_shaping,
    "off-role": off_role_shaping,
    "brevity": brevity_shaping,
}

MESSAGE = '\n<message from="{role}">\n{text}\n</message>\n'
TURN_CUE = '<turn role="{role}"/>\n'


@dataclass
class AgentStep:
    """One game's step for every agent: PettingZoo's five dicts."""

    observations: dict[str, dict[str, Any]]
    rewards: dict[str, float]
    terminations: dict[str, bool]
    truncations: dict[str, bool]
    infos: dict[str, dict[str, Any]]

    @property
    def done(self) -> bool:
        return any(self.terminations.values()) or any(self.truncations.values())


@dataclass
class _Game:
    question: str = ""
    steps: int = 0
    stats: dict[str, RoleStats] = field(default_factory=dict)
    transcript: list[str] = field(default_factory=list)
    done: bool = True


class TeamGames:
    """``num_games`` team games stepped together over one :class:`SearchVectorEnv`.

    Game ``g`` is sub-env ``g`` of :attr:`vector` (autoreset disabled): its episode is the
    team's shared episode. :meth:`step` takes the acting agent's text for each live game,
    plays every search / answer through one ``step_turns`` call (one retriever call), and
    returns an :class:`AgentStep` per game. See :class:`CooperativeSearchEnv` for the
    protocol; the arguments are its own.
    """

    def __init__(
        self,
        num_games: int = 1,
        *,
        roles: Sequence[str | Role] = DEFAULT_TEAM,
        turn_order: Sequence[str] | None = None,
        shaping: Mapping[str, str | RoleShaping] | None = None,
        max_steps: int | None = None,
        vector: SearchVectorEnv | None = None,
        **env_kwargs: Any,
    ) -> None:
        resolved = [ROLES[r] if isinstance(r, str) else r for r in roles]
        if not resolved or len({r.name for r in resolved}) != len(resolved):
            raise ValueError("roles must be a non-empty list of distinct roles")
        self.roles = {r.name: r for r in resolved}
        self.agents = [r.name for r in resolved]
        self.turn_order = list(turn_order or self.agents)
        unknown = set(self.turn_order) - set(self.roles)
        if not self.turn_order or unknown:
            raise ValueError(f"turn_order names unknown roles {sorted(unknown)}")
        self.shaping = {
            role: SHAPINGS[s] if isinstance(s, str) else s for role, s in (shaping or {}).items()
        }
        if set(self.shaping) - set(self.roles):
            raise ValueError(f"shaping names unknown roles {sorted(set(self.shaping))}")
        if vector is None:
            # The board shows documents in the template's result block; the team's episode
            # has no prefill (nobody's turn continues an opened <think>).
            template = replace(
                get_template(env_kwargs.pop("template", "research-chat")), prefill=""
            )
            vector = SearchVectorEnv(
                num_games, autoreset_mode=AutoresetMode.DISABLED, template=template, **env_kwargs
            )
        if not isinstance(vector.template.actions, TagActions):
            raise ValueError(
                f"the team env speaks the tag protocol; template {vector.template.name!r} uses "
                "another action format (tool calls): choose a tag template such as "
                "'research-chat' or 'search-r1'"
            )
        self.vector = vector
        max_turns = vector.envs[0].rules.max_turns
        self.max_steps = max_steps or len(self.turn_order) * max_turns
        self.games = [_Game() for _ in range(vector.num_envs)]

    @property
    def num_games(self) -> int:
        return self.vector.num_envs

    @property
    def template(self) -> PromptTemplate:
        return self.vector.template

    def resized(self, num_games: int) -> TeamGames:
        """The same team over ``num_games`` games (see :meth:`SearchVectorEnv.resized`)."""
        other = object.__new__(TeamGames)
        other.__dict__.update(self.__dict__)
        other.vector = self.vector.resized(num_games)
        other.games = [_Game() for _ in range(num_games)]
        return other

    def acting(self, game: int) -> str:
        """The agent whose turn it is in ``game``."""
        return self.turn_order[self.games[game].steps % len(self.turn_order)]

    def prompt(self, role: str, question: str) -> str:
        """An agent's prompt: its role, the team, the message protocol and the question."""
        team = ", ".join(self.agents)
        order = ", ".join(self.turn_order)
        return (
            f"{self.roles[role].instructions}\n\n"
            f"Your team: {team}. Turns go {order}, then again from the start. Teammates' "
            'messages appear as <message from="role">...</message> and the documents a '
            f"search finds as <{self.template.result_tag}>...</{self.template.result_tag}>. "
            'When it is your turn you see <turn role="' + role + '"/>.\n\n'
            f"Question: {question}\n"
        )

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> list[tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]]:
        """Start every game; ``options`` as :meth:`SearchVectorEnv.reset` (``index``,
        ``question_id`` or ``indices``). Returns ``(observations, infos)`` per game."""
        _, infos = self.vector.reset(seed=seed, options=dict(options or {}))
        out = []
        for g in range(self.num_games):
            question = str(infos["question"][g])
            self.games[g] = _Game(
                question=question,
                stats={a: RoleStats(a) for a in self.agents},
                transcript=[f"Question: {question}\n"],
                done=False,
            )
            first = self.acting(g)
            observations = {
                a: self._observation(self.prompt(a, question), a, first) for a in self.agents
            }
            base = {"question_id": str(infos["question_id"][g]), "index": int(infos["index"][g])}
            out.append((observations, {a: {**base, **self._turn_info(g, a)} for a in self.agents}))
        return out

    def step(self, actions: Mapping[int, Any]) -> dict[int, AgentStep]:
        """One turn in each game of ``actions`` (``{game: the acting agent's text}``)."""
        texts: dict[int, str] = {}
        to_episode: dict[int, str] = {}
        for g, action in actions.items():
            if self.games[g].done:
                raise RuntimeError(f"game {g} is over: reset it first")
            text = clean_text(action) if isinstance(action, str) else ""
            texts[g] = text
            role = self.roles[self.acting(g)]
            kind = parse_turn(text).kind
            stats = self.games[g].stats[role.name]
            stats.turns += 1
            stats.chars += len(text)
            if kind in role.actions:
                to_episode[g] = text
                stats.episode_turns += 1
            elif kind != "invalid":
                stats.off_role_turns += 1
        outcomes = self.vector.step_turns(to_episode)
        over_budget = [
            g
            for g in texts
            if not (g in outcomes and outcomes[g].done)
            and self.games[g].steps + 1 >= self.max_steps
        ]
        if over_budget:
            outcomes |= self.vector.end_early(over_budget, Termination.TURN_BUDGET)
        results = {}
        for g, text in texts.items():
            actor = self.acting(g)
            self.games[g].steps += 1
            results[g] = self._after_turn(g, actor, text, outcomes.get(g))
        return results

    def end_early(self, games: Sequence[int], reason: Termination) -> dict[int, AgentStep]:
        """End these games between steps (a rollout's token budget, say); scored as usual."""
        outcomes = self.vector.end_early(list(games), reason)
        return {g: self._finish(g, {a: "" for a in self.agents}, outcomes[g]) for g in games}

    def render(self, game: int = 0) -> str:
        return "".join(self.games[game].transcript)

    # -- helpers ------------------------------------------------------------------

    def _after_turn(self, g: int, actor: str, text: str, outcome: TurnOutcome | None) -> AgentStep:
        documents = outcome.observation if outcome is not None else ""
        message = MESSAGE.format(role=actor, text=text)
        self.games[g].transcript.append(message + documents)
        increments = {a: documents if a == actor else message + documents for a in self.agents}
        if outcome is not None and outcome.done:
            return self._finish(g, increments, outcome)
        nxt = self.acting(g)
        return AgentStep(
            observations={a: self._observation(increments[a], a, nxt) for a in self.agents},
            rewards=dict.fromkeys(self.agents, 0.0),
            terminations=dict.fromkeys(self.agents, False),
            truncations=dict.fromkeys(self.agents, False),
            infos={a: self._turn_info(g, a) for a in self.agents},
        )

    def _finish(self, g: int, increments: Mapping[str, str], outcome: TurnOutcome) -> AgentStep:
        game = self.games[g]
        game.done = True
        record = self.vector.envs[g].episode.record  # type: ignore[union-attr]
        rewards = {}
        for a in self.agents:
            bonus = self.shaping[a](record, game.stats[a]) if a in self.shaping else 0.0
            rewards[a] = float(outcome.reward) + float(bonus)
        return AgentStep(
            observations={a: self._observation(increments[a], a, None) for a in self.agents},
            rewards=rewards,
            terminations=dict.fromkeys(self.agents, outcome.terminated),
            truncations=dict.fromkeys(self.agents, outcome.truncated),
            infos={
                a: {
                    **outcome.info,
                    "team_reward": float(outcome.reward),
                    "role": a,
                    "steps": game.steps,
                    **game.stats[a].as_info(),
                }
                for a in self.agents
            },
        )

    @staticmethod
    def _observation(text: str, agent: str, acting: str | None) -> dict[str, Any]:
        if acting == agent:
            text += TURN_CUE.format(role=agent)
        return {"text": text, "acting": int(acting == agent)}

    def _turn_info(self, g: int, agent: str) -> dict[str, Any]:
        return {"role": agent, "acting": self.acting(g) == agent, "steps": self.games[g].steps}


class CooperativeSearchEnv(ParallelEnv):  # type: ignore[misc,valid-type]
    """Role-specialised agents answer one multi-hop question together (PettingZoo Parallel API).

    ## Description
    One question of ``ReSearch-MultiHop-v0`` is solved by a team of LLM agents that take
    turns on a shared message board. By default the ``planner`` writes the next
    sub-question (``<plan>...</plan>``), the ``searcher`` turns it into a query
    (``<search>query</search>``) whose documents every agent then sees, and the
    ``answerer`` either commits the final answer (``<answer>The answer is
    \\boxed{...}</answer>``) or says what is missing (``<request>...</request>``). Roles and
    the turn order are arguments (the ``solo`` role, with a one-role team, is the
    single-agent env).

    Under the board lies one :class:`~research_env.episode.Episode`, the same state machine
    as the single-agent env's: a turn whose :func:`~research_env.protocol.parse_turn` kind
    is an action its role may take (``Role.actions``) is played as a turn of that episode;
    any other turn is only a message. So the team's searches and answer are judged by the
    single-agent protocol and reward, and the team's "response" (what the format check
    reads) is the searcher's and answerer's episode turns with the documents between them.

    ## Message protocol
    Each agent's context is its prompt followed, in order, by its own turns and its
    observations. An observation is the board's increment since the agent's last one:

    - a teammate's turn, as ``\\n<message from="ROLE">\\nTEXT\\n</message>\\n``;
    - after a search, the documents, as the template's block
      ``\\n<result>\\nDoc 1 (Title: ...) ...\\n</result>\\n`` (the searcher itself sees only
      this block after its own turn, exactly as in the single-agent env);
    - when it is the agent's turn next, the cue ``<turn role="ROLE"/>\\n`` at the end.

    Its own turns are not echoed back to it. Golden answers never appear on the board.

    ## Action Space
    ``FreeText``: one turn of text per agent. Only the acting agent's action is read (the
    others may send ``""``; their actions are ignored, which is what lets the AEC form
    and ``parallel_api_test`` step every agent).

    ## Observation Space
    ``Dict({"text": FreeText, "acting": Discrete(2)})``: the increment above, and 1 when
    the agent must write the next turn.

    ## Rewards
    0 until the game ends; then every agent gets the team reward: the episode's reward
    function (``reward``, default ``research``) of the final answer, minus ``search_cost``
    per search; plus, for roles listed in ``shaping``, a per-role term of the episode
    record and the role's :class:`RoleStats` (named: ``support``, 0.2 x supporting-doc
    recall; ``off-role``, -0.1 per turn that tried another role's action; ``brevity``, -0.05
    per 100 characters written; or a callable).

    ## Starting State
    ``reset(seed=..., options={"index": i} or {"question_id": id})`` (other option keys are
    ignored); the first agent of ``turn_order`` acts first.

    ## Episode End
    Terminated for every agent when the answerer (a role with ``"answer"``) answers.
    Truncated when the episode's ``max_turns`` searches pass without an answer, or after
    ``max_steps`` turns in all (default ``len(turn_order) * max_turns``). The final info of
    each agent is the episode's (``em``, ``f1``, ``prediction``, ``searches``,
    ``termination`` ...) plus ``team_reward``, ``role`` and the role's turn counts.

    ## Arguments
    - ``roles=("planner", "searcher", "answerer")``: role names from :data:`ROLES` or
      :class:`Role` objects; they are the agent ids.
    - ``turn_order=None``: the order of turns, repeated (default: ``roles``' order).
    - ``shaping=None``: ``{role: "support" | "off-role" | "brevity" | callable}``.
    - ``max_steps=None``: cap on turns per game.
    - ``max_action_chars=100_000``, ``max_observation_chars=200_000``: text space bounds.
    - ``render_mode=None``: ``"ansi"`` returns, ``"human"`` prints, the board.
    - ``**env_kwargs``: :class:`~research_env.env.MultiHopSearchEnv` arguments (dataset,
      split, retriever, top_k, max_turns, reward, template -- whose documents block is
      used; its prefill is dropped).

    ## Version History
    - v0: initial release.
    """

    metadata = {"name": "research_multihop_team_v0", "render_modes": ["human", "ansi"]}  # noqa: RUF012

    def __init__(
        self,
        roles: Sequence[str | Role] = DEFAULT_TEAM,
        turn_order: Sequence[str] | None = None,
        shaping: Mapping[str, str | RoleShaping] | None = None,
        max_steps: int | None = None,
        max_action_chars: int = 100_000,
        max_observation_chars: int = 200_000,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.team = TeamGames(
            1,
            roles=roles,
            turn_order=turn_order,
            shaping=shaping,
            max_steps=max_steps,
            **env_kwargs,
        )
        self.max_action_chars = max_action_chars
        self.possible_agents = list(self.team.agents)
        self.agents: list[str] = []
        self.action_spaces = {a: FreeText(max_action_chars) for a in self.possible_agents}
        self.observation_spaces = {
            a: gym.spaces.Dict(
                {"text": FreeText(max_observation_chars), "acting": gym.spaces.Discrete(2)}
            )
            for a in self.possible_agents
        }

    def observation_space(self, agent: str) -> gym.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gym.Space:
        return self.action_spaces[agent]

    @property
    def acting_agent(self) -> str | None:
        """The agent whose turn it is (None when no game is running)."""
        return self.team.acting(0) if self.agents else None

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        known = {k: v for k, v in (options or {}).items() if k in ("index", "question_id")}
        ((observations, infos),) = self.team.reset(seed=seed, options=known)
        self.agents = list(self.possible_agents)
        return observations, infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("call reset() before step(); the game is over or never began")
        action = actions.get(self.team.acting(0), "")
        if isinstance(action, str):
            action = action[: self.max_action_chars]
        result = self.team.step({0: action})[0]
        if result.done:
            self.agents = []
        if self.render_mode == "human":
            print(self.team.games[0].transcript[-1], end="", flush=True)
        return (
            result.observations,
            result.rewards,
            result.terminations,
            result.truncations,
            result.infos,
        )

    def render(self) -> str | None:
        text = self.team.render(0)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        self.team.vector.close()


def parallel_env(**kwargs: Any) -> CooperativeSearchEnv:
    """The team env, Parallel API (PettingZoo's module-level convention)."""
    return CooperativeSearchEnv(**kwargs)


def aec_env(**kwargs: Any) -> Any:
    """The team env, AEC API: ``parallel_to_aec`` of :class:`CooperativeSearchEnv`; agents
    act one after another, and the game moves one turn when every live agent has acted."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(CooperativeSearchEnv(**kwargs))


env = aec_env  # PettingZoo's convention: ``env()`` is the AEC form
