"""1. Bad input matrix: every input runs bare and wrapped; both sides must see the same thing.

For each input: the app receives the same messages (the very objects), the client receives the
same messages (the very objects the app sent), nothing raises out of the middleware, and the
counters hold exactly the expected values.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware._types import ASGIApp, Receive, Scope, Send
from tests.apps import JSON, SSE, error, request, responder, result, scope, sse_event
from tests.helpers import parse_errors, value
from tests.reliability.harness import compare, figure, op, ops, settled

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # slow: `make reliability` prints the figures

CAP = 4096  # a small max_body_size keeps the "past the cap" inputs small
CALL = orjson.dumps(request(1, "tools/call", name="sharpen_claw", arguments={"level": 7}))
OK = orjson.dumps(result(1, content=[], isError=False))
PARSE_ERROR = orjson.dumps(error(None, -32700, "Parse error"))
INVALID = orjson.dumps(error(None, -32602, "Validation error"))
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


def js(status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = JSON) -> ASGIApp:
    return responder(status, headers, [body], final_empty=False)


def sse(chunks: Sequence[bytes], final_empty: bool = True, status: int = 200) -> ASGIApp:
    return responder(status, SSE, chunks, final_empty=final_empty)


def app_returning_mid_body(headers: Sequence[tuple[bytes, bytes]], chunks: list[bytes]) -> ASGIApp:
    """Starts a response, sends ``chunks`` with more_body=True, then returns (no final chunk)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    return app


def silent_app(read_body: bool) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if read_body:
            await receive()

    return app


def twice_started() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.start", "status": 500, "headers": JSON})
        await send({"type": "http.response.body", "body": OK})

    return app


def body_before_start() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.body", "body": OK})
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": OK})

    return app


def body_after_end() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": OK})
        await send({"type": "http.response.body", "body": orjson.dumps(error(1, -32050))})

    return app


@dataclass
class Case:
    id: str
    app: Callable[[], ASGIApp]
    body: bytes | list[bytes] = CALL
    expect_ops: dict[tuple[str, ...], float] = field(default_factory=dict)
    expect_errors: dict[str, float] = field(default_factory=dict)
    method: str = "POST"
    headers: Sequence[tuple[bytes, bytes]] = ()
    http_status: str = "200"
    options: dict[str, Any] = field(default_factory=dict)


def batch(n: int, method: str = "tools/call", **params: Any) -> list[dict[str, Any]]:
    return [request(i, method, **params) for i in range(n)]


SHARPEN = op("tools/call", "sharpen_claw")
ANY_ID = [
    0,
    -1,
    2**53,
    2**64,  # past 64 bits: orjson reads it as a float, on both sides alike
    1.5,
    "",
    "abc",
    "1",
    None,
    True,
    False,
    {"a": [1, {"b": None}]},
    [1, "1"],
]
DEEP = 2000  # past orjson's nesting limit (1024)
# pydantic_core.from_json, the handshake-era decoder, refuses nesting past 201 levels; the
# request's own objects take three of them.
NESTED_OK = 198
GZ_OK = gzip.compress(OK)
DEFLATED = zlib.compress(OK)
BIG_RESULT = orjson.dumps(result(1, content=[{"type": "text", "text": "x" * (3 * CAP)}]))
GZ_BOMB = gzip.compress(b'{"jsonrpc":"2.0","id":1,"result":{"x":"' + b" " * (64 << 20) + b'"}}')
PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
HUGE_NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "y" * CAP}}


