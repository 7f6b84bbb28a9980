"""LLM-as-judge: a second opinion on answers that exact match would reject.

A judge is any :data:`JudgeFn`; :func:`judge_episodes` sets each episode's ``judge`` score
(1.0 when the judge accepts the prediction as meaning a golden answer), which the harness
averages like EM. :func:`make_judge` builds one from a spec: a local Hugging Face model
(:class:`LocalJudge`, here because it needs torch) or an OpenAI-compatible endpoint
(:class:`~research_env.judge.EndpointJudge`). The prompt, the verdict parsing, the
endpoint client and :func:`judge_episodes` live in :mod:`research_env.judge`, shared with
the training reward ``env.reward: judge`` (:mod:`research_env.rewards`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research_env.judge import (
    JUDGE_PROMPT,
    EndpointJudge,
    JudgeError,
    JudgeFn,
    judge_episodes,
    judge_prompt,
    parse_verdict,
)

__all__ = [
    "JUDGE_PROMPT",
    "EndpointJudge",
    "JudgeError",
    "JudgeFn",
    "LocalJudge",
    "judge_episodes",
    "judge_prompt",
    "make_judge",
    "parse_verdict",
]


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


def make_judge(spec: str, model: str = "default", api_key: str | None = None) -> JudgeFn:
    """An :class:`EndpointJudge` for an ``http(s)://`` URL, else a :class:`LocalJudge` on
    ``load_policy(spec)`` (an offline name or a model directory)."""
    if spec.startswith(("http://", "https://")):
        return EndpointJudge(spec, model, api_key=api_key)
    from algorithms.policy import load_policy

    return LocalJudge(load_policy(spec))
