"""``mcp-metrics proxy``: real upstreams (the TypeScript reference server, the Python SDK server),
real uvicorn on 127.0.0.1, the real SDK client in both eras; exact counts and exact bytes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware.proxy import build_app
from tests.catserver import build_server
from tests.conftest import ServerThread, free_port
from tests.thirdparty import (
    MCP_METRICS,
    PYTHON,
    ROOT,
    TESTS,
    everything,
    needs_everything,
    op_counts,
    parse,
    process,
    scrape,
    wait_until,
)

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def counts(registry: CollectorRegistry) -> dict[tuple[str, str, str, str, str], float]:
    from prometheus_client import generate_latest

    return op_counts(parse(generate_latest(registry).decode()), "tcp")


class Recorder:
    """Raw ASGI in front of the upstream app: every request and response byte it saw."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rec: dict[str, Any] = {"headers": list(scope["headers"]), "body": bytearray(), "response": bytearray()}
        self.seen.append(rec)

        async def tap_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                rec["body"] += message.get("body", b"")
            return message

        async def tap_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                rec["status"] = message["status"]
                rec["response_headers"] = list(message["headers"])
            elif message["type"] == "http.response.body":
                rec["response"] += message.get("body", b"")
            await send(message)

        await self.app(scope, tap_receive, tap_send)


@pytest.fixture
def python_upstream() -> Iterator[ServerThread]:
    with ServerThread(build_server().streamable_http_app()) as server:
        yield server


def start_proxy(upstream: str, registry: CollectorRegistry, **options: Any) -> ServerThread:
    return ServerThread(build_app(upstream, registry=registry, **options)).__enter__()


