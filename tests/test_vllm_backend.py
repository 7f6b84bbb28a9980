"""The vLLM rollout backend's contract, on CPU, against a fake ``vllm.LLM``.

The fake's ``generate`` returns objects shaped like vLLM's ``RequestOutput`` (``outputs[0]``
with ``token_ids``, ``logprobs`` as one ``{token id: Logprob}`` dict per token,
``finish_reason`` and ``stop_reason``), from a script of turns per question; it records the
prompts and ``SamplingParams`` it was given. The last test runs the real thing where vllm
and a CUDA GPU exist.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from world import SAMPLES, KeywordRetriever

from algorithms.policy import load_policy
from algorithms.rollout import RolloutEngine, Sampling
from algorithms.rollout.vllm_backend import (
    MISSING_VLLM,
    VLLMBackend,
    VLLMDecodeState,
    hf_weights,
    turn_output,
)
from research_env import Termination
from research_env.protocol import STOP_STRINGS


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-random")


@dataclass
class FakeParams:
    """Stands in for ``vllm.SamplingParams``: keeps the keyword arguments."""

    kwargs: dict[str, Any]

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@dataclass
class FakeLLM:
    """``generate`` plays ``script[question][turn]``: ``(text, finish_reason, stop_reason)``.

    The question is recognised by a marker string in the decoded prompt; each turn's text
    is tokenized by the test's tokenizer, and the sampled tokens' log-probs are
    ``-0.01 * (position + 1) - 0.1 * turn``, so every one is distinct and checkable.
    """

    tokenizer: Any
    script: dict[str, list[tuple[str, str, Any]]]
    prompts: list[list[int]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    loaded: list[list[tuple[str, torch.Tensor]]] = field(default_factory=list)
    resets: int = 0
    model: Any = None

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        results = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids = prompt["prompt_token_ids"]
            self.prompts.append(list(ids))
            self.params.append(params.kwargs)
            text = self.tokenizer.decode(ids)
            question = next(q for q in self.script if q in text)
            turn = sum(1 for q_text, _, _ in self.script[question] if q_text in text)
            reply, finish, stop = self.script[question][turn]
            tokens = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            if stop is None and finish == "stop":  # EOS: vLLM keeps the EOS token
                tokens = [*tokens, self.tokenizer.eos_token_id]
            tokens = tokens[: params.kwargs["max_tokens"]]
            logprobs = [
                {t: SimpleNamespace(logprob=-0.01 * (k + 1) - 0.1 * turn, rank=1)}
                for k, t in enumerate(tokens)
            ]
            completion = SimpleNamespace(
                index=0,
                text=reply,
                token_ids=tuple(tokens),
                cumulative_logprob=None,
                logprobs=logprobs,
                finish_reason=finish,
                stop_reason=stop,
            )
            results.append(SimpleNamespace(prompt_token_ids=ids, outputs=[completion]))
        return results

    def apply_model(self, func):
        class Model:
            def load_weights(inner, weights):  # a fake vLLM model
                self.loaded.append(list(weights))
                return {name for name, _ in weights}

        return [func(Model())]

    def reset_prefix_cache(self):
        self.resets += 1
        return True


# The default template's prompt ends with the prefill "<think>"; a turn goes on from there.
SEARCH_1 = "find the founder</think>\n<search>Brisa Telk</search>"
ANSWER_1 = "\n<think>done</think>\n<answer>The answer is \\boxed{Ostravel}</answer>"
SEARCH_2 = "<search>Glass Tide</search>"


def make_engine(policy, fake, **kwargs):
    backend = VLLMBackend(fake, sampling_params=FakeParams)
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3}
    return RolloutEngine(policy, env, backend=backend, **kwargs), backend


def test_episodes_keep_the_exact_tokens_logprobs_and_observations(policy):
    tok = policy.tokenizer
    fake = FakeLLM(
        tok,
        {
            "Brisa Telk headquartered": [
                (SEARCH_1, "stop", "</search>"),
                (ANSWER_1, "stop", "</answer>"),
            ],
            "The Glass Tide": [(SEARCH_2, "stop", "</search>"), ("I give up", "stop", None)],
        },
    )
    engine, backend = make_engine(policy, fake)
    s = Sampling(temperature=0.7, max_turn_tokens=64, max_total_tokens=2000, seed=3)
    trajs = engine.collect([0, 1], group_size=2, sampling=s)

    assert [t.group for t in trajs] == [0, 0, 1, 1]
    search = tok(SEARCH_1, add_special_tokens=False)["input_ids"]
    answer = tok(ANSWER_1, add_special_tokens=False)["input_ids"]
    for t in trajs[:2]:
        assert t.finish_reason == Termination.ANSWERED and t.info["format_valid"]
        assert t.reward == 1.0
        # The model's tokens are exactly what vLLM sampled, at the positions of the turns.
        (a0, b0), (a1, b1) = t.turn_spans
        assert t.response_ids[a0:b0] == search and t.response_ids[a1:b1] == answer
        assert t.sample_logprobs[a0:b0] == pytest.approx([-0.01 * (k + 1) for k in range(b0)])
        assert t.sample_logprobs[a1:b1] == pytest.approx(
            [-0.01 * (k + 1) - 0.1 for k in range(b1 - a1)]
        )
        # Between them: the observation, tokenized on its own, mask 0, never re-rendered.
        observation = t.response_ids[b0:a1]
        assert "<result>" in tok.decode(observation) and "Brisa Telk" in tok.decode(observation)
        assert t.loss_mask[b0:a1] == [0] * (a1 - b0)
        assert t.sample_logprobs[b0:a1] == [0.0] * (a1 - b0)
    for t in trajs[2:]:  # the second turn ends with EOS: the engine ends the episode
        assert t.finish_reason == Termination.EOS
        assert t.response_ids[-1] == tok.eos_token_id

    # Turn 2's request was the whole history as token ids: prompt + turn 1 + observation.
    second_turn_prompts = fake.prompts[4:]
    histories = sorted(t.prompt_ids + t.response_ids[: t.turn_spans[1][0]] for t in trajs)
    assert sorted(second_turn_prompts) == histories
    # Requests: stop strings (kept in the output), sampled log-probs, per-episode budgets.
    for params in fake.params:
        assert params["stop"] == list(STOP_STRINGS)
        assert params["include_stop_str_in_output"] is True
        assert params["logprobs"] == 0 and params["temperature"] == 0.7
        assert params["top_k"] == -1 and params["n"] == 1
    assert fake.params[0]["max_tokens"] == 64
    # Seeded per episode and turn: the G samples of a group draw differently.
    assert len({p["seed"] for p in fake.params}) == len(fake.params)


def test_budgets_reach_vllm_and_length_maps_to_the_vocabulary(policy):
    tok = policy.tokenizer
    long_turn = "<think>" + "very " * 40 + "long</think>"
    fake = FakeLLM(tok, {"Glass Tide": [(long_turn, "length", None)] * 3})
    engine, _ = make_engine(policy, fake)
    s = Sampling(max_turn_tokens=8, max_total_tokens=2000, seed=0, greedy=True)
    (t,) = engine.collect([1], sampling=s)
    assert all(b - a == 8 for a, b in t.turn_spans)
    assert [p["max_tokens"] for p in fake.params] == [8, 8, 8]
    assert fake.params[0]["temperature"] == 0.0  # greedy
    assert "stop_token_ids" not in fake.params[0]
    # Stop tokens, where a caller gives them, go into the request.
    params = VLLMBackend(fake, sampling_params=FakeParams).params(s, 4, ["x"], 1, [13])
    assert params.kwargs["stop_token_ids"] == [13] and params.kwargs["seed"] == 1
    assert t.finish_reason == Termination.TURN_BUDGET


def test_turn_output_maps_finish_and_stop_reasons():
    def completion(finish, stop):
        return SimpleNamespace(
            token_ids=[5, 6],
            logprobs=[{5: SimpleNamespace(logprob=-1.0)}, {6: SimpleNamespace(logprob=-2.0)}],
            finish_reason=finish,
            stop_reason=stop,
        )

    assert turn_output(completion("stop", "</search>")).finish_reason == Termination.STOP
    assert turn_output(completion("stop", 13)).finish_reason == Termination.STOP  # stop token
    assert turn_output(completion("stop", None)).finish_reason == Termination.EOS
    out = turn_output(completion("length", None))
    assert (out.token_ids, out.logprobs, out.finish_reason) == (
        [5, 6],
        [-1.0, -2.0],
        Termination.LENGTH,
    )
    with pytest.raises(RuntimeError, match="abort"):
        turn_output(completion("abort", None))
    with pytest.raises(RuntimeError, match="logprobs=0"):
        turn_output(SimpleNamespace(token_ids=[1], logprobs=None, finish_reason="stop"))


def test_weights_are_pushed_before_a_collect_only_when_they_changed(policy):
    fake = FakeLLM(
        policy.tokenizer, {"Glass Tide": [("<answer>Orr</answer>", "stop", "</answer>")]}
    )
    engine, backend = make_engine(policy, fake)
    s = Sampling(max_turn_tokens=16, seed=0)
    engine.collect([1], sampling=s)
    assert backend.pushes == 1 and fake.resets == 1
    names = {name for name, _ in fake.loaded[0]}
    assert names == set(policy.model.state_dict())
    assert "model.embed_tokens.weight" in names

    engine.collect([1], sampling=s)  # unchanged weights: no push
    assert backend.pushes == 1

    param = next(policy.model.parameters())
    with torch.no_grad():
        param.add_(1.0)  # what an optimizer step does, in place
    try:
        engine.collect([1], sampling=s)
        assert backend.pushes == 2 and fake.resets == 2
        pushed = dict(fake.loaded[1])
        name = next(n for n, p in policy.model.named_parameters() if p is param)
        assert torch.equal(pushed[name], param.detach())
    finally:
        with torch.no_grad():
            param.sub_(1.0)


def test_an_optimizer_step_triggers_a_push(policy):
    model = torch.nn.Linear(3, 2)
    backend = VLLMBackend(FakeLLM(None, {}), sampling_params=FakeParams)
    assert backend.sync(model) and not backend.sync(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert backend.sync(model) and backend.pushes == 2


def test_lora_weights_are_merged_and_named_like_the_base_model():
    peft = pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    base = LlamaForCausalLM(config)
    base_names = set(base.state_dict())
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    with hf_weights(model) as weights:
        merged = dict(weights)
        assert set(merged) == base_names
        q = "model.layers.0.self_attn.q_proj.weight"
        merged_q = merged[q].clone()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    # The base weight is unmerged again afterwards; the pushed one had the adapter in it.
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * layer.scaling[
        "default"
    ]
    assert torch.allclose(merged_q, layer.base_layer.weight + delta, atol=1e-6)
    assert not torch.allclose(merged_q, layer.base_layer.weight)


def test_older_vllm_gets_weights_through_the_driver_worker(policy):
    loaded = []
    model = SimpleNamespace(load_weights=lambda weights: loaded.append(list(weights)))
    runner = SimpleNamespace(model=model)
    llm = SimpleNamespace(
        llm_engine=SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        )
    )
    count = VLLMBackend(llm).push_weights(torch.nn.Linear(2, 2))
    assert count == 2 and {n for n, _ in loaded[0]} == {"weight", "bias"}


def test_decode_state_verbs():
    fake = FakeLLM(None, {})
    state = VLLMDecodeState(VLLMBackend(fake, sampling_params=FakeParams), [[1, 2], [3]])
    state.append({0: [7, 8]})
    assert state.tokens(0) == [1, 2, 7, 8] and len(state) == 2
    state.release([1])
    with pytest.raises(ValueError, match="released"):
        state.append({1: [4]})
    with pytest.raises(ValueError, match="released"):
        state.decode(max_new_tokens=4, seq_indices=[1])
    assert state.decode(max_new_tokens={0: 0}, seq_indices=[0])[0].token_ids == []
    with pytest.raises(ValueError, match="EOS"):
        state.decode(max_new_tokens=4, eos_token_ids=[2])
    with pytest.raises(ValueError):
        VLLMDecodeState(VLLMBackend(fake), [[]])


def test_a_missing_vllm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match=r"GPU only\): `make install-vllm`"):
        VLLMBackend.create("some/model")
    backend = VLLMBackend(FakeLLM(None, {}))
    with pytest.raises(ImportError, match="GPU only"):
        backend.params(Sampling(), 4, STOP_STRINGS, 0)
    assert "rollout.backend: hf" in MISSING_VLLM


def test_the_trainer_builds_one_vllm_backend_from_the_config(policy, monkeypatch):
    from algorithms.config import TrainConfig
    from algorithms.trainer import loop

    created = []

    def fake_create(model, **kwargs):
        created.append((model, kwargs))
        return VLLMBackend(FakeLLM(policy.tokenizer, {}), sampling_params=FakeParams)

    monkeypatch.setattr(VLLMBackend, "create", staticmethod(fake_create))
    config = TrainConfig.from_dict(
        {"rollout": {"backend": "vllm", "vllm_gpu_memory_utilization": 0.4, "vllm_model": "m",
                     "vllm_sleep": True}}
    )  # fmt: skip
    trainer = SimpleNamespace(config=config, policy=policy)
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever()}
    first = loop.OnPolicyAlgorithm._make_engine(trainer, env)
    second = loop.OnPolicyAlgorithm._make_engine(trainer, env)
    assert first.backend is second.backend and len(created) == 1
    assert created[0] == (
        "m",
        {"gpu_memory_utilization": 0.4, "max_model_len": None, "seed": config.trainer.seed,
         "sleep": True},
    )  # fmt: skip


def test_the_auto_share_is_sized_by_the_planner_before_vllm_starts(policy, monkeypatch):
    from algorithms.config import TrainConfig
    from algorithms.planner import GiB
    from algorithms.trainer import build, loop

    created = []

    def fake_create(model, **kwargs):
        created.append(kwargs["gpu_memory_utilization"])
        return VLLMBackend(FakeLLM(policy.tokenizer, {}), sampling_params=FakeParams)

    monkeypatch.setattr(VLLMBackend, "create", staticmethod(fake_create))
    # tests/test_planner.py's run, by hand there: a training peak of 67,572,736 bytes,
    # which leaves (4 GiB - 67,572,736 - 1 GiB - 10% of it) / 4 GiB = 0.732 of a 4 GiB GPU
    config = TrainConfig(algo="grpo").with_overrides(
        {"rollout.backend": "vllm", "rollout.vllm_max_model_len": 4096,
         "rollout.max_total_tokens": 1000, "trainer.micro_batch_size": 2,
         "trainer.logprob_chunk_size": 10, "grpo.kl_coef": 0.001}
    )  # fmt: skip
    assert config.rollout.vllm_gpu_memory_utilization == "auto"  # the default
    trainer = SimpleNamespace(config=config, policy=policy)
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever()}
    with pytest.raises(ValueError, match=r"auto .* not on a CUDA device .* model\.device: cuda"):
        loop.OnPolicyAlgorithm._make_engine(trainer, env)  # vLLM is CUDA only
    monkeypatch.setattr(build, "gpu_memory", lambda policy: 4.0 * GiB)  # a GPU, faked
    loop.OnPolicyAlgorithm._make_engine(trainer, env)
    assert created == [0.732]
    monkeypatch.setattr(build, "gpu_memory", lambda policy: 2.0 * GiB)
    trainer = SimpleNamespace(config=config, policy=policy)
    with pytest.raises(ValueError, match="less than it needs"):
        loop.OnPolicyAlgorithm._make_engine(trainer, env)
    assert created == [0.732]  # refused before vLLM starts


def test_the_default_engine_has_no_backend(policy):
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever()}
    assert RolloutEngine(policy, env).backend is None


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="needs vllm and a CUDA GPU",
)
def test_gpu_vllm_rollout_matches_the_trainer_logprobs():
    """On a GPU machine: real vLLM rollouts; the sampled tokens' log-probs agree with a
    fresh forward of the trainer's model (what the importance ratio relies on)."""
    from algorithms.buffer import collate

    policy = load_policy("smollm2-135m", device="cuda")
    backend = VLLMBackend.create(
        policy.model.config._name_or_path, gpu_memory_utilization=0.3, max_model_len=4096
    )
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3}
    engine = RolloutEngine(policy, env, backend=backend)
    s = Sampling(temperature=1.0, max_turn_tokens=48, max_total_tokens=1024, seed=0)
    trajs = engine.collect([0, 1], group_size=2, sampling=s)
    assert backend.pushes == 1
    assert all(t.finish_reason in {str(r) for r in Termination} for t in trajs)
    batch = collate(trajs, pad_id=policy.tokenizer.pad_token_id or 0, device="cuda")
    with torch.no_grad():
        logits = policy.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits.float()
    p = batch.prompt_len
    fresh = torch.log_softmax(logits[:, p - 1 : -1], -1)
    fresh = fresh.gather(-1, batch.input_ids[:, p:, None]).squeeze(-1)
    mask = batch.loss_mask.bool()
    # bf16 vLLM vs the fp32 trainer: close, not equal.
    assert (fresh[mask] - batch.sample_logprobs[mask]).abs().mean() < 0.05


