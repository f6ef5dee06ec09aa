"""5. Memory under streaming, measured with tracemalloc.

* 1 GiB of SSE in small events, in the SDKs' framing (one event per chunk) and in a coalesced
  framing whose chunk boundaries cut events in two. The chunk objects are built once and sent
  again and again, so generating the stream costs nothing and every allocation tracemalloc sees
  during the stream is the middleware's (or the event loop's).
* A single 100 MiB event, past the 4 MiB cap, in 64 KiB chunks and as one chunk: it reaches the
  client intact (the very objects), is counted as too_large, and the answer after it still counts.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import Message, Receive, Scope, Send
from mcp_metrics_middleware.config import DEFAULT_MAX_BODY_SIZE
from tests.apps import SSE, request, result, scope, sse_event
from tests.helpers import parse_errors, value
from tests.reliability.harness import figure, op, ops, settled

GiB = 1 << 30
MiB = 1 << 20
CALL = orjson.dumps(request(1, "tools/call", name="sharpen_claw", arguments={}))
ANSWER = sse_event(result(1, content=[], isError=False))
# A constant on top of the stream: the fast metrics store queues up to 4096 small records before
# folding them in (about 0.9 MiB), plus interpreter noise (frames, dict resizes, the event loop).
SLACK = 1 * MiB


def progress_event(size: int, nl: bytes = b"\r\n") -> bytes:
    data = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1, "message": "x" * size},
        }
    )
    return b"event: message" + nl + b"data: " + data + nl + nl


class Measured:
    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0
        self.identical = True  # every message the client got is the very object the app sent
        self.last: Message | None = None
        self.base = 0
        self.peak = 0
        self.end = 0
        self.seconds = 0.0


def stream_through(
    registry: CollectorRegistry,
    chunks: Callable[[], Iterator[bytes]],
    warmup: list[bytes],
    **options: Any,
) -> Measured:
    """Send ``warmup`` then ``chunks()`` then the answer, through the middleware, measuring."""
    out = Measured()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for chunk in warmup:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        # Everything the middleware needs for this stream exists now: measure from here.
        out.base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for chunk in chunks():
            out.last = {"type": "http.response.body", "body": chunk, "more_body": True}
            await send(out.last)
        out.last = {"type": "http.response.body", "body": ANSWER, "more_body": False}
        await send(out.last)
        out.end, out.peak = tracemalloc.get_traced_memory()

    mw = MCPMetricsMiddleware(app, registry=registry, known_tools=["sharpen_claw"], **options)

    async def main() -> None:
        incoming = [{"type": "http.request", "body": CALL, "more_body": False}]

        async def receive() -> Message:
            return incoming.pop() if incoming else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            out.messages += 1
            out.bytes += len(message.get("body", b""))
            if out.last is not None and message is not out.last:
                out.identical = False

        await mw(scope(), receive, send)

    started = time.perf_counter()
    tracemalloc.start()
    try:
        anyio.run(main)
    finally:
        tracemalloc.stop()
    out.seconds = time.perf_counter() - started
    return out


def sent_notifications(registry: CollectorRegistry) -> float:
    return value(
        registry,
        "mcp_server_messages_total",
        direction="sent",
        message_type="notification",
        mcp_method_name="notifications/progress",
    )


def sdk_stream(total: int) -> tuple[CollectorRegistry, Measured, int, bytes]:
    registry = CollectorRegistry()
    event = progress_event(4000)  # 4 KiB events, one per chunk, CRLF: the Python SDK's framing
    n = total // len(event)

    def chunks() -> Iterator[bytes]:
        for _ in range(n):
            yield event

    return registry, stream_through(registry, chunks, [event] * 4), n, event


@pytest.mark.slow
def test_one_gib_of_small_events_sdk_framing() -> None:
    _, short, short_n, _ = sdk_stream(64 * MiB)
    registry, m, n, event = sdk_stream(GiB)
    extra = m.peak - m.base
    assert m.bytes == (n + 4) * len(event) + len(ANSWER)
    assert m.identical
    assert sent_notifications(registry) == n + 4  # every event decoded and counted
    assert ops(registry) == {op("tools/call", "sharpen_claw"): 1}
    assert parse_errors(registry) == {}
    settled(registry)
    assert extra <= 4 * len(event) + SLACK
    assert m.end - m.base <= SLACK  # nothing accumulates over the stream
    # The peak does not grow with the stream: 1 GiB costs what 64 MiB costs.
    assert extra <= (short.peak - short.base) + 256 * 1024
    figure(
        f"1 GiB SSE stream, SDK framing: {n + 4} events of {len(event)} B in {m.seconds:.1f}s "
        f"(tracemalloc on); peak extra memory {extra / 1024:.0f} KiB "
        f"(64 MiB stream, {short_n + 4} events in {short.seconds:.1f}s: "
        f"{(short.peak - short.base) / 1024:.0f} KiB; a constant: the metric "
        f"store's record queue plus < 4 events), {(m.end - m.base) / 1024:.0f} KiB left after"
    )


@pytest.mark.slow
def test_one_gib_of_small_events_coalesced_and_cut() -> None:
    registry = CollectorRegistry()
    event = progress_event(2000, b"\n")  # LF framing, as the TypeScript SDK writes it
    block = event * 32
    cut = len(block) // 2 + 17  # both chunks end in the middle of an event
    first, second = block[:cut], block[cut:]
    pairs = GiB // len(block)

    def chunks() -> Iterator[bytes]:
        for _ in range(pairs):
            yield first
            yield second

    m = stream_through(registry, chunks, [block])
    extra = m.peak - m.base
    largest = max(len(first), len(second))
    assert m.bytes == (pairs + 1) * len(block) + len(ANSWER)
    assert m.identical
    assert sent_notifications(registry) == (pairs + 1) * 32
    assert ops(registry) == {op("tools/call", "sharpen_claw"): 1}
    assert parse_errors(registry) == {}
    settled(registry)
    assert extra <= 4 * largest + SLACK
    assert m.end - m.base <= SLACK
    figure(
        f"1 GiB SSE stream, coalesced and cut mid-event: {(pairs + 1) * 32} events of "
        f"{len(event)} B in {2 * pairs} chunks of ~{largest // 1024} KiB in {m.seconds:.1f}s; "
        f"peak extra memory {extra / 1024:.0f} KiB (bound: 4 x largest chunk + 1 MiB), "
        f"{(m.end - m.base) / 1024:.0f} KiB left after"
    )


HEAD = (
    b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"data":"'
)
PIECE = 64 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["64KiB-chunks", "one-chunk-crlf", "one-chunk-lf"])
def test_single_100_mib_event_past_the_cap(framing: str) -> None:
    registry = CollectorRegistry()
    count = 100 * MiB // PIECE
    nl = b"\n" if framing.endswith("-lf") else b"\r\n"
    head = HEAD.replace(b"\r\n", nl)
    tail = b'"}}' + nl + nl
    total = len(head) + count * PIECE + len(tail)
    if framing == "64KiB-chunks":

        def chunks() -> Iterator[bytes]:
            yield head
            for _ in range(count):
                yield b"a" * PIECE  # a new object each time, as a real app sends them
            yield tail

        largest = PIECE
    else:
        whole = head + b"a" * (count * PIECE) + tail  # built before measuring

        def chunks() -> Iterator[bytes]:
            yield whole

        largest = total

    m = stream_through(registry, chunks, [progress_event(10)])
    extra = m.peak - m.base
    assert m.bytes == len(progress_event(10)) + total + len(ANSWER)
    assert m.identical
    assert parse_errors(registry) == {"too_large": 1}
    assert sent_notifications(registry) == 1
    # The answer after the oversized event is still read: the call is a success.
    assert ops(registry) == {op("tools/call", "sharpen_claw"): 1}
    settled(registry)
    assert m.end - m.base <= SLACK  # nothing of the event is kept
    # Bounded by the cap, not by the event: the decoder holds at most the cap, then drops it.
    if largest == PIECE:
        assert extra <= DEFAULT_MAX_BODY_SIZE + 2 * PIECE + SLACK
    else:
        assert extra <= 2 * DEFAULT_MAX_BODY_SIZE + SLACK
    figure(
        f"single {total / MiB:.0f} MiB SSE event past the {DEFAULT_MAX_BODY_SIZE // MiB} MiB cap "
        f"({framing}): passed intact, counted too_large=1, answer after it recorded; "
        f"{m.seconds:.2f}s, peak extra memory {extra / MiB:.2f} MiB"
    )
