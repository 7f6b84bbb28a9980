"""The tools of any MCP server as the env's actions (the official ``mcp`` SDK; ``pip
install 'research-gym[mcp]'``).

:class:`McpToolbox` connects to one MCP server, a command it starts (stdio) or a
streamable-HTTP URL, and discovers its tools (``tools/list``). Its :meth:`~McpToolbox.template`
is the tool-call template with those tools: their JSON schemas go to the chat template
(reset ``info["tools"]``), the instructions list them in words, and a turn may call any
of them in the Qwen/Hermes convention::

    <tool_call>
    {"name": "search", "arguments": {"query": "Drellow Works"}}
    </tool_call>

The toolbox is also the env's retriever: a call travels through the episode as a search
whose query is the call's canonical JSON, so the episode's machinery is unchanged (a
vector env's step sends all its calls at once, concurrently; a failed call leaves the
episode as it was). The tool's text comes back as the observation, inside
``<tool_response>``, and as a ``tool`` chat message in ``info["message"]``::

    with McpToolbox([sys.executable, "-m", "research_app", "mcp", "--corpus", "synthetic"]) as tools:
        env = gym.make("ReSearch-MultiHop-v0", template=tools.template(), retriever=tools)

What can go wrong, and what the episode sees:

- a call to a tool the server does not list, or a body that is not a call: an invalid
  turn (``unknown_tool``, ``tool_call_json``), corrected with the list of tools; the
  server is not asked;
- arguments the tool refuses, or a tool that fails: the server's error text as the
  observation (``Error: ...``), as MCP intends, so the policy can correct itself;
- a tool slower than ``call_timeout`` seconds: ``Error: the tool ... did not answer
  within N s`` as the observation; the connection stays usable;
- a server that dies or cannot be reached: :class:`McpServerError` (a
  :class:`~research_env.retrievers.http.RetrievalError`) from ``step``, naming the
  server; the episode is unchanged (retry the step on a new toolbox, or end it with
  ``end_early``, which scores what it has).

The SDK is asynchronous; the toolbox runs it on an event loop of its own, in a daemon
thread, so the env stays synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from research_env.actions import Observation
from research_env.data.types import Document
from research_env.protocol import Turn
from research_env.retrievers.base import SearchHit
from research_env.retrievers.http import RetrievalError
from research_env.templates import PromptTemplate
from research_env.tool_calls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TOOL_CALL_VIOLATIONS,
    ToolCallActions,
    parse_tool_call_turn,
    read_call,
)

__all__ = ["McpServerError", "McpToolActions", "McpToolbox", "ToolResult", "require_mcp"]

MCP_INSTALL = "pip install 'research-gym[mcp]' (the official MCP Python SDK, PyPI 'mcp')"


def require_mcp() -> None:
    """Raise an ImportError that says how to install the SDK, when it is missing."""
    try:
        import mcp  # noqa: F401
    except ImportError as err:
        raise ImportError(f"MCP support needs the mcp package: {MCP_INSTALL}") from err


class McpServerError(RetrievalError):
    """The MCP server could not be started, reached, or kept: ``url`` names it."""


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer as text (its text content blocks joined), and whether it is an error."""

    text: str
    is_error: bool = False


