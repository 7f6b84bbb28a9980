"""SFT warm start: behaviour cloning on demonstration episodes, with the RL machinery.

A warm start teaches a small model the protocol (think, search, read, answer in
``\\boxed{}``) before RL, so that rewards vary within a group and GRPO has something to
climb. Demonstrations become the same :class:`~algorithms.buffer.Trajectory` records
as rollouts, tokenized the way the rollout engine tokenizes (prompt once, each turn and
each observation on its own), so retrieved text has loss mask 0 and is never a target.
The loss is the masked negative log-likelihood of the demonstrated turns, the ``nll``
term of the shared objective (no advantages, no policy-gradient term):

    loss = aggregate(-log pi(token), mask)

Only the data source differs from the RL algorithms (:meth:`SFT.collect_rollouts`); the
update is the same code.

Demonstrations come from the env's oracle (``demonstrations="oracle"``: it follows each
question's decomposition and writes short ``<think>`` sentences from it; only episodes
it answers correctly are kept) or from a jsonl file of text episodes, one per line:
``{"question_id" | "index": ..., "turns": [...], "observations": [...]}`` (the shape
that ``research-env eval`` saves; ``observations[i]`` follows ``turns[i]``).
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algorithms.buffer import Trajectory
from algorithms.config import TrainConfig
from algorithms.objectives import ObjectiveTerms
from algorithms.settings import AlgorithmSettings, LossAggregation
from algorithms.trainer import OnPolicyAlgorithm
from research_env.env import MultiHopSearchEnv
from research_env.policies import OraclePolicy
from research_env.termination import Termination


@dataclass
class SFTSettings(AlgorithmSettings):
    """Behaviour cloning (the warm start, ``algo: sft``): masked NLL of demonstrated turns.
    The ``sft`` section of a TrainConfig; also accepted directly as ``SFT(settings=...)``.

    Attributes:
        demonstrations: ``oracle`` (episodes played by the env's oracle on the training
            split) or a path to a jsonl file of text episodes, such as the
            ``transcripts/agent.jsonl`` that ``research-env eval`` writes.
        successful_only: keep only demonstrations whose reward is at least ``min_reward``.
        min_reward: see above.
        loss_agg: loss aggregation mode (see :class:`~algorithms.grpo.GRPOSettings`).
    """

    demonstrations: str = "oracle"
    successful_only: bool = True
    min_reward: float = 1.0
    loss_agg: LossAggregation = "token-mean"

    def validate(
        self, config: TrainConfig, *, selected: bool, check_names: bool = True
    ) -> list[str]:
        demos = self.demonstrations
        if (
            selected
            and check_names
            and demos != "oracle"
            and not Path(demos).expanduser().is_file()
        ):
            return [
                f"sft.demonstrations (--from): {demos!r} is neither 'oracle' nor an existing "
                "jsonl file of episodes"
            ]
        return []


@dataclass
class TextEpisode:
    """An episode as text: which question, the policy's turns and the env's replies."""

    index: int
    turns: list[str]
    observations: list[str]
    reward: float = 0.0
    info: dict[str, Any] | None = None
    # The env's replies as chat messages (``info["message"]``; None where a step had none):
    # with a tool-calling template they are rendered through the chat template, as the
    # rollout engine renders them, instead of tokenizing the text observations.
    messages: list[dict[str, Any] | None] | None = None


class SFT(OnPolicyAlgorithm):
    """Supervised warm start on demonstrations, with the verbs of the RL algorithms.

    Example::

        policy = load_policy("smollm2-135m")
        sft = SFT(policy, {"split": "train"}, config, settings=SFTSettings("oracle"))
        sft.learn(20)          # 20 steps of config.rollout.questions_per_step episodes
        sft.save("runs/warm")
    """

    name = "sft"
    settings_class = SFTSettings

    def __init__(
        self,
        policy: Any,
        env_kwargs: dict[str, Any] | None = None,
        config: Any = None,
        *,
        settings: SFTSettings | None = None,
        **kwargs: Any,
    ) -> None:
        if settings is not None:
            config = copy.deepcopy(config or TrainConfig())
            config.sft = settings
        super().__init__(policy, env_kwargs, config, **kwargs)
        self._file_episodes: list[TextEpisode] | None = None

    @property
    def settings(self) -> SFTSettings:
        """The demonstration settings: ``config.sft``."""
        return self.config.sft

    # -- demonstrations -------------------------------------------------------------

    def collect_rollouts(self, step: int) -> list[Trajectory]:
        """This step's demonstrations as trajectories (one per question, group = row)."""
        env = self.engine.vector_env.envs[0]
        episodes = [self.demonstration(env, i) for i in self.question_indices(step)]
        kept = [e for e in episodes if e is not None and self._usable(e)]
        if episodes and not kept:
            print(
                f"warning: [sft step {step + 1}] no usable demonstration: none of the "
                f"{len(episodes)} {self.settings.demonstrations!r} episodes has reward >= "
                f"{self.settings.min_reward} (the retriever may not find the facts); this step "
                "learns nothing",
                file=sys.stderr,
                flush=True,
            )
        return [self.to_trajectory(env, e, group) for group, e in enumerate(kept)]

    def _usable(self, episode: TextEpisode) -> bool:
        return not self.settings.successful_only or episode.reward >= self.settings.min_reward

    def demonstration(self, env: MultiHopSearchEnv, index: int) -> TextEpisode | None:
        if self.settings.demonstrations == "oracle":
            return play_oracle(env, index)
        episodes = self._read_file(env)
        return episodes[index % len(episodes)]

    def _read_file(self, env: MultiHopSearchEnv) -> list[TextEpisode]:
        """The file's episodes; a file without one usable demonstration is an error here,
        not an empty training run."""
        if self._file_episodes is None:
            path = self.settings.demonstrations
            episodes = read_text_episodes(path, env)
            if not episodes:
                raise ValueError(f"no usable demonstration: {path} holds no episodes")
            if not any(self._usable(e) for e in episodes):
                raise ValueError(
                    f"no usable demonstration in {path}: none of its {len(episodes)} episodes "
                    f"has reward >= {self.settings.min_reward} (transcripts of a model that "
                    "answered nothing correctly, e.g. an untrained one). Use --from oracle, "
                    "transcripts of a better policy, or imitate these anyway with "
                    "--set sft.successful_only=false"
                )
            self._file_episodes = episodes
        return self._file_episodes

    @property
    def num_questions(self) -> int:
        if self.settings.demonstrations != "oracle":
            return len(self._read_file(self.engine.vector_env.envs[0]))
        return super().num_questions

    def to_trajectory(self, env: MultiHopSearchEnv, episode: TextEpisode, group: int) -> Trajectory:
        """Tokenize like the rollout engine: turns get mask 1, observations mask 0."""
        tokenizer = self.policy.tokenizer
        prompt, info = env.reset(options={"index": episode.index})
        traj = Trajectory(prompt_ids=self.engine.encode_prompt(prompt, info), group=group)
        for i, turn in enumerate(episode.turns):
            ids = tokenizer(turn, add_special_tokens=False)["input_ids"]
            traj.add_model_tokens(ids, [0.0] * len(ids))
            if i < len(episode.observations) and i < len(episode.turns) - 1:
                text = episode.observations[i]
                replies = self.engine.chat_replies
                message = episode.messages[i] if episode.messages else None
                if replies is not None and message is not None:
                    text = replies.reply(message)
                obs = tokenizer(text, add_special_tokens=False)["input_ids"]
                traj.add_observation_tokens(obs)
        traj.reward = episode.reward
        traj.info = episode.info or {}
        traj.finish_reason = Termination(traj.info.get("termination", Termination.ANSWERED))
        return traj

    # -- the loss ---------------------------------------------------------------------

    def advantage_spec(self) -> None:
        return None

    def objective_terms(self) -> ObjectiveTerms:
        return ObjectiveTerms(
            pg_coef=0.0,
            nll_coef=1.0,
            loss_agg=self.settings.loss_agg,
            norm_len=self.config.rollout.max_total_tokens,
        )


