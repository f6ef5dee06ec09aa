from __future__ import annotations

import gc
import itertools
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_metrics_middleware.protocol.sse import ServerSentEvent, SSEDecoder
from tests.sse_reference import reference_decode

# Every framing the issue names: CRLF (Python SDK), LF (TypeScript SDK, event before id), lone CR,
# BOM, comments and pings, priming events with empty data, multi-line data, id/retry anywhere.
SAMPLES = {
    "python_sdk_crlf": (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n\r\n'
        b'event: message\r\ndata: {"jsonrpc":"2.0","id":4,"result":{}}\r\n\r\n'
    ),
    "typescript_lf": (
        b'event: message\nid: 7\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'
        b"event: message\nid: 8\ndata: {}\n\n"
    ),
    "lone_cr": b"data: a\rdata: b\r\rdata:c\r\r",
    "bom_and_comments": b"\xef\xbb\xbf: ping - 2026-11-23 18:35:11\r\n\r\ndata: x\r\n\r\n: ping\r\n\r\n",
    "priming_and_resumable": (
        b"id: 2-2\r\ndata: \r\nretry: 1500\r\n\r\n"
        b'id: 4-7\r\nevent: message\r\ndata: {"id":2}\r\n\r\n'
    ),
    "multiline_no_space": b"data:line1\ndata:  line2\ndata\nevent:other\nretry: 5\n\n",
    "no_trailing_blank": b"data: kept\n\ndata: dropped-at-eof\n",
}


def decode_in_chunks(stream: bytes, cuts: list[int], cap: int = 1 << 20) -> list[ServerSentEvent]:
    decoder = SSEDecoder(cap)
    events: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(cuts) + [len(stream)]:
        events.extend(decoder.feed(stream[start:cut]))
        start = cut
    return events


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_split_point(name: str) -> None:
    stream = SAMPLES[name]
    expected = reference_decode(stream)
    assert decode_in_chunks(stream, []) == expected
    for cut in range(len(stream) + 1):
        assert decode_in_chunks(stream, [cut]) == expected, f"split at {cut}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_pair_of_split_points(name: str) -> None:
    stream = SAMPLES[name]
    expected = reference_decode(stream)
    for a in range(0, len(stream) + 1, 3):
        for b in range(a, len(stream) + 1, 5):
            assert decode_in_chunks(stream, [a, b]) == expected


def test_byte_by_byte() -> None:
    for stream in SAMPLES.values():
        assert decode_in_chunks(stream, list(range(len(stream)))) == reference_decode(stream)


def test_known_values() -> None:
    events = decode_in_chunks(SAMPLES["python_sdk_crlf"], [])
    assert [e.data for e in events] == [
        b'{"jsonrpc":"2.0","method":"notifications/progress"}',
        b'{"jsonrpc":"2.0","id":4,"result":{}}',
    ]
    assert decode_in_chunks(SAMPLES["lone_cr"], []) == [
        ServerSentEvent(b"", b"a\nb", None),
        ServerSentEvent(b"", b"c", None),
    ]
    # WHATWG dispatches the priming event with empty data; the middleware skips it.
    assert decode_in_chunks(SAMPLES["priming_and_resumable"], []) == [
        ServerSentEvent(b"", b"", b"2-2"),
        ServerSentEvent(b"message", b'{"id":2}', b"4-7"),
    ]
    assert decode_in_chunks(SAMPLES["multiline_no_space"], []) == [
        ServerSentEvent(b"other", b"line1\n line2\n", None)
    ]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [ServerSentEvent(b"", b"a", None)]
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [ServerSentEvent(b"", b"b", None)]


def test_pending_reports_a_truncated_event() -> None:
    decoder = SSEDecoder()
    decoder.feed(b'data: {"id":1')
    assert decoder.pending
    decoder.feed(b"}\n\n")
    assert not decoder.pending


