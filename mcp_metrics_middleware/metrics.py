"""The Prometheus metrics, and the rules that keep their label values bounded.

Two stores keep the numbers:

* ``_FastStore`` (the default): plain dicts and lists updated under one lock, exposed through a
  custom collector when Prometheus scrapes. Recording a whole operation costs one lock and a few
  list increments, several times cheaper than prometheus-client's per-metric locks.
* ``_ClientStore``: prometheus-client's own ``Histogram``/``Counter``/``Gauge``. Used in
  multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where values must live in the shared mmap files
  that ``MultiProcessCollector`` aggregates.

Both expose exactly the same names, types, labels and buckets.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mcp_metrics_middleware.config import (
    DEFAULT_MAX_ERROR_CODES,
    DEFAULT_MAX_NAME_LENGTH,
    DEFAULT_MAX_NAMES,
    DEFAULT_MAX_OPERATION_SERIES,
    DURATION_BUCKETS,
    HTTP_DURATION_BUCKETS,
    KNOWN_HTTP_METHODS,
    KNOWN_METHODS,
    KNOWN_PROTOCOL_VERSIONS,
    LABELS_WITH_OVERFLOW,
    OTHER,
    PARSE_ERROR_REASONS,
    PAYLOAD_BUCKETS,
    STANDARD_ERROR_CODES,
)
from mcp_metrics_middleware.multiprocess import multiproc_dir

OPERATION_LABELS = (
    "mcp_method_name",
    "gen_ai_tool_name",
    "gen_ai_prompt_name",
    "error_type",
    "rpc_response_status_code",
    "mcp_protocol_version",
)
IN_FLIGHT_LABELS = ("mcp_method_name", "gen_ai_tool_name")
MESSAGE_LABELS = ("direction", "message_type", "mcp_method_name")
PAYLOAD_LABELS = ("direction", "mcp_method_name", "gen_ai_tool_name")
HTTP_LABELS = ("http_request_method", "http_response_status_code")

# name, documentation (shared by both stores)
DOCS = {
    "mcp_server_operation_duration_seconds": "MCP request or notification duration, from its "
    "arrival until its result or ack was sent.",
    "mcp_server_operations_in_flight": "MCP requests received and not yet answered.",
    "mcp_server_session_duration_seconds": "Duration of MCP sessions (protocol revisions up to "
    "2025-11-25).",
    "mcp_server_sessions_active": "MCP sessions currently open (protocol revisions up to "
    "2025-11-25).",
    "mcp_server_messages": "JSON-RPC messages seen on the MCP path.",
    "mcp_server_operation_payload_bytes": "Size of MCP request messages and of their response "
    "messages.",
    "mcp_http_server_request_duration_seconds": "Duration of HTTP requests to the MCP path "
    "(streams: until they end).",
    "mcp_metrics_parse_errors": "Traffic the middleware could not decode; the bytes still passed "
    "untouched.",
    "mcp_metrics_label_overflow": "Label values folded into _OTHER (unknown or over the cap).",
}

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MCPMetrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


_START, _OPERATION, _MESSAGE, _HTTP, _SESSION_START, _SESSION_END, _PARSE_ERROR, _OVERFLOW = range(
    8
)
_FLUSH_AT = 4096  # records queued before they are folded in without waiting for a scrape


class _FastStore(Collector):
    """All the middleware's numbers in plain containers; folded in and rendered when scraped.

    The request path only appends one tuple per event to a deque (thread-safe, no lock). The
    records are folded into the aggregates under a lock when Prometheus scrapes, or as soon as
    ``_FLUSH_AT`` of them are waiting, so memory stays bounded without a scraper.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: deque[tuple[Any, ...]] = deque()
        # Each histogram row is [count per bucket..., count in +Inf, sum].
        self.operations: dict[tuple[str, ...], list[float]] = {}
        self.payloads: dict[tuple[str, ...], list[float]] = {}
        self.http: dict[tuple[str, ...], list[float]] = {}
        self.sessions: dict[tuple[str, ...], list[float]] = {}
        self.in_flight: dict[tuple[str, str], float] = {}
        self.messages: dict[tuple[str, str, str], float] = {}
        self.parse_errors = dict.fromkeys(PARSE_ERROR_REASONS, 0.0)
        self.overflow = dict.fromkeys(LABELS_WITH_OVERFLOW, 0.0)
        self.sessions_active = 0.0

    # -- the request path: append only ----------------------------------------------------

    def _push(self, record: tuple[Any, ...]) -> None:
        queue = self.queue
        queue.append(record)
        if len(queue) >= _FLUSH_AT:
            self.flush()

    def start(self, key: tuple[str, str], message: tuple[str, str, str]) -> None:
        """An operation arrived: in flight, and its request message counted."""
        self._push((_START, key, message))

    def operation(
        self,
        in_flight: tuple[str, str],
        labels: tuple[str, str, str, str, str, str],
        duration: float,
        payload_labels: tuple[str, str] | None,
        request_size: int,
        response_size: int,
        message: tuple[str, str, str] | None = None,
    ) -> None:
        """An operation finished (and ``message``, its answer, was sent)."""
        queue = self.queue
        queue.append(
            (
                _OPERATION,
                in_flight,
                labels,
                duration,
                payload_labels,
                request_size,
                response_size,
                message,
            )
        )
        if len(queue) >= _FLUSH_AT:
            self.flush()

    def message(self, key: tuple[str, str, str], n: int = 1) -> None:
        self._push((_MESSAGE, key, n))

    def http_request(self, key: tuple[str, str], duration: float) -> None:
        self._push((_HTTP, key, duration))

    def session_started(self) -> None:
        self._push((_SESSION_START,))

    def session_ended(self, version: str, duration: float) -> None:
        self._push((_SESSION_END, version, duration))

    def parse_error(self, reason: str) -> None:
        self._push((_PARSE_ERROR, reason))

    def label_overflow(self, label: str, n: int = 1) -> None:
        self._push((_OVERFLOW, label, n))

    # -- folding the records in -----------------------------------------------------------

    def flush(self) -> None:
        with self.lock:
            queue = self.queue
            pop = queue.popleft
            in_flight = self.in_flight
            messages = self.messages
            while queue:
                record = pop()
                kind = record[0]
                if kind == _OPERATION:
                    _, key, labels, duration, payload_labels, req, resp, message = record
                    in_flight[key] = in_flight.get(key, 0.0) - 1.0
                    if message is not None:
                        messages[message] = messages.get(message, 0.0) + 1.0
                    _observe(self.operations, labels, DURATION_BUCKETS, duration)
                    if payload_labels is not None:
                        method, tool = payload_labels
                        if req:
                            _observe(self.payloads, ("request", method, tool), PAYLOAD_BUCKETS, req)
                        if resp:
                            _observe(
                                self.payloads, ("response", method, tool), PAYLOAD_BUCKETS, resp
                            )
                elif kind == _START:
                    key, message = record[1], record[2]
                    in_flight[key] = in_flight.get(key, 0.0) + 1.0
                    messages[message] = messages.get(message, 0.0) + 1.0
                elif kind == _HTTP:
                    _observe(self.http, record[1], HTTP_DURATION_BUCKETS, record[2])
                elif kind == _MESSAGE:
                    messages[record[1]] = messages.get(record[1], 0.0) + record[2]
                elif kind == _SESSION_START:
                    self.sessions_active += 1.0
                elif kind == _SESSION_END:
                    self.sessions_active -= 1.0
                    _observe(self.sessions, (record[1],), DURATION_BUCKETS, record[2])
                elif kind == _PARSE_ERROR:
                    self.parse_errors[record[1]] += 1.0
                else:
                    self.overflow[record[1]] += record[2]

    # -- exposition -----------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return [
            HistogramMetricFamily("mcp_server_operation_duration_seconds", "", labels=()),
            GaugeMetricFamily("mcp_server_operations_in_flight", ""),
            HistogramMetricFamily("mcp_server_session_duration_seconds", "", labels=()),
            GaugeMetricFamily("mcp_server_sessions_active", ""),
            CounterMetricFamily("mcp_server_messages", ""),
            HistogramMetricFamily("mcp_server_operation_payload_bytes", "", labels=()),
            HistogramMetricFamily("mcp_http_server_request_duration_seconds", "", labels=()),
            CounterMetricFamily("mcp_metrics_parse_errors", ""),
            CounterMetricFamily("mcp_metrics_label_overflow", ""),
        ]

    @staticmethod
    def _histogram(
        name: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        rows: dict[tuple[str, ...], list[float]],
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, DOCS[name], labels=labels)
        edges = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, row in rows.items():
            cumulative = 0.0
            buckets = []
            for edge, count in zip(edges, row[:-1], strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, row[-1])
        return family

    def collect(self) -> Iterator[Metric]:
        self.flush()
        with self.lock:
            operations = {k: list(v) for k, v in self.operations.items()}
            payloads = {k: list(v) for k, v in self.payloads.items()}
            http = {k: list(v) for k, v in self.http.items()}
            sessions = {k: list(v) for k, v in self.sessions.items()}
            in_flight = dict(self.in_flight)
            messages = dict(self.messages)
            parse_errors = dict(self.parse_errors)
            overflow = dict(self.overflow)
            sessions_active = self.sessions_active
        yield self._histogram(
            "mcp_server_operation_duration_seconds", OPERATION_LABELS, DURATION_BUCKETS, operations
        )
        gauge = GaugeMetricFamily(
            "mcp_server_operations_in_flight",
            DOCS["mcp_server_operations_in_flight"],
            labels=IN_FLIGHT_LABELS,
        )
        for key, value in in_flight.items():
            gauge.add_metric(list(key), value)
        yield gauge
        yield self._histogram(
            "mcp_server_session_duration_seconds",
            ("mcp_protocol_version",),
            DURATION_BUCKETS,
            sessions,
        )
        yield GaugeMetricFamily(
            "mcp_server_sessions_active", DOCS["mcp_server_sessions_active"], sessions_active
        )
        counter = CounterMetricFamily(
            "mcp_server_messages", DOCS["mcp_server_messages"], labels=MESSAGE_LABELS
        )
        for mkey, value in messages.items():
            counter.add_metric(list(mkey), value)
        yield counter
        yield self._histogram(
            "mcp_server_operation_payload_bytes", PAYLOAD_LABELS, PAYLOAD_BUCKETS, payloads
        )
        yield self._histogram(
            "mcp_http_server_request_duration_seconds", HTTP_LABELS, HTTP_DURATION_BUCKETS, http
        )
        counter = CounterMetricFamily(
            "mcp_metrics_parse_errors", DOCS["mcp_metrics_parse_errors"], labels=("reason",)
        )
        for reason, value in parse_errors.items():
            counter.add_metric([reason], value)
        yield counter
        counter = CounterMetricFamily(
            "mcp_metrics_label_overflow", DOCS["mcp_metrics_label_overflow"], labels=("label",)
        )
        for label, value in overflow.items():
            counter.add_metric([label], value)
        yield counter


