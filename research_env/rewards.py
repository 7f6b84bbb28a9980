"""Answer scoring (SQuAD normalization, exact match, token F1) and episode rewards.

A reward function takes the finished :class:`EpisodeRecord` and returns a float. The
named ones are in :data:`REWARDS`, those built from arguments (``reward_kwargs``: the LLM
judge, ``judge`` and ``judge+f1``) in :data:`REWARD_FACTORIES`; any callable with that
signature is accepted too.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
# One C-level pass drops every punctuation character (a generator over a 1 MB answer took
# most of a hostile env.step).
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
# Answers that are labels, not spans: partial token overlap with them means nothing.
_LABEL_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and articles, squash spaces."""
    text = text.lower()
    text = text.translate(_DROP_PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized golden answer."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golden_answers))


def _f1_single(pred: str, gold: str) -> float:
    if (pred in _LABEL_ANSWERS or gold in _LABEL_ANSWERS) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """Token F1 of the normalized prediction, max over golden answers.

    yes / no / noanswer score only on an exact match (as in HotpotQA's evaluation).
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return max((_f1_single(pred, normalize_answer(g)) for g in golden_answers), default=0.0)


@dataclass
class EpisodeRecord:
    """Everything a reward function may look at once an episode is over.

    ``response`` is the model's turns with the environment's result blocks
    interleaved, exactly as the policy saw the conversation after the prompt.
    """

    question: str
    golden_answers: tuple[str, ...]
    turns: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    prediction: str | None = None
    format_valid: bool = False
    conflicting_answers: bool = False
    searches: int = 0
    retrieved_doc_ids: list[str] = field(default_factory=list)
    retrieved_texts: list[str] = field(default_factory=list)
    termination: str = "running"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str:
        parts: list[str] = []
        for i, turn in enumerate(self.turns):
            parts.append(turn)
            if i < len(self.observations):
                parts.append(self.observations[i])
        return "".join(parts)

    @property
    def em(self) -> float:
        return exact_match(self.prediction, self.golden_answers)

    @property
    def f1(self) -> float:
        return f1_score(self.prediction, self.golden_answers)


RewardFn = Callable[[EpisodeRecord], float]


def research_reward(record: EpisodeRecord) -> float:
    """The ReSearch paper's reward: 0 if malformed, else F1, or 0.1 when F1 is 0."""
    if not record.format_valid:
        return 0.0
    f1 = record.f1
    return f1 if f1 > 0 else 0.1


def em_reward(record: EpisodeRecord) -> float:
    return record.em


def f1_reward(record: EpisodeRecord) -> float:
    return record.f1


@dataclass(frozen=True)
class SearchR1Reward:
    """Search-R1's exact-match reward with its optional format shaping.

    With the default zeros it is plain EM. With shaping: a correct answer in a
    malformed response earns ``1 - structure_format_score``; a wrong answer earns
    ``structure_format_score`` if well formed (plus ``retrieval_score`` when a golden
    answer appeared in a retrieved document) and ``final_format_score`` otherwise.
    """

    structure_format_score: float = 0.0
    final_format_score: float = 0.0
    retrieval_score: float = 0.0

    def __call__(self, record: EpisodeRecord) -> float:
        em = record.em
        if em == 1.0:
            return 1.0 if record.format_valid else 1.0 - self.structure_format_score
        if not record.format_valid:
            return self.final_format_score
        score = self.structure_format_score
        if self.retrieval_score and _answer_was_retrieved(record):
            score += self.retrieval_score
        return score


def supporting_recall(metadata: dict[str, Any], retrieved_doc_ids: Sequence[str]) -> float | None:
    """The share of a sample's ``supporting_doc_ids`` among ``retrieved_doc_ids``, or ``None``
    when the sample lists none."""
    supporting = metadata.get("supporting_doc_ids")
    if not supporting:
        return None
    found = set(retrieved_doc_ids)
    return sum(d in found for d in supporting) / len(supporting)


@dataclass(frozen=True)
class SupportingDocCredit:
    """``base`` plus ``weight`` x the share of the question's supporting documents that the
    episode retrieved, for well-formed episodes.

    Partial credit for finding the evidence of every hop: an answer reward alone pays for the
    second search of a two-hop question only when the model also gets the answer right. Samples
    without ``supporting_doc_ids`` get ``base`` unchanged.
    """

    base: RewardFn = research_reward
    weight: float = 0.2

    def __call__(self, record: EpisodeRecord) -> float:
        reward = self.base(record)
        recall = supporting_recall(record.metadata, record.retrieved_doc_ids)
        if recall is None or not record.format_valid:
            return reward
        return reward + self.weight * recall


def _answer_was_retrieved(record: EpisodeRecord) -> bool:
    golds = [normalize_answer(g) for g in record.golden_answers]
    return any(g and g in normalize_answer(text) for text in record.retrieved_texts for g in golds)


class JudgeReward:
    """An LLM judge's verdict as the reward, or mixed with token F1.

    ``weight * verdict + (1 - weight) * F1`` (``weight=1``: the judge alone; the named
    ``judge+f1`` uses 0.5). An episode without a prediction scores 0 and costs no call.
    When the judge gives no verdict (a timeout, an HTTP error, a reply neither yes nor
    no), the *declared* ``fallback`` stands in for it: ``"f1"`` or ``"em"`` of the
    episode, or a number; each use is counted (:attr:`fallbacks`, :meth:`stats`) and
    logged as a warning on the ``research_env.rewards`` logger.

    ``judge`` is any :data:`research_env.judge.JudgeFn`; one with ``verdicts`` (an
    :class:`~research_env.judge.EndpointJudge`) is asked once per env step for all the
    step's answers: the vector env calls :meth:`prefetch` with them before scoring.
    """

    def __init__(self, judge: Any, fallback: str | float = "f1", weight: float = 1.0) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"judge weight must be in [0, 1], got {weight}")
        if isinstance(fallback, str) and fallback not in ("f1", "em"):
            raise ValueError(f"judge fallback must be 'f1', 'em' or a number, got {fallback!r}")
        self.judge = judge
        self.fallback = fallback
        self.weight = weight
        self.fallbacks = 0
        self.verdicts_used = 0
        self._ready: dict[tuple[str, tuple[str, ...], str], tuple[float | None, str | None]] = {}

    def prefetch(self, items: Sequence[tuple[str, Sequence[str], str]]) -> None:
        """Judge a step's ``(question, golden answers, prediction)`` in one batch; the
        scoring calls that follow read the verdicts from here."""
        batch = getattr(self.judge, "verdicts", None)
        if batch is None or not items:
            return
        keys = [(q, tuple(g), p) for q, g, p in items]
        self._ready = dict(zip(keys, batch(list(items)), strict=True))  # this step's only

    def _verdict(self, record: EpisodeRecord) -> tuple[float | None, str | None]:
        prediction = record.prediction or ""
        key = (record.question, tuple(record.golden_answers), prediction)
        if key in self._ready:  # a GRPO group may give one answer several times
            return self._ready[key]
        batch = getattr(self.judge, "verdicts", None)
        if batch is not None:
            ((verdict, reason),) = batch([key])
            return verdict, reason
        try:
            return float(self.judge(record.question, record.golden_answers, prediction)), None
        except Exception as error:  # a custom judge's failure is a fallback, as an endpoint's
            return None, f"{type(error).__name__}: {error}"

    def __call__(self, record: EpisodeRecord) -> float:
        score = 0.0
        if record.prediction:
            verdict, reason = self._verdict(record)
            if verdict is not None:
                score = verdict
                self.verdicts_used += 1
            else:
                score = self._fallback(record)
                self.fallbacks += 1
                _log.warning(
                    "judge gave no verdict (%s); reward fell back to %s = %.3f "
                    "(%d fallbacks so far)",
                    reason,
                    self.fallback,
                    score,
                    self.fallbacks,
                )
        if self.weight == 1.0:
            return score
        return self.weight * score + (1.0 - self.weight) * record.f1

    def _fallback(self, record: EpisodeRecord) -> float:
        if self.fallback == "f1":
            return record.f1
        if self.fallback == "em":
            return record.em
        return float(self.fallback)

    @property
    def fingerprint_name(self) -> str:
        """What a run's fingerprint records as the reward: the judge, the mix, the fallback."""
        judge = getattr(self.judge, "name", type(self.judge).__name__)
        return f"judge({judge}, weight={self.weight:g}, fallback={self.fallback})"

    def stats(self) -> dict[str, Any]:
        """Verdicts used, fallbacks taken, and the judge's own counters."""
        own = getattr(self.judge, "stats", None)
        return {
            "verdicts": self.verdicts_used,
            "fallbacks": self.fallbacks,
            "fallback": self.fallback,
            **({"judge": own()} if own is not None else {}),
        }


