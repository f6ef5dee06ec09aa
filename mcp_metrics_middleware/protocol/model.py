"""The MCP exchange model: which answer ends which operation. Sans-IO, in the style of h11.

How it works
------------

A transport adapter owns one :class:`ServerModel` per server (per event loop) and drives it
with events, each stamped with ``now`` (seconds from any monotonic clock; the model never reads
a clock):

* HTTP (the ASGI middleware, the proxy): :meth:`ServerModel.http_exchange` opens an
  :class:`HTTPExchange` per request; the adapter feeds ``request_body``, ``response_start``,
  ``response_body``, ``disconnected`` and finally ``end``.
* stdio (the wrapper): :meth:`ServerModel.pipe` opens a :class:`PipeConnection`; the adapter
  feeds ``client_line`` and ``server_line``, and ``end`` when the process exits.
* time: :meth:`ServerModel.expire` ends idle sessions and parked operations;
  :meth:`ServerModel.next_deadline` says when it next has work.

What comes out goes to an :class:`Observer`: an :class:`Operation` when it starts and when it
finishes (every started operation finishes exactly once, or is withdrawn), a :class:`Session`
when it starts and ends, and counts of messages and of traffic that could not be decoded. The
model makes no label decisions: operations carry raw names, methods and versions, and whether
the server *vouched* for them. The observer (the Prometheus recorder) decides labels.

Rules, with the spec lines they follow:

* **Correlation.** An answer (``result`` or ``error``) ends the operation whose request had the
  same id, in the same HTTP exchange; ids are keyed by JSON type (see ``jsonrpc.id_key``).
  Server-to-client requests have their own id space.
  See: https://www.jsonrpc.org/specification#response_object
* **Notifications** end when the server acknowledges them: 202 on HTTP, at once on stdio.
  See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#sending-messages-to-the-server
* **Resumability.** A POST stream that ends without its answer parks the operation under
  (session id, request id) for ``parked_timeout``: the answer may be replayed on the session's
  GET stream after ``Last-Event-ID``.
  See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#resumability-and-redelivery
* **Sessions** (handshake era) start when an ``initialize`` answer carries a new
  ``Mcp-Session-Id``, and end on DELETE, on a 404 for that id, after ``session_idle_timeout``,
  or when ``max_sessions`` forces the least recently used out.
  See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#session-management
* **Outcomes** come from :mod:`.outcomes`, the one table.
* **Bounded work.** Tables are bounded and return what they evict; a body is decoded within the
  cap; a batch has at most ``jsonrpc.MAX_BATCH`` members.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mcp_metrics_middleware.protocol import outcomes
from mcp_metrics_middleware.protocol.body import JSON, OPAQUE, SSE, BodyReader, LineReader, content_kind
from mcp_metrics_middleware.protocol.jsonrpc import (
    ERROR,
    HANDSHAKE,
    MODERN,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    SERVER,
    JSONRPCMessage,
    decode,
    kept,
)
from mcp_metrics_middleware.protocol.sse import notification_method, sdk_event
from mcp_metrics_middleware.protocol.tables import BoundedTable
from mcp_metrics_middleware.protocol.trace import parse_traceparent, parse_tracestate

# mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS: any other MCP-Protocol-Version header value
# takes the 2026-07-28 path of the SDK's session manager.
HANDSHAKE_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
TCP = "tcp"  # semconv network.transport for HTTP
PIPE = "pipe"  # semconv network.transport for stdio
RECEIVED = "received"  # the client sent it to the server
SENT = "sent"  # the server sent it to the client
CLIENT_INFO = "io.modelcontextprotocol/clientInfo"  # 2026-07-28: _meta key on every request
PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"  # 2026-07-28: _meta key
_NOTIFICATION_PREFIX = b'{"jsonrpc":"2.0","method":"notifications/'
_LISTEN = "subscriptions/listen"
_READ_RESULTS = frozenset({"tools/list", "prompts/list", "initialize"})  # see ServerModel._read_result


class Operation:
    """One request or notification, from its arrival until its answer (or its end).

    Filled by the model; observers read it and may use ``slot`` for their own state (the
    recorder keeps the in-flight gauge key there). Once ``done``, the model never changes it
    (an observer may keep it and read it later), and every string it holds is bounded: client
    strings are kept to ``jsonrpc.MAX_KEPT`` characters. Times are the adapter's ``now`` values.
    """

    # No __slots__: the attributes most operations never change are class-level defaults, so
    # a new operation sets nine (about 45 bytecodes fewer per request than setting all 27).
    name_from_header = False  # the name came from Mcp-Name, not from a decoded body
    response_size = 0
    session_id: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    trace_id: str | None = None  # W3C trace context: _meta.traceparent, else the header
    span_id: str | None = None
    tracestate: str | None = None  # W3C tracestate that came with a valid traceparent
    error_type = ""
    code: int | None = None  # the JSON-RPC error code of the answer
    vouched = True  # false: the server refused the request; its name is not a label
    answer_kind: str | None = None  # RESPONSE or ERROR when a message answered it
    result_type: str | None = None  # result.resultType ("input_required": a round)
    done = False
    parked = False
    slot: Any = None

    def __init__(
        self,
        method: str,
        name: str | None,
        kind: str,
        start: float,
        request_size: int,
        protocol_version: str,
        transport: str,
        direction: str = RECEIVED,
    ) -> None:
        self.method = method
        self.name = name  # params.name of tools/call or prompts/get, as the client sent it
        self.kind = kind  # REQUEST or NOTIFICATION
        self.direction = direction  # RECEIVED: the client asked the server; SENT: the reverse
        self.start = start
        self.end = start
        self.request_size = request_size
        self.protocol_version = protocol_version  # raw; "" when unknown
        self.transport = transport

    def __repr__(self) -> str:
        return f"Operation({self.method!r}, name={self.name!r}, error_type={self.error_type!r})"


class Session:
    """One handshake-era session (or one stdio process)."""

    __slots__ = ("id", "start", "protocol_version", "client_name", "client_version", "transport", "slot")

    def __init__(self, id: str, start: float, transport: str) -> None:
        self.id = id
        self.start = start
        self.protocol_version = ""
        self.client_name: str | None = None
        self.client_version: str | None = None
        self.transport = transport
        self.slot: Any = None


class Observer(Protocol):
    """Where the model's records go. Every method must be cheap and must not raise."""

    def operation_started(self, op: Operation) -> None: ...

    def operation_finished(self, op: Operation) -> None: ...

    def operation_withdrawn(self, op: Operation) -> None:
        """A started operation turned out not to be one (a redirect; a batch answered once)."""

    def message(self, direction: str, kind: str, method: str | None, n: int = 1) -> None: ...

    def names_listed(self, method: str, names: Sequence[Any]) -> None:
        """The server listed its tools (``tools/list``) or prompts (``prompts/list``)."""

    def session_started(self, session: Session) -> None: ...

    def session_ended(self, session: Session, end: float) -> None: ...

    def parse_error(self, reason: str) -> None:
        """Traffic that could not be decoded; ``reason`` is one of config.PARSE_ERROR_REASONS."""

    def invalid_trace_context(self) -> None:
        """A ``traceparent`` that is not valid W3C trace context was ignored."""

    def http_request(self, method: str, status: int, duration: float) -> None: ...


