"""Host reads per decoding step of the built-in decoder: the calls that make a GPU wait.

On a GPU every read of a device tensor's value on the host (``.tolist()``, ``.item()``,
``bool(t)``, ``int(t)``, ``nonzero``, boolean-mask indexing) waits for the device's queue
to drain, and so does a copy of host data from pageable memory (``torch.tensor(list,
device=...)``), queued behind the kernels before it. This counts those calls while ``algorithms.rollout.generate`` decodes a batch
with the rollout's stop strings (on this CPU the calls cost nothing, but they are the same
calls a GPU would wait on), per decoding step.

    python -m benchmarks.host_syncs                  # tiny-random, 8 rows, 32 tokens
    python -m benchmarks.host_syncs --model smollm2-135m
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

READS = ("tolist", "item", "__bool__", "__int__", "__float__", "nonzero")


@contextlib.contextmanager
def count_host_reads() -> Iterator[Counter[str]]:
    """Counts, by name, the tensor methods that read a value back to the host (and indexing
    with a boolean mask, whose result size is data-dependent) while the block runs."""
    counts: Counter[str] = Counter()
    inside: list[str] = []  # the counted calls in progress
    originals = {name: getattr(torch.Tensor, name) for name in (*READS, "__getitem__")}

    def counting(name: str):  # type: ignore[no-untyped-def]
        original = originals[name]

        def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            # A torch function mode (torch.set_default_device installs one) calls the method
            # again from inside: count the outermost call only.
            if not inside:
                if name != "__getitem__":
                    counts[name] += 1
                elif args and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.bool:
                    counts["bool-mask index"] += 1
            inside.append(name)
            try:
                return original(self, *args, **kwargs)
            finally:
                inside.pop()

        return wrapper

    make_tensor = torch.tensor

    def counting_tensor(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("device") is not None:  # host data copied to the (policy's) device
            counts["torch.tensor(host data, device=...)"] += 1
        return make_tensor(data, *args, **kwargs)

    for name in originals:
        setattr(torch.Tensor, name, counting(name))
    torch.tensor = counting_tensor  # type: ignore[assignment]
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.tensor = make_tensor


def measure(model_name: str, rows: int, new_tokens: int) -> dict[str, object]:
    from algorithms.policy import load_policy
    from algorithms.rollout.decoder import generate
    from research_env.protocol import STOP_STRINGS

    policy = load_policy(model_name, device="cpu")
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 5000, (rows, 24), generator=g).tolist()
    with count_host_reads() as counts:
        result = generate(policy.model, prompts, max_new_tokens=new_tokens, eos_token_ids=(),
                          stop_strings=STOP_STRINGS, tokenizer=policy.tokenizer,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
    steps = max(map(len, result.token_ids))
    total = sum(counts.values())
    return {"model": model_name, "rows": rows, "decoding_steps": steps,
            "host_reads": dict(counts), "host_reads_per_step": round(total / steps, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(args.model, args.rows, args.new_tokens)))


if __name__ == "__main__":
    main()
