"""The ASGI middleware: the only module that knows ASGI.

It taps ``receive`` and ``send`` on the MCP path. Every message is handed on unchanged and at
once; the middleware looks at the same bytes afterwards, within a size cap, and never lets a
decoding problem reach the app or the client.
"""

from __future__ import annotations

import base64
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from mcp_metrics_middleware._types import ASGIApp, Message, Receive, Scope, Send
from mcp_metrics_middleware.config import (
    CALLER_ERROR_CODES,
    CANCELLED_CODE,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_PARKED,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_PARKED_TIMEOUT,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    OTHER,
)
from mcp_metrics_middleware.exposition import MetricsEndpoint
from mcp_metrics_middleware.protocol.jsonrpc import (
    ERROR,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    JSONRPCMessage,
    decode,
    id_key,
)
from mcp_metrics_middleware.metrics import MCPMetrics
from mcp_metrics_middleware.protocol.sse import SSEDecoder

_JSON, _SSE, _OTHER_BODY = 1, 2, 3
_NOTIFICATION_PREFIX = b'{"jsonrpc":"2.0","method":"notifications/'
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}
_HOUSEKEEPING_INTERVAL = 1.0  # seconds between sweeps of idle sessions and parked operations
_ANY = object()  # pending key of an operation known only from the mcp-method header


class _Operation:
    """One JSON-RPC request or notification the client sent, until it is answered."""

    __slots__ = (
        "method",
        "method_label",
        "name",
        "start",
        "version",
        "size",
        "gauge",
        "done",
        "parked",
    )

    def __init__(
        self,
        method: str,
        method_label: str,
        name: str | None,
        start: float,
        version: str,
        size: int,
        gauge: tuple[str, str],
    ) -> None:
        self.method = method
        self.method_label = method_label
        self.name = name
        self.start = start
        self.version = version
        self.size = size
        self.gauge = gauge
        self.done = False
        self.parked = False  # handed to _Parked: no longer this exchange's to record


class _Sessions:
    """Legacy-era sessions: id -> (start, protocol version), bounded in count and idle time."""

    def __init__(self, metrics: MCPMetrics, idle_timeout: float, max_sessions: int) -> None:
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        # id -> [start, last_seen, version]; ordered by last_seen.
        self.table: OrderedDict[str, list[Any]] = OrderedDict()

    def start(self, session_id: str, now: float) -> None:
        if session_id in self.table:
            return
        while len(self.table) >= self.max_sessions:
            old_id = next(iter(self.table))
            self.end(old_id, now)
        self.table[session_id] = [now, now, ""]
        self.metrics.session_started()

    def set_version(self, session_id: str, version: str) -> None:
        entry = self.table.get(session_id)
        if entry is not None:
            entry[2] = version

    def touch(self, session_id: str, now: float) -> None:
        entry = self.table.get(session_id)
        if entry is not None:
            entry[1] = now
            self.table.move_to_end(session_id)

    def end(self, session_id: str, now: float) -> None:
        entry = self.table.pop(session_id, None)
        if entry is not None:
            self.metrics.session_ended(entry[2], now - entry[0])

    def expire(self, now: float) -> None:
        table = self.table
        while table:
            session_id, entry = next(iter(table.items()))
            if now - entry[1] < self.idle_timeout:
                break
            # Idle expiry: the session ended when it was last seen.
            table.popitem(last=False)
            self.metrics.session_ended(entry[2], entry[1] - entry[0])


