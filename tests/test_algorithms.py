"""GRPO, PPO and REINFORCE on hand-made batches: the whole update path, without rollouts.

The tensor math (advantages, losses) is checked by hand in test_advantages / test_losses;
here we check what the algorithms and the shared loop do with it: masked tokens get no
gradient, an update moves log-probs the right way, micro-batching does not change the
gradient, non-finite losses are skipped, filters are counted, configs round-trip.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from algorithms import scoring
from algorithms.buffer import Trajectory, collate
from algorithms.config import TrainConfig
from algorithms.policy import LoraSettings, load_policy
from algorithms.registry import available_algorithms, make_algorithm
from algorithms.scoring import score_batch, trim_padding

ALGOS = ["grpo", "ppo", "reinforce"]


# One torch thread (the conftest fixture): results do not depend on it.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]


def policy(**kwargs):
    return load_policy("tiny-random", device="cpu", **kwargs)


def config(algo: str, tmp_path, **overrides) -> TrainConfig:
    base = {
        "output_dir": str(tmp_path),
        "optim.lr": 1e-3,
        "optim.max_grad_norm": None,
        "rollout.temperature": 1.0,
        "rollout.max_total_tokens": 32,
        "logging.wandb": False,
        "logging.progress_bar": False,
        "trainer.micro_batch_size": 4,
        "reinforce.baseline": "rloo",
    }
    return TrainConfig(algo=algo).with_overrides({**base, **overrides})


def episode(seed: int, group: int, reward: float, prompt_len: int = 5, finish="answered"):
    """prompt, 3 generated tokens, 2 observation tokens, 2 generated tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (prompt_len + 7,), generator=g).tolist()
    t = Trajectory(prompt_ids=ids[:prompt_len], group=group, reward=reward, finish_reason=finish)
    t.add_model_tokens(ids[prompt_len : prompt_len + 3], [-1.0] * 3)
    t.add_observation_tokens(ids[prompt_len + 3 : prompt_len + 5])
    t.add_model_tokens(ids[prompt_len + 5 :], [-1.0] * 2)
    return t


def two_groups() -> list[Trajectory]:
    return [
        episode(0, 0, 1.0, 4),
        episode(1, 0, 0.0, 6),
        episode(2, 1, 0.5, 5),
        episode(3, 1, 0.0, 3),
    ]


def sequence_logprobs(algo, trajectories) -> torch.Tensor:
    batch = collate(trajectories, algo.policy.tokenizer.pad_token_id)
    scores = score_batch(algo.policy.model, batch)
    return (scores.logprobs * batch.loss_mask).sum(-1)


# --------------------------------------------------------------------------------------
# Masked tokens and the direction of an update
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo_name", ALGOS)
def test_observation_tokens_get_exactly_zero_gradient(algo_name, tmp_path, monkeypatch):
    """Through learn_from (prepare, advantages, micro-batches, loss, backward), the gradient
    of the loss w.r.t. each observation/padding token's log-prob (and value) is exactly 0."""
    captured = []
    real_score_tokens = scoring.score_tokens

    def spy(*args, **kwargs):
        scores = real_score_tokens(*args, **kwargs)
        if scores.logprobs.requires_grad:
            scores.logprobs.retain_grad()
            if scores.values is not None:
                scores.values.retain_grad()
            captured.append((args[1], scores))
        return scores

    monkeypatch.setattr("algorithms.trainer.update.score_tokens", spy)
    overrides = {"grpo.kl_coef": 0.1, "ppo.kl_coef": 0.1, "reinforce.kl_coef": 0.1}
    algo = make_algorithm(algo_name, policy(), None, config(algo_name, tmp_path, **overrides))
    algo.learn_from(two_groups())

    assert captured
    for micro_batch, scores in captured:
        mask = micro_batch.loss_mask.bool()
        assert (~mask).any() and mask.any()
        for tensor in (scores.logprobs, scores.values):
            if tensor is None:
                continue
            assert tensor.grad is not None
            assert torch.equal(tensor.grad[~mask], torch.zeros_like(tensor.grad[~mask]))
            assert tensor.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("algo_name", ALGOS)
