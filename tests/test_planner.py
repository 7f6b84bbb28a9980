"""The memory planner (``research-env plan``) by hand on tiny-random, and the ``train``
check that refuses a run too large for its GPU before any weight loads."""

from __future__ import annotations

import pytest
import torch

from algorithms.config import TrainConfig
from algorithms.planner import HEADROOM, GiB, parse_memory, plan
from research_app.cli import main

# tiny-random: vocab 49,152 x hidden 64 (tied head), 2 blocks of 36,992 weights (q 64x64,
# k and v 64x32, o 64x64, gate and up 64x128, down 128x64, two norms of 64), a final norm.
PARAMS = 49_152 * 64 + 2 * 36_992 + 64
assert PARAMS == 3_219_776
KV_DIM = 2 * 16  # 2 KV heads of 16 dimensions


def _config(**overrides) -> TrainConfig:
    base = {
        "model.name": "tiny-random", "rollout.questions_per_step": 4, "rollout.group_size": 5,
        "rollout.max_total_tokens": 1000, "trainer.micro_batch_size": 2,
        "trainer.logprob_chunk_size": 10, "grpo.kl_coef": 0.001,
    }  # fmt: skip
    return TrainConfig(algo="grpo").with_overrides({**base, **overrides})


def test_float32_full_fine_tuning_by_hand():
    items = plan(_config()).items
    assert items["weights"] == items["gradients"] == items["reference copy (KL)"] == PARAMS * 4
    assert items["optimizer (moments + fp32 masters)"] == PARAMS * 8
    # 20 rows of 1,000 columns, K and V of 2 blocks in float32
    assert items["rollout KV cache"] == 20 * 1000 * 2 * 2 * KV_DIM * 4
    assert items["decode logits (float32)"] == 20 * 49_152 * 4
    assert items["logits chunk (float32, x4)"] == 4 * 10 * 49_152 * 4
    # 2 x 1,000 tokens x 2 blocks x (7 h + 2 kv + 4 intermediate) values, in bf16: a GPU
    # autocasts float32 weights to bf16 by default; float32 when that is off
    assert items["update activations"] == 2000 * 2 * (7 * 64 + 2 * KV_DIM + 4 * 128) * 2
    off = plan(_config(**{"trainer.autocast_dtype": "float32"})).items
    assert off["update activations"] == 2000 * 2 * (7 * 64 + 2 * KV_DIM + 4 * 128) * 4


def test_bf16_weights_hold_float32_masters_and_moments():
    items = plan(_config(**{"model.dtype": "bfloat16"})).items
    assert items["weights"] == items["gradients"] == PARAMS * 2
    assert items["optimizer (moments + fp32 masters)"] == PARAMS * 12
    without = plan(_config(**{"model.dtype": "bfloat16", "optim.master_weights": False})).items
    assert without["optimizer (moments + fp32 masters)"] == PARAMS * 4  # bf16 moments
    assert items["rollout KV cache"] == 20 * 1000 * 2 * 2 * KV_DIM * 2


def test_lora_train_layers_checkpointing_and_fsdp_change_what_they_should():
    lora = plan(_config(**{"model.lora": {"r": 4}})).items
    adapters = 2 * 4 * (2 * (64 + 64) + 2 * (64 + 32))  # q, o: 64->64; k, v: 64->32
    assert lora["gradients"] == adapters * 4 and lora["reference copy (KL)"] == 0
    top = plan(_config(**{"trainer.train_layers": 1})).items
    assert top["gradients"] == (36_992 + 64) * 4  # the top block and the final norm
    per_layer = (7 * 64 + 2 * KV_DIM + 4 * 128) * 2  # bf16 autocast
    assert top["update activations"] == 2000 * per_layer
    checkpointed = plan(_config(**{"model.gradient_checkpointing": True})).items
    assert checkpointed["update activations"] == 2000 * (2 * 64 * 2 + per_layer)
    sharded = plan(_config(**{"trainer.sharding": "fsdp"}), gpus=4).items
    assert (
        sharded["weights"] == PARAMS and sharded["weights gathered to decode (fsdp)"] == PARAMS * 4
    )
    assert sharded["optimizer (moments + fp32 masters)"] == PARAMS * 2
    assert sharded["rollout KV cache"] == 5 * 1000 * 2 * 2 * KV_DIM * 4  # 20 rows over 4 GPUs


