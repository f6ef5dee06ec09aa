"""Exemplars, the per-client label, the operation log line and internal-error reports (issue 13).

The recorder is driven with model ``Operation`` records directly: what reaches it from each
transport is the model's business, tested in test_core and end to end in test_correlation_live.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from mcp_metrics_middleware import MCPMetrics, MCPMetricsMiddleware
from mcp_metrics_middleware.config import DURATION_BUCKETS
from mcp_metrics_middleware.logs import FIELDS, MAX_FIELD_LENGTH, InternalErrors, logger, report_internal
from mcp_metrics_middleware.protocol.jsonrpc import REQUEST, RESPONSE
from mcp_metrics_middleware.protocol.model import Operation

ROOT = Path(__file__).resolve().parent.parent
CLIENT_COUNT = "mcp_server_client_operation_duration_seconds_count"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def finish(
    metrics: MCPMetrics,
    *,
    method: str = "tools/call",
    name: str | None = "sharpen_claw",
    client: str | None = None,
    duration: float = 0.003,
    trace: tuple[str, str | None] | None = None,
    error_type: str = "",
    code: int | None = None,
) -> Operation:
    op = Operation(method, name, REQUEST, 0.0, 40, "2026-07-28", "tcp")
    op.client_name = client
    if trace is not None:
        op.trace_id, op.span_id = trace
    metrics.operation_started(op)
    op.end = op.start + duration
    op.answer_kind = RESPONSE
    op.error_type = error_type
    op.code = code
    op.response_size = 80
    metrics.operation_finished(op)
    return op


def clients(registry: CollectorRegistry, method: str = "tools/call", error_type: str = "") -> dict[str, float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if (
                s.name == CLIENT_COUNT
                and s.labels["mcp_method_name"] == method
                and s.labels["error_type"] == error_type
            ):
                out[s.labels["mcp_client_name"]] = s.value
    return out


def overflow(registry: CollectorRegistry, label: str) -> float | None:
    return registry.get_sample_value("mcp_metrics_label_overflow_total", {"label": label})


# -- the mcp_client_name label -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-ai", "claude-ai"),  # known: admitted even when the cap is full
        ("cat-client", "cat-client"),  # first come, first served
        ("Visual Studio Code", "Visual Studio Code"),  # spaces are in the charset
        (None, ""),  # no clientInfo reached us
        ("x" * 65, "_OTHER"),  # over the length cap
        ("", "_OTHER"),  # empty
        ("cat\nclient", "_OTHER"),  # control character
        ("chat-客户端", "_OTHER"),  # outside the ASCII charset
        ('evil"}', "_OTHER"),  # quotes and braces are not in the charset
    ],
)
def test_client_label(registry: CollectorRegistry, name: str | None, expected: str) -> None:
    metrics = MCPMetrics(registry, known_clients=["claude-ai"], max_clients=1)
    finish(metrics, client=name)
    assert clients(registry) == {expected: 1.0}
    assert overflow(registry, "mcp_client_name") == (1.0 if expected == "_OTHER" else 0.0)


def test_first_n_clients_then_other(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry, known_clients=["claude-ai"], max_clients=2)
    for name in ["a", "b", "c", "a", "claude-ai", "d", "b"]:
        finish(metrics, client=name)
    assert clients(registry) == {"a": 2.0, "b": 2.0, "claude-ai": 1.0, "_OTHER": 2.0}
    assert overflow(registry, "mcp_client_name") == 2.0
    assert metrics.clients == {"a", "b"}  # a known client takes no place under the cap


def test_client_series_cap_keeps_error_type(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry, max_client_series=2)
    finish(metrics, client="a")
    finish(metrics, client="b")
    finish(metrics, client="c", error_type="tool_error")  # a third label set: folded
    finish(metrics, client="a")  # an existing set is still counted under its own labels
    assert clients(registry) == {"a": 2.0, "b": 1.0}
    assert clients(registry, method="_OTHER", error_type="tool_error") == {"_OTHER": 1.0}
    assert overflow(registry, "client_series") == 1.0
    assert overflow(registry, "mcp_client_name") == 0.0  # the name itself was admitted


def test_client_histogram_uses_the_operation_buckets(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry)
    finish(metrics, client="a", duration=0.0007)
    labels = {"mcp_client_name": "a", "mcp_method_name": "tools/call", "error_type": ""}
    assert (
        registry.get_sample_value("mcp_server_client_operation_duration_seconds_bucket", {**labels, "le": "0.0005"})
        == 0.0
    )
    assert (
        registry.get_sample_value("mcp_server_client_operation_duration_seconds_bucket", {**labels, "le": "0.001"})
        == 1.0
    )
    assert registry.get_sample_value("mcp_server_client_operation_duration_seconds_sum", labels) == 0.0007
    assert (
        len(
            [
                s
                for f in registry.collect()
                if f.name == "mcp_server_client_operation_duration_seconds"
                for s in f.samples
            ]
        )
        == len(DURATION_BUCKETS) + 3
    )


def test_client_histogram_in_the_prometheus_client_store(registry: CollectorRegistry) -> None:
    # The store used in multiprocess mode: same names and labels, no exemplars.
    metrics = MCPMetrics(registry, multiprocess=True, max_clients=1)
    finish(metrics, client="a", trace=(TRACE, None))
    finish(metrics, client="b")
    metrics.invalid_trace_context()
    assert clients(registry) == {"a": 1.0, "_OTHER": 1.0}
    assert registry.get_sample_value("mcp_metrics_invalid_trace_context_total") == 1.0
    assert not [s for f in registry.collect() for s in f.samples if s.exemplar is not None]


@pytest.mark.parametrize("bad", [[""], [3], ["ok", None]])
def test_known_clients_must_be_names(registry: CollectorRegistry, bad: list[Any]) -> None:
    with pytest.raises(ValueError, match="known_clients"):
        MCPMetrics(registry, known_clients=bad)


async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    pass


def test_middleware_passes_client_options_on(registry: CollectorRegistry) -> None:
    mw = MCPMetricsMiddleware(app, registry=registry, known_clients=["claude-ai"], max_clients=3)
    assert mw.metrics.known_clients == {"claude-ai"}
    assert mw.metrics.max_clients == 3
    # A second middleware on the same registry shares the recorder and adds its allow-list.
    MCPMetricsMiddleware(app, registry=registry, known_clients=["cursor"])
    assert mw.metrics.known_clients == {"claude-ai", "cursor"}


# -- exemplars -----------------------------------------------------------------------------------


def bucket_exemplars(registry: CollectorRegistry) -> dict[str, dict[str, str]]:
    return {
        s.labels["le"]: dict(s.exemplar.labels)
        for f in registry.collect()
        if f.name == "mcp_server_operation_duration_seconds"
        for s in f.samples
        if s.exemplar is not None
    }


def test_exemplar_on_the_bucket_the_operation_landed_in(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry)
    finish(metrics, duration=0.003, trace=(TRACE, "00f067aa0ba902b7"))
    finish(metrics, duration=0.003)  # untraced: changes no exemplar
    assert bucket_exemplars(registry) == {"0.005": {"trace_id": TRACE, "span_id": "00f067aa0ba902b7"}}
    sample = next(
        s
        for f in registry.collect()
        for s in f.samples
        if s.name == "mcp_server_operation_duration_seconds_bucket" and s.labels["le"] == "0.005"
    )
    assert sample.value == 2.0
    assert sample.exemplar is not None and sample.exemplar.value == 0.003
    assert sample.exemplar.timestamp is not None


def test_latest_exemplar_per_bucket_wins(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry)
    other = "a" * 31 + "b"
    finish(metrics, duration=0.003, trace=(TRACE, "00f067aa0ba902b7"))
    finish(metrics, duration=0.004, trace=(other, None))  # same bucket, later: replaces it
    finish(metrics, duration=400.0, trace=(TRACE, None))  # past the last bound: the +Inf bucket
    assert bucket_exemplars(registry) == {"0.005": {"trace_id": other}, "+Inf": {"trace_id": TRACE}}


def test_exemplars_only_in_openmetrics(registry: CollectorRegistry) -> None:
    from prometheus_client import generate_latest

    metrics = MCPMetrics(registry)
    finish(metrics, trace=(TRACE, None))
    assert f'# {{trace_id="{TRACE}"}} 0.003' in openmetrics_latest(registry).decode()  # type: ignore[no-untyped-call]
    assert TRACE not in generate_latest(registry).decode()


def test_invalid_trace_context_counter(registry: CollectorRegistry) -> None:
    metrics = MCPMetrics(registry)
    assert registry.get_sample_value("mcp_metrics_invalid_trace_context_total") == 0.0
    metrics.invalid_trace_context()
    assert registry.get_sample_value("mcp_metrics_invalid_trace_context_total") == 1.0


# -- the operation log line ----------------------------------------------------------------------


def test_log_line_fields(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    metrics = MCPMetrics(registry)
    with caplog.at_level(logging.INFO, logger="mcp_metrics"):
        finish(metrics, client="cat-client", trace=(TRACE, "00f067aa0ba902b7"), error_type="-32050", code=-32050)
    (record,) = caplog.records
    fields = {key: getattr(record, key) for key in FIELDS}
    assert fields == {
        "mcp_method_name": "tools/call",
        "gen_ai_tool_name": "sharpen_claw",
        "gen_ai_prompt_name": None,
        "error_type": "-32050",
        "rpc_response_status_code": -32050,
        "duration_ms": 3.0,
        "request_bytes": 40,
        "response_bytes": 80,
        "mcp_protocol_version": "2026-07-28",
        "network_transport": "tcp",
        "mcp_session_id": None,
        "mcp_client_name": "cat-client",
        "mcp_client_version": None,
        "trace_id": TRACE,
        "span_id": "00f067aa0ba902b7",
        "tracestate": None,
    }
    assert record.getMessage() == "'tools/call' 'sharpen_claw' -32050 3.0 ms"


def test_log_line_caps_raw_names(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    metrics = MCPMetrics(registry)
    with caplog.at_level(logging.INFO, logger="mcp_metrics"):
        finish(metrics, method="prompts/get", name="p\n" * 500, client="c" * 1000)
    (record,) = caplog.records
    assert record.gen_ai_prompt_name == ("p\n" * 500)[:MAX_FIELD_LENGTH]  # type: ignore[attr-defined]
    assert record.mcp_client_name == "c" * MAX_FIELD_LENGTH  # type: ignore[attr-defined]
    assert "\n" not in record.getMessage()  # the message quotes client text


def test_no_log_work_when_disabled(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcp_metrics_middleware.metrics as metrics_module

    def fail(op: Operation) -> None:  # pragma: no cover - must not be called
        raise AssertionError("log_operation called while INFO is disabled")

    monkeypatch.setattr(metrics_module, "log_operation", fail)
    metrics = MCPMetrics(registry)
    with caplog.at_level(logging.WARNING, logger="mcp_metrics"):
        finish(metrics)
    assert caplog.records == []


def test_library_logger_is_silent_by_default() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


# -- internal errors -----------------------------------------------------------------------------


class Counts:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def parse_error(self, reason: str) -> None:
        self.reasons.append(reason)


def bug(n: int) -> None:
    if n % 2:
        raise KeyError(n)
    raise ValueError(n)


def test_report_internal_counts_and_warns_once_per_traceback(caplog: pytest.LogCaptureFixture) -> None:
    counts = Counts()
    with caplog.at_level(logging.WARNING, logger="mcp_metrics"):
        for n in range(6):
            try:
                bug(n)
            except Exception:
                report_internal(counts)
    assert counts.reasons == ["internal"] * 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [type(r.exc_info[1]).__name__ for r in warnings if r.exc_info] == ["ValueError", "KeyError"]


def test_internal_errors_rate_limited() -> None:
    now = [0.0]
    errors = InternalErrors(burst=2, interval=60.0, max_distinct=10, clock=lambda: now[0])
    logged: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = Capture()
    logger.addHandler(handler)
    try:

        def raise_at(i: int) -> None:
            # A distinct traceback per i: the exception is raised from a distinct line.
            code = compile("\n" * i + "raise RuntimeError()", f"<bug {i}>", "exec")
            try:
                exec(code)
            except RuntimeError:
                errors.report()

        for i in range(4):
            raise_at(i)  # two logged, two over the budget
        assert len(logged) == 2
        now[0] = 61.0
        raise_at(2)  # a new window: the rate-limited traceback gets its line
        raise_at(0)  # already reported
        assert len(logged) == 3
        assert "2 similar reports were rate-limited" in logged[-1]
        errors.report()  # outside an except block: nothing to report
        assert len(logged) == 3
    finally:
        logger.removeHandler(handler)


# -- the README's JSON-lines setup ---------------------------------------------------------------


def json_logging_source() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- json-logs: begin -->\n```python\n(.*?)```\n<!-- json-logs: end -->", readme, re.S)
    assert block, "JSON logging block missing from README.md"
    return block.group(1)


def test_readme_json_lines_setup(registry: CollectorRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    exec(json_logging_source(), namespace)
    mcp_logger = logging.getLogger("mcp_metrics")
    try:
        metrics = MCPMetrics(registry)
        finish(metrics, client="cat-client", trace=(TRACE, "00f067aa0ba902b7"))
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        for handler in mcp_logger.handlers[:]:
            if not isinstance(handler, logging.NullHandler):
                mcp_logger.removeHandler(handler)
        mcp_logger.setLevel(logging.NOTSET)
        mcp_logger.propagate = True
    assert line["trace_id"] == TRACE
    assert line["mcp_client_name"] == "cat-client"
    assert line["gen_ai_tool_name"] == "sharpen_claw"
    assert line["duration_ms"] == 3.0
    assert line["levelname"] == "INFO"


# -- mcp-metrics top --by client -----------------------------------------------------------------


def test_top_by_client_rows(registry: CollectorRegistry) -> None:
    from prometheus_client import generate_latest

    from mcp_metrics_middleware.top_clients import parse_client_snapshot, render_by_client

    metrics = MCPMetrics(registry)
    finish(metrics, client="cat-client", duration=0.003)
    first = parse_client_snapshot(generate_latest(registry).decode(), taken_at=0.0)
    finish(metrics, client="cat-client", duration=0.003, error_type="tool_error")
    finish(metrics, client=None, method="ping", name=None, duration=0.0007)
    second = parse_client_snapshot(generate_latest(registry).decode(), taken_at=2.0)
    lines = render_by_client("http://x/metrics", second, first, now="12:00:00").splitlines()
    assert lines[0] == "mcp-metrics top --by client  http://x/metrics  12:00:00"
    assert lines[1] == "window: last 2.0s  sessions active: 0"
    assert lines[3].split() == [
        "CLIENT",
        "METHOD",
        "CALLS/S",
        "TOTAL",
        "ERR%",
        "P50",
        "P95",
        "P99",
        "ERRORS",
        "BY",
        "TYPE",
    ]
    # Sorted by client: "" (no clientInfo) first, shown as (none).
    assert lines[4].split()[:5] == ["(none)", "ping", "0.5", "1", "0.0"]
    assert lines[5].split()[:5] == ["cat-client", "tools/call", "0.5", "2", "100.0"]
    assert lines[5].endswith("tool_error 100.0%")
    assert max(len(line) for line in lines) <= 100


def test_top_by_client_without_the_metric() -> None:
    from mcp_metrics_middleware.top_clients import parse_client_snapshot, render_by_client

    snapshot = parse_client_snapshot("# TYPE other counter\nother_total 1\n")
    assert render_by_client("u", snapshot, None).endswith("(no mcp_server_client_operation_duration_seconds)")
    empty = parse_client_snapshot("# TYPE mcp_server_client_operation_duration_seconds histogram\n", taken_at=1.0)
    assert render_by_client("u", empty, None).endswith("no MCP traffic recorded yet")