def test_one_update_raises_logprobs_of_positive_advantage_episodes(algo_name, tmp_path):
    trajectories = [episode(10, 0, 1.0), episode(11, 0, 0.0), episode(12, 0, 0.0)]
    trajectories += [episode(13, 0, 1.0)]
    algo = make_algorithm(algo_name, policy(), None, config(algo_name, tmp_path))
    before = sequence_logprobs(algo, trajectories)
    metrics = algo.learn_from(trajectories)
    after = sequence_logprobs(algo, trajectories)
    delta = after - before
    assert metrics["train/optimizer_steps"] == 1
    assert delta[0] > 0 and delta[3] > 0
    assert delta[1] < 0 and delta[2] < 0


@pytest.mark.parametrize("algo_name", ALGOS)
def test_zero_learning_rate_changes_nothing(algo_name, tmp_path):
    algo = make_algorithm(
        algo_name, policy(), None, config(algo_name, tmp_path, **{"optim.lr": 0.0})
    )
    before = {k: v.clone() for k, v in algo.policy.model.state_dict().items()}
    algo.learn_from(two_groups())
    after = algo.policy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_loss_stops_training_before_the_weights_change(tmp_path):
    from algorithms.trainer.update import NonFiniteUpdateError

    algo = make_algorithm("reinforce", policy(), None, config("reinforce", tmp_path))
    trajectories = two_groups()
    trajectories[0].reward = math.nan
    before = {k: v.clone() for k, v in algo.policy.model.state_dict().items()}
    with pytest.raises(NonFiniteUpdateError, match=r"step 1: the loss is not finite.*skip_nonf"):
        algo.learn_from(trajectories)
    assert all(torch.equal(before[k], v) for k, v in algo.policy.model.state_dict().items())


def test_a_model_whose_weights_hold_nan_is_not_exported(tmp_path):
    from benchmarks.learning_margin import make

    algo = make("reinforce", tmp_path, **{"checkpoint.export_final": True})

    def overflow(algo, metrics):  # as a last update that overflowed would leave the weights
        with torch.no_grad():
            next(algo.policy.model.parameters()).view(-1)[0] = math.nan

    with pytest.raises(ValueError, match=r"holds NaN or infinity: no final model is exported"):
        algo.learn(1, callback=overflow)
    assert not (tmp_path / "final").exists()


def test_non_finite_loss_skips_the_update_when_asked_and_is_counted_and_warned(tmp_path):
    cfg = config("reinforce", tmp_path, **{"trainer.skip_nonfinite_updates": True})
    algo = make_algorithm("reinforce", policy(), None, cfg)
    trajectories = two_groups()
    trajectories[0].reward = math.nan
    before = {k: v.clone() for k, v in algo.policy.model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match=r"step 1: skipped 1 optimizer step.*1 in this run"):
        metrics = algo.learn_from(trajectories)
    assert metrics["train/skipped_updates"] == 1
    assert metrics["train/optimizer_steps"] == 0
    assert all(torch.equal(before[k], v) for k, v in algo.policy.model.state_dict().items())
    assert algo.step == 1  # the step still counts; training goes on


# --------------------------------------------------------------------------------------
# Micro-batching, filtering, reference model
# --------------------------------------------------------------------------------------


