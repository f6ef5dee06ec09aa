"""Pins the exposed metric names, types, labels and buckets: dashboards and alerts depend on them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetrics
from mcp_metrics_middleware.config import KNOWN_METHODS, PARSE_ERROR_REASONS

EXPECTED = {
    "mcp_server_operation_duration_seconds": ("histogram", {
        "mcp_method_name", "gen_ai_tool_name", "gen_ai_prompt_name", "error_type",
        "rpc_response_status_code", "mcp_protocol_version"}),
    "mcp_server_operations_in_flight": ("gauge", {"mcp_method_name", "gen_ai_tool_name"}),
    "mcp_server_session_duration_seconds": ("histogram", {"mcp_protocol_version"}),
    "mcp_server_sessions_active": ("gauge", set()),
    "mcp_server_messages": ("counter", {"direction", "message_type", "mcp_method_name"}),
    "mcp_server_operation_payload_bytes": ("histogram", {
        "direction", "mcp_method_name", "gen_ai_tool_name"}),
    "mcp_http_server_request_duration_seconds": ("histogram", {
        "http_request_method", "http_response_status_code"}),
    "mcp_metrics_parse_errors": ("counter", {"reason"}),
    "mcp_metrics_label_overflow": ("counter", {"label"}),
}


def test_metric_names_types_and_labels() -> None:
    registry = CollectorRegistry()
    metrics = MCPMetrics(registry)
    found = {}
    for collector in (
        metrics.operation_duration, metrics.operations_in_flight, metrics.session_duration,
        metrics.sessions_active, metrics.messages, metrics.payload_bytes, metrics.http_duration,
        metrics.parse_errors, metrics.label_overflow,
    ):
        found[collector._name] = (collector._type, set(collector._labelnames))
    assert found == EXPECTED
    assert metrics.operations_in_flight._multiprocess_mode == "livesum"
    assert metrics.sessions_active._multiprocess_mode == "livesum"


def bucket_bounds(registry: CollectorRegistry, family: str) -> list[str]:
    for metric in registry.collect():
        if metric.name == family:
            return [s.labels["le"] for s in metric.samples if s.name.endswith("_bucket")]
    raise AssertionError(family)


def test_buckets() -> None:
    registry = CollectorRegistry()
    metrics = MCPMetrics(registry)
    metrics.operation_duration.labels("ping", "", "", "", "", "").observe(0.001)
    metrics.payload_bytes.labels("request", "", "").observe(1)
    assert bucket_bounds(registry, "mcp_server_operation_duration_seconds") == [
        "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "2.0", "5.0", "10.0",
        "30.0", "60.0", "120.0", "300.0", "+Inf"]
    assert bucket_bounds(registry, "mcp_server_operation_payload_bytes") == [
        "64.0", "256.0", "1024.0", "4096.0", "16384.0", "65536.0", "262144.0", "1.048576e+06",
        "4.194304e+06", "1.6777216e+07", "+Inf"]


def test_closed_sets_are_preinitialised() -> None:
    registry = CollectorRegistry()
    MCPMetrics(registry)
    for reason in PARSE_ERROR_REASONS:
        assert registry.get_sample_value("mcp_metrics_parse_errors_total", {"reason": reason}) == 0
    assert registry.get_sample_value("mcp_server_sessions_active") == 0


def test_known_methods_cover_every_revision() -> None:
    for method in ("initialize", "ping", "tools/call", "server/discover", "subscriptions/listen",
                   "notifications/subscriptions/acknowledged", "sampling/createMessage",
                   "elicitation/create", "completion/complete", "resources/templates/list"):
        assert method in KNOWN_METHODS