def _function_spec(tool: Any) -> dict[str, Any]:
    """An MCP ``Tool`` as the JSON-schema function spec chat templates take."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": tool.input_schema or {"type": "object", "properties": {}},
        },
    }


class McpToolActions(ToolCallActions):
    """The tool-call format over an MCP server's tools (see the module docstring)."""

    def __init__(self, specs: Sequence[dict[str, Any]]) -> None:
        self.tools = tuple(specs)
        self.names = tuple(spec["function"]["name"] for spec in specs)
        digest = hashlib.sha256(json.dumps(self.tools, sort_keys=True).encode()).hexdigest()
        self.name = f"mcp-tools-{digest[:12]}"  # the fingerprint changes with the tools
        self.violations = {
            **TOOL_CALL_VIOLATIONS,
            "unknown_tool": f"a tool call names a tool the server does not offer ({', '.join(self.names)})",
            "multiple_tool_calls": "more than one tool call in one turn (call one tool per turn)",
        }  # fmt: skip

    def parse(self, text: str) -> Turn:
        return parse_tool_call_turn(text, self._call)

    def _call(self, body: str) -> Turn:
        call = read_call(body)
        if call is None:
            return Turn(kind="invalid", reason="tool_call_json")
        name, arguments = call
        if name not in self.names:
            return Turn(kind="invalid", reason="unknown_tool")
        query = json.dumps({"name": name, "arguments": arguments}, sort_keys=True)
        return Turn(kind="search", query=query)

    def search_result(
        self, template: PromptTemplate, hits: Sequence[SearchHit], max_words: int | None = None
    ) -> Observation:
        name, content = "tool", "No result."
        if hits:
            name, content = hits[0].document.id.removeprefix("mcp:"), hits[0].document.contents
        message = {"role": "tool", "name": name, "content": content}
        tag = template.result_tag
        return Observation(f"\n<{tag}>\n{content}\n</{tag}>\n", message)

    def correction(self, turn: Turn) -> Observation:
        detail = self.violations.get(turn.reason or "no_action", "no action")
        content = (
            f"That turn was not a valid action: {detail}. Call one of the tools "
            f'({", ".join(self.names)}) as <tool_call>\n{{"name": ..., "arguments": {{...}}}}'
            "\n</tool_call>, or give the final answer in plain text with \\boxed{}."
        )
        return Observation(f"\n{content}\n", {"role": "user", "content": content})

    def write_search(self, query: str) -> str:
        """A turn making the call whose canonical JSON is ``query``."""
        return f"{TOOL_CALL_OPEN}\n{query}\n{TOOL_CALL_CLOSE}"


def _instructions(specs: Sequence[dict[str, Any]]) -> str:
    lines = []
    for spec in specs:
        function = spec["function"]
        arguments = ", ".join(function["parameters"].get("properties", {}))
        lines.append(f"- {function['name']}({arguments}): {function['description']}".rstrip())
    listing = "\n".join(lines).replace("{", "{{").replace("}", "}}")
    return (
        "Answer the question by reasoning step by step and calling tools. The tools are:\n"
        f"{listing}\n"
        "Call one tool per turn, written as\n"
        '<tool_call>\n{{"name": "tool name", "arguments": {{...}}}}\n</tool_call>\n'
        "Its answer comes back in <{tag}> and </{tag}>. When you know the answer, reply in "
        "plain text, without a tool call, with the final short answer in \\boxed{{}}, for "
        "example: The answer is \\boxed{{Paris}}."
    )