def test_the_peak_is_the_larger_phase():
    result = plan(_config())
    resident = PARAMS * 4 * 4  # weights, reference, two moments
    items = result.items
    assert (
        result.rollout_phase
        == resident + items["rollout KV cache"] + items["decode logits (float32)"]
    )
    assert result.update_phase == resident + max(
        items["update activations"] + items["logits chunk (float32, x4)"], items["gradients"]
    )
    assert result.peak == max(result.rollout_phase, result.update_phase)
    assert result.fits(result.peak + HEADROOM) and not result.fits(result.peak + HEADROOM - 1)


def test_memory_sizes_parse_and_bad_ones_are_named():
    assert parse_memory("80GB") == parse_memory("80 GiB") == parse_memory("80") == 80 * GiB
    assert parse_memory("512MiB") == 512 * 2**20
    with pytest.raises(ValueError, match=r"80GB.*'lots'"):
        parse_memory("lots")


def test_plan_command_prints_the_table_and_fails_when_it_does_not_fit(capsys):
    assert main(["plan", "--config", "configs/research-grpo.yaml", "--model", "qwen2.5-7b",
                 "--gpu-memory", "80GB"]) == 1  # fmt: skip
    out = capsys.readouterr().out
    assert "optimizer (moments + fp32 masters)" in out and "DOES NOT FIT in 80 GiB" in out
    assert main(["plan", "--model", "tiny-random", "--gpu-memory", "80GB"]) == 0
    assert "fits in 80 GiB" in capsys.readouterr().out


