"""The SFT warm start: demonstrations tokenized like rollouts, and it learns."""

import json

import pytest
from world import SAMPLES, KeywordRetriever

from algorithms.config import TrainConfig
from algorithms.policy import load_policy
from algorithms.rollout import RolloutEngine, Sampling
from algorithms.sft import SFT, SFTSettings


def env_kwargs():
    return {
        "dataset": SAMPLES[1:],  # the one-hop question
        "retriever": KeywordRetriever(),
        "max_turns": 3,
        "template": "research-chat",
    }


def config(tmp_path, steps):
    return TrainConfig.from_dict(
        {
            "optim": {"lr": 1e-2, "warmup_steps": 0},
            "rollout": {"questions_per_step": 1, "max_total_tokens": 300},
            "trainer": {"steps": steps},
            "eval": {"every": 0},
            "logging": {"wandb": False},
            "checkpoint": {"every": 0},
            "output_dir": str(tmp_path / "run"),
        }
    )


def greedy_format_rate(policy):
    engine = RolloutEngine(policy, env_kwargs())
    s = Sampling(greedy=True, max_turn_tokens=64, max_total_tokens=300)
    trajs = engine.collect([0], 1, sampling=s)
    return sum(bool(t.info.get("format_valid")) for t in trajs) / len(trajs)


def test_oracle_demonstrations_have_masked_observations(tmp_path):
    policy = load_policy("tiny-random")
    sft = SFT(policy, env_kwargs(), config(tmp_path, 1))
    (traj,) = sft.collect_rollouts(0)
    assert traj.reward == 1.0 and len(traj.turn_spans) == 2
    tok = policy.tokenizer
    first_turn = tok.decode(traj.response_ids[slice(*traj.turn_spans[0])])
    assert first_turn.endswith("<search>Who wrote The Glass Tide?</search>")
    observation = tok.decode(traj.response_ids[traj.turn_spans[0][1] : traj.turn_spans[1][0]])
    assert "<result>" in observation and "Tamsy Orr" in observation
    # Retrieved text is never a target.
    between = traj.loss_mask[traj.turn_spans[0][1] : traj.turn_spans[1][0]]
    assert between and not any(between)


@pytest.mark.numeric
def test_warm_start_learns_the_protocol(tmp_path):
    policy = load_policy("tiny-random")
    before = greedy_format_rate(policy)
    SFT(policy, env_kwargs(), config(tmp_path, 20)).learn()
    after = greedy_format_rate(policy)
    assert before == 0.0 and after == 1.0


def test_demonstrations_from_file(tmp_path):
    path = tmp_path / "demos.jsonl"
    episode = {
        "question_id": "q2",
        "turns": [
            "x</think>\n<search>Glass Tide</search>",
            "<think>y</think><answer>\\boxed{Orr}</answer>",
        ],
        "observations": ["\n<result>\nDoc 1 (Title: T) text\n</result>\n"],
        "reward": 1.0,
    }
    path.write_text(json.dumps(episode) + "\n")
    sft = SFT(
        load_policy("tiny-random"),
        env_kwargs(),
        config(tmp_path, 1),
        settings=SFTSettings(demonstrations=str(path)),
    )
    (traj,) = sft.collect_rollouts(0)
    assert sum(traj.loss_mask) > 0 and len(traj.turn_spans) == 2
    path.write_text("{not json\n")
    bad = SFT(
        load_policy("tiny-random"),
        env_kwargs(),
        config(tmp_path, 1),
        settings=SFTSettings(demonstrations=str(path)),
    )
    with pytest.raises(ValueError, match="line 1"):
        bad.collect_rollouts(0)


def eval_transcript(question_id, reward):
    """A record shaped like the transcripts/agent.jsonl that research-env eval writes."""
    return {
        "question_id": question_id,
        "reward": reward,
        "prompt": "ignored: the env renders the prompt again",
        "turn_texts": [
            {"model": "x</think>\n<search>Glass Tide</search>", "observation": "\n<result>\nD\n</result>\n"},
            {"model": "<think>y</think><answer>\\boxed{Orr}</answer>", "observation": ""},
        ],
    }  # fmt: skip