# -- the Python SDK upstream, both eras, in process ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), [("legacy", LEGACY), ("auto", MODERN)])
async def test_python_upstream_exact_counts(python_upstream: ServerThread, mode: str, version: str) -> None:
    registry = CollectorRegistry()
    proxy = start_proxy(python_upstream.url + "/mcp", registry)
    try:
        app: MCPMetricsMiddleware = proxy.server.config.app  # type: ignore[assignment]
        wait_until(lambda: "scratch_sofa" in app.metrics.tools, what="tool discovery through the proxy")
        async with Client(proxy.url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
            assert (await client.call_tool("sharpen_claw", {"level": 7})).content[0].text == "claw sharpened to 7"  # type: ignore[union-attr]
            await client.call_tool("sharpen_claw", {"level": 8})
            assert (await client.call_tool("scratch_sofa", {"claw_level": 1})).is_error
            with pytest.raises(MCPError):
                await client.call_tool("scratch_sofa", {"claw_level": 42})
            assert (await client.call_tool("no_such_tool", {})).is_error
        wait_until(lambda: ("tools/call", "_OTHER", "tool_error", "", version) in counts(registry), what="last call")
        got = counts(registry)
    finally:
        proxy.__exit__(None, None, None)
    expected = {
        ("tools/list", "", "", "", version): 1,  # the SDK client lists the tools before its first call
        ("tools/call", "sharpen_claw", "", "", version): 2,
        ("tools/call", "scratch_sofa", "tool_error", "", version): 1,
        ("tools/call", "scratch_sofa", "-32050", "-32050", version): 1,
        ("tools/call", "_OTHER", "tool_error", "", version): 1,
    }
    if mode == "legacy":
        expected[("initialize", "", "", "", LEGACY)] = 1
        expected[("notifications/initialized", "", "", "", LEGACY)] = 1
    else:
        expected[("server/discover", "", "", "", MODERN)] = 1
    assert got == expected


# -- the TypeScript reference server, through the command -----------------------------------------


@pytest.fixture
def everything_http() -> Iterator[str]:
    port = free_port()
    with process(
        everything("streamableHttp"),
        env={"PORT": str(port), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ):
        wait_until(lambda: _listening(port), timeout=30, what="server-everything listening")
        yield f"http://127.0.0.1:{port}/mcp"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def proxy_command(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen([*MCP_METRICS, "proxy", *args], cwd=ROOT, stderr=subprocess.PIPE)
        procs.append(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        return proc, line

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@needs_everything
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_everything_server_through_the_command(everything_http: str, proxy_command: Any, mode: str) -> None:
    port = free_port()
    proc, line = proxy_command("--upstream", everything_http, "--listen", f"127.0.0.1:{port}")
    assert line == f"mcp-metrics proxy: http://127.0.0.1:{port}/mcp -> {everything_http}; metrics on http://127.0.0.1:{port}/metrics\n"
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _listening(port), what="proxy listening")
    async with Client(url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
        assert (await client.call_tool("echo", {"message": "miaow"})).content[0].text == "Echo: miaow"  # type: ignore[union-attr]
        await client.call_tool("get-sum", {"a": 1, "b": 2})
        await client.call_tool("get-sum", {"a": 3, "b": 4})
        assert (await client.call_tool("get-sum", {"a": "x", "b": 2})).is_error
        assert (await client.call_tool("no-such-tool", {})).is_error
    wait_until(lambda: ("mcp_server_sessions_active", frozenset()) in (s := scrape(url + "/metrics")) and s[("mcp_server_sessions_active", frozenset())] == 0, what="session end")
    samples = scrape(url + "/metrics")
    expected = {
        ("initialize", "", "", "", LEGACY): 1,
        ("notifications/initialized", "", "", "", LEGACY): 1,
        ("tools/list", "", "", "", LEGACY): 1,  # the SDK client lists the tools before its first call
        ("tools/call", "echo", "", "", LEGACY): 1,
        ("tools/call", "get-sum", "", "", LEGACY): 2,
        ("tools/call", "get-sum", "tool_error", "", LEGACY): 1,
        ("tools/call", "_OTHER", "tool_error", "", LEGACY): 1,
    }
    if mode == "auto":
        # The TS SDK 1.x server refuses the 2026 server/discover: HTTP 400 with JSON-RPC error
        # -32000 (a server-defined code, so an error by the outcome table); the client falls
        # back to initialize.
        expected[("server/discover", "", "-32000", "-32000", MODERN)] = 1
    assert op_counts(samples, "tcp") == expected
    sessions = {dict(k[1]).get("mcp_protocol_version"): v for k, v in samples.items() if k[0] == "mcp_server_session_duration_seconds_count"}
    # One session ended. Its mcp_protocol_version label should be LEGACY, but the core leaves
    # HTTP sessions' protocol_version empty (reported to the lead), so only the count is checked.
    assert sum(sessions.values()) == 1, sessions


# -- bytes and headers --------------------------------------------------------------------------


def test_bytes_and_headers_pass_unchanged() -> None:
    recorder = Recorder(build_server().streamable_http_app())
    registry = CollectorRegistry()
    with ServerThread(recorder) as upstream:
        proxy = start_proxy(upstream.url + "/mcp", registry, discover_tools=False)
        try:
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                extra = {"authorization": "Bearer cat-token", "x-cat": "evil", "user-agent": "raw-cat/1"}
                body = json.dumps(INIT).encode()
                r = client.post("/mcp", content=body, headers={**ACCEPT, **extra})
                assert r.status_code == 200
                session = r.headers["mcp-session-id"]
                seen = recorder.seen[-1]
                assert bytes(seen["body"]) == body
                assert r.content == bytes(seen["response"])
                sent_headers = {k.decode(): v.decode() for k, v in seen["headers"]}
                assert {k: sent_headers[k] for k in extra} == extra
                assert sent_headers["host"] == upstream.url.removeprefix("http://")
                assert dict(seen["response_headers"])[b"mcp-session-id"].decode() == session
                headers = {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": LEGACY}
                client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
                # A large request (300 KB) and a large SSE answer, streamed both ways.
                big = {"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "cat_mood", "arguments": {"mood": "m" * 300_000}}}
                body = json.dumps(big).encode()
                with client.stream("POST", "/mcp", content=body, headers=headers) as r:
                    raw = b"".join(r.iter_raw())
                seen = recorder.seen[-1]
                assert bytes(seen["body"]) == body
                assert raw == bytes(seen["response"])
                assert b"m" * 300_000 in raw
                r = client.delete("/mcp", headers=headers)
                assert r.status_code == 200
                assert recorder.seen[-1]["response_headers"] and r.content == bytes(recorder.seen[-1]["response"])
        finally:
            proxy.__exit__(None, None, None)
    assert counts(registry) == {
        ("initialize", "", "", "", LEGACY): 1,
        ("notifications/initialized", "", "", "", LEGACY): 1,
        ("prompts/get", "", "", "", LEGACY): 1,
    }


# -- failures -------------------------------------------------------------------------------------


def test_upstream_down_is_502_and_recorded() -> None:
    registry = CollectorRegistry()
    dead = free_port()
    proxy = start_proxy(f"http://127.0.0.1:{dead}/mcp", registry, discover_tools=False)
    try:
        r = httpx.post(proxy.url + "/mcp", json=INIT, headers=ACCEPT, timeout=30)
    finally:
        proxy.__exit__(None, None, None)
    assert r.status_code == 502
    assert r.text.count("\n") == 1 and r.text.startswith(f"upstream http://127.0.0.1:{dead}/ unreachable: ")
    assert counts(registry) == {("initialize", "", "502", "", ""): 1}


def test_upstream_silent_is_504_and_recorded() -> None:
    registry = CollectorRegistry()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        proxy = start_proxy(f"http://127.0.0.1:{port}/mcp", registry, discover_tools=False, timeout=0.5)
        try:
            r = httpx.post(proxy.url + "/mcp", json=INIT, headers=ACCEPT, timeout=30)
        finally:
            proxy.__exit__(None, None, None)
    assert r.status_code == 504
    assert r.text == f"upstream http://127.0.0.1:{port}/ did not answer in time\n"
    assert counts(registry) == {("initialize", "", "504", "", ""): 1}


def _nap_call(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "nap", "arguments": {"seconds": 30}}}


def test_upstream_dies_mid_stream() -> None:
    """The answer started (SSE headers), then the upstream process is killed: the client's body is
    cut, and the call is ``no_response``."""
    registry = CollectorRegistry()
    port = free_port()
    with process([PYTHON, str(TESTS / "http_catserver.py"), str(port), "--stateless"], stderr=subprocess.DEVNULL) as upstream:
        wait_until(lambda: _listening(port), timeout=30, what="upstream listening")
        proxy = start_proxy(f"http://127.0.0.1:{port}/mcp", registry)
        try:
            app: MCPMetricsMiddleware = proxy.server.config.app  # type: ignore[assignment]
            wait_until(lambda: "nap" in app.metrics.tools, what="tool discovery")
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                client.post("/mcp", json=INIT, headers=ACCEPT)
                headers = {**ACCEPT, "mcp-protocol-version": LEGACY}
                with client.stream("POST", "/mcp", json=_nap_call(2), headers=headers) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    upstream.kill()
                    with pytest.raises(httpx.RemoteProtocolError):
                        for _ in r.iter_raw():
                            pass
            wait_until(lambda: ("tools/call", "nap", "no_response", "", LEGACY) in counts(registry), what="no_response")
        finally:
            proxy.__exit__(None, None, None)
    assert counts(registry) == {
        ("initialize", "", "", "", LEGACY): 1,
        ("tools/call", "nap", "no_response", "", LEGACY): 1,
    }


def test_client_disconnect_cancels_the_upstream_request() -> None:
    """The client leaves mid-stream: the proxy records ``cancelled``, and so does a middleware on
    the upstream itself, which proves the upstream request was cancelled too."""
    upstream_registry = CollectorRegistry()
    upstream_app = MCPMetricsMiddleware(build_server().streamable_http_app(stateless_http=True), registry=upstream_registry)
    registry = CollectorRegistry()
    with ServerThread(upstream_app) as upstream:
        proxy = start_proxy(upstream.url + "/mcp", registry)
        try:
            app: MCPMetricsMiddleware = proxy.server.config.app  # type: ignore[assignment]
            wait_until(lambda: "nap" in app.metrics.tools, what="tool discovery")
            headers = {**ACCEPT, "mcp-protocol-version": LEGACY}
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                client.post("/mcp", json=INIT, headers=ACCEPT)
                with client.stream("POST", "/mcp", json=_nap_call(2), headers=headers) as r:
                    assert r.status_code == 200
            # Leaving the block closed the connection mid-stream.
            key = ("tools/call", "nap", "cancelled", "", LEGACY)
            wait_until(lambda: key in counts(registry), what="cancelled at the proxy")
            wait_until(lambda: key in counts(upstream_registry), what="cancelled at the upstream")
        finally:
            proxy.__exit__(None, None, None)
    assert counts(registry) == {("initialize", "", "", "", LEGACY): 1, key: 1}
    assert counts(upstream_registry) == {
        ("initialize", "", "", "", LEGACY): 1,
        key: 1,
        # the proxy's tool discovery reached the upstream (and only the upstream's metrics)
        ("tools/list", "", "", "", MODERN): 1,
        ("prompts/list", "", "", "", MODERN): 1,
    }


# -- the command's errors and options ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # not a URL the proxy can forward to
        (["--upstream", "ftp://example/mcp"], "mcp-metrics proxy: --upstream: upstream must be an http:// or https:// URL, got 'ftp://example/mcp'"),
        # a malformed address
        (["--upstream", "http://127.0.0.1:1/mcp", "--listen", "nowhere"], "mcp-metrics proxy: --listen wants HOST:PORT, got 'nowhere'"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], line: str) -> None:
    result = subprocess.run([*MCP_METRICS, "proxy", *args], cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [line]


def test_listen_port_taken_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*MCP_METRICS, "proxy", "--upstream", "http://127.0.0.1:1/mcp", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"mcp-metrics proxy: cannot listen on 127.0.0.1:{port} (--listen): Address already in use"
    ]


def test_separate_metrics_listener_with_token(python_upstream: ServerThread, proxy_command: Any, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    port, metrics_port = free_port(), free_port()
    upstream = python_upstream.url + "/mcp"
    proc, line = proxy_command(
        "--upstream", upstream, "--listen", f"127.0.0.1:{port}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}", "--metrics-token-file", str(tmp_path / "token"),
    )  # fmt: skip
    assert re.fullmatch(rf"mcp-metrics proxy: http://127\.0\.0\.1:{port}/mcp -> {upstream}; metrics on http://127\.0\.0\.1:{metrics_port}/metrics\n", line)
    wait_until(lambda: _listening(port), what="proxy listening")
    r = httpx.post(f"http://127.0.0.1:{port}/mcp", json=INIT, headers=ACCEPT, timeout=30)
    assert r.status_code == 200
    # /metrics on the listen address is no longer ours: it goes upstream (which has none).
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).status_code == 404
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).status_code == 401
    samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics", token="s3cret")
    assert op_counts(samples, "tcp") == {("initialize", "", "", "", LEGACY): 1}


# -- the README's example, as written -----------------------------------------------------------


@needs_everything
@pytest.mark.anyio
async def test_readme_proxy_example(everything_http: str, proxy_command: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- proxy-example: begin -->\n```sh\n(.*?)```\n<!-- proxy-example: end -->", readme, re.S)
    assert block, "proxy-example block missing from README.md"
    import shlex

    argv = shlex.split(block.group(1))
    assert argv[:2] == ["mcp-metrics", "proxy"]
    port = free_port()
    # The example's addresses, moved to this test's ports.
    argv = [a.replace("http://127.0.0.1:3001/mcp", everything_http).replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in argv]
    _proc, line = proxy_command(*argv[2:])
    assert line.startswith(f"mcp-metrics proxy: http://127.0.0.1:{port}/mcp -> {everything_http}")
    wait_until(lambda: _listening(port), what="proxy listening")
    async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
        await client.call_tool("echo", {"message": "from the README"})
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert op_counts(samples, "tcp")[("tools/call", "echo", "", "", LEGACY)] == 1