def _grads_after_one_step(algo_name, tmp_path, **overrides):
    algo = make_algorithm(algo_name, policy(value_head=algo_name == "ppo"), None,
                          config(algo_name, tmp_path, **overrides))  # fmt: skip
    grads = {}

    def record(*args):
        for name, p in algo.policy.model.named_parameters():
            grads[name] = p.grad.clone()

    algo.optimizer.register_step_pre_hook(record)
    algo.learn_from(two_groups())
    return grads


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_accumulation_equals_one_big_batch(agg, tmp_path):
    overrides = {"grpo.loss_agg": agg, "grpo.kl_coef": 0.05}
    whole = _grads_after_one_step("grpo", tmp_path, **{"trainer.micro_batch_size": 4, **overrides})
    pieces = _grads_after_one_step("grpo", tmp_path, **{"trainer.micro_batch_size": 1, **overrides})
    for name in whole:  # equal up to float32 summation order
        error = (whole[name] - pieces[name]).norm() / whole[name].norm().clamp_min(1e-12)
        assert error < 1e-4, name


def test_zero_variance_groups_are_dropped_and_counted(tmp_path):
    trajectories = [*two_groups(), episode(20, 2, 0.3), episode(21, 2, 0.3)]
    algo = make_algorithm(
        "grpo", policy(), None,
        config("grpo", tmp_path, **{"trainer.filter_zero_variance_groups": True}),
    )  # fmt: skip
    metrics = algo.learn_from(trajectories)
    assert metrics["filter/zero_variance_groups"] == 1
    assert metrics["filter/kept_episodes"] == 4

    flat = [episode(30, 0, 1.0), episode(31, 0, 1.0)]
    metrics = algo.learn_from(flat)
    assert metrics["train/skipped_steps"] == 1
    assert algo.step == 2


def test_truncated_episodes_are_masked_out_of_the_loss(tmp_path, monkeypatch):
    trajectories = two_groups()
    trajectories[1].finish_reason = "token_budget"
    seen = []
    real = scoring.score_tokens

    def spy(model, batch, **kwargs):
        seen.append(batch.loss_mask.sum(-1))
        return real(model, batch, **kwargs)

    monkeypatch.setattr("algorithms.trainer.update.score_tokens", spy)
    cfg = config("grpo", tmp_path, **{"trainer.filter_truncated": True})
    metrics = make_algorithm("grpo", policy(), None, cfg).learn_from(trajectories)
    assert metrics["filter/truncated_episodes"] == 1
    counts = torch.cat(seen)
    assert sorted(counts.tolist()) == [0.0, 5.0, 5.0, 5.0]


def test_reference_model_only_when_needed(tmp_path):
    no_kl = make_algorithm(
        "grpo", policy(), None, config("grpo", tmp_path, **{"grpo.kl_coef": 0.0})
    )
    assert no_kl.reference_model is None
    full = make_algorithm("grpo", policy(), None, config("grpo", tmp_path))
    assert full.reference_model is not None
    assert not any(p.requires_grad for p in full.reference_model.parameters())
    lora = make_algorithm("grpo", policy(lora=LoraSettings(r=4)), None, config("grpo", tmp_path))
    assert lora.reference_model is None  # the base model with adapters off is the reference


def test_lora_reference_is_the_base_model(tmp_path):
    algo = make_algorithm("grpo", policy(lora=LoraSettings(r=4)), None,
                          config("grpo", tmp_path, **{"optim.lr": 1e-2}))  # fmt: skip
    batch = collate(two_groups(), algo.policy.tokenizer.pad_token_id)
    base = score_batch(algo.policy.model, batch).logprobs
    algo.learn_from(two_groups())
    trained = score_batch(algo.policy.model, batch).logprobs
    reference = scoring.reference_logprobs(algo.policy.model, batch)
    mask = batch.loss_mask.bool()
    assert not torch.allclose(trained[mask], base[mask])
    torch.testing.assert_close(reference[mask], base[mask])


def test_kl_is_zero_before_the_first_update(tmp_path):
    algo = make_algorithm("grpo", policy(), None, config("grpo", tmp_path, **{"grpo.kl_coef": 0.1}))
    metrics = algo.learn_from(two_groups())
    assert metrics["train/kl"] == pytest.approx(0.0, abs=1e-6)


