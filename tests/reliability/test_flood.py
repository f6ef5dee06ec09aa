"""4. Cardinality flood: 100,000 hostile requests straight through the middleware (in process).

Random tool names, prompt names, methods, protocol versions, session ids, HTTP methods and
error codes, against a fake server that vouches for every name it is asked about (the worst
case: a success result admits a tool name). The number of exposed series must stay under a
bound computed from the caps alone, memory growth is measured with tracemalloc, and the overflow
counter must say exactly how many label values were folded into _OTHER.
"""

from __future__ import annotations

import random
import string
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import Receive, Scope, Send
from mcp_metrics_middleware.config import (
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
    PARSE_ERROR_REASONS,
    PAYLOAD_BUCKETS,
    SESSION_DURATION_BUCKETS,
    STANDARD_ERROR_CODES,
)
from mcp_metrics_middleware.protocol.outcomes import CALLER_ERROR_CODES
from tests.apps import scope
from tests.helpers import in_flight_total, parse_errors, total_ops
from tests.reliability.harness import figure, overflow, series_count
from tests.reliability.test_client_flood import client_series_bound

REQUESTS = 100_000
SEED = 20260728
JSON = [(b"content-type", b"application/json")]
NAME_ALPHABET = string.ascii_letters + string.digits + "_-./ é漢\x00\n\t"


def series_bound(max_names: int = DEFAULT_MAX_NAMES, max_error_codes: int = DEFAULT_MAX_ERROR_CODES) -> dict[str, int]:
    """The most series a scrape can ever expose, from the caps alone (not the traffic)."""
    methods = len(KNOWN_METHODS) + 1  # + _OTHER
    tools = max_names + 2  # admitted + _OTHER + "" (no name)
    versions = len(KNOWN_PROTOCOL_VERSIONS) + 2  # + _OTHER + "" (no header)
    # error_type values: six without a code ("", tool_error, cancelled, 500, no_response,
    # _OTHER), one per code label, and one per HTTP status a request can be refused with.
    codes = len(STANDARD_ERROR_CODES) + max_error_codes + 1
    error_types = 6 + codes + 200
    # Each label is capped, and so is the number of label sets: past max_operation_series a new
    # set keeps only its error_type (one folded series per error type; one transport per process).
    op_series = DEFAULT_MAX_OPERATION_SERIES + error_types
    gauge_keys = (methods - 1) + tools  # (method, tool)
    histogram = len(DURATION_BUCKETS) + 3  # buckets + +Inf, _count, _sum
    statuses = 500 + 1  # 100..599 and "" (no response)
    bound = {
        "mcp_server_operation_duration_seconds": op_series * histogram,
        "mcp_server_operations_in_flight": gauge_keys,
        "mcp_server_session_duration_seconds": versions * (len(SESSION_DURATION_BUCKETS) + 3),
        "mcp_server_sessions_active": 1,
        "mcp_server_sessions_limit": 1,
        "mcp_server_messages": 2 * (2 * methods + 2),
        "mcp_server_input_required": gauge_keys,
        "mcp_server_operation_payload_bytes": 2 * gauge_keys * (len(PAYLOAD_BUCKETS) + 3),
        "mcp_http_server_request_duration_seconds": (len(KNOWN_HTTP_METHODS) + 1)
        * statuses
        * (len(HTTP_DURATION_BUCKETS) + 3),
        "mcp_metrics_parse_errors": len(PARSE_ERROR_REASONS),
        "mcp_metrics_label_overflow": len(LABELS_WITH_OVERFLOW),
        "mcp_metrics_path_near_misses": 1,
        "mcp_metrics_build_info": 1,
        "mcp_metrics_invalid_trace_context": 1,
        "mcp_server_client_operation_duration_seconds": client_series_bound(),
    }
    return bound


class Model:
    """The label policy, restated independently: predicts every overflow count exactly."""

    def __init__(self) -> None:
        self.tools: set[str] = set()
        self.prompts: set[str] = set()
        self.codes: set[int] = set()
        self.overflow = dict.fromkeys(LABELS_WITH_OVERFLOW, 0)

    def admit(self, names: set[str], name: Any) -> None:
        if (
            type(name) is str
            and name not in names
            and len(names) < DEFAULT_MAX_NAMES
            and 0 < len(name) <= DEFAULT_MAX_NAME_LENGTH
            and name.isprintable()
        ):
            names.add(name)

    def version(self, value: str | None) -> None:
        if value and value not in KNOWN_PROTOCOL_VERSIONS:
            self.overflow["mcp_protocol_version"] += 1

    def code(self, code: int) -> None:
        if code in STANDARD_ERROR_CODES or code in self.codes:
            return
        if len(self.codes) < DEFAULT_MAX_ERROR_CODES:
            self.codes.add(code)
            return
        self.overflow["rpc_response_status_code"] += 1
        self.overflow["error_type"] += 1


def refused(answer: dict[str, Any]) -> bool:
    """The server refused the request as the caller's mistake: its name is not vouched for."""
    return "error" in answer and answer["error"]["code"] in CALLER_ERROR_CODES


