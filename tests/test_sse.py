from __future__ import annotations

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
