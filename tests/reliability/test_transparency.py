"""2. Byte transparency, as a property: random requests, response chunkings and SSE framings.

Each example runs the same scripted app bare and wrapped. The app must receive the same
messages (the very objects the server handed out) and the client the same messages (the very
objects the app sent), whatever the middleware made of them; and every operation the middleware
started is recorded exactly once (or parked for a replay, never both, never neither).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware._types import ASGIApp, Receive, Scope, Send
from tests.apps import scope
from tests.helpers import in_flight_total, parse_errors, total_ops
from tests.reliability.harness import compare, figure

pytestmark = pytest.mark.slow  # the whole reliability suite: `make reliability`
EXAMPLES = 800
CAP = 2048
stats = {"examples": 0, "bytes_in": 0, "bytes_out": 0, "operations": 0}

ids = st.one_of(st.integers(-(2**31), 2**31), st.text(max_size=6), st.none(), st.booleans())
methods = st.sampled_from(["tools/call", "tools/list", "initialize", "ping", "prompts/get", "scan/../x", "", "é"])
names = st.sampled_from(["sharpen_claw", "nap", "ghost_tool", "", "x" * 200, "\x00"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def client_message(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["request", "request", "notification", "response", "junk"]))
    if kind == "junk":
        return {"x": draw(json_values)}
    if kind == "response":
        return {"jsonrpc": "2.0", "id": draw(ids), "result": draw(json_values)}
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": draw(methods)}
    if draw(st.booleans()):
        msg["params"] = {"name": draw(names), "arguments": draw(json_values)}
    if kind == "request":
        msg["id"] = draw(ids)
    return msg


def started_operations(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if type(m.get("method")) is str)


@st.composite
def server_message(draw: st.DrawFn, request_ids: list[Any]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["result", "result", "error", "notification", "request"]))
    rid = draw(st.sampled_from(request_ids)) if request_ids and draw(st.booleans()) else draw(ids)
    if kind == "result":
        result = draw(st.sampled_from([{}, {"isError": True}, {"tools": [{"name": "nap"}]}]))
        return {"jsonrpc": "2.0", "id": rid, "result": result}
    if kind == "error":
        code = draw(st.sampled_from([-32700, -32601, -32800, -32050, 0, 7]))
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": "m"}}
    if kind == "request":
        return {"jsonrpc": "2.0", "id": rid, "method": "elicitation/create", "params": {}}
    return {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"p": draw(json_values)},
    }


newlines = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def sse_stream(draw: st.DrawFn, messages: list[dict[str, Any]]) -> bytes:
    out = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    for msg in messages:
        nl = draw(newlines)
        lines: list[bytes] = []
        if draw(st.booleans()):
            lines.append(b": ping")
        if draw(st.booleans()):
            lines.append(b"id: " + str(draw(st.integers(0, 99))).encode())
        event = draw(st.sampled_from([b"event: message", b"event:message", None, b"event: other"]))
        if event is not None:
            lines.append(event)
        if draw(st.booleans()):
            lines.append(b"retry: 1500")
        if draw(st.booleans()):  # priming event: empty data
            out += nl.join([b"id: p", b"data: ", b""]) + nl
        text = json.dumps(msg, indent=draw(st.sampled_from([None, 1]))).encode()
        space = draw(st.sampled_from([b" ", b""]))
        lines.extend(b"data:" + space + part for part in text.split(b"\n"))
        out += nl.join(lines) + nl + nl
    if draw(st.booleans()):  # cut in the middle of a last event
        out += b"data: {" + draw(newlines)
    return out


def cut(draw: st.DrawFn, data: bytes, max_cuts: int = 8) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts))))
    pieces, start = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[start:p])
        start = p
    return pieces


class Script:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def app(self) -> ASGIApp:
        s = self

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if s.read_body:
                while (await receive()).get("more_body"):
                    pass
            if s.status is None:
                return
            await send({"type": "http.response.start", "status": s.status, "headers": s.headers})
            for i, chunk in enumerate(s.chunks):
                last = i == len(s.chunks) - 1 and not s.final_empty
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if s.final_empty:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if s.wait_disconnect:
                await receive()

        return app


@st.composite
def scripts(draw: st.DrawFn) -> tuple[Script, list[tuple[bytes, bytes]], str, list[bytes], int]:
    structured = draw(st.booleans())
    if structured:
        messages = draw(st.lists(client_message(), min_size=1, max_size=4))
        as_batch = len(messages) > 1 or draw(st.booleans())
        body = json.dumps(messages if as_batch else messages[0]).encode()
        n_ops = started_operations(messages)
        request_ids = [m["id"] for m in messages if "id" in m]
    else:
        body = draw(st.binary(max_size=200))
        n_ops = -1
        request_ids = []
    headers: list[tuple[bytes, bytes]] = []
    for name, values in [
        (b"mcp-protocol-version", [b"2025-11-25", b"2026-07-28", b"1999"]),
        (b"mcp-session-id", [b"s1", b"\xff\xfe"]),
        (b"mcp-method", [b"tools/call", b"bogus"]),
        (b"mcp-name", [b"sharpen_claw", b"=?base64?bmFw?=", b"=?base64?!!?="]),
    ]:
        if draw(st.booleans()):
            headers.append((name, draw(st.sampled_from(values))))
    http_method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "DELETE", "HEAD"]))
    kind = draw(st.sampled_from(["json", "json", "sse", "sse", "text", "none", "gzip-json"]))
    replies = draw(st.lists(server_message(request_ids), max_size=4))
    response_headers: list[tuple[bytes, bytes]] = []
    if kind == "sse":
        response_headers.append((b"content-type", b"text/event-stream"))
        payload = draw(sse_stream(replies))
    else:
        payload = json.dumps(replies if len(replies) != 1 else replies[0]).encode() if replies else b""
        if kind in ("json", "gzip-json"):
            response_headers.append((b"content-type", b"application/json"))
        if kind == "gzip-json":
            payload = gzip.compress(payload)
            response_headers.append((b"content-encoding", b"gzip"))
        elif kind == "text":
            response_headers.append((b"content-type", b"text/plain"))
    if draw(st.booleans()):
        response_headers.append((b"mcp-session-id", b"new-session"))
    script = Script(
        read_body=draw(st.booleans()) or structured,
        status=draw(st.sampled_from([200, 200, 202, 400, 404, 500, None])),
        headers=response_headers,
        chunks=cut(draw, payload),
        final_empty=draw(st.booleans()),
        wait_disconnect=draw(st.booleans()),
    )
    return script, headers, http_method, cut(draw, body, 4), n_ops


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=scripts())
def test_bytes_and_messages_identical_with_and_without(
    example: tuple[Script, list[tuple[bytes, bytes]], str, list[bytes], int],
) -> None:
    script, headers, http_method, body, n_ops = example
    registry = CollectorRegistry()

    async def main() -> None:
        req = scope(http_method, headers=headers)
        bare, wrapped, mw = await compare(
            script.app, req, body, registry, max_body_size=CAP, known_tools=["sharpen_claw"]
        )
        assert wrapped.error is None
        stats["bytes_in"] += sum(len(m.get("body", b"")) for m in wrapped.app_received)
        stats["bytes_out"] += sum(len(m.get("body", b"")) for m in wrapped.client_got)
        # Every operation started is recorded exactly once, or parked awaiting a replay.
        parked = len(mw._state.model.parked) if mw._state else 0
        recorded = total_ops(registry)
        assert in_flight_total(registry) == parked
        if n_ops >= 0 and script.read_body and sum(map(len, body)) <= CAP:
            # At most one record per message: the era's rules may read a message as no
            # request at all, and a body refused as a whole is one operation.
            # A body with no message at all falls back to the Mcp-Method header: one operation.
            named = any(name == b"mcp-method" for name, _ in headers)
            assert recorded + parked <= max(n_ops, 1 if named else 0)
        stats["operations"] += int(recorded)
        assert parse_errors(registry).get("internal", 0) == 0

    anyio.run(main)
    stats["examples"] += 1


def test_zz_transparency_figures() -> None:
    if stats["examples"]:
        figure(
            f"byte transparency: {stats['examples']} random exchanges, "
            f"{stats['bytes_in']} request bytes and {stats['bytes_out']} response bytes "
            f"compared bare vs wrapped, {stats['operations']} operations recorded exactly once"
        )