def test_ppo_separate_critic_trains(tmp_path):
    cfg = config("ppo", tmp_path, **{"ppo.critic": "separate", "trainer.epochs": 2})
    algo = make_algorithm("ppo", policy(), None, cfg)
    assert algo.critic is not None and algo.policy.value_head is None
    head = algo.critic.value_head.linear.weight.clone()
    metrics = algo.learn_from(two_groups())
    assert metrics["train/optimizer_steps"] == 2
    assert math.isfinite(metrics["train/v_loss"])
    assert not torch.equal(head, algo.critic.value_head.linear.weight)


def test_logged_names_follow_cleanrl(tmp_path):
    metrics = make_algorithm("ppo", policy(), None, config("ppo", tmp_path)).learn_from(
        two_groups()
    )
    for name in ("pg_loss", "v_loss", "entropy_loss", "approx_kl", "clipfrac", "grad_norm"):
        assert f"train/{name}" in metrics, name


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4)])
def test_scores_match_a_plain_forward_pass(lora):
    from algorithms.objectives.ops import token_logprobs

    p = policy(lora=lora)
    trajectories = two_groups()
    batch = collate(trajectories, p.tokenizer.pad_token_id)
    scores = score_batch(p.model, batch, micro_batch_size=3, temperature=0.7, chunk_size=5)
    for i, t in enumerate(trajectories):
        ids = torch.tensor([t.prompt_ids + t.response_ids])
        with torch.no_grad():
            logits = p.model(ids).logits
        expected = token_logprobs(
            logits[:, len(t.prompt_ids) - 1 : -1], ids[:, len(t.prompt_ids) :], 0.7
        )
        got = scores.logprobs[i, : len(t.response_ids)]
        torch.testing.assert_close(got, expected[0], rtol=1e-4, atol=1e-5)


def grouped_episodes() -> list[Trajectory]:
    """Two questions x three samples: identical prompts (of different lengths per question),
    different responses with observation tokens in the middle."""
    trajectories = []
    for group, prompt_len in enumerate([4, 9]):
        prompt = episode(100 + group, group, 0.0, prompt_len).prompt_ids
        for sample in range(3):
            t = episode(200 + 3 * group + sample, group, float(sample), prompt_len)
            t.prompt_ids = list(prompt)
            trajectories.append(t)
    return trajectories


TEMPLATE = list(range(300, 340))  # a 40-token "instructions + worked example" prefix