def _observe(
    rows: dict[tuple[str, ...], list[float]],
    key: tuple[str, ...],
    bounds: tuple[float, ...],
    value: float,
) -> None:
    row = rows.get(key)
    if row is None:
        row = rows[key] = [0.0] * (len(bounds) + 2)
    row[bisect_left(bounds, value)] += 1.0
    row[-1] += value


class _ClientStore:
    """The same numbers in prometheus-client metric objects (multiprocess-capable)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def histogram(name: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
            return Histogram(name, DOCS[name], labels, buckets=buckets, registry=registry)

        self.operations = histogram(
            "mcp_server_operation_duration_seconds", OPERATION_LABELS, DURATION_BUCKETS
        )
        self.in_flight = Gauge(
            "mcp_server_operations_in_flight",
            DOCS["mcp_server_operations_in_flight"],
            IN_FLIGHT_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sessions = histogram(
            "mcp_server_session_duration_seconds", ("mcp_protocol_version",), DURATION_BUCKETS
        )
        self.sessions_active = Gauge(
            "mcp_server_sessions_active",
            DOCS["mcp_server_sessions_active"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages = Counter(
            "mcp_server_messages", DOCS["mcp_server_messages"], MESSAGE_LABELS, registry=registry
        )
        self.payloads = histogram(
            "mcp_server_operation_payload_bytes", PAYLOAD_LABELS, PAYLOAD_BUCKETS
        )
        self.http = histogram(
            "mcp_http_server_request_duration_seconds", HTTP_LABELS, HTTP_DURATION_BUCKETS
        )
        self.parse_errors = Counter(
            "mcp_metrics_parse_errors",
            DOCS["mcp_metrics_parse_errors"],
            ("reason",),
            registry=registry,
        )
        self.overflow = Counter(
            "mcp_metrics_label_overflow",
            DOCS["mcp_metrics_label_overflow"],
            ("label",),
            registry=registry,
        )
        self._parse_errors = {r: self.parse_errors.labels(r) for r in PARSE_ERROR_REASONS}
        self._overflow = {name: self.overflow.labels(name) for name in LABELS_WITH_OVERFLOW}

    def start(self, key: tuple[str, str], message: tuple[str, str, str]) -> None:
        self.in_flight.labels(*key).inc()
        self.messages.labels(*message).inc()

    def operation(
        self,
        in_flight: tuple[str, str],
        labels: tuple[str, str, str, str, str, str],
        duration: float,
        payload_labels: tuple[str, str] | None,
        request_size: int,
        response_size: int,
        message: tuple[str, str, str] | None = None,
    ) -> None:
        self.in_flight.labels(*in_flight).dec()
        if message is not None:
            self.messages.labels(*message).inc()
        self.operations.labels(*labels).observe(duration)
        if payload_labels is not None:
            if request_size:
                self.payloads.labels("request", *payload_labels).observe(request_size)
            if response_size:
                self.payloads.labels("response", *payload_labels).observe(response_size)

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


class MCPMetrics:
    """Every metric the middleware records, registered once per registry, and the label policy.

    Use :meth:`for_registry` to share one instance between several middlewares on the same
    registry (two ``MCPMetricsMiddleware`` on one registry never raise "Duplicated timeseries").
    ``multiprocess=None`` picks prometheus-client's multiprocess-capable metrics when
    ``PROMETHEUS_MULTIPROC_DIR`` is set.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_names: int = DEFAULT_MAX_NAMES,
        max_error_codes: int = DEFAULT_MAX_ERROR_CODES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
        max_operation_series: int = DEFAULT_MAX_OPERATION_SERIES,
        multiprocess: bool | None = None,
    ) -> None:
        self.registry = registry
        self.max_names = max_names
        self.max_operation_series = max_operation_series
        self.operation_series: set[tuple[str, ...]] = set()
        self.max_error_codes = max_error_codes
        self.max_name_length = max_name_length
        self.tools: set[str] = set()
        self.prompts: set[str] = set()
        self.error_codes: set[int] = set()
        self.multiprocess = multiproc_dir() is not None if multiprocess is None else multiprocess
        store: _FastStore | _ClientStore
        if self.multiprocess:
            store = _ClientStore(registry)
        else:
            store = _FastStore()
            if registry is not None:
                registry.register(store)
        self.store = store
        # The recording entry points, bound once.
        self.start = store.start
        self.operation = store.operation
        self.message = store.message
        self.http_request = store.http_request
        self.session_started = store.session_started
        self.session_ended = store.session_ended
        self.parse_error = store.parse_error
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

    # -- label policy ---------------------------------------------------------------------

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

    def version_label(self, version: str | None) -> str:
        if not version:
            return ""
        if version in KNOWN_PROTOCOL_VERSIONS:
            return version
        self.overflow("mcp_protocol_version")
        return OTHER

    def tool_label(self, name: str | None) -> str:
        if name is None:
            return ""
        if name in self.tools:
            return name
        self.overflow("gen_ai_tool_name")
        return OTHER

    def prompt_label(self, name: str | None) -> str:
        if name is None:
            return ""
        if name in self.prompts:
            return name
        self.overflow("gen_ai_prompt_name")
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

    def learn_tools(self, names: Iterable[Any]) -> None:
        for name in names:
            self._admit(self.tools, name)

    def learn_prompts(self, names: Iterable[Any]) -> None:
        for name in names:
            self._admit(self.prompts, name)

    def operation_labels(
        self, labels: tuple[str, str, str, str, str, str]
    ) -> tuple[str, str, str, str, str, str]:
        """Apply the series cap to a full operation label set."""
        seen = self.operation_series
        if labels in seen:
            return labels
        if len(seen) < self.max_operation_series:
            seen.add(labels)
            return labels
        self.overflow("series")
        return (OTHER, OTHER, OTHER, labels[3], OTHER, OTHER)

    def code_label(self, code: int) -> str:
        if code in STANDARD_ERROR_CODES or code in self.error_codes:
            return str(code)
        if len(self.error_codes) < self.max_error_codes:
            self.error_codes.add(code)
            return str(code)
        self.overflow("rpc_response_status_code")
        return OTHER
