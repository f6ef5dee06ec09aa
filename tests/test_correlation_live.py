"""Issue 13's "done when": a traced tools/call from the real SDK client, through real uvicorn.

One call carrying ``_meta.traceparent`` must give an exemplar with that trace id (in the
registry, in the OpenMetrics exposition, and in a real Prometheus's ``query_exemplars``), a log
line with that trace id, and a count under the calling client's name, in both wire eras.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.types import Implementation, RequestParamsMeta
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.catserver import build_app
from tests.conftest import free_port, wait_for
from tests.helpers import in_flight_total
from tests.test_dashboards_live import http_get, prometheus_binary
from tests.test_dashboards_live import wait_for as wait_for_url

DURATION = "mcp_server_operation_duration_seconds"
CLIENT_DURATION = "mcp_server_client_operation_duration_seconds"
LEGACY, MODERN = "2025-11-25", "2026-07-28"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
CLIENT = Implementation(name="cat-client", version="9.9.9")


async def traced_call(url: str, mode: str, traceparent: str = TRACEPARENT) -> None:
    meta: RequestParamsMeta = {"traceparent": traceparent}  # type: ignore[typeddict-unknown-key]
    async with Client(url, mode=mode, client_info=CLIENT) as client:
        result = await client.call_tool("sharpen_claw", {"level": 3}, meta=meta)
        assert not result.is_error


def exemplars(registry: CollectorRegistry, **match: str) -> list[tuple[str, dict[str, str]]]:
    """(le, exemplar labels) of every bucket of ``DURATION`` whose labels include ``match``."""
    found = []
    for family in registry.collect():
        if family.name == DURATION:
            for s in family.samples:
                if s.exemplar is not None and all(s.labels.get(k) == v for k, v in match.items()):
                    found.append((s.labels["le"], dict(s.exemplar.labels)))
    return found


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "version"), [("legacy", LEGACY), ("auto", MODERN)])
async def test_traced_call_gives_exemplar_log_line_and_client_count(
    registry: CollectorRegistry, serve: Any, caplog: pytest.LogCaptureFixture, mode: str, version: str
) -> None:
    srv = serve(build_app(registry))
    with caplog.at_level(logging.INFO, logger="mcp_metrics"):
        await traced_call(srv.url + "/mcp", mode)
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))

    # A count under the calling client's name, per method.
    labels = {"mcp_client_name": "cat-client", "mcp_method_name": "tools/call", "error_type": ""}
    assert registry.get_sample_value(CLIENT_DURATION + "_count", labels) == 1.0
    assert registry.get_sample_value(CLIENT_DURATION + "_count", {**labels, "mcp_client_name": "_OTHER"}) is None
    # Exactly one exemplar on the tools/call series, on one bucket, carrying the trace.
    call = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "sharpen_claw", "mcp_protocol_version": version}
    found = exemplars(registry, **call)
    assert [ids for _le, ids in found] == [{"trace_id": TRACE_ID, "span_id": SPAN_ID}]
    # Nothing else was traced (the client sent no traceparent on other requests).
    assert len(exemplars(registry)) == 1
    assert registry.get_sample_value("mcp_metrics_invalid_trace_context_total") == 0.0

    # The log line of that call.
    lines = [r for r in caplog.records if r.name == "mcp_metrics" and getattr(r, "trace_id", None) == TRACE_ID]
    assert len(lines) == 1
    line: Any = lines[0]
    assert (line.mcp_method_name, line.gen_ai_tool_name, line.error_type) == ("tools/call", "sharpen_claw", "")
    assert (line.mcp_client_name, line.mcp_client_version, line.span_id) == ("cat-client", "9.9.9", SPAN_ID)
    assert (line.mcp_protocol_version, line.network_transport, line.rpc_response_status_code) == (version, "tcp", None)
    assert line.levelno == logging.INFO and line.duration_ms >= 0 and line.request_bytes > 0
    assert line.response_bytes > 0
    assert (line.mcp_session_id is None) == (mode == "auto")  # sessions belong to the handshake era

    # The OpenMetrics exposition carries it; the classic text format cannot.
    async with httpx.AsyncClient() as http:
        om = await http.get(srv.url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        text = await http.get(srv.url + "/metrics")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    parsed = [
        s.exemplar
        for family in text_string_to_metric_families(om.text)  # type: ignore[no-untyped-call]
        if family.name == DURATION
        for s in family.samples
        if s.exemplar is not None
    ]
    assert [dict(e.labels) for e in parsed] == [{"trace_id": TRACE_ID, "span_id": SPAN_ID}]
    assert TRACE_ID not in text.text


@pytest.mark.anyio
async def test_invalid_traceparent_is_counted_not_used(registry: CollectorRegistry, serve: Any) -> None:
    srv = serve(build_app(registry))
    await traced_call(srv.url + "/mcp", "auto", traceparent="00-" + TRACE_ID.upper() + f"-{SPAN_ID}-01")
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))
    assert registry.get_sample_value("mcp_metrics_invalid_trace_context_total") == 1.0
    assert exemplars(registry) == []


@pytest.mark.prometheus
@pytest.mark.anyio
async def test_prometheus_stores_the_exemplar(registry: CollectorRegistry, serve: Any, tmp_path: Path) -> None:
    binary = prometheus_binary()
    srv = serve(build_app(registry))
    await traced_call(srv.url + "/mcp", "auto")
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: in_flight_total(registry) == 0))

    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "mcp", "static_configs": [{"targets": [f"127.0.0.1:{srv.port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    args = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:

        def query_exemplars() -> list[Any]:
            end = time.time() + 60
            query = urllib.parse.urlencode({"query": DURATION + "_bucket", "start": end - 600, "end": end})
            status, body = http_get(f"{base}/api/v1/query_exemplars?{query}")
            assert status == 200, body
            return list(json.loads(body)["data"])

        def scraped() -> list[Any]:
            wait_for_url(f"{base}/-/ready", "prometheus", [proc], 20)
            deadline = time.monotonic() + 30  # a few 1 s scrapes
            while time.monotonic() < deadline:
                data = query_exemplars()
                if data:
                    return data
                time.sleep(0.5)
            raise AssertionError("Prometheus stored no exemplar within 30 s")

        data = await anyio.to_thread.run_sync(scraped)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck Prometheus
            proc.kill()
            proc.wait(10)
    assert len(data) == 1
    series = data[0]
    assert series["seriesLabels"]["mcp_method_name"] == "tools/call"
    assert series["seriesLabels"]["gen_ai_tool_name"] == "sharpen_claw"
    assert [e["labels"] for e in series["exemplars"]] == [{"trace_id": TRACE_ID, "span_id": SPAN_ID}]
