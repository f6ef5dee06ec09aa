"""A stub MCP app: a Starlette app whose /mcp route answers a realistic tools/call.

Shapes, as the Python SDK sends them:
- ``json``: 200 application/json with content-length, one chunk;
- ``sse``: 200 text/event-stream, two progress notifications then the result, one event per
  chunk with CRLF framing, then ``b''`` with ``more_body=False``;
- ``202``: the answer to a notification, no content-type, empty body.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from benchmarks import wire

REQUEST_ID = 3
JSON_REQUEST = wire.tool_call(REQUEST_ID, modern=True)
SSE_REQUEST = wire.tool_call(REQUEST_ID, modern=True, progress=True)
NOTIFICATION = wire.dumps(
    {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 2, "reason": "user gave up"},
    }
)

_RESULT = wire.tool_result(REQUEST_ID)
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_SSE_EVENTS = [
    wire.sse_event(wire.progress(REQUEST_ID, 1, 2, "filing")),
    wire.sse_event(wire.progress(REQUEST_ID, 2, 2, "done")),
    wire.sse_event(_RESULT),
]


def request_for(shape: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of the request a client sends for this response shape."""
    if shape == "json":
        body = JSON_REQUEST
        return wire.modern_headers("tools/call", "sharpen_claw", len(body)), body
    if shape == "sse":
        body = SSE_REQUEST
        return wire.modern_headers("tools/call", "sharpen_claw", len(body)), body
    if shape == "202":
        body = NOTIFICATION
        return wire.modern_headers("notifications/cancelled", None, len(body)), body
    raise ValueError(shape)


class StubEndpoint:
    """Reads the whole request body (as the SDK does), then answers with one shape."""

    def __init__(self, shape: str) -> None:
        if shape not in ("json", "sse", "202"):
            raise ValueError(shape)
        self.shape = shape
        self.json_start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_RESULT)).encode()),
            ],
        }

    async def __call__(self, scope, receive, send) -> None:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        shape = self.shape
        if shape == "json":
            await send(self.json_start)
            await send({"type": "http.response.body", "body": _RESULT, "more_body": False})
        elif shape == "sse":
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            for event in _SSE_EVENTS:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def build_app(shape: str) -> Starlette:
    return Starlette(routes=[Route("/mcp", endpoint=StubEndpoint(shape))])