def test_oversized_event_is_skipped_and_the_stream_goes_on() -> None:
    big = b"data: " + b"x" * 5000 + b"\n\n"
    stream = b"data: before\n\n" + big + b"data: after\n\n"
    for cuts in ([], [100], list(range(0, len(stream), 700)), list(range(len(stream)))):
        decoder = SSEDecoder(max_event_size=1000)
        events = []
        start = 0
        for cut in sorted(cuts) + [len(stream)]:
            events.extend(decoder.feed(stream[start:cut]))
            start = cut
        assert [e.data for e in events] == [b"before", b"after"], cuts
        assert decoder.oversized == 1


def test_buffer_stays_bounded_for_a_huge_line() -> None:
    decoder = SSEDecoder(max_event_size=1024)
    decoder.feed(b"data: ")
    for _ in range(1000):
        decoder.feed(b"y" * 4096)
        assert decoder._parts_size <= 1024
    assert decoder.feed(b"\n\ndata: ok\n\n") == [ServerSentEvent(b"", b"ok", None)]
    assert decoder.oversized == 1


line_endings = st.sampled_from([b"\n", b"\r\n", b"\r"])
field_lines = st.one_of(
    st.builds(
        lambda v: b"data: " + v,
        st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b),
    ),
    st.builds(lambda v: b"data:" + v, st.sampled_from([b"", b"x", b" two spaces"])),
    st.sampled_from(
        [
            b"event: message",
            b"event:other",
            b"id: 1",
            b"id: 2-2",
            b"retry: 1500",
            b": ping",
            b":",
            b"data",
            b"",
            b"",
            b"unknown: field",
        ]
    ),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(field_lines, max_size=30))
    out = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    for line in lines:
        out += line + draw(line_endings)
    return out


@settings(max_examples=400, deadline=None)
@given(stream=streams(), data=st.data())
def test_random_chunking_never_changes_the_result(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert decode_in_chunks(stream, cuts) == reference_decode(stream)


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_never_raise_and_match_reference(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert decode_in_chunks(stream, cuts) == reference_decode(stream)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=40),
    before=st.sampled_from(
        [
            b"",
            b"data: x",
            b"data: x\r",
            b"id: 3\r\n",
            b"\r\n",
            b"event: other\n",
            b"data: " + b"y" * 300,
        ]
    ),
)
def test_sdk_fast_path_agrees_with_the_general_path(payload: bytes, before: bytes) -> None:
    chunk = b"event: message\r\ndata: " + payload + b"\r\n\r\n"
    fast = SSEDecoder(max_event_size=200)  # the long "before" line is an oversized event
    fast_events = fast.feed(before) + fast.feed(chunk) + fast.feed(chunk)
    expected = [e for e in reference_decode(before + chunk + chunk) if len(e.data) < 200]
    assert fast_events == expected


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([b"event: message\n", b"", b"event: other\n", b"id: 9\n", b": c\n"]),
            st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b),
            st.sampled_from([b"\n", b"\r\n"]),
        ),
        max_size=20,
    ),
    data=st.data(),
)
def test_coalesced_events_take_the_block_path_and_agree(
    events: list[tuple[bytes, bytes, bytes]], data: st.DataObject
) -> None:
    # The first line goes the general way (BOM check); later chunks of whole events take the
    # block path. A small cap makes some events oversized.
    stream = b": hello\n\n" + b"".join(
        (head + b"data: " + payload + b"\n\n").replace(b"\n", nl) for head, payload, nl in events
    )
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    decoder = SSEDecoder(max_event_size=20)
    got: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(cuts) + [len(stream)]:
        got.extend(decoder.feed(stream[start:cut]))
        start = cut
    expected = reference_decode(stream)
    assert got == [e for e in expected if len(e.data) + 1 <= 20]
    assert decoder.oversized == len([e for e in expected if len(e.data) + 1 > 20])


# -- bulk paths and feed_messages -------------------------------------------------------------

NOTE = b'{"jsonrpc":"2.0","method":"notifications/'


