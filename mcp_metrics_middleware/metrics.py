"""The Prometheus recorder: every label decision, and the metrics they feed.

:class:`MCPMetrics` is the observer the sans-IO core (``protocol.model``) reports to. The core
hands over raw facts (a method, a name as the client sent it, whether the server vouched for
it); this module alone decides what becomes a label value, and caps every label.

Two stores keep the numbers:

* ``_FastStore`` (the default): plain dicts and lists written directly under one lock, exposed
  through a custom collector when Prometheus scrapes. Recording a whole operation costs one lock
  and a few list increments, several times cheaper than prometheus-client's per-metric locks,
  and the lock makes one store safe to share between event loops in several threads.
* ``_ClientStore``: prometheus-client's own ``Histogram``/``Counter``/``Gauge``. Used in
  multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where values must live in the shared mmap files
  that ``MultiProcessCollector`` aggregates.

Both expose exactly the same names, types, labels and buckets. Only ``_FastStore`` keeps trace
exemplars (the latest per bucket of the operation histogram): multiprocess files cannot hold them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mcp_metrics_middleware.config import (
    CLIENT_NAME_CHARS,
    DEFAULT_MAX_CLIENT_NAME_LENGTH,
    DEFAULT_MAX_CLIENT_SERIES,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_ERROR_CODES,
    DEFAULT_MAX_NAME_LENGTH,
    DEFAULT_MAX_NAMES,
    DEFAULT_MAX_OPERATION_SERIES,
    DEFAULT_MAX_SESSIONS,
    DURATION_BUCKETS,
    HTTP_DURATION_BUCKETS,
    KNOWN_HTTP_METHODS,
    KNOWN_METHODS,
    KNOWN_PROTOCOL_VERSIONS,
    LABELS_WITH_OVERFLOW,
    OTHER,
    PARSE_ERROR_REASONS,
    PAYLOAD_BUCKETS,
    SESSION_DURATION_BUCKETS,
    STANDARD_ERROR_CODES,
)
from mcp_metrics_middleware.logs import log_operation, logger, report_internal
from mcp_metrics_middleware.multiprocess import multiproc_dir
from mcp_metrics_middleware.protocol.jsonrpc import REQUEST, RESPONSE
from mcp_metrics_middleware.protocol.model import RECEIVED, SENT, Operation, Session


class OperationLabels(NamedTuple):
    """The label set of ``mcp_server_operation_duration_seconds``, in exposition order."""

    mcp_method_name: str
    gen_ai_tool_name: str
    gen_ai_prompt_name: str
    error_type: str
    rpc_response_status_code: str
    mcp_protocol_version: str
    network_transport: str


OPERATION_LABELS = OperationLabels._fields
CLIENT_LABELS = ("mcp_client_name", "mcp_method_name", "error_type")
ROUND_LABELS = ("mcp_method_name", "gen_ai_tool_name")
IN_FLIGHT_LABELS = ("mcp_method_name", "gen_ai_tool_name")
MESSAGE_LABELS = ("direction", "message_type", "mcp_method_name")
PAYLOAD_LABELS = ("direction", "mcp_method_name", "gen_ai_tool_name")
HTTP_LABELS = ("http_request_method", "http_response_status_code")

# name, documentation (shared by both stores)
DOCS = {
    "mcp_server_operation_duration_seconds": "MCP request or notification duration, from its "
    "arrival until its result or ack was sent.",
    "mcp_server_operations_in_flight": "MCP requests received and not yet answered.",
    "mcp_server_session_duration_seconds": "Duration of MCP sessions (protocol revisions up to 2025-11-25).",
    "mcp_server_sessions_active": "MCP sessions currently open (protocol revisions up to 2025-11-25).",
    "mcp_server_messages": "JSON-RPC messages seen on the MCP path.",
    "mcp_server_operation_payload_bytes": "Size of MCP request messages and of their response messages.",
    "mcp_http_server_request_duration_seconds": "Duration of HTTP requests to the MCP path (streams: until they end).",
    "mcp_metrics_parse_errors": "Traffic the middleware could not decode; the bytes still passed untouched.",
    "mcp_metrics_label_overflow": "Label values folded into _OTHER (unknown or over the cap).",
    "mcp_server_input_required": "Rounds of 2026-07-28 multi-round requests that ended asking "
    "the client for input (resultType input_required); the call itself is recorded when its "
    "final round ends.",
    "mcp_server_sessions_limit": "The most sessions the server keeps (the SDK's max_sessions).",
    "mcp_metrics_path_near_misses": "Requests to a path that looks like the MCP path but is not "
    "observed (check mcp_path).",
    "mcp_metrics_build_info": "The mcp-metrics-middleware version serving these metrics.",
    "mcp_server_client_operation_duration_seconds": "MCP request or notification duration per "
    "calling client (clientInfo.name, bounded: known_clients, then the first max_clients names).",
    "mcp_metrics_invalid_trace_context": "traceparent values (params._meta or the HTTP header) "
    "that are not valid W3C trace context, ignored.",
}

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MCPMetrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()

Row = list[float]  # a histogram row: [count per bucket..., count in +Inf, sum]
# The latest exemplar of each bucket of one row: bucket index -> (trace_id, span_id, value, unix time).
Exemplars = dict[int, tuple[str, str | None, float, float]]
# What store.resolve returns: (labels, operation row, client row, payload row pair, payload
# labels, answer message, arrival message), the rows None and the client row its labels in
# multiprocess mode; opaque to the recorder, which may keep it.
Resolved = tuple[Any, ...]
_MAX_RESOLVED = 4096  # decisions the recorder keeps (only those that changed no policy state)
_FOLD_AT = 256  # queued observer events recorded at once on the serving thread
_FOLD_FORCE = 16384  # past this many queued, the serving thread waits for a fold in progress
_log_enabled = logger.isEnabledFor  # cached per level by logging: the disabled path is one call
_INFO = logging.INFO


def _observe(rows: dict[Any, Row], key: Any, bounds: tuple[float, ...], value: float) -> int:
    """Add ``value`` to the row of ``key``; return the index of the bucket it landed in."""
    row = rows.get(key)
    if row is None:
        row = rows[key] = [0.0] * (len(bounds) + 2)
    index = bisect_left(bounds, value)
    row[index] += 1.0
    row[-1] += value
    return index


class _FastStore(Collector):
    """All the recorder's numbers in plain containers, written by the fold, read when scraped.

    The writing methods take no lock: the recorder calls them only while it holds ``lock`` (its
    fold lock), and ``collect`` copies the numbers under the same lock.
    """

    def __init__(self, duration_buckets: tuple[float, ...], session_buckets: tuple[float, ...]) -> None:
        self.lock = threading.RLock()
        self.duration_buckets = duration_buckets
        self.session_buckets = session_buckets
        self.operations: dict[tuple[str, ...], Row] = {}
        self.exemplars: dict[tuple[str, ...], Exemplars] = {}
        self.clients: dict[tuple[str, ...], Row] = {}
        self.invalid_trace_contexts = 0.0
        self.payloads: dict[tuple[str, ...], Row] = {}
        self.payload_rows: dict[tuple[str, str], list[Row | None]] = {}  # (method, tool) -> [request, response]
        self.http: dict[tuple[str, ...], Row] = {}
        self.sessions: dict[tuple[str, ...], Row] = {}
        self.in_flight: dict[tuple[str, str], float] = {}
        self.messages: dict[tuple[str, str, str], float] = {}
        self.rounds: dict[tuple[str, str], float] = {}
        self.parse_errors = dict.fromkeys(PARSE_ERROR_REASONS, 0.0)
        self.overflow = dict.fromkeys(LABELS_WITH_OVERFLOW, 0.0)
        self.sessions_active = 0.0
        self.near_misses = 0.0
        self.before_collect: Callable[[], None] | None = None  # the recorder's fold

    # -- the request path -------------------------------------------------------------------

    def start(self, key: tuple[str, str], message: tuple[str, str, str]) -> None:
        """An operation arrived: in flight, and its request message counted."""
        in_flight = self.in_flight
        in_flight[key] = in_flight.get(key, 0.0) + 1.0
        messages = self.messages
        messages[message] = messages.get(message, 0.0) + 1.0

    def ended(
        self,
        in_flight: tuple[str, str] | None,
        message: tuple[str, str, str] | None = None,
        arrival: tuple[str, str, str] | None = None,
    ) -> None:
        """An operation ended without a duration to record (withdrawn, or one round of a call).

        ``message``: its answer, sent. ``arrival``: its request message, when its start was not
        recorded apart; the gauge never moved then, and ``in_flight`` is only shown (at 0 if
        new), as a recorded start would have shown it. Otherwise the gauge goes down.
        """
        gauges = self.in_flight
        counts = self.messages
        if arrival is not None:
            counts[arrival] = counts.get(arrival, 0.0) + 1.0
            if in_flight is not None and in_flight not in gauges:
                gauges[in_flight] = 0.0
        elif in_flight is not None:
            gauges[in_flight] = gauges.get(in_flight, 0.0) - 1.0
        if message is not None:
            counts[message] = counts.get(message, 0.0) + 1.0

    def resolve(
        self,
        labels: tuple[str, ...],
        payload_labels: tuple[str, str],
        message: tuple[str, str, str] | None,
        client: tuple[str, str, str],
        arrival: tuple[str, str, str] | None,
        shown: tuple[str, str] | None,
    ) -> Resolved:
        """The rows a finished operation with these label sets updates, made on first use.

        The recorder may keep the result for the next operation decided the same way: rows are
        never replaced. ``shown``: an in-flight key to show (at 0 if new).
        """
        width = len(self.duration_buckets) + 2
        row = self.operations.get(labels)
        if row is None:
            row = self.operations[labels] = [0.0] * width
        client_row = self.clients.get(client)
        if client_row is None:
            client_row = self.clients[client] = [0.0] * width
        pair = self.payload_rows.get(payload_labels)
        if pair is None:
            pair = self.payload_rows[payload_labels] = [None, None]
        if shown is not None and shown not in self.in_flight:
            self.in_flight[shown] = 0.0
        return (labels, row, client_row, pair, payload_labels, message, arrival)

    def finished(
        self,
        rows: Resolved,
        in_flight: tuple[str, str] | None,
        duration: float,
        request_size: int,
        response_size: int,
        trace: tuple[str, str | None] | None = None,
        walltime: float | None = None,
    ) -> None:
        """An operation finished: its duration and sizes, in the rows of :meth:`resolve`.

        ``in_flight``: the gauge key its recorded start moved (None: its start was not recorded
        apart, see ``ended``). ``trace``: (trace id, span id), kept as the exemplar of the
        bucket the duration landed in, stamped ``walltime`` (Unix seconds; default: now).
        """
        labels, row, client_row, pair, payload_labels, message, arrival = rows
        # ended(), inlined (once per operation; its gauge was shown when the rows were resolved).
        counts = self.messages
        if arrival is not None:
            counts[arrival] = counts.get(arrival, 0.0) + 1.0
        elif in_flight is not None:
            gauges = self.in_flight
            gauges[in_flight] = gauges.get(in_flight, 0.0) - 1.0
        if message is not None:
            counts[message] = counts.get(message, 0.0) + 1.0
        # The operation and client rows share one bucket index.
        index = bisect_left(self.duration_buckets, duration)
        row[index] += 1.0
        row[-1] += duration
        client_row[index] += 1.0
        client_row[-1] += duration
        if trace is not None:
            exemplars = self.exemplars.get(labels)
            if exemplars is None:
                exemplars = self.exemplars[labels] = {}
            exemplars[index] = (trace[0], trace[1], duration, time.time() if walltime is None else walltime)
        # Each payload row is made, and so exposed, on its first observation.
        if request_size:
            size_row = pair[0]
            if size_row is None:
                size_row = pair[0] = self._payload_row("request", payload_labels)
            size_row[bisect_left(PAYLOAD_BUCKETS, request_size)] += 1.0
            size_row[-1] += request_size
        if response_size:
            size_row = pair[1]
            if size_row is None:
                size_row = pair[1] = self._payload_row("response", payload_labels)
            size_row[bisect_left(PAYLOAD_BUCKETS, response_size)] += 1.0
            size_row[-1] += response_size

    def _payload_row(self, direction: str, payload_labels: tuple[str, str]) -> Row:
        row: Row = [0.0] * (len(PAYLOAD_BUCKETS) + 2)
        self.payloads[(direction, *payload_labels)] = row
        return row

    def input_required(self, key: tuple[str, str]) -> None:
        self.rounds[key] = self.rounds.get(key, 0.0) + 1.0

    def message(self, key: tuple[str, str, str], n: int = 1) -> None:
        self.messages[key] = self.messages.get(key, 0.0) + n

    def http_request(self, key: tuple[str, str], duration: float) -> None:
        # _observe, inlined (once per HTTP request).
        rows = self.http
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0.0] * (len(HTTP_DURATION_BUCKETS) + 2)
        row[bisect_left(HTTP_DURATION_BUCKETS, duration)] += 1.0
        row[-1] += duration

    def session_started(self) -> None:
        self.sessions_active += 1.0

    def session_ended(self, version: str, duration: float) -> None:
        self.sessions_active -= 1.0
        _observe(self.sessions, (version,), self.session_buckets, duration)

    def parse_error(self, reason: str) -> None:
        self.parse_errors[reason] += 1.0

    def label_overflow(self, label: str, n: int = 1) -> None:
        self.overflow[label] += n

    def near_miss(self) -> None:
        self.near_misses += 1.0

    def invalid_trace_context(self) -> None:
        self.invalid_trace_contexts += 1.0

    # -- exposition -------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return [
            HistogramMetricFamily("mcp_server_operation_duration_seconds", "", labels=()),
            GaugeMetricFamily("mcp_server_operations_in_flight", ""),
            HistogramMetricFamily("mcp_server_session_duration_seconds", "", labels=()),
            GaugeMetricFamily("mcp_server_sessions_active", ""),
            CounterMetricFamily("mcp_server_messages", ""),
            CounterMetricFamily("mcp_server_input_required", ""),
            HistogramMetricFamily("mcp_server_operation_payload_bytes", "", labels=()),
            HistogramMetricFamily("mcp_http_server_request_duration_seconds", "", labels=()),
            CounterMetricFamily("mcp_metrics_parse_errors", ""),
            CounterMetricFamily("mcp_metrics_label_overflow", ""),
            CounterMetricFamily("mcp_metrics_path_near_misses", ""),
            HistogramMetricFamily("mcp_server_client_operation_duration_seconds", "", labels=()),
            CounterMetricFamily("mcp_metrics_invalid_trace_context", ""),
        ]

    @staticmethod
    def _histogram(
        name: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        rows: dict[tuple[str, ...], Row],
        exemplars: dict[tuple[str, ...], Exemplars] | None = None,
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, DOCS[name], labels=labels)
        edges = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, row in rows.items():
            cumulative = 0.0
            buckets: list[Any] = []
            marks = exemplars.get(key) if exemplars else None
            for index, (edge, count) in enumerate(zip(edges, row[:-1], strict=True)):
                cumulative += count
                mark = marks.get(index) if marks else None
                if mark is None:
                    buckets.append((edge, cumulative))
                else:
                    trace_id, span_id, value, timestamp = mark
                    ids = {"trace_id": trace_id} if span_id is None else {"trace_id": trace_id, "span_id": span_id}
                    buckets.append((edge, cumulative, Exemplar(ids, value, timestamp)))
            family.add_metric(list(key), buckets, row[-1])
        return family

    def collect(self) -> Iterator[Metric]:
        if self.before_collect is not None:
            self.before_collect()  # record every event that happened before this scrape
        # Copy under the lock (a few microseconds per thousand series); render outside it.
        with self.lock:
            operations = {k: v[:] for k, v in self.operations.items()}
            exemplars = {k: dict(v) for k, v in self.exemplars.items()}
            clients = {k: v[:] for k, v in self.clients.items()}
            invalid_trace_contexts = self.invalid_trace_contexts
            payloads = {k: v[:] for k, v in self.payloads.items()}
            http = {k: v[:] for k, v in self.http.items()}
            sessions = {k: v[:] for k, v in self.sessions.items()}
            in_flight = dict(self.in_flight)
            messages = dict(self.messages)
            rounds = dict(self.rounds)
            parse_errors = dict(self.parse_errors)
            overflow = dict(self.overflow)
            sessions_active = self.sessions_active
            near_misses = self.near_misses
        yield self._histogram(
            "mcp_server_operation_duration_seconds", OPERATION_LABELS, self.duration_buckets, operations, exemplars
        )
        yield self._histogram(
            "mcp_server_client_operation_duration_seconds", CLIENT_LABELS, self.duration_buckets, clients
        )
        yield CounterMetricFamily(
            "mcp_metrics_invalid_trace_context", DOCS["mcp_metrics_invalid_trace_context"], invalid_trace_contexts
        )
        gauge = GaugeMetricFamily(
            "mcp_server_operations_in_flight", DOCS["mcp_server_operations_in_flight"], labels=IN_FLIGHT_LABELS
        )
        for key, value in in_flight.items():
            gauge.add_metric(list(key), value)
        yield gauge
        yield self._histogram(
            "mcp_server_session_duration_seconds", ("mcp_protocol_version",), self.session_buckets, sessions
        )
        yield GaugeMetricFamily("mcp_server_sessions_active", DOCS["mcp_server_sessions_active"], sessions_active)
        counter = CounterMetricFamily("mcp_server_messages", DOCS["mcp_server_messages"], labels=MESSAGE_LABELS)
        for mkey, value in messages.items():
            counter.add_metric(list(mkey), value)
        yield counter
        counter = CounterMetricFamily(
            "mcp_server_input_required", DOCS["mcp_server_input_required"], labels=ROUND_LABELS
        )
        for rkey, value in rounds.items():
            counter.add_metric(list(rkey), value)
        yield counter
        yield self._histogram("mcp_server_operation_payload_bytes", PAYLOAD_LABELS, PAYLOAD_BUCKETS, payloads)
        yield self._histogram("mcp_http_server_request_duration_seconds", HTTP_LABELS, HTTP_DURATION_BUCKETS, http)
        counter = CounterMetricFamily("mcp_metrics_parse_errors", DOCS["mcp_metrics_parse_errors"], labels=("reason",))
        for reason, value in parse_errors.items():
            counter.add_metric([reason], value)
        yield counter
        counter = CounterMetricFamily(
            "mcp_metrics_label_overflow", DOCS["mcp_metrics_label_overflow"], labels=("label",)
        )
        for label, value in overflow.items():
            counter.add_metric([label], value)
        yield counter
        yield CounterMetricFamily("mcp_metrics_path_near_misses", DOCS["mcp_metrics_path_near_misses"], near_misses)


class _ClientStore:
    """The same numbers in prometheus-client metric objects (multiprocess-capable)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        duration_buckets: tuple[float, ...],
        session_buckets: tuple[float, ...],
    ) -> None:
        def histogram(name: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
            return Histogram(name, DOCS[name], labels, buckets=buckets, registry=registry)

        def counter(name: str, labels: Sequence[str]) -> Counter:
            return Counter(name, DOCS[name], labels, registry=registry)

        self.operations = histogram("mcp_server_operation_duration_seconds", OPERATION_LABELS, duration_buckets)
        self.clients = histogram("mcp_server_client_operation_duration_seconds", CLIENT_LABELS, duration_buckets)
        self.invalid_trace_contexts = counter("mcp_metrics_invalid_trace_context", ())
        self.in_flight = Gauge(
            "mcp_server_operations_in_flight",
            DOCS["mcp_server_operations_in_flight"],
            IN_FLIGHT_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sessions = histogram("mcp_server_session_duration_seconds", ("mcp_protocol_version",), session_buckets)
        self.sessions_active = Gauge(
            "mcp_server_sessions_active",
            DOCS["mcp_server_sessions_active"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages = counter("mcp_server_messages", MESSAGE_LABELS)
        self.rounds = counter("mcp_server_input_required", ROUND_LABELS)
        self.payloads = histogram("mcp_server_operation_payload_bytes", PAYLOAD_LABELS, PAYLOAD_BUCKETS)
        self.http = histogram("mcp_http_server_request_duration_seconds", HTTP_LABELS, HTTP_DURATION_BUCKETS)
        self.parse_errors = counter("mcp_metrics_parse_errors", ("reason",))
        self.overflow = counter("mcp_metrics_label_overflow", ("label",))
        self.near_misses = counter("mcp_metrics_path_near_misses", ())
        self.lock = threading.RLock()  # the fold lock (prometheus-client's objects lock themselves)
        self._parse_errors = {r: self.parse_errors.labels(r) for r in PARSE_ERROR_REASONS}
        self._overflow = {name: self.overflow.labels(name) for name in LABELS_WITH_OVERFLOW}

    def start(self, key: tuple[str, str], message: tuple[str, str, str]) -> None:
        self.in_flight.labels(*key).inc()
        self.messages.labels(*message).inc()

    def ended(
        self,
        in_flight: tuple[str, str] | None,
        message: tuple[str, str, str] | None = None,
        arrival: tuple[str, str, str] | None = None,
    ) -> None:
        if arrival is not None:
            self.messages.labels(*arrival).inc()
            if in_flight is not None:
                self.in_flight.labels(*in_flight)  # shown at 0, as a recorded start shows it
        elif in_flight is not None:
            self.in_flight.labels(*in_flight).dec()
        if message is not None:
            self.messages.labels(*message).inc()

    def resolve(
        self,
        labels: tuple[str, ...],
        payload_labels: tuple[str, str],
        message: tuple[str, str, str] | None,
        client: tuple[str, str, str],
        arrival: tuple[str, str, str] | None,
        shown: tuple[str, str] | None,
    ) -> Resolved:
        if shown is not None:
            self.in_flight.labels(*shown)
        return (labels, None, client, None, payload_labels, message, arrival)

    def finished(
        self,
        rows: Resolved,
        in_flight: tuple[str, str] | None,
        duration: float,
        request_size: int,
        response_size: int,
        trace: tuple[str, str | None] | None = None,
        walltime: float | None = None,
    ) -> None:
        # ``trace`` is dropped: multiprocess files cannot carry exemplars.
        labels, _, client, _, payload_labels, message, arrival = rows
        self.ended(in_flight, message, arrival)
        self.operations.labels(*labels).observe(duration)
        self.clients.labels(*client).observe(duration)
        if request_size:
            self.payloads.labels("request", *payload_labels).observe(request_size)
        if response_size:
            self.payloads.labels("response", *payload_labels).observe(response_size)

    def input_required(self, key: tuple[str, str]) -> None:
        self.rounds.labels(*key).inc()

    def message(self, key: tuple[str, str, str], n: int = 1) -> None:
        self.messages.labels(*key).inc(n)

    def http_request(self, key: tuple[str, str], duration: float) -> None:
        self.http.labels(*key).observe(duration)

    def session_started(self) -> None:
        self.sessions_active.inc()

    def session_ended(self, version: str, duration: float) -> None:
        self.sessions_active.dec()
        self.sessions.labels(version).observe(duration)

    def parse_error(self, reason: str) -> None:
        self._parse_errors[reason].inc()

    def label_overflow(self, label: str, n: int = 1) -> None:
        self._overflow[label].inc(n)

    def near_miss(self) -> None:
        self.near_misses.inc()

    def invalid_trace_context(self) -> None:
        self.invalid_trace_contexts.inc()


class _Static(Collector):
    """Gauges whose value is configuration: build info and the session limit."""

    def __init__(self, sessions_limit: float) -> None:
        self.sessions_limit = sessions_limit

    def collect(self) -> Iterator[Metric]:
        from mcp_metrics_middleware import __version__

        info = GaugeMetricFamily("mcp_metrics_build_info", DOCS["mcp_metrics_build_info"], labels=("version",))
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily("mcp_server_sessions_limit", DOCS["mcp_server_sessions_limit"], self.sessions_limit)


def _buckets(name: str, values: Iterable[float]) -> tuple[float, ...]:
    bounds = tuple(float(v) for v in values)
    if not bounds or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) or bounds[0] <= 0:
        raise ValueError(f"{name} must be positive and strictly increasing, got {bounds!r}")
    return bounds


class MCPMetrics:
    """The recorder: every metric, registered once per registry, and every label decision.

    It is the :class:`~mcp_metrics_middleware.protocol.model.Observer` of the sans-IO core.
    Use :meth:`for_registry` to share one instance between several middlewares on the same
    registry (two ``MCPMetricsMiddleware`` on one registry never raise "Duplicated timeseries").

    Args:
        registry: where the metrics are registered (``None``: nowhere, for tests).
        max_names: tool names (and, separately, prompt names) admitted as label values.
        max_error_codes: non-standard JSON-RPC error codes admitted as label values.
        max_name_length: longest name admitted (characters).
        max_operation_series: distinct label sets of the operation histogram; past it, new
            sets keep ``error_type`` and fold every other label into ``_OTHER``.
        duration_buckets: operation histogram boundaries in seconds (default: OTel's plus four
            below 10 ms).
        session_buckets: session duration boundaries in seconds (default: up to a day).
        max_sessions: exposed as ``mcp_server_sessions_limit`` (the SDK's ``max_sessions``).
        known_clients: client names (``clientInfo.name``) always admitted as ``mcp_client_name``.
        max_clients: further client names admitted, first come first served; past it, and for
            names longer than ``max_client_name_length`` or with characters outside
            ``config.CLIENT_NAME_CHARS``, the label is ``_OTHER``.
        max_client_name_length: longest client name admitted (characters).
        max_client_series: distinct label sets of the per-client histogram; past it, new sets
            keep ``error_type`` and fold the client and method into ``_OTHER``.
        multiprocess: use prometheus-client's multiprocess-capable metrics (``None``: when
            ``PROMETHEUS_MULTIPROC_DIR`` is set).

    Raises:
        ValueError: for buckets that are empty, not positive or not increasing, and for
            known client names that are not non-empty strings.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_names: int = DEFAULT_MAX_NAMES,
        max_error_codes: int = DEFAULT_MAX_ERROR_CODES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
        max_operation_series: int = DEFAULT_MAX_OPERATION_SERIES,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        session_buckets: Sequence[float] = SESSION_DURATION_BUCKETS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        known_clients: Iterable[str] = (),
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_client_name_length: int = DEFAULT_MAX_CLIENT_NAME_LENGTH,
        max_client_series: int = DEFAULT_MAX_CLIENT_SERIES,
        multiprocess: bool | None = None,
    ) -> None:
        self.registry = registry
        self.known_clients: frozenset[str] = frozenset()
        self.add_known_clients(known_clients)
        self.max_clients = max_clients
        self.max_client_name_length = max_client_name_length
        self.max_client_series = max_client_series
        self.clients: set[str] = set()  # admitted by the first-N rule (known_clients apart)
        self.client_series: set[tuple[str, str, str]] = set()
        self.max_names = max_names
        self.max_operation_series = max_operation_series
        self.operation_series: set[tuple[str, ...]] = set()
        self.max_error_codes = max_error_codes
        self.max_name_length = max_name_length
        self.tools: set[str] = set()
        self.prompts: set[str] = set()
        self.error_codes: set[int] = set()
        self.duration_buckets = _buckets("duration_buckets", duration_buckets)
        self.session_buckets = _buckets("session_buckets", session_buckets)
        self.multiprocess = multiproc_dir() is not None if multiprocess is None else multiprocess
        store: _FastStore | _ClientStore
        if self.multiprocess:
            store = _ClientStore(registry, self.duration_buckets, self.session_buckets)
        else:
            store = _FastStore(self.duration_buckets, self.session_buckets)
            if registry is not None:
                registry.register(store)
        self.static = _Static(float(max_sessions))
        if registry is not None:
            registry.register(self.static)
        self.store = store
        self._events: deque[tuple[Callable[[Any], None], Any]] = deque()
        # The handlers of every request's events, bound once: a bound method made for each
        # queued event is an allocation per event.
        self._on_started: Callable[[Operation], None] = self._record_started
        self._on_finished: Callable[[Operation], None] = self._record_finished
        self._on_http: Callable[[tuple[str, int, float]], None] = self._record_http
        # Decisions of _record_finished that changed no policy state, by the values they read.
        self._resolved: dict[tuple[Any, ...], Resolved] = {}
        # One lock: the store is written only by the fold, under its lock, and read under it.
        self._fold_lock = store.lock
        self._fold_at = 1 if self.multiprocess else _FOLD_AT
        if isinstance(store, _FastStore):
            store.before_collect = self.fold
        self.overflow = store.label_overflow

    @classmethod
    def for_registry(cls, registry: CollectorRegistry, **kwargs: Any) -> MCPMetrics:
        """The metrics registered in ``registry``: created on first use, shared afterwards."""
        with _by_registry_lock:
            metrics = _by_registry.get(registry)
            if metrics is None:
                metrics = cls(registry, **kwargs)
                _by_registry[registry] = metrics
            return metrics

    # -- the observer interface (protocol.model.Observer) -----------------------------------
    # Each event is queued, in order, and recorded by fold(): every _FOLD_AT events on the
    # serving thread, and before every scrape. Recording a few hundred events in one loop
    # costs about 4 us less per tools/call than recording each as it happens (the label
    # policy and the store stay warm in the CPU caches); a scrape always sees every event.

    def _queue(self, handler: Callable[[Any], None], item: Any) -> None:
        queue = self._events
        queue.append((handler, item))
        if len(queue) >= self._fold_at:
            self._fold_soon()

    # What is queued is the Operation itself: the model never changes an operation after it
    # finished (a finished record is final), and an operation holds only bounded values (its
    # client strings are kept to 4,096 characters when decoded). The three events of every
    # request inline _queue (a call less each).

    def operation_started(self, op: Operation) -> None:
        queue = self._events
        queue.append((self._on_started, op))
        if len(queue) >= self._fold_at:
            self._fold_soon()

    def operation_finished(self, op: Operation) -> None:
        queue = self._events
        if op.trace_id is None:
            queue.append((self._on_finished, op))
        else:
            # The exemplar's timestamp is when the operation finished, not when it is folded.
            queue.append((self._record_traced, (op, time.time())))
        if len(queue) >= self._fold_at:
            self._fold_soon()
        # Logged as it happens, for the operations the duration histogram records.
        if _log_enabled(_INFO) and op.direction == RECEIVED and op.result_type != "input_required":
            log_operation(op)

    def operation_withdrawn(self, op: Operation) -> None:
        self._queue(self._record_withdrawn, op)

    def message(self, direction: str, kind: str, method: str | None, n: int = 1) -> None:
        self._queue(self._record_message, (direction, kind, method, n))

    def names_listed(self, method: str, names: Sequence[Any]) -> None:
        self._queue(self._record_names, (method, names))

    def session_started(self, session: Session) -> None:
        self._queue(self._record_session_started, session)

    def session_ended(self, session: Session, end: float) -> None:
        self._queue(self._record_session_ended, (session, end))

    def parse_error(self, reason: str) -> None:
        """Traffic that could not be decoded, by reason (``PARSE_ERROR_REASONS``)."""
        self._queue(self.store.parse_error, reason)

    def near_miss(self) -> None:
        self._queue(self._record_near_miss, None)

    def invalid_trace_context(self) -> None:
        self._queue(self._record_invalid_trace_context, None)

    def http_request(self, method: str, status: int, duration: float) -> None:
        queue = self._events
        queue.append((self._on_http, (method, status, duration)))
        if len(queue) >= self._fold_at:
            self._fold_soon()

    def fold(self) -> None:
        """Record every queued event now (a scrape does this first; so may a test).

        Thread-safe: events are recorded in order by one thread at a time. Never raises: an
        event that fails to record is counted as ``internal`` and the rest are recorded.
        """
        with self._fold_lock:
            self._drain()

    def _fold_soon(self) -> None:
        """Fold from the serving thread, unless another thread is folding now.

        Then this thread does not wait: the next event retries (the queue is still past the
        threshold), and a scrape folds everything first anyway.
        """
        if self.multiprocess:
            self.fold()  # another process scrapes: nothing else would fold these
        elif self._fold_lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._fold_lock.release()
        elif len(self._events) >= _FOLD_FORCE:
            self.fold()  # a fold in progress is not keeping up: wait for it, bounded memory

    def _drain(self) -> None:
        pop = self._events.popleft
        # At most what is queued now: events that arrive meanwhile wait for the next fold. (The
        # lock is reentrant: should a record ever queue an event in multiprocess mode, the
        # nested fold takes events from this count, and this one stops at an empty queue.)
        for _ in range(len(self._events)):
            try:
                handler, item = pop()
            except IndexError:
                return
            try:
                handler(item)
            except Exception:
                report_internal(self.store)  # counted at once: this fold holds the lock

    def _record_started(self, op: Operation) -> None:
        # op.slot: (method label, in-flight key or None), decided here and used by the finish
        # (recorded after this, in queue order) so that the gauge goes back down on the key it
        # went up on. An operation the client sent that had already finished when its start is
        # folded (most of them: the fold comes later) keeps slot None and never moves the
        # gauge: its finish decides its labels and counts its request message.
        if op.done and op.direction == RECEIVED:
            return
        method = op.method
        if method not in KNOWN_METHODS:
            method = self.method_label(method)
        if op.direction == SENT:
            op.slot = (method, None)
            self.store.message((SENT, REQUEST, method))
            return
        tool = ""
        if op.method == "tools/call":
            name = op.name
            tool = name if name is not None and op.kind == REQUEST and name in self.tools else OTHER
        key = (method, tool)
        op.slot = (method, key)
        self.store.start(key, (RECEIVED, op.kind, method))

    def _record_traced(self, item: tuple[Operation, float]) -> None:
        self._record_finished(item[0], item[1])

    def _record_finished(self, op: Operation, walltime: float | None = None) -> None:
        # The hot path. Most operations started and finished between two folds (slot None), and
        # most are decided exactly like an earlier one: each label took its common value with
        # one set lookup, and no policy state changed. Such a decision is kept, keyed by every
        # value it read, with the store rows it resolved; the next operation with the same values
        # is recorded with one lookup. Label sets only ever grow, so a kept decision stays true.
        slot = op.slot
        answer = op.answer_kind
        trace = None if op.trace_id is None else (op.trace_id, op.span_id)
        gauge: tuple[str, str] | None
        key: tuple[Any, ...] | None = None
        pure = True  # no policy method ran: nothing was admitted, no overflow counted
        if slot is None:  # started and finished before the fold: the gauge never moved
            key = (
                op.method,
                op.name,
                op.kind,
                op.vouched,
                answer,
                op.error_type,
                op.code,
                op.protocol_version,
                op.transport,
                op.client_name,
                op.result_type == "input_required",  # all the decision reads of it (bounded)
            )
            rows = self._resolved.get(key)
            if rows is not None:
                self.store.finished(rows, None, op.end - op.start, op.request_size, op.response_size, trace, walltime)
                return
            method = op.method
            if method not in KNOWN_METHODS:
                pure = False
                method = self.method_label(method)
            gauge = None  # below: the key its start would have moved (shown at 0, as if it had)
            arrival: tuple[str, str, str] | None = (RECEIVED, op.kind, method)
        else:
            method, gauge = slot
            arrival = None
            if gauge is None:  # a server-to-client request: the client answered
                if answer is not None:
                    self.store.message((RECEIVED, answer, method))
                return
        tool = prompt = ""
        raw_method = op.method
        if raw_method == "tools/call":
            tool = op.name  # type: ignore[assignment]
            if tool not in self.tools or not op.vouched or op.kind != REQUEST:
                pure = False
                if arrival is not None:  # the start's rule, before this answer can admit a name
                    name = op.name
                    gauge = (method, name if name is not None and op.kind == REQUEST and name in self.tools else OTHER)
                tool = self._name_label(self.tools, op, "gen_ai_tool_name")
        elif raw_method == "prompts/get":
            prompt = op.name  # type: ignore[assignment]
            if prompt not in self.prompts or not op.vouched or op.kind != REQUEST:
                pure = False
                prompt = self._name_label(self.prompts, op, "gen_ai_prompt_name")
        payload = (method, tool)
        if gauge is None:
            gauge = payload  # the start's key, whenever the label took its common value
        message = None if answer is None else (SENT, answer, method)
        if op.result_type == "input_required":
            # One round of a multi-round call, not the call: counted apart.
            self.store.input_required(payload)
            self.store.ended(gauge, message, arrival)
            return
        error_type = op.error_type
        code = ""
        if op.code is not None:
            pure = False
            code = self.code_label(op.code)
            if error_type and error_type == str(op.code) and code == OTHER:
                error_type = OTHER  # a custom code past the cap
                self.overflow("error_type")
        version = op.protocol_version
        if version and version not in KNOWN_PROTOCOL_VERSIONS:
            pure = False
            version = self.version_label(version)
        # A plain tuple in OperationLabels order (equal to, and cheaper to build than, the NamedTuple).
        labels: tuple[str, ...] = (method, tool, prompt, error_type, code, version, op.transport)
        if labels not in self.operation_series:
            pure = False
            labels = self.operation_labels(labels)
        client_name = op.client_name
        if client_name is None:
            client_name = ""
        elif client_name not in self.known_clients and client_name not in self.clients:
            pure = False
            client_name = self.client_label(client_name)
        client = (client_name, method, error_type)
        if client not in self.client_series:
            pure = False
            client = self.client_labels(client_name, method, error_type)
        rows = self.store.resolve(labels, payload, message, client, arrival, gauge if arrival else None)
        if key is not None and pure:
            resolved = self._resolved
            if len(resolved) >= _MAX_RESOLVED:
                resolved.clear()  # full (clients varying what they send): start over, hot keys return
            resolved[key] = rows
        self.store.finished(
            rows, None if arrival else gauge, op.end - op.start, op.request_size, op.response_size, trace, walltime
        )

    def _record_withdrawn(self, op: Operation) -> None:
        slot = op.slot
        if slot is None:  # started and withdrawn before the fold: only its request arrived
            method = self.method_label(op.method)
            tool = ""
            if op.method == "tools/call":
                name = op.name
                tool = name if name is not None and op.kind == REQUEST and name in self.tools else OTHER
            self.store.ended((method, tool), None, (RECEIVED, op.kind, method))
        elif slot[1] is not None:
            self.store.ended(slot[1])

    def _record_message(self, item: tuple[str, str, str | None, int]) -> None:
        direction, kind, method, n = item
        self.store.message((direction, kind, self.method_label(method, n)), n)

    def _record_names(self, item: tuple[str, Sequence[Any]]) -> None:
        method, names = item
        self._learn(self.tools if method == "tools/list" else self.prompts, names)

    def _record_near_miss(self, _: None) -> None:
        self.store.near_miss()

    def _record_invalid_trace_context(self, _: None) -> None:
        self.store.invalid_trace_context()

    def _record_session_started(self, session: Session) -> None:
        self.store.session_started()

    def _record_session_ended(self, item: tuple[Session, float]) -> None:
        session, end = item
        # The version's overflow was counted when the initialize answer was recorded.
        version = self.version_label(session.protocol_version, count=False)
        self.store.session_ended(version, max(0.0, end - session.start))

    def _record_http(self, item: tuple[str, int, float]) -> None:
        method, status, duration = item
        if method not in KNOWN_HTTP_METHODS:
            method = self.http_method_label(method)
        self.store.http_request((method, _STATUS_LABELS.get(status, "")), duration)

    # -- label policy -----------------------------------------------------------------------

    def _name_label(self, names: set[str], op: Operation, label: str) -> str:
        """The tool or prompt label of a ``tools/call`` or ``prompts/get``: never ``""``.

        A name becomes a label only if the server vouched for it: listed by the server
        (``tools/list``, ``prompts/list``), given by the operator (``known_tools``), or
        answered with a successful result to a request whose body named it; and only if it has
        at most ``max_name_length`` characters (a name over 4096 is never one, known or not). A call with no
        name, sent as a notification, refused by the server, or named only by a header the
        server did not check, is ``_OTHER``: junk never dilutes a real tool's numbers, nor the
        calls with a tool label.
        """
        name = op.name
        if name is None or op.kind != REQUEST or not op.vouched:
            self.overflow(label)
            return OTHER
        if name in names:
            return name
        if not op.name_from_header and not op.error_type and op.answer_kind == RESPONSE:
            self._admit(names, name)
            if name in names:
                return name
        self.overflow(label)
        return OTHER

    def method_label(self, method: str | None, n: int = 1) -> str:
        """The label for ``method``; ``n`` messages carried it (for the overflow count)."""
        if method is None:
            return ""
        if method in KNOWN_METHODS:
            return method
        self.overflow("mcp_method_name", n)
        return OTHER

    def http_method_label(self, method: str) -> str:
        if method in KNOWN_HTTP_METHODS:
            return method
        self.overflow("http_request_method")
        return OTHER

    def version_label(self, version: str | None, count: bool = True) -> str:
        if not version:
            return ""
        if version in KNOWN_PROTOCOL_VERSIONS:
            return version
        if count:
            self.overflow("mcp_protocol_version")
        return OTHER

    def _admit(self, names: set[str], name: Any) -> None:
        if (
            type(name) is str
            and name not in names
            and len(names) < self.max_names
            and 0 < len(name) <= self.max_name_length
            and name.isprintable()
        ):
            names.add(name)

    def _learn(self, names: set[str], candidates: Iterable[Any]) -> None:
        for name in candidates:
            self._admit(names, name)

    def learn_tools(self, names: Iterable[Any]) -> None:
        """Admit tool names the server offers (e.g. from its own tool list)."""
        with self._fold_lock:
            self._drain()
            self._learn(self.tools, names)

    def learn_prompts(self, names: Iterable[Any]) -> None:
        with self._fold_lock:
            self._drain()
            self._learn(self.prompts, names)

    def operation_labels(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """Apply the series cap to a full operation label set (values in ``OperationLabels`` order)."""
        seen = self.operation_series
        if labels in seen:
            return labels
        if len(seen) < self.max_operation_series:
            seen.add(labels)
            return labels
        self.overflow("series")
        error_type, transport = labels[3], labels[6]
        return OperationLabels(OTHER, OTHER, OTHER, error_type, OTHER, OTHER, transport)

    def add_known_clients(self, names: Iterable[str]) -> None:
        """Admit these client names as ``mcp_client_name`` values, regardless of the cap."""
        names = frozenset(names)
        bad = sorted(repr(n) for n in names if type(n) is not str or not n)
        if bad:
            raise ValueError(f"known_clients must be non-empty strings, got {', '.join(bad)}")
        self.known_clients |= names

    def client_label(self, name: str | None) -> str:
        """``mcp_client_name``: known, or among the first ``max_clients`` well-formed names; else _OTHER."""
        if name is None:
            return ""  # no clientInfo reached us (e.g. stateless handshake-era requests)
        if name in self.known_clients or name in self.clients:
            return name
        if (
            len(self.clients) < self.max_clients
            and 0 < len(name) <= self.max_client_name_length
            and CLIENT_NAME_CHARS.issuperset(name)
        ):
            self.clients.add(name)
            return name
        self.overflow("mcp_client_name")
        return OTHER

    def client_labels(self, client: str, method: str, error_type: str) -> tuple[str, str, str]:
        """Apply the per-client histogram's own series cap."""
        labels = (client, method, error_type)
        seen = self.client_series
        if labels in seen:
            return labels
        if len(seen) < self.max_client_series:
            seen.add(labels)
            return labels
        self.overflow("client_series")
        return (OTHER, OTHER, error_type)

    def code_label(self, code: int) -> str:
        if code in STANDARD_ERROR_CODES or code in self.error_codes:
            return str(code)
        if len(self.error_codes) < self.max_error_codes:
            self.error_codes.add(code)
            return str(code)
        self.overflow("rpc_response_status_code")
        return OTHER


_STATUS_LABELS = {code: str(code) for code in range(100, 600)}