class _Parked:
    """Operations whose POST stream closed without a response (resumability).

    The response may come back later on the session's GET stream; it is matched by
    (session id, JSON-RPC id). Bounded in count and in time: past either, the operation is
    recorded with ``error_type="no_response"``.
    """

    def __init__(self, timeout: float, max_parked: int) -> None:
        self.timeout = timeout
        self.max_parked = max_parked
        self.table: OrderedDict[tuple[str, Any], tuple[_Operation, float]] = OrderedDict()

    def park(self, key: tuple[str, Any], op: _Operation, now: float) -> _Operation | None:
        """Park ``op``; returns an operation evicted to keep the bound, if any."""
        evicted = None
        if len(self.table) >= self.max_parked:
            evicted = self.table.popitem(last=False)[1][0]
        previous = self.table.pop(key, None)
        self.table[key] = (op, now)
        return previous[0] if previous is not None else evicted

    def drop_session(self, session_id: str) -> list[_Operation]:
        """The session ended: its parked operations can never be answered."""
        keys = [key for key in self.table if key[0] == session_id]
        return [self.table.pop(key)[0] for key in keys]

    def take(self, key: tuple[str, Any]) -> _Operation | None:
        item = self.table.pop(key, None)
        return item[0] if item is not None else None

    def expired(self, now: float) -> list[_Operation]:
        out = []
        table = self.table
        while table:
            _key, (op, parked_at) = next(iter(table.items()))
            if now - parked_at < self.timeout:
                break
            table.popitem(last=False)
            out.append(op)
        return out