def classify_reference(events: list[ServerSentEvent]) -> tuple[list[bytes], dict[bytes, int]]:
    """What feed_messages must return: the middleware's own per-event loop over the events."""
    payloads: list[bytes] = []
    counts: dict[bytes, int] = {}
    for event in events:
        data = event.data
        if not data or (event.event and event.event != b"message"):
            continue
        if data[:41] == NOTE:
            end = data.find(b'"', 27, 27 + 128)
            if end != -1 and data.find(b"\\", 27, end) == -1:
                counts[data[27:end]] = counts.get(data[27:end], 0) + 1
                continue
        payloads.append(data)
    return payloads, counts


payload_values = st.one_of(
    st.sampled_from(
        [
            NOTE + b'progress","params":{"progress":1}}',
            NOTE + b'progress","params":{"progress":2}}',
            NOTE + b'message","params":{"level":"info"}}',
            NOTE + b'resources/updated","params":{}}',
            NOTE + b'progress"',
            NOTE + b'pro\\"gress"}',
            b'{"jsonrpc":"2.0","id":1,"result":{}}',
            b"",
            b" leading space",
            b"with\rcr",
            b"with\nlf",
            b"with\r\nboth",
            b"\x00nul",
        ]
    ),
    st.binary(max_size=12),
)
heads = st.sampled_from(
    [
        b"event: message{nl}data: ",
        b"data: ",
        b"data:",
        b"event: message{nl}id: 7{nl}data: ",
        b"event: message{nl}id: {nl}data: ",
        b"event: message{nl}id: a\x00b{nl}data: ",
        b"event: other{nl}data: ",
        b": ping{nl}{nl}data: ",
        b"event: message{nl}id: 9{nl}",
        b"event: message{nl}id: 9{nl}data: x{nl}data: ",
        b"retry: 5{nl}data: ",
    ]
)


@st.composite
def framed_streams(draw: st.DrawFn) -> bytes:
    nl = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    uniform = draw(st.booleans())  # one head for every event: the bulk paths' runs
    head = draw(heads)
    out = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    for _ in range(draw(st.integers(0, 40))):
        if not uniform:
            head = draw(heads)
        out += head.replace(b"{nl}", nl) + draw(payload_values) + nl + nl
    return out


def feed_messages_in_chunks(
    stream: bytes, cuts: list[int], cap: int
) -> tuple[list[bytes], dict[bytes, int], int]:
    decoder = SSEDecoder(cap)
    payloads: list[bytes] = []
    counts: dict[bytes, int] = {}
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        got, notes = decoder.feed_messages(stream[start:cut])
        payloads += got
        for method, n in notes.items():
            counts[method] = counts.get(method, 0) + n
        start = cut
    return payloads, counts, decoder.oversized


@settings(max_examples=600, deadline=None)
@given(stream=framed_streams(), data=st.data())
def test_bulk_framings_agree_with_the_reference(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    cap = data.draw(st.sampled_from([1 << 20, 40]))
    expected = [e for e in reference_decode(stream) if len(e.data) + 1 <= cap]
    decoder = SSEDecoder(cap)
    got: list[ServerSentEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        got.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert got == expected
    assert all(type(e.data) is bytes for e in got)
    payloads, counts, oversized = feed_messages_in_chunks(stream, cuts, cap)
    assert (payloads, counts) == classify_reference(expected)
    assert oversized == decoder.oversized


@pytest.mark.parametrize("nl", [b"\r\n", b"\n", b"\r"])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 16, 1 << 22])
def test_long_runs_of_sdk_events_in_any_chunking(nl: bytes, chunk_size: int) -> None:
    events = []
    count = 3000 if chunk_size >= 4096 else 300
    for i in range(count):
        method = b"progress" if i % 500 else b"message"
        data = NOTE + method + b'","params":{"i":%d}}' % i
        if i % 3 == 0 and nl == b"\n":
            events.append(b"event: message\nid: %d\ndata: %s\n\n" % (i, data))
        else:
            events.append(b"event: message" + nl + b"data: " + data + nl + nl)
    events.append(b"event: message" + nl + b'data: {"jsonrpc":"2.0","id":1,"result":{}}' + nl + nl)
    stream = b"".join(events)
    cuts = list(range(chunk_size, len(stream), chunk_size))
    expected = reference_decode(stream)
    assert decode_in_chunks(stream, cuts) == expected
    payloads, counts, oversized = feed_messages_in_chunks(stream, cuts, 1 << 20)
    assert (payloads, counts) == classify_reference(expected)
    assert counts == {
        b"notifications/progress": count - len(range(0, count, 500)),
        b"notifications/message": len(range(0, count, 500)),
    }
    assert oversized == 0