def judge_reward(
    url: str | None = None,
    model: str = "default",
    fallback: str | float = "f1",
    weight: float = 1.0,
    **endpoint: Any,
) -> JudgeReward:
    """``reward="judge"``: an :class:`~research_env.judge.EndpointJudge` on ``url`` (the
    OpenAI-compatible API root, ``http://host:8000/v1``) as a :class:`JudgeReward`;
    ``endpoint`` passes ``timeout``, ``retries``, ``api_key_env``... through."""
    if not url:
        raise ValueError(
            "reward 'judge' needs the judge's endpoint: reward_kwargs={'url': "
            "'http://host:8000/v1'} (YAML: env.reward_kwargs.url), an OpenAI-compatible "
            "chat-completions server"
        )
    from research_env.judge import EndpointJudge

    return JudgeReward(EndpointJudge(url, model, **endpoint), fallback=fallback, weight=weight)


def judge_f1_reward(**kwargs: Any) -> JudgeReward:
    """``reward="judge+f1"``: half the judge's verdict, half token F1 (``weight`` changes it)."""
    return judge_reward(**{"weight": 0.5, **kwargs})


def support_reward(base: str = "research", weight: float = 0.2) -> SupportingDocCredit:
    """``reward="support"``: the reward named ``base`` plus ``weight`` x the share of the
    question's supporting documents the episode retrieved (well-formed episodes). The
    defaults are ``research+support``; ``{"base": "em", "weight": 0.5}`` drops the format
    credit and pays more for evidence (a lever of RESULTS.md, "RL that teaches search")."""
    if base not in REWARDS:
        raise ValueError(
            f"reward 'support': unknown base {base!r}; choose one of {sorted(REWARDS)}"
        )
    if not 0.0 <= float(weight) <= 10.0:
        raise ValueError(f"reward 'support': weight must be in [0, 10], got {weight!r}")
    return SupportingDocCredit(base=REWARDS[base], weight=float(weight))


# Rewards built from arguments (reward_kwargs): a new object per env (a vector env shares
# its first sub-env's).
REWARD_FACTORIES: dict[str, Callable[..., RewardFn]] = {
    "judge": judge_reward,
    "judge+f1": judge_f1_reward,
    "support": support_reward,
}

REWARDS: dict[str, RewardFn] = {
    "research": research_reward,
    "search-r1": SearchR1Reward(),
    "research+support": SupportingDocCredit(),
    "em": em_reward,
    "f1": f1_reward,
}


def get_reward(reward: str | RewardFn, reward_kwargs: dict[str, Any] | None = None) -> RewardFn:
    """Resolve a reward name (built with ``reward_kwargs`` when it is a factory's, such as
    ``judge``) or pass a callable through; unknown names list the choices."""
    if callable(reward):
        return reward
    if isinstance(reward, str) and reward in REWARD_FACTORIES:
        return REWARD_FACTORIES[reward](**(reward_kwargs or {}))
    try:
        return REWARDS[reward]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown reward {reward!r}; choose one of {sorted({*REWARDS, *REWARD_FACTORIES})} "
            "or pass a callable taking an EpisodeRecord"
        ) from None
