"""RL algorithms that train Hugging Face causal LMs against any env speaking the protocol.

The built-in algorithms, one registration line each. An algorithm is one file that
declares its estimator, its objective terms and its own settings dataclass; a package
outside this one adds its algorithm with the same line (see :mod:`algorithms.registry`).
"""

from typing import Any

from algorithms.registry import register_algorithm
from research_env.retrievers.simulated import register_passage_writer

register_algorithm("grpo", "algorithms.grpo:GRPO")
register_algorithm("ppo", "algorithms.ppo:PPO")
register_algorithm("reinforce", "algorithms.reinforce:REINFORCE")
register_algorithm("sft", "algorithms.sft:SFT")


def _lm_passage_writer(**kwargs: Any) -> Any:
    """``retriever="simulated"``'s local-LM writer, imported (with torch) on first use."""
    from algorithms.simulated_search import LMPassageWriter

    return LMPassageWriter(**kwargs)


register_passage_writer("lm", _lm_passage_writer)
