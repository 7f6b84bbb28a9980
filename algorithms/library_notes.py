"""Notes from the libraries about their own APIs, silenced where every policy model is
loaded (by their exact text), so a user's run shows only what concerns it."""

from __future__ import annotations

import logging
import warnings

# Recent transformers releases rename the forward's ``past_key_values`` to ``cache`` and warn
# (a FutureWarning) on every call that uses the old name, which our decoder and scorer pass on
# purpose (``transformers>=5.0`` is supported, and the fused forward takes the same name).
# It is a note about the library's API, not about a user's run, so it is silenced here,
# where every policy model is loaded, by its exact text. Moving to ``cache`` is a change for
# algorithms/rollout and algorithms/scoring once the oldest supported release accepts it.
_LIBRARY_NOTES = (
    r"`past_key_values` is deprecated and will be removed in version",
    # peft asks a LoRA-wrapped model for ``is_gradient_checkpointing``, which transformers
    # renamed; the same kind of note about a library's API, on every LoRA run.
    r"`is_gradient_checkpointing` is deprecated and will be removed",
)


def silence_library_notes() -> None:
    """Ignore the library API notes above, by their exact text. Called at import and again
    by :func:`load_policy`, so the filters hold even where the warning filters were reset
    since the import (``warnings.catch_warnings`` restores the list on exit, as test
    runners do around each test). Adding an existing filter again only moves it first."""
    for message in _LIBRARY_NOTES:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


silence_library_notes()
# The same deprecation also arrives once per process through transformers' logger.
_PAST_KEY_VALUES_NOTE = "`past_key_values`/`cache_params` are deprecated"


class _DropPastKeyValuesNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PAST_KEY_VALUES_NOTE)


logging.getLogger("transformers.utils.generic").addFilter(_DropPastKeyValuesNote())
