"""JSON-RPC 2.0 decoding that agrees with the server's own decoder. Never raises.

A middleware that reads a body differently from the server records operations that never
happened, or misses ones that did. So acceptance follows the MCP Python SDK, per protocol era,
at every body size:

* **handshake era** (no ``MCP-Protocol-Version`` header, or a version up to 2025-11-25): the SDK
  parses with ``pydantic_core.from_json`` and validates with a union of the four JSON-RPC models.
  That parser accepts ``NaN``, ``Infinity`` and ``1e400``; it rejects a UTF-8 BOM, lone surrogate
  escapes and nesting deeper than :data:`HANDSHAKE_MAX_DEPTH`. A message with a ``method`` whose
  ``id`` is not an integer or a string validates as a *notification* (the notification model
  ignores unknown keys), so the server answers it 202.
* **2026-07-28** (any other version header): ``json.loads`` on the raw bytes, which also accepts
  a BOM and lone surrogates. A body with an ``id`` member must be a valid request; anything else
  is rejected as a whole (400, -32600).

orjson is used first because it is fast; the standard library takes over when orjson refuses
what the era's decoder accepts, and for large bodies (smaller peak memory). Request ids are
keyed by their JSON type: only integers (not booleans) and strings are ids
(``RequestId = Annotated[int, Field(strict=True)] | str`` in ``mcp_types``), so no client value
ever needs serialising to become a key.

See: https://www.jsonrpc.org/specification
See: https://modelcontextprotocol.io/specification/2025-11-25/basic#requests
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson

REQUEST = "request"
NOTIFICATION = "notification"
RESPONSE = "response"
ERROR = "error"

HANDSHAKE = "handshake"  # protocol revisions up to 2025-11-25: initialize, sessions
MODERN = "modern"  # 2026-07-28 and later: self-contained requests, no session
SERVER = "server"  # messages the server sent: read as they come, the client's SDK is lenient

# Members of one batch that are decoded and tracked. The TypeScript SDK accepts at most 100;
# the Python SDK accepts none. Past it, the body is counted once as too large.
MAX_BATCH = 100
# pydantic_core.from_json refuses arrays or objects nested deeper than this (measured: 201).
HANDSHAKE_MAX_DEPTH = 201
_ORJSON_MAX = 64 * 1024  # above this the standard library decodes: about 3.5x smaller peak
_BOM = b"\xef\xbb\xbf"


class JSONRPCMessage(NamedTuple):
    """One decoded JSON-RPC message: what the exchange model needs, plus the raw object.

    ``id`` is the raw id when it is a valid request id (int or str), else ``None``. ``name`` is
    ``params.name`` of ``tools/call`` and ``prompts/get``, as the client sent it (not a label).
    ``meta`` is ``params._meta`` when it is an object. Built by :func:`classify` with
    ``tuple.__new__`` (one C call: about 0.25 us less per message than an ``__init__``).
    """

    kind: str
    id: Any
    method: str | None
    raw: dict[str, Any]
    size: int
    name: str | None = None
    meta: dict[str, Any] | None = None

    @property
    def result(self) -> Any:
        return self.raw.get("result")

    @property
    def error_code(self) -> int | None:
        """The integer ``error.code``, or ``None`` when there is none."""
        error = self.raw.get("error")
        if type(error) is dict:
            code = error.get("code")
            if type(code) is int:
                return code
            if type(code) is float and code.is_integer():
                return int(code)
        return None

    @property
    def is_tool_error(self) -> bool:
        """``result.isError`` is true (top level only: nested keys in content do not count)."""
        result = self.raw.get("result")
        return type(result) is dict and result.get("isError") is True

    @property
    def result_type(self) -> str | None:
        """``result.resultType`` (2026-07-28: ``"complete"`` or ``"input_required"``)."""
        result = self.raw.get("result")
        if type(result) is dict:
            value = result.get("resultType")
            if type(value) is str:
                return value
        return None


_new = tuple.__new__

# A client's string kept in a record (a tool or prompt name, clientInfo) has at most this many
# characters; a longer one is kept as TOO_LONG, which no label policy admits and no log line
# mistakes for a name. Records may outlive their request (a session's client info, a queue).
MAX_KEPT = 4096
TOO_LONG = "\x00(over 4096 characters)"


def kept(value: Any) -> str | None:
    """A client's string as records keep it: a str within MAX_KEPT, TOO_LONG, or None."""
    if type(value) is not str:
        return None
    return value if len(value) <= MAX_KEPT else TOO_LONG


def _answer(kind: str, id_: Any, obj: dict[str, Any], size: int) -> JSONRPCMessage:
    return _new(JSONRPCMessage, (kind, id_, None, obj, size, None, None))


