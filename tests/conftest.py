"""Shared fixtures and settings: tests never touch the network or a hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# One intra-op thread: tests are many small ops, where a second OpenMP thread mostly
# spins, and it collapses when the CPU is shared (measured: 141 s vs 31 s for the
# decoding tests on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from world import SAMPLES, KeywordRetriever

# `make test-avx2` sets this with its instruction-set limits; the run stops at once if
# torch did not take them (a misspelt value is ignored by ATen with only a warning).
EXPECT_CPU = "RESEARCH_GYM_EXPECT_CPU_CAPABILITY"


def _kernels() -> str:
    import torch

    from algorithms.precision import cpu_has_native_bf16

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "all")
    auto = "bfloat16" if cpu_has_native_bf16() else "float32"
    return (
        f"ATen kernels {torch.backends.cpu.get_cpu_capability()}, oneDNN ISA limit {isa}, "
        f'precision "auto" on CPU -> {auto}'
    )


def pytest_report_header(config):
    return f"CPU: {_kernels()}"


def pytest_terminal_summary(terminalreporter):
    # Also under -q, which hides the header: a log says which kernels its verdicts came from.
    terminalreporter.write_line(f"CPU: {_kernels()}")


def pytest_configure(config):
    expected = os.environ.get(EXPECT_CPU)
    if expected:
        import torch

        actual = torch.backends.cpu.get_cpu_capability()
        if actual != expected:
            raise pytest.UsageError(
                f"{EXPECT_CPU}={expected} but torch runs {actual} kernels: the instruction-set "
                "limit (ATEN_CPU_CAPABILITY) did not take effect"
            )


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core box a second thread mostly waits at barriers
    (see TrainerConfig.num_threads); results do not depend on it. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def retriever():
    return KeywordRetriever()


@pytest.fixture
def small_env(retriever):
    from research_env import MultiHopSearchEnv

    return MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, top_k=2, max_turns=4)


@pytest.fixture(scope="module")
def tiny():
    """The tiny random Llama policy (eval mode), shared by a test module's decoding tests."""
    from algorithms.policy import load_policy

    policy = load_policy("tiny-random", device="cpu")
    policy.model.eval()
    return policy


@pytest.fixture(scope="module")
def prompts(tiny):
    """Four ragged prompts for the tiny policy."""
    texts = ["Hello there, how are", "The capital of France is the city of", "1 2 3", "Why?"]
    return [tiny.tokenizer.encode(t) for t in texts]
