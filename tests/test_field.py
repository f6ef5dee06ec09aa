"""Faults found in the field, replayed against the real SDK server under uvicorn on 127.0.0.1.

Each test is one case of a fault kind from the core issue; the sans-IO side of each kind is in
tests/test_core.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.routing import Mount

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware.exposition import start_metrics_server
from tests.catserver import build_app, build_server
from tests.conftest import free_port, wait_for
from tests.helpers import in_flight_total, op_count, parse_errors, total_ops, value

pytestmark = pytest.mark.anyio
MODERN = "2026-07-28"
LEGACY = "2025-11-25"


def modern_headers(port: int, method: str = "tools/call", name: str | None = "scratch_sofa") -> dict[str, str]:
    headers = {
        "host": f"127.0.0.1:{port}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    if name is not None:
        headers["mcp-name"] = name
    return headers


META = (
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
)


def modern_call(arguments: bytes, prefix: bytes = b"", id_: bytes = b"1") -> bytes:
    return (
        prefix
        + b'{"jsonrpc":"2.0","id":'
        + id_
        + b',"method":"tools/call","params":{"name":"scratch_sofa","arguments":'
        + arguments
        + b","
        + META
        + b"}}"
    )


async def tools_known(registry: CollectorRegistry, app: MCPMetricsMiddleware) -> None:
    """Wait until startup discovery has taught the recorder the server's tools."""
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: "scratch_sofa" in app.metrics.tools))


# -- 1. our decoder agrees with the server's, per era, at every size ------------------------------

ODD_BODIES = [
    pytest.param(modern_call(b'{"claw_level":5}', prefix=b"\xef\xbb\xbf"), id="bom"),
    pytest.param(modern_call(b'{"claw_level":5,"note":NaN}'), id="nan"),
    pytest.param(modern_call(b'{"claw_level":5,"note":Infinity}'), id="infinity"),
    pytest.param(modern_call(b'{"claw_level":5,"note":1e400}'), id="1e400"),
    pytest.param(modern_call(b'{"claw_level":5,"note":"\\ud83d"}'), id="lone-surrogate"),
    pytest.param(modern_call(b'{"claw_level":5,"pad":"' + b"x" * 100_000 + b'","note":NaN}'), id="nan-large"),
    pytest.param(
        modern_call(b'{"claw_level":5,"pad":"' + b"x" * 100_000 + b'","note":"\\udc00"}'), id="surrogate-large"
    ),
]


@pytest.mark.parametrize("body", ODD_BODIES)
@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_a_message_the_server_accepts_is_an_operation(
    registry: CollectorRegistry, serve: Any, body: bytes, era: str
) -> None:
    app = build_app(registry, json_response=True, stateless=True)
    srv = serve(app)
    await tools_known(registry, app)
    headers = modern_headers(srv.port)
    if era == "legacy":
        headers["mcp-protocol-version"] = LEGACY
    async with httpx.AsyncClient() as client:
        response = await client.post(srv.url + "/mcp", content=body, headers=headers)
    answer = response.json()
    # The record is made just after the last byte is handed to the server: wait for it.
    await anyio.to_thread.run_sync(
        lambda: wait_for(
            lambda: in_flight_total(registry) == 0 and total_ops(registry) + sum(parse_errors(registry).values()) > 0
        )
    )
    if answer.get("id") == 1:  # the server read it: so must we, as that very call
        assert op_count(registry, "tools/call", "scratch_sofa", version=headers["mcp-protocol-version"]) == 1
        assert "invalid_json" not in parse_errors(registry)
    else:  # the server refused it as unreadable: so do we
        assert answer["error"]["code"] == -32700
        assert total_ops(registry, gen_ai_tool_name="scratch_sofa") == 0
        assert parse_errors(registry).get("invalid_json") == 1


# -- 2. paths: a trailing slash, and a mount that redirects --------------------------------------


async def test_trailing_slash_endpoint(registry: CollectorRegistry, serve: Any) -> None:
    inner = build_server().streamable_http_app(streamable_http_path="/mcp/")
    srv = serve(MCPMetricsMiddleware(inner, registry=registry, mcp_path="/mcp/"))
    async with Client(srv.url + "/mcp/") as client:
        await client.call_tool("sharpen_claw", {"level": 1})
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call") == 1))
    assert op_count(registry, "tools/call", "sharpen_claw", version=MODERN) == 1


