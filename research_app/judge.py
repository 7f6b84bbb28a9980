"""LLM-as-judge: a second opinion on answers that exact match would reject.

A judge is any :data:`JudgeFn`; :func:`judge_episodes` sets each episode's ``judge`` score
(1.0 when the judge accepts the prediction as meaning a golden answer), which the harness
averages like EM. :func:`make_judge` builds one from a spec: a local Hugging Face model
(:class:`LocalJudge`) or an OpenAI-compatible endpoint (:class:`EndpointJudge`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# question, golden answers, prediction -> 1.0 if the judge accepts the prediction.
JudgeFn = Callable[[str, Sequence[str], str], float]

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
