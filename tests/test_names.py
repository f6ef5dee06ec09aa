"""Pins the exposed metric names, types, labels and buckets: dashboards and alerts depend on them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetrics
from mcp_metrics_middleware.config import KNOWN_METHODS, PARSE_ERROR_REASONS
from mcp_metrics_middleware.metrics import _ClientStore
from mcp_metrics_middleware.protocol.model import Operation, Session

EXPECTED = {
    "mcp_server_operation_duration_seconds": (
        "histogram",
        {
            "mcp_method_name",
            "gen_ai_tool_name",
            "gen_ai_prompt_name",
            "error_type",
            "rpc_response_status_code",
            "mcp_protocol_version",
            "network_transport",
        },
    ),
    "mcp_server_operations_in_flight": ("gauge", {"mcp_method_name", "gen_ai_tool_name"}),
    "mcp_server_session_duration_seconds": ("histogram", {"mcp_protocol_version"}),
    "mcp_server_sessions_active": ("gauge", set()),
    "mcp_server_messages": ("counter", {"direction", "message_type", "mcp_method_name"}),
    "mcp_server_operation_payload_bytes": (
        "histogram",
        {"direction", "mcp_method_name", "gen_ai_tool_name"},
    ),
    "mcp_http_server_request_duration_seconds": (
        "histogram",
        {"http_request_method", "http_response_status_code"},
    ),
    "mcp_metrics_parse_errors": ("counter", {"reason"}),
    "mcp_metrics_label_overflow": ("counter", {"label"}),
    "mcp_server_input_required": ("counter", {"mcp_method_name", "gen_ai_tool_name"}),
    "mcp_metrics_path_near_misses": ("counter", set()),
    "mcp_metrics_build_info": ("gauge", {"version"}),
    "mcp_server_sessions_limit": ("gauge", set()),
    "mcp_server_client_operation_duration_seconds": (
        "histogram",
        {"mcp_client_name", "mcp_method_name", "error_type"},
    ),
    "mcp_metrics_invalid_trace_context": ("counter", set()),
}


def exposed(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Name -> (type, label names) of every family, read through the registry like a scrape."""
    out = {}
    for family in registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        out[family.name] = (family.type, labels)
    return out


def exercise(metrics: MCPMetrics) -> None:
    """Touch every metric once, through the observer interface, so every family has samples."""
    op = Operation("tools/call", "x", "request", 0.0, 10, "2025-11-25", "tcp")
    metrics.operation_started(op)
    op.end, op.answer_kind, op.response_size = 0.1, "response", 20
    metrics.operation_finished(op)
    round_ = Operation("tools/call", "x", "request", 0.0, 10, "2026-07-28", "tcp")
    metrics.operation_started(round_)
    round_.result_type = "input_required"
    metrics.operation_finished(round_)
    metrics.message("sent", "notification", "notifications/progress")
    metrics.http_request("POST", 200, 0.1)
    metrics.near_miss()
    metrics.invalid_trace_context()
    session = Session("s", 0.0, "tcp")
    session.protocol_version = "2025-11-25"
    metrics.session_started(session)
    metrics.session_ended(session, 1.0)


@pytest.mark.parametrize("multiprocess", [False, True])
def test_metric_names_types_and_labels(multiprocess: bool) -> None:
    registry = CollectorRegistry()
    metrics = MCPMetrics(registry, multiprocess=multiprocess)
    exercise(metrics)
    assert exposed(registry) == EXPECTED


def test_multiprocess_gauges_sum_live_workers() -> None:
    metrics = MCPMetrics(CollectorRegistry(), multiprocess=True)
    store = metrics.store
    assert isinstance(store, _ClientStore)
    assert store.in_flight._multiprocess_mode == "livesum"
    assert store.sessions_active._multiprocess_mode == "livesum"


def bucket_bounds(registry: CollectorRegistry, family: str) -> list[str]:
    for metric in registry.collect():
        if metric.name == family:
            bounds = []
            for s in metric.samples:
                if s.name.endswith("_bucket"):
                    bounds.append(s.labels["le"])
                    if s.labels["le"] == "+Inf":
                        return bounds  # the first series is enough
    raise AssertionError(family)


def test_buckets() -> None:
    registry = CollectorRegistry()
    exercise(MCPMetrics(registry))
    assert bucket_bounds(registry, "mcp_server_operation_duration_seconds") == [
        "0.0005",
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.02",
        "0.05",
        "0.1",
        "0.2",
        "0.5",
        "1.0",
        "2.0",
        "5.0",
        "10.0",
        "30.0",
        "60.0",
        "120.0",
        "300.0",
        "+Inf",
    ]
    assert bucket_bounds(registry, "mcp_server_operation_payload_bytes") == [
        "64.0",
        "256.0",
        "1024.0",
        "4096.0",
        "16384.0",
        "65536.0",
        "262144.0",
        "1.048576e+06",
        "4.194304e+06",
        "1.6777216e+07",
        "+Inf",
    ]


def test_closed_sets_are_preinitialised() -> None:
    registry = CollectorRegistry()
    MCPMetrics(registry)
    for reason in PARSE_ERROR_REASONS:
        assert registry.get_sample_value("mcp_metrics_parse_errors_total", {"reason": reason}) == 0
    assert registry.get_sample_value("mcp_server_sessions_active") == 0


def test_known_methods_cover_every_revision() -> None:
    for method in (
        "initialize",
        "ping",
        "tools/call",
        "server/discover",
        "subscriptions/listen",
        "notifications/subscriptions/acknowledged",
        "sampling/createMessage",
        "elicitation/create",
        "completion/complete",
        "resources/templates/list",
    ):
        assert method in KNOWN_METHODS