async def test_a_mount_that_redirects_records_the_real_calls(
    registry: CollectorRegistry, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mcp = build_server()
    inner = mcp.streamable_http_app(streamable_http_path="/")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    outer = Starlette(routes=[Mount("/mcp", app=inner)], lifespan=lifespan)
    srv = serve(MCPMetricsMiddleware(outer, registry=registry))
    caplog.set_level(logging.WARNING, logger="mcp_metrics")
    async with Client(srv.url + "/mcp") as client:  # answered 307 to /mcp/, which the client follows
        await client.call_tool("sharpen_claw", {"level": 1})
        await client.call_tool("sharpen_claw", {"level": 2})
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call") == 2))
    assert op_count(registry, "tools/call", "sharpen_claw", version=MODERN) == 2
    assert total_ops(registry, error_type="no_response") == 0
    assert in_flight_total(registry) == 0
    redirects = value(
        registry,
        "mcp_http_server_request_duration_seconds_count",
        http_request_method="POST",
        http_response_status_code="307",
    )
    assert redirects >= 3  # server/discover and both calls (the client may probe more)
    warnings = [r for r in caplog.records if "redirect" in r.getMessage()]
    assert len(warnings) == 1


async def test_requests_to_a_near_miss_path_warn_once(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caplog.set_level(logging.WARNING, logger="mcp_metrics")
    transport = httpx.ASGITransport(app=MCPMetricsMiddleware(app, registry=registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(12):
            await client.post("/api/mcp", content=b"{}")
        await client.post("/other", content=b"{}")
    assert value(registry, "mcp_metrics_path_near_misses_total") == 12
    warnings = [r for r in caplog.records if "/api/mcp" in r.getMessage()]
    assert len(warnings) == 1 and "mcp_path='/api/mcp'" in warnings[0].getMessage()


# -- 3. cancellation in JSON mode, where the app never listens ----------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_json_mode_cancellation_is_noticed(registry: CollectorRegistry, serve: Any, mode: str) -> None:
    app = build_app(registry, json_response=True)
    srv = serve(app)
    await tools_known(registry, app)
    async with Client(srv.url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError, match="timed out"):
            await client.call_tool("nap", {"seconds": 2}, read_timeout_seconds=0.3)
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call", error_type="cancelled") == 1)
        )
        # The SDK client breaks if a late answer arrives while it closes: let the tool finish.
        await anyio.sleep(2.0)
    version = MODERN if mode == "auto" else LEGACY
    # Legacy: the client also posts notifications/cancelled, and the server's -32800 answer may
    # be recorded before the disconnect is noticed, or after: cancelled either way.
    codes = ["-32800", ""] if mode == "legacy" else [""]
    count = duration = 0.0
    for code in codes:
        labels = dict(
            mcp_method_name="tools/call",
            gen_ai_tool_name="nap",
            gen_ai_prompt_name="",
            error_type="cancelled",
            rpc_response_status_code=code,
            mcp_protocol_version=version,
            network_transport="tcp",
        )
        count += value(registry, "mcp_server_operation_duration_seconds_count", **labels)
        duration += value(registry, "mcp_server_operation_duration_seconds_sum", **labels)
    assert count == 1
    # Recorded when the client left (0.3 s), not when the tool finished (2 s).
    assert duration < 1.5
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0, timeout=10))
    assert total_ops(registry, mcp_method_name="tools/call") == 1


# -- 4. expiry without traffic, scraped from a separate port -------------------------------------


async def test_an_abandoned_session_expires_without_traffic(registry: CollectorRegistry, serve: Any) -> None:
    srv = serve(build_app(registry, metrics_path=None, session_idle_timeout=1))
    port = free_port()
    started = start_metrics_server(port, registry=registry)
    assert started is not None
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "leaver", "version": "1"}},
        }
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        async with httpx.AsyncClient() as client:
            response = await client.post(srv.url + "/mcp", content=orjson.dumps(init), headers=headers)
            assert response.headers["mcp-session-id"]
        assert value(registry, "mcp_server_sessions_active") == 1
        # Nobody sends another request to the MCP app.
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: value(registry, "mcp_server_sessions_active") == 0, 10))
        assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version=LEGACY) == 1
    finally:
        started[0].shutdown()


