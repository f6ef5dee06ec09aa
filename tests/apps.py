"""Raw ASGI apps and a driver, for wire shapes the Python SDK never produces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from mcp_metrics_middleware._types import Message, Receive, Scope, Send

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream")]


def scope(
    method: str = "POST",
    path: str = "/mcp",
    headers: Sequence[tuple[bytes, bytes]] = (),
    root_path: str = "",
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def request(id: Any, method: str, **params: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params:
        msg["params"] = params
    return msg


def result(id: Any, **fields: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": fields}


def error(id: Any, code: int, message: str = "boom") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}


def sse_event(obj: Any, nl: bytes = b"\r\n", event: bytes | None = b"message") -> bytes:
    head = b"event: " + event + nl if event else b""
    return head + b"data: " + orjson.dumps(obj) + nl + nl


def responder(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    chunks: Sequence[bytes],
    *,
    read_body: bool = True,
    final_empty: bool = True,
) -> Any:
    """An app that reads the body, then sends ``chunks`` (the last one with more_body=False)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if read_body:
            while True:
                message = await receive()
                if not message.get("more_body"):
                    break
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        if final_empty:
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})

    return app


async def drive(
    app: Any, scope: Scope, body: bytes | Sequence[bytes] = b"", *, disconnect_after: bool = True
) -> list[Message]:
    """Call an ASGI app with ``body`` (in chunks) and return what it sent."""
    chunks = [body] if isinstance(body, bytes) else list(body)
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        if disconnect_after:
            return {"type": "http.disconnect"}
        import anyio

        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