class Flood:
    """Lazily generates (scope, body, response headers, response body) and the model's view."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.model = Model()
        self.sessions: list[str] = []
        self.kinds: dict[str, int] = {}

    def name(self) -> str:
        rng = self.rng
        n = rng.choice([1, 3, 8, 20, 60, 200])
        return "".join(rng.choices(NAME_ALPHABET, k=n))

    def requests(self, n: int) -> Iterator[tuple[Scope, bytes, list[tuple[bytes, bytes]], bytes]]:
        rng = self.rng
        model = self.model
        known_methods = sorted(KNOWN_METHODS)
        for i in range(n):
            kind = rng.choices(
                ["call", "prompt", "tools_list", "prompts_list", "initialize", "method"],
                weights=[35, 10, 5, 5, 25, 20],
            )[0]
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            headers: list[tuple[bytes, bytes]] = []
            roll = rng.random()
            if roll < 0.6:
                version = rng.choice([*KNOWN_PROTOCOL_VERSIONS, self.name(), "2099-01-01"])
                headers.append((b"mcp-protocol-version", version.encode("utf-8", "replace")))
                if kind != "initialize":  # an initialize is labelled with the version it negotiated
                    model.version(version.encode("utf-8", "replace").decode("latin-1"))
            if kind != "initialize" and rng.random() < 0.5:
                sid = rng.choice(self.sessions) if self.sessions else f"{rng.getrandbits(128):032x}"
                headers.append((b"mcp-session-id", sid.encode()))
            http_method = "POST" if rng.random() < 0.97 else rng.choice(["BREW", "PROPFIND", "GET"])
            if http_method not in KNOWN_HTTP_METHODS:
                model.overflow["http_request_method"] += 1
            response_headers = JSON
            if kind == "call":
                name = self.name()
                body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name}}
                answer, ok = self.answer(i)
                if ok:
                    model.admit(model.tools, name)
                if name not in model.tools or refused(answer):
                    model.overflow["gen_ai_tool_name"] += 1
            elif kind == "prompt":
                name = self.name()
                body = {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "prompts/get",
                    "params": {"name": name},
                }
                answer, _ = self.answer(i)
                if "result" in answer:  # isError means nothing outside tools/call
                    model.admit(model.prompts, name)
                if name not in model.prompts or refused(answer):
                    model.overflow["gen_ai_prompt_name"] += 1
            elif kind in ("tools_list", "prompts_list"):
                what = "tools" if kind == "tools_list" else "prompts"
                body = {"jsonrpc": "2.0", "id": i, "method": f"{what}/list"}
                names = [self.name() for _ in range(5)]
                for name in names:
                    model.admit(model.tools if what == "tools" else model.prompts, name)
                answer = {"jsonrpc": "2.0", "id": i, "result": {what: [{"name": x} for x in names]}}
            elif kind == "initialize":
                body = {"jsonrpc": "2.0", "id": i, "method": "initialize", "params": {}}
                negotiated = rng.choice(["2025-11-25", "2025-06-18", "1.0-" + self.name()])
                model.version(negotiated)
                answer = {"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": negotiated}}
                sid = f"{rng.getrandbits(128):032x}"
                response_headers = [*JSON, (b"mcp-session-id", sid.encode())]
                if len(self.sessions) < 1000:
                    self.sessions.append(sid)
            else:
                if rng.random() < 0.5:
                    method = self.name()
                    if method not in KNOWN_METHODS:
                        model.overflow["mcp_method_name"] += 1
                else:
                    method = rng.choice(known_methods)
                # A call without a name is folded into _OTHER like an unknown one.
                if method == "tools/call":
                    model.overflow["gen_ai_tool_name"] += 1
                elif method == "prompts/get":
                    model.overflow["gen_ai_prompt_name"] += 1
                body = {"jsonrpc": "2.0", "id": i, "method": method}
                answer, _ = self.answer(i)
            yield (
                scope(http_method, headers=headers),
                orjson.dumps(body),
                response_headers,
                orjson.dumps(answer),
            )

    def answer(self, i: int) -> tuple[dict[str, Any], bool]:
        roll = self.rng.random()
        if roll < 0.5:
            return {"jsonrpc": "2.0", "id": i, "result": {"content": []}}, True
        if roll < 0.75:
            return {"jsonrpc": "2.0", "id": i, "result": {"isError": True}}, False
        code = self.rng.randint(-40000, 40000)
        self.model.code(code)
        return {"jsonrpc": "2.0", "id": i, "error": {"code": code, "message": "no"}}, False


def ours() -> int:
    """Bytes held by allocations made in the package: threads other tests left behind (servers
    shutting down, executors) allocate too, and must not count against the middleware."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/mcp_metrics_middleware/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.slow
