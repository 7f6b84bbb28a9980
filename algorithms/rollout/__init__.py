"""Rollouts: a policy plays search episodes, decoded in batches on a KV cache kept across turns.

One idea per module:

- :mod:`~algorithms.rollout.engine`: :class:`RolloutEngine`, episodes in a vector env -> trajectories;
- :mod:`~algorithms.rollout.sampling`: :class:`Sampling`, the one sampling-and-budgets struct;
- :mod:`~algorithms.rollout.decoder`: :class:`DecodeState` (multi-turn decoding) and :func:`generate`;
- :mod:`~algorithms.rollout.kv_cache`: the preallocated cache rows the decoder writes;
- :mod:`~algorithms.rollout.sampler`: drawing tokens, and what their log-probs mean;
- :mod:`~algorithms.rollout.stop`: when a turn ends;
- :mod:`~algorithms.rollout.inference_copy`: :func:`rollout_copy`, frozen packed copies to decode with;
- :mod:`~algorithms.rollout.fused_llama`: the lean Llama-family forward those copies may use.
"""

from algorithms.rollout.decoder import DecodeState, GenerationResult, TurnOutput, generate
from algorithms.rollout.engine import RolloutEngine
from algorithms.rollout.inference_copy import PackedLinear, pack_linears, rollout_copy
from algorithms.rollout.sampler import sample
from algorithms.rollout.sampling import Sampling

__all__ = [
    "DecodeState",
    "GenerationResult",
    "PackedLinear",
    "RolloutEngine",
    "Sampling",
    "TurnOutput",
    "generate",
    "pack_linears",
    "rollout_copy",
    "sample",
]
