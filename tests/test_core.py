"""The sans-IO core driven by events alone: no ASGI, no event loop, the clock passed in.

Each fault kind from the core issue gets its cases here, read back through the real recorder
with ``registry.get_sample_value``.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetrics
from mcp_metrics_middleware.protocol import outcomes
from mcp_metrics_middleware.protocol.model import ServerModel
from mcp_metrics_middleware.protocol.tables import BoundedTable
from tests.helpers import in_flight_total, op_count, parse_errors, total_ops, value

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream")]


def model(registry: CollectorRegistry, **limits: Any) -> tuple[ServerModel, MCPMetrics]:
    metrics = MCPMetrics(registry)
    metrics.learn_tools(["sharpen_claw", "nap"])
    options: dict[str, Any] = dict(
        max_body_size=4 * 1024 * 1024,
        session_idle_timeout=1800.0,
        max_sessions=100,
        parked_timeout=300.0,
        max_parked=100,
    )
    options.update(limits)
    return ServerModel(metrics, **options), metrics


def call(id_: Any, name: str = "sharpen_claw", **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": {}}, **extra}


def answer(id_: Any, **result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "result": {"content": [], **result}})


def sse(payload: bytes) -> bytes:
    return b"event: message\r\ndata: " + payload + b"\r\n\r\n"


def exchange(
    m: ServerModel,
    body: bytes,
    status: int,
    response_headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    headers: dict[bytes, bytes] | None = None,
    now: float = 0.0,
    method: str = "POST",
) -> None:
    ex = m.http_exchange(now, method, headers or {})
    ex.request_body(now, body, False)
    ex.response_start(now + 0.1, status, response_headers)
    for i, chunk in enumerate(chunks):
        ex.response_body(now + 0.2, chunk, i < len(chunks) - 1)
    if not chunks:
        ex.response_body(now + 0.2, b"", False)
    ex.end(now + 0.3)


# -- the outcome table, row by row -------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (lambda: outcomes.of_result("tools/call", False), ""),
        (lambda: outcomes.of_result("tools/call", True), "tool_error"),
        (lambda: outcomes.of_result("prompts/get", True), ""),  # isError means something only for tools
        (lambda: outcomes.of_error(-32800), ("cancelled", True)),
        (lambda: outcomes.of_error(-32602), ("", False)),
        (lambda: outcomes.of_error(-32020), ("", False)),
        (lambda: outcomes.of_error(-32021), ("", False)),
        (lambda: outcomes.of_error(-32022), ("", False)),
        (lambda: outcomes.of_error(-32603), ("-32603", True)),
        (lambda: outcomes.of_error(-32050), ("-32050", True)),
        (lambda: outcomes.of_error(0), ("0", True)),
        (lambda: outcomes.of_error(None), ("_OTHER", True)),
        (lambda: outcomes.of_status(400), ""),
        (lambda: outcomes.of_status(404), "404"),
        (lambda: outcomes.of_status(421), "421"),
        (lambda: outcomes.of_status(502), "502"),
        (lambda: outcomes.of_status(999), "_OTHER"),
        (lambda: outcomes.of_whole_request_error(-32600, 404), ("404", False)),  # Session not found
        (lambda: outcomes.of_whole_request_error(-32600, 400), ("", False)),  # Missing session ID
        (lambda: outcomes.of_whole_request_error(-32603, 200), ("-32603", False)),
    ],
)
def test_outcome_table(row: Any, expected: Any) -> None:
    assert row() == expected


# -- bounded tables return everything they evict (fault 11) --------------------------------------


def test_bounded_table_returns_replaced_and_evicted_together() -> None:
    table: BoundedTable[int, str] = BoundedTable(2, 10.0)
    assert table.put(1, "a", 0.0) == []
    assert table.put(2, "b", 0.0) == []
    # Key 2 replaced *and* the table full: both leave, both come back.
    assert table.put(2, "c", 0.0) == ["b"]
    assert table.put(3, "d", 0.0) == ["a"]
    assert table.put(3, "e", 0.0) == ["d"]
    assert sorted(v for v, _ in table.expire(20.0)) == ["c", "e"]
    assert len(table) == 0


def test_parked_eviction_records_every_operation(registry: CollectorRegistry) -> None:
    m, _ = model(registry, max_parked=2)
    session = {b"mcp-session-id": b"s1"}
    for id_ in (1, 2, 2):  # the stream closes without an answer each time: parked
        exchange(m, orjson.dumps(call(id_)), 200, SSE, [b"id: 1\r\ndata: \r\n\r\n", b""], session)
    assert total_ops(registry) == 1  # the first id 2, replaced by the second, is recorded at once
    m.expire(1000.0)
    assert op_count(registry, "tools/call", "sharpen_claw", "no_response") == 3
    assert in_flight_total(registry) == 0


# -- caller mistakes are not charged to real tools (fault 5) -------------------------------------


@pytest.mark.parametrize("code", [-32020, -32021, -32022, -32600, -32602])
def test_rejected_calls_do_not_move_a_tools_ratio(registry: CollectorRegistry, code: int) -> None:
    m, _ = model(registry)
    modern = {b"mcp-protocol-version": b"2026-07-28"}
    exchange(m, orjson.dumps(call(1)), 200, JSON, [answer(1, isError=True)], modern)
    for i in range(5):
        err = orjson.dumps({"jsonrpc": "2.0", "id": i + 2, "error": {"code": code, "message": "no"}})
        exchange(m, orjson.dumps(call(i + 2)), 400, JSON, [err], modern)
    tool = total_ops(registry, gen_ai_tool_name="sharpen_claw")
    errors = op_count(registry, "tools/call", "sharpen_claw", "tool_error", version="2026-07-28")
    assert (tool, errors) == (1, 1)  # 100% stays 100%, not 17%
    assert op_count(registry, "tools/call", "_OTHER", "", str(code), version="2026-07-28") == 5


@pytest.mark.parametrize("bad_id", [b"1.0", b"true", b"[1]", b"{}", b"1e0"])
def test_handshake_ids_the_sdk_reads_as_notifications(registry: CollectorRegistry, bad_id: bytes) -> None:
    # pydantic's notification model ignores the invalid id: the SDK answers 202.
    m, _ = model(registry)
    body = b'{"jsonrpc":"2.0","id":' + bad_id + b',"method":"tools/call","params":{"name":"sharpen_claw"}}'
    exchange(m, body, 202, [], [])
    assert op_count(registry, "tools/call", "sharpen_claw", "no_response") == 0
    assert total_ops(registry, gen_ai_tool_name="sharpen_claw") == 0
    assert total_ops(registry) == 1  # one notification, acked
    assert in_flight_total(registry) == 0


def test_modern_ids_the_sdk_rejects(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    modern = {b"mcp-protocol-version": b"2026-07-28"}
    body = b'{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"sharpen_claw"}}'
    err = b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Body must be..."},"id":null}'
    exchange(m, body, 400, JSON, [err], modern)
    assert total_ops(registry) == 0
    assert parse_errors(registry) == {"not_jsonrpc": 1}


# -- amplification (fault 6) and client input reaching internal (fault 7) -------------------------


def test_a_huge_batch_counts_once_with_bounded_work(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    body = orjson.dumps([call(i) for i in range(52_000)])
    tracemalloc.start()
    try:
        exchange(m, body, 400, JSON, [b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}'])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total_ops(registry) == 0
    assert parse_errors(registry) == {"too_large": 1}
    assert peak < 2 * len(body)  # the text of the body, not 52,000 decoded requests


def test_deep_ids_never_reach_internal(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    for depth in (250, 300, 1100):
        body = b'{"jsonrpc":"2.0","id":' + b"[" * depth + b"]" * depth + b',"method":"tools/call"}'
        err = b'{"jsonrpc":"2.0","id":' + b"[" * depth + b"]" * depth + b',"result":{}}'
        exchange(m, body, 200, JSON, [err])
    assert "internal" not in parse_errors(registry)


# -- headers and body name one operation (fault 8), forged names (fault 10) -----------------------


def test_sse_headers_before_the_body_is_read_make_one_operation(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    ex = m.http_exchange(0.0, "POST", {b"mcp-method": b"tools/call", b"mcp-name": b"sharpen_claw"})
    ex.response_start(0.1, 200, SSE)  # the app answers before it reads the body
    ex.request_body(0.2, orjson.dumps(call(7)), False)
    ex.response_body(0.3, sse(answer(7)), False)
    ex.end(0.4)
    assert total_ops(registry) == 1
    assert op_count(registry, "tools/call", "sharpen_claw") == 1


def test_a_forged_header_name_is_never_learned(registry: CollectorRegistry) -> None:
    m, metrics = model(registry, max_body_size=100)
    forged = {b"mcp-method": b"tools/call", b"mcp-name": b"forged_tool"}
    big = orjson.dumps(call(1, "forged_tool", padding="x" * 500))
    ex = m.http_exchange(0.0, "POST", forged)
    ex.request_body(0.0, big, False)  # over our cap: not decoded
    ex.response_start(0.1, 200, JSON)
    ex.response_body(0.2, answer(1), False)
    ex.end(0.3)
    assert op_count(registry, "tools/call", "_OTHER") == 1  # a scrape: every event recorded
    assert "forged_tool" not in metrics.tools


# -- redirects are transport events (fault 2) -----------------------------------------------------


def test_a_redirect_is_not_an_operation(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    exchange(m, orjson.dumps(call(1)), 307, [(b"location", b"/mcp/")], [])
    assert total_ops(registry) == 0
    assert in_flight_total(registry) == 0
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code="307",
        )
        == 1
    )


# -- transport and session rejections are failures by their cause (fault 15) ---------------------


def test_session_not_found_is_a_failure(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    err = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}'
    for i in range(20):
        exchange(m, orjson.dumps(call(i)), 404, JSON, [err], {b"mcp-session-id": b"gone"})
    assert op_count(registry, "tools/call", "_OTHER", "404", "-32600") == 20


# -- multi-round requests (fault 16) --------------------------------------------------------------


def test_input_required_rounds_are_not_calls(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    modern = {b"mcp-protocol-version": b"2026-07-28"}
    exchange(m, orjson.dumps(call(1)), 200, JSON, [answer(1, resultType="input_required")], modern)
    exchange(m, orjson.dumps(call(2)), 200, JSON, [answer(2, resultType="complete")], modern)
    assert total_ops(registry) == 1
    assert op_count(registry, "tools/call", "sharpen_claw", version="2026-07-28") == 1
    assert (
        value(
            registry, "mcp_server_input_required_total", mcp_method_name="tools/call", gen_ai_tool_name="sharpen_claw"
        )
        == 1
    )
    assert in_flight_total(registry) == 0


# -- cancellation noticed by the adapter (fault 3): the model's side ------------------------------


def test_disconnect_cancels_at_its_time_and_a_late_answer_changes_nothing(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    ex = m.http_exchange(0.0, "POST", {})
    ex.request_body(0.0, orjson.dumps(call(1, "nap")), False)
    ex.disconnected(0.3)
    ex.response_start(2.0, 200, JSON)
    ex.response_body(2.0, answer(1), False)
    ex.end(2.0)
    assert op_count(registry, "tools/call", "nap", "cancelled") == 1
    labels = dict(
        mcp_method_name="tools/call",
        gen_ai_tool_name="nap",
        gen_ai_prompt_name="",
        error_type="cancelled",
        rpc_response_status_code="",
        mcp_protocol_version="",
        network_transport="tcp",
    )
    assert value(registry, "mcp_server_operation_duration_seconds_sum", **labels) == pytest.approx(0.3)


# -- expiry is driven by time alone (fault 4): the model's side -----------------------------------


def test_sessions_and_parked_operations_expire_without_traffic(registry: CollectorRegistry) -> None:
    m, _ = model(registry, session_idle_timeout=1.0, parked_timeout=1.0)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "c", "version": "1"}}}
    result = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25"}})
    exchange(m, orjson.dumps(init), 200, [*JSON, (b"mcp-session-id", b"s1")], [result])
    exchange(m, orjson.dumps(call(2)), 200, SSE, [b""], {b"mcp-session-id": b"s1"}, now=0.5)
    assert value(registry, "mcp_server_sessions_active") == 1
    assert m.next_deadline() == pytest.approx(1.7)  # the stream ended at 0.7; parked for 1 s
    m.expire(5.0)
    assert value(registry, "mcp_server_sessions_active") == 0
    assert op_count(registry, "tools/call", "sharpen_claw", "no_response") == 1
    assert m.next_deadline() is None


# -- stdio ------------------------------------------------------------------------------------------


def test_pipe_records_both_directions(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"clientInfo": {"name": "host", "version": "2"}},
    }
    pipe.client_bytes(0.0, orjson.dumps(init) + b"\n")
    pipe.server_bytes(
        0.1, orjson.dumps({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-11-25"}}) + b"\n"
    )
    pipe.client_bytes(0.2, orjson.dumps(call(1)) + b"\n" + orjson.dumps(call(2, "nap")) + b"\n")
    pipe.server_bytes(0.3, b"garbage on stdout\n")
    pipe.server_bytes(0.4, answer(1, isError=True) + b"\n")
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}}
    pipe.client_bytes(0.5, orjson.dumps(cancel) + b"\n" + orjson.dumps(call(3)) + b"\n")
    pipe.end(0.6)
    pipe_ops = dict(transport="pipe")
    assert op_count(registry, "initialize", version="2025-11-25", **pipe_ops) == 1
    assert op_count(registry, "tools/call", "sharpen_claw", "tool_error", version="2025-11-25", **pipe_ops) == 1
    assert op_count(registry, "tools/call", "nap", "cancelled", version="2025-11-25", **pipe_ops) == 1
    assert op_count(registry, "tools/call", "sharpen_claw", "no_response", version="2025-11-25", **pipe_ops) == 1
    assert parse_errors(registry) == {"invalid_json": 1}
    assert value(registry, "mcp_server_sessions_active") == 0
    assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2025-11-25") == 1
    assert in_flight_total(registry) == 0


def test_pipe_in_the_2026_era_has_a_version_and_a_session(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "c"},
    }
    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}
    pipe.client_bytes(0.0, orjson.dumps(discover) + b"\n")
    pipe.server_bytes(0.1, answer(1) + b"\n")
    assert value(registry, "mcp_server_sessions_active") == 1
    pipe.end(1.0)
    assert op_count(registry, "server/discover", version="2026-07-28", transport="pipe") == 1
    assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2026-07-28") == 1


@pytest.mark.parametrize("body", [b"{nope", b'{"jsonrpc":"2.0","id":1.5,"method":"tools/call"}', b"[]"])
def test_an_unreadable_body_falls_back_to_the_method_header(registry: CollectorRegistry, body: bytes) -> None:
    m, _ = model(registry)
    headers = {b"mcp-protocol-version": b"2026-07-28", b"mcp-method": b"tools/call", b"mcp-name": b"sharpen_claw"}
    err = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    exchange(m, body, 400, JSON, [err], headers)
    # One operation of the method the headers named; refused, so the name is not a label.
    assert op_count(registry, "tools/call", "_OTHER", "", "-32700", version="2026-07-28") == 1
    assert total_ops(registry) == 1


# -- found in review: junk must not dilute calls that carry a tool label -----------------------


@pytest.mark.parametrize(
    ("body", "era", "status"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}', {}, 200),
        (b'{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"sharpen_claw"}}', {}, 202),
        (b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"sharpen_claw"}}', {}, 202),
        (b'{"jsonrpc":"2.0","id":1,"method":"prompts/get"}', {}, 200),
    ],
)
def test_calls_without_a_vouched_name_are_other(
    registry: CollectorRegistry, body: bytes, era: dict[bytes, bytes], status: int
) -> None:
    m, _ = model(registry)
    err = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid request parameters"}}'
    exchange(m, body, status, JSON if status == 200 else [], [err] if status == 200 else [], era)
    assert total_ops(registry) == 1
    label = "gen_ai_prompt_name" if b"prompts/get" in body else "gen_ai_tool_name"
    assert total_ops(registry, **{label: "_OTHER"}) == 1


def test_a_request_with_content_encoding_is_read_as_the_server_reads_it(registry: CollectorRegistry) -> None:
    # The SDK ignores Content-Encoding: a plain body naming one tool, with a header naming
    # another, is a call of the body's tool (here unknown, so _OTHER), never the header's.
    m, _ = model(registry)
    headers = {b"content-encoding": b"gzip", b"mcp-method": b"tools/call", b"mcp-name": b"sharpen_claw"}
    exchange(m, orjson.dumps(call(1, "summon_dog")), 200, JSON, [answer(1, isError=True)], headers)
    assert op_count(registry, "tools/call", "_OTHER", "tool_error") == 1
    assert op_count(registry, "tools/call", "sharpen_claw", "tool_error") == 0


@pytest.mark.parametrize("era", [b"2025-11-25", b""])
def test_handshake_headers_never_name_a_tool(registry: CollectorRegistry, era: bytes) -> None:
    m, _ = model(registry, max_body_size=200)  # the request is over it, the answer is not
    headers = {b"mcp-method": b"tools/call", b"mcp-name": b"sharpen_claw"}
    if era:
        headers[b"mcp-protocol-version"] = era
    exchange(m, orjson.dumps(call(1, "summon_dog", pad="x" * 300)), 200, JSON, [answer(1, isError=True)], headers)
    assert op_count(registry, "tools/call", "_OTHER", "tool_error", version=era.decode()) == 1


def test_a_repeated_header_is_read_first_wins(registry: CollectorRegistry) -> None:
    from mcp_metrics_middleware.middleware import first_wins

    headers = first_wins([(b"mcp-protocol-version", b"2025-11-25"), (b"mcp-protocol-version", b"2026-07-28")])
    assert headers[b"mcp-protocol-version"] == b"2025-11-25"  # Starlette's Headers.get
    m, _ = model(registry)
    body = b'{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"nap"}}'
    exchange(m, body, 202, [], [], {**headers, b"mcp-method": b"tools/call", b"mcp-name": b"nap"})
    assert op_count(registry, "tools/call", "nap", "no_response", version="2025-11-25") == 0
    assert total_ops(registry, error_type="no_response") == 0


def test_a_gzip_stream_inflating_past_the_cap_keeps_its_answer(registry: CollectorRegistry) -> None:
    import zlib

    m, _ = model(registry, max_body_size=64 * 1024)
    progress = sse(b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}')
    stream = progress * 20_000 + sse(answer(1, isError=True))  # about 2 MiB, 32x the cap
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    gz = packer.compress(stream) + packer.flush()
    exchange(m, orjson.dumps(call(1)), 200, [*SSE, (b"content-encoding", b"gzip")], [gz, b""])
    assert op_count(registry, "tools/call", "sharpen_claw", "tool_error") == 1
    sent = value(
        registry,
        "mcp_server_messages_total",
        direction="sent",
        message_type="notification",
        mcp_method_name="notifications/progress",
    )
    assert sent == 20_000
    assert parse_errors(registry) == {}


def test_pipe_reused_ids_are_answered_in_order(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    pipe.client_bytes(0.0, orjson.dumps(call(1)) + b"\n" + orjson.dumps(call(1, "nap")) + b"\n")
    pipe.server_bytes(0.1, answer(1) + b"\n" + answer(1, isError=True) + b"\n")
    pipe.end(0.2)
    assert op_count(registry, "tools/call", "sharpen_claw", transport="pipe") == 1
    assert op_count(registry, "tools/call", "nap", "tool_error", transport="pipe") == 1
    assert total_ops(registry, error_type="no_response") == 0


@pytest.mark.parametrize(
    ("state", "kept"),
    [("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", True), ("x" * 600, False), ("bad\nline", False), (7, False)],
)
def test_tracestate_travels_with_a_valid_traceparent(registry: CollectorRegistry, state: Any, kept: bool) -> None:
    m, _ = model(registry)
    seen: list[Any] = []
    m.observer.operation_finished = lambda op: seen.append(op.tracestate)  # type: ignore[method-assign]
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for meta in ({"traceparent": parent, "tracestate": state}, {"traceparent": "junk", "tracestate": state}):
        exchange(
            m, orjson.dumps(call(1, _meta=meta) | {"params": {"name": "nap", "_meta": meta}}), 200, JSON, [answer(1)]
        )
    assert seen == [state if kept else None, None]


def test_pipe_fallback_from_2026_to_initialize(registry: CollectorRegistry) -> None:
    # A 2026-07-28 client against an older stdio server: server/discover is refused, then the
    # client initializes. The refused request keeps its own version; the rest use the negotiated.
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    pipe.client_bytes(
        0.0, orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}) + b"\n"
    )
    pipe.server_bytes(0.1, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}\n')
    pipe.client_bytes(0.2, orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {}}) + b"\n")
    pipe.server_bytes(
        0.3, orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"protocolVersion": "2025-11-25"}}) + b"\n"
    )
    pipe.client_bytes(0.4, orjson.dumps(call(3)) + b"\n")
    pipe.server_bytes(0.5, answer(3) + b"\n")
    pipe.end(1.0)
    assert op_count(registry, "server/discover", "", "", "-32601", "2026-07-28", transport="pipe") == 1
    assert op_count(registry, "tools/call", "sharpen_claw", version="2025-11-25", transport="pipe") == 1
    assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2025-11-25") == 1


# -- the same records however the response is chunked ------------------------------------------
# The model takes whole SDK-framed events and one-message JSON bodies without a decoder, and
# hands over to the decoder at the first chunk that needs one. Every way of cutting a stream
# must give the records of the whole stream.

PROGRESS = orjson.dumps(
    {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
)
LOG = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}})
ANSWER = answer(1)


def response_bytes(registry: CollectorRegistry) -> float:
    labels = {"direction": "response", "mcp_method_name": "tools/call", "gen_ai_tool_name": "sharpen_claw"}
    return value(registry, "mcp_server_operation_payload_bytes_sum", **labels)


def _cuts(events: list[bytes]) -> dict[str, list[bytes]]:
    stream = b"".join(events)
    third = len(stream) // 3
    mixed = [*events[:2], events[2][:7], events[2][7:], *events[3:]] if len(events) > 2 else events
    return {
        "whole events": events,
        "one chunk": [stream],
        "bytes": [stream[i : i + 1] for i in range(len(stream))],
        "thirds": [stream[:third], stream[third : 2 * third], stream[2 * third :]],
        # Whole events, then a split one, then whole events again: the decoder takes over mid-stream.
        "whole, split, whole": mixed,
        "empty chunks between": [piece for event in events for piece in (event, b"")],
    }


@pytest.mark.parametrize(
    "cut", ["whole events", "one chunk", "bytes", "thirds", "whole, split, whole", "empty chunks between"]
)
def test_sse_records_do_not_depend_on_chunking(registry: CollectorRegistry, cut: str) -> None:
    m, _ = model(registry)
    events = [b"event: message\r\ndata: \r\n\r\n", sse(PROGRESS), sse(LOG), sse(PROGRESS), sse(ANSWER)]
    exchange(m, orjson.dumps(call(1)), 200, SSE, [*_cuts(events)[cut], b""])
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert total_ops(registry) == 1
    assert parse_errors(registry) == {}
    sent = "mcp_server_messages_total"
    assert (
        value(registry, sent, direction="sent", message_type="notification", mcp_method_name="notifications/progress")
        == 2
    )
    assert (
        value(registry, sent, direction="sent", message_type="notification", mcp_method_name="notifications/message")
        == 1
    )
    assert value(registry, sent, direction="sent", message_type="response", mcp_method_name="tools/call") == 1
    assert response_bytes(registry) == len(ANSWER)
    assert in_flight_total(registry) == 0


@pytest.mark.parametrize("cut", ["one chunk", "bytes", "thirds", "empty chunks between"])
def test_json_records_do_not_depend_on_chunking(registry: CollectorRegistry, cut: str) -> None:
    m, _ = model(registry)
    exchange(m, orjson.dumps(call(1)), 200, JSON, [*_cuts([ANSWER])[cut], b""])
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert total_ops(registry) == 1
    assert parse_errors(registry) == {}
    assert response_bytes(registry) == len(ANSWER)


def test_an_oversized_whole_event_goes_to_the_decoder_and_is_counted(registry: CollectorRegistry) -> None:
    m, _ = model(registry, max_body_size=200)
    big = sse(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"' + b"x" * 300 + b'"}}')
    exchange(m, orjson.dumps(call(1)), 200, SSE, [sse(PROGRESS), big, sse(ANSWER), b""])
    assert parse_errors(registry) == {"too_large": 1}
    assert op_count(registry, "tools/call", "sharpen_claw") == 1  # the answer after it still counts


@pytest.mark.parametrize("kind", ["json", "json in chunks", "sse", "text"])
def test_a_body_never_read_is_one_operation_by_its_headers(registry: CollectorRegistry, kind: str) -> None:
    # A 2026-07-28 request refused before the app read its body (a Host check, say), answered
    # with a body that holds no JSON-RPC message: the one operation its headers named.
    m, _ = model(registry)
    headers = {b"mcp-protocol-version": b"2026-07-28", b"mcp-method": b"tools/call", b"mcp-name": b"nap"}
    body = b'{"detail": "Invalid Host header"}'
    ex = m.http_exchange(0.0, "POST", headers)
    content_type = {"sse": SSE, "text": [(b"content-type", b"text/plain")]}.get(kind, JSON)
    ex.response_start(0.1, 421, content_type)
    if kind == "json in chunks":
        ex.response_body(0.2, body[:5], True)
        ex.response_body(0.2, body[5:], True)
        ex.response_body(0.2, b"", False)
    else:
        ex.response_body(0.2, sse(body) if kind == "sse" else body, False)
    ex.end(0.3)
    assert total_ops(registry) == 1
    assert op_count(registry, "tools/call", "_OTHER", "421", version="2026-07-28") == 1
    assert in_flight_total(registry) == 0


# -- the recorder folds queued events: a scrape sees every one ----------------------------------


def test_a_scrape_sees_every_event_before_any_fold(registry: CollectorRegistry) -> None:
    m, metrics = model(registry)
    exchange(m, orjson.dumps(call(1)), 200, JSON, [answer(1)])
    assert len(metrics._events) == 3  # started, finished, the HTTP request: none recorded yet
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code="200",
        )
        == 1
    )
    assert len(metrics._events) == 0


def test_the_serving_thread_folds_every_fold_at_events(registry: CollectorRegistry) -> None:
    from mcp_metrics_middleware.metrics import _FOLD_AT

    m, metrics = model(registry)
    for i in range(_FOLD_AT):  # three events each
        exchange(m, orjson.dumps(call(i)), 200, JSON, [answer(i)])
    assert len(metrics._events) < _FOLD_AT
    folded = metrics.store.operations  # read without a scrape
    assert sum(row[-2] + sum(row[:-2]) for row in folded.values()) >= _FOLD_AT


def test_an_event_that_fails_to_record_is_counted_and_the_rest_recorded(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, metrics = model(registry)
    calls = 0
    real = metrics._on_http

    def flaky(item: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug of ours")
        real(item)

    monkeypatch.setattr(metrics, "_on_http", flaky)
    exchange(m, orjson.dumps(call(1)), 200, JSON, [answer(1)])
    exchange(m, orjson.dumps(call(2)), 200, JSON, [answer(2)])
    assert parse_errors(registry) == {"internal": 1}
    assert op_count(registry, "tools/call", "sharpen_claw") == 2  # the events after it, recorded
    http = {"http_request_method": "POST", "http_response_status_code": "200"}
    assert value(registry, "mcp_http_server_request_duration_seconds_count", **http) == 1


# -- what the recorder queues: final operations that hold only bounded values -------------------


@pytest.mark.parametrize("scrape_between", [False, True])
def test_a_body_read_after_the_answer_changes_nothing_recorded(
    registry: CollectorRegistry, scrape_between: bool
) -> None:
    # The server answered before it read the body: the operation finished named by its headers
    # alone. Reading the body later must not make its name vouched, whenever the recorder folds.
    m, metrics = model(registry)
    headers = {b"mcp-protocol-version": b"2026-07-28", b"mcp-method": b"tools/call", b"mcp-name": b"hdr_tool"}
    ex = m.http_exchange(0.0, "POST", headers)
    ex.response_start(0.1, 200, JSON)
    ex.response_body(0.2, answer(1), False)
    if scrape_between:
        list(registry.collect())
    ex.request_body(0.25, orjson.dumps(call(1, "body_tool")), False)
    ex.end(0.3)
    assert op_count(registry, "tools/call", "_OTHER", version="2026-07-28") == 1
    assert total_ops(registry) == 1
    assert "body_tool" not in metrics.tools
    assert _messages(registry, "received", "request") == 1
    request_sizes = {"direction": "request", "mcp_method_name": "tools/call"}
    assert value(registry, "mcp_server_operation_payload_bytes_count", **request_sizes, gen_ai_tool_name="_OTHER") == 0
    assert (
        value(registry, "mcp_server_operation_payload_bytes_count", **request_sizes, gen_ai_tool_name="body_tool") == 0
    )


def test_finished_operations_are_not_kept_alive_by_the_queue(registry: CollectorRegistry) -> None:
    m, metrics = model(registry)
    blob = "A" * (1 << 20)
    tracemalloc.start()
    try:
        for i in range(20):  # one request at a time, each finished; fewer events than a fold
            body = orjson.dumps(call(i) | {"params": {"name": "nap", "_meta": {"x": blob}}})
            exchange(m, body, 200, JSON, [answer(i)])
            del body
        assert 0 < len(metrics._events) < 256  # nothing folded yet
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * 1024 * 1024  # not 20 MiB of params._meta


def test_the_operation_log_has_a_line_for_each_operation_recorded(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    m, _ = model(registry)
    caplog.set_level("INFO", logger="mcp_metrics")
    pipe = m.pipe(0.0)  # a server-to-client request over stdio: not an operation of the server
    pipe.server_line(0.1, b'{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}')
    pipe.client_line(0.2, b'{"jsonrpc":"2.0","id":"s1","result":{"role":"assistant","content":{}}}')
    round_ = orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": {"resultType": "input_required", "content": []}})
    exchange(m, orjson.dumps(call(7)), 200, JSON, [round_], {b"mcp-protocol-version": b"2026-07-28"})
    assert [r.mcp_method_name for r in caplog.records] == []  # type: ignore[attr-defined]
    exchange(m, orjson.dumps(call(8)), 200, JSON, [answer(8)])
    assert [r.mcp_method_name for r in caplog.records] == ["tools/call"]  # type: ignore[attr-defined]


def _held_by_twenty_calls(m: ServerModel, metrics: MCPMetrics, transport: str, message: dict[str, Any]) -> int:
    """Bytes still allocated after 20 answered calls of ``message`` (fresh ids), none folded yet."""
    pipe = m.pipe(0.0) if transport == "pipe" else None
    tracemalloc.start()
    try:
        for i in range(20):
            body = orjson.dumps(message | {"jsonrpc": "2.0", "id": i})
            if pipe is None:
                exchange(m, body, 200, JSON, [answer(i)])
            else:
                pipe.client_bytes(0.0, body + b"\n")
                pipe.server_bytes(0.1, answer(i) + b"\n")
            del body
        assert 0 < len(metrics._events) < 256  # nothing folded yet
        return int(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["tools/call", "prompts/get"])
@pytest.mark.parametrize("transport", ["tcp", "pipe"])
def test_long_names_are_not_kept_alive_by_the_queue(registry: CollectorRegistry, method: str, transport: str) -> None:
    m, metrics = model(registry)
    label = "gen_ai_tool_name" if method == "tools/call" else "gen_ai_prompt_name"
    held = _held_by_twenty_calls(m, metrics, transport, {"method": method, "params": {"name": "n" * (1 << 20)}})
    assert held < 2 * 1024 * 1024
    assert total_ops(registry, mcp_method_name=method, **{label: "_OTHER"}) == 20
    assert value(registry, "mcp_metrics_label_overflow_total", label=label) == 20


@pytest.mark.parametrize("transport", ["tcp", "pipe", "2026-07-28 meta"])
def test_client_info_past_4096_characters_is_kept_as_a_marker(registry: CollectorRegistry, transport: str) -> None:
    # A session keeps its clientInfo for its whole life, up to max_sessions of them: a megabyte
    # name must not be kept, and must never become a label.
    from mcp_metrics_middleware.protocol.jsonrpc import MAX_KEPT

    m, _ = model(registry)
    info = {"name": "n" * (1 << 20), "version": "v" * (MAX_KEPT + 1)}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": info}}
    negotiated = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25"}})
    if transport == "tcp":
        exchange(m, orjson.dumps(init), 200, [*JSON, (b"mcp-session-id", b"s1")], [negotiated])
        session = m.sessions.get("s1")
        exchange(m, orjson.dumps(call(2)), 200, JSON, [answer(2)], {b"mcp-session-id": b"s1"})
    elif transport == "pipe":
        pipe = m.pipe(0.0)
        pipe.client_bytes(0.0, orjson.dumps(init) + b"\n")
        pipe.server_bytes(0.1, negotiated + b"\n")
        pipe.client_bytes(0.2, orjson.dumps(call(2)) + b"\n")
        pipe.server_bytes(0.3, answer(2) + b"\n")
        session = pipe.session
    else:
        meta = {"io.modelcontextprotocol/clientInfo": info, "io.modelcontextprotocol/protocolVersion": "2026-07-28"}
        body = call(2) | {"params": {"name": "sharpen_claw", "arguments": {}, "_meta": meta}}
        exchange(m, orjson.dumps(body), 200, JSON, [answer(2)], {b"mcp-protocol-version": b"2026-07-28"})
        session = None
    if session is not None:
        assert session.client_name is not None and len(session.client_name) < 64
        assert session.client_version is not None and len(session.client_version) < 64
    client_count = "mcp_server_client_operation_duration_seconds_count"
    labels = {"mcp_method_name": "tools/call", "error_type": ""}
    assert value(registry, client_count, mcp_client_name="_OTHER", **labels) == 1


def test_a_finished_record_is_final(registry: CollectorRegistry) -> None:
    # What an observer was handed when an operation finished never changes afterwards, even
    # when the body that named it is read later (any observer may keep the record).
    finished: list[Any] = []
    metrics = MCPMetrics(registry)

    class Keeping:
        def __getattr__(self, name: str) -> Any:
            return getattr(metrics, name)

        def operation_finished(self, op: Any) -> None:
            finished.append((op, op.name, op.name_from_header, op.request_size))
            metrics.operation_finished(op)

    m = ServerModel(
        Keeping(), max_body_size=1 << 20, session_idle_timeout=60.0, max_sessions=10, parked_timeout=60.0, max_parked=10
    )
    headers = {b"mcp-protocol-version": b"2026-07-28", b"mcp-method": b"tools/call", b"mcp-name": b"hdr_tool"}
    ex = m.http_exchange(0.0, "POST", headers)
    ex.response_start(0.1, 200, JSON)
    ex.response_body(0.2, answer(1), False)
    ex.request_body(0.25, orjson.dumps(call(1, "body_tool")), False)
    ex.end(0.3)
    [(op, name, from_header, size)] = finished
    assert (op.name, op.name_from_header, op.request_size) == (name, from_header, size) == ("hdr_tool", True, 0)


def _messages(registry: CollectorRegistry, direction: str, message_type: str) -> float:
    labels = {"direction": direction, "message_type": message_type, "mcp_method_name": "tools/call"}
    return value(registry, "mcp_server_messages_total", **labels)


@pytest.mark.parametrize("scrape_between", [False, True])
@pytest.mark.parametrize("status", [200, 307])
def test_a_start_folded_after_its_finish_is_counted_the_same(
    registry: CollectorRegistry, scrape_between: bool, status: int
) -> None:
    # Most starts are folded after their operation finished: the gauge is then never moved, and
    # the request message is counted with the finish. A scrape in between folds the start while
    # the operation is in flight. The totals must not depend on which happened.
    m, _ = model(registry)
    ex = m.http_exchange(0.0, "POST", {})
    ex.request_body(0.1, orjson.dumps(call(1)), False)
    if scrape_between:
        assert in_flight_total(registry) == 1
    ex.response_start(0.2, status, JSON if status == 200 else [(b"location", b"/mcp/")])
    ex.response_body(0.3, answer(1) if status == 200 else b"", False)
    ex.end(0.4)
    assert in_flight_total(registry) == 0
    assert _messages(registry, "received", "request") == 1
    if status == 200:
        assert op_count(registry, "tools/call", "sharpen_claw") == 1
        assert _messages(registry, "sent", "response") == 1
    else:  # a redirect withdraws the operation: its request still arrived
        assert total_ops(registry) == 0


def test_in_flight_counts_only_the_operations_still_open_at_a_scrape(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    exchanges = [m.http_exchange(0.0, "POST", {}) for _ in range(3)]
    for i, ex in enumerate(exchanges):
        ex.request_body(0.1, orjson.dumps(call(i)), False)
    for i, ex in enumerate(exchanges[:2]):
        ex.response_start(0.2, 200, JSON)
        ex.response_body(0.3, answer(i), False)
        ex.end(0.4)
    assert in_flight_total(registry) == 1  # the third, folded while open
    exchanges[2].response_start(0.5, 200, JSON)
    exchanges[2].response_body(0.6, answer(2), False)
    exchanges[2].end(0.7)
    assert in_flight_total(registry) == 0
    assert _messages(registry, "received", "request") == 3
    assert op_count(registry, "tools/call", "sharpen_claw") == 3


def test_a_long_protocol_version_in_meta_is_kept_as_a_marker(registry: CollectorRegistry) -> None:
    # Over stdio each 2026-07-28 request names its version in _meta: a client's string, kept
    # bounded (a queued operation holds it until the fold) and never a label.
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    meta = {"io.modelcontextprotocol/protocolVersion": "9" * (1 << 20)}
    body = orjson.dumps(call(1) | {"params": {"name": "sharpen_claw", "_meta": meta}})
    pipe.client_bytes(0.0, body + b"\n")
    pipe.server_bytes(0.1, answer(1) + b"\n")
    assert op_count(registry, "tools/call", "sharpen_claw", version="_OTHER", transport="pipe") == 1
    assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_protocol_version") == 1


@pytest.mark.parametrize("cut", [[], [0], [1], [5, 5], [10, 20], [-1], "bytes"])
def test_a_request_body_in_pieces_is_read_as_one(registry: CollectorRegistry, cut: Any) -> None:
    m, _ = model(registry)
    body = orjson.dumps(call(1))
    points = list(range(1, len(body))) if cut == "bytes" else [p % len(body) for p in cut]
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    ex = m.http_exchange(0.0, "POST", {})
    for piece in pieces[:-1]:
        ex.request_body(0.1, piece, True)
    ex.request_body(0.1, pieces[-1], False)
    ex.request_body(0.1, b"ignored: the body already ended", False)
    ex.response_start(0.2, 200, JSON)
    ex.response_body(0.3, answer(1), False)
    ex.end(0.4)
    assert op_count(registry, "tools/call", "sharpen_claw") == 1
    assert value(registry, "mcp_server_operation_payload_bytes_sum", direction="request",
                 mcp_method_name="tools/call", gen_ai_tool_name="sharpen_claw") == len(body)
    assert parse_errors(registry) == {}


@pytest.mark.parametrize("pieces", [1, 3])
def test_a_request_body_over_the_cap_is_not_decoded(registry: CollectorRegistry, pieces: int) -> None:
    m, _ = model(registry, max_body_size=50)
    body = orjson.dumps(call(1, "n" * 60))
    ex = m.http_exchange(0.0, "POST", {b"mcp-method": b"tools/call"})
    step = -(-len(body) // pieces)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    for i, chunk in enumerate(chunks):
        ex.request_body(0.1, chunk, i < len(chunks) - 1)
    ex.response_start(0.2, 200, JSON)
    ex.response_body(0.3, answer(1), False)
    ex.end(0.4)
    assert parse_errors(registry) == {"too_large": 1}
    assert op_count(registry, "tools/call", "_OTHER") == 1  # named by its header only


# -- review findings: late answers, zero-valued gauges --------------------------------------------


@pytest.mark.parametrize("fold_between", [False, True])
@pytest.mark.parametrize("case", ["input_required", "initialize", "tools/list"])
def test_a_late_answer_changes_nothing_the_finish_recorded(
    registry: CollectorRegistry, fold_between: bool, case: str
) -> None:
    # The client left (cancelled); the app answered anyway. The record was final at the
    # cancellation, whether or not a fold ran before the answer.
    m, metrics = model(registry)
    if case == "input_required":
        headers = {b"mcp-protocol-version": b"2026-07-28"}
        body, late = call(1), {"resultType": "input_required", "content": []}
    elif case == "initialize":
        headers = {b"mcp-protocol-version": b"2025-03-26"}
        body, late = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, {"protocolVersion": "2031-01-01"}
    else:  # what a late answer teaches is still learned
        headers = {b"mcp-protocol-version": b"2025-11-25"}
        body, late = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"tools": [{"name": "late_tool"}]}
    ex = m.http_exchange(0.0, "POST", headers)
    ex.request_body(0.0, orjson.dumps(body), False)
    ex.disconnected(1.0)
    if fold_between:
        metrics.fold()
    ex.response_start(2.0, 200, JSON)
    ex.response_body(2.0, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": late}), False)
    ex.end(2.0)
    if case == "input_required":
        assert op_count(registry, "tools/call", "sharpen_claw", "cancelled", version="2026-07-28") == 1
        assert value(registry, "mcp_server_input_required_total", mcp_method_name="tools/call",
                     gen_ai_tool_name="sharpen_claw") == 0
    elif case == "initialize":
        assert op_count(registry, "initialize", error_type="cancelled", version="2025-03-26") == 1
        assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_protocol_version") == 0
    else:
        assert op_count(registry, "tools/list", error_type="cancelled", version="2025-11-25") == 1
        assert "late_tool" in metrics.tools
    assert total_ops(registry) == 1
    assert in_flight_total(registry) == 0


@pytest.mark.parametrize("scrape_between", [False, True])
@pytest.mark.parametrize(
    ("name", "status", "series"),
    [
        ("sharpen_claw", 200, ("tools/call", "sharpen_claw")),
        ("not_a_tool", 200, ("tools/call", "_OTHER")),
        ("sharpen_claw", 307, ("tools/call", "sharpen_claw")),
    ],
)
def test_the_in_flight_series_is_shown_at_zero_however_the_start_was_folded(
    registry: CollectorRegistry, scrape_between: bool, name: str, status: int, series: tuple[str, str]
) -> None:
    m, _ = model(registry)
    ex = m.http_exchange(0.0, "POST", {})
    ex.request_body(0.1, orjson.dumps(call(1, name)), False)
    if scrape_between:
        list(registry.collect())
    ex.response_start(0.2, status, JSON if status == 200 else [(b"location", b"/mcp/")])
    ex.response_body(0.3, answer(1) if status == 200 else b"", False)
    ex.end(0.4)
    labels = {"mcp_method_name": series[0], "gen_ai_tool_name": series[1]}
    assert registry.get_sample_value("mcp_server_operations_in_flight", labels) == 0.0
    assert in_flight_total(registry) == 0


@pytest.mark.parametrize("transport", ["tcp", "pipe"])
def test_long_methods_are_not_kept_alive_by_the_queue(registry: CollectorRegistry, transport: str) -> None:
    m, metrics = model(registry)
    held = _held_by_twenty_calls(m, metrics, transport, {"method": "m" * (1 << 20)})
    assert held < 2 * 1024 * 1024
    assert total_ops(registry, mcp_method_name="_OTHER") == 20
    assert value(registry, "mcp_metrics_label_overflow_total", label="mcp_method_name") == 20


def test_a_long_stdio_meta_protocol_version_is_kept_as_a_marker_for_the_session(registry: CollectorRegistry) -> None:
    m, _ = model(registry)
    pipe = m.pipe(0.0)
    meta = {"io.modelcontextprotocol/protocolVersion": "9" * (1 << 20)}
    pipe.client_bytes(0.0, orjson.dumps(call(1) | {"params": {"name": "sharpen_claw", "_meta": meta}}) + b"\n")
    pipe.server_bytes(0.1, answer(1) + b"\n")
    from mcp_metrics_middleware.protocol.jsonrpc import TOO_LONG

    assert pipe.version == TOO_LONG


# -- the recorder keeps decisions that changed no policy state ----------------------------------


def _calls(m: ServerModel, n: int, name: str = "sharpen_claw", **headers: bytes) -> None:
    hdrs = {k.replace("_", "-").encode(): v for k, v in headers.items()}
    for i in range(n):
        exchange(m, orjson.dumps(call(i, name)), 200, JSON, [answer(i)], hdrs)


def test_a_kept_decision_records_the_same_numbers(registry: CollectorRegistry) -> None:
    m, metrics = model(registry)
    _calls(m, 5)
    metrics.fold()
    assert len(metrics._resolved) == 1  # five operations decided alike: one decision kept
    _calls(m, 5)
    assert op_count(registry, "tools/call", "sharpen_claw") == 10
    assert _messages(registry, "received", "request") == 10
    assert _messages(registry, "sent", "response") == 10
    sizes = {"direction": "request", "mcp_method_name": "tools/call", "gen_ai_tool_name": "sharpen_claw"}
    assert value(registry, "mcp_server_operation_payload_bytes_count", **sizes) == 10
    client = {"mcp_client_name": "", "mcp_method_name": "tools/call", "error_type": ""}
    assert value(registry, "mcp_server_client_operation_duration_seconds_count", **client) == 10


@pytest.mark.parametrize(
    ("name", "headers", "overflow"),
    [
        ("not_listed", {}, ("gen_ai_tool_name", "tools/call", "_OTHER")),  # admitted once, then known
        ("sharpen_claw", {"mcp_protocol_version": b"1999-01-01"}, ("mcp_protocol_version", "tools/call", "sharpen_claw")),
    ],
)
def test_a_decision_that_counted_an_overflow_or_admitted_a_name_is_not_kept(
    registry: CollectorRegistry, name: str, headers: dict[str, bytes], overflow: tuple[str, str, str]
) -> None:
    m, metrics = model(registry)
    _calls(m, 4, name, **headers)
    metrics.fold()
    label, method, tool = overflow
    if label == "gen_ai_tool_name":
        # The first successful call admits the name (not kept); the next three are decided alike.
        assert op_count(registry, method, name) == 4
        assert len(metrics._resolved) == 1
    else:
        assert value(registry, "mcp_metrics_label_overflow_total", label=label) == 4  # counted each time
        assert op_count(registry, method, tool, version="_OTHER") == 4
        assert len(metrics._resolved) == 0


def test_the_series_cap_counts_every_operation_past_it(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry, max_operation_series=1)
    metrics.learn_tools(["sharpen_claw", "nap"])
    m = ServerModel(metrics, max_body_size=1 << 20, session_idle_timeout=60.0, max_sessions=10,
                    parked_timeout=60.0, max_parked=10)
    _calls(m, 3, "sharpen_claw")
    _calls(m, 3, "nap")
    assert op_count(registry, "tools/call", "sharpen_claw") == 3
    assert value(registry, "mcp_metrics_label_overflow_total", label="series") == 3
    assert total_ops(registry) == 6


def test_a_tool_learned_later_is_labelled_by_its_name_from_then_on(registry: CollectorRegistry) -> None:
    m, metrics = model(registry)
    exchange(m, orjson.dumps(call(1, "fresh")), 200, JSON, [answer(1, isError=True)])  # a tool error: not admitted
    assert op_count(registry, "tools/call", "_OTHER", "tool_error") == 1
    metrics.learn_tools(["fresh"])
    exchange(m, orjson.dumps(call(2, "fresh")), 200, JSON, [answer(2, isError=True)])
    assert op_count(registry, "tools/call", "fresh", "tool_error") == 1


def test_a_long_result_type_is_bounded_and_shares_a_kept_decision(registry: CollectorRegistry) -> None:
    m, metrics = model(registry)
    _calls(m, 2)  # the label sets admitted: the next decisions are kept
    tracemalloc.start()
    try:
        for i in range(20):
            result = orjson.dumps({"jsonrpc": "2.0", "id": i, "result": {"content": [], "resultType": f"{i:03}" + "x" * (1 << 20)}})
            exchange(m, orjson.dumps(call(i)), 200, JSON, [result])
            del result
        metrics.fold()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * 1024 * 1024
    assert len(metrics._resolved) == 1
    assert op_count(registry, "tools/call", "sharpen_claw") == 22


def test_a_full_set_of_kept_decisions_starts_over(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcp_metrics_middleware.metrics as recorder

    monkeypatch.setattr(recorder, "_MAX_RESOLVED", 2)
    m, metrics = model(registry)
    _calls(m, 2, "sharpen_claw")  # the first admits its label sets; the second is kept
    _calls(m, 2, "nap")
    metrics.fold()
    assert len(metrics._resolved) == 2  # full
    _calls(m, 2, "sharpen_claw", mcp_protocol_version=b"2025-11-25")
    metrics.fold()
    assert len(metrics._resolved) == 1  # started over: the newest decision is kept
    _calls(m, 2, "sharpen_claw")
    assert op_count(registry, "tools/call", "sharpen_claw") == 4
    assert op_count(registry, "tools/call", "nap") == 2
    assert op_count(registry, "tools/call", "sharpen_claw", version="2025-11-25") == 2


@pytest.mark.parametrize("left", ["before the response", "after the response started"])
def test_a_late_initialize_answer_still_sets_its_session_version(registry: CollectorRegistry, left: str) -> None:
    m, _ = model(registry)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "c", "version": "1"}}}
    ex = m.http_exchange(0.0, "POST", {})
    ex.request_body(0.0, orjson.dumps(init), False)
    if left == "before the response":
        ex.disconnected(0.1)
    ex.response_start(0.2, 200, [*SSE, (b"mcp-session-id", b"S")])
    if left != "before the response":
        ex.disconnected(0.25)
    negotiated = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}})
    ex.response_body(0.3, sse(negotiated), False)
    ex.end(0.4)
    exchange(m, b"", 200, JSON, [b""], {b"mcp-session-id": b"S"}, now=1.0, method="DELETE")
    assert value(registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2025-06-18") == 1
    assert op_count(registry, "initialize", error_type="cancelled") == 1
