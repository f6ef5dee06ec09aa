"""Shared helpers for the proxy and wrap tests: the pinned third-party server, and /metrics parsing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PYTHON = sys.executable
MCP_METRICS = [PYTHON, "-m", "mcp_metrics_middleware.cli"]
EVERYTHING_JS = TESTS / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
STDIO_CATSERVER = [PYTHON, str(TESTS / "stdio_catserver.py")]

needs_everything = pytest.mark.skipif(
    os.environ.get("CI") != "true" and (shutil.which("node") is None or not EVERYTHING_JS.exists()),
    reason="node or tests/node_modules missing: run `npm ci` in tests/ (CI always runs these)",
)


def everything(transport: str) -> list[str]:
    """The command of the pinned @modelcontextprotocol/server-everything."""
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    return [node, str(EVERYTHING_JS), transport]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(url: str, token: str | None = None) -> Samples:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse(response.read().decode())


OP = "mcp_server_operation_duration_seconds_count"


def op_counts(samples: Samples, transport: str) -> dict[tuple[str, str, str, str, str], float]:
    """{(method, tool, error_type, code, version): count} of the operation histogram, one transport."""
    out = {}
    for (name, labels), value in samples.items():
        d = dict(labels)
        if name == OP and d["network_transport"] == transport and value:
            key = (
                d["mcp_method_name"],
                d["gen_ai_tool_name"],
                d["error_type"],
                d["rpc_response_status_code"],
                d["mcp_protocol_version"],
            )
            out[key] = value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout}s")
        time.sleep(0.02)


@contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess that is always reaped (killed if a test left it running)."""
    proc = subprocess.Popen(args, cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
