"""Our env inside ``trl.GRPOTrainer`` (algorithms/trl_env.py): the tool, the replayed
reward (checked by hand and against our own env), and real TRL GRPO steps on the tiny
random model, offline on CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from world import SAMPLES, KeywordRetriever

from algorithms.trl_env import (
    CHATML_TOOL_RESPONSE_TEMPLATE,
    TRLSearchTask,
    ensure_tool_parser,
    search_env_reward,
)
from research_env import MultiHopSearchEnv

TEMPLATE = Path(__file__).parents[1] / "algorithms" / "chat_templates" / "chatml_tools.jinja"
FIRST_QUERY = "company founded by Brisa Telk"
SECOND_QUERY = "Quimby Forge headquarters"


def make_task(retriever=None, instructions=None, **kwargs):
    kwargs = {"top_k": 2, "max_turns": 4, **kwargs}
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever or KeywordRetriever(), **kwargs)
    if instructions is None:
        return TRLSearchTask(env)
    return TRLSearchTask(env, instructions=instructions)


# TRL's fused LM head scores every prompt token too: short prompts keep a CPU step quick.
SHORT = "Search, then answer inside <answer>\\boxed{{}}</answer>. Results come in <{tag}>."


def call(query):
    return {"type": "function", "function": {"name": "search", "arguments": {"query": query}}}


def rollout(task, completion_for, question_id="q1"):
    """Play one rollout as TRL does: reset, run each tool call, then score."""
    env = task.environment_factory()
    env.reset(prompt=task.messages("unused"), question_id=question_id)
    completion = completion_for(env)
    return env, search_env_reward([completion], environments=[env])[0]


def two_hop(answer):
    def play(env):
        return [
            {
                "role": "assistant",
                "content": "<think>Who founded it?</think>",
                "tool_calls": [call(FIRST_QUERY)],
            },
            {"role": "tool", "name": "search", "content": env.search(FIRST_QUERY)},
            {
                "role": "assistant",
                "content": "<think>Now the city.</think>",
                "tool_calls": [call(SECOND_QUERY)],
            },
            {"role": "tool", "name": "search", "content": env.search(SECOND_QUERY)},
            {
                "role": "assistant",
                "content": f"<think>Done.</think>\n<answer>The answer is \\boxed{{{answer}}}</answer>",
            },
        ]

    return play


def test_search_tool_returns_the_envs_result_block_with_its_top_k():
    retriever = KeywordRetriever()
    env = make_task(retriever).environment_factory()
    env.reset(question_id="q1")
    observation = env.search("  Quimby   Forge  ")
    # The episode's whitespace normalization; d1 and d2 both hold both words (top_k=2).
    assert retriever.calls == [["Quimby Forge"]]
    assert observation == (
        "\n<result>\n"
        "Doc 1 (Title: Brisa Telk) Brisa Telk is an engineer who founded Quimby Forge.\n"
        "Doc 2 (Title: Quimby Forge) Quimby Forge is headquartered in Ostravel.\n"
        "</result>\n"
    )


def test_research_reward_by_hand():
    task = make_task()
    env, right = rollout(task, two_hop("Ostravel"))
    assert right == 1.0
    assert env.outcome.info["em"] == 1.0 and env.outcome.info["searches"] == 2
    assert env.outcome.info["supporting_recall"] == 1.0
    # "Ostravel port": precision 1/2, recall 1/1 -> F1 = 2/3.
    _, partial = rollout(task, two_hop("Ostravel port"))
    assert partial == pytest.approx(2 / 3)
    # Well formed but wrong: the research reward's 0.1.
    _, wrong = rollout(task, two_hop("Lund"))
    assert wrong == pytest.approx(0.1)


def test_em_reward_and_a_missing_answer():
    task = make_task(reward="em")
    _, partial = rollout(task, two_hop("Ostravel port"))
    assert partial == 0.0
    env, silent = rollout(task, lambda env: [{"role": "assistant", "content": "I do not know."}])
    assert silent == 0.0
    assert env.outcome.info["termination"] == "eos"
    assert env.outcome.info["invalid_reason"] == "no_answer"


def test_replayed_reward_equals_our_envs_own_episode():
    """The same text turns played through MultiHopSearchEnv.step score the same."""
    for answer in ("Ostravel", "Ostravel port", "Lund"):
        env, reward = rollout(make_task(), two_hop(answer))
        ours = MultiHopSearchEnv(
            dataset=SAMPLES,
            retriever=KeywordRetriever(),
            top_k=2,
            max_turns=4,
            template="research-chat",
        )
        ours.reset(options={"question_id": "q1"})
        ours.step(f"<think>Who founded it?</think><search>{FIRST_QUERY}</search>")
        ours.step(f"<think>Now the city.</think><search>{SECOND_QUERY}</search>")
        _, own_reward, terminated, _, info = ours.step(
            f"<think>Done.</think>\n<answer>The answer is \\boxed{{{answer}}}</answer>"
        )
        assert terminated and reward == own_reward
        assert env.outcome.info["retrieved_doc_ids"] == info["retrieved_doc_ids"]
        assert env.outcome.info["f1"] == info["f1"]


def test_reasoning_split_off_by_the_parser_is_put_back_in_think_tags():
    """TRL's Qwen3 parser moves <think> text to reasoning_content; the replay restores it,
    so a reward reading the response sees what the model wrote."""

    def play(env):
        return [
            {
                "role": "assistant",
                "reasoning_content": "Who founded it?",
                "content": "",
                "tool_calls": [call(FIRST_QUERY)],
            },
            {"role": "tool", "name": "search", "content": env.search(FIRST_QUERY)},
            {
                "role": "assistant",
                "reasoning_content": "Done.",
                "content": "<answer>\\boxed{Ostravel}</answer>",
            },
        ]

    def reward(record):
        expected = "<think>Who founded it?</think><search>" + FIRST_QUERY + "</search>\n<result>"
        return float(
            record.response.startswith(expected) and "<think>Done.</think>" in record.response
        )

    env, score = rollout(make_task(reward=reward), play)
    assert score == 1.0 and env.outcome.info["format_valid"]


def test_failed_tool_call_is_an_invalid_turn_and_tags_are_refused():
    task = make_task(on_invalid="terminate")

    def play(env):
        with pytest.raises(ValueError, match="plain text"):
            env.search("<answer>x</answer>")
        return [
            {"role": "assistant", "content": "", "tool_calls": [call("<answer>x</answer>")]},
            {"role": "tool", "name": "search", "content": "{'error': 'the query must be ...'}"},
            {"role": "assistant", "content": "<answer>\\boxed{Ostravel}</answer>"},
        ]

    env, reward = rollout(task, play)
    assert reward == 0.0 and env.outcome.info["termination"] == "invalid_output"


def test_dropped_tool_results_truncate_the_episode():
    def play(env):
        env.search(FIRST_QUERY)  # TRL ran it, then dropped the result (over budget)
        return [
            {"role": "assistant", "content": "<think>x</think>", "tool_calls": [call(FIRST_QUERY)]}
        ]

    env, reward = rollout(make_task(), play)
    assert reward == 0.0 and env.outcome.truncated
    assert env.outcome.info["termination"] == "token_budget"


def test_dataset_rows_and_clear_errors():
    task = make_task()
    rows = task.dataset()
    assert rows.column_names == ["prompt", "question_id"]
    assert rows[1]["question_id"] == "q2"
    assert rows[1]["prompt"][-1] == {
        "role": "user",
        "content": "Question: Who wrote The Glass Tide?",
    }
    assert "search tool" in rows[0]["prompt"][0]["content"]
    assert "Ostravel" not in json.dumps(rows.to_list())  # golden answers stay out
    assert task.max_tool_calling_iterations == 3
    env = task.environment_factory()
    with pytest.raises(ValueError, match=r"TRLSearchTask\.dataset"):
        env.reset(prompt=[], question_id="nope")
    with pytest.raises(ValueError, match="environment_factory"):
        search_env_reward([[]])
    with pytest.raises(TypeError, match="MultiHopSearchEnv"):
        TRLSearchTask(object())


# -- real TRL GRPO steps ------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy():
    from algorithms.policy import load_policy

    policy = load_policy("tiny-random", device="cpu")
    policy.tokenizer.chat_template = TEMPLATE.read_text(encoding="utf-8")
    ensure_tool_parser(policy.tokenizer)
    return policy


def grpo(policy, task, tmp_path, trainer_class=None, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    settings = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "use_cpu": True,
        "max_steps": 1,
        "per_device_train_batch_size": 2,  # one question, two generations
        "num_generations": 2,
        "max_completion_length": 12,
        "max_tool_calling_iterations": task.max_tool_calling_iterations,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-4,
        "beta": 0.0,
        "use_vllm": False,
        "bf16": False,
        "seed": 0,
    }
    settings.update(overrides)
    trainer = (trainer_class or GRPOTrainer)(
        model=policy.model,
        reward_funcs=task.reward_funcs,
        args=GRPOConfig(**settings),
        train_dataset=task.dataset(),
        processing_class=policy.tokenizer,
        environment_factory=task.environment_factory,
    )
    trainer.train()
    return trainer


def test_the_fixture_tokenizer_gets_our_chatml_parser(policy):
    assert policy.tokenizer.response_template == CHATML_TOOL_RESPONSE_TEMPLATE


def test_grpo_steps_with_the_tiny_random_model(policy, tmp_path):
    trainer = grpo(policy, make_task(instructions=SHORT), tmp_path)
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert trainer.state.global_step == 1 and len(logs) == 1
    # The random model never answers: the research reward of a malformed rollout is 0.
    assert logs[0]["rewards/search_env_reward/mean"] == 0.0
    assert logs[0]["env/format_valid"] == 0.0
    assert "tools/call_frequency" in logs[0]


def test_grpo_step_runs_the_search_tool_and_masks_its_result(policy, tmp_path):
    """Scripted turns (the random model cannot call a tool) through TRL's real tool loop:
    the first turn calls search, the turn after the tool's answer answers."""
    from trl import GRPOTrainer

    tokenizer = policy.tokenizer
    turns = {
        "call": '<tool_call>\n{"name": "search", "arguments": {"query": "Brisa Telk"}}\n</tool_call>',
        "q1": "<answer>\\boxed{Ostravel}</answer>",
        "q2": "<answer>\\boxed{Tamsy Orr}</answer>",
        "wrong": "<answer>\\boxed{Lund}</answer>",
    }
    scripted = {
        k: tokenizer.encode(v + "<|im_end|>", add_special_tokens=False) for k, v in turns.items()
    }
    captured = []

    class ScriptedTrainer(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            completions = []
            for position, ids in enumerate(prompt_ids):
                text = tokenizer.decode(ids)
                if "<tool_response>" not in text:
                    turn = "call"
                elif position % 2:  # the group's second rollout answers wrong
                    turn = "wrong"
                else:
                    turn = "q2" if "Glass Tide" in text else "q1"
                completions.append(list(scripted[turn]))
            return completions, None

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            captured.append(output)
            return output

    retriever = KeywordRetriever()
    trainer = grpo(
        policy,
        make_task(retriever, instructions=SHORT),
        tmp_path,
        trainer_class=ScriptedTrainer,
        max_completion_length=256,
    )
    # One search per rollout: one question x 2 generations.
    assert len(retriever.calls) == 2 and retriever.calls[0] == ["Brisa Telk"]
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    # Both searched once and answered well formed: the golden answer scores 1.0, "Lund"
    # the research reward's 0.1, so the group has an advantage and the step a gradient.
    assert log["rewards/search_env_reward/mean"] == pytest.approx((1.0 + 0.1) / 2)
    assert log["env/em"] == 0.5 and log["env/searches"] == 1.0
    assert log["env/format_valid"] == 1.0 and log["tools/call_frequency"] == 1.0
    assert log["grad_norm"] > 0

    output = captured[0]
    mask = output["tool_mask"] * output["completion_mask"]
    for row in range(mask.shape[0]):
        ids = output["completion_ids"][row][output["completion_mask"][row].bool()].tolist()
        masked = [t for t, m in zip(ids, mask[row].tolist(), strict=False) if m == 0]
        kept = [t for t, m in zip(ids, mask[row].tolist(), strict=False) if m == 1]
        # The model's own turns are kept whole; the retrieved documents are all masked.
        assert tokenizer.decode(kept).startswith(turns["call"])
        assert "<answer>\\boxed{" in tokenizer.decode(kept)
        assert "<result>" not in tokenizer.decode(kept)
        assert "Doc 1 (Title:" in tokenizer.decode(masked)


def test_ensure_tool_parser_refuses_a_template_without_tool_calls():
    class Tokenizer:
        chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"

    with pytest.raises(ValueError, match="tool-calling template"):
        ensure_tool_parser(Tokenizer())


def test_an_offline_chatml_tokenizer_gets_the_shipped_tool_template(capsys):
    """SmolLM2's tokenizer (so the offline models') has a ChatML template without tools;
    the README's TRL snippet needed a hub download for one. ensure_tool_parser installs
    the shipped one, which renders the search tool and its calls."""
    from algorithms.policy import load_policy

    tokenizer = load_policy("tiny-random", device="cpu").tokenizer
    assert (
        "<|im_start|>" in tokenizer.chat_template and "<tool_call>" not in tokenizer.chat_template
    )
    ensure_tool_parser(tokenizer)
    assert tokenizer.response_template == CHATML_TOOL_RESPONSE_TEMPLATE
    assert "chatml_tools.jinja" in capsys.readouterr().err
    task = make_task()
    messages = [*task.messages("Who founded Brisa Telk?"),
                {"role": "assistant", "tool_calls": [call(FIRST_QUERY)], "content": ""},
                {"role": "tool", "content": "<result>Doc 1</result>"}]  # fmt: skip
    schema = {"type": "function", "function": {"name": "search", "description": "search",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}  # fmt: skip
    text = tokenizer.apply_chat_template(messages, tools=[schema], tokenize=False)
    assert '"name": "search"' in text and "<tool_call>" in text and "<tool_response>" in text