def templated_episodes() -> list[Trajectory]:
    """Four different questions after one template prefix: prompts of different lengths
    that share their first 40 tokens, no two alike."""
    trajectories = []
    for i, question_len in enumerate([3, 6, 1, 4]):
        t = episode(300 + i, i, float(i), question_len)
        t.prompt_ids = TEMPLATE + t.prompt_ids
        trajectories.append(t)
    return trajectories


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_checkpointed_head_chunks_equal_the_plain_head(entropy_grad):
    """Under autograd the LM head runs in checkpointed chunks of positions (its float32
    logits are not kept for backward); log-probs, entropy and parameter gradients are the
    same as one plain head pass over every position."""
    results = {}
    for chunk in (None, 3):  # 3 positions per chunk: several chunks, a ragged last one
        p = policy()
        batch = collate(grouped_episodes(), p.tokenizer.pad_token_id)
        scores = scoring.score_tokens(
            p.model, batch, temperature=0.7, with_entropy=True, entropy_grad=entropy_grad,
            chunk_size=chunk,
        )  # fmt: skip
        assert scores.entropy is not None
        assert scores.entropy.requires_grad == entropy_grad
        mask = batch.loss_mask
        loss = (scores.logprobs * mask).sum()
        if entropy_grad:
            loss = loss - 0.1 * (scores.entropy * mask).sum()
        loss.backward()
        grads = {n: q.grad.clone() for n, q in p.model.named_parameters() if q.grad is not None}
        results[chunk] = (scores.logprobs.detach(), scores.entropy.detach(), grads)
    (lp_a, ent_a, g_a), (lp_b, ent_b, g_b) = results[None], results[3]
    torch.testing.assert_close(lp_b, lp_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent_b, ent_a, rtol=1e-5, atol=1e-5)
    assert g_a.keys() == g_b.keys() and g_a
    for name in g_a:
        # Chunks sum the tied head's gradient in another order: float32 rounding, which
        # grows with the gradient's size (the embedding's reaches ~50 here, and CPUs with
        # AVX-512 round differently from others), so the absolute tolerance scales with it.
        scale = max(1.0, float(g_a[name].abs().max()))
        torch.testing.assert_close(g_b[name], g_a[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("make_episodes", [grouped_episodes, templated_episodes])
def test_shared_prompt_pass_equals_the_plain_pass(make_episodes):
    """Running each group's prompt once, or a template prefix common to all rows once (a
    KV cache shared by the rows), gives the same log-probs, values and parameter gradients
    as running every row in full."""
    results = {}
    for share in (False, True):
        torch.manual_seed(0)  # the same value-head initialisation for both
        p = policy(value_head=True)
        batch = collate(make_episodes(), p.tokenizer.pad_token_id)
        scores = scoring.score_tokens(p.model, batch, value_head=p.value_head, share_prompts=share)
        mask = batch.loss_mask
        ((scores.logprobs * mask).sum() + (scores.values * mask).sum()).backward()
        grads = {n: q.grad.clone() for n, q in p.model.named_parameters()}
        results[share] = (scores.logprobs.detach(), scores.values.detach(), grads, mask.bool())
    (lp_a, v_a, g_a, mask), (lp_b, v_b, g_b, _) = results[False], results[True]
    torch.testing.assert_close(lp_b[mask], lp_a[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v_b[mask], v_a[mask], rtol=1e-4, atol=1e-5)
    for name in g_a:
        error = (g_a[name] - g_b[name]).norm() / g_a[name].norm().clamp_min(1e-12)
        assert error < 1e-4, name


def test_shared_prompts_actually_run_each_prompt_once(monkeypatch):
    p = policy()
    seen = []
    decoder = p.model.get_decoder()
    real_forward = decoder.forward

    def spy(*args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", spy)
    batch = collate(grouped_episodes(), p.tokenizer.pad_token_id)
    score_batch(p.model, batch, micro_batch_size=6)
    p_len, r_len = batch.prompt_len, batch.response_len
    assert seen == [(2, p_len), (6, r_len - 1)]
    # A template prefix common to different prompts runs once; each row runs the rest.
    seen.clear()
    batch = collate(templated_episodes(), p.tokenizer.pad_token_id)
    score_batch(p.model, batch, micro_batch_size=4)
    longest_question = 6
    assert seen == [(1, len(TEMPLATE)), (4, longest_question + batch.response_len - 1)]


def test_rows_with_no_common_prefix_and_leftover_padding_score_like_the_plain_pass():
    p = policy()
    episodes = [episode(10 + i, i, 0.0, n) for i, n in enumerate([4, 6, 9])]
    batch = collate(episodes, p.tokenizer.pad_token_id).select([0, 1])  # 3 padding columns
    mask = batch.loss_mask.bool()
    with torch.no_grad():
        shared = scoring.score_tokens(p.model, batch).logprobs
        plain = scoring.score_tokens(p.model, batch, share_prompts=False).logprobs
    torch.testing.assert_close(shared[mask], plain[mask], rtol=1e-4, atol=1e-5)


def test_autocast_runs_the_trunk_in_bf16_and_the_head_in_fp32(monkeypatch):
    p = policy()
    batch = collate(templated_episodes(), p.tokenizer.pad_token_id)
    full = scoring.score_tokens(p.model, batch).logprobs.detach()
    head_inputs = []
    head = p.model.get_output_embeddings()
    monkeypatch.setattr(head, "forward", lambda x: (head_inputs.append(x.dtype), torch.nn.functional.linear(x, head.weight))[1])  # fmt: skip
    with scoring.autocast(p.model, "bfloat16"):
        mixed = scoring.score_tokens(p.model, batch).logprobs
        mixed.sum().backward()
    assert head_inputs == [torch.float32] and mixed.dtype == torch.float32
    mask = batch.loss_mask.bool()
    assert not torch.equal(mixed[mask].detach(), full[mask])  # bf16 matmuls did run
    torch.testing.assert_close(mixed[mask].detach(), full[mask], rtol=0.02, atol=0.05)
    grads = [q.grad for q in p.model.parameters() if q.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)


def test_trim_padding_drops_only_all_padding_columns():
    trajectories = [episode(0, 0, 0.0, prompt_len=3), episode(1, 0, 0.0, prompt_len=7)]
    trajectories[0].response_ids.extend([5, 6, 7])
    trajectories[0].loss_mask.extend([1, 1, 1])
    trajectories[0].sample_logprobs.extend([0.0] * 3)
    batch = collate(trajectories, 0)
    row = trim_padding(batch.select([1]))
    assert row.prompt_len == 7 and row.response_len == 7
    torch.testing.assert_close(
        row.input_ids[0], torch.tensor(trajectories[1].prompt_ids + trajectories[1].response_ids)
    )


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


def test_config_yaml_round_trip(tmp_path):
    cfg = TrainConfig().with_overrides(
        ["algo=ppo", "grpo.clip_high=0.28", "model.lora.r=8", "optim.lr=3e-6", "ppo.vf_clip=null"]
    )
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = TrainConfig.from_yaml(path)
    assert again == cfg
    assert again.model.lora is not None and again.model.lora.r == 8
    assert again.optim.lr == 3e-6 and again.ppo.vf_clip is None and again.algo == "ppo"


def test_unknown_config_keys_are_errors_that_list_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grpo:\n  kl_coeff: 0.1\n")
    with pytest.raises(ValueError, match=r"kl_coeff.*valid keys: clip_low, clip_high, kl_coef"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match=r"unknown key.*'trainr'.*valid keys: algo"):
        TrainConfig.from_dict({"trainr": {}})
    with pytest.raises(ValueError, match=r"grpo.kl_estimator must be one of"):
        TrainConfig.from_dict({"grpo": {"kl_estimator": "k4"}})
    with pytest.raises(ValueError, match=r"trainer.epochs must be an integer"):
        TrainConfig.from_dict({"trainer": {"epochs": 1.5}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=1e999", "optim.lr must be a finite number in [0, 1], got inf"),
        ("rollout.temperature=.inf", "rollout.temperature must be a finite number in [0, 100]"),
        ("grpo.kl_coef=.nan", "grpo.kl_coef must be a finite number in [0, 1000], got nan"),
        ("optim.betas=[0.9, .inf]", "optim.betas[1] must be a finite number"),
        ("rollout.group_size=99999999999999999999", "rollout.group_size must be in [1, 1024]"),
        ("trainer.micro_batch_size=100000000", "trainer.micro_batch_size must be in [1, 65536]"),
        ("env.search_cost=1e300", "env.search_cost must be in [-100, 100], got 1e+300"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused_with_their_range(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig().with_overrides([override]).validate(check_names=False, check_device=False)


def test_every_float_setting_refuses_infinity():
    from algorithms.config_checks import _numbers

    floats = [p for p, v in _numbers(TrainConfig(), "") if isinstance(v, float)]
    assert len(floats) >= 19
    for path in floats:
        key = path.split("[")[0]
        value = "[0.9, .inf]" if key == "optim.betas" else ".inf"
        with pytest.raises(ValueError, match=re.escape(".".join(key.split(".")[-2:]))):
            TrainConfig().with_overrides([f"{key}={value}"]).validate(
                check_names=False, check_device=False
            )


def test_a_malformed_override_value_is_a_clear_error_not_a_yaml_traceback():
    with pytest.raises(ValueError, match=r"override 'x=\[1': the value '\[1' is not valid YAML"):
        TrainConfig().with_overrides(["x=[1"])


def test_shipped_configs_load():
    from pathlib import Path

    files = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))
    assert {f.name for f in files} >= {"research-grpo.yaml", "searchr1-ppo.yaml", "cpu-small.yaml"}
    by_name = {f.name: TrainConfig.from_yaml(f) for f in files}
    research = by_name["research-grpo.yaml"]
    assert (research.algo, research.rollout.group_size, research.env.top_k) == ("grpo", 5, 5)
    assert (research.grpo.kl_coef, research.grpo.kl_estimator) == (0.001, "k3")
    assert (research.grpo.clip_low, research.optim.lr) == (0.2, 1e-6)
    search_r1 = by_name["searchr1-ppo.yaml"]
    assert (search_r1.algo, search_r1.env.top_k, search_r1.env.max_turns) == ("ppo", 3, 4)
    assert (search_r1.ppo.gamma, search_r1.ppo.lam) == (1.0, 1.0)


def test_lr_schedule_by_hand(tmp_path):
    from algorithms.trainer.optim import lr_factor

    cfg = config("reinforce", tmp_path, **{
        "optim.warmup_steps": 2, "optim.schedule": "linear", "optim.min_lr_ratio": 0.5,
    })  # fmt: skip
    factors = [lr_factor(s, cfg.optim, total_steps=6) for s in range(7)]
    # warmup 1/2, 2/2; then linear from 1 to 0.5 over the 4 remaining steps
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5])


def test_registry_lists_and_rejects_names():
    assert available_algorithms() == ["grpo", "ppo", "reinforce", "sft"]
    with pytest.raises(ValueError, match="unknown algorithm 'dpo'"):
        make_algorithm("dpo", None)


# ---------------------------------------------------------------- statistics and devices


@pytest.mark.parametrize("algo_name", ["sft", "grpo"])
def test_logged_losses_do_not_depend_on_micro_batching(algo_name, tmp_path):
    # Each loss statistic is already divided by the whole minibatch's denominator, so its
    # micro-batch values add up; SFT's nll used to be averaged instead (about 4x too small
    # with 4 micro-batches of one episode).
    logged = []
    for micro in (4, 1):
        torch.manual_seed(0)
        cfg = config(algo_name, tmp_path / str(micro), **{"trainer.micro_batch_size": micro})
        algo = make_algorithm(algo_name, policy(), None, cfg)
        logged.append(algo.learn_from(two_groups()))
    whole, split = logged
    for key in ("train/loss", "train/entropy", "train/entropy_loss"):
        assert split[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key
    if algo_name == "sft":
        assert split["train/nll"] == pytest.approx(whole["train/nll"], rel=1e-4)
        assert whole["train/nll"] == pytest.approx(whole["train/loss"], rel=1e-6)
        assert whole["train/nll"] > 5.0  # -log(1/vocab) is about 10 for a random tiny model


@pytest.mark.parametrize("algo_name", ALGOS)
def test_update_creates_every_tensor_on_the_policy_device(algo_name, tmp_path):
    # With torch's default device set to "meta", any tensor the update creates without
    # following the policy's device lands on meta: mixing it with the CPU policy's tensors
    # raises, and reading it fails. On a CUDA machine the same bug is a device mismatch.
    algo = make_algorithm(algo_name, policy(), None, config(algo_name, tmp_path))
    before = {k: v.clone() for k, v in algo.policy.model.state_dict().items()}
    trajectories = two_groups()
    torch.set_default_device("meta")
    try:
        metrics = algo.learn_from(trajectories)
    finally:
        torch.set_default_device("cpu")
    assert metrics["train/optimizer_steps"] == 1
    after = algo.policy.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_collate_puts_the_batch_on_the_requested_device():
    batch = collate(two_groups(), pad_id=0, device="meta")
    tensors = [v for v in vars(batch).values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "meta" for t in tensors)
