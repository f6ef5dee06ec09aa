"""End to end: the real mcp SDK server under uvicorn on 127.0.0.1, driven by the real SDK client."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry

from tests.catserver import MemoryEventStore, build_app
from tests.conftest import wait_for
from tests.helpers import in_flight_total, op_count, parse_errors, total_ops, value

MODERN = "2026-07-28"
LEGACY = "2025-11-25"

SERVER_MODES = [
    pytest.param({"json_response": False, "stateless": False}, id="sse-stateful"),
    pytest.param({"json_response": True, "stateless": False}, id="json-stateful"),
    pytest.param({"json_response": False, "stateless": True}, id="sse-stateless"),
    pytest.param({"json_response": True, "stateless": True}, id="json-stateless"),
]


async def exercise(url: str, mode: str, json_mode: bool) -> None:
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        await client.list_tools()
        ok = await client.call_tool("sharpen_claw", {"level": 7}, progress_callback=on_progress)
        assert not ok.is_error
        assert progress == ([1.0, 2.0] if not json_mode else [])
        assert (await client.call_tool("scratch_sofa", {"claw_level": 1})).is_error
        assert (await client.call_tool("scratch_sofa", {"claw_level": "not-an-int"})).is_error
        assert (await client.call_tool("no_such_tool", {})).is_error
        with pytest.raises(MCPError) as info:
            await client.call_tool("scratch_sofa", {"claw_level": 42})
        assert info.value.error.code == -32050
        await client.get_prompt("cat_mood", {"mood": "smug"})
        await client.read_resource("cat://profile")


@pytest.mark.anyio
@pytest.mark.parametrize("server", SERVER_MODES)
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_outcome_is_recorded_exactly(
    registry: CollectorRegistry, serve: Any, server: dict[str, bool], mode: str
) -> None:
    srv = serve(build_app(registry, **server))
    await exercise(srv.url + "/mcp", mode, server["json_response"])
    version = MODERN if mode == "auto" else LEGACY
    # DELETE and the GET stream finish after the client returns.
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))

    expect = {
        ("tools/list", "", "", ""): 1,
        ("tools/call", "sharpen_claw", "", ""): 1,
        ("tools/call", "scratch_sofa", "tool_error", ""): 2,  # exception + invalid arguments
        ("tools/call", "_OTHER", "tool_error", ""): 1,  # unknown tool
        ("tools/call", "scratch_sofa", "-32050", "-32050"): 1,  # MCPError, custom code
        ("prompts/get", "", "", ""): 1,
        ("resources/read", "", "", ""): 1,
    }
    if mode == "auto":
        expect[("server/discover", "", "", "")] = 1
    else:
        expect[("initialize", "", "", "")] = 1
        expect[("notifications/initialized", "", "", "")] = 1
    for (method, tool, error_type, code), n in expect.items():
        prompt = "cat_mood" if method == "prompts/get" else ""
        got = op_count(registry, method, tool, error_type, code, version, prompt)
        assert got == n, (method, tool, error_type, code, got)
    assert total_ops(registry) == sum(expect.values())
    assert in_flight_total(registry) == 0
    assert parse_errors(registry) == {}

    # Progress notifications travel only on SSE streams: json_response drops them in both eras.
    progress_on_wire = not server["json_response"]
    assert value(
        registry,
        "mcp_server_messages_total",
        direction="sent",
        message_type="notification",
        mcp_method_name="notifications/progress",
    ) == (2 if progress_on_wire else 0)

    stateful = mode == "legacy" and not server["stateless"]
    await anyio.to_thread.run_sync(
        lambda: wait_for(lambda: value(registry, "mcp_server_sessions_active") == 0)
    )
    assert value(
        registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version=LEGACY
    ) == (1 if stateful else 0)


@pytest.mark.anyio
async def test_sessions_open_and_close(registry: CollectorRegistry, serve: Any) -> None:
    srv = serve(build_app(registry))
    async with (
        Client(srv.url + "/mcp", mode="legacy") as a,
        Client(srv.url + "/mcp", mode="legacy"),
    ):
        assert value(registry, "mcp_server_sessions_active") == 2
        await a.list_tools()
    await anyio.to_thread.run_sync(
        lambda: wait_for(lambda: value(registry, "mcp_server_sessions_active") == 0)
    )
    assert (
        value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version=LEGACY)
        == 2
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancellation(registry: CollectorRegistry, serve: Any, mode: str) -> None:
    srv = serve(build_app(registry))
    version = MODERN if mode == "auto" else LEGACY
    async with Client(srv.url + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError, match="timed out"):
            await client.call_tool("nap", {"seconds": 5}, read_timeout_seconds=0.3)
        # Legacy: the client POSTs notifications/cancelled and the stream gets -32800.
        # Modern: the client just closes the POST; no response is ever started.
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call") == 1)
        )
    code = "-32800" if mode == "legacy" else ""
    # Startup discovery vouched for nap before the first call.
    assert op_count(registry, "tools/call", "nap", "cancelled", code, version) == 1
    if mode == "legacy":
        assert op_count(registry, "notifications/cancelled", version=version) == 1
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))


@pytest.mark.anyio
async def test_tools_list_teaches_tool_names(registry: CollectorRegistry, serve: Any) -> None:
    # Without startup discovery, a name is learned from the server's own list.
    srv = serve(build_app(registry, discover_tools=False))
    async with Client(srv.url + "/mcp") as client:
        # nap is not yet vouched for: its failure is folded into _OTHER.
        assert (await client.call_tool("nap", {"seconds": "zzz"})).is_error
        await client.list_tools()
        assert (await client.call_tool("nap", {"seconds": "zzz"})).is_error
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))
    assert op_count(registry, "tools/call", "_OTHER", "tool_error", version=MODERN) == 1
    assert op_count(registry, "tools/call", "nap", "tool_error", version=MODERN) == 1


@pytest.mark.anyio
async def test_resumed_response_completes_on_the_get_stream(
    registry: CollectorRegistry, serve: Any
) -> None:
    srv = serve(build_app(registry, event_store=MemoryEventStore()))
    async with Client(srv.url + "/mcp", mode="legacy") as client:
        result = await client.call_tool("hide_under_bed", {})
        assert not result.is_error
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: total_ops(registry, mcp_method_name="tools/call") == 1)
        )
    assert op_count(registry, "tools/call", "hide_under_bed", version=LEGACY) == 1
    assert total_ops(registry, error_type="no_response") == 0
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))


@pytest.mark.anyio
async def test_many_interleaved_calls_keep_exact_counts(
    registry: CollectorRegistry, serve: Any
) -> None:
    srv = serve(build_app(registry))
    url = srv.url + "/mcp"
    per_client = 15

    async def worker(mode: str) -> None:
        async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
            await client.list_tools()
            for i in range(per_client):
                await client.call_tool("sharpen_claw", {"level": i})
                await client.call_tool("scratch_sofa", {"claw_level": 1})

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(worker, "auto" if i % 2 else "legacy")
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))
    for version in (MODERN, LEGACY):
        assert op_count(registry, "tools/call", "sharpen_claw", version=version) == 4 * per_client
        assert (
            op_count(registry, "tools/call", "scratch_sofa", "tool_error", version=version)
            == 4 * per_client
        )


def test_rejected_requests_reach_the_transport_histogram(
    registry: CollectorRegistry, serve: Any
) -> None:
    srv = serve(build_app(registry))
    url = srv.url + "/mcp"
    with httpx.Client() as http:
        # Missing content type: 400 text, no JSON-RPC body.
        assert http.post(url, content=b"{}").status_code == 400
        # Accept without text/event-stream: 406.
        r = http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"accept": "application/json"},
        )
        assert r.status_code == 406
        # Unknown session: 404.
        r = http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream", "mcp-session-id": "deadbeef"},
        )
        assert r.status_code == 404
        # Wrong Host: 421.
        r = http.post(url, json={}, headers={"host": "evil.example"})
        assert r.status_code == 421
        # Invalid JSON: -32700, the caller's fault.
        r = http.post(
            url,
            content=b"{nope",
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
            },
        )
        assert r.status_code == 400
    # The transport histogram is recorded when the app returns, just after the client got
    # its response.
    wait_for(
        lambda: (
            value(
                registry,
                "mcp_http_server_request_duration_seconds_count",
                http_request_method="POST",
                http_response_status_code="400",
            )
            == 2
        )
    )
    for status in ("400", "404", "406", "421"):
        assert (
            value(
                registry,
                "mcp_http_server_request_duration_seconds_count",
                http_request_method="POST",
                http_response_status_code=status,
            )
            >= 1
        )
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code="400",
        )
        == 2
    )
    # The two "{}" bodies were read by the app (and so tapped): valid JSON, not JSON-RPC.
    assert parse_errors(registry) == {"invalid_json": 1, "not_jsonrpc": 2}
    # Session not found: the session layer refused it, a failure by its status.
    assert op_count(registry, "tools/list", "", "404", "-32600") == 1
    assert in_flight_total(registry) == 0
