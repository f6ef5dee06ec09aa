"""Wire shapes shared by the benchmarks: requests, responses and synthetic ASGI scopes."""

from __future__ import annotations

from typing import Any

import orjson

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
HOST = b"127.0.0.1:8000"
ACCEPT = b"application/json, text/event-stream"

META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench-client", "version": "1.0.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}

SERVER_INFO = {"io.modelcontextprotocol/serverInfo": {"name": "catbox", "version": "0.1.0"}}


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def tool_call(
    id: int,
    name: str = "sharpen_claw",
    arguments: dict[str, Any] | None = None,
    *,
    modern: bool = True,
    progress: bool = False,
) -> bytes:
    """A tools/call request body; modern ones carry the _meta envelope."""
    meta: dict[str, Any] = dict(META) if modern else {}
    if progress:
        meta["progressToken"] = id
    params: dict[str, Any] = {"name": name, "arguments": arguments or {"level": 7}}
    if meta:
        params["_meta"] = meta
    return dumps({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})


def modern_headers(method: str, name: str | None, length: int) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", HOST),
        (b"content-type", b"application/json"),
        (b"accept", ACCEPT),
        (b"content-length", str(length).encode()),
        (b"mcp-protocol-version", MODERN.encode()),
        (b"mcp-method", method.encode()),
    ]
    if name is not None:
        headers.append((b"mcp-name", name.encode()))
    return headers


def legacy_headers(length: int, session_id: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"host", HOST),
        (b"content-type", b"application/json"),
        (b"accept", ACCEPT),
        (b"content-length", str(length).encode()),
        (b"mcp-protocol-version", LEGACY.encode()),
    ]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode()))
    return headers


def http_scope(headers: list[tuple[bytes, bytes]], method: str = "POST", path: str = "/mcp"):
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def tool_result(id: int, text: str = "claw sharpened to 7") -> bytes:
    return dumps(
        {
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "content": [{"type": "text", "text": text}],
                "isError": False,
                "structuredContent": {"result": text},
                "resultType": "complete",
                "_meta": SERVER_INFO,
            },
        }
    )


def progress(token: int, n: int, total: int, message: str = "filing") -> bytes:
    return dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": n, "total": total, "message": message},
        }
    )


def sse_event(data: bytes) -> bytes:
    """One event framed like the Python SDK: CRLF, ``event: message``."""
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"
