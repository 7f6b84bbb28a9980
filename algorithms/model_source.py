"""Where a ``--model`` argument points, before transformers is asked to load it.

- A run folder (``research-env train --out runs/x``) is not a model directory, but the
  project knows its layout: ``runs/x`` means ``runs/x/final`` (the exported model), else
  the newest ``runs/x/checkpoints/step-N/policy``; a checkpoint (``algo.save(DIR)``) means
  ``DIR/policy``. When none is there, the error lists every place looked at.
- A hub id (``org/name``) must be in the local Hugging Face cache or, unless
  ``HF_HUB_OFFLINE`` is set, found on the hub by one quick request; otherwise it fails at
  once with one line, instead of transformers' retries (about 50 s) and traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# A directory transformers (or peft) loads: a model's config, or a LoRA adapter's.
_MODEL_FILES = ("config.json", "adapter_config.json")
_STEP = re.compile(r"^step-(\d+)$")


def is_model_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in _MODEL_FILES)


def model_directory(path: str | os.PathLike[str]) -> Path:
    """The model directory that ``path`` (a model, a run or a checkpoint folder) stands for.

    Raises:
        FileNotFoundError: naming every place looked at, when none holds a model.
    """
    root = Path(path).expanduser()
    steps = sorted(
        (int(m[1]), d)
        for d in (root / "checkpoints").glob("step-*")
        if (m := _STEP.match(d.name)) and d.is_dir()
    )
    candidates = [
        root,
        root / "final",
        *(d / "policy" for _, d in reversed(steps)),
        root / "policy",
    ]
    for candidate in candidates:
        if is_model_dir(candidate):
            return candidate
    looked = [root, root / "final", root / "checkpoints" / "step-N" / "policy", root / "policy"]
    raise FileNotFoundError(
        f"{root} holds no model: looked for config.json (or adapter_config.json) in "
        + ", ".join(f"{p}/" for p in looked)
        + ". Pass a Hugging Face model directory, a run folder written by `research-env "
        "train --out` (its final/ or checkpoints/), or a checkpoint written by algo.save()."
    )


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_cached_hub_model(repo_id: str) -> None:
    """Fail now, in one line, unless ``repo_id`` can load: it is in the local cache, or
    (the hub not being offline) one quick request finds it on the hub. transformers would
    otherwise retry an unreachable hub for most of a minute before a long traceback."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    where = f"model {repo_id!r} is neither a local directory nor in the local Hugging Face cache"
    if hub_offline():
        raise FileNotFoundError(
            f"{where}, and HF_HUB_OFFLINE is set, so it cannot be downloaded. Check the "
            "spelling; pass a model directory or run folder; or download it once with network "
            "access (HF_HUB_OFFLINE=0)."
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=10)
    except GatedRepoError:
        return  # it exists; transformers says how to get access
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{where}, and the hub has no such model (or it is private: `hf auth login`). "
            "Check the spelling, or pass a model directory or run folder."
        ) from None
    except Exception as err:  # the network: DNS, connection, timeout, proxy
        raise FileNotFoundError(
            f"{where}, and the hub cannot be reached ({type(err).__name__}: {err}). Pass a "
            "model directory or run folder, or an offline name such as smollm2-135m."
        ) from None
