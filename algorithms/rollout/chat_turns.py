"""The env's chat-message replies as the text a chat template puts between two turns.

With the ``tool-call`` template the env replies to a turn with a message (a ``tool``
message holding the documents, or a ``user`` correction). In a chat transcript that reply
is more than the message: the assistant's turn ends (``<|im_end|>`` in ChatML), the
message is a turn of its own, and the next assistant turn opens (the generation prompt).
:class:`ChatReplies` asks the tokenizer's chat template for exactly that text, so it is
right for any tool-capable template, Qwen2.5's, Qwen3's or a custom one:

1. render a short probe conversation (system, user, an assistant turn whose text ends
   with a marker, the reply message) with ``add_generation_prompt=True``;
2. the reply text is everything after the assistant turn's marker.

For a tool call the marker is the end of the call (``</tool_call>``, where a generator
stops), for any other turn the end of its content. The rollout engine tokenizes this
text and appends the tokens after the sampled ones: the conversation is never rendered
again from text, so the tokens the policy sampled are the tokens it is trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from research_env.tool_calls import SEARCH_TOOL_NAME, TOOL_CALL_CLOSE

# Stand-ins that no template writes by itself: where the probe's texts are found again.
_QUERY = "probe-query-0c3e"
_CONTENT = "probe-content-0c3e"
_REPLY = "probe-reply-0c3e"
_PROBE_HEAD = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


class ChatReplies:
    """Renders the env's reply messages as a chat template places them after a turn.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        tools: the tool schemas the prompt was rendered with.

    Raises ``ValueError`` at construction when the chat template cannot play tool calls
    (it ignores ``tools``, or drops a tool message's content), so a misfit is found before
    any decoding.
    """

    def __init__(self, tokenizer: Any, tools: Sequence[Mapping[str, Any]]) -> None:
        self.tokenizer = tokenizer
        self.tools = [dict(tool) for tool in tools]
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer {name!r} has no chat template to render tool calls")
        with_tools = self._render(_PROBE_HEAD, tools=self.tools)
        if with_tools == self._render(_PROBE_HEAD, tools=None):
            raise ValueError(
                f"the chat template of {name!r} ignores `tools`, so the model would never "
                "see the search tool; set a tool-capable chat template (Qwen2.5/Qwen3 style, "
                "e.g. tokenizer.chat_template = <jinja text>) or play the tool-call template "
                "as plain text (prompt_format='text')"
            )
        for role in ("tool", "user"):
            reply = self.reply({"role": role, "name": SEARCH_TOOL_NAME, "content": _REPLY})
            if _REPLY not in reply:
                raise ValueError(
                    f"the chat template of {name!r} drops the content of a {role!r} message "
                    f"after an assistant turn (it rendered {reply!r}); it cannot return "
                    "search results to the model"
                )

    def reply(self, message: Mapping[str, Any]) -> str:
        """The text between the end of the assistant's turn (its ``</tool_call>`` for a
        ``tool`` reply, its last character otherwise) and the next assistant turn."""
        if message.get("role") == "tool":
            call = {"name": SEARCH_TOOL_NAME, "arguments": {"query": _QUERY}}
            assistant = {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": call}],
            }
            marker, end = _QUERY, TOOL_CALL_CLOSE
        else:
            assistant = {"role": "assistant", "content": _CONTENT}
            marker, end = _CONTENT, ""
        text = self._render([*_PROBE_HEAD, assistant, dict(message)], tools=self.tools)
        at = text.find(marker)
        cut = text.find(end, at) if at != -1 else -1
        if cut == -1:
            raise ValueError(
                f"the chat template does not render an assistant turn as expected "
                f"(no {marker!r} then {end or 'its end'!r} in {text!r})"
            )
        return text[cut + len(end) if end else at + len(marker) :]

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True
        )
        return str(text)