def test_cardinality_flood() -> None:
    registry = CollectorRegistry()
    current: list[Any] = [None]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        _, _, headers, answer = current[0]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    mw = MCPMetricsMiddleware(app, registry=registry)
    flood = Flood(SEED)
    checkpoints = {REQUESTS // 10, REQUESTS // 4, REQUESTS // 2, 3 * REQUESTS // 4, REQUESTS}
    rows: list[tuple[int, int, int, int]] = []
    peaks = {"traffic": 0, "scrape": 0}

    generated = time.perf_counter()
    items = list(flood.requests(REQUESTS))  # generated before measuring: only our memory counts
    generated = time.perf_counter() - generated

    async def main() -> None:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            pass

        for n, item in enumerate(items, 1):
            current[0] = item
            req, body = item[0], item[1]
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive(message: Any = message) -> Any:
                return message

            await mw(req, receive, send)
            if n in checkpoints:
                _, peak = tracemalloc.get_traced_memory()
                now = ours()
                peaks["traffic"] = max(peaks["traffic"], peak)
                rows.append((n, series_count(registry), now, len(sent)))
                peaks["scrape"] = max(peaks["scrape"], tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()

    started = time.perf_counter()
    tracemalloc.start()
    try:
        base = ours()
        anyio.run(main)
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started

    bound = series_bound()
    total_bound = sum(bound.values())
    exposed = series_count(registry)
    model = flood.model
    # Every request recorded, nothing left in flight, nothing the middleware could not handle.
    assert total_ops(registry) == REQUESTS
    assert in_flight_total(registry) == 0
    assert parse_errors(registry) == {}
    # The overflow counter says exactly how many values were folded into _OTHER, per label.
    # A set folded by the series cap is the only one with both method and tool _OTHER (a tool
    # name is only set on tools/call): it holds exactly the operations counted under "series".
    folded = total_ops(registry, mcp_method_name="_OTHER", gen_ai_tool_name="_OTHER")
    assert folded > 0  # the flood goes past the cap
    assert len(mw.metrics.operation_series) == DEFAULT_MAX_OPERATION_SERIES
    expected_overflow = {k: float(v) for k, v in model.overflow.items() if v}
    expected_overflow["series"] = folded
    assert overflow(registry) == expected_overflow
    # Label values stay within their caps.
    assert mw.metrics.tools == model.tools and len(model.tools) == DEFAULT_MAX_NAMES
    assert mw.metrics.prompts == model.prompts and len(model.prompts) == DEFAULT_MAX_NAMES
    assert mw.metrics.error_codes == model.codes and len(model.codes) == DEFAULT_MAX_ERROR_CODES
    assert mw._state is not None and len(mw._state.model.sessions) == DEFAULT_MAX_SESSIONS
    # The series bound holds, and it does not depend on the number of requests.
    assert exposed <= total_bound
    for family in registry.collect():
        assert len(family.samples) <= bound[family.name], family.name
    values: dict[str, set[str]] = {}
    for family in registry.collect():
        for s in family.samples:
            for k, v in s.labels.items():
                values.setdefault(k, set()).add(v)
    assert len(values["gen_ai_tool_name"]) <= DEFAULT_MAX_NAMES + 2
    assert len(values["gen_ai_prompt_name"]) <= DEFAULT_MAX_NAMES + 2
    assert len(values["mcp_method_name"]) <= len(KNOWN_METHODS) + 2
    assert len(values["mcp_protocol_version"]) <= len(KNOWN_PROTOCOL_VERSIONS) + 2
    assert len(values["rpc_response_status_code"]) <= (len(STANDARD_ERROR_CODES) + DEFAULT_MAX_ERROR_CODES + 2)
    # Memory: growth flattens once the caps are reached (session table full, names admitted).
    half = next(r for r in rows if r[0] == REQUESTS // 2)
    last = rows[-1]
    growth_total = last[2] - base
    growth_second_half = last[2] - half[2]
    assert growth_total < 32 << 20
    assert growth_second_half < growth_total / 4

    figure(
        f"cardinality flood: {REQUESTS} hostile requests ({flood.kinds}) through the middleware "
        f"in {elapsed:.1f}s with tracemalloc on (generating them: {generated:.1f}s)"
    )
    figure(
        f"  series exposed: {exposed} (documented bound from the caps: {total_bound}); "
        + "; ".join(f"after {n}: {s} series, +{(m - base) / 2**20:.1f} MiB" for n, s, m, _ in rows)
    )
    figure(
        f"  label values: {len(values['gen_ai_tool_name'])} tool, "
        f"{len(values['gen_ai_prompt_name'])} prompt, {len(values['mcp_method_name'])} method, "
        f"{len(values['mcp_protocol_version'])} version, "
        f"{len(values['rpc_response_status_code'])} status-code values; "
        f"sessions tracked: {len(mw._state.model.sessions) if mw._state else 0} (max_sessions)"
    )
    figure(
        f"  memory: +{growth_total / 2**20:.1f} MiB total, +{growth_second_half / 2**20:.2f} MiB "
        f"over the second 50,000 requests; peak +{(peaks['traffic'] - base) / 2**20:.1f} MiB "
        f"while serving, +{(peaks['scrape'] - base) / 2**20:.1f} MiB while rendering a scrape "
        f"of {exposed} series"
    )
    figure(f"  overflow counter: {expected_overflow}")
