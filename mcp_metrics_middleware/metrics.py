"""The Prometheus metrics, and the rules that keep their label values bounded."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from mcp_metrics_middleware.config import (
    DEFAULT_MAX_ERROR_CODES,
    DEFAULT_MAX_NAME_LENGTH,
    DEFAULT_MAX_NAMES,
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

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MCPMetrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


class MCPMetrics:
    """Every metric the middleware records, registered once per registry.

    Use :meth:`for_registry` to share one instance between several middlewares on the same
    registry (two ``MCPMetricsMiddleware`` on one registry never raise "Duplicated timeseries").
    Label children are cached in plain dicts: label values are bounded, so the caches are too.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_names: int = DEFAULT_MAX_NAMES,
        max_error_codes: int = DEFAULT_MAX_ERROR_CODES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
    ) -> None:
        self.registry = registry
        self.max_names = max_names
        self.max_error_codes = max_error_codes
        self.max_name_length = max_name_length
        self.tools: set[str] = set()
        self.prompts: set[str] = set()
        self.error_codes: set[int] = set()

        self.operation_duration = Histogram(
            "mcp_server_operation_duration_seconds",
            "MCP request or notification duration, from its arrival until its result or ack "
            "was sent.",
            (
                "mcp_method_name",
                "gen_ai_tool_name",
                "gen_ai_prompt_name",
                "error_type",
                "rpc_response_status_code",
                "mcp_protocol_version",
            ),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.operations_in_flight = Gauge(
            "mcp_server_operations_in_flight",
            "MCP requests received and not yet answered.",
            ("mcp_method_name", "gen_ai_tool_name"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.session_duration = Histogram(
            "mcp_server_session_duration_seconds",
            "Duration of MCP sessions (protocol revisions up to 2025-11-25).",
            ("mcp_protocol_version",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.sessions_active = Gauge(
            "mcp_server_sessions_active",
            "MCP sessions currently open (protocol revisions up to 2025-11-25).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages = Counter(
            "mcp_server_messages",
            "JSON-RPC messages seen on the MCP path.",
            ("direction", "message_type", "mcp_method_name"),
            registry=registry,
        )
        self.payload_bytes = Histogram(
            "mcp_server_operation_payload_bytes",
            "Size of MCP request messages and of their response messages.",
            ("direction", "mcp_method_name", "gen_ai_tool_name"),
            buckets=PAYLOAD_BUCKETS,
            registry=registry,
        )
        self.http_duration = Histogram(
            "mcp_http_server_request_duration_seconds",
            "Duration of HTTP requests to the MCP path (streams: until they end).",
            ("http_request_method", "http_response_status_code"),
            buckets=HTTP_DURATION_BUCKETS,
            registry=registry,
        )
        self.parse_errors = Counter(
            "mcp_metrics_parse_errors",
            "Traffic the middleware could not decode; the bytes still passed untouched.",
            ("reason",),
            registry=registry,
        )
        self.label_overflow = Counter(
            "mcp_metrics_label_overflow",
            "Label values folded into _OTHER (unknown or over the cap).",
            ("label",),
            registry=registry,
        )
        self._parse_error_children = {r: self.parse_errors.labels(r) for r in PARSE_ERROR_REASONS}
        self._overflow_children = {
            name: self.label_overflow.labels(name) for name in LABELS_WITH_OVERFLOW
        }
        self._operation_children: dict[tuple[str, ...], Any] = {}
        self._in_flight_children: dict[tuple[str, str], Any] = {}
        self._message_children: dict[tuple[str, str, str], Any] = {}
        self._payload_children: dict[tuple[str, str, str], Any] = {}
        self._http_children: dict[tuple[str, str], Any] = {}
        self._session_children: dict[str, Any] = {}

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

    def overflow(self, label: str) -> None:
        self._overflow_children[label].inc()

    def method_label(self, method: str | None) -> str:
        if method is None:
            return ""
        if method in KNOWN_METHODS:
            return method
        self.overflow("mcp_method_name")
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

    def code_label(self, code: int) -> str:
        if code in STANDARD_ERROR_CODES or code in self.error_codes:
            return str(code)
        if len(self.error_codes) < self.max_error_codes:
            self.error_codes.add(code)
            return str(code)
        self.overflow("rpc_response_status_code")
        return OTHER

    # -- recording ------------------------------------------------------------------------

    def parse_error(self, reason: str) -> None:
        self._parse_error_children[reason].inc()

    def operation(self, labels: tuple[str, str, str, str, str, str], duration: float) -> None:
        child = self._operation_children.get(labels)
        if child is None:
            child = self._operation_children[labels] = self.operation_duration.labels(*labels)
        child.observe(duration)

    def in_flight(self, method: str, tool: str) -> Any:
        key = (method, tool)
        child = self._in_flight_children.get(key)
        if child is None:
            child = self._in_flight_children[key] = self.operations_in_flight.labels(*key)
        return child

    def message(self, direction: str, message_type: str, method: str) -> None:
        key = (direction, message_type, method)
        child = self._message_children.get(key)
        if child is None:
            child = self._message_children[key] = self.messages.labels(*key)
        child.inc()

    def payload(self, direction: str, method: str, tool: str, size: int) -> None:
        key = (direction, method, tool)
        child = self._payload_children.get(key)
        if child is None:
            child = self._payload_children[key] = self.payload_bytes.labels(*key)
        child.observe(size)

    def http_request(self, method: str, status: str, duration: float) -> None:
        key = (method, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_duration.labels(*key)
        child.observe(duration)

    def session_ended(self, version: str, duration: float) -> None:
        child = self._session_children.get(version)
        if child is None:
            child = self._session_children[version] = self.session_duration.labels(version)
        child.observe(duration)
        self.sessions_active.dec()

    def session_started(self) -> None:
        self.sessions_active.inc()