def test_train_cli_sft_from_eval_transcripts(tmp_path):
    from research_app.cli import main
    from research_env.env import MultiHopSearchEnv

    first, second = MultiHopSearchEnv(split="train").samples[:2]  # the default dataset
    demos = tmp_path / "agent.jsonl"
    lines = [eval_transcript(first.id, 1.0), eval_transcript(second.id, 0.0)]  # 2nd: dropped
    demos.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "run"
    argv = ["train", "--algo", "sft", "--from", str(demos), "--model", "tiny-random",
            "--steps", "2", "--out", str(out), "--no-wandb", "--set", "eval.every=0",
            "--set", "rollout.questions_per_step=2", "--set", "checkpoint.every=1",
            "--set", "checkpoint.export_final=false"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/nll" in r] == [1, 2]
    assert all(r["filter/kept_episodes"] == 1.0 for r in rows if "train/nll" in r)
    saved = TrainConfig.from_yaml(out / "checkpoints" / "step-000002" / "config.yaml")
    assert saved.algo == "sft" and saved.sft.demonstrations == str(demos)


def test_train_cli_from_needs_sft(capsys):
    from research_app.cli import main

    assert main(["train", "--algo", "grpo", "--from", "oracle", "--model", "tiny-random"]) == 2
    assert "--from gives demonstrations to imitate; it needs --algo sft" in capsys.readouterr().err


def test_demonstration_file_names_unknown_questions(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text(json.dumps(eval_transcript("q-from-another-split", 1.0)) + "\n")
    sft = SFT(load_policy("tiny-random"), env_kwargs(), config(tmp_path, 1),
              settings=SFTSettings(demonstrations=str(path)))  # fmt: skip
    with pytest.raises(ValueError, match=r"line 1.*q-from-another-split.*--split"):
        sft.collect_rollouts(0)


def test_transcripts_without_a_success_say_no_demonstration_is_usable(tmp_path, capsys):
    from research_app.cli import main
    from research_env.env import MultiHopSearchEnv

    first, second = MultiHopSearchEnv(split="train").samples[:2]
    demos = tmp_path / "agent.jsonl"  # an untrained model's transcripts: nothing answered
    lines = [eval_transcript(first.id, 0.0), eval_transcript(second.id, 0.1)]
    demos.write_text("".join(json.dumps(x) + "\n" for x in lines))
    argv = ["train", "--algo", "sft", "--from", str(demos), "--model", "tiny-random",
            "--steps", "1", "--out", str(tmp_path / "run"), "--no-wandb"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no usable demonstration" in err and "none of its 2 episodes" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_oracle_demonstrations_on_data_without_decompositions_are_refused(tmp_path):
    from research_env.data.types import QASample

    bare = [QASample("b1", "Who wrote The Glass Tide?", ("Tamsy Orr",), {})]
    kwargs = {**env_kwargs(), "dataset": bare}
    sft = SFT(load_policy("tiny-random"), kwargs, config(tmp_path, 1))
    with pytest.raises(ValueError, match="oracle cannot play question 'b1'"):
        sft.learn()


def tool_calling_policy():
    """The tiny policy with the shipped Qwen2.5-style tool-calling chat template."""
    import copy
    from pathlib import Path

    policy = load_policy("tiny-random")
    policy.tokenizer = copy.deepcopy(policy.tokenizer)  # other tests keep the shipped template
    fixture = Path(__file__).parents[1] / "algorithms" / "chat_templates" / "chatml_tools.jinja"
    policy.tokenizer.chat_template = fixture.read_text()
    return policy


def test_tool_call_demonstrations_get_the_chat_templates_replies(tmp_path):
    """With the tool-call template, the oracle's replies are rendered through the chat
    template as the rollout engine renders them (a tool turn, then the next assistant turn),
    not tokenized as the env's plain text."""
    policy = tool_calling_policy()
    sft = SFT(policy, {**env_kwargs(), "template": "tool-call"}, config(tmp_path, 1))
    (traj,) = sft.collect_rollouts(0)
    tok = policy.tokenizer
    assert traj.reward == 1.0 and len(traj.turn_spans) == 2
    (start, end), (next_start, _) = traj.turn_spans
    assert "<tool_call>" in tok.decode(traj.response_ids[start:end])
    reply = tok.decode(traj.response_ids[end:next_start])
    assert reply.startswith("<|im_end|>\n<|im_start|>user\n<tool_response>\n")
    assert reply.endswith("\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert traj.loss_mask[end:next_start] == [0] * (next_start - end)


def test_predict_stops_where_the_templates_turns_stop(tmp_path, monkeypatch):
    import algorithms.rollout as rollout

    seen, real_generate = {}, rollout.generate

    def fake_generate(model, ids, **kwargs):
        seen.update(kwargs)
        return real_generate(model, ids, **{**kwargs, "max_new_tokens": 1})

    monkeypatch.setattr(rollout, "generate", fake_generate)
    policy = tool_calling_policy()
    for template, stops in (("tool-call", ("</tool_call>",)), ("research-chat", None)):
        sft = SFT(policy, {**env_kwargs(), "template": template}, config(tmp_path, 1))
        sft.predict("Question: who?")
        assert tuple(seen["stop_strings"]) == (stops or sft.engine.stop_strings)
    assert "</search>" in seen["stop_strings"]
