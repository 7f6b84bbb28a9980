"""RL algorithms that train Hugging Face causal LMs against any env speaking the protocol.

The built-in algorithms, one registration line each. An algorithm is one file that
declares its estimator, its objective terms and its own settings dataclass; a package
outside this one adds its algorithm with the same line (see :mod:`algorithms.registry`).
"""

from algorithms.registry import register_algorithm

register_algorithm("grpo", "algorithms.grpo:GRPO")
register_algorithm("ppo", "algorithms.ppo:PPO")
register_algorithm("reinforce", "algorithms.reinforce:REINFORCE")
register_algorithm("sft", "algorithms.sft:SFT")
