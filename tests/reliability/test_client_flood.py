"""4b. Client-name flood: 100,000 requests with random ``clientInfo`` names through the middleware.

2026-07-28 requests carry ``_meta["io.modelcontextprotocol/clientInfo"]`` on every request, so
every request can claim a new client. The per-client histogram must stay within its bound from
the caps alone, and every count and every overflow must match a model restating the policy.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import Receive, Scope, Send
from mcp_metrics_middleware.config import (
    CLIENT_NAME_CHARS,
    DEFAULT_MAX_CLIENT_NAME_LENGTH,
    DEFAULT_MAX_CLIENT_SERIES,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_ERROR_CODES,
    DURATION_BUCKETS,
    KNOWN_METHODS,
    OTHER,
    STANDARD_ERROR_CODES,
)
from tests.apps import scope
from tests.helpers import in_flight_total, parse_errors, total_ops
from tests.reliability.harness import figure, overflow

REQUESTS = 100_000
SEED = 20261130
KNOWN_CLIENTS = ("claude-ai", "cursor-vscode")
NAME_ALPHABET = string.ascii_letters + string.digits + '_-./ é漢\x00\n"{}'
# Methods the model answers like any request (no handshake, no stream kept open).
METHODS = sorted(KNOWN_METHODS - {"initialize", "subscriptions/listen"})
HEADERS = [(b"mcp-protocol-version", b"2026-07-28")]
JSON = [(b"content-type", b"application/json")]
CLIENT_FAMILY = "mcp_server_client_operation_duration_seconds"


def client_series_bound() -> int:
    """The most samples the per-client histogram can expose, from the caps alone."""
    # error_type values: "", tool_error, cancelled, 500, no_response, _OTHER, and one per code
    # label that is not the caller's (each code label fixes its error_type).
    error_types = 6 + len(STANDARD_ERROR_CODES) + DEFAULT_MAX_ERROR_CODES
    return (DEFAULT_MAX_CLIENT_SERIES + error_types) * (len(DURATION_BUCKETS) + 3)


class Model:
    """The client label policy, restated: predicts every count and overflow exactly."""

    def __init__(self) -> None:
        self.clients: set[str] = set()
        self.series: set[tuple[str, str, str]] = set()
        self.counts: dict[tuple[str, str, str], int] = {}
        self.overflow = {
            "mcp_client_name": 0,
            "client_series": 0,
            "mcp_method_name": 0,
            "gen_ai_tool_name": 0,
            "gen_ai_prompt_name": 0,
        }

    def client(self, name: str | None) -> str:
        if name is None:
            return ""
        if name in KNOWN_CLIENTS or name in self.clients:
            return name
        if (
            len(self.clients) < DEFAULT_MAX_CLIENTS
            and 0 < len(name) <= DEFAULT_MAX_CLIENT_NAME_LENGTH
            and set(name) <= CLIENT_NAME_CHARS
        ):
            self.clients.add(name)
            return name
        self.overflow["mcp_client_name"] += 1
        return OTHER

    def record(self, name: str | None, method: str, error_type: str) -> None:
        if method not in KNOWN_METHODS:
            self.overflow["mcp_method_name"] += 1
            method = OTHER
        labels = (self.client(name), method, error_type)
        if labels not in self.series:
            if len(self.series) < DEFAULT_MAX_CLIENT_SERIES:
                self.series.add(labels)
            else:
                self.overflow["client_series"] += 1
                labels = (OTHER, OTHER, error_type)
        self.counts[labels] = self.counts.get(labels, 0) + 1


def flood(n: int, model: Model) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(SEED)
    pool: list[str] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.05:
            client = None  # no clientInfo
        elif roll < 0.15:
            client = rng.choice(KNOWN_CLIENTS)
        elif roll < 0.6 and pool:
            client = rng.choice(pool)  # a name seen before: admitted ones come back
        else:
            k = rng.choice([1, 3, 8, 20, 60, 70, 200])
            client = "".join(rng.choices(NAME_ALPHABET, k=k))
            if len(pool) < 400:
                pool.append(client)
        method = rng.choice(METHODS) if rng.random() < 0.9 else "x/" + str(rng.getrandbits(32))
        params: dict[str, Any] = {}
        if client is not None:
            params["_meta"] = {"io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"}}
        if method == "tools/call":
            params["name"] = "sharpen_claw"
        body = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        outcome = rng.random()
        if outcome < 0.6:
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": i, "result": {}}
            error_type = ""
        elif outcome < 0.75 and method == "tools/call":
            answer = {"jsonrpc": "2.0", "id": i, "result": {"content": [], "isError": True}}
            error_type = "tool_error"
        elif outcome < 0.9:
            answer = {"jsonrpc": "2.0", "id": i, "error": {"code": -32603, "message": "no"}}
            error_type = "-32603"
        else:  # the caller's mistake: not an error by the semconv
            answer = {"jsonrpc": "2.0", "id": i, "error": {"code": -32602, "message": "no"}}
            error_type = ""
            if method == "tools/call":
                model.overflow["gen_ai_tool_name"] += 1  # a refused request's name is never a label
        if method == "prompts/get":
            model.overflow["gen_ai_prompt_name"] += 1  # no name: folded into _OTHER
        model.record(client, method, error_type)
        yield orjson.dumps(body), orjson.dumps(answer)


def client_counts(registry: CollectorRegistry) -> tuple[dict[tuple[str, str, str], int], int]:
    counts: dict[tuple[str, str, str], int] = {}
    samples = 0
    for family in registry.collect():
        if family.name == CLIENT_FAMILY:
            samples += len(family.samples)
            for s in family.samples:
                if s.name.endswith("_count"):
                    lab = s.labels
                    counts[(lab["mcp_client_name"], lab["mcp_method_name"], lab["error_type"])] = int(s.value)
    return counts, samples


@pytest.mark.slow
def test_client_name_flood() -> None:
    registry = CollectorRegistry()
    current: list[bytes] = [b""]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": current[0]})

    mw = MCPMetricsMiddleware(
        app, registry=registry, known_clients=KNOWN_CLIENTS, known_tools=["sharpen_claw"], discover_tools=False
    )
    model = Model()
    items = list(flood(REQUESTS, model))
    req = scope("POST", headers=HEADERS)

    async def main() -> None:
        async def send(message: Any) -> None:
            pass

        for body, answer in items:
            current[0] = answer
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive(message: Any = message) -> Any:
                return message

            await mw(dict(req), receive, send)

    started = time.perf_counter()
    anyio.run(main)
    elapsed = time.perf_counter() - started

    assert total_ops(registry) == REQUESTS
    assert in_flight_total(registry) == 0
    assert parse_errors(registry) == {}
    counts, samples = client_counts(registry)
    # Every request counted under exactly the label set the policy gives it.
    assert counts == model.counts
    assert sum(counts.values()) == REQUESTS
    # Names: the allow-list, then the first 32 well-formed ones; nothing else.
    assert mw.metrics.clients == model.clients and len(model.clients) == DEFAULT_MAX_CLIENTS
    names = {labels[0] for labels in counts}
    assert names <= {*KNOWN_CLIENTS, *model.clients, OTHER, ""}
    # The flood goes past both caps, and the overflow counter says by exactly how much.
    assert model.overflow["mcp_client_name"] > 0 and model.overflow["client_series"] > 0
    assert overflow(registry) == {k: float(v) for k, v in model.overflow.items() if v}
    # The series bound holds: exactly the admitted label sets plus one folded set per error_type.
    assert len(mw.metrics.client_series) == DEFAULT_MAX_CLIENT_SERIES
    folded = {labels for labels in counts if labels[:2] == (OTHER, OTHER) and labels not in model.series}
    assert len(counts) == DEFAULT_MAX_CLIENT_SERIES + len(folded)
    assert samples == len(counts) * (len(DURATION_BUCKETS) + 3) <= client_series_bound()
    figure(
        f"client-name flood: {REQUESTS} requests with random clientInfo names in {elapsed:.1f}s; "
        f"{len(names)} client label values, {len(counts)} per-client label sets, {samples} samples "
        f"(bound from the caps: {client_series_bound()}); overflow {model.overflow}"
    )
