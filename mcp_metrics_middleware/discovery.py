"""Ask an ASGI MCP app, in process, which tools and prompts it offers.

A 2026-07-28 client that listed the tools before a restart never lists them again, and a worker
or replica that has not seen a ``tools/list`` would label every tool ``_OTHER``. So at startup
the middleware sends the app its own ``tools/list`` and ``prompts/list`` (2026-07-28 requests,
self-contained, no session), straight to the wrapped app: they never reach the metrics.
Servers that only speak the handshake era get an ``initialize`` first, and their session is
deleted afterwards.

See: https://modelcontextprotocol.io/specification/2026-07-28/server/tools#listing-tools
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from mcp_metrics_middleware._types import ASGIApp, Message
from mcp_metrics_middleware.protocol.body import SSE, BodyReader, content_kind

MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"
_MAX_PAGES = 20
_TIMEOUT = 10.0
_CLIENT = {"name": "mcp-metrics-discovery", "version": "1"}


class _Reply:
    __slots__ = ("status", "headers", "messages")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.messages: list[Any] = []


async def _request(
    app: ASGIApp, path: str, headers: dict[bytes, bytes], body: bytes, cap: int, method: str = "POST"
) -> _Reply:
    """One in-process HTTP request; returns the status, headers and decoded JSON messages."""
    reply = _Reply()
    sent = False
    done = asyncio.Event()
    reader: BodyReader | None = None

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    def errors(reason: str) -> None:
        pass

    async def send(message: Message) -> None:
        nonlocal reader
        if message["type"] == "http.response.start":
            reply.status = int(message["status"])
            reply.headers = {k.lower(): v for k, v in message.get("headers", ())}
            kind = content_kind(reply.headers.get(b"content-type"))
            reader = BodyReader(kind, reply.headers.get(b"content-encoding", b""), cap, errors)
        elif message["type"] == "http.response.body" and reader is not None:
            more = message.get("more_body", False)
            for payload in reader.feed(message.get("body", b""), more):
                try:
                    reply.messages.append(orjson.loads(payload))
                except orjson.JSONDecodeError:
                    pass
            if not more or (reader.kind == SSE and any(_is_answer(m) for m in reply.messages)):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:80"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
            *headers.items(),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        await asyncio.wait_for(done.wait(), _TIMEOUT)
    finally:
        done.set()
        if not task.done():
            task.cancel()
        try:
            await task
        except BaseException:
            pass
    return reply


def _is_answer(message: Any) -> bool:
    return type(message) is dict and "id" in message and ("result" in message or "error" in message)


def _result(reply: _Reply) -> dict[str, Any] | None:
    for message in reply.messages:
        if _is_answer(message) and type(message.get("result")) is dict:
            return message["result"]  # type: ignore[no-any-return]
    return None


async def _list(
    app: ASGIApp, path: str, method: str, key: str, headers: dict[bytes, bytes], meta: bool, cap: int
) -> list[str] | None:
    names: list[str] = []
    cursor: Any = None
    for page in range(_MAX_PAGES):
        params: dict[str, Any] = {}
        if meta:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": _CLIENT,
            }
        if cursor is not None:
            params["cursor"] = cursor
        body = orjson.dumps({"jsonrpc": "2.0", "id": page + 1, "method": method, "params": params})
        reply = await _request(app, path, {**headers, b"mcp-method": method.encode()}, body, cap)
        result = _result(reply)
        if result is None:
            return None if page == 0 else names
        items = result.get(key)
        if type(items) is list:
            names.extend(item["name"] for item in items if type(item) is dict and type(item.get("name")) is str)
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return names


async def discover_names(app: ASGIApp, path: str, cap: int) -> tuple[list[str], list[str]]:
    """The names of the tools and prompts ``app`` serves at ``path`` (empty if it will not say)."""
    modern = {b"mcp-protocol-version": MODERN_VERSION.encode()}
    tools = await _list(app, path, "tools/list", "tools", modern, True, cap)
    if tools is not None:
        prompts = await _list(app, path, "prompts/list", "prompts", modern, True, cap)
        return tools, prompts or []
    # A handshake-era server: initialize, list, then end the session.
    init = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": _CLIENT},
        }
    )
    reply = await _request(app, path, {b"mcp-method": b"initialize"}, init, cap)
    if _result(reply) is None:
        return [], []
    headers = {b"mcp-protocol-version": HANDSHAKE_VERSION.encode()}
    session = reply.headers.get(b"mcp-session-id")
    if session is not None:
        headers[b"mcp-session-id"] = session
    await _request(app, path, headers, orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), cap)
    try:
        tools = await _list(app, path, "tools/list", "tools", headers, False, cap) or []
        prompts = await _list(app, path, "prompts/list", "prompts", headers, False, cap) or []
    finally:
        if session is not None:
            await _request(app, path, headers, b"", cap, method="DELETE")
    return tools, prompts
