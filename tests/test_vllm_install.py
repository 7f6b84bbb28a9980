"""The ``vllm`` extra installs: its pin agrees with the version matrix in docs/scaling.md,
and pip's resolver, asked about ``.[train,vllm]`` against the package index, picks the
pinned vLLM and the CUDA build of the torch that the matrix names.

The resolver test is the only test here that leaves the machine, and it reaches the package
index alone (through pip, with this machine's local wheels and constraints switched off);
where the index cannot be reached it is skipped with a message saying so.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
EXTRA_MARK = "(the `vllm` extra)"
# What pip says when it cannot reach an index (urllib3's and the OS's words).
UNREACHABLE = (
    "NewConnectionError", "Max retries exceeded", "ConnectTimeout", "Connection refused",
    "Could not fetch URL", "Name or service not known", "Temporary failure in name resolution",
    "Network is unreachable", "ProxyError", "SSLError", "timed out",
)  # fmt: skip


@dataclass
class Row:
    vllm: str
    torch: str
    cuda: str
    python: str


def matrix() -> dict[str, Row]:
    """docs/scaling.md's vLLM table, by the vLLM cell's text."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    section = text.split("### Rollouts with vLLM", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.match(r"\d", cells[0]):
            rows[cells[0]] = Row(*cells[:4])
    return rows


def extra_row() -> Row:
    marked = [row for name, row in matrix().items() if EXTRA_MARK in name]
    assert len(marked) == 1, f"docs/scaling.md: mark exactly one vLLM row {EXTRA_MARK!r}"
    row = marked[0]
    row.vllm = row.vllm.replace(EXTRA_MARK, "").strip()
    return row


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_vllm_extra_pins_the_release_the_matrix_marks():
    extra = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["vllm"]]
    row = extra_row()
    assert [r.name for r in extra] == ["vllm"]
    assert str(extra[0].specifier) == f"=={row.vllm}", (
        f"pyproject.toml's vllm extra is {extra[0]}; docs/scaling.md marks vLLM {row.vllm} "
        f"{EXTRA_MARK}: change both together"
    )
    from algorithms.rollout import vllm_backend

    assert f"pins vLLM {row.vllm} and so torch {row.torch} built for CUDA {row.cuda}" in (
        " ".join(str(vllm_backend.__doc__).split())
    ), "algorithms/rollout/vllm_backend.py's docstring names another vLLM"


def test_the_project_admits_the_torch_the_pinned_vllm_pins():
    row = extra_row()
    extras = pyproject()["project"]["optional-dependencies"]
    torch_specs = [
        Requirement(r).specifier for reqs in extras.values() for r in reqs if r.startswith("torch")
    ]
    assert torch_specs, "no extra of pyproject.toml requires torch"
    for spec in torch_specs:
        assert spec.contains(row.torch), (
            f"torch{spec} shuts out vLLM {row.vllm}'s torch {row.torch}"
        )
    # The CPU suite runs the torch release the vLLM environment gets.
    make_pin = re.search(r"install (?:-\S+ )*torch==([\w.]+)", (ROOT / "Makefile").read_text())
    assert make_pin is not None, "Makefile: no `pip install torch==X` line found"
    assert make_pin.group(1) == row.torch, (
        f"Makefile pins torch {make_pin.group(1)}; vLLM {row.vllm} pins {row.torch}"
    )


def index_env() -> dict[str, str]:
    """The environment pip gets: the package index only (no pip config files, no local
    wheel folders or constraints that would hand it a CPU torch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    keep = ("PIP_INDEX_URL", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_TRUSTED_HOST", "PIP_PROXY")
    env.update({k: os.environ[k] for k in keep if k in os.environ})
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def index_versions(package: str, env: dict[str, str]) -> list[str] | str:
    """The versions the index lists for ``package``, or why it could not be reached (a
    str); any other failure is an error."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", package, "--timeout", "20",
         "--retries", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode == 0:
        match = re.search(r"Available versions: (.*)", output)
        assert match is not None, output
        return match.group(1).split(", ")
    reasons = [line for line in output.splitlines() if any(u in line for u in UNREACHABLE)]
    assert reasons, f"pip index versions {package} failed:\n{output[-2000:]}"
    return reasons[-1][-300:]


def test_an_unreachable_index_is_told_apart_from_an_answer():
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**index_env(), "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple"}
    answer = index_versions("vllm", env)
    assert isinstance(answer, str) and "127.0.0.1" in answer


@pytest.mark.slow
def test_pip_resolves_the_vllm_extra_to_its_pinned_cuda_torch(tmp_path):
    row = extra_row()
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("the matrix is of the Linux x86_64 wheels")
    if not SpecifierSet(row.python).contains(platform.python_version()):
        pytest.skip(f"vLLM {row.vllm} needs Python {row.python}")
    env = index_env()
    versions = index_versions("vllm", env)
    if isinstance(versions, str):
        pytest.skip(
            f"the package index cannot be reached, so the install was not checked: {versions}"
        )
    assert row.vllm in versions, f"the index has no vLLM {row.vllm}"
    for name in ("pyproject.toml", "README.md"):  # the project's metadata, nothing built here
        shutil.copy(ROOT / name, tmp_path / name)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "--use-feature=fast-deps",  # wheels' metadata by range reads
         f"{tmp_path}[train,vllm]"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    chosen = {
        i["metadata"]["name"].lower(): i["metadata"]
        for i in json.loads(report.read_text())["install"]
    }
    assert chosen["vllm"]["version"] == row.vllm
    assert chosen["torch"]["version"] == row.torch  # not a local +cpu build
    cuda = [
        Requirement(r) for r in chosen["torch"].get("requires_dist", [])
        if r.startswith(("cuda-toolkit", "nvidia-cuda-runtime"))
    ]  # fmt: skip
    assert cuda, f"torch {row.torch} as resolved requires no CUDA runtime: a CPU build"
    assert all(str(r.specifier).removeprefix("==").startswith(row.cuda + ".") for r in cuda), cuda