def header_name(value: str) -> str:
    """Undo the ``=?base64?...?=`` wrapping MCP uses for non-ASCII ``Mcp-Name`` values."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def _listed_names(result: Any, key: str) -> list[Any]:
    if type(result) is dict:
        items = result.get(key)
        if type(items) is list:
            return [item.get("name") for item in items if type(item) is dict]
    return []


def _client_info(op: Operation, meta: dict[str, Any]) -> None:
    info = meta.get(CLIENT_INFO)
    if type(info) is dict:
        # Kept for the session's whole life (up to max_sessions of them): bounded.
        name = kept(info.get("name"))
        if name is not None:
            op.client_name = name
        version = kept(info.get("version"))
        if version is not None:
            op.client_version = version


def _trace(op: Operation, value: object, observer: Observer, state: object = None) -> None:
    parsed = parse_traceparent(value)
    if parsed is None:
        observer.invalid_trace_context()
    else:
        op.trace_id, op.span_id = parsed
        op.tracestate = parse_tracestate(state)


class ServerModel:
    """Everything that outlives one exchange: sessions, parked operations, the limits.

    Args:
        observer: receives every record.
        max_body_size: bytes of one body (or SSE event, or stdio line) that are decoded.
        session_idle_timeout: seconds without a request after which a session is over.
        max_sessions: sessions tracked at once; the least recently used is ended past it.
        parked_timeout: seconds a parked operation waits for its answer to be replayed.
        max_parked: parked operations kept at once; the oldest is recorded past it.
    """

    def __init__(
        self,
        observer: Observer,
        *,
        max_body_size: int,
        session_idle_timeout: float,
        max_sessions: int,
        parked_timeout: float,
        max_parked: int,
    ) -> None:
        self.observer = observer
        self.max_body_size = max_body_size
        self.sessions: BoundedTable[str, Session] = BoundedTable(max_sessions, session_idle_timeout)
        self.parked: BoundedTable[tuple[str, Any], Operation] = BoundedTable(max_parked, parked_timeout)

    def http_exchange(self, now: float, method: str, headers: Mapping[bytes, bytes]) -> HTTPExchange:
        """A new HTTP request on the MCP path; ``headers`` with lowercase names."""
        return HTTPExchange(self, now, method, headers)

    def pipe(self, now: float) -> PipeConnection:
        """A new stdio connection (one per server process)."""
        return PipeConnection(self, now)

    # -- time -------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End idle sessions and parked operations whose time is up."""
        for session, last_seen in self.sessions.expire(now):
            # Idle expiry: the session ended when it was last seen.
            self.observer.session_ended(session, last_seen)
        for op, _parked_at in self.parked.expire(now):
            self.finish(op, now, outcomes.NO_RESPONSE)

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`expire` has work, or ``None`` when nothing waits."""
        deadlines = [d for d in (self.sessions.next_deadline(), self.parked.next_deadline()) if d is not None]
        return min(deadlines) if deadlines else None

    # -- shared steps -----------------------------------------------------------------------

    def finish(
        self,
        op: Operation,
        now: float,
        error_type: str,
        code: int | None = None,
        vouched: bool = True,
        answer: JSONRPCMessage | None = None,
    ) -> None:
        """End ``op`` with this outcome, exactly once."""
        if op.done:
            return
        op.done = True
        op.parked = False
        op.end = now
        op.error_type = error_type
        op.code = code
        op.vouched = vouched
        if answer is not None:
            op.response_size = answer.size
            op.answer_kind = answer.kind
        self.observer.operation_finished(op)

    def answer(self, op: Operation, msg: JSONRPCMessage, now: float, session_id: str | None = None) -> None:
        """End ``op`` with the JSON-RPC answer ``msg``, by the outcome table.

        ``session_id``: the session the answer's exchange opened, if any (an ``initialize``
        answer sets its protocol version; else the operation's own session is used).
        """
        if msg.kind == RESPONSE:
            result = msg.raw.get("result")
            method = op.method
            error_type = outcomes.OK
            if type(result) is dict:
                if method == "tools/call":
                    if result.get("isError") is True:
                        error_type = outcomes.TOOL_ERROR
                elif method in _READ_RESULTS:
                    self._read_result(op, method, result, session_id)  # what it teaches, even when late
                if op.done:
                    return  # a late answer (the client had left): a finished record is final
                result_type = kept(result.get("resultType"))
                if result_type is not None:
                    op.result_type = result_type
            self.finish(op, now, error_type, None, True, msg)
        else:
            code = msg.error_code
            error_type, vouched = outcomes.of_error(code)
            self.finish(op, now, error_type, code, vouched, msg)

    def _read_result(self, op: Operation, method: str, result: dict[str, Any], session_id: str | None) -> None:
        """What a successful answer to a method in ``_READ_RESULTS`` tells the model."""
        if method == "tools/list":
            self.observer.names_listed(method, _listed_names(result, "tools"))
        elif method == "prompts/list":
            self.observer.names_listed(method, _listed_names(result, "prompts"))
        else:  # initialize
            negotiated = result.get("protocolVersion")
            if type(negotiated) is str:
                if not op.done:  # a finished record is final
                    op.protocol_version = negotiated
                if session_id is None:
                    session_id = op.session_id
                if session_id is not None:
                    session = self.sessions.get(session_id)
                    if session is not None:
                        session.protocol_version = negotiated

    def end_session(self, session_id: str, now: float) -> None:
        session = self.sessions.pop(session_id)
        if session is not None:
            self.observer.session_ended(session, now)
        if len(self.parked):
            # Its parked operations can never be answered now.
            for op in self.parked.pop_prefix(session_id):
                self.finish(op, now, outcomes.NO_RESPONSE)

    def start_session(self, session: Session, now: float) -> None:
        for evicted in self.sessions.put(session.id, session, now):
            self.observer.session_ended(evicted, now)
        self.observer.session_started(session)


class HTTPExchange:
    """One HTTP request on the MCP path and its response, as events. Never raises on input."""

    # Attributes most exchanges never change are class-level defaults: creating one costs a
    # handful of assignments (measured: about 1 us less per request than setting them all).
    session_id: str | None = None
    version = ""
    era = HANDSHAKE
    header_method: str | None = None
    header_name_raw: bytes | None = None  # Mcp-Name, undecoded (decoded only when it is used)
    request_buffer: bytearray | None = None
    request_size = 0
    request_done = False  # the whole body was seen (decoded or not)
    request_decoded = False  # the body was decoded into at least one JSON-RPC message
    status = 0
    started = False
    complete = False
    cancelled_at: float | None = None
    reader: BodyReader | None = None
    kind = OPAQUE
    new_session: str | None = None
    header_op: Operation | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    last_chunk = 0.0  # when the response chunk being decoded was sent
    note_chunks = 0  # chunks whose notifications are counted but not yet reported
    notes: dict[bytes, int] | None = None  # those counts, for chunks decoded without a reader
    sse_events = 0  # SSE chunks taken whole without a decoder (see response_body)
    unsettled = False  # an operation began since the last _settle (end() settles only then)
    notifications = False  # the request held a notification (a 2xx start acks it)

    def __init__(self, server: ServerModel, now: float, method: str, headers: Mapping[bytes, bytes]) -> None:
        self.server = server
        self.observer = server.observer
        self.start = now
        self.http_method = method
        self.ops: list[Operation] = []
        # Request id -> the operation waiting for its answer, or a list of them (repeated ids,
        # answered in order).
        self.pending: dict[Any, Operation | list[Operation]] = {}
        value = headers.get(b"mcp-protocol-version")
        if value is not None:
            self.version = value.decode("latin-1")
            if self.version not in HANDSHAKE_VERSIONS:
                self.era = MODERN
        value = headers.get(b"mcp-session-id")
        if value is not None:
            self.session_id = value.decode("latin-1")
            server.sessions.touch(self.session_id, now)
        value = headers.get(b"mcp-method")
        if value is not None:
            self.header_method = value.decode("latin-1")
            self.header_name_raw = headers.get(b"mcp-name")
        value = headers.get(b"traceparent")
        if value is not None:
            self.traceparent = value.decode("latin-1")
            value = headers.get(b"tracestate")
            if value is not None:
                self.tracestate = value.decode("latin-1")

    # -- the request ------------------------------------------------------------------------

    def request_body(self, now: float, data: bytes, more: bool) -> None:
        """A piece of the request body, as the app read it."""
        if self.request_done:
            return
        buffer = self.request_buffer
        body: bytes | bytearray = data
        if more or buffer is not None:
            if data:
                self.request_size += len(data)
                if self.request_size > self.server.max_body_size:
                    self.request_done = True
                    self.request_buffer = None
                    self.observer.parse_error("too_large")
                    return
                if buffer is None:
                    buffer = self.request_buffer = bytearray()
                buffer += data
            if more:
                return
            assert buffer is not None  # more was false: a buffer came from an earlier piece
            self.request_buffer = None
            body = buffer
        else:  # the whole body in one message (the common case)
            self.request_size = size = len(data)
            if size > self.server.max_body_size:
                self.request_done = True
                self.observer.parse_error("too_large")
                return
        self.request_done = True
        if not body:
            return  # an empty body (GET, DELETE, or an empty POST): nothing to decode
        # Content-Encoding is ignored, as the SDK ignores it: it parses the bytes as they came
        # (a gzipped body gives -32700 there and invalid_json here; a plain one is read by both).
        messages, reason = decode(body, self.era)
        if reason is not None:
            self.observer.parse_error(reason)
        if messages:
            # A body that yields no message falls back to the Mcp-Method header, like one
            # that was never read.
            self.request_decoded = True
            self._client_messages(messages, now)

    def _operation(self, method: str, name: str | None, kind: str, size: int) -> Operation:
        op = Operation(method, name, kind, self.start, size, self.version, TCP)
        if self.traceparent is not None:
            _trace(op, self.traceparent, self.observer, self.tracestate)
        session_id = self.session_id
        if session_id is not None:
            op.session_id = session_id
            session = self.server.sessions.get(session_id)
            if session is not None:
                op.client_name = session.client_name
                op.client_version = session.client_version
        return op

    def _client_messages(self, messages: list[JSONRPCMessage], now: float) -> None:
        observer = self.observer
        adopt = self.header_op
        for msg in messages:
            kind = msg.kind
            if kind != REQUEST and kind != NOTIFICATION:
                observer.message(RECEIVED, kind, None)  # an answer to a server request
                continue
            method = msg.method
            assert method is not None
            if adopt is not None and kind == REQUEST and method == adopt.method:
                # The operation the headers announced, now read from the body (one operation).
                op = adopt
                adopt = self.header_op = None
                if op.done:
                    continue  # answered before its body was read: a finished record is final
                op.name = msg.name
                op.name_from_header = False
                op.request_size = msg.size
            else:
                op = self._operation(method, msg.name, kind, msg.size)
                meta = msg.meta
                if meta is not None:  # read here, never kept: records hold bounded values only
                    if CLIENT_INFO in meta:
                        _client_info(op, meta)
                    if "traceparent" in meta:
                        _trace(op, meta["traceparent"], observer, meta.get("tracestate"))
                if method == "initialize":
                    params = msg.raw.get("params")
                    if type(params) is dict and type(params.get("clientInfo")) is dict:
                        _client_info(op, {CLIENT_INFO: params["clientInfo"]})
                self.ops.append(op)
                self.unsettled = True
                observer.operation_started(op)
            if kind == REQUEST:
                pending = self.pending
                key = msg.id
                waiting = pending.get(key)
                if waiting is None:
                    pending[key] = op
                elif isinstance(waiting, list):
                    waiting.append(op)  # duplicate ids: answered in order
                else:
                    pending[key] = [waiting, op]
            elif self.started and 200 <= self.status < 300:
                # The ack went out before the app finished reading the body.
                self.server.finish(op, now, outcomes.OK)
            else:
                self.notifications = True

    def _header_operation(self) -> Operation | None:
        """The operation named by ``Mcp-Method``/``Mcp-Name``, for a body that was not read.

        2026-07-28 clients must send these headers; a name from them is the client's word,
        never learned as a label (the recorder knows by ``name_from_header``).
        See: https://modelcontextprotocol.io/specification/2026-07-28/basic/transports (SEP-2243)
        """
        method = self.header_method
        if method is None or self.ops:
            return None
        name = None
        if method in ("tools/call", "prompts/get") and self.era is MODERN:
            # Only 2026-07-28 servers refuse a body that disagrees with Mcp-Name (-32020);
            # a handshake-era server never reads the header, so it names nothing there.
            raw = self.header_name_raw
            name = None if raw is None else header_name(raw.decode("latin-1"))
        op = self._operation(method, name, REQUEST, 0)
        op.name_from_header = True
        self.ops.append(op)
        self.unsettled = True
        self.header_op = op
        self.observer.operation_started(op)
        return op

    # -- the response -----------------------------------------------------------------------

    def response_start(self, now: float, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """``http.response.start``: the status and headers (names in any case)."""
        if self.started:
            self.observer.parse_error("asgi_protocol")
            return
        self.started = True
        self.status = status
        # The first of a repeated header wins, as clients read it.
        found = dict(reversed(headers)) if type(headers) is list else dict(reversed(list(headers)))
        content_type = found.get(b"content-type")
        if content_type is None and headers:
            # Not every stack lowercases response header names.
            found = {key.lower(): value for key, value in reversed(list(headers))}
            content_type = found.get(b"content-type")
        if content_type == b"application/json":  # what the SDKs send, without a call
            kind = JSON
        elif content_type == b"text/event-stream":
            kind = SSE
        else:
            kind = content_kind(content_type)
        self.kind = kind
        encoding = found.get(b"content-encoding")
        # An uncompressed SSE stream gets its decoder only when a chunk needs one (see
        # response_body): most carry one whole event in the SDKs' framing.
        if kind != OPAQUE and encoding is not None:
            self.reader = BodyReader(
                kind, encoding or b"", self.server.max_body_size, self.observer.parse_error, self._sink
            )
        server = self.server
        if self.notifications and 200 <= status < 300:
            for op in self.ops:
                if op.kind == NOTIFICATION and not op.done:
                    server.finish(op, now, outcomes.OK)
        new_session = found.get(b"mcp-session-id")
        session_id = self.session_id
        if status < 400 and new_session is not None and session_id is None:
            for op in self.ops:
                if op.method == "initialize":
                    session = Session(new_session.decode("latin-1"), now, TCP)
                    session.client_name = op.client_name
                    session.client_version = op.client_version
                    self.new_session = session.id
                    server.start_session(session, now)
                    if not op.done:  # a finished record is final
                        op.session_id = session.id
                    break
        if session_id is not None:
            if status == 404 or (self.http_method == "DELETE" and 200 <= status < 300):
                server.end_session(session_id, now)

    def response_body(self, now: float, data: bytes, more: bool) -> None:
        """``http.response.body``: a piece of the body, as it left the app."""
        if not self.started or self.complete:
            self.observer.parse_error("asgi_protocol")  # a body before the start, or after the end
            return
        self.last_chunk = now
        reader = self.reader
        if reader is None:
            kind = self.kind
            if kind == SSE:
                if data:
                    payload = sdk_event(data, self.server.max_body_size)
                    if payload is not None:
                        # One whole event in the SDKs' framing: no decoder needed.
                        self.sse_events += 1
                        if payload:  # b"": a priming event
                            method = notification_method(payload)
                            if method is None:
                                self._flush_notes()
                                self._json_payload(payload, now)
                            else:
                                notes = self.notes
                                if notes is None:
                                    notes = self.notes = {}
                                notes[method] = notes.get(method, 0) + 1
                                self.note_chunks += 1
                                if self.note_chunks >= 64:
                                    self._flush_notes()
                        if not more:
                            self._flush_notes()
                            self.complete = True
                            self._settle(now, None)
                        return
                    reader = self._sse_reader()
                elif not more:
                    self._flush_notes()
                    self.complete = True
                    self._settle(now, None)
                    return
                else:
                    return
            elif kind == JSON and data:
                if more:
                    reader = self.reader = BodyReader(JSON, b"", self.server.max_body_size, self.observer.parse_error)
                else:
                    # The common case: the whole JSON body in one message.
                    self.complete = True
                    if len(data) > self.server.max_body_size:
                        self.observer.parse_error("too_large")
                        self.reader = BodyReader(JSON, b"", 0, _ignore)
                        self.reader.skipped = True
                    else:
                        self._json_payload(data, now)
                    if self.ops or self.header_method is not None:
                        self._settle(now, None)
                    return
        if reader is not None and (data or not more):
            payloads = reader.feed(data, more)
            notes = reader.notes
            if notes:
                # Counted in batches (one report per 64 notification chunks, and at the end):
                # a report per progress event cost more than decoding it.
                self.note_chunks += 1
                if payloads or not more or self.note_chunks >= 64:
                    self._notes(notes)
            if payloads:
                self._events(payloads, now)  # JSON: the one body; SSE: the events
        if not more:
            self.complete = True
            if reader is not None and self.kind == SSE and reader.pending:
                self.observer.parse_error("truncated")
            self._settle(now, None)

    def _sse_reader(self) -> BodyReader:
        """The SSE decoder, from the first chunk that is not one whole SDK-framed event."""
        self._flush_notes()
        reader = self.reader = BodyReader(SSE, b"", self.server.max_body_size, self.observer.parse_error, self._sink)
        if self.sse_events:
            assert reader.sse is not None
            reader.sse.resume()
        return reader

    def _flush_notes(self) -> None:
        notes = self.notes
        if notes:
            self._notes(notes)

    def _sink(self, payloads: list[bytes | bytearray]) -> None:
        """Events of a compressed stream, handed on as they inflate (the time of their chunk)."""
        self._events(payloads, self.last_chunk)

    def _json_payload(self, payload: bytes | bytearray, now: float) -> None:
        messages, reason = decode(payload, SERVER)
        if reason is not None:
            self.observer.parse_error(reason)
        if messages:
            self._server_messages(messages, now)

    def _events(self, payloads: list[bytes | bytearray], now: float) -> None:
        for payload in payloads:
            self._json_payload(payload, now)

    def _notes(self, notes: dict[bytes, int]) -> None:
        """Notifications the SSE decoder counted without decoding them."""
        for method, n in notes.items():
            self.observer.message(SENT, NOTIFICATION, method.decode("utf-8", "replace"), n)
        notes.clear()
        self.note_chunks = 0

    def _server_messages(self, messages: list[JSONRPCMessage], now: float) -> None:
        observer = self.observer
        server = self.server
        for msg in messages:
            kind = msg.kind
            if kind == REQUEST or kind == NOTIFICATION:
                observer.message(SENT, kind, msg.method)
                continue
            if not self.ops and not self.request_decoded:
                self._header_operation()
            key = msg.id
            if key is None:
                if kind == ERROR and any(not op.done for op in self.ops):
                    self._whole_request_error(msg, now)
                    continue
                waiting = None
            else:
                waiting = self.pending.pop(key, None)
            if waiting is not None:
                if isinstance(waiting, list):
                    op = waiting.pop(0)
                    if waiting:
                        self.pending[key] = waiting
                else:
                    op = waiting
                server.answer(op, msg, now, self.new_session)
                continue
            header_op = self.header_op
            if header_op is not None and not header_op.done:
                # The body was never read: the one operation its headers named.
                server.answer(header_op, msg, now, self.new_session)
                continue
            parked = None
            if self.session_id is not None and len(server.parked):
                # A response replayed on the session's GET stream (resumability).
                parked = server.parked.pop((self.session_id, key))
            if parked is not None:
                server.answer(parked, msg, now)
            else:
                observer.message(SENT, kind, None)

    def _whole_request_error(self, msg: JSONRPCMessage, now: float) -> None:
        """An error with a null id answers the whole request (parse error, bad session, batch).

        A body refused as a whole is one operation, however many messages it held.
        """
        error_type, vouched = outcomes.of_whole_request_error(msg.error_code, self.status)
        first = True
        for op in self.ops:
            if op.done:
                continue
            if first:
                first = False
                self.server.finish(op, now, error_type, msg.error_code, vouched, msg)
            else:
                op.done = True
                self.observer.operation_withdrawn(op)
        self.pending.clear()

    # -- the end ----------------------------------------------------------------------------

    def disconnected(self, now: float) -> None:
        """The client went away (``http.disconnect``, or a send that failed)."""
        if self.complete or self.cancelled_at is not None:
            return
        self.cancelled_at = now
        server = self.server
        for op in self.ops:
            if op.done or op.parked:
                continue
            if op.method == _LISTEN and self.kind == SSE:
                server.finish(op, now, outcomes.OK)  # a listen stream ends when its client leaves
            else:
                server.finish(op, now, outcomes.CANCELLED)

    def _settle(self, now: float, failure: str | None) -> None:
        """End every operation still waiting, by how the exchange ended (the outcome table)."""
        if not self.ops and self.header_method is not None and not self.request_decoded:
            self._header_operation()
        if not self.ops:
            return
        server = self.server
        status = self.status
        reader = self.reader
        for op in self.ops:
            if op.done or op.parked:
                continue
            vouched = True
            if op.method == _LISTEN and self.kind == SSE:
                error_type = outcomes.SERVER_FAILED if failure == "exception" else outcomes.OK
            elif failure == "exception":
                error_type = outcomes.SERVER_FAILED
            elif failure == "cancelled":
                error_type = outcomes.CANCELLED  # the server cancelled the app: the client left
            elif not self.started:
                error_type = outcomes.NO_RESPONSE
            elif 300 <= status < 400:
                # A redirect is a transport event: the request is repeated at the new location.
                op.done = True
                self.observer.operation_withdrawn(op)
                continue
            elif status >= 400:
                error_type = outcomes.of_status(status)
                vouched = False
            elif reader is not None and reader.lost:
                # The answer was past the size cap: its bytes passed, its outcome is unknown.
                error_type = outcomes.OK
                vouched = False
            elif self.kind == SSE and self.session_id is not None and op.kind == REQUEST:
                key = next((k for k, w in self.pending.items() if w is op or (isinstance(w, list) and op in w)), None)
                if key is not None:
                    op.parked = True
                    for evicted in server.parked.put((self.session_id, key), op, now):
                        server.finish(evicted, now, outcomes.NO_RESPONSE)
                    continue
                error_type = outcomes.NO_RESPONSE
            else:
                error_type = outcomes.NO_RESPONSE
            server.finish(op, now, error_type, None, vouched)
        self.pending.clear()
        self.unsettled = False

    def end(self, now: float, failure: str | None = None) -> None:
        """The app returned (``failure`` None), raised (``"exception"``) or was cancelled."""
        if self.notes:
            self._notes(self.notes)
        if self.reader is not None and self.reader.notes:
            self._notes(self.reader.notes)
        if self.started and not self.complete and self.cancelled_at is None:
            reader = self.reader
            if reader is not None and reader.pending:
                self.observer.parse_error("truncated")  # the app returned mid-message
        # After a complete response every operation is settled, unless one began since (a
        # body read after the response) or no operation exists yet (only the headers named one).
        if self.unsettled or not self.complete or (not self.ops and self.header_method is not None):
            self._settle(now if self.cancelled_at is None else self.cancelled_at, failure)
        status = self.status if self.started else 0
        if failure == "exception" and not self.started:
            status = 500
        self.observer.http_request(self.http_method, status, now - self.start)
        if self.session_id is not None:
            self.server.sessions.touch(self.session_id, now)


def _ignore(reason: str) -> None:
    pass


class PipeConnection:
    """A stdio connection: newline-delimited JSON-RPC in both directions, one session.

    There is no HTTP status and no ack: a notification ends when it arrives, a request when its
    answer does, and whatever is pending when the process exits ends as ``no_response``.
    ``notifications/cancelled`` ends the request it names as ``cancelled``.
    See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#stdio
    See: https://modelcontextprotocol.io/specification/2025-11-25/basic/utilities/cancellation
    """

    def __init__(self, server: ServerModel, now: float) -> None:
        self.server = server
        self.observer = server.observer
        self.start = now
        self.version = ""
        self.session: Session | None = None
        # Requests waiting for their answer, by id, oldest first (a reused id is answered in
        # order); each direction has its own id space.
        self.pending: BoundedTable[Any, list[Operation]] = BoundedTable(server.parked.max_size, float("inf"))
        self.outgoing: BoundedTable[Any, list[Operation]] = BoundedTable(server.parked.max_size, float("inf"))
        self.client_reader = LineReader(server.max_body_size, self.observer.parse_error)
        self.server_reader = LineReader(server.max_body_size, self.observer.parse_error)
        self.client_name: str | None = None
        self.client_version: str | None = None

    def client_bytes(self, now: float, data: bytes) -> None:
        """Bytes the host wrote to the server's stdin."""
        for line in self.client_reader.feed(data):
            self.client_line(now, line)

    def server_bytes(self, now: float, data: bytes) -> None:
        """Bytes the server wrote to its stdout."""
        for line in self.server_reader.feed(data):
            self.server_line(now, line)

    def _operation(self, msg: JSONRPCMessage, now: float, direction: str) -> Operation:
        assert msg.method is not None
        op = Operation(msg.method, msg.name, msg.kind, now, msg.size, self.version, PIPE, direction)
        op.client_name = self.client_name
        op.client_version = self.client_version
        meta = msg.meta
        if meta is not None:  # read here, never kept: records hold bounded values only
            version = kept(meta.get(PROTOCOL_VERSION))
            if version is not None:
                op.protocol_version = version  # 2026-07-28: each request names its version
            if "traceparent" in meta:
                _trace(op, meta["traceparent"], self.observer, meta.get("tracestate"))
        if self.session is not None:
            op.session_id = self.session.id
        return op

    def _wait(self, table: BoundedTable[Any, list[Operation]], key: Any, op: Operation, now: float) -> None:
        waiting = table.get(key)
        if waiting is not None:
            waiting.append(op)
            return
        for evicted in table.put(key, [op], now):
            for old in evicted:
                self.server.finish(old, now, outcomes.NO_RESPONSE)

    @staticmethod
    def _take(table: BoundedTable[Any, list[Operation]], key: Any) -> Operation | None:
        waiting = table.get(key)
        if not waiting:
            return None
        op = waiting.pop(0)
        if not waiting:
            table.pop(key)
        return op

    def client_line(self, now: float, line: bytes) -> None:
        """One complete line from the client (without its newline)."""
        messages, reason = decode(line, HANDSHAKE)
        if reason is not None:
            self.observer.parse_error(reason)
        server = self.server
        for msg in messages:
            if msg.kind == REQUEST:
                if msg.method == "initialize":
                    params = msg.raw.get("params")
                    if type(params) is dict and type(params.get("clientInfo")) is dict:
                        info = params["clientInfo"]
                        self.client_name = kept(info.get("name"))
                        self.client_version = kept(info.get("version"))
                meta = msg.meta
                if meta is not None and self.session is None and msg.method != "initialize":
                    # 2026-07-28: no initialize; the session starts with the first request.
                    version = kept(meta.get(PROTOCOL_VERSION))  # kept for the process's life
                    if version is not None:
                        self.version = version
                    if CLIENT_INFO in meta:
                        info = meta[CLIENT_INFO]
                        if type(info) is dict:
                            self.client_name = kept(info.get("name"))
                            self.client_version = kept(info.get("version"))
                    self._start_session(now)
                op = self._operation(msg, now, RECEIVED)
                self.observer.operation_started(op)
                self._wait(self.pending, msg.id, op, now)
            elif msg.kind == NOTIFICATION:
                op = self._operation(msg, now, RECEIVED)
                self.observer.operation_started(op)
                server.finish(op, now, outcomes.OK)
                if msg.method == "notifications/cancelled":
                    params = msg.raw.get("params")
                    if type(params) is dict:
                        request_id = params.get("requestId")
                        if type(request_id) in (int, str):
                            cancelled = self._take(self.pending, request_id)
                            if cancelled is not None:
                                server.finish(cancelled, now, outcomes.CANCELLED)
            else:
                # The client's answer to a server-to-client request (sampling, elicitation, roots).
                sent = self._take(self.outgoing, msg.id)
                if sent is not None:
                    server.answer(sent, msg, now)
                else:
                    self.observer.message(RECEIVED, msg.kind, None)

    def server_line(self, now: float, line: bytes) -> None:
        """One complete line from the server's stdout (without its newline)."""
        if line[:41] == _NOTIFICATION_PREFIX:
            method = notification_method(line)
            if method is not None:
                self.observer.message(SENT, NOTIFICATION, method.decode("utf-8", "replace"))
                return
        messages, reason = decode(line, SERVER)
        if reason is not None:
            self.observer.parse_error(reason)
        server = self.server
        for msg in messages:
            kind = msg.kind
            if kind == NOTIFICATION:
                self.observer.message(SENT, kind, msg.method)
            elif kind == REQUEST:
                op = self._operation(msg, now, SENT)
                self.observer.operation_started(op)
                if msg.id is not None:
                    self._wait(self.outgoing, msg.id, op, now)
                else:
                    server.finish(op, now, outcomes.NO_RESPONSE)
            else:
                op_ = self._take(self.pending, msg.id)
                if op_ is None:
                    self.observer.message(SENT, kind, None)
                    continue
                server.answer(op_, msg, now)
                if op_.method == "initialize" and kind == RESPONSE:
                    # The negotiated version, also after a 2026-07-28 attempt fell back to it.
                    self.version = op_.protocol_version
                    if self.session is None:
                        self._start_session(self.start)
                    else:
                        self.session.protocol_version = self.version

    def _start_session(self, start: float) -> None:
        """The one session of this process: from initialize, or from the first 2026-07-28 request."""
        session = Session("stdio", start, PIPE)
        session.protocol_version = self.version
        session.client_name = self.client_name
        session.client_version = self.client_version
        self.session = session
        self.observer.session_started(session)

    def end(self, now: float) -> None:
        """The server process exited (or the pipe closed): what is pending gets no answer."""
        server = self.server
        if self.client_reader.pending or self.server_reader.pending:
            self.observer.parse_error("truncated")
        for ops in self.pending.drain() + self.outgoing.drain():
            for op in ops:
                server.finish(op, now, outcomes.NO_RESPONSE)
        if self.session is not None:
            self.observer.session_ended(self.session, now)
            self.session = None
