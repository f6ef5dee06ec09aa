"""7. Fuzzing with hypothesis: the SSE decoder, the JSON-RPC classifier, and the ASGI tap.

No exception escapes, and on valid input the output agrees with straightforward references:
tests/sse_reference.py for SSE (with the size cap applied per event), and a plain restatement of
JSON-RPC 2.0 over the standard library's json for the classifier.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pydantic_core
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mcp_types import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse, jsonrpc_message_adapter
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from mcp_metrics_middleware._types import ASGIApp, Message, Receive, Scope, Send
from mcp_metrics_middleware.protocol.jsonrpc import HANDSHAKE, MODERN, SERVER, decode
from mcp_metrics_middleware.protocol.sse import ServerSentEvent, SSEDecoder
from tests.apps import scope
from tests.helpers import in_flight_total
from tests.reliability.harness import compare, figure
from tests.sse_reference import reference_decode

pytestmark = pytest.mark.slow  # the whole reliability suite: `make reliability`
tried = {"sse streams": 0, "sse bytes": 0, "jsonrpc payloads": 0, "asgi scripts": 0}

# -- SSE ------------------------------------------------------------------------------------------

newline = st.sampled_from([b"\n", b"\r\n", b"\r"])
value_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
line = st.one_of(
    st.builds(lambda v: b"data: " + v, value_bytes),
    st.builds(lambda v: b"data:" + v, value_bytes),
    st.builds(lambda v: b"id: " + v, value_bytes),
    st.builds(lambda v: b"event: " + v, st.sampled_from([b"message", b"other", b""])),
    st.sampled_from([b"", b"", b"", b": ping", b"retry: 10", b"data", b"id", b"event: message"]),
    st.builds(lambda v: b"x" + v, value_bytes),
)


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    out = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    for item in draw(st.lists(line, max_size=40)):
        out += item + draw(newline)
    return out


def decode_chunked(stream: bytes, cuts: list[int], cap: int) -> tuple[list[ServerSentEvent], int]:
    decoder = SSEDecoder(cap)
    events: list[ServerSentEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events.extend(decoder.feed(stream[start:cut]))
        start = cut
    return events, decoder.oversized


def reference_with_cap(stream: bytes, cap: int) -> tuple[list[ServerSentEvent], int]:
    """The reference decoder, dropping each event whose data (joined, + 1) exceeds the cap."""
    events = reference_decode(stream)
    kept = [e for e in events if len(e.data) + 1 <= cap]
    return kept, len(events) - len(kept)


@settings(max_examples=1500, deadline=None)
@given(stream=sse_streams(), cap=st.integers(8, 200), data=st.data())
def test_sse_decoder_matches_reference_with_a_cap(stream: bytes, cap: int, data: Any) -> None:
    """Lines within the cap: only the data size decides, whatever the chunking.

    (A non-data line longer than the cap plus its field slack is ignored, however it is chunked:
    test_sse_chunking_never_changes_the_result covers those.)
    """
    longest = max((len(x) for x in re.split(rb"\r\n|\r|\n", stream)), default=0)
    assume(longest <= cap + 16)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events, oversized = decode_chunked(stream, cuts, cap)
    expected, dropped = reference_with_cap(stream, cap)
    assert events == expected
    # Events without any data line are never dispatched, so they cannot count as dropped.
    assert oversized >= dropped
    tried["sse streams"] += 1
    tried["sse bytes"] += len(stream)


@settings(max_examples=1500, deadline=None)
@given(stream=st.binary(max_size=400), data=st.data())
def test_sse_decoder_never_raises_on_arbitrary_bytes(stream: bytes, data: Any) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    cap = data.draw(st.integers(1, 64))
    decode_chunked(stream, cuts, cap)
    events, _ = decode_chunked(stream, cuts, 1 << 20)
    assert events == reference_decode(stream)
    tried["sse streams"] += 1
    tried["sse bytes"] += len(stream)


@settings(max_examples=800, deadline=None)
@given(
    head=sse_streams(),
    long_field=st.sampled_from([b": ", b"id: ", b"event: ", b"retry: ", b"data: "]),
    size=st.integers(0, 3000),
    tail=sse_streams(),
    data=st.data(),
)
def test_sse_chunking_never_changes_the_result(
    head: bytes, long_field: bytes, size: int, tail: bytes, data: Any
) -> None:
    """Long lines of any field, past the cap: cutting the stream anywhere changes nothing."""
    stream = head + b"\n" + long_field + b"y" * size + b"\n" + tail
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    whole = decode_chunked(stream, [], 256)
    assert decode_chunked(stream, cuts, 256) == whole
    tried["sse streams"] += 1
    tried["sse bytes"] += len(stream)


# -- JSON-RPC ---------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def rpc_like(draw: st.DrawFn) -> Any:
    obj: dict[str, Any] = {}
    for key, values in [
        ("jsonrpc", st.sampled_from(["2.0", "1.0", 2])),
        ("id", scalars),
        ("method", st.one_of(st.sampled_from(["tools/call", "ping", "prompts/get"]), scalars)),
        ("params", st.one_of(st.fixed_dictionaries({"name": scalars}), json_values)),
        ("result", json_values),
        ("error", st.one_of(st.fixed_dictionaries({"code": scalars}), json_values)),
    ]:
        if draw(st.booleans()):
            obj[key] = draw(values)
    return obj


def sdk_handshake(payload: bytes) -> tuple[list[tuple[str, Any, Any]], str | None]:
    """What the SDK's handshake-era transport reads: pydantic_core.from_json, then the union."""
    try:
        raw = pydantic_core.from_json(payload)
    except ValueError:
        return [], "invalid_json"
    try:
        message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
    except ValidationError:
        return [], "not_jsonrpc"
    return [_sdk_kind(message)], None