def play_oracle(env: MultiHopSearchEnv, index: int) -> TextEpisode:
    """One oracle episode on question ``index``, as text."""
    policy = OraclePolicy()
    env.reset(options={"index": index})
    total, info = 0.0, dict[str, Any]()
    messages: list[dict[str, Any] | None] = []
    while True:
        _, reward, terminated, truncated, info = env.step(policy.act(env))
        total += reward
        messages.append(info.get("message"))
        if terminated or truncated:
            break
    record = env.episode.record  # type: ignore[union-attr]
    turns, observations = list(record.turns), list(record.observations)
    return TextEpisode(index, turns, observations, total, info, messages)


def read_text_episodes(path: str | Path, env: MultiHopSearchEnv) -> list[TextEpisode]:
    """Read demonstrations saved as jsonl text episodes (see the module docstring).

    Two shapes are accepted per line: ``{"question_id" | "index", "turns": [...],
    "observations": [...]}``, and the records ``research-env eval`` writes to
    ``transcripts/<baseline>.jsonl`` (``"turn_texts": [{"model": ..., "observation": ...}]``).
    Question ids are looked up in ``env``'s dataset split.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"demonstrations file {path} does not exist; pass 'oracle' or a jsonl file of "
            "episodes (e.g. the transcripts/agent.jsonl written by research-env eval)"
        )
    index_by_id = {s.id: i for i, s in enumerate(env.samples)}
    episodes = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                episodes.append(_text_episode(json.loads(line), index_by_id))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(
                    f"{path}, line {line_no}: not a text episode ({err}); expected "
                    '{"question_id" or "index", "turns": [...], "observations": [...]} or an '
                    "eval transcript with turn_texts"
                ) from None
    return episodes


def _text_episode(data: dict[str, Any], index_by_id: dict[str, int]) -> TextEpisode:
    if "index" in data:
        index = int(data["index"])
        if not 0 <= index < len(index_by_id):
            raise ValueError(f"index {index} is outside the split's {len(index_by_id)} questions")
    else:
        qid = data["question_id"]
        if qid not in index_by_id:
            raise ValueError(
                f"question_id {qid!r} is not in this dataset split ({len(index_by_id)} "
                "questions); train on the split the episodes were played on (--split)"
            )
        index = index_by_id[qid]
    if "turn_texts" in data:
        turns = [str(t["model"]) for t in data["turn_texts"]]
        observations = [str(t["observation"]) for t in data["turn_texts"]]
    else:
        turns = [str(t) for t in data["turns"]]
        observations = [str(o) for o in data.get("observations", [])]
    reward = float(data.get("reward", 1.0))
    return TextEpisode(index, turns, observations, reward, data.get("info"))
