"""A straightforward whole-stream SSE decoder (WHATWG), the oracle for the incremental one."""

from __future__ import annotations

import re

from mcp_metrics_middleware.protocol.sse import ServerSentEvent


def reference_decode(stream: bytes) -> list[ServerSentEvent]:
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    lines = re.split(rb"\r\n|\r|\n", stream)
    lines.pop()  # an incomplete last line (or b"" after the final line ending) is discarded
    events = []
    data: list[bytes] = []
    event = b""
    last_id: bytes | None = None
    for line in lines:
        if line == b"":
            if data:
                events.append(ServerSentEvent(event, b"\n".join(data), last_id))
            data = []
            event = b""
            continue
        if line.startswith(b":"):
            continue
        field, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value
        elif field == b"id" and b"\x00" not in value:
            last_id = value
    return events