def _call(kind: str, id_: Any, method: str, obj: dict[str, Any], size: int, params: Any) -> JSONRPCMessage:
    """A request or notification (``params``: its ``obj["params"]``), with ``params.name`` and
    ``params._meta`` read once."""
    name = meta = None
    if len(method) > MAX_KEPT:
        method = TOO_LONG  # no known method is this long: a record keeps the marker
    if type(params) is dict:
        meta = params.get("_meta")
        if type(meta) is not dict:
            meta = None
        if method == "tools/call" or method == "prompts/get":
            name = kept(params.get("name"))
    return _new(JSONRPCMessage, (kind, id_, method, obj, size, name, meta))


def id_key(value: Any) -> int | str | None:
    """The correlation key of an id: the id itself when it is an int or a str, else ``None``.

    ``True == 1`` and ``1.0 == 1`` in Python, so a bool or float must never reach a dict lookup
    as a key: such ids are not request ids and match nothing.
    """
    t = type(value)
    if t is int or t is str:
        return value  # type: ignore[no-any-return]
    return None


def _valid_id(value: Any) -> bool:
    t = type(value)
    return t is int or t is str


def classify(obj: Any, size: int, era: str = SERVER) -> JSONRPCMessage | None:
    """One JSON value as the ``era``'s receiver would read it; ``None`` if it is not JSON-RPC."""
    if type(obj) is not dict:
        return None
    method = obj.get("method")
    if era is SERVER:
        if method is not None:
            if type(method) is not str:
                return None
            if "id" in obj:
                id_ = obj["id"]
                t = type(id_)
                return _call(REQUEST, id_ if t is int or t is str else None, method, obj, size, obj.get("params"))
            return _call(NOTIFICATION, None, method, obj, size, obj.get("params"))
        if "id" in obj:
            id_ = obj["id"]
            t = type(id_)
            if t is not int and t is not str:
                id_ = None  # not a request id: it answers nothing (see id_key)
            if "error" in obj:
                return _new(JSONRPCMessage, (ERROR, id_, None, obj, size, None, None))
            if "result" in obj:
                return _new(JSONRPCMessage, (RESPONSE, id_, None, obj, size, None, None))
        return None
    # A client's message, as the server's validation reads it: jsonrpc must be "2.0".
    if obj.get("jsonrpc") != "2.0":
        return None
    if method is not None:
        params = obj.get("params")
        if type(method) is not str or not (params is None or type(params) is dict):
            return None
        if "id" not in obj:
            return _call(NOTIFICATION, None, method, obj, size, params)
        id_ = obj["id"]
        t = type(id_)
        if t is int or t is str:
            return _call(REQUEST, id_, method, obj, size, params)
        if era is MODERN:
            return None  # the server rejects the whole body (400, -32600)
        # pydantic's notification model ignores unknown keys: an invalid id makes a
        # notification, and the SDK answers 202.
        return _call(NOTIFICATION, None, method, obj, size, params)
    if era is MODERN or "id" not in obj:
        return None  # 2026-07-28 servers accept only requests and notifications
    id_ = obj["id"]
    if type(obj.get("result")) is dict and _valid_id(id_):
        return _answer(RESPONSE, id_, obj, size)
    error = obj.get("error")
    if (
        type(error) is dict
        and type(error.get("message")) is str
        and _lax_int(error.get("code"))
        and (id_ is None or _valid_id(id_))
    ):
        return _answer(ERROR, id_, obj, size)
    return None


def _lax_int(value: Any) -> bool:
    """pydantic's lax ``int``: an int or bool, an integral float, or a string of an integer."""
    t = type(value)
    if t is int or t is bool:
        return True
    if t is float:
        return bool(value.is_integer())
    if t is str:
        try:
            int(value.strip())
        except ValueError:
            return False
        return True
    return False