# -- 12. one middleware, two event loops in two threads ------------------------------------------


async def _json_tool_app(scope: Any, receive: Any, send: Any) -> None:
    # Two event loops cannot share one SDK session manager, so this shape is a raw app.
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    answer = orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"content": []}})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


def test_two_event_loops_share_one_middleware(registry: CollectorRegistry) -> None:
    app = MCPMetricsMiddleware(_json_tool_app, registry=registry, known_tools=["nap"], discover_tools=False)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        async def main() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                for i in range(n):
                    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "nap"}}
                    await client.post("/mcp", content=orjson.dumps(body))

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(300,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert op_count(registry, "tools/call", "nap") == 600
    assert parse_errors(registry) == {}
    assert in_flight_total(registry) == 0


# -- 13. a scrape never stalls serving; concurrent scrapes render once ---------------------------


class SlowCollector(Collector):
    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        self.release.wait(10)
        yield GaugeMetricFamily("slow_gauge", "A collector that takes its time.", 1.0)


async def test_a_slow_scrape_does_not_block_tool_calls(registry: CollectorRegistry, serve: Any) -> None:
    app = build_app(registry, json_response=True, stateless=True)
    srv = serve(app)
    await tools_known(registry, app)
    slow = SlowCollector()
    registry.register(slow)
    order: list[str] = []
    async with httpx.AsyncClient(timeout=20) as client:

        async def scrape() -> None:
            response = await client.get(srv.url + "/metrics")
            assert b"slow_gauge 1.0" in response.content
            order.append("scrape")

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(scrape)
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: slow.calls == 1))
            async with Client(srv.url + "/mcp") as mcp_client:
                await mcp_client.call_tool("sharpen_claw", {"level": 1})
            order.append("call")
            slow.release.set()
    assert order == ["call", "scrape", "scrape", "scrape"]
    assert slow.calls == 1  # three concurrent scrapes, one rendering


# -- 14. tools are labelled from the first call after a restart ----------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_are_known_before_anyone_lists_them(registry: CollectorRegistry, serve: Any, mode: str) -> None:
    app = build_app(registry)
    srv = serve(app)
    await tools_known(registry, app)
    assert {"sharpen_claw", "scratch_sofa", "nap", "hide_under_bed"} <= app.metrics.tools
    assert "cat_mood" in app.metrics.prompts
    assert total_ops(registry) == 0  # discovery is not traffic
    async with Client(srv.url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
        assert (await client.call_tool("scratch_sofa", {"claw_level": 1})).is_error
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call") == 1))
    version = MODERN if mode == "auto" else LEGACY
    assert op_count(registry, "tools/call", "scratch_sofa", "tool_error", version=version) == 1
    assert total_ops(registry, gen_ai_tool_name="_OTHER") == 0


# -- 15. transport and session outages are failures by their cause -------------------------------


async def test_transport_rejections_are_failures(registry: CollectorRegistry, serve: Any) -> None:
    app = build_app(registry)
    srv = serve(app)
    await tools_known(registry, app)
    body = modern_call(b'{"claw_level":5}')
    async with httpx.AsyncClient() as client:
        bad_host = {**modern_headers(srv.port), "host": "mcp.example.com"}
        assert (await client.post(srv.url + "/mcp", content=body, headers=bad_host)).status_code == 421
        no_sse = {**modern_headers(srv.port), "accept": "text/plain"}
        assert (await client.post(srv.url + "/mcp", content=body, headers=no_sse)).status_code == 406
        legacy = {**modern_headers(srv.port), "mcp-protocol-version": LEGACY, "mcp-session-id": "f" * 32}
        legacy_body = orjson.dumps(
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "scratch_sofa"}}
        )
        for _ in range(20):
            response = await client.post(srv.url + "/mcp", content=legacy_body, headers=legacy)
            assert response.status_code == 404  # "Session not found": a replica without stickiness
    assert op_count(registry, "tools/call", "_OTHER", "421", version=MODERN) == 1
    assert op_count(registry, "tools/call", "_OTHER", "406", version=MODERN) == 1
    assert op_count(registry, "tools/call", "_OTHER", "404", "-32600", version=LEGACY) == 20
    assert total_ops(registry, error_type="") == 0
