"""6. Load with nothing lost: real uvicorn, many concurrent real mcp.Client clients, both eras.

A fixed number of calls, each with a known outcome. Afterwards the recorded operations equal the
calls made, per tool and per outcome, exactly; in-flight and active sessions are back to 0; and
the server log (uvicorn, the mcp server, the middleware, asyncio) holds no warning or error.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from tests.conftest import ServerThread, wait_for
from tests.helpers import in_flight_total, parse_errors, total_ops, value
from tests.reliability.harness import figure, op, ops, samples

MODERN, LEGACY = "2026-07-28", "2025-11-25"
CLIENTS_PER_ERA = 20
CALLS_PER_CLIENT = 25
CLIENT_LOGGERS = ("mcp.client", "httpx", "httpx2", "httpcore", "httpcore2")


def build_server() -> MCPServer:
    mcp = MCPServer("loadcat", version="0.1.0")

    @mcp.tool()
    def groom(level: int) -> str:
        """Always works."""
        return f"groomed {level}"

    @mcp.tool()
    def scratch(hard: bool) -> str:
        """Fails on request, the clean way (a tool error, logged at INFO by the SDK)."""
        if hard:
            raise ToolError("the sofa resisted")
        return "scratched"

    @mcp.tool()
    def hiss() -> str:
        """Always a JSON-RPC error with a custom code."""
        raise MCPError(-32050, "hissed")

    @mcp.prompt()
    def mood(mood: str = "grumpy") -> str:
        """A prompt."""
        return f"The cat is {mood}."

    return mcp


# One client's calls, in order: (kind, expected labels (method, tool, error_type, code, prompt)).
PLAN: list[tuple[str, tuple[str, str, str, str, str]]] = [
    ("groom", ("tools/call", "groom", "", "", "")),
    ("scratch-ok", ("tools/call", "scratch", "", "", "")),
    ("scratch-fail", ("tools/call", "scratch", "tool_error", "", "")),
    ("hiss", ("tools/call", "hiss", "-32050", "-32050", "")),
    ("ghost", ("tools/call", "_OTHER", "tool_error", "", "")),
    ("prompt", ("prompts/get", "", "", "", "mood")),
    ("list", ("tools/list", "", "", "", "")),
]


async def one_call(client: Client, kind: str) -> None:
    if kind == "groom":
        assert not (await client.call_tool("groom", {"level": 3})).is_error
    elif kind == "scratch-ok":
        assert not (await client.call_tool("scratch", {"hard": False})).is_error
    elif kind == "scratch-fail":
        assert (await client.call_tool("scratch", {"hard": True})).is_error
    elif kind == "hiss":
        with pytest.raises(MCPError):
            await client.call_tool("hiss", {})
    elif kind == "ghost":
        assert (await client.call_tool("ghost_tool", {})).is_error
    elif kind == "prompt":
        await client.get_prompt("mood", {"mood": "smug"})
    else:
        await client.list_tools()


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(CLIENT_LOGGERS):
            self.records.append(record)


@pytest.mark.slow
@pytest.mark.parametrize(
    "server_mode",
    [
        {"json_response": False, "stateless_http": False},
        {"json_response": True, "stateless_http": True},
    ],
    ids=["sse-stateful", "json-stateless"],
)
def test_load_nothing_lost(server_mode: dict[str, bool]) -> None:
    registry = CollectorRegistry()
    stateful = not server_mode["stateless_http"]
    app = MCPMetricsMiddleware(
        build_server().streamable_http_app(**server_mode),
        registry=registry,
        known_tools=["groom", "scratch", "hiss"],
        known_prompts=["mood"],
    )
    capture = Capture()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "asyncio")]
    expected: Counter[tuple[str, ...]] = Counter()
    calls = 0
    with ServerThread(app) as server:
        for logger in loggers:
            logger.addHandler(capture)
        url = server.url + "/mcp"

        async def client_run(mode: str, index: int) -> None:
            nonlocal calls
            version = MODERN if mode == "auto" else LEGACY
            listed = False
            async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
                for i in range(CALLS_PER_CLIENT):
                    kind, (method, tool, err, code, prompt) = PLAN[(i + index) % len(PLAN)]
                    await one_call(client, kind)
                    if kind in ("groom", "scratch-ok") and not listed:
                        # The SDK client lists the tools itself before validating its first
                        # successful result (to learn the output schema): one more tools/list.
                        expected[op("tools/list", version=version)] += 1
                    listed = listed or kind in ("groom", "scratch-ok", "list")
                    expected[op(method, tool, err, code, version, prompt)] += 1
                    calls += 1

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for index in range(CLIENTS_PER_ERA):
                    tg.start_soon(client_run, "auto", index)
                    tg.start_soon(client_run, "legacy", index)

        started = time.perf_counter()
        try:
            anyio.run(main)
            elapsed = time.perf_counter() - started
            # DELETEs and GET streams end just after the clients return.
            wait_for(lambda: in_flight_total(registry) == 0, timeout=20)
            wait_for(lambda: value(registry, "mcp_server_sessions_active") == 0, timeout=20)
        finally:
            for logger in loggers:
                logger.removeHandler(capture)

    # The handshakes, per era.
    expected[op("server/discover", version=MODERN)] += CLIENTS_PER_ERA
    expected[op("initialize", version=LEGACY)] += CLIENTS_PER_ERA
    expected[op("notifications/initialized", version=LEGACY)] += CLIENTS_PER_ERA
    assert calls == 2 * CLIENTS_PER_ERA * CALLS_PER_CLIENT
    assert ops(registry) == dict(expected)
    assert total_ops(registry) == sum(expected.values())
    assert in_flight_total(registry) == 0
    assert value(registry, "mcp_server_sessions_active") == 0
    ended = value(
        registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version=LEGACY
    )
    assert ended == (CLIENTS_PER_ERA if stateful else 0)
    assert parse_errors(registry) == {}
    statuses: Counter[str] = Counter()
    for k, v in samples(registry, "mcp_http_server_request_duration_seconds_count").items():
        labels = dict(k)
        statuses[f"{labels['http_request_method']} {labels['http_response_status_code']}"] += int(v)
    assert not [s for s in statuses if not s.split()[1].startswith("2")], statuses
    assert [r.getMessage() for r in capture.records] == []
    figure(
        f"load ({'SSE, stateful' if stateful else 'JSON, stateless'} server): {2 * CLIENTS_PER_ERA} concurrent mcp.Client clients ({CLIENTS_PER_ERA} modern "
        f"{MODERN}, {CLIENTS_PER_ERA} legacy {LEGACY}) x {CALLS_PER_CLIENT} calls = {calls} calls "
        f"in {elapsed:.1f}s on real uvicorn; recorded operations == calls per tool and outcome "
        f"({len(expected)} label sets, 0 lost, 0 extra); HTTP requests {dict(statuses)}; "
        f"{int(ended)} legacy sessions opened and closed; in-flight 0, sessions_active 0, "
        f"0 warnings/errors in the server log"
    )
