"""The ``tool-call`` template: search as a JSON tool call in the chat template's convention,
results as tool messages, the answer in plain text with ``\\boxed{}``. Same env, rewards
and masks as the tag protocol; malformed calls are invalid turns with a reason."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch
from world import SAMPLES, KeywordRetriever

from algorithms.buffer import collate
from algorithms.rollout import RolloutEngine, Sampling
from algorithms.rollout.decoder import TurnOutput
from research_app.cli import main
from research_env import MultiHopSearchEnv
from research_env.policies import OraclePolicy
from research_env.templates import get_template
from research_env.termination import Termination
from research_env.tool_calls import SEARCH_TOOL

FIXTURE = Path(__file__).parents[1] / "algorithms" / "chat_templates" / "chatml_tools.jinja"


def call(name="search", **arguments):
    body = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>\n{body}\n</tool_call>"


SEARCH_BRISA = call(query="Brisa Telk")
DOC_BRISA = "Doc 1 (Title: Brisa Telk) Brisa Telk is an engineer who founded Quimby Forge."


def make_env(**kwargs):
    kwargs = {"top_k": 2, "max_turns": 4, "template": "tool-call", **kwargs}
    return MultiHopSearchEnv(dataset=SAMPLES, retriever=KeywordRetriever(), **kwargs)


# -- parsing, through the env ------------------------------------------------------------


def test_a_valid_call_searches_and_the_result_comes_back_as_a_tool_message():
    env = make_env()
    _, info = env.reset(options={"index": 0})
    assert info["tools"] == [SEARCH_TOOL]
    obs, reward, terminated, truncated, info = env.step("I need the founder. " + SEARCH_BRISA)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs == f"\n<tool_response>\n{DOC_BRISA}\n</tool_response>\n"
    assert info["message"] == {"role": "tool", "name": "search", "content": DOC_BRISA}
    assert info["searches"] == 1 and "invalid_reason" not in info
    assert env.retriever.calls == [["Brisa Telk"]]


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        (
            '<tool_call>\n{"name": "search", "arguments": {"query": "x"}\n</tool_call>',
            "tool_call_json",
        ),
        ("<tool_call>search(Brisa Telk)</tool_call>", "tool_call_json"),
        ('<tool_call>["search", {"query": "x"}]</tool_call>', "tool_call_json"),
        ('<tool_call>{"name": "search"}</tool_call>', "tool_call_json"),
        ("<tool_call>" + "[" * 100_000 + "</tool_call>", "tool_call_json"),  # json recursion
        ("<tool_call>" + "9" * 10_000 + "</tool_call>", "tool_call_json"),  # int digit limit
        (call(name="lookup", query="Brisa Telk"), "unknown_tool"),
        (call(q="Brisa Telk"), "missing_query"),
        (call(query="   "), "missing_query"),
        (call(query=7), "missing_query"),
        ('<tool_call>\n{"name": "search", "arguments": {"query": "x"}}', "unclosed_tool_call"),
        ("</tool_call> then <tool_call>", "unclosed_tool_call"),
        (SEARCH_BRISA + SEARCH_BRISA, "multiple_tool_calls"),
        ("I think it is Ostravel.", "no_action"),
        ("The answer is \\boxed{Ostravel", "no_action"),
    ],
)
def test_a_malformed_turn_is_invalid_with_its_reason(turn, reason):
    env = make_env()
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step(turn)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["invalid_reason"] == reason and info["invalid_detail"]
    # The correction is a user message, and says what was wrong.
    assert info["message"]["role"] == "user"
    assert info["invalid_detail"] in info["message"]["content"]
    assert obs.strip() == info["message"]["content"]
    assert env.retriever.calls == []


def test_arguments_as_a_json_string_are_accepted():
    turn = (
        '<tool_call>{"name": "search", "arguments": "{\\"query\\": \\"Brisa Telk\\"}"}</tool_call>'
    )
    env = make_env()
    env.reset(options={"index": 0})
    env.step(turn)
    assert env.retriever.calls == [["Brisa Telk"]]


def test_a_plain_answer_with_boxed_ends_the_episode_and_is_scored():
    env = make_env()
    env.reset(options={"index": 1})
    env.step(call(query="The Glass Tide"))
    obs, reward, terminated, truncated, info = env.step("It was \\boxed{Tamsy Orr}.")
    assert (obs, terminated, truncated) == ("", True, False)
    assert info["prediction"] == "Tamsy Orr" and info["em"] == 1.0
    assert info["format_valid"] and "invalid_reason" not in info
    assert reward == 1.0  # research reward: F1 = 1


def test_an_episode_with_a_malformed_call_is_malformed_even_if_right():
    env = make_env()
    env.reset(options={"index": 1})
    env.step('<tool_call>{"name": "search", "arguments": {"query": </tool_call>')
    *_, reward, terminated, _, info = env.step("\\boxed{Tamsy Orr}")
    assert terminated and info["em"] == 1.0
    assert not info["format_valid"] and info["invalid_reason"] == "tool_call_json"
    assert reward == 0.0  # research reward: malformed

    # Loose format only asks that the episode end with an answer.
    env = make_env(format_mode="loose")
    env.reset(options={"index": 1})
    env.step("<tool_call>{}</tool_call>")
    *_, reward, _, _, info = env.step("\\boxed{Tamsy Orr}")
    assert info["format_valid"] and reward == 1.0


def test_terminate_on_invalid_reports_the_turns_reason():
    env = make_env(on_invalid="terminate")
    env.reset(options={"index": 0})
    *_, reward, terminated, _, info = env.step(call(name="browse", url="x"))
    assert terminated and reward == 0.0
    assert info["termination"] == "invalid_output" and info["invalid_reason"] == "unknown_tool"


def test_searching_until_the_turn_budget_is_no_answer():
    env = make_env(max_turns=2)
    env.reset(options={"index": 0})
    env.step(SEARCH_BRISA)
    *_, truncated, info = env.step(call(query="Quimby Forge"))
    assert truncated and info["termination"] == "turn_budget"
    assert info["invalid_reason"] == "no_answer"
    assert "without a final answer" in info["invalid_detail"]


def test_the_tag_templates_fingerprint_as_before_and_tool_call_differs():
    assert "actions" not in get_template("research").fingerprint_fields()
    assert get_template("tool-call").fingerprint_fields()["actions"] == "tool-call"


# -- a scripted policy through gym -------------------------------------------------------


def test_the_oracle_speaks_tool_calls_and_gets_the_full_reward():
    env = gym.make(
        "ReSearch-MultiHop-v0",
        dataset=SAMPLES,
        retriever=KeywordRetriever(),
        template="tool-call",
        top_k=2,
        max_turns=4,
    )
    oracle = OraclePolicy()
    env.reset(options={"index": 0})
    turns, done = [], False
    while not done:
        turns.append(oracle.act(env))
        _, reward, terminated, truncated, info = env.step(turns[-1])
        done = terminated or truncated
    assert turns[0].endswith(call(query="Which company did Brisa Telk found?"))
    assert "<search>" not in "".join(turns)
    assert info["searches"] == 2 and info["prediction"] == "Ostravel"
    assert info["format_valid"] and reward == 1.0


def test_play_takes_the_template(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "dev.jsonl").write_text(
        json.dumps(
            {"id": "q1", "question": "Where was Brisa Telk born?", "golden_answers": ["Ostravel"]}
        )
        + "\n"
    )
    doc = {"id": "d1", "contents": '"Brisa Telk"\nBrisa Telk was born in Ostravel.'}
    (tmp_path / "corpus.jsonl").write_text(json.dumps(doc) + "\n")
    turns = [SEARCH_BRISA.replace("\n", ""), "It is \\boxed{Ostravel}."]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in turns)))
    code = main(["play", "--index", "0", "--dataset", str(tmp_path), "--template", "tool-call"])
    out = capsys.readouterr().out
    assert code == 0
    assert "<tool_response>\nDoc 1 (Title: Brisa Telk) Brisa Telk was born in Ostravel." in out
    assert "reward=1.000" in out and "format_valid=True" in out


# -- rollouts with the tiny policy and a tool-capable chat template ----------------------


@pytest.fixture(scope="module")
def tool_policy(tiny):
    """The tiny policy with the fixture's Qwen2.5-style chat template (on a copy of its
    tokenizer, so other modules' tests keep the shipped template)."""
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.chat_template = FIXTURE.read_text()
    return SimpleNamespace(model=tiny.model, tokenizer=tokenizer, device=tiny.device)


