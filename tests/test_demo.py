"""The evil-cat demo end to end: a real server process, real ``mcp`` clients, a real scrape."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from prometheus_client.parser import text_string_to_metric_families

from demo.run import port_is_free
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DURATION = "mcp_server_operation_duration_seconds_count"
MODERN, LEGACY = "2026-07-28", "2025-11-25"
CAT_TOOLS = ("sharpen_claw", "scratch_sofa", "nap", "hiss", "cough_hairball")
# What each tool may produce, by construction of demo/server.py.
ALLOWED_ERROR_TYPES = {
    "sharpen_claw": {""},
    "nap": {""},
    "scratch_sofa": {"", "tool_error"},
    "hiss": {"", "-32050"},
    "cough_hairball": {"", "tool_error"},
    "_OTHER": {"tool_error"},  # hallucinated tool names: never a label value of their own
}
# Requests the SDK client sends by itself, not as one of the traffic generator's calls.
HANDSHAKE = {"initialize", "notifications/initialized", "server/discover"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def label_values(samples: Samples, name: str, label: str, **labels: str) -> set[str]:
    wanted = set(labels.items())
    return {
        dict(lab)[label]
        for (n, lab), v in samples.items()
        if n == name and wanted <= set(lab) and v > 0
    }


def eventually(base: str, check: Any, timeout: float = 5.0) -> Samples:
    """Scrape until ``check(samples)`` holds: the middleware records an answer as it sends it,
    so the client can hold the answer a moment before the count moves."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def _env(port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "DEMO_HOST": "127.0.0.1", "DEMO_PORT": str(port), **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m demo.server`` under uvicorn on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo.server"],
            cwd=ROOT,
            env=_env(port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                scrape(base)
                break
            except OSError:
                assert time.monotonic() < deadline, "demo server did not start"
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_traffic(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo.traffic", "--url", base + "/mcp", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _calls(stdout: str) -> int:
    last = stdout.strip().splitlines()[-1]
    assert last.endswith("(done)"), stdout
    return int(last.split("calls=")[1].split()[0])


def test_traffic_shows_every_tool_with_its_error_types(server: str) -> None:
    before = scrape(server)
    done = run_traffic(server, "--duration", "3", "--clients", "4", "--seed", "3", "--every", "1")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "transport=0" in done.stdout.splitlines()[-1]
    calls = _calls(done.stdout)
    assert calls > 0

    def answered(s: Samples) -> bool:
        ops = total(s, DURATION) - total(before, DURATION)
        handshakes = sum(
            total(s, DURATION, mcp_method_name=m) - total(before, DURATION, mcp_method_name=m)
            for m in HANDSHAKE
        )
        return ops - handshakes >= calls

    after = eventually(server, answered)
    # Every call the generator made was seen and answered exactly once (the client cache is off).
    ops = total(after, DURATION) - total(before, DURATION)
    handshakes = sum(
        total(after, DURATION, mcp_method_name=m) - total(before, DURATION, mcp_method_name=m)
        for m in HANDSHAKE
    )
    assert ops - handshakes == calls

    # Both protocol eras, and every cat tool.
    versions = label_values(after, DURATION, "mcp_protocol_version", mcp_method_name="tools/call")
    assert versions == {MODERN, LEGACY}
    tools = label_values(after, DURATION, "gen_ai_tool_name", mcp_method_name="tools/call")
    assert set(CAT_TOOLS) <= tools
    assert tools <= set(ALLOWED_ERROR_TYPES)
    for tool in tools:
        errors = label_values(
            after, DURATION, "error_type", mcp_method_name="tools/call", gen_ai_tool_name=tool
        )
        assert errors <= ALLOWED_ERROR_TYPES[tool], tool
    # The JSON-RPC error carries its code in both labels.
    assert label_values(
        after, DURATION, "rpc_response_status_code", gen_ai_tool_name="hiss", error_type="-32050"
    ) <= {"-32050"}

    # The legacy sessions closed (DELETE) when the generator stopped; nothing is left in flight.
    assert after[("mcp_server_sessions_active", ())] == 0
    assert total(after, "mcp_server_operations_in_flight") == 0

    # The hand-made business metrics moved in step with the generic ones, exactly.
    def count(tool: str, **labels: str) -> float:
        return total(after, DURATION, mcp_method_name="tools/call", gen_ai_tool_name=tool, **labels)

    assert total(after, "cat_claw_level_count") == count("sharpen_claw") > 0
    assert total(after, "cat_sofa_scratches_total", outcome="failure") == count(
        "scratch_sofa", error_type="tool_error"
    )
    assert total(after, "cat_sofa_scratches_total", outcome="success") == count(
        "scratch_sofa", error_type=""
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN), ("legacy", LEGACY)])
async def test_each_outcome_gets_its_labels(server: str, mode: str, version: str) -> None:
    """Forced outcomes, one call each: the scrape moves by exactly these series."""
    before = scrape(server)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(server + "/mcp", mode=mode, cache=None) as client:  # type: ignore[arg-type]
        await client.list_tools()  # the server vouches for its tool names here
        assert not (await client.call_tool("sharpen_claw", {"level": 42})).is_error
        assert (await client.call_tool("scratch_sofa", {"claw_level": 0})).is_error
        assert not (await client.call_tool("scratch_sofa", {"claw_level": 10000})).is_error
        nap = await client.call_tool("nap", {"seconds": 0.05}, progress_callback=on_progress)
        assert not nap.is_error
        with pytest.raises(MCPError) as hissed:
            await client.call_tool("hiss", {"at": "the dog", "volume": 10})
        assert hissed.value.code == -32050
        assert not (await client.call_tool("hiss", {"at": "the dog", "volume": 0})).is_error
        assert (await client.call_tool("cough_hairball", {"fur": 100})).is_error
        assert not (await client.call_tool("cough_hairball", {"fur": 0})).is_error
        assert (await client.call_tool("summon_dog", {"level": 9})).is_error
        await client.get_prompt("evil_plan", {"target": "sofa"})
        await client.read_resource("cat://profile")
    assert progress == [1.0, 2.0, 3.0, 4.0]

    expected = {
        # (method, tool, prompt, error_type, rpc code): increase
        ("tools/list", "", "", "", ""): 1,
        ("tools/call", "sharpen_claw", "", "", ""): 1,
        ("tools/call", "scratch_sofa", "", "tool_error", ""): 1,
        ("tools/call", "scratch_sofa", "", "", ""): 1,
        ("tools/call", "nap", "", "", ""): 1,
        ("tools/call", "hiss", "", "-32050", "-32050"): 1,
        ("tools/call", "hiss", "", "", ""): 1,
        ("tools/call", "cough_hairball", "", "tool_error", ""): 1,
        ("tools/call", "cough_hairball", "", "", ""): 1,
        ("tools/call", "_OTHER", "", "tool_error", ""): 1,
        ("prompts/get", "", "evil_plan", "", ""): 1,
        ("resources/read", "", "", "", ""): 1,
    }

    def key(method: str, tool: str, prompt: str, error: str, code: str) -> Any:
        labels = {
            "mcp_method_name": method,
            "gen_ai_tool_name": tool,
            "gen_ai_prompt_name": prompt,
            "error_type": error,
            "rpc_response_status_code": code,
            "network_transport": "tcp",
            "mcp_protocol_version": version,
        }
        return (DURATION, tuple(sorted(labels.items())))

    def increase(samples: Samples, k: Any) -> float:
        return samples.get(k, 0.0) - before.get(k, 0.0)

    after = eventually(
        server, lambda s: all(increase(s, key(*k)) >= n for k, n in expected.items())
    )
    for labels, n in expected.items():
        assert increase(after, key(*labels)) == n, labels
    assert total(after, "cat_claw_level_count") - total(before, "cat_claw_level_count") == 1
    assert total(after, "cat_claw_level_sum") - total(before, "cat_claw_level_sum") == 42
    for outcome in ("failure", "success"):
        moved = total(after, "cat_sofa_scratches_total", outcome=outcome) - total(
            before, "cat_sofa_scratches_total", outcome=outcome
        )
        assert moved == 1, outcome