class McpToolbox:
    """One MCP server's tools, callable from synchronous code; a ``Retriever`` whose
    queries are tool calls (see the module docstring).

    Arguments:
        server: a streamable-HTTP URL (``http://127.0.0.1:8765/mcp``) or a command to
            start (a list: program and arguments), spoken to over stdio.
        call_timeout: seconds a tool call may take before its observation says it timed
            out.
        connect_timeout: seconds to start the server, connect and list its tools.
        env: the environment of a started server (default: the SDK's safe minimum, not
            this process's environment, which may hold keys).
        cwd: its working directory.
    """

    def __init__(
        self,
        server: str | Sequence[str],
        *,
        call_timeout: float = 30.0,
        connect_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        require_mcp()
        if call_timeout <= 0 or connect_timeout <= 0:
            raise ValueError(
                f"call_timeout and connect_timeout must be > 0 seconds, got {call_timeout} "
                f"and {connect_timeout}"
            )
        if isinstance(server, str) and not server.startswith(("http://", "https://")):
            raise ValueError(
                f"server must be an http(s):// URL or a command as a list of strings, got "
                f"{server!r} (for a command, pass e.g. ['python', 'server.py'])"
            )
        if not isinstance(server, str) and (
            not server or not all(isinstance(a, str) for a in server)
        ):
            raise ValueError(f"a server command must be a non-empty list of strings, got {server!r}")  # fmt: skip
        self.server = server if isinstance(server, str) else list(server)
        self.url = server if isinstance(server, str) else " ".join(server)
        self.call_timeout = float(call_timeout)
        self._env, self._cwd = env, cwd
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: Any = None
        self._closed: asyncio.Event | None = None
        self._holder: Any = None
        try:
            self.specs = self._run(self._connect(), connect_timeout)
        except BaseException:
            self.close()
            raise
        self.actions = McpToolActions(self.specs)

    # -- the event loop ---------------------------------------------------------------

    def _run(self, coroutine: Any, timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise McpServerError(self.url, f"no answer within {timeout} s") from None

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        if isinstance(self.server, str):
            return self.server
        command, *args = self.server
        env = dict(self._env) if self._env is not None else None
        cwd = os.fspath(self._cwd) if self._cwd is not None else None
        return StdioServerParameters(command=command, args=args, env=env, cwd=cwd)

    async def _connect(self) -> list[dict[str, Any]]:
        from mcp import Client

        ready: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()

        async def hold() -> None:
            # The client's context is entered and left in this one task, as anyio wants.
            try:
                async with Client(self._target(), read_timeout_seconds=self.call_timeout) as client:
                    self._client = client
                    ready.set_result(None)
                    assert self._closed is not None
                    await self._closed.wait()
            except BaseException as err:
                if not ready.done():
                    ready.set_exception(err)
            finally:
                self._client = None

        self._holder = self._loop.create_task(hold())
        try:
            await ready
            specs, cursor = [], None
            while True:
                listing = await self._client.list_tools(cursor=cursor)
                specs += [_function_spec(tool) for tool in listing.tools]
                cursor = listing.next_cursor
                if not cursor:
                    return specs
        except Exception as err:
            raise McpServerError(self.url, f"could not connect and list tools: {_reason(err)}") from None  # fmt: skip

    # -- calling tools ----------------------------------------------------------------

    async def _call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        from mcp import MCPError
        from mcp_types import REQUEST_TIMEOUT

        client = self._client
        if client is None:
            raise McpServerError(self.url, "the connection is closed (the server exited?)")
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as err:
            if err.code == REQUEST_TIMEOUT:
                return ToolResult(
                    f"Error: the tool {name} did not answer within {self.call_timeout:g} s",
                    is_error=True,
                )
            raise McpServerError(self.url, f"calling {name}: {err.message}") from None
        except Exception as err:
            raise McpServerError(self.url, f"calling {name}: {_reason(err)}") from None
        text = "\n".join(b.text for b in result.content if getattr(b, "type", "") == "text")
        if result.is_error:
            text = text if text.startswith("Error") else f"Error: {text}".rstrip(": ")
            return ToolResult(text, is_error=True)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        return ToolResult(text)

    def call_many(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Each ``(name, arguments)`` call's result, in order; the calls run concurrently."""

        async def gather() -> list[ToolResult]:
            return list(await asyncio.gather(*(self._call(n, a) for n, a in calls)))

        # Each call has its own timeout; this bound only catches a wedged loop.
        return self._run(gather(), self.call_timeout * 2 + 30)  # type: ignore[no-any-return]

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        """One tool call's result."""
        return self.call_many([(name, dict(arguments or {}))])[0]

    # -- as the env sees it -----------------------------------------------------------

    def template(self, name: str = "mcp-tools") -> PromptTemplate:
        """The tool-call template whose actions are this server's tools."""
        return PromptTemplate(
            name=name,
            instructions=_instructions(self.specs),
            result_tag="tool_response",
            actions=self.actions,
        )

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Run the tool calls ``queries`` (each a call's canonical JSON, as the template's
        turns produce them); one hit per call, holding the tool's text. ``k`` is unused."""
        calls = []
        for query in queries:
            try:
                call = json.loads(query)
                calls.append((str(call["name"]), dict(call["arguments"])))
            except (ValueError, TypeError, KeyError):
                raise ValueError(
                    f"McpToolbox.search got {query!r:.80}, not a tool call: the toolbox answers "
                    "the turns of its own template, so make the env with "
                    "template=tools.template() and retriever=tools"
                ) from None
        results = self.call_many(calls)
        return [
            [SearchHit(Document(f"mcp:{name}", result.text), 0.0)]
            for (name, _), result in zip(calls, results, strict=True)
        ]

    def fingerprint(self) -> dict[str, Any]:
        return {"name": "mcp", "server": self.url, "tools": list(self.actions.names)}

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect (a started server is stopped) and end the event loop thread."""
        if not self._thread.is_alive():
            return
        if self._closed is not None and self._holder is not None:

            async def finish() -> None:
                assert self._closed is not None
                self._closed.set()
                await asyncio.wait([self._holder], timeout=10)

            # A server that will not stop is killed with its process group by the SDK.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(finish(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> McpToolbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"McpToolbox({self.url!r}, tools={list(self.actions.names)})"


def _reason(err: BaseException) -> str:
    """An exception's message; an exception group's first leaf's (anyio wraps errors)."""
    while getattr(err, "exceptions", None):
        err = err.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