def dumps(obj: Any) -> bytes:
    """Compact JSON via the stdlib (orjson refuses integers past 64 bits)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def ids_body() -> bytes:
    return dumps([request(i, "ping") for i in ANY_ID])


def ids_answer() -> bytes:
    return dumps([result(i) for i in reversed(ANY_ID)])


# 1, "1", 1.0 and true are four different ids; only id 1 gets a tool error back.
TYPED_IDS: list[Any] = [1, "1", 1.0, True]
TYPED_CALLS = orjson.dumps(
    [request(i, "tools/call", name="sharpen_claw", arguments={}) for i in TYPED_IDS]
)
TYPED_ANSWERS = orjson.dumps(
    [result(i, content=[], isError=(type(i) is int)) for i in reversed(TYPED_IDS)]
)

CASES = [
    # -- not JSON, not UTF-8, not JSON-RPC ----------------------------------------------------
    Case(
        "invalid-json",
        lambda: js(400, PARSE_ERROR),
        CALL[:-7],
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    Case(
        "non-utf8-bytes",
        lambda: js(400, PARSE_ERROR),
        b"\xff\xfe\x00\x81garbage",
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    Case(
        "non-utf8-in-string",
        lambda: js(400, PARSE_ERROR),
        b'{"jsonrpc":"2.0","id":1,"method":"ping\xff"}',
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    Case(
        "lone-surrogate-escape",
        lambda: js(400, PARSE_ERROR),
        b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}',
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    Case(
        # pydantic_core reads NaN; a NaN id is no request id, so the SDK's notification model
        # takes the message and answers 202, as it does here.
        "nan-literal",
        lambda: responder(202, [], [], final_empty=True),
        b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
        {op("ping"): 1},
        {},
        http_status="202",
    ),
    Case(
        "json-object-not-rpc",
        lambda: js(400, INVALID),
        b'{"hello":"world"}',
        {},
        {"not_jsonrpc": 1},
        http_status="400",
    ),
    Case(
        "json-array-of-numbers",
        lambda: js(400, INVALID),
        b"[1,2,3]",
        {},
        {"not_jsonrpc": 1},
        http_status="400",
    ),
    Case(
        "json-string",
        lambda: js(400, INVALID),
        b'"tools/call"',
        {},
        {"not_jsonrpc": 1},
        http_status="400",
    ),
    Case("json-number", lambda: js(400, INVALID), b"42", {}, {"not_jsonrpc": 1}, http_status="400"),
    Case("json-null", lambda: js(400, INVALID), b"null", {}, {"not_jsonrpc": 1}, http_status="400"),
    Case(
        "method-not-a-string",
        lambda: js(400, INVALID),
        b'{"jsonrpc":"2.0","id":1,"method":7}',
        {},
        {"not_jsonrpc": 1},
        http_status="400",
    ),
    Case(
        "id-only",
        lambda: js(400, INVALID),
        b'{"jsonrpc":"2.0","id":1}',
        {},
        {"not_jsonrpc": 1},
        http_status="400",
    ),
    Case("empty-batch", lambda: js(400, INVALID), b"[]", {}, {"not_jsonrpc": 1}, http_status="400"),
    Case(
        "batch-with-junk-members",
        lambda: js(200, orjson.dumps([result(1)])),
        orjson.dumps([request(1, "ping"), 5, {"x": 1}]),
        {op("ping"): 1},
        {"not_jsonrpc": 1},
    ),
    Case(
        "client-posts-a-response",  # an elicitation answer: 202, no operation
        lambda: responder(202, [], [], final_empty=True),
        orjson.dumps(result(1, action="accept")),
        {},
        {},
        http_status="202",
    ),
    # -- ids of every JSON type, duplicates ---------------------------------------------------
    Case("ids-of-every-type", lambda: js(200, ids_answer()), ids_body(), {op("ping"): len(ANY_ID)}),
    Case(
        "ids-equal-in-python-distinct-in-json",
        lambda: js(200, TYPED_ANSWERS),
        TYPED_CALLS,
        # 1 and "1" are requests; 1.0 and true are no request ids, so the server reads those
        # two as notifications: acked, and no tool call of sharpen_claw.
        {SHARPEN: 1, op("tools/call", "sharpen_claw", "tool_error"): 1, op("tools/call", "_OTHER"): 2},
    ),
    Case(
        "duplicate-ids-both-answered",
        lambda: js(200, orjson.dumps([result(1), result(1)])),
        orjson.dumps([request(1, "ping"), request(1, "ping")]),
        {op("ping"): 2},
    ),
    Case(
        "duplicate-ids-one-answered",
        lambda: js(200, orjson.dumps([result(1)])),
        orjson.dumps([request(1, "ping"), request(1, "ping")]),
        {op("ping"): 1, op("ping", err="no_response"): 1},
    ),
    Case(
        "answer-with-the-wrong-id-type",
        lambda: js(200, orjson.dumps(result("1"))),
        orjson.dumps(request(1, "ping")),
        {op("ping", err="no_response"): 1},
    ),
    # -- nesting ----------------------------------------------------------------------------------
    Case(
        "request-nested-past-the-limit",
        lambda: js(400, PARSE_ERROR),
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":'
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}}",
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    Case(
        "request-nested-within-the-limit",
        lambda: js(200, OK),
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sharpen_claw","arguments":{"a":'
        + b"[" * NESTED_OK
        + b"]" * NESTED_OK
        + b"}}}",
        {SHARPEN: 1},
    ),
    Case(
        "response-nested-past-the-limit",
        lambda: js(200, b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * DEEP + b"]" * DEEP + b"}"),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"invalid_json": 1},
    ),
    # -- 10,000 requests in one array -----------------------------------------------------------
    Case(
        "batch-of-10000-answered",
        lambda: js(200, orjson.dumps([result(i, content=[]) for i in range(10_000)])),
        orjson.dumps(batch(10_000, name="sharpen_claw")),
        {},  # past MAX_BATCH (100): counted once, not decoded member by member
        {"too_large": 2},  # the request array and the answer array
        options={"max_body_size": 4 << 20},
    ),
    Case(
        "batch-of-10000-rejected-as-the-python-sdk-does",
        lambda: js(400, INVALID),
        orjson.dumps(batch(10_000, name="sharpen_claw")),
        {},
        {"too_large": 1},
        http_status="400",
        options={"max_body_size": 4 << 20},
    ),
    Case(
        "batch-of-10000-notifications",
        lambda: responder(202, [], [], final_empty=True),
        orjson.dumps([PROGRESS] * 10_000),
        {},
        {"too_large": 1},
        http_status="202",
        options={"max_body_size": 4 << 20},
    ),
    # -- empty bodies -----------------------------------------------------------------------------
    Case("empty-body", lambda: js(400, PARSE_ERROR), b"", {}, {}, http_status="400"),
    Case("empty-chunks", lambda: js(400, PARSE_ERROR), [b"", b"", b""], {}, {}, http_status="400"),
    Case(
        "whitespace-body",
        lambda: js(400, PARSE_ERROR),
        b" \r\n\t",
        {},
        {"invalid_json": 1},
        http_status="400",
    ),
    # -- content types ------------------------------------------------------------------------------
    *[
        Case(
            f"response-content-type-{ct.decode()}",
            lambda ct=ct: js(200, OK, [(b"content-type", ct)]),
            CALL,
            {SHARPEN: 1},
        )
        for ct in [
            b"application/json; charset=utf-8",
            b"APPLICATION/JSON",
            b"Application/Json ; Charset=UTF-8",
            b"  application/json",
            b"application/vnd.example+json",
        ]
    ],
    Case(
        "response-content-type-header-name-mixed-case",
        lambda: js(200, OK, [(b"Content-Type", b"application/json")]),
        CALL,
        {SHARPEN: 1},
    ),
    *[
        Case(
            f"sse-content-type-{ct.decode()}",
            lambda ct=ct: responder(200, [(b"content-type", ct)], [sse_event(result(1))]),
            CALL,
            {SHARPEN: 1},
        )
        for ct in [b"text/event-stream; charset=utf-8", b"TEXT/EVENT-STREAM"]
    ],
    Case(
        "json-answer-labelled-text-plain",  # not read: the outcome is unknown
        lambda: js(200, OK, TEXT),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
    ),
    Case(
        "json-answer-without-content-type",
        lambda: js(200, OK, []),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
    ),
    Case(
        "request-content-type-rejected-by-the-app",  # the SDK's 400 text answer
        lambda: js(400, b"Invalid Content-Type header", []),
        CALL,
        {op("tools/call", "_OTHER"): 1},  # refused: a caller error, the name not vouched
        headers=[(b"content-type", b"text/plain")],
        http_status="400",
    ),
    Case(
        "request-content-type-odd-but-accepted",
        lambda: js(200, OK),
        CALL,
        {SHARPEN: 1},
        headers=[(b"content-type", b"APPLICATION/JSON; CHARSET=UTF-8; q=1")],
    ),
    # -- content-encoding: decoded within the cap, else counted -----------------------------------
    Case(
        "gzip-json-answer",
        lambda: js(200, GZ_OK, [*JSON, (b"content-encoding", b"gzip")]),
        CALL,
        {SHARPEN: 1},
    ),
    Case(
        "gzip-upper-case",
        lambda: js(200, GZ_OK, [*JSON, (b"content-encoding", b"GZIP")]),
        CALL,
        {SHARPEN: 1},
    ),
    Case(
        "gzip-split-in-3-byte-chunks",
        lambda: responder(
            200,
            [*JSON, (b"content-encoding", b"gzip")],
            [GZ_OK[i : i + 3] for i in range(0, len(GZ_OK), 3)],
        ),
        CALL,
        {SHARPEN: 1},
    ),
    Case(
        "gzip-sse-answer",
        lambda: responder(
            200,
            [*SSE, (b"content-encoding", b"gzip")],
            [gzip.compress(sse_event(PROGRESS) + sse_event(result(1)))],
        ),
        CALL,
        {SHARPEN: 1},
    ),
    Case(
        "deflate-json-answer",
        lambda: js(200, DEFLATED, [*JSON, (b"content-encoding", b"deflate")]),
        CALL,
        {SHARPEN: 1},
    ),
    Case(
        "gzip-corrupt",
        lambda: js(
            200, b"\x1f\x8b\x08\x00garbage-not-deflate", [*JSON, (b"content-encoding", b"gzip")]
        ),
        CALL,
        {op("tools/call", "_OTHER"): 1},  # the answer is unreadable: outcome and name unknown
        {"encoding": 1},
    ),
    Case(
        "gzip-truncated",
        lambda: js(200, GZ_OK[: len(GZ_OK) // 2], [*JSON, (b"content-encoding", b"gzip")]),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"invalid_json": 1},
    ),
    Case(
        "gzip-bomb-64MiB-inflated",  # decoded only up to the cap, then skipped
        lambda: js(200, GZ_BOMB, [*JSON, (b"content-encoding", b"gzip")]),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        {"too_large": 1},
    ),
    Case(
        "brotli-not-decoded",
        lambda: js(200, b"\x0b\x02\x80", [*JSON, (b"content-encoding", b"br")]),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        {"encoding": 1},
    ),
    Case(
        "gzip-on-text-plain-ignored",
        lambda: js(400, gzip.compress(b"no"), [*TEXT, (b"content-encoding", b"gzip")]),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        http_status="400",
    ),
    Case(
        "gzip-request-body",  # the SDK ignores Content-Encoding and parses the bytes: so do we
        lambda: js(400, PARSE_ERROR),
        gzip.compress(CALL),
        {},
        {"invalid_json": 1},
        headers=[(b"content-encoding", b"gzip")],
        http_status="400",
    ),
    # -- past the size cap -------------------------------------------------------------------------
    Case(
        "sse-event-past-the-cap-then-the-answer",
        lambda: sse([sse_event(HUGE_NOTE), sse_event(result(1, content=[]))]),
        CALL,
        {SHARPEN: 1},
        {"too_large": 1},
    ),
    Case(
        "sse-answer-past-the-cap",  # passed untouched; outcome unknown, so no error type
        lambda: sse([sse_event(orjson.loads(BIG_RESULT))]),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        {"too_large": 1},
    ),
    Case(
        "json-answer-past-the-cap",
        lambda: js(200, BIG_RESULT),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        {"too_large": 1},
    ),
    Case(
        "json-answer-past-the-cap-in-chunks",
        lambda: responder(
            200, JSON, [BIG_RESULT[i : i + 1000] for i in range(0, len(BIG_RESULT), 1000)]
        ),
        CALL,
        {op("tools/call", "_OTHER"): 1},
        {"too_large": 1},
    ),
    Case(
        "request-past-the-cap",
        lambda: js(413, b"Request body too large", TEXT),
        [CALL[:-1] + b" " * CAP, b"}"],
        {},
        {"too_large": 1},
        http_status="413",
    ),
    Case(
        "modern-request-past-the-cap-named-by-headers",
        lambda: js(413, b"Request body too large", TEXT),
        [CALL[:-1] + b" " * CAP, b"}"],
        # Named by its headers, refused with 413: a failure by its status; the header's name
        # is the client's word, and the server refused the request, so it is not a label.
        {op("tools/call", "_OTHER", "413", version="2026-07-28"): 1},
        {"too_large": 1},
        headers=[
            (b"mcp-protocol-version", b"2026-07-28"),
            (b"mcp-method", b"tools/call"),
            (b"mcp-name", b"sharpen_claw"),
        ],
        http_status="413",
    ),
    # -- truncation -----------------------------------------------------------------------------------
    Case(
        "sse-truncated-mid-event",
        lambda: sse([sse_event(PROGRESS), b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"res']),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"truncated": 1},
    ),
    Case(
        "sse-app-returns-mid-event",
        lambda: app_returning_mid_body(SSE, [sse_event(PROGRESS), b"data: {"]),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"truncated": 1},
    ),
    Case(
        "json-truncated",
        lambda: js(200, OK[:-5]),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"invalid_json": 1},
    ),
    Case(
        "json-app-returns-mid-body",
        lambda: app_returning_mid_body(JSON, [OK[:10]]),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        {"truncated": 1},
    ),
    # -- ASGI order ----------------------------------------------------------------------------------
    Case(
        "response-never-starts",
        lambda: silent_app(True),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        http_status="",
    ),
    Case("body-never-read-no-response", lambda: silent_app(False), CALL, {}, http_status=""),
    Case("duplicate-response-start", twice_started, CALL, {SHARPEN: 1}, {"asgi_protocol": 1}),
    Case("body-before-response-start", body_before_start, CALL, {SHARPEN: 1}, {"asgi_protocol": 1}),
    Case("body-after-the-last-chunk", body_after_end, CALL, {SHARPEN: 1}, {"asgi_protocol": 1}),
    # -- HEAD and GET ------------------------------------------------------------------------------------
    Case(
        "head-405",
        lambda: responder(405, [(b"allow", b"GET, POST, DELETE")], [], read_body=False),
        b"",
        {},
        method="HEAD",
        http_status="405",
    ),
    Case(
        "head-200-json-headers-empty-body",
        lambda: responder(200, [*JSON, (b"content-length", b"42")], [], read_body=False),
        b"",
        {},
        method="HEAD",
    ),
    Case(
        "get-with-a-body",  # the app refuses it: counted as the caller's fault
        lambda: js(405, INVALID),
        CALL,
        # The null-id error answers the whole request with 405: refused by the transport.
        {op("tools/call", "_OTHER", "405", code="-32602"): 1},
        method="GET",
        http_status="405",
    ),
    Case(
        "get-stream-with-a-body",
        lambda: sse(
            [
                b": ping\r\n\r\n",
                sse_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            ]
        ),
        CALL,
        {op("tools/call", "sharpen_claw", "no_response"): 1},
        method="GET",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(case: Case, registry: CollectorRegistry) -> None:
    options = {"known_tools": ["sharpen_claw"], "max_body_size": CAP, **case.options}
    req = scope(case.method, headers=case.headers)
    bare, wrapped, mw = await compare(case.app, req, case.body, registry, **options)
    assert wrapped.error is None
    assert ops(registry) == case.expect_ops
    assert parse_errors(registry) == case.expect_errors
    settled(registry)
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method=case.method,
            http_response_status_code=case.http_status,
        )
        == 1
    )


def test_matrix_size() -> None:
    figure(f"bad input matrix: {len(CASES)} inputs, each run bare and wrapped and compared")
