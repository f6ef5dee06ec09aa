"""3. Faults: the app raises, the client goes away, send raises; tables stay bounded.

In every case the exception that leaves the middleware is the very object the app (or the
server's send) raised, each operation is recorded exactly once with the right error_type, and
mcp_server_operations_in_flight returns to 0. Parked operations and the session table are
bounded in count and in time (with the middleware's ``clock`` replaced by a fake one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import ASGIApp, Message, Receive, Scope, Send
from mcp_metrics_middleware.protocol.model import ServerModel
from tests.apps import JSON, SSE, drive, request, result, scope, sse_event
from tests.helpers import in_flight_total, parse_errors, total_ops, value
from tests.reliability.harness import (
    call,
    compare,
    figure,
    live_exchanges,
    op,
    ops,
    reachable_exchanges,
    settled,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # slow: `make reliability` prints the figures

TOOLS = ["sharpen_claw"]
CALLS = [request(i, "tools/call", name="sharpen_claw", arguments={}) for i in range(3)]
BATCH = orjson.dumps(CALLS)
PROGRESS = sse_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
faults = {"app raises": 0, "client disconnects": 0, "send raises": 0, "bounds": 0}


class AppCrash(Exception):
    pass


# Where the app stops: each stage is (what it sends before failing, answered before failing?)
STAGES: dict[str, tuple[list[Message], bool]] = {
    "before-start": ([], False),
    "after-start": ([{"type": "http.response.start", "status": 200, "headers": SSE}], False),
    "mid-stream": (
        [
            {"type": "http.response.start", "status": 200, "headers": SSE},
            {"type": "http.response.body", "body": PROGRESS, "more_body": True},
            {"type": "http.response.body", "body": b'data: {"jsonrpc":', "more_body": True},
        ],
        False,
    ),
    "mid-json-body": (
        [
            {"type": "http.response.start", "status": 200, "headers": JSON},
            {"type": "http.response.body", "body": b'[{"jsonrpc":"2.0",', "more_body": True},
        ],
        False,
    ),
    "after-the-answers": (
        [
            {"type": "http.response.start", "status": 200, "headers": SSE},
            *[
                {"type": "http.response.body", "body": sse_event(result(i)), "more_body": True}
                for i in range(3)
            ],
        ],
        True,
    ),
    "after-the-end": (
        [
            {"type": "http.response.start", "status": 200, "headers": JSON},
            {
                "type": "http.response.body",
                "body": orjson.dumps([result(i) for i in range(3)]),
                "more_body": False,
            },
        ],
        True,
    ),
}

EXCEPTIONS: dict[str, tuple[type[BaseException], str]] = {
    "exception": (AppCrash, "500"),
    "runtime-error": (RuntimeError, "500"),
    # The server cancelling the app (client gone): not the app's fault.
    "cancelled-error": (asyncio.CancelledError, "cancelled"),
}


def crashing_app(stage: str, exc_type: type[BaseException], raised: list[BaseException]) -> Any:
    def factory() -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            for message in STAGES[stage][0]:
                await send(dict(message))
            exc = exc_type("original")
            raised.append(exc)
            raise exc

        return app

    return factory


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
@pytest.mark.parametrize("stage", list(STAGES))
async def test_app_raises(registry: CollectorRegistry, stage: str, exc_name: str) -> None:
    exc_type, error_type = EXCEPTIONS[exc_name]
    raised: list[BaseException] = []
    bare, wrapped, _ = await compare(
        crashing_app(stage, exc_type, raised), scope(), BATCH, registry, known_tools=TOOLS
    )
    # The very exception object the app raised, with nothing chained onto it.
    assert wrapped.error is raised[-1]
    assert wrapped.error.__context__ is None and wrapped.error.__cause__ is None
    answered = STAGES[stage][1]
    expect = {op("tools/call", "sharpen_claw", "" if answered else error_type): 3}
    assert ops(registry) == expect
    settled(registry)
    status = "500" if stage == "before-start" and error_type == "500" else "200"
    if stage == "before-start" and error_type == "cancelled":
        status = ""
    assert (
        value(
            registry,
            "mcp_http_server_request_duration_seconds_count",
            http_request_method="POST",
            http_response_status_code=status,
        )
        == 1
    )
    faults["app raises"] += 1


def disconnecting_app(stage: str, raise_on_disconnect: bool) -> Any:
    """The app reads, and finds http.disconnect at ``stage``; it returns (or raises OSError)."""

    def factory() -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            async def read() -> Message:
                message = await receive()
                if message["type"] == "http.disconnect" and raise_on_disconnect:
                    raise OSError("client disconnected")
                return message

            message = await read()
            while message.get("more_body"):
                message = await read()
            if message["type"] == "http.disconnect":
                return
            if stage == "after-body":
                await read()
                return
            await send({"type": "http.response.start", "status": 200, "headers": SSE})
            if stage == "mid-stream":
                await send({"type": "http.response.body", "body": PROGRESS, "more_body": True})
            if stage == "after-the-answers":
                for i in range(3):
                    body = sse_event(result(i))
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            await read()  # the disconnect, while the stream is open

        return app

    return factory


DISCONNECTS: dict[str, tuple[list[Message], str | None]] = {
    # stage -> (what the server's receive yields, the error type, None: no operation at all)
    "before-the-body": ([{"type": "http.disconnect"}], None),
    "mid-body": (
        [
            {"type": "http.request", "body": BATCH[:20], "more_body": True},
            {"type": "http.disconnect"},
        ],
        None,
    ),
    "after-body": ([{"type": "http.request", "body": BATCH, "more_body": False}], "cancelled"),
    "after-start": ([{"type": "http.request", "body": BATCH, "more_body": False}], "cancelled"),
    "mid-stream": ([{"type": "http.request", "body": BATCH, "more_body": False}], "cancelled"),
    "after-the-answers": ([{"type": "http.request", "body": BATCH, "more_body": False}], ""),
}


@pytest.mark.parametrize("raises", [False, True], ids=["app-returns", "app-raises"])
@pytest.mark.parametrize("stage", list(DISCONNECTS))
async def test_client_disconnects(registry: CollectorRegistry, stage: str, raises: bool) -> None:
    incoming, error_type = DISCONNECTS[stage]
    bare, wrapped, _ = await compare(
        disconnecting_app(stage, raises),
        scope(),
        b"",
        registry,
        call_options={"incoming": incoming},
        known_tools=TOOLS,
    )
    if error_type is None:
        assert ops(registry) == {}
    else:
        assert ops(registry) == {op("tools/call", "sharpen_claw", error_type): 3}
    settled(registry)
    faults["client disconnects"] += 1


SEND_STAGES = {
    # the nth message the app sends raises (0: http.response.start) -> error type
    0: "cancelled",
    1: "cancelled",  # the progress event
    2: "cancelled",  # the event carrying the answers
    3: "",  # the final empty chunk: the answers already went out
}


@pytest.mark.parametrize("swallow", [False, True], ids=["propagates", "app-swallows"])
@pytest.mark.parametrize(
    "exc_type",
    [OSError, anyio.BrokenResourceError, asyncio.CancelledError],
    ids=lambda t: t.__name__,
)
@pytest.mark.parametrize("nth", sorted(SEND_STAGES))
async def test_send_raises(
    registry: CollectorRegistry, nth: int, exc_type: type[BaseException], swallow: bool
) -> None:
    raised: list[BaseException] = []
    answers = b"".join(sse_event(result(i)) for i in range(3))

    def factory() -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            messages: list[Message] = [
                {"type": "http.response.start", "status": 200, "headers": SSE},
                {"type": "http.response.body", "body": PROGRESS, "more_body": True},
                {"type": "http.response.body", "body": answers, "more_body": True},
                {"type": "http.response.body", "body": b"", "more_body": False},
            ]
            for message in messages:
                try:
                    await send(message)
                except exc_type:
                    if not swallow:
                        raise
                    return

        return app

    def position(message: Message) -> int:
        if message["type"] == "http.response.start":
            return 0
        body = message.get("body", b"")
        return 1 if body == PROGRESS else 2 if body == answers else 3

    def send_raises(message: Message) -> BaseException | None:
        if position(message) == nth:
            exc = exc_type("client gone")
            raised.append(exc)
            return exc
        return None

    bare, wrapped, _ = await compare(
        factory,
        scope(),
        BATCH,
        registry,
        call_options={"send_raises": send_raises},
        known_tools=TOOLS,
    )
    if swallow:
        assert wrapped.error is None
    else:
        assert wrapped.error is raised[-1]
    assert ops(registry) == {op("tools/call", "sharpen_claw", SEND_STAGES[nth]): 3}
    settled(registry)
    faults["send raises"] += 1


async def test_cancel_scope_around_the_middleware(registry: CollectorRegistry) -> None:
    """The server cancels the whole request task (as uvicorn does when a client leaves)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await anyio.sleep_forever()

    mw = MCPMetricsMiddleware(app, registry=registry, known_tools=TOOLS)

    async def cancelled_request() -> None:
        with anyio.move_on_after(0.05):
            await drive(mw, scope(), BATCH, disconnect_after=False)

    await cancelled_request()
    assert ops(registry) == {op("tools/call", "sharpen_claw", "cancelled"): 3}
    settled(registry)
    # (The CancelledError's traceback may keep the request's frames alive for a while; what
    # matters is that the middleware itself keeps nothing of the request.)
    assert reachable_exchanges(mw) == 0
    faults["client disconnects"] += 1