# -- memory: the real heap cost is bounded by the cap, whatever the stream's shape ------------

CAP = 256 * 1024
CONSTANT = 160 * 1024  # interpreter noise and one 64 KiB piece's line objects


def _peak_while_feeding(chunks: Any, feed_messages: bool = False) -> int:
    decoder = SSEDecoder(CAP)
    feed = decoder.feed_messages if feed_messages else decoder.feed
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for chunk in chunks:
            feed(chunk)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _repeat(chunk: bytes, total: int) -> Any:
    # The same object again and again: building the stream allocates nothing while traced.
    return itertools.repeat(chunk, total // len(chunk))


MEMORY_SHAPES = {
    # issue 10 item 9: data lines that never end their event, in small and in 64 KiB chunks
    "tiny data lines, one per chunk": lambda: _repeat(b"data:ab\n", 4 * CAP),
    "tiny data lines, 64 KiB chunks": lambda: _repeat(b"data:ab\n" * 8192, 16 * CAP),
    "tiny data lines, CR only": lambda: _repeat(b"data:ab\r" * 8192, 16 * CAP),
    "long data line, 1-byte chunks": lambda: itertools.chain([b"data: "], _repeat(b"y", 3 * CAP)),
    "long id line, 1-byte chunks": lambda: itertools.chain([b"id: "], _repeat(b"y", 3 * CAP)),
    "many tiny id and event lines": lambda: _repeat(b"id: 1\nevent: x\n" * 4096, 16 * CAP),
    "many tiny events": lambda: _repeat(b"data: a\n\n" * 7000, 16 * CAP),
    "huge one-chunk event past the cap": lambda: [b"data: " + b"z" * (8 * CAP) + b"\n\n"],
    "huge one-chunk event under the cap": lambda: [b"data: " + b"z" * (CAP - 8) + b"\n\n"],
}


@pytest.mark.parametrize("feed_messages", [False, True], ids=["feed", "feed_messages"])
@pytest.mark.parametrize("shape", sorted(MEMORY_SHAPES))
def test_peak_memory_is_bounded_by_the_cap(shape: str, feed_messages: bool) -> None:
    chunks = list(MEMORY_SHAPES[shape]()) if shape.startswith("huge") else MEMORY_SHAPES[shape]()
    peak = _peak_while_feeding(chunks, feed_messages)
    # At most the buffered data (or line) plus its dispatch copy, each within the cap.
    assert peak <= 2.5 * CAP + CONSTANT, f"{shape}: peak {peak / 1024:.0f} KiB"


@pytest.mark.parametrize(
    "pieces",
    [
        # One event with no data line and one with two: as many LFs as events in total, so
        # only the per-event check tells this run from the TypeScript framing.
        [b"1", b"2\ndata: " + NOTE + b'progress"}\ndata: x'],
        [b"1\ndata: " + NOTE + b'progress"}\ndata: x', b"2"],
        [b"1\ndata: " + NOTE + b'progress"}', b"2\nretry: 5", b"3\ndata: " + NOTE + b'progress"}'],
    ],
)
def test_typescript_runs_with_other_lines_take_the_line_path(pieces: list[bytes]) -> None:
    # The first event of a stream always takes the line path: the run starts after it.
    first = [b"0\ndata: " + NOTE + b'progress"}']
    stream = b"".join(b"event: message\nid: " + piece + b"\n\n" for piece in first + pieces)
    expected = reference_decode(stream)
    assert decode_in_chunks(stream, []) == expected
    payloads, counts, _ = feed_messages_in_chunks(stream, [], 1 << 20)
    assert (payloads, counts) == classify_reference(expected)