def _depth_over(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests arrays or objects deeper than ``limit`` (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if type(value) is dict:
            stack.extend((v, depth + 1) for v in value.values() if type(v) in (dict, list))
        elif type(value) is list:
            stack.extend((v, depth + 1) for v in value if type(v) in (dict, list))
    return False


def _has_surrogate(obj: Any) -> bool:
    """True if a string anywhere in ``obj`` (keys included) holds a lone surrogate."""
    stack = [obj]
    while stack:
        value = stack.pop()
        t = type(value)
        if t is str:
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif t is dict:
            stack.extend(value.keys())
            stack.extend(value.values())
        elif t is list:
            stack.extend(value)
    return False


_FAILED = object()


def _surrogate_escape(payload: bytes | bytearray) -> bool:
    """A cheap pre-check: lone surrogates can only come from ``\\uD800``-``\\uDFFF`` escapes."""
    return b"\\ud" in payload or b"\\uD" in payload


def loads(payload: bytes | bytearray, era: str = SERVER) -> Any:
    """Parse ``payload`` as the ``era``'s decoder would; returns ``_FAILED`` if it would refuse."""
    if era is not MODERN and (payload[:3] == _BOM or b"\x00" in payload[:4]):
        # pydantic_core.from_json reads UTF-8 only and refuses a BOM; json.loads(bytes) skips a
        # BOM and detects UTF-16/32 by the NULs in the first four bytes.
        return _FAILED
    try:
        if len(payload) <= _ORJSON_MAX:
            obj = orjson.loads(payload)
        else:
            obj = json.loads(payload)
            if era is not MODERN and _surrogate_escape(payload) and _has_surrogate(obj):
                return _FAILED
    except (ValueError, TypeError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        # orjson refuses NaN, Infinity, 1e400, lone surrogates, a BOM and very deep nesting,
        # which the standard library accepts: decide by the era's decoder, not by orjson.
        try:
            obj = json.loads(payload)
        except (ValueError, TypeError, RecursionError):
            return _FAILED
        if era is not MODERN and _surrogate_escape(payload) and _has_surrogate(obj):
            return _FAILED
    if era is HANDSHAKE and (payload.count(b"[") + payload.count(b"{")) > HANDSHAKE_MAX_DEPTH:
        if _depth_over(obj, HANDSHAKE_MAX_DEPTH):
            return _FAILED
    return obj


def decode(payload: bytes | bytearray, era: str = SERVER) -> tuple[list[JSONRPCMessage], str | None]:
    """Decode one JSON-RPC message or batch, read as the ``era``'s receiver would read it.

    Returns the messages that could be classified and, if anything went wrong, the reason:
    ``"invalid_json"``, ``"not_jsonrpc"`` or, for a batch of more than :data:`MAX_BATCH`
    members, ``"too_large"`` (no members are returned then).
    """
    head = payload[:1]
    if head == b"{" and len(payload) <= _ORJSON_MAX:
        # The common case, one small object: orjson accepting it settles the question (it
        # refuses a BOM, NULs and everything else a stricter decoder would), so no other
        # check is needed before the message is classified.
        try:
            obj = orjson.loads(payload)
        except ValueError:
            obj = loads(payload, era)  # decide by the era's decoder
            if obj is _FAILED:
                return [], "invalid_json"
        else:
            if era is HANDSHAKE and (payload.count(b"[") + payload.count(b"{")) > HANDSHAKE_MAX_DEPTH:
                if _depth_over(obj, HANDSHAKE_MAX_DEPTH):
                    return [], "invalid_json"
        message = classify(obj, len(payload), era)
        if message is None:
            return [], "not_jsonrpc"
        return [message], None
    if head == b"[" or (head in (b" ", b"\t", b"\r", b"\n") and payload.lstrip()[:1] == b"["):
        return _decode_batch(payload, era)
    obj = loads(payload, era)
    if obj is _FAILED:
        return [], "invalid_json"
    if type(obj) is list:  # a batch after a BOM
        return _members(obj, era)
    message = classify(obj, len(payload), era)
    if message is None:
        return [], "not_jsonrpc"
    return [message], None


def _decode_batch(payload: bytes | bytearray, era: str) -> tuple[list[JSONRPCMessage], str | None]:
    if len(payload) > _ORJSON_MAX and _too_many_members(payload):
        # Decoding every member of a huge array costs time and memory out of all proportion
        # (52,000 tiny requests in 4 MiB: about 60 MiB of objects): stop after the cap.
        return [], "too_large"
    obj = loads(payload, era)
    if obj is _FAILED:
        return [], "invalid_json"
    if type(obj) is not list:  # pragma: no cover - a payload starting with "[" is an array
        return [], "not_jsonrpc"
    return _members(obj, era)


def _too_many_members(payload: bytes | bytearray) -> bool:
    """True if the array has more than MAX_BATCH members (decodes at most MAX_BATCH + 1)."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return False  # the full decode reports it
    decoder = json.JSONDecoder()
    index = text.index("[") + 1
    for _ in range(MAX_BATCH + 1):
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text) or text[index] == "]":
            return False
        try:
            _value, index = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            return False  # the full decode reports it
    return True


def _members(items: list[Any], era: str) -> tuple[list[JSONRPCMessage], str | None]:
    if not items:
        return [], "not_jsonrpc"
    if len(items) > MAX_BATCH:
        return [], "too_large"
    messages: list[JSONRPCMessage] = []
    reason: str | None = None
    for item in items:
        # The size of each member of a batch is its compact re-serialisation.
        try:
            size = len(orjson.dumps(item))
        except (orjson.JSONEncodeError, TypeError):  # an integer past 64 bits
            size = 0
        message = classify(item, size, era)
        if message is None:
            reason = "not_jsonrpc"
        else:
            messages.append(message)
    return messages, reason
