from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_metrics_middleware.protocol.jsonrpc import ERROR, NOTIFICATION, REQUEST, RESPONSE, decode, id_key
from mcp_metrics_middleware.protocol.model import header_name as _header_value


def test_kinds() -> None:
    (req,), reason = decode(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nap"}}'
    )
    assert (req.kind, req.id, req.method, req.name, reason) == (
        REQUEST,
        1,
        "tools/call",
        "nap",
        None,
    )
    (note,), _ = decode(b'{"jsonrpc":"2.0","method":"notifications/progress"}')
    assert (note.kind, note.id) == (NOTIFICATION, None)
    (res,), _ = decode(b'{"jsonrpc":"2.0","id":"a","result":{"isError":true}}')
    assert (res.kind, res.is_tool_error, res.error_code) == (RESPONSE, True, None)
    (err,), _ = decode(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}')
    assert (err.kind, err.id, err.error_code) == (ERROR, None, -32700)


def test_is_error_only_at_the_top_of_the_result() -> None:
    # A nested structuredContent key must not count (a byte search would be fooled).
    body = b'{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"isError":true}}}'
    (res,), _ = decode(body)
    assert res.is_tool_error is False


@pytest.mark.parametrize(
    ("payload", "reason", "count"),
    [
        (b"", "invalid_json", 0),
        (b"\xff\xfe", "invalid_json", 0),
        (b"{nope", "invalid_json", 0),
        (b"[" * 2000 + b"]" * 2000, "invalid_json", 0),  # past orjson's depth limit
        (b"[]", "not_jsonrpc", 0),
        (b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}', None, 1),
        (b"42", "not_jsonrpc", 0),
        (b'{"jsonrpc":"2.0"}', "not_jsonrpc", 0),
        (b'{"method":5,"id":1}', "not_jsonrpc", 0),
        (b'[{"jsonrpc":"2.0","method":"ping","id":1}, 7]', "not_jsonrpc", 1),
    ],
)
def test_failures_are_reasons_never_exceptions(
    payload: bytes, reason: str | None, count: int
) -> None:
    messages, got = decode(payload)
    assert (len(messages), got) == (count, reason)


def test_batch_member_sizes_are_their_own() -> None:
    a = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    b = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": "x" * 50}}
    messages, _ = decode(orjson.dumps([a, b]))
    assert [m.size for m in messages] == [len(orjson.dumps(a)), len(orjson.dumps(b))]


def test_id_keys_keep_json_types_apart() -> None:
    # Only integers and strings are request ids (mcp_types.RequestId); 1.0 == 1 == True in
    # Python, so the others must never reach a dict lookup: they key to None and match nothing.
    assert id_key(1) == 1 and id_key("1") == "1" and id_key(1) != id_key("1")
    for value in (1.0, True, [1], {"a": 1}, None, [[[[1]]]]):
        assert id_key(value) is None


def test_base64_header_names() -> None:
    assert _header_value("=?base64?Y2hhdOKAmXM=?=") == "chat’s"
    assert _header_value("plain") == "plain"
    assert _header_value("=?base64?!!!?=") == "=?base64?!!!?="


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_on_bytes(payload: bytes) -> None:
    messages, reason = decode(payload)
    assert reason is None or reason in ("invalid_json", "not_jsonrpc")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["jsonrpc", "id", "method", "params", "result", "error", "name", "code"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_decode_never_raises_on_json(value: object) -> None:
    messages, _ = decode(orjson.dumps(value))
    for message in messages:
        assert message.kind in (REQUEST, NOTIFICATION, RESPONSE, ERROR)
        _ = (message.error_code, message.is_tool_error, message.result)


def test_large_bodies_decode_the_same_way() -> None:
    big = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"text": "x" * 100}] * 2000, "isError": True}}
    payload = orjson.dumps(big)
    assert len(payload) > 64 * 1024
    (message,), reason = decode(payload)
    assert (message.kind, message.id, message.is_tool_error, reason) == (RESPONSE, 7, True, None)
    assert decode(b"[" * 100_000 + b"]" * 100_000) == ([], "invalid_json")  # deep, and large
    assert decode(b'{"a": ' + b"1" * 70_000) == ([], "invalid_json")