def sdk_modern(payload: bytes) -> tuple[list[tuple[str, Any, Any]], str | None]:
    """What the SDK's 2026-07-28 transport reads: json.loads, then notification or request."""
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):
        return [], "invalid_json"
    try:
        if isinstance(decoded, dict) and "id" not in decoded:
            return [_sdk_kind(JSONRPCNotification.model_validate(decoded))], None
        return [_sdk_kind(JSONRPCRequest.model_validate(decoded))], None
    except ValidationError:
        return [], "not_jsonrpc"


def _sdk_kind(message: Any) -> tuple[str, Any, Any]:
    if isinstance(message, JSONRPCRequest):
        return ("request", message.id, message.method)
    if isinstance(message, JSONRPCNotification):
        return ("notification", None, message.method)
    if isinstance(message, JSONRPCResponse):
        return ("response", message.id, None)
    return ("error", message.id, None)


odd_json = st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"\\ud83d"', b'"\\udc00x"', b"1.0", b"true", b"[1]", b"{}"]
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A JSON-RPC-like object, sometimes with literals the two decoders disagree on.

    A message that holds both a method and a result or error is left out: pydantic's smart
    union scores those by fields set, and the middleware reads them as requests.
    """
    value = draw(rpc_like())
    if "method" in value:
        value.pop("result", None)
        value.pop("error", None)
    body = json.dumps(value).encode()
    if draw(st.booleans()) and body.endswith(b"}"):
        key = draw(st.sampled_from([b"id", b"params", b"extra"]))
        literal = draw(odd_json)
        if key == b"params":
            literal = b'{"arguments":{"x":' + literal + b"}}"
        body = body[:-1] + (b"," if len(body) > 2 else b"") + b'"' + key + b'":' + literal + b"}"
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    if draw(st.booleans()):
        # The same message past the size where the standard library takes over from orjson.
        body = body[:-1] + b',"pad":"' + b"p" * (65 * 1024) + b'"}' if body.endswith(b"}") else body
    return body


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads(), era=st.sampled_from([HANDSHAKE, MODERN]))
def test_jsonrpc_decode_agrees_with_the_sdk(payload: bytes, era: str) -> None:
    """Differential: what is a message is what the server's own decoder says it is.

    Arrays are left out: the Python SDK refuses every batch, the TypeScript SDK accepts them,
    and the middleware reads them so that either server's answer is attributed.
    """
    messages, reason = decode(payload, era)
    got = [(m.kind, m.id, m.method) for m in messages]
    expected = sdk_handshake(payload) if era == HANDSHAKE else sdk_modern(payload)
    assert (got, reason) == expected
    tried["jsonrpc payloads"] += 1


@settings(max_examples=1500, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=100),
        st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1000, 1100)),
        st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(1000, 1100)),
    ),
    wrap=st.sampled_from([bytes, bytearray]),
    era=st.sampled_from([HANDSHAKE, MODERN, SERVER]),
)
def test_jsonrpc_decode_never_raises(payload: Any, wrap: Any, era: str) -> None:
    value = wrap(payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass"))
    messages, reason = decode(value, era)
    assert reason in (None, "invalid_json", "not_jsonrpc", "too_large")
    tried["jsonrpc payloads"] += 1


# -- the ASGI tap, fed nonsense ---------------------------------------------------------------------

odd_values = st.one_of(
    st.none(),
    st.integers(-5, 700),
    st.text(max_size=5),
    st.binary(max_size=20),
    st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=3),
    st.just([(b"content-type", b"text/event-stream")]),
    st.just([(b"content-type", b"application/json")]),
    st.just([(b"Content-Type", b"application/json"), (b"content-encoding", b"gzip")]),
)
messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "http.response.start",
                "http.response.body",
                "http.response.body",
                "http.response.trailers",
                "http.response.pathsend",
                "bogus",
            ]
        )
    },
    optional={
        "status": odd_values,
        "headers": odd_values,
        "body": st.one_of(st.binary(max_size=60), odd_values),
        "more_body": st.one_of(st.booleans(), odd_values),
    },
)
received = st.fixed_dictionaries(
    {"type": st.sampled_from(["http.request", "http.disconnect", "websocket.receive", "bogus"])},
    optional={
        "body": st.one_of(st.just(b'{"jsonrpc":"2.0","id":1,"method":"ping"}'), odd_values),
        "more_body": st.one_of(st.booleans(), odd_values),
    },
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    to_send=st.lists(messages, max_size=6),
    to_receive=st.lists(received, min_size=1, max_size=4),
    reads=st.integers(0, 4),
)
def test_asgi_nonsense_passes_untouched_and_never_raises(
    to_send: list[Message], to_receive: list[Message], reads: int
) -> None:
    def factory() -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            for _ in range(reads):
                await receive()
            for message in to_send:
                await send(message)

        return app

    async def main() -> None:
        registry = CollectorRegistry()
        _, wrapped, _ = await compare(
            factory, scope(), b"", registry, call_options={"incoming": to_receive}
        )
        assert wrapped.error is None
        assert in_flight_total(registry) == 0

    anyio.run(main)
    tried["asgi scripts"] += 1


def test_zz_fuzz_figures() -> None:
    if any(tried.values()):
        figure(
            "fuzzing: "
            + ", ".join(f"{v} {k}" for k, v in tried.items())
            + " - no exception escaped; SSE and JSON-RPC outputs equal the references"
        )
