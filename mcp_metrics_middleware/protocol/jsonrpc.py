"""Pure JSON-RPC 2.0 classification. Never raises: failures come back as a reason string."""

from __future__ import annotations

import json
from typing import Any

import orjson

_ORJSON_MAX = 64 * 1024

REQUEST = "request"
NOTIFICATION = "notification"
RESPONSE = "response"
ERROR = "error"


class JSONRPCMessage:
    """One decoded JSON-RPC message; only what the metrics need, plus the raw object."""

    __slots__ = ("kind", "id", "method", "name", "raw", "size")

    def __init__(
        self, kind: str, id: Any, method: str | None, raw: dict[str, Any], size: int
    ) -> None:
        self.kind = kind
        self.id = id
        self.method = method
        self.raw = raw
        self.size = size
        # params.name for tools/call and prompts/get (client-supplied; not yet a label value).
        self.name: str | None = None
        if method is not None and (method == "tools/call" or method == "prompts/get"):
            params = raw.get("params")
            if type(params) is dict:
                name = params.get("name")
                if type(name) is str:
                    self.name = name

    @property
    def result(self) -> Any:
        return self.raw.get("result")

    @property
    def error_code(self) -> int | None:
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
        result = self.raw.get("result")
        return type(result) is dict and result.get("isError") is True

    def __repr__(self) -> str:
        return f"JSONRPCMessage({self.kind!r}, id={self.id!r}, method={self.method!r})"


def id_key(value: Any) -> Any:
    """A dict key that keeps JSON types apart (1, 1.0, "1" and true are different ids)."""
    t = type(value)
    if t is int or t is str:
        return value
    if t is float:
        return ("float", value)
    if t is bool:
        return ("bool", value)
    if value is None:
        return None
    return ("json", orjson.dumps(value))


def classify(obj: Any, size: int) -> JSONRPCMessage | None:
    if type(obj) is not dict:
        return None
    method = obj.get("method")
    if method is not None:
        if type(method) is not str:
            return None
        if "id" in obj:
            return JSONRPCMessage(REQUEST, obj["id"], method, obj, size)
        return JSONRPCMessage(NOTIFICATION, None, method, obj, size)
    if "id" in obj:
        if "error" in obj:
            return JSONRPCMessage(ERROR, obj["id"], None, obj, size)
        if "result" in obj:
            return JSONRPCMessage(RESPONSE, obj["id"], None, obj, size)
    return None


def decode(
    payload: bytes | str,
) -> tuple[list[JSONRPCMessage], str | None]:
    """Decode a JSON-RPC message or batch.

    Returns the messages that could be classified and, if anything went wrong, the reason
    (``"invalid_json"`` or ``"not_jsonrpc"``). A batch with some bad members returns the good
    ones and ``"not_jsonrpc"``.
    """
    try:
        if len(payload) <= _ORJSON_MAX:
            obj = orjson.loads(payload)
        else:
            # Large bodies are mostly tool output: the standard library builds the same objects
            # with a peak about 3.5 times smaller than orjson's, at a similar speed.
            obj = json.loads(payload)
    except (ValueError, TypeError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return [], "invalid_json"
    if type(obj) is list:
        if not obj:
            return [], "not_jsonrpc"
        messages: list[JSONRPCMessage] = []
        reason: str | None = None
        for item in obj:
            # The size of each member of a batch is its compact re-serialisation.
            try:
                size = len(orjson.dumps(item))
            except (orjson.JSONEncodeError, TypeError):  # pragma: no cover - loads() output
                size = 0
            message = classify(item, size)
            if message is None:
                reason = "not_jsonrpc"
            else:
                messages.append(message)
        return messages, reason
    message = classify(obj, len(payload))
    if message is None:
        return [], "not_jsonrpc"
    return [message], None