def test_traffic_stops_cleanly_on_ctrl_c(server: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.traffic", "--url", server + "/mcp", "--clients", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(server, lambda s: s[("mcp_server_sessions_active", ())] > 0, timeout=10)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert stdout.strip().splitlines()[-1].endswith("(done)")
    after = eventually(server, lambda s: s[("mcp_server_sessions_active", ())] == 0)
    assert after[("mcp_server_sessions_active", ())] == 0  # sessions were closed, not dropped


def test_top_view_reads_the_demo(server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_metrics_middleware.cli", "top", server, "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"mcp-metrics top  {server}/metrics  ")
    assert lines[1].startswith("window: since start (first scrape)  sessions active: ")
    rows = {tuple(line.split()[:2]) for line in lines[4:]}
    assert {("tools/call", tool) for tool in CAT_TOOLS} <= rows


def test_make_demo_runs_and_cleans_up() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "demo.run"],
        cwd=ROOT,
        env=_env(port, DEMO_SECONDS="6", DEMO_INTERVAL="1"),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert f"demo: Prometheus metrics: http://127.0.0.1:{port}/metrics" in out
    assert "METHOD" in out and "TOOL/PROMPT" in out
    assert any(line.startswith("tools/call") for line in out.splitlines())
    assert out.strip().splitlines()[-2].endswith("(done)")
    assert out.strip().splitlines()[-1] == "demo: stopped the server and the traffic"
    assert port_is_free("127.0.0.1", port)  # the server is gone


def test_make_demo_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "demo.run"],
            cwd=ROOT,
            env=_env(port, DEMO_SECONDS="1"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stdout == (
        f"demo: port {port} on 127.0.0.1 is already in use; stop what is using it or set "
        "DEMO_PORT\n"
    )
    assert done.stderr == ""


def test_traffic_against_a_stopped_server_exits_cleanly() -> None:
    done = run_traffic(f"http://127.0.0.1:{free_port()}", "--duration", "1", "--clients", "2")
    assert done.returncode == 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "retrying" in done.stdout
    assert _calls(done.stdout) == 0