# -- bounded tables ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closing_stream_app() -> ASGIApp:
    """Ends every SSE stream without the answer (resumability: it comes back on a GET)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        priming = b"id: 1-1\r\ndata: \r\nretry: 100\r\n\r\n"
        await send({"type": "http.response.body", "body": priming, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def model(mw: MCPMetricsMiddleware) -> ServerModel:
    """The exchange model of the loop these tests run on."""
    assert mw._state is not None
    return mw._state.model


def expire(mw: MCPMetricsMiddleware, now: float) -> None:
    """What the middleware's expiry timer does when it fires."""
    assert mw._state is not None
    if mw._state.timer is not None:
        mw._state.timer.cancel()
        mw._state.timer = None
    mw._expire(mw._state)
    assert model(mw).next_deadline() is None or model(mw).next_deadline() > now  # type: ignore[operator]


def replaying_app(ids: list[int]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        for i in ids:
            body = sse_event(result(i, content=[]))
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_parked_operations_bounded_in_count_and_time(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    mw = MCPMetricsMiddleware(
        closing_stream_app(),
        registry=registry,
        known_tools=TOOLS,
        max_parked=5,
        parked_timeout=10.0,
    )
    mw.clock = clock
    session = [(b"mcp-session-id", b"s1")]
    for i in range(20):
        body = orjson.dumps(request(i, "tools/call", name="sharpen_claw"))
        await drive(mw, scope(headers=session), body)
        clock.now += 0.1
        assert len(model(mw).parked) <= 5
    # 15 evicted to keep the bound: recorded as no_response; 5 parked, still in flight.
    assert ops(registry) == {op("tools/call", "sharpen_claw", "no_response"): 15}
    assert in_flight_total(registry) == 5
    # One answer is replayed on the session's GET stream: recorded as a success.
    mw.app = replaying_app([19])
    await drive(mw, scope("GET", headers=session))
    assert op("tools/call", "sharpen_claw") in ops(registry)
    assert len(model(mw).parked) == 4
    # Past parked_timeout, the expiry timer ends the rest (no request or scrape needed).
    clock.now += 10.0
    expire(mw, clock.now)
    assert len(model(mw).parked) == 0
    assert ops(registry) == {
        op("tools/call", "sharpen_claw", "no_response"): 19,
        op("tools/call", "sharpen_claw"): 1,
    }
    settled(registry)
    assert live_exchanges() == 0
    faults["bounds"] += 1


async def test_parked_operations_end_with_their_session(registry: CollectorRegistry) -> None:
    mw = MCPMetricsMiddleware(closing_stream_app(), registry=registry, known_tools=TOOLS)
    for session in (b"a", b"b"):
        for i in range(3):
            body = orjson.dumps(request(i, "tools/call", name="sharpen_claw"))
            await drive(mw, scope(headers=[(b"mcp-session-id", session)]), body)
    # The same (session, id) parked twice: the first can no longer be answered.
    await drive(
        mw,
        scope(headers=[(b"mcp-session-id", b"a")]),
        orjson.dumps(request(0, "tools/call", name="sharpen_claw")),
    )
    assert ops(registry) == {op("tools/call", "sharpen_claw", "no_response"): 1}
    assert len(model(mw).parked) == 6
    # DELETE ends session a; a 404 ends session b.
    mw.app = _status_app(200)
    await drive(mw, scope("DELETE", headers=[(b"mcp-session-id", b"a")]))
    mw.app = _status_app(404)
    await drive(mw, scope("POST", headers=[(b"mcp-session-id", b"b")]), b"{}")
    assert len(model(mw).parked) == 0
    assert ops(registry) == {op("tools/call", "sharpen_claw", "no_response"): 7}
    settled(registry)
    faults["bounds"] += 1


def _status_app(status: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": b""})

    return app


def initializing_app() -> ASGIApp:
    counter = {"n": 0}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        counter["n"] += 1
        headers = [*JSON, (b"mcp-session-id", f"session-{counter['n']}".encode())]
        body = orjson.dumps(result(1, protocolVersion="2025-11-25"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_session_table_bounded_in_count_and_time(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    mw = MCPMetricsMiddleware(
        initializing_app(), registry=registry, max_sessions=10, session_idle_timeout=60.0
    )
    mw.clock = clock
    init = orjson.dumps(request(1, "initialize", protocolVersion="2025-11-25"))
    for _ in range(100):
        await drive(mw, scope(), init)
        clock.now += 0.5
        assert len(model(mw).sessions) <= 10
    assert value(registry, "mcp_server_sessions_active") == 10
    ended = value(
        registry, "mcp_server_session_duration_seconds_count", mcp_protocol_version="2025-11-25"
    )
    assert ended == 90
    # A request on a live session keeps it alive; the others expire after the idle timeout.
    clock.now += 30.0
    mw.app = _status_app(202)
    note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await drive(mw, scope(headers=[(b"mcp-session-id", b"session-100")]), note)
    clock.now += 31.0
    expire(mw, clock.now)
    assert len(model(mw).sessions) == 1 and "session-100" in model(mw).sessions
    assert value(registry, "mcp_server_sessions_active") == 1
    clock.now += 61.0
    expire(mw, clock.now)
    assert len(model(mw).sessions) == 0
    assert value(registry, "mcp_server_sessions_active") == 0
    assert (
        value(
            registry,
            "mcp_server_session_duration_seconds_count",
            mcp_protocol_version="2025-11-25",
        )
        == 100
    )
    assert total_ops(registry) == 101
    settled(registry)
    faults["bounds"] += 1


async def test_no_exchange_state_survives_a_fault(registry: CollectorRegistry) -> None:
    """Per-request state is never stored on the middleware: nothing leaks after faults."""
    raised: list[BaseException] = []
    for stage in STAGES:
        app = crashing_app(stage, AppCrash, raised)()
        mw = MCPMetricsMiddleware(app, registry=registry, known_tools=TOOLS)
        for _ in range(50):
            run = await call(app, scope(), BATCH, wrap=lambda inner, mw=mw: mw)
            assert isinstance(run.error, AppCrash)
        # The tracebacks we kept would keep their frames (and exchanges) alive: drop them.
        del run
        raised.clear()
    assert live_exchanges() == 0
    assert total_ops(registry) == 3 * 50 * len(STAGES)
    assert parse_errors(registry).get("internal", 0) == 0
    settled(registry)


def test_zz_fault_figures() -> None:
    total = sum(faults.values())
    if total:
        parts = ", ".join(f"{k}: {v}" for k, v in faults.items())
        figure(f"faults injected: {total} scenarios ({parts}), each checked bare vs wrapped")
