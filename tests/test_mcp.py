"""MCP: the tools of a loopback MCP server as the env's actions, and this library's
retriever served as an MCP server (stdio and streamable HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip(
    "mcp", reason="MCP support needs the optional mcp package: pip install 'research-gym[mcp]'"
)

import research_env  # noqa: F401
from research_env.data.types import QASample
from research_env.mcp_tools import McpServerError, McpToolbox
from research_env.vector import SearchVectorEnv

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = [sys.executable, str(ROOT / "tests" / "mcp_loopback_server.py")]
# The started servers import this checkout (the SDK hands a server a minimal environment).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SAMPLE = QASample("q1", "Who founded Drellow Works?", ("Ada Pell",))


def call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture(scope="module")
def tools():
    with McpToolbox(LOOPBACK, env=ENV, call_timeout=1.0) as toolbox:
        yield toolbox


def make_env(tools, **kwargs):
    return gym.make(
        "ReSearch-MultiHop-v0", dataset=[SAMPLE], template=tools.template(), retriever=tools,
        **kwargs,
    )  # fmt: skip


def test_the_servers_tools_are_the_envs_actions(tools):
    assert [spec["function"]["name"] for spec in tools.specs] == ["echo", "slow", "die"]
    env = make_env(tools)
    prompt, info = env.reset(seed=0)
    assert "- echo(text, times): Repeat text." in prompt
    assert [t["function"]["name"] for t in info["tools"]] == ["echo", "slow", "die"]
    assert info["tools"][0]["function"]["parameters"]["required"] == ["text"]
    observation, reward, terminated, _, info = env.step(call("echo", text="ab", times=2))
    assert observation == "\n<tool_response>\nabab\n</tool_response>\n"
    assert info["message"] == {"role": "tool", "name": "echo", "content": "abab"}
    assert not terminated
    *_, info = env.step("The answer is \\boxed{Ada Pell}")
    assert info["em"] == 1.0 and info["format_valid"] and info["searches"] == 1


def test_unknown_tools_and_broken_calls_are_corrected_turns(tools):
    env = make_env(tools)
    env.reset(seed=0)
    observation, *_, info = env.step(call("fetch", url="x"))
    assert info["invalid_reason"] == "unknown_tool"
    assert "does not offer (echo, slow, die)" in info["invalid_detail"]
    assert "Call one of the tools (echo, slow, die)" in observation
    *_, info = env.step("<tool_call>{not json}</tool_call>")
    assert info["invalid_reason"] == "tool_call_json"
    observation, *_ = env.step(call("echo", text="still here"))
    assert "still here" in observation


def test_bad_arguments_come_back_as_the_tools_error(tools):
    env = make_env(tools)
    env.reset(seed=0)
    observation, _, terminated, _, info = env.step(call("echo", times="x"))
    assert observation.startswith("\n<tool_response>\nError")
    assert "text" in observation and "Field required" in observation
    assert info["message"]["role"] == "tool" and not terminated


def test_a_slow_tool_times_out_into_the_observation_and_the_server_stays(tools):
    env = make_env(tools)
    env.reset(seed=0)
    observation, *_ = env.step(call("slow", seconds=30))
    assert "Error: the tool slow did not answer within 1 s" in observation
    observation, *_ = env.step(call("echo", text="after"))
    assert "after" in observation


def test_the_toolbox_refuses_plain_queries_of_another_template(tools):
    env = gym.make("ReSearch-MultiHop-v0", dataset=[SAMPLE], retriever=tools)  # tag template
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"make the env with template=tools\.template\(\)"):
        env.step("<search>Drellow Works</search>")


def test_one_vector_env_step_sends_every_call(tools):
    env = SearchVectorEnv(num_envs=3, dataset=[SAMPLE], template=tools.template(), retriever=tools)
    env.reset(seed=0)
    observations, *_ = env.step([call("echo", text=t) for t in ("a", "b", "c")])
    assert [o.split("\n")[2] for o in observations] == ["a", "b", "c"]


def test_a_server_that_dies_raises_and_the_episode_loses_nothing():
    with McpToolbox(LOOPBACK, env=ENV) as tools:
        env = make_env(tools)
        env.reset(seed=0)
        env.step(call("echo", text="first"))
        with pytest.raises(McpServerError, match=r"mcp_loopback_server\.py: calling die: "):
            env.step(call("die"))
        episode = env.unwrapped.episode
        assert len(episode.record.turns) == 1 and not episode.done  # the failed step left no mark
        with pytest.raises(McpServerError, match="calling echo"):
            env.step(call("echo", text="again"))
        *_, truncated, info = env.unwrapped.end_early()
        assert truncated and info["turns"] == 1 and info["searches"] == 1
        assert info["termination"] == "token_budget"


def test_servers_that_cannot_be_used_are_named(tmp_path):
    with pytest.raises(ValueError, match="an http\\(s\\):// URL or a command as a list"):
        McpToolbox("localhost:8765")
    with pytest.raises(ValueError, match="call_timeout and connect_timeout must be > 0"):
        McpToolbox(LOOPBACK, call_timeout=0)
    crash = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(McpServerError, match="could not connect and list tools"):
        McpToolbox(crash, connect_timeout=30)
    with pytest.raises(McpServerError, match=f"127.0.0.1:{_free_port()}/mcp: could not connect"):
        McpToolbox(f"http://127.0.0.1:{_free_port.last}/mcp", connect_timeout=30)


# -- research-env mcp -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        _free_port.last = s.getsockname()[1]
        return _free_port.last


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcp-corpus")
    docs = [
        ("d1", "Drellow Works", "Drellow Works was founded by Ada Pell in 1921."),
        ("d2", "Pellmarin", "Pellmarin is a port city."),
        ("d3", "Orlen Vask", "Orlen Vask is an engineer."),
    ]
    path = folder / "corpus.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "contents": f'"{t}"\n{x}'}) + "\n" for i, t, x in docs)
    )
    return path


def serve_command(corpus: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "research_app", "mcp", "--corpus", str(corpus),
        "--index-dir", str(corpus.parent / "index"), *extra,
    ]  # fmt: skip


def test_mcp_serve_over_stdio_answers_search(corpus):
    with McpToolbox(serve_command(corpus), env=ENV) as tools:
        assert [s["function"]["name"] for s in tools.specs] == ["search"]
        result = tools.call("search", {"query": "who founded Drellow Works", "top_k": 1})
        assert result.text.startswith("Doc 1 (Title: Drellow Works) Drellow Works was founded")
        assert result.text.count("Doc ") == 1 and not result.is_error
        refused = tools.call("search", {"query": "x", "top_k": 0})
        assert refused.is_error and "top_k must be between 1 and 20, got 0" in refused.text
        # The env, searching through the served tool:
        env = make_env(tools)
        env.reset(seed=0)
        observation, *_ = env.step(call("search", query="Drellow Works founder"))
        assert "Doc 1 (Title: Drellow Works)" in observation


def test_mcp_serve_over_streamable_http(corpus):
    port = _free_port()
    server = subprocess.Popen(
        serve_command(corpus, "--transport", "http", "--port", str(port)),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        tools = _connect_when_up(f"http://127.0.0.1:{port}/mcp", server)
        with tools:
            result = tools.call("search", {"query": "Pellmarin port city"})
            assert result.text.startswith("Doc 1 (Title: Pellmarin) Pellmarin is a port city.")
            result = tools.call("search", {"query": "Pellmarin Drellow Orlen Vask Ada"})
            assert result.text.count("Doc ") == 3  # the server's default top_k
    finally:
        server.terminate()
        server.wait(30)


def _connect_when_up(url: str, server: subprocess.Popen) -> McpToolbox:
    """The server is up once it answers (building the index takes a moment)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return McpToolbox(url, connect_timeout=10)
        except McpServerError:
            if server.poll() is not None:
                raise AssertionError(server.stderr.read().decode()[-2000:]) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_without_the_sdk_the_error_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'research-gym\[mcp\]'"):
        McpToolbox(LOOPBACK)
    from research_app.cli import main

    assert main(["mcp", "--corpus", "synthetic"]) == 2
    assert "pip install 'research-gym[mcp]'" in capsys.readouterr().err
