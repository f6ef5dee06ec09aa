"""Shared tools for the reliability suite: run an app with and without the middleware, read series."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware
from mcp_metrics_middleware._types import ASGIApp, Message, Receive, Scope, Send
from mcp_metrics_middleware.protocol.model import HTTPExchange
from tests.helpers import in_flight_total, parse_errors


def figure(text: str) -> None:
    """One line of the figures `make reliability` prints (run pytest with -s to see them)."""
    print(f"\n[reliability] {text}", flush=True)


def op(
    method: str,
    tool: str = "",
    err: str = "",
    code: str = "",
    version: str = "",
    prompt: str = "",
) -> tuple[str, str, str, str, str, str]:
    """The label tuple of one operation series, in the keys ``ops()`` returns."""
    return (method, tool, prompt, err, code, version)


def ops(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """Every non-zero operation series: (method, tool, prompt, error_type, code, version) -> count."""
    out: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        if family.name != "mcp_server_operation_duration_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_count") and s.value:
                lab = s.labels
                key = (
                    lab["mcp_method_name"],
                    lab["gen_ai_tool_name"],
                    lab["gen_ai_prompt_name"],
                    lab["error_type"],
                    lab["rpc_response_status_code"],
                    lab["mcp_protocol_version"],
                )
                out[key] = out.get(key, 0.0) + s.value
    return out


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def overflow(registry: CollectorRegistry) -> dict[str, float]:
    return {
        dict(k)["label"]: v
        for k, v in samples(registry, "mcp_metrics_label_overflow_total").items()
        if v
    }


def series_count(registry: CollectorRegistry) -> int:
    """How many time series a scrape of ``registry`` exposes (one per sample line)."""
    return sum(len(family.samples) for family in registry.collect())


def live_exchanges() -> int:
    """Per-request state objects still alive (a leak check: must be 0 between requests)."""
    from mcp_metrics_middleware import middleware

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) in (middleware._Tap, HTTPExchange))


@dataclass
class Run:
    """What one ASGI call looked like from both sides."""

    given: list[Message] = field(default_factory=list)  # what the client's receive handed out
    app_received: list[Message] = field(default_factory=list)  # what the app's receive returned
    app_sent: list[Message] = field(default_factory=list)  # what the app passed to send
    client_got: list[Message] = field(default_factory=list)  # what reached the client's send
    refused: list[Message] = field(default_factory=list)  # what the client's send raised on
    scopes: list[Scope] = field(default_factory=list)
    error: BaseException | None = None


class Tap:
    """Wraps the inner app and records exactly what it sees; otherwise invisible."""

    def __init__(self, app: ASGIApp, run: Run) -> None:
        self.app = app
        self.run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self.run
        run.scopes.append(scope)

        async def tapped_receive() -> Message:
            message = await receive()
            run.app_received.append(message)
            return message

        async def tapped_send(message: Message) -> None:
            run.app_sent.append(message)
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)


async def call(
    app: ASGIApp,
    scope: Scope,
    body: bytes | Sequence[bytes] = b"",
    *,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    disconnect: bool = True,
    send_raises: Callable[[Message], BaseException | None] | None = None,
    incoming: list[Message] | None = None,
) -> Run:
    """Call ``app`` (optionally wrapped) with ``body`` in chunks; never raises, records everything.

    After the body, ``receive`` returns ``http.disconnect`` (or blocks forever if ``disconnect``
    is false). ``send_raises(message)`` may return an exception for the client's send to raise.
    """
    import anyio

    run = Run()
    if incoming is None:
        chunks = [body] if isinstance(body, bytes) else list(body)
        incoming = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ] or [{"type": "http.request", "body": b"", "more_body": False}]
    else:
        incoming = list(incoming)

    async def receive() -> Message:
        if incoming:
            message = incoming.pop(0)
        elif disconnect:
            message = {"type": "http.disconnect"}
        else:
            await anyio.sleep_forever()
            raise AssertionError
        run.given.append(message)
        return message

    async def send(message: Message) -> None:
        if send_raises is not None:
            exc = send_raises(message)
            if exc is not None:
                run.refused.append(message)
                raise exc
        run.client_got.append(message)

    outer: ASGIApp = Tap(app, run)
    if wrap is not None:
        outer = wrap(outer)
    try:
        await outer(scope, receive, send)
    except BaseException as exc:
        run.error = exc
    return run


def same_messages(a: list[Message], b: list[Message]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


async def compare(
    app_factory: Callable[[], ASGIApp],
    scope: Scope,
    body: bytes | Sequence[bytes],
    registry: CollectorRegistry,
    *,
    call_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Run, Run, MCPMetricsMiddleware]:
    """Run a fresh app bare and wrapped; assert both sides saw the same, identical objects."""
    holder: list[MCPMetricsMiddleware] = []

    def wrap(inner: ASGIApp) -> ASGIApp:
        mw = MCPMetricsMiddleware(inner, registry=registry, **options)
        holder.append(mw)
        return mw

    extra = call_options or {}
    bare = await call(app_factory(), dict(scope), body, **extra)
    wrapped = await call(app_factory(), dict(scope), body, wrap=wrap, **extra)
    assert_transparent(bare, wrapped)
    return bare, wrapped, holder[0]


def assert_transparent(bare: Run, wrapped: Run) -> None:
    # The app saw the same scope and the same messages, and they are the very objects the
    # server handed out (nothing copied, rebuilt or injected).
    assert wrapped.scopes == bare.scopes
    assert same_messages(wrapped.app_received, bare.app_received)
    assert len(wrapped.app_received) == len(wrapped.given)
    assert all(x is y for x, y in zip(wrapped.app_received, wrapped.given, strict=True))
    # The client got the same messages, and they are the objects the app sent.
    assert same_messages(wrapped.client_got, bare.client_got)
    assert same_messages(wrapped.refused, bare.refused)
    assert len(wrapped.client_got) + len(wrapped.refused) == len(wrapped.app_sent)
    delivered = [m for m in wrapped.app_sent if not any(m is r for r in wrapped.refused)]
    assert all(x is y for x, y in zip(wrapped.client_got, delivered, strict=True))
    # Same outcome: no exception added, none swallowed, none replaced.
    assert type(wrapped.error) is type(bare.error)
    assert (wrapped.error is None) or wrapped.error.args == bare.error.args  # type: ignore[union-attr]


def settled(registry: CollectorRegistry) -> None:
    """Nothing in flight and no internal error: the invariants after every exchange."""
    assert in_flight_total(registry) == 0
    assert parse_errors(registry).get("internal", 0) == 0


def reachable_exchanges(root: Any, limit: int = 200_000) -> int:
    """Per-request objects reachable from ``root`` (the middleware), not following code or modules."""
    import types

    from mcp_metrics_middleware import middleware

    skip = (types.FunctionType, types.ModuleType, types.MethodType, type, types.CodeType)
    seen = {id(root)}
    stack = [root]
    found = 0
    while stack and len(seen) < limit:
        obj = stack.pop()
        if type(obj) in (middleware._Tap, HTTPExchange):
            found += 1
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, skip):
                seen.add(id(ref))
                stack.append(ref)
    return found