class ScriptedBackend:
    """A generation backend that writes given turns (as token ids) and records what the
    engine asks of it: the stop strings and the observation tokens appended."""

    def __init__(self, turns):
        self.turns = turns
        self.appended, self.stop_strings = [], []

    def start(self, prompt_ids, model=None):
        self.prompt_ids = [list(p) for p in prompt_ids]
        return self

    def decode(self, *, max_new_tokens, seq_indices, stop_strings, **_):
        self.stop_strings.append(tuple(stop_strings))
        ids, reason = self.turns.pop(0)
        return {i: TurnOutput(list(ids), [-0.5] * len(ids), reason) for i in seq_indices}

    def append(self, observations):
        self.appended.append({i: list(ids) for i, ids in observations.items()})

    def release(self, seq_indices):
        pass


def tool_engine(policy, **kwargs):
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "template": "tool-call"}
    return RolloutEngine(policy, {**env, "top_k": 2, "max_turns": 3}, **kwargs)


def test_sampled_ids_survive_and_the_tool_reply_is_the_chat_templates(tool_policy):
    tok = tool_policy.tokenizer

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    turn1 = encode("Let me search.\n" + SEARCH_BRISA)
    turn2 = [*encode("The answer is \\boxed{Ostravel}."), tok.eos_token_id]
    backend = ScriptedBackend([(turn1, Termination.STOP), (turn2, Termination.EOS)])
    (traj,) = tool_engine(tool_policy, backend=backend).collect([0])

    # The prompt is the chat template's, with the search tool's schema in it.
    prompt = tok.decode(traj.prompt_ids)
    assert prompt.startswith("<|im_start|>system\nAnswer the question")
    assert "<tools>\n" + json.dumps(SEARCH_TOOL) + "\n</tools>" in prompt
    assert prompt.endswith(SAMPLES[0].question + "<|im_end|>\n<|im_start|>assistant\n")
    # What the fixture template puts between the call and the next assistant turn, by hand.
    reply = (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
        + DOC_BRISA
        + "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    obs = encode(reply)
    assert traj.response_ids == turn1 + obs + turn2
    assert traj.loss_mask == [1] * len(turn1) + [0] * len(obs) + [1] * len(turn2)
    assert backend.appended == [{0: obs}]
    assert backend.stop_strings == [("</tool_call>",)] * 2
    assert traj.reward == 1.0 and traj.info["format_valid"] and traj.finish_reason == "answered"


@pytest.mark.numeric
def test_a_real_decode_keeps_its_tokens_and_gets_chat_corrections(tool_policy):
    """The tiny random model never calls the tool: each turn is corrected by a user
    message, rendered by the chat template. The log-probs recomputed over the trajectory's
    ids equal the sampled ones: the model saw exactly these ids while it sampled."""
    tok = tool_policy.tokenizer
    s = Sampling(temperature=0.7, max_turn_tokens=5, max_total_tokens=400, seed=3)
    (traj,) = tool_engine(tool_policy).collect([0], sampling=s)
    assert traj.finish_reason == "turn_budget" and len(traj.turn_spans) == 3
    assert traj.info["invalid_reason"] == "no_action"
    gap = traj.response_ids[traj.turn_spans[0][1] : traj.turn_spans[1][0]]
    text = tok.decode(gap)
    assert text.startswith("<|im_end|>\n<|im_start|>user\nThat turn was not a valid action")
    assert text.endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    inside = {k for a, b in traj.turn_spans for k in range(a, b)}
    assert {k for k, m in enumerate(traj.loss_mask) if m} == inside

    batch = collate([traj], pad_id=tok.pad_token_id or 0)
    with torch.no_grad():
        logits = tool_policy.model(input_ids=batch.input_ids).logits.float()
    p = batch.prompt_len
    fresh = torch.log_softmax(logits[:, p - 1 : -1] / 0.7, -1)
    fresh = fresh.gather(-1, batch.input_ids[:, p:, None]).squeeze(-1)
    mask = batch.loss_mask.bool()
    assert torch.allclose(fresh[mask], batch.sample_logprobs[mask], atol=1e-4)


def test_a_chat_template_without_tools_is_refused_before_decoding(tiny):
    # The tiny policy's shipped (SmolLM2) template ignores `tools`.
    with pytest.raises(ValueError, match=r"ignores `tools`.*prompt_format='text'"):
        tool_engine(tiny)
    # As plain text it plays: the text observations are appended as they are.
    turn1 = tiny.tokenizer(SEARCH_BRISA, add_special_tokens=False)["input_ids"]
    answer = tiny.tokenizer("\\boxed{Ostravel}", add_special_tokens=False)["input_ids"]
    backend = ScriptedBackend([(turn1, Termination.STOP), (answer, Termination.EOS)])
    (traj,) = tool_engine(tiny, prompt_format="text", backend=backend).collect([0])
    gap = traj.response_ids[len(turn1) : -len(answer)]
    assert tiny.tokenizer.decode(gap) == f"\n<tool_response>\n{DOC_BRISA}\n</tool_response>\n"
    assert traj.reward == 1.0


# A chat template unlike ChatML: its own turn markers, tool turns with their own role, and
# an assistant turn rendered differently when it is the last message (as Qwen3's adds an
# empty think block). The reply is still exactly what it puts between the call and the
# next assistant turn.
OTHER_TEMPLATE = (
    "{%- if tools %}[tools]{{ tools | length }}[/tools]{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}[A]{%- if loop.last %}(last){%- endif %}{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{{ c.function.arguments.query }}</tool_call>"
    "{%- endfor %}[/A]"
    "{%- else %}[{{ m.role }}]{{ m.content }}[/{{ m.role }}]{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}[A]{%- endif %}"
)


def test_the_reply_follows_any_tool_capable_template(tiny):
    from algorithms.rollout.chat_turns import ChatReplies

    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.chat_template = OTHER_TEMPLATE
    replies = ChatReplies(tokenizer, [SEARCH_TOOL])
    tool = {"role": "tool", "name": "search", "content": DOC_BRISA}
    assert replies.reply(tool) == f"[/A][tool]{DOC_BRISA}[/tool][A]"
    user = {"role": "user", "content": "Try again."}
    assert replies.reply(user) == "[/A][user]Try again.[/user][A]"