def test_train_on_cuda_refuses_a_run_that_cannot_fit_before_loading(tmp_path, monkeypatch, capsys):
    import algorithms.policy as policy_module

    class Props:
        total_memory = 8 * GiB

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(policy_module, "resolve_device", lambda device="auto": torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(policy_module, "load_policy", no_load)
    argv = ["train", "--config", "configs/research-grpo.yaml", "--out", str(tmp_path / "run"),
            "--no-wandb", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not fit the GPU" in err and "rollout KV cache" in err and "28.12" in err


def test_the_scaling_docs_table_is_the_planners():
    from pathlib import Path

    from benchmarks.fits_table import table

    docs = (Path(__file__).resolve().parent.parent / "docs" / "scaling.md").read_text()
    assert table() in docs, "regenerate it: python -m benchmarks.fits_table"


def test_a_run_close_to_the_limit_is_warned_about_with_the_numbers(caplog):
    from algorithms.planner import check_fits

    result = plan(_config())
    needed = result.peak + HEADROOM
    check_fits(_config(), needed * 2)  # far from the limit: quiet
    assert not caplog.records
    check_fits(_config(), needed * 1.05)
    assert "this run needs" in caplog.text and "rollout KV cache" in caplog.text
    with pytest.raises(ValueError, match="does not fit the GPU"):
        check_fits(_config(), needed - 1)


# -- vLLM beside training (rollout.backend: vllm) -----------------------------------------

# _config()'s training peak by hand, float32: the update phase = weights, reference and two
# moments (16 bytes per weight) + activations (2,000 tokens x 2 blocks x 1,024 values in
# bf16) + the logits chunk (4 x 10 positions x 49,152 in float32).
TRAINING = 16 * PARAMS + 2000 * 2 * 1024 * 2 + 4 * 4 * 10 * 49_152
assert TRAINING == 67_572_736
VLLM_WEIGHTS = PARAMS * 2  # bfloat16
KV_PER_TOKEN = 2 * 2 * KV_DIM * 2  # K and V, 2 blocks, bfloat16


def _vllm_config(**overrides) -> TrainConfig:
    return _config(**{"rollout.backend": "vllm", "rollout.vllm_max_model_len": 4096, **overrides})


def test_with_vllm_the_built_in_decoder_is_not_planned():
    result = plan(_vllm_config())
    for item in ["rollout KV cache", "decode logits (float32)", "decoding copy (rollout_dtype)"]:
        assert result.items[item] == 0, item
    assert result.peak == result.update_phase == TRAINING
    assert (result.params, result.kv_per_token, result.max_positions) == (
        PARAMS,
        KV_PER_TOKEN,
        4096,
    )


def test_the_auto_vllm_share_is_what_training_leaves_less_the_margin():
    from algorithms.planner import vllm_memory_utilization, vllm_share

    share = vllm_share(_vllm_config(), plan(_vllm_config()), 4 * GiB)
    assert share.setting == "auto"  # the default
    margin = GiB + 0.1 * TRAINING  # HEADROOM + 10% of the training peak
    assert share.margin == margin
    # (4 GiB - 67,572,736 - 1,080,499,097.6) / 4 GiB = 0.73269..., rounded down
    assert share.share == 0.732
    assert share.minimum == VLLM_WEIGHTS + 4096 * KV_PER_TOKEN + GiB
    assert share.kv_cache == 0.732 * 4 * GiB - VLLM_WEIGHTS - GiB
    assert share.problem() is None
    assert vllm_memory_utilization(_vllm_config(), 4 * GiB) == 0.732
    # vllm_max_model_len unset: the model's own context (tiny-random: 4,096 positions)
    unset = vllm_share(_config(**{"rollout.backend": "vllm"}), plan(_vllm_config()), 4 * GiB)
    assert unset.max_model_len == 4096


def test_a_vllm_share_too_small_is_refused_with_the_numbers_and_the_fixes():
    from algorithms.planner import check_fits, vllm_memory_utilization

    # (2 GiB - 67,572,736 - 1,080,499,097.6) / 2 GiB = 0.4654 -> 0.465 x 2 GiB = 0.93 GiB,
    # short of 6,439,552 + 4,096 x 256 + 1 GiB = 1.01 GiB
    with pytest.raises(ValueError) as refused:
        vllm_memory_utilization(_vllm_config(), 2 * GiB)
    message = str(refused.value)
    assert "0.93 GiB" in message and "1.01 GiB" in message and "4,096 tokens" in message
    for fix in [
        "smaller model",
        "model.lora",
        "trainer.train_layers",
        "rollout.vllm_max_model_len",
    ]:
        assert fix in message
    with pytest.raises(ValueError, match="less than it needs"):
        check_fits(_vllm_config(), 2 * GiB)  # what train runs on CUDA before loading
    check_fits(_vllm_config(), 4 * GiB)
    # A share set by hand that overlaps the training peak: (2 GiB - 67,572,736 - 1 GiB) /
    # 2 GiB = 0.4685 is the most it may be.
    with pytest.raises(ValueError, match=r"0\.9 .* at most 0\.468"):
        vllm_memory_utilization(
            _vllm_config(**{"rollout.vllm_gpu_memory_utilization": 0.9}), 2 * GiB
        )
    assert (
        vllm_memory_utilization(
            _vllm_config(**{"rollout.vllm_gpu_memory_utilization": 0.5}), 4 * GiB
        )
        == 0.5
    )


def test_plan_prints_vllms_share_when_vllm_decodes(capsys):
    argv = ["plan", "--model", "tiny-random", "--set", "rollout.backend=vllm",
            "--set", "rollout.vllm_max_model_len=4096"]  # fmt: skip
    assert main([*argv, "--gpu-memory", "4GiB"]) == 0
    out = capsys.readouterr().out
    assert "vLLM's share (rollout.vllm_gpu_memory_utilization: auto)" in out
    assert main([*argv, "--gpu-memory", "1.5GiB"]) == 1
    assert "vLLM DOES NOT FIT" in capsys.readouterr().out
    assert main(argv) == 0
    assert "give --gpu-memory" in capsys.readouterr().out
    assert main(["plan", "--model", "tiny-random", "--gpu-memory", "4GiB"]) == 0
    assert "vLLM" not in capsys.readouterr().out  # the built-in decoder: no share