class MCPMetricsMiddleware:
    """Record per-method and per-tool Prometheus metrics for an MCP server.

    Wrap any ASGI MCP app: ``app = MCPMetricsMiddleware(mcp.streamable_http_app())``, or
    ``starlette_app.add_middleware(MCPMetricsMiddleware)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: CollectorRegistry = REGISTRY,
        metrics: MCPMetrics | None = None,
        mcp_path: str | Iterable[str] = "/mcp",
        metrics_path: str | None = "/metrics",
        metrics_token: str | None = None,
        known_tools: Iterable[str] = (),
        known_prompts: Iterable[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        parked_timeout: float = DEFAULT_PARKED_TIMEOUT,
        max_parked: int = DEFAULT_MAX_PARKED,
    ) -> None:
        self.app = app
        if max_body_size < 1:
            raise ValueError("max_body_size must be positive")
        self.metrics = metrics if metrics is not None else MCPMetrics.for_registry(registry)
        # The static allow-list is the operator's word: admitted regardless of the cap.
        self.metrics.tools.update(known_tools)
        self.metrics.prompts.update(known_prompts)
        paths = (mcp_path,) if isinstance(mcp_path, str) else tuple(mcp_path)
        self.mcp_paths = frozenset(p.rstrip("/") or "/" for p in paths)
        self.metrics_path = metrics_path
        self.metrics_endpoint = (
            MetricsEndpoint(self.metrics.registry or registry, metrics_token)
            if metrics_path is not None
            else None
        )
        self.max_body_size = max_body_size
        self.sessions = _Sessions(self.metrics, session_idle_timeout, max_sessions)
        self.parked = _Parked(parked_timeout, max_parked)
        self.clock = time.perf_counter
        self.next_housekeeping = 0.0

    def _route(self, scope: Scope) -> int:
        """0: pass through, 1: MCP path, 2: metrics path."""
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        candidates = [path]
        if root_path:
            if path.startswith(root_path):
                candidates.append(path[len(root_path) :] or "/")
            else:
                candidates.append(root_path + path)
        for candidate in candidates:
            if candidate in self.mcp_paths:
                return 1
            if candidate == self.metrics_path:
                return 2
        return 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        if route == 0:
            await self.app(scope, receive, send)
            return
        if route == 2:
            assert self.metrics_endpoint is not None
            self.housekeeping(self.clock())
            await self.metrics_endpoint(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            exchange.finish(exc)
            raise
        exchange.finish(None)

    def housekeeping(self, now: float) -> None:
        """Expire idle sessions and parked operations (cheap: only looks at the oldest)."""
        self.next_housekeeping = now + _HOUSEKEEPING_INTERVAL
        try:
            self.sessions.expire(now)
            for op in self.parked.expired(now):
                _record(self, op, now, "no_response", "", None)
        except Exception:
            self.metrics.parse_error("internal")


def _record(
    mw: MCPMetricsMiddleware,
    op: _Operation,
    now: float,
    error_type: str,
    code: str,
    response: JSONRPCMessage | None,
    version: str | None = None,
    sent: tuple[str, str, str] | None = None,
) -> None:
    """Record one finished operation, exactly once (and ``sent``, the answer's message)."""
    if op.done:
        return
    op.done = True
    metrics = mw.metrics
    name = op.name
    tool = prompt = ""
    if name is not None:
        method = op.method
        if method == "tools/call":
            if not error_type and response is not None and response.kind == RESPONSE:
                if name not in metrics.tools:
                    metrics.learn_tools((name,))
            tool = metrics.tool_label(name)
        elif method == "prompts/get":
            if not error_type and response is not None and response.kind == RESPONSE:
                if name not in metrics.prompts:
                    metrics.learn_prompts((name,))
            prompt = metrics.prompt_label(name)
    metrics.operation(
        op.gauge,
        metrics.operation_labels(
            (
                op.method_label,
                tool,
                prompt,
                error_type,
                code,
                op.version if version is None else version,
            )
        ),
        now - op.start,
        (op.method_label, tool),
        op.size,
        0 if response is None else response.size,
        sent,
    )


def _error_outcome(mw: MCPMetricsMiddleware, msg: JSONRPCMessage) -> tuple[str, str]:
    """(error_type, rpc_response_status_code) for a JSON-RPC error message."""
    code = msg.error_code
    if code is None:
        return OTHER, ""
    label = mw.metrics.code_label(code)
    if code == CANCELLED_CODE:
        return "cancelled", label
    if code in CALLER_ERROR_CODES:
        return "", label
    if label == OTHER:
        mw.metrics.overflow("error_type")
    return label, label


def _notification_method(payload: bytes) -> bytes | None:
    """The method of a notification serialised the SDKs' way, read without decoding it.

    Progress and log notifications can be most of a stream, and only their method is needed.
    """
    if payload[:41] == _NOTIFICATION_PREFIX:
        end = payload.find(b'"', 27, 27 + 128)
        if end != -1 and payload.find(b"\\", 27, end) == -1:
            return payload[27:end]
    return None


def _header_value(value: str) -> str:
    """Undo the ``=?base64?...?=`` wrapping MCP uses for non-ASCII ``mcp-name`` values."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def _names(result: Any, key: str) -> list[Any]:
    if type(result) is dict:
        items = result.get(key)
        if type(items) is list:
            return [item.get("name") for item in items if type(item) is dict]
    return []


class _Exchange:
    """Per-HTTP-request state, created in ``__call__``; never stored on the middleware.

    Attributes that most exchanges never change are class-level defaults, so creating one costs
    a handful of assignments.
    """

    session_id: str | None = None
    version = ""
    header_method: str | None = None
    header_name: str | None = None
    request_encoded = False
    req_chunks: list[bytes] | None = None
    req_size = 0
    req_state = 0  # 0 reading, 1 decoded, 2 skipped
    status = 0
    kind = 0
    resp_chunks: list[bytes] | None = None
    resp_skip = False
    resp_buffered = 0
    sse: SSEDecoder | None = None
    inflate: Any = None
    started = False
    complete = False
    disconnected = False
    send_failed = False
    new_session: str | None = None  # the session this exchange's initialize opened

    def __init__(
        self, mw: MCPMetricsMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.mw = mw
        self.metrics = mw.metrics
        self._receive = receive
        self._send = send
        self.start = now = mw.clock()
        self.http_method: str = scope.get("method", "GET")
        self.pending: dict[Any, list[_Operation]] = {}
        self.notes: list[_Operation] = []
        self.ops: list[_Operation] = []
        try:
            # ASGI request header names are lowercase; dict() is one C call.
            headers = dict(scope.get("headers", ()))
            if headers.get(b"mcp-protocol-version") is not None:
                self.version = self.metrics.version_label(
                    headers[b"mcp-protocol-version"].decode("latin-1")
                )
            value = headers.get(b"mcp-session-id")
            if value is not None:
                self.session_id = value.decode("latin-1")
            value = headers.get(b"mcp-method")
            if value is not None:
                self.header_method = value.decode("latin-1")
                value = headers.get(b"mcp-name")
                if value is not None:
                    self.header_name = value.decode("latin-1")
            value = headers.get(b"content-encoding")
            if value is not None and value.lower() not in (b"identity", b""):
                self.request_encoded = True
            if now >= mw.next_housekeeping:
                mw.housekeeping(now)
            if self.session_id is not None:
                mw.sessions.touch(self.session_id, now)
        except Exception:
            self.metrics.parse_error("internal")

    # -- receive side ---------------------------------------------------------------------

    async def receive(self) -> Message:
        message = await self._receive()
        try:
            mtype = message["type"]
            if mtype == "http.request":
                if self.req_state == 0:
                    self._request_body(message)
            elif mtype == "http.disconnect":
                self.disconnected = True
        except Exception:
            self.metrics.parse_error("internal")
        return message

    def _request_body(self, message: Message) -> None:
        body = message.get("body", b"")
        more = message.get("more_body", False)
        chunks = self.req_chunks
        if body:
            self.req_size += len(body)
            if self.req_size > self.mw.max_body_size:
                self.req_state = 2
                self.req_chunks = None
                self.metrics.parse_error("too_large")
                return
            if more or chunks:
                if chunks is None:
                    chunks = self.req_chunks = []
                chunks.append(body)
        if more:
            return
        self.req_state = 1
        if chunks:
            self.req_chunks = None
            body = b"".join(chunks)
        if not body:
            return  # an empty body (GET, DELETE, or an empty POST): nothing to decode
        if self.request_encoded:
            self.metrics.parse_error("encoding")
            return
        messages, reason = decode(body)
        if reason is not None:
            self.metrics.parse_error(reason)
        if messages:
            self._client_messages(messages)

    def _client_messages(self, messages: list[JSONRPCMessage]) -> None:
        metrics = self.metrics
        mw = self.mw
        for msg in messages:
            kind = msg.kind
            if kind == REQUEST or kind == NOTIFICATION:
                method = msg.method
                assert method is not None
                method_label = metrics.method_label(method)
                name = msg.name
                if name is None:
                    tool = ""
                elif method == "tools/call":
                    tool = name if name in metrics.tools else OTHER
                else:
                    tool = ""
                gauge = (method_label, tool)
                metrics.start(gauge, ("received", kind, method_label))
                op = _Operation(
                    method, method_label, name, self.start, self.version, msg.size, gauge
                )
                self.ops.append(op)
                if kind == REQUEST:
                    key = id_key(msg.id)
                    waiting = self.pending.get(key)
                    if waiting is None:
                        self.pending[key] = [op]
                    else:
                        waiting.append(op)  # duplicate ids: answered in order
                else:
                    self.notes.append(op)
                    if self.started and 200 <= self.status < 300:
                        # The ack went out before the app finished reading the body.
                        _record(mw, op, mw.clock(), "", "", None)
            else:
                metrics.message(("received", kind, ""))

    # -- send side ------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        now = self.mw.clock()
        try:
            await self._send(message)
        except BaseException:
            self.send_failed = True
            raise
        try:
            mtype = message["type"]
            if mtype == "http.response.body":
                if self.started and not self.complete:
                    self._response_body(message, now)
                else:
                    # A body before the response started, or after it was complete.
                    self.metrics.parse_error("asgi_protocol")
            elif mtype == "http.response.start":
                self._response_start(message, now)
        except Exception:
            self.metrics.parse_error("internal")

    def _response_start(self, message: Message, now: float) -> None:
        if self.started:
            self.metrics.parse_error("asgi_protocol")
            return
        self.started = True
        status = message.get("status", 0)
        # Starlette passes http.HTTPStatus members through: an int subclass.
        self.status = int(status) if isinstance(status, int) else 0
        raw = message.get("headers", ())
        headers = dict(raw)
        content_type = headers.get(b"content-type")
        if content_type is None and raw:
            # Not every stack lowercases response header names.
            headers = {key.lower(): value for key, value in raw}
            content_type = headers.get(b"content-type")
        encoding = (headers.get(b"content-encoding") or b"").strip().lower()
        new_session = headers.get(b"mcp-session-id")
        if content_type is None:
            content_type = b""
        if content_type == b"application/json" or content_type == b"text/event-stream":
            mime = content_type  # what the SDKs send: no parameters to strip
        else:
            mime = content_type.split(b";", 1)[0].strip().lower()
        if mime == b"text/event-stream":
            self.kind = _SSE
            self.sse = SSEDecoder(self.mw.max_body_size)
        elif mime == b"application/json" or mime.endswith(b"+json"):
            self.kind = _JSON
        else:
            self.kind = _OTHER_BODY
        if encoding and encoding != b"identity" and self.kind != _OTHER_BODY:
            if encoding in (b"gzip", b"x-gzip"):
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif encoding == b"deflate":
                self.inflate = zlib.decompressobj()
            else:
                self.metrics.parse_error("encoding")
                self.resp_skip = True

        if not self.ops and self.req_state != 1 and self.header_method is not None:
            self._operation_from_headers()

        status = self.status
        mw = self.mw
        if 200 <= status < 300 and self.notes:
            for op in self.notes:
                _record(mw, op, now, "", "", None)
        session_id = self.session_id
        if status < 400 and new_session is not None and session_id is None:
            for op in self.ops:
                if op.method == "initialize":
                    self.new_session = new_session.decode("latin-1")
                    mw.sessions.start(self.new_session, now)
                    break
        if session_id is not None:
            if status == 404 or (self.http_method == "DELETE" and 200 <= status < 300):
                mw.sessions.end(session_id, now)
                if mw.parked.table:
                    for op in mw.parked.drop_session(session_id):
                        _record(mw, op, now, "no_response", "", None)

    def _operation_from_headers(self) -> None:
        """Modern requests name their operation in headers; used when the body was never read."""
        metrics = self.metrics
        method = self.header_method
        assert method is not None
        method_label = metrics.method_label(method)
        name = None
        if method in ("tools/call", "prompts/get") and self.header_name is not None:
            name = _header_value(self.header_name)
        tool = (
            ""
            if name is None or method != "tools/call"
            else (name if name in metrics.tools else OTHER)
        )
        gauge = (method_label, tool)
        metrics.start(gauge, ("received", REQUEST, method_label))
        op = _Operation(method, method_label, name, self.start, self.version, 0, gauge)
        self.ops.append(op)
        self.pending[_ANY] = [op]

    def _response_body(self, message: Message, now: float) -> None:
        body = message.get("body", b"")
        more = message.get("more_body", False)
        kind = self.kind
        if body:
            if self.resp_skip or kind == _OTHER_BODY:
                pass
            elif self.inflate is not None:
                self._inflate(body, now)
            elif kind == _SSE:
                self._sse(body, now)
            elif more or self.resp_chunks:
                self._json_chunk(body)
            else:
                # The common case: the whole JSON body in one message.
                self.complete = True
                if len(body) > self.mw.max_body_size:
                    self.resp_skip = True
                    self.metrics.parse_error("too_large")
                else:
                    self._json_payload(body, now)
                self._finish_pending(now, None)
                return
        if not more:
            self.complete = True
            if kind == _JSON and not self.resp_skip:
                if self.inflate is not None:
                    try:
                        tail = self.inflate.flush()
                    except zlib.error:
                        tail = b""
                        self.metrics.parse_error("encoding")
                    if tail:
                        self._json_chunk(tail)
                chunks = self.resp_chunks
                if chunks and not self.resp_skip:
                    self.resp_chunks = None
                    self._json_payload(b"".join(chunks), now)
            elif kind == _SSE and self.sse is not None and self.sse.pending:
                self.metrics.parse_error("truncated")
            self._finish_pending(now, None)

    def _inflate(self, body: bytes, now: float) -> None:
        inflate = self.inflate
        cap = self.mw.max_body_size
        try:
            data = inflate.decompress(body, cap)
            while True:
                if self.kind == _SSE:
                    self._sse(data, now)
                else:
                    self._json_chunk(data)
                if self.resp_skip or not inflate.unconsumed_tail:
                    break
                data = inflate.decompress(inflate.unconsumed_tail, cap)
        except zlib.error:
            self.metrics.parse_error("encoding")
            self.resp_skip = True

    def _json_chunk(self, data: bytes) -> None:
        if self.resp_skip:
            return
        chunks = self.resp_chunks
        if chunks is None:
            chunks = self.resp_chunks = []
        chunks.append(data)
        self.resp_buffered += len(data)
        if self.resp_buffered > self.mw.max_body_size:
            self.resp_skip = True
            self.resp_chunks = None
            self.metrics.parse_error("too_large")

    def _json_payload(self, payload: bytes, now: float) -> None:
        messages, reason = decode(payload)
        if reason is not None:
            self.metrics.parse_error(reason)
        if messages:
            self._server_messages(messages, now)

    def _sse(self, data: bytes, now: float) -> None:
        sse = self.sse
        assert sse is not None
        oversized = sse.oversized
        events = sse.feed(data)
        metrics = self.metrics
        if sse.oversized != oversized:
            for _ in range(sse.oversized - oversized):
                metrics.parse_error("too_large")
        if len(events) == 1 and events[0].event == b"message":
            # The SDKs' shape, one event per chunk: a notification goes straight to its counter.
            method = _notification_method(events[0].data)
            if method is not None:
                label = metrics.method_label(method.decode("utf-8", "replace"))
                metrics.message(("sent", NOTIFICATION, label))
                return
        notifications: dict[bytes, int] | None = None
        for event in events:
            payload = event.data
            if not payload or (event.event and event.event != b"message"):
                continue  # priming events (empty data) and other event types carry no JSON-RPC
            method = _notification_method(payload)
            if method is not None:
                if notifications is None:
                    notifications = {}
                notifications[method] = notifications.get(method, 0) + 1
                continue
            messages, reason = decode(payload)
            if reason is not None:
                metrics.parse_error(reason)
            if messages:
                self._server_messages(messages, now)
        if notifications:
            for method, n in notifications.items():
                label = metrics.method_label(method.decode("utf-8", "replace"), n)
                metrics.message(("sent", NOTIFICATION, label), n)

    def _server_messages(self, messages: list[JSONRPCMessage], now: float) -> None:
        metrics = self.metrics
        mw = self.mw
        for msg in messages:
            kind = msg.kind
            if kind == REQUEST or kind == NOTIFICATION:
                metrics.message(("sent", kind, metrics.method_label(msg.method)))
                continue
            key = id_key(msg.id)
            waiting = self.pending.get(key)
            if waiting is None and _ANY in self.pending:
                key = _ANY
                waiting = self.pending[_ANY]
            if waiting:
                op = waiting.pop(0)
                if not waiting:
                    del self.pending[key]
                self._answer(op, msg, now, ("sent", kind, op.method_label))
            elif msg.id is None and kind == ERROR and (self.pending or self.notes):
                # An error with a null id answers the whole HTTP request (parse error, bad
                # session, rejected batch): it ends every operation still waiting.
                metrics.message(("sent", kind, ""))
                for op in self.ops:
                    if not op.done:
                        self._answer(op, msg, now)
                self.pending.clear()
            else:
                parked = None
                if self.session_id is not None and mw.parked.table:
                    # A response replayed on the session's GET stream (resumability).
                    parked = mw.parked.take((self.session_id, key))
                if parked is not None:
                    self._answer(parked, msg, now, ("sent", kind, parked.method_label))
                else:
                    metrics.message(("sent", kind, ""))

    def _answer(
        self,
        op: _Operation,
        msg: JSONRPCMessage,
        now: float,
        sent: tuple[str, str, str] | None = None,
    ) -> None:
        mw = self.mw
        version = None
        if msg.kind != RESPONSE:
            error_type, code = _error_outcome(mw, msg)
        else:
            method = op.method
            code = ""
            error_type = "tool_error" if method == "tools/call" and msg.is_tool_error else ""
            if method == "tools/list":
                mw.metrics.learn_tools(_names(msg.result, "tools"))
            elif method == "prompts/list":
                mw.metrics.learn_prompts(_names(msg.result, "prompts"))
            elif method == "initialize":
                result = msg.result
                if type(result) is dict:
                    negotiated = result.get("protocolVersion")
                    if type(negotiated) is str:
                        version = mw.metrics.version_label(negotiated)
                        if self.new_session is not None:
                            mw.sessions.set_version(self.new_session, version)
        _record(mw, op, now, error_type, code, msg, version, sent)

    # -- the end of the exchange ----------------------------------------------------------

    def _finish_pending(self, now: float, exc: BaseException | None) -> None:
        """Record every operation that is still waiting, by how the exchange ended."""
        if not self.ops:
            return
        mw = self.mw
        status = self.status
        keys: dict[int, Any] | None = None
        for op in self.ops:
            if op.done or op.parked:
                continue
            if keys is None:
                keys = {id(op): key for key, ops in self.pending.items() for op in ops}
                self.pending.clear()
            error_type = "no_response"
            if op.method == "subscriptions/listen" and self.kind == _SSE:
                # Ends when its stream ends; a client closing it is not an error.
                error_type = "500" if isinstance(exc, Exception) else ""
            elif self.send_failed or (self.disconnected and not self.complete):
                error_type = "cancelled"
            elif isinstance(exc, Exception):
                error_type = "500"
            elif exc is not None:
                error_type = "cancelled"  # the server cancelled the app (client gone)
            elif not self.started:
                error_type = "cancelled" if self.disconnected else "no_response"
            elif status >= 500:
                error_type = "500"
            elif status >= 400:
                error_type = ""
            elif self.resp_skip or (self.sse is not None and self.sse.oversized):
                # The answer was past the size cap: its bytes passed, its outcome is unknown.
                error_type = ""
            elif self.kind == _SSE and self.session_id is not None and id(op) in keys:
                # Resumability: the answer may be replayed on the session's GET stream.
                op.parked = True
                evicted = mw.parked.park((self.session_id, keys[id(op)]), op, now)
                if evicted is not None:
                    _record(mw, evicted, now, "no_response", "", None)
                continue
            _record(mw, op, now, error_type, "", None)

    def finish(self, exc: BaseException | None) -> None:
        """Called once, when the app returned or raised. Never raises."""
        try:
            now = self.mw.clock()
            if self.started and not self.complete and not self.disconnected:
                # The app returned in the middle of a message.
                if (self.kind == _SSE and self.sse is not None and self.sse.pending) or (
                    self.kind == _JSON and self.resp_chunks
                ):
                    self.metrics.parse_error("truncated")
            self._finish_pending(now, exc)
            status = self.status if self.started else 0
            if isinstance(exc, Exception) and not self.started:
                status = 500
            metrics = self.metrics
            status_label = _STATUS_LABELS.get(status, "")
            metrics.http_request(
                (metrics.http_method_label(self.http_method), status_label), now - self.start
            )
            if self.session_id is not None:
                self.mw.sessions.touch(self.session_id, now)
        except Exception:
            self.metrics.parse_error("internal")
