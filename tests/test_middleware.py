"""The middleware against raw ASGI apps: wire shapes the Python SDK never produces."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import Message, Receive, Scope, Send
from tests.apps import JSON, SSE, drive, error, request, responder, result, scope, sse_event
from tests.helpers import in_flight_total, op_count, parse_errors, total_ops, value

pytestmark = pytest.mark.anyio

CALL = request(1, "tools/call", name="sharpen_claw", arguments={"level": 7})
CALL_BODY = orjson.dumps(CALL)


def mw(app: Any, registry: CollectorRegistry, **kwargs: Any) -> MCPMetricsMiddleware:
    return MCPMetricsMiddleware(app, registry=registry, known_tools=["sharpen_claw"], **kwargs)


async def test_json_response_success(registry: CollectorRegistry) -> None:
    body = orjson.dumps(result(1, content=[], isError=False))
    app = mw(responder(200, JSON, [body], final_empty=False), registry)
    sent = await drive(app, scope(), CALL_BODY)
    assert sent[1]["body"] == body
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert (
        value(
            registry,
            "mcp_server_messages_total",
            direction="received",
            message_type="request",
            mcp_method_name="tools/call",
        )
        == 1
    )
    assert (
        value(
            registry,
            "mcp_server_messages_total",
            direction="sent",
            message_type="response",
            mcp_method_name="tools/call",
        )
        == 1
    )
    assert value(
        registry,
        "mcp_server_operation_payload_bytes_sum",
        direction="request",
        mcp_method_name="tools/call",
        gen_ai_tool_name="sharpen_claw",
    ) == len(CALL_BODY)
    assert value(
        registry,
        "mcp_server_operation_payload_bytes_sum",
        direction="response",
        mcp_method_name="tools/call",
        gen_ai_tool_name="sharpen_claw",
    ) == len(body)
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code="200",
        )
        == 1
    )
    assert in_flight_total(registry) == 0
    assert parse_errors(registry) == {}


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("coalesce", [False, True])
@pytest.mark.parametrize("final_empty", [False, True])
async def test_sse_framings_and_stream_endings(
    registry: CollectorRegistry, nl: bytes, coalesce: bool, final_empty: bool
) -> None:
    events = [
        sse_event(
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 1},
            },
            nl,
        ),
        # A server->client request whose id equals the client's: not the answer.
        sse_event(request(1, "elicitation/create", message="sure?"), nl),
        sse_event(
            {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": "x"},
            },
            nl,
        ),
        sse_event(result(1, content=[], isError=True), nl),
    ]
    chunks = [b"".join(events)] if coalesce else events
    app = mw(responder(200, SSE, chunks, final_empty=final_empty), registry)
    sent = await drive(app, scope(), CALL_BODY)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"".join(events)
    assert op_count(registry, "tools/call", "sharpen_claw", "tool_error") == 1
    assert total_ops(registry) == 1
    for method, kind in [
        ("notifications/progress", "notification"),
        ("notifications/message", "notification"),
        ("elicitation/create", "request"),
    ]:
        assert (
            value(
                registry,
                "mcp_server_messages_total",
                direction="sent",
                message_type=kind,
                mcp_method_name=method,
            )
            == 1
        )
    assert parse_errors(registry) == {}


async def test_sse_events_split_at_every_byte(registry: CollectorRegistry) -> None:
    stream = b"".join(
        [
            b"id: 2-2\r\ndata: \r\nretry: 1500\r\n\r\n",
            b": ping\r\n\r\n",
            sse_event(result(1, content=[{"type": "text", "text": "ok"}])),
        ]
    )
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    app = mw(responder(200, SSE, chunks, final_empty=False), registry)
    await drive(app, scope(), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert parse_errors(registry) == {}


async def test_operation_ends_at_its_response_not_at_stream_end(
    registry: CollectorRegistry,
) -> None:
    # Clock reads: exchange start, body read (also the disconnect watch list's time), response
    # start, the result chunk, the ping, the final empty chunk, the end.
    clock = iter([0.0, 0.0, 0.0, 0.5, 5.0, 50.0, 60.0, 70.0, 80.0])
    app = mw(
        responder(200, SSE, [sse_event(result(1)), b": ping\r\n\r\n"], final_empty=True), registry
    )
    app.clock = lambda: next(clock)
    await drive(app, scope(), CALL_BODY)
    # Started at 0.0; the result chunk went out at t=0.5.
    assert (
        value(
            registry,
            "mcp_server_operation_duration_seconds_sum",
            mcp_method_name="tools/call",
            gen_ai_tool_name="sharpen_claw",
            gen_ai_prompt_name="",
            error_type="",
            rpc_response_status_code="",
            mcp_protocol_version="",
            network_transport="tcp",
        )
        == 0.5
    )


async def test_batch_request_and_array_response(registry: CollectorRegistry) -> None:
    batch = orjson.dumps(
        [
            request(1, "tools/list"),
            request("a", "tools/call", name="sharpen_claw", arguments={}),
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            request(3, "prompts/get", name="mood"),
        ]
    )
    answer = orjson.dumps(
        [
            result(1, tools=[{"name": "nap"}]),
            error(3, -32602),
            result("a", content=[], isError=False),
        ]
    )
    app = mw(responder(200, JSON, [answer], final_empty=False), registry)
    await drive(app, scope(), batch)
    assert op_count(registry, "tools/list") == 1
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert op_count(registry, "notifications/initialized") == 1
    # -32602 is the caller's fault: not an error_type, but the code is kept.
    assert op_count(registry, "prompts/get", prompt="_OTHER", code="-32602") == 1
    assert total_ops(registry) == 4
    assert in_flight_total(registry) == 0


async def test_tools_list_teaches_names(registry: CollectorRegistry) -> None:
    listing = orjson.dumps(result(1, tools=[{"name": "nap"}, {"name": "hiss"}]))
    app = MCPMetricsMiddleware(
        responder(200, JSON, [listing], final_empty=False), registry=registry
    )
    call = orjson.dumps(request(2, "tools/call", name="nap", arguments={}))
    failed = orjson.dumps(result(2, content=[], isError=True))
    app2 = MCPMetricsMiddleware(
        responder(200, JSON, [failed], final_empty=False), registry=registry
    )
    await drive(app2, scope(), call)
    assert op_count(registry, "tools/call", "_OTHER", "tool_error") == 1
    await drive(app, scope(), orjson.dumps(request(1, "tools/list")))
    await drive(app2, scope(), call)
    assert op_count(registry, "tools/call", "nap", "tool_error") == 1


async def test_successful_call_vouches_for_its_name(registry: CollectorRegistry) -> None:
    ok = orjson.dumps(result(2, content=[], isError=False))
    app = MCPMetricsMiddleware(responder(200, JSON, [ok], final_empty=False), registry=registry)
    call = orjson.dumps(request(2, "tools/call", name="purr", arguments={}))
    await drive(app, scope(), call)
    assert op_count(registry, "tools/call", "purr") == 1
    assert value(registry, "mcp_metrics_label_overflow_total", label="gen_ai_tool_name") == 0


@pytest.mark.parametrize(
    ("code", "tool", "error_type", "code_label"),
    [
        # Caller errors: not failures (semconv), and the server refused the request, so the
        # name the client sent is not the tool's label.
        (-32700, "_OTHER", "", "-32700"),
        (-32600, "_OTHER", "", "-32600"),
        (-32601, "_OTHER", "", "-32601"),
        (-32602, "_OTHER", "", "-32602"),
        (-32002, "_OTHER", "", "-32002"),
        (-32020, "_OTHER", "", "-32020"),
        (-32021, "_OTHER", "", "-32021"),
        (-32022, "_OTHER", "", "-32022"),
        (-32603, "sharpen_claw", "-32603", "-32603"),
        (-32050, "sharpen_claw", "-32050", "-32050"),
        (0, "sharpen_claw", "0", "0"),
        (-32800, "sharpen_claw", "cancelled", "-32800"),
    ],
)
async def test_error_codes(
    registry: CollectorRegistry, code: int, tool: str, error_type: str, code_label: str
) -> None:
    app = mw(responder(200, JSON, [orjson.dumps(error(1, code))], final_empty=False), registry)
    await drive(app, scope(), CALL_BODY)
    assert op_count(registry, "tools/call", tool, error_type, code_label) == 1
    assert total_ops(registry) == 1


async def test_error_codes_are_capped(registry: CollectorRegistry) -> None:
    for i in range(40):
        body = orjson.dumps(error(1, -31000 - i))
        await drive(
            mw(responder(200, JSON, [body], final_empty=False), registry), scope(), CALL_BODY
        )
    assert total_ops(registry, rpc_response_status_code="_OTHER") == 8  # 40 - cap of 32
    assert (
        value(registry, "mcp_metrics_label_overflow_total", label="rpc_response_status_code") == 8
    )


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ""),  # the caller's malformed request, like -32600
        (403, "403"),  # Origin check
        (404, "404"),  # session not found
        (406, "406"),
        (413, "413"),
        (415, "415"),
        (421, "421"),  # Host check
        (500, "500"),
        (503, "503"),
    ],
)
async def test_http_errors_without_jsonrpc_body(
    registry: CollectorRegistry, status: int, error_type: str
) -> None:
    app = mw(
        responder(status, [(b"content-type", b"text/plain")], [b"nope"], final_empty=False),
        registry,
    )
    await drive(app, scope(), CALL_BODY)
    # Refused by the transport: the name is not vouched for.
    assert op_count(registry, "tools/call", "_OTHER", error_type) == 1
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code=str(status),
        )
        == 1
    )


async def test_body_rejected_whole_counts_once(registry: CollectorRegistry) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "x"}})
    app = mw(responder(400, JSON, [body], final_empty=False), registry)
    await drive(app, scope(), orjson.dumps([CALL, request(2, "tools/list")]))
    assert op_count(registry, "tools/call", "_OTHER", "", "-32600") == 1
    assert total_ops(registry) == 1
    assert in_flight_total(registry) == 0


async def test_notification_ends_at_202(registry: CollectorRegistry) -> None:
    app = mw(responder(202, [], [], final_empty=True), registry)
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    await drive(app, scope(), orjson.dumps(note))
    assert op_count(registry, "notifications/cancelled") == 1
    # A client-sent response (elicitation reply) is a message, not an operation.
    await drive(app, scope(), orjson.dumps(result(1, action="accept")))
    assert total_ops(registry) == 1
    assert (
        value(
            registry,
            "mcp_server_messages_total",
            direction="received",
            message_type="response",
            mcp_method_name="",
        )
        == 1
    )


async def test_modern_headers_name_the_operation_when_body_is_unread(
    registry: CollectorRegistry,
) -> None:
    app = mw(
        responder(
            413,
            [(b"content-type", b"text/plain")],
            [b"Request body too large"],
            read_body=False,
            final_empty=False,
        ),
        registry,
    )
    headers = [
        (b"mcp-protocol-version", b"2026-07-28"),
        (b"mcp-method", b"tools/call"),
        (b"mcp-name", b"sharpen_claw"),
    ]
    await drive(app, scope(headers=headers), b"x" * 100)
    # Named by the headers, refused by the server: a failure by its status, name not vouched.
    assert op_count(registry, "tools/call", "_OTHER", "413", version="2026-07-28") == 1
    assert total_ops(registry) == 1


async def test_body_wins_over_headers(registry: CollectorRegistry) -> None:
    app = mw(responder(200, JSON, [orjson.dumps(result(1))], final_empty=False), registry)
    headers = [(b"mcp-method", b"tools/list")]
    await drive(app, scope(headers=headers), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert op_count(registry, "tools/list") == 0


async def test_stream_that_ends_on_disconnect_is_cancelled(registry: CollectorRegistry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send(
            {
                "type": "http.response.body",
                "body": sse_event(
                    {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
                ),
                "more_body": True,
            }
        )
        message = await receive()
        assert message["type"] == "http.disconnect"

    await drive(mw(app, registry), scope(), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw", "cancelled") == 1
    assert in_flight_total(registry) == 0


async def test_modern_cancellation_no_response_start(registry: CollectorRegistry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        assert (await receive())["type"] == "http.disconnect"

    await drive(mw(app, registry), scope(), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw", "cancelled") == 1
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code="",
        )
        == 1
    )


class Boom(Exception):
    pass


@pytest.mark.parametrize("stage", ["before_start", "after_start", "mid_stream"])
async def test_app_exception_propagates_unchanged(registry: CollectorRegistry, stage: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if stage != "before_start":
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
        if stage == "mid_stream":
            await send(
                {"type": "http.response.body", "body": b'data: {"jsonrpc"', "more_body": True}
            )
        raise Boom("original")

    with pytest.raises(Boom, match="original"):
        await drive(mw(app, registry), scope(), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw", "500") == 1
    assert total_ops(registry) == 1
    assert in_flight_total(registry) == 0
    status = "500" if stage == "before_start" else "200"
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code=status,
        )
        == 1
    )


async def test_send_raising_is_cancelled_and_propagates(registry: CollectorRegistry) -> None:
    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client gone")

    async def receive() -> Message:
        return {"type": "http.request", "body": CALL_BODY, "more_body": False}

    app = mw(responder(200, JSON, [orjson.dumps(result(1))], final_empty=False), registry)
    with pytest.raises(OSError, match="client gone"):
        await app(scope(), receive, send)
    assert op_count(registry, "tools/call", "sharpen_claw", "cancelled") == 1
    assert in_flight_total(registry) == 0


async def test_gzip_json_response_is_decoded(registry: CollectorRegistry) -> None:
    payload = orjson.dumps(result(1, content=[{"type": "text", "text": "x" * 2000}], isError=True))
    compressed = gzip.compress(payload)
    headers = [*JSON, (b"content-encoding", b"gzip")]
    chunks = [compressed[:100], compressed[100:]]
    app = mw(responder(200, headers, chunks, final_empty=True), registry)
    sent = await drive(app, scope(), CALL_BODY)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == compressed
    assert op_count(registry, "tools/call", "sharpen_claw", "tool_error") == 1
    assert parse_errors(registry) == {}


async def test_unknown_encoding_is_counted(registry: CollectorRegistry) -> None:
    headers = [*JSON, (b"content-encoding", b"br")]
    app = mw(responder(200, headers, [b"\x00\x01"], final_empty=False), registry)
    await drive(app, scope(), CALL_BODY)
    assert parse_errors(registry) == {"encoding": 1}
    # The answer could not be read: recorded without an error type (the parse error says why),
    # and with no name of its own, since nothing vouched for it.
    assert op_count(registry, "tools/call", "_OTHER", "") == 1


async def test_request_body_over_cap_is_skipped_but_passed(registry: CollectorRegistry) -> None:
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    chunks = [b"[" + b" " * 600, b" " * 600, b"]"]
    await drive(mw(app, registry, max_body_size=1000), scope(), chunks)
    assert seen == chunks
    assert parse_errors(registry) == {"too_large": 1}
    assert total_ops(registry) == 0


async def test_passthrough_scopes_and_paths(registry: CollectorRegistry) -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"] + ":" + scope.get("path", ""))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            await send({"type": "http.response.body", "body": orjson.dumps(result(1))})

    app_mw = mw(app, registry)
    await app_mw({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await app_mw({"type": "websocket", "path": "/mcp"}, None, None)  # type: ignore[arg-type]
    await drive(app_mw, scope(path="/other"), CALL_BODY)
    assert calls == ["lifespan:", "websocket:/mcp", "http:/other"]
    assert total_ops(registry) == 0


async def test_root_path_when_mounted(registry: CollectorRegistry) -> None:
    app = mw(responder(200, JSON, [orjson.dumps(result(1))], final_empty=False), registry)
    await drive(app, scope(path="/cats/mcp", root_path="/cats"), CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw") == 1


async def test_metrics_endpoint(registry: CollectorRegistry) -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    app_mw = mw(app, registry, metrics_token="s3cret")
    sent = await drive(app_mw, scope("GET", "/metrics"))
    assert sent[0]["status"] == 401
    auth = [(b"authorization", b"Bearer s3cret")]
    sent = await drive(app_mw, scope("GET", "/metrics", auth))
    assert sent[0]["status"] == 200
    assert b"mcp_server_sessions_active 0.0" in sent[1]["body"]
    openmetrics = [*auth, (b"accept", b"application/openmetrics-text; version=1.0.0")]
    sent = await drive(app_mw, scope("GET", "/metrics", openmetrics))
    assert sent[1]["body"].endswith(b"# EOF\n")
    gz = [*auth, (b"accept-encoding", b"gzip")]
    sent = await drive(app_mw, scope("GET", "/metrics", gz))
    assert b"mcp_server_sessions_active" in gzip.decompress(sent[1]["body"])
    sent = await drive(app_mw, scope("HEAD", "/metrics", auth))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b""
    sent = await drive(app_mw, scope("POST", "/metrics", auth))
    assert sent[0]["status"] == 405
    assert not called


async def test_metrics_path_disabled_passes_to_app(registry: CollectorRegistry) -> None:
    app = mw(
        responder(200, JSON, [b"{}"], read_body=False, final_empty=False),
        registry,
        metrics_path=None,
    )
    sent = await drive(app, scope("GET", "/metrics"))
    assert sent[1]["body"] == b"{}"


def test_two_middlewares_on_one_registry(registry: CollectorRegistry) -> None:
    a = MCPMetricsMiddleware(responder(200, JSON, []), registry=registry)
    b = MCPMetricsMiddleware(responder(200, JSON, []), registry=registry)
    assert a.metrics is b.metrics


async def test_unknown_method_and_version_fold_into_other(registry: CollectorRegistry) -> None:
    app = mw(responder(200, JSON, [orjson.dumps(error(1, -32601))], final_empty=False), registry)
    headers = [(b"mcp-protocol-version", b"2099-01-01")]
    await drive(app, scope(headers=headers), orjson.dumps(request(1, "scan/../etc/passwd")))
    assert op_count(registry, "_OTHER", code="-32601", version="_OTHER") == 1
    assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_method_name") == 1
    assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_protocol_version") == 1


async def test_duplicate_response_start_is_counted(registry: CollectorRegistry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.start", "status": 500, "headers": JSON})
        await send({"type": "http.response.body", "body": orjson.dumps(result(1))})

    sent = await drive(mw(app, registry), scope(), CALL_BODY)
    assert [m["type"] for m in sent] == ["http.response.start"] * 2 + ["http.response.body"]
    assert parse_errors(registry) == {"asgi_protocol": 1}
    assert op_count(registry, "tools/call", "sharpen_claw") == 1


async def test_subscriptions_listen_ends_with_its_stream(registry: CollectorRegistry) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": sse_event(
                    {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged"}
                ),
            }
        )
        assert (await receive())["type"] == "http.disconnect"

    body = orjson.dumps(request(5, "subscriptions/listen", notifications={}))
    await drive(mw(app, registry), scope(), body)
    assert op_count(registry, "subscriptions/listen") == 1
    assert in_flight_total(registry) == 0


@pytest.mark.parametrize("coalesce", [False, True])
async def test_notifications_counted_without_decoding_agree_with_decoding(
    registry: CollectorRegistry, coalesce: bool
) -> None:
    events = [
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\r\n\r\n',
        # An escape in the method: read by the full decoder, which yields notifications/message.
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/messag\\u0065"}\r\n\r\n',
        # A method no revision defines: folded into _OTHER, and the fold counted.
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/custom"}\r\n\r\n',
        sse_event(result(1, content=[])),
    ]
    chunks = [b"".join(events)] if coalesce else events
    await drive(mw(responder(200, SSE, chunks, final_empty=True), registry), scope(), CALL_BODY)
    for method in ("notifications/progress", "notifications/message", "_OTHER"):
        assert (
            value(
                registry,
                "mcp_server_messages_total",
                direction="sent",
                message_type="notification",
                mcp_method_name=method,
            )
            == 1
        ), method
    assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_method_name") == 1
    assert op_count(registry, "tools/call", "sharpen_claw") == 1


@pytest.mark.parametrize("as_tuple", [False, True])
async def test_a_repeated_request_header_is_read_first_wins(registry: CollectorRegistry, as_tuple: bool) -> None:
    # Starlette's Headers.get reads the first of a repeated header, and so must the adapter
    # (whatever sequence type the server passes the headers in).
    headers = [(b"mcp-protocol-version", b"2025-11-25"), (b"mcp-protocol-version", b"2026-07-28")]
    s = scope(headers=headers)
    if as_tuple:
        s["headers"] = tuple(s["headers"])
    app = mw(responder(200, JSON, [orjson.dumps(result(1))]), registry)
    await drive(app, s, CALL_BODY)
    assert op_count(registry, "tools/call", "sharpen_claw", version="2025-11-25") == 1
    assert total_ops(registry) == 1


async def _session_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with JSON; an ``initialize`` opens session s1."""
    body = orjson.loads((await receive())["body"])
    headers = list(JSON)
    if body["method"] == "initialize":
        headers.append((b"mcp-session-id", b"s1"))
    answer = orjson.dumps(result(body["id"], protocolVersion="2025-06-18"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def test_what_a_closed_event_loop_left_still_expires_in_the_next(registry: CollectorRegistry) -> None:
    # A server restarted in process (a new event loop): the sessions the model kept must still
    # expire on time, even if no request with a session comes again.
    import asyncio

    middleware = mw(_session_app, registry, session_idle_timeout=0.3)
    asyncio.run(drive(middleware, scope(), orjson.dumps(request(1, "initialize"))))
    assert value(registry, "mcp_server_sessions_active") == 1

    async def later() -> None:
        await drive(middleware, scope(), orjson.dumps(request(2, "ping")))
        await asyncio.sleep(1.0)

    asyncio.run(later())
    assert value(registry, "mcp_server_sessions_active") == 0
    assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2025-06-18") == 1


def test_a_loop_keeps_its_own_model_after_another_loop_closed(registry: CollectorRegistry) -> None:
    # Loop A served first; loop B opened a session in its own model; A closed. B's next request
    # must still find its session (and the client it named), not A's model reused for B.
    import asyncio

    middleware = mw(_session_app, registry)
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        loop_a.run_until_complete(drive(middleware, scope(), orjson.dumps(request(1, "ping"))))
        init = request(1, "initialize", clientInfo={"name": "cat-client", "version": "1"})
        loop_b.run_until_complete(drive(middleware, scope(), orjson.dumps(init)))
        loop_a.close()
        session = scope(headers=[(b"mcp-session-id", b"s1")])
        loop_b.run_until_complete(drive(middleware, session, orjson.dumps(request(2, "ping"))))
    finally:
        loop_b.close()
    client = {"mcp_client_name": "cat-client", "mcp_method_name": "ping", "error_type": ""}
    assert value(registry, "mcp_server_client_operation_duration_seconds_count", **client) == 1