def test_create_builds_a_colocated_llm_with_prefix_caching_and_processed_logprobs(monkeypatch):
    built = {}

    def fake_llm(**kwargs):
        built.update(kwargs)
        return SimpleNamespace(kind="llm")

    monkeypatch.setitem(
        sys.modules, "vllm", SimpleNamespace(LLM=fake_llm, SamplingParams=FakeParams)
    )
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    backend = VLLMBackend.create("org/model", gpu_memory_utilization=0.25, max_model_len=4096)
    assert backend.llm.kind == "llm"
    assert built == {
        "model": "org/model",
        "gpu_memory_utilization": 0.25,
        "dtype": "bfloat16",
        "seed": 0,
        "enable_prefix_caching": True,
        "logprobs_mode": "processed_logprobs",
        "max_model_len": 4096,
    }
    import os

    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine in this process
    assert backend.params(Sampling(), 3, ["</a>"], 7).kwargs["max_tokens"] == 3
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend.create("org/model", gpu_memory_utilization=1.5)


class SleepyLLM(FakeLLM):
    """A fake engine in sleep mode: records sleep and wake-up calls among the others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def sleep(self, level: int) -> None:
        self.calls.append(f"sleep {level}")

    def wake_up(self, tags: list[str]) -> None:
        self.calls.append("wake " + ",".join(tags))

    def apply_model(self, func):
        self.calls.append("push")
        return super().apply_model(func)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append("generate")
        return super().generate(prompts, sampling_params, use_tqdm)


def test_sleep_mode_frees_vllm_between_collects_and_repushes_the_weights(policy):
    fake = SleepyLLM(
        policy.tokenizer, {"Glass Tide": [("<answer>Orr</answer>", "stop", "</answer>")]}
    )
    backend = VLLMBackend(fake, sampling_params=FakeParams, sleep=True)
    env = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3}
    engine = RolloutEngine(policy, env, backend=backend)
    s = Sampling(max_turn_tokens=16, seed=0)
    engine.collect([1], sampling=s)
    assert fake.calls == ["push", "generate", "sleep 2"]  # asleep during the update
    fake.calls.clear()
    engine.collect([1], sampling=s)  # same weights, but level 2 discarded vLLM's copy
    assert fake.calls == ["wake weights", "push", "wake kv_cache", "generate", "sleep 2"]
    # Without weight pushes, the weights must survive the sleep: level 1.
    kept = SleepyLLM(policy.tokenizer, fake.script)
    backend = VLLMBackend(kept, sampling_params=FakeParams, sleep=True, sync_weights=False)
    RolloutEngine(policy, env, backend=backend).collect([1], sampling=s)
    assert kept.calls == ["generate", "sleep 1"]


def test_create_asks_for_sleep_mode_when_sleeping(monkeypatch):
    built = {}
    monkeypatch.setitem(
        sys.modules,
        "vllm",
        SimpleNamespace(LLM=lambda **kw: built.update(kw) or "llm", SamplingParams=FakeParams),
    )
    assert VLLMBackend.create("org/model", sleep=True).sleep
    assert built["enable_sleep_mode"] is True
