"""ReSearch-Gym environments: LLM agents that answer multi-hop questions by searching.

    import gymnasium as gym
    import research_env  # registers ReSearch-MultiHop-v0

    env = gym.make("ReSearch-MultiHop-v0")
    prompt, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("<search>Orlen Vask</search>")

    envs = gym.make_vec("ReSearch-MultiHop-v0", num_envs=8)  # one retriever call per step

Importing this package never imports torch.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from research_env.data.types import Document, QASample
from research_env.env import FreeText, MultiHopSearchEnv
from research_env.protocol import Turn, is_valid_format, parse_turn
from research_env.retrievers.base import Retriever, SearchHit
from research_env.rewards import REWARDS, EpisodeRecord, exact_match, f1_score, normalize_answer
from research_env.shaping import SearchShaping
from research_env.templates import TEMPLATES, PromptTemplate
from research_env.termination import TRUNCATING, Termination
from research_env.vector import SearchVectorEnv

try:  # the installed distribution's version (pyproject.toml)
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("research-gym")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

ENV_ID = "ReSearch-MultiHop-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="research_env.env:MultiHopSearchEnv",
        vector_entry_point="research_env.vector:SearchVectorEnv",
    )

__all__ = [
    "ENV_ID",
    "REWARDS",
    "TEMPLATES",
    "TRUNCATING",
    "Document",
    "EpisodeRecord",
    "FreeText",
    "MultiHopSearchEnv",
    "PromptTemplate",
    "QASample",
    "Retriever",
    "SearchHit",
    "SearchShaping",
    "SearchVectorEnv",
    "Termination",
    "Turn",
    "__version__",
    "exact_match",
    "f1_score",
    "is_valid_format",
    "normalize_answer",
    "parse_turn",
]

# The structured variant (discrete candidate operations, feature vectors) for fast SB3
# ablations over the same episodes; the PettingZoo team env is research_env.multiagent.
STRUCTURED_ENV_ID = "ReSearch-MultiHop-Structured-v0"

if STRUCTURED_ENV_ID not in registry:
    register(id=STRUCTURED_ENV_ID, entry_point="research_env.structured:StructuredSearchEnv")

__all__ += ["STRUCTURED_ENV_ID"]
