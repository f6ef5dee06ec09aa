"""Multiprocess mode: the real demo server under uvicorn --workers 2 (and gunicorn), one scrape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CALLS_PER_CLIENT = 10
CLIENTS = 6


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def ops(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], **match: str) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "mcp_server_operation_duration_seconds_count"
        and all((k, val) in labels for k, val in match.items())
    )


def start_server(cmd: list[str], tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp), "DEMO_STATELESS": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.stdout else ""
            proc.kill()
            raise AssertionError(f"server did not start:\n{out}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def drive(url: str) -> None:
    async def one(i: int) -> None:
        # A fresh client (and connection) per batch spreads the load over the workers.
        mode = "auto" if i % 2 else "legacy"
        for _ in range(CALLS_PER_CLIENT):
            async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
                await client.call_tool("sharpen_claw", {"level": 5})
                await client.call_tool("chase_laser_pointer", {})

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(CLIENTS):
                tg.start_soon(one, i)

    anyio.run(main)


def check_exact_counts(port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    drive(url + "/mcp")
    total = CLIENTS * CALLS_PER_CLIENT
    # Several scrapes, each answered by whichever worker accepts it: all aggregate every worker.
    for _ in range(4):
        samples = scrape(url + "/metrics")
        # sharpen_claw succeeds, so every worker vouches for its name on first use.
        assert (
            ops(
                samples,
                mcp_method_name="tools/call",
                gen_ai_tool_name="sharpen_claw",
                error_type="",
            )
            == total
        )
        # A hallucinated tool: tool_error, folded into _OTHER.
        assert (
            ops(
                samples,
                mcp_method_name="tools/call",
                gen_ai_tool_name="_OTHER",
                error_type="tool_error",
            )
            == total
        )
        assert ops(samples, mcp_method_name="tools/call") == 2 * total
        in_flight = sum(
            v for (n, _), v in samples.items() if n == "mcp_server_operations_in_flight"
        )
        assert in_flight == 0
        assert samples[("cat_claw_level_count", frozenset())] == total


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.mark.slow
def test_uvicorn_two_workers(tmp_path: Path, port: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "demo.server:build_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    proc = start_server(cmd, tmp_path, port)
    try:
        check_exact_counts(port)
        files = os.listdir(tmp_path / "multiproc")
        pids = {f.rsplit("_", 1)[1] for f in files if f.startswith("counter_")}
        assert len(pids) >= 2, files  # both workers wrote their own files
    finally:
        log = stop(proc)
    assert "Traceback" not in log, log


@pytest.mark.slow
def test_gunicorn_uvicorn_workers(tmp_path: Path, port: int) -> None:
    pytest.importorskip("gunicorn")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from mcp_metrics_middleware.multiprocess import child_exit  # noqa: F401\n")
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(conf),
        "-w",
        "2",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "demo.server:build_app()",
    ]
    proc = start_server(cmd, tmp_path, port)
    try:
        check_exact_counts(port)
    finally:
        log = stop(proc)
    assert "Traceback" not in log, log


def test_dead_workers_live_gauges_are_cleaned(tmp_path: Path) -> None:
    """A worker that died with requests in flight must not leave them on the gauge."""
    mp = tmp_path / "mp"
    mp.mkdir()
    code = (
        "from prometheus_client import CollectorRegistry\n"
        "from mcp_metrics_middleware import MCPMetrics\n"
        "from mcp_metrics_middleware.protocol.model import Operation, Session\n"
        "m = MCPMetrics(CollectorRegistry())\n"
        "for _ in range(3):\n"
        "    m.operation_started(Operation('tools/call', 'nap', 'request', 0.0, 0, '', 'tcp'))\n"
        "m.session_started(Session('s', 0.0, 'tcp'))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
    assert any(f.startswith("gauge_livesum") for f in os.listdir(mp))
    check = (
        "from prometheus_client import CollectorRegistry\n"
        "from mcp_metrics_middleware.exposition import render\n"
        "body, _ = render(CollectorRegistry(), None, None)\n"
        "print(body.decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], env=env, check=True, cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert 'gen_ai_tool_name="nap"' not in out  # the dead worker's in-flight gauge is gone
    assert "mcp_server_sessions_active 1.0" not in out
    # Counters of a dead worker are kept: they are history, not live state.
    assert 'mcp_server_messages_total{direction="received"' in out
    assert not any(f.startswith("gauge_livesum") for f in os.listdir(mp))
