"""What a GPU run gets by default, checked on this CPU: the no-grad passes (pi_old, the
KL reference) run the LM head in chunks of positions, never over a whole micro-batch."""

from __future__ import annotations

import pytest
import torch
from test_algorithms import grouped_episodes, policy

from algorithms.buffer import collate
from algorithms.scoring import reference_logprobs, score_batch

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]


def _head_widths(model) -> list[int]:
    """Records how many positions each LM-head call projects."""
    widths: list[int] = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[:-1].numel()))
    return widths


@pytest.mark.parametrize("with_entropy", [False, True])
def test_no_grad_scores_run_the_head_in_chunks_equal_to_one_pass(with_entropy):
    p = policy()
    batch = collate(grouped_episodes(), p.tokenizer.pad_token_id)
    widths = _head_widths(p.model)
    common = dict(temperature=0.7, with_entropy=with_entropy, micro_batch_size=4)
    plain = score_batch(p.model, batch, chunk_size=None, **common)
    assert max(widths) > 3
    widths.clear()
    chunked = score_batch(p.model, batch, chunk_size=3, **common)
    assert widths and max(widths) <= 3  # several chunks, never the (rows x positions) logits
    torch.testing.assert_close(chunked.logprobs, plain.logprobs, rtol=1e-5, atol=1e-5)
    if with_entropy:
        assert chunked.entropy is not None and plain.entropy is not None
        torch.testing.assert_close(chunked.entropy, plain.entropy, rtol=1e-5, atol=1e-5)


def test_the_reference_pass_runs_the_head_in_chunks():
    p, reference = policy(), policy()
    batch = collate(grouped_episodes(), p.tokenizer.pad_token_id)
    widths = _head_widths(reference.model)
    plain = reference_logprobs(p.model, batch, reference_model=reference.model, chunk_size=None)
    widths.clear()
    chunked = reference_logprobs(p.model, batch, reference_model=reference.model, chunk_size=5)
    assert widths and max(widths) <= 5
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)


@pytest.fixture
def matmul_precision():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    yield matmul
    matmul.fp32_precision = before


@pytest.mark.parametrize("capability,on", [((9, 0), True), ((8, 0), True), ((7, 5), False)])
def test_tf32_is_enabled_on_gpus_that_have_it(capability, on, matmul_precision, monkeypatch):
    from algorithms.precision import enable_tf32

    matmul_precision.fp32_precision = "none"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    assert enable_tf32() is on
    assert matmul_precision.fp32_precision == ("tf32" if on else "none")


def test_a_cpu_policy_leaves_float32_matmuls_alone(matmul_precision):
    matmul_precision.fp32_precision = "none"
    policy()
    assert matmul_precision.fp32_precision == "none"
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize(
    "setting,device,weights,expected",
    [
        (None, "cuda", torch.float32, "bfloat16"),  # the default on a GPU with bf16
        (None, "cuda", torch.bfloat16, None),  # bf16 weights compute in bf16 already
        ("float32", "cuda", torch.float32, None),  # off, explicitly
        (None, "cpu", torch.float32, None),  # CPU behaviour unchanged
        ("bfloat16", "cpu", torch.float32, "bfloat16"),
    ],
)
def test_bf16_autocast_is_the_default_on_cuda_only(setting, device, weights, expected, monkeypatch):
    from algorithms.precision import autocast_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_precision(setting, device, weights) == expected


def test_the_default_update_on_a_cpu_runs_without_autocast():
    from algorithms import scoring

    assert not isinstance(scoring.autocast(policy().model, None), torch.autocast)


def test_host_reads_are_counted_by_kind():
    from benchmarks.host_syncs import count_host_reads

    t = torch.arange(4)
    with count_host_reads() as counts:
        t.tolist()
        bool(t[0])
        t[t > 1]  # boolean mask: a data-dependent size
        t[1:]  # a view: no read
        torch.tensor([1, 2], device="cpu")
        torch.tensor([1, 2])  # stays on the host
    assert counts == {"tolist": 1, "__bool__": 1, "bool-mask index": 1,
                      "torch.tensor(host data, device=...)": 1}  # fmt: skip
    assert torch.Tensor.tolist is not None and t.tolist() == [0, 1, 2, 3]  # restored


def test_the_decoder_reads_the_device_once_per_step():
    """Per decoding step: one read of the sampled tokens and log-probs, and no other host
    wait: the sampled tokens stay on the device to be fed back."""
    from algorithms.rollout.decoder import generate
    from benchmarks.host_syncs import count_host_reads
    from research_env.protocol import STOP_STRINGS

    p = policy()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 5000, (6, 12), generator=g).tolist()
    with count_host_reads() as counts:
        result = generate(p.model, prompts, max_new_tokens=20, eos_token_ids=(),
                          stop_strings=STOP_STRINGS, tokenizer=p.tokenizer,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
    steps = max(map(len, result.token_ids))
    assert steps == 20
    assert counts["tolist"] == steps
    # The prefill's few copies and one per change of the active rows; not one per step
    # (measured: 8 for these 20 steps, 26 before the sampled tokens stayed on the device)
    assert counts["torch.tensor(host data, device=...)"] <= 6 + len(prompts)
    assert set(counts) <= {"tolist", "torch.tensor(host data, device=...)"}, counts
