"""The rollout engine with a tiny random model: masks, log-probs, cache reuse, budgets."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from world import SAMPLES, KeywordRetriever

from algorithms.buffer import collate
from algorithms.policy import load_policy
from algorithms.rollout import RolloutEngine, Sampling
from research_env import Termination


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-random")


def make_engine(policy, **env):
    kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3, **env}
    return RolloutEngine(policy, kwargs)


def test_groups_and_masks(policy):
    engine = make_engine(policy)
    s = Sampling(max_turn_tokens=6, max_total_tokens=400, seed=0)
    trajs = engine.collect([1, 0], group_size=3, sampling=s)
    assert [t.group for t in trajs] == [0, 0, 0, 1, 1, 1]
    assert [t.info["question_id"] for t in trajs] == ["q2"] * 3 + ["q1"] * 3
    tok = policy.tokenizer
    for t in trajs:
        assert len(t.response_ids) == len(t.loss_mask) == len(t.sample_logprobs)
        # Mask is 1 exactly inside the model's turns.
        inside = {k for a, b in t.turn_spans for k in range(a, b)}
        assert {k for k, m in enumerate(t.loss_mask) if m} == inside
        # A random model never answers: every turn is invalid, the env corrects it, and the
        # turn budget ends the episode; the text between turns is the env's observation.
        assert t.finish_reason == "turn_budget" and len(t.turn_spans) == 3
        between = t.response_ids[t.turn_spans[0][1] : t.turn_spans[1][0]]
        assert "neither a complete" in tok.decode(between)
        assert all(lp == 0.0 for lp, m in zip(t.sample_logprobs, t.loss_mask) if not m)


@pytest.mark.numeric
def test_sampling_logprobs_match_fresh_forward(policy):
    engine = make_engine(policy)
    s = Sampling(temperature=0.7, max_turn_tokens=5, max_total_tokens=400, seed=1)
    trajs = engine.collect([0], group_size=2, sampling=s)
    batch = collate(trajs, pad_id=policy.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logits = policy.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits.float()
    p = batch.prompt_len
    pred = logits[:, p - 1 : -1] / 0.7
    fresh = torch.log_softmax(pred, -1).gather(-1, batch.input_ids[:, p:, None]).squeeze(-1)
    mask = batch.loss_mask.bool()
    assert torch.allclose(fresh[mask], batch.sample_logprobs[mask], atol=1e-4)


def test_cached_turns_match_full_recomputation_greedy(policy):
    engine = make_engine(policy)
    s = Sampling(greedy=True, max_turn_tokens=6, max_total_tokens=400)
    (traj,) = engine.collect([0], group_size=1, sampling=s)
    history = list(traj.prompt_ids)
    position = 0
    for start, end in traj.turn_spans:
        history += traj.response_ids[position:start]  # the observation before this turn
        ids = torch.tensor([history])
        out = policy.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=end - start,
            do_sample=False,
            pad_token_id=0,
        )
        assert out[0, len(history) :].tolist() == traj.response_ids[start:end]
        history += traj.response_ids[start:end]
        position = end


def test_total_token_budget_truncates(policy):
    engine = make_engine(policy, max_turns=10)
    s = Sampling(max_turn_tokens=8, max_total_tokens=30, seed=2)
    trajs = engine.collect([0, 1], group_size=2, sampling=s)
    for t in trajs:
        assert t.finish_reason == "token_budget"
        assert t.info["termination"] == "token_budget"
        assert len(t.response_ids) <= 30
        assert t.reward == 0.0  # malformed under the research reward


def test_same_seed_same_rollout(policy):
    engine = make_engine(policy)
    s = Sampling(max_turn_tokens=5, max_total_tokens=200, seed=7)
    a = engine.collect([0, 1], group_size=2, sampling=s)
    b = engine.collect([0, 1], group_size=2, sampling=s)
    assert [t.response_ids for t in a] == [t.response_ids for t in b]


def test_fused_and_transformers_rollout_copies_play_the_same_episodes(policy):
    s = Sampling(max_turn_tokens=5, max_total_tokens=300, seed=3)
    runs = {}
    for fused in (True, False):
        kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3}
        engine = RolloutEngine(policy, kwargs, rollout_dtype="float32", fused=fused)
        assert (type(engine._decode_model()).__name__ == "FusedLlama") is fused
        runs[fused] = engine.collect([0, 1], group_size=2, sampling=s)
    assert [t.response_ids for t in runs[True]] == [t.response_ids for t in runs[False]]
    for a, b in zip(runs[True], runs[False]):
        assert a.sample_logprobs == pytest.approx(b.sample_logprobs, abs=1e-4)


def test_eos_ends_the_episode_as_the_models_own_choice(policy):
    s = Sampling(greedy=True, max_turn_tokens=6, max_total_tokens=400)
    (plain,) = make_engine(policy).collect([0], sampling=s)
    # Make the greedy first turn's third token an end-of-sequence token.
    stop_at = plain.response_ids[2]
    first = plain.response_ids.index(stop_at)
    model = copy.deepcopy(policy.model)
    model.generation_config.eos_token_id = [stop_at]
    eos_policy = SimpleNamespace(model=model, tokenizer=policy.tokenizer)
    (traj,) = make_engine(eos_policy).collect([0], sampling=s)
    assert traj.response_ids == plain.response_ids[: first + 1]
    assert traj.finish_reason == "eos" == Termination.EOS
    assert traj.info["termination"] == "eos" and traj.info["turns"] == 1


def test_engine_plays_in_a_vector_env_resized_to_each_batch(policy):
    engine = make_engine(policy)
    s = Sampling(max_turn_tokens=3, max_total_tokens=100, seed=0)
    assert len(engine.collect([0, 1], group_size=2, sampling=s)) == 4
    assert engine.vector_env.num_envs == 4
    first = engine.vector_env.envs[0]
    assert len(engine.collect([1], sampling=s)) == 1
    assert engine.vector_env.envs == [first]  # the same sub-env, reused
    assert engine.num_questions == len(SAMPLES)


@pytest.mark.slow
def test_real_smollm2_plays_one_episode_on_default_env():
    policy = load_policy("smollm2-135m")
    engine = RolloutEngine(policy, {"split": "dev", "max_turns": 2})
    s = Sampling(greedy=True, max_turn_tokens=48, max_total_tokens=600)
    (traj,) = engine.collect([0], group_size=1, sampling=s)
    assert traj.finish_reason in {"answered", "turn_budget", "token_budget", "eos"}
    assert traj.n_generated > 0
    assert "question_id" in traj.info and traj.info["turns"] >= 1
    text = policy.tokenizer.decode(traj.response_ids[: traj.turn_spans[0][1]])
    assert text.strip()  # the model wrote a real turn


@pytest.mark.parametrize(
    "copy_settings",
    [{}, {"rollout_dtype": "bfloat16", "pack_weights": True}, {"rollout_dtype": "int8"}],
    ids=["policy-weights", "bf16-packed-fused-copy", "int8-copy"],
)
def test_rollout_creates_every_tensor_on_the_policy_device(policy, copy_settings):
    # With torch's default device set to "meta", a tensor the engine, the decoder or the
    # rollout copy creates without following the policy's device lands on meta, and mixing
    # or reading it fails: on a GPU the same bug is a device mismatch.
    kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 2}
    engine = RolloutEngine(policy, kwargs, **copy_settings)
    s = Sampling(max_turn_tokens=8, max_total_tokens=64, seed=3)
    expected = engine.collect([0, 1], group_size=2, sampling=s)
    torch.set_default_device("meta")
    try:
        trajs = engine.collect([0, 1], group_size=2, sampling=s)
    finally:
        torch.set_default_device("cpu")
    assert [t.response_ids for t in trajs] == [t.response_ids for t in expected]


@pytest.mark.parametrize("rollout_dtype", [None, "bfloat16", "int8"])
def test_sampler_learner_mismatch_is_logged(policy, tmp_path, rollout_dtype):
    # The same model in the same precision samples and learns: the logged mismatch is zero
    # (up to float noise between the cached decoder and a full pass). A bf16 or int8 rollout
    # copy samples from a slightly different distribution: the mismatch is positive, and TIS
    # weights the policy gradient by the capped ratio.
    from algorithms.config import TrainConfig
    from algorithms.registry import make_algorithm

    cfg = TrainConfig(algo="grpo").with_overrides({
        "output_dir": str(tmp_path), "logging.wandb": False, "logging.progress_bar": False,
        "rollout.temperature": 1.0, "rollout.rollout_dtype": rollout_dtype,
        "trainer.tis_cap": 2.0, "grpo.kl_coef": 0.0, "optim.lr": 0.0,
    })  # fmt: skip
    algo = make_algorithm("grpo", policy, {"dataset": SAMPLES, "retriever": KeywordRetriever(),
                                           "max_turns": 2}, cfg)  # fmt: skip
    engine = RolloutEngine(policy, {"dataset": SAMPLES, "retriever": KeywordRetriever(),
                                    "max_turns": 2}, rollout_dtype=rollout_dtype)  # fmt: skip
    trajs = engine.collect([0, 1], 2, sampling=Sampling(max_turn_tokens=8, seed=1))
    for i, t in enumerate(trajs):
        t.reward = float(i % 2)  # non-flat groups, so the update runs
    metrics = algo.learn_from(trajs)
    if rollout_dtype is None:
        assert metrics["train/sampler_kl"] < 1e-6
        assert metrics["train/sampler_ratio_max"] == pytest.approx(1.0, abs=1e-3)
        assert metrics["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    else:
        assert metrics["train/sampler_kl"] > 1e-5
        assert metrics["train/sampler_ratio_max"] > 1.001
        assert math.isfinite(metrics["train/sampler_kl"])
        # TIS applied: the weights are the capped ratios, so their mean moved off 1.
        weight = metrics["train/tis_weight_mean"]
        assert math.isfinite(weight) and weight != pytest.approx(1.0, abs=1e-4)
