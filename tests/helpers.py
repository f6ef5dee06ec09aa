from __future__ import annotations

from prometheus_client import CollectorRegistry


def op_count(
    registry: CollectorRegistry,
    method: str,
    tool: str = "",
    error_type: str = "",
    code: str = "",
    version: str = "",
    prompt: str = "",
    transport: str = "tcp",
) -> float:
    """How many operations were recorded with exactly these labels (0 if none)."""
    value = registry.get_sample_value(
        "mcp_server_operation_duration_seconds_count",
        {
            "mcp_method_name": method,
            "gen_ai_tool_name": tool,
            "gen_ai_prompt_name": prompt,
            "error_type": error_type,
            "rpc_response_status_code": code,
            "mcp_protocol_version": version,
            "network_transport": transport,
        },
    )
    return value or 0.0


def total_ops(registry: CollectorRegistry, **match: str) -> float:
    """Sum of operation counts over every series whose labels include ``match``."""
    total = 0.0
    for family in registry.collect():
        if family.name != "mcp_server_operation_duration_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_count") and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def parse_errors(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for family in registry.collect():
        if family.name == "mcp_metrics_parse_errors":
            for s in family.samples:
                if s.name.endswith("_total") and s.value:
                    out[s.labels["reason"]] = s.value
    return out


def in_flight_total(registry: CollectorRegistry) -> float:
    total = 0.0
    for family in registry.collect():
        if family.name == "mcp_server_operations_in_flight":
            total += sum(s.value for s in family.samples)
    return total
