"""The ASGI middleware: a thin adapter from ASGI messages to the sans-IO exchange model.

It taps ``receive`` and ``send`` on the MCP path. Every message is handed on unchanged and at
once; the model looks at the same bytes afterwards, within a size cap, and never lets a
decoding problem reach the app or the client. All MCP rules live in ``protocol/``; all label
decisions in ``metrics.py``. What is ASGI-specific stays here: routing by path, noticing a
client that left while the app is busy, timers for expiry, and asking the app for its tools.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from mcp_metrics_middleware._types import ASGIApp, Message, Receive, Scope, Send
from mcp_metrics_middleware.config import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_PARKED,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_PARKED_TIMEOUT,
    DEFAULT_SESSION_IDLE_TIMEOUT,
)
from mcp_metrics_middleware.discovery import discover_names
from mcp_metrics_middleware.exposition import MetricsEndpoint
from mcp_metrics_middleware.logs import report_internal
from mcp_metrics_middleware.metrics import MCPMetrics
from mcp_metrics_middleware.protocol.model import HTTPExchange, ServerModel

logger = logging.getLogger("mcp_metrics")

_PASS, _MCP, _METRICS = 0, 1, 2  # what _route decides
_running_loop = asyncio._get_running_loop  # None outside a loop, never raises: one C call
# A request still running this long after its body was read gets a watcher that notices the
# client leaving even if the app never calls receive() (JSON responses). Short requests never
# pay for one: they only enter and leave a dict; one sweep timer per loop serves them all (a
# timer handle per request cost about 1 us, and a task costs about 10).
_WATCH_AFTER = 0.05
_MIN_TIMER = 0.25  # seconds: expiry timers never fire more often than this
_NEAR_MISS_WARN_AT = 5  # near-miss requests before the one warning line


def _normalise(path: str) -> str:
    """Paths compare without a trailing slash: ``/mcp/`` and ``/mcp`` are the same endpoint."""
    return path.rstrip("/") or "/"


class _LoopState:
    """The exchange model of one event loop, and that loop's expiry timer."""

    __slots__ = ("model", "loop", "clock", "timer", "waiting", "sweep")

    def __init__(self, model: ServerModel, loop: asyncio.AbstractEventLoop | None, clock: Callable[[], float]) -> None:
        self.model = model
        self.clock = clock
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None
        # Requests whose body was read and whose app is still running, oldest first (_Tap.receive
        # adds them and arms the sweep; _Tap.end removes them).
        self.waiting: dict[_Tap, float] = {}
        self.sweep: asyncio.TimerHandle | None = None

    def watch_old(self) -> None:
        """Give every request waiting longer than _WATCH_AFTER a disconnect watcher."""
        self.sweep = None
        waiting = self.waiting
        cutoff = self.clock() - _WATCH_AFTER
        while waiting:
            tap, since = next(iter(waiting.items()))
            if since > cutoff:
                if self.loop is not None:
                    self.sweep = self.loop.call_later(max(since - cutoff, 0.005), self.watch_old)
                return
            del waiting[tap]
            tap.start_watch()


class MCPMetricsMiddleware:
    """Record per-method, per-tool and per-client Prometheus metrics for an MCP server.

    Wrap any ASGI MCP app: ``app = MCPMetricsMiddleware(mcp.streamable_http_app())``, or
    ``starlette_app.add_middleware(MCPMetricsMiddleware)``. The middleware never modifies or
    delays a message; non-HTTP scopes (lifespan, websocket) and other paths pass through.

    Args:
        app: the ASGI app to wrap.
        registry: where the metrics are registered (one ``MCPMetrics`` per registry is shared).
        metrics: the recorder to use instead (its registry wins).
        mcp_path: the MCP endpoint path, or several; compared without a trailing slash.
        metrics_path: serve ``/metrics`` here (``None``: not at all; see
            ``exposition.start_metrics_server``).
        metrics_token: require ``Authorization: Bearer <token>`` on the metrics path.
        known_tools / known_prompts: names admitted as labels from the start.
        known_clients: client names (``clientInfo.name``) always admitted as ``mcp_client_name``.
        max_clients: further client names admitted, first come first served (used when this
            middleware creates the recorder; pass ``metrics=`` to set the other client limits).
        discover_tools: at startup, ask the app in process for its tool and prompt lists
            (2026-07-28 ``tools/list``, not recorded as traffic), so that every tool the server
            offers is labelled by its name from its first call, on every worker.
        max_body_size: bytes of one body or SSE event that are decoded (the SDK's limit).
        session_idle_timeout / max_sessions: the SDK's session limits, mirrored.
        parked_timeout / max_parked: how long and how many operations wait for an answer
            replayed on a GET stream (resumability).

    Raises:
        ValueError: for a non-positive ``max_body_size``.

    References:
        https://modelcontextprotocol.io/specification/2025-11-25/basic/transports
        https://github.com/open-telemetry/semantic-conventions-genai/blob/main/docs/gen-ai/mcp.md
        https://prometheus.io/docs/practices/naming/
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: CollectorRegistry = REGISTRY,
        metrics: MCPMetrics | None = None,
        mcp_path: str | Iterable[str] = "/mcp",
        metrics_path: str | None = "/metrics",
        metrics_token: str | None = None,
        known_tools: Iterable[str] = (),
        known_prompts: Iterable[str] = (),
        known_clients: Iterable[str] = (),
        max_clients: int = DEFAULT_MAX_CLIENTS,
        discover_tools: bool = True,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        session_idle_timeout: float = DEFAULT_SESSION_IDLE_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        parked_timeout: float = DEFAULT_PARKED_TIMEOUT,
        max_parked: int = DEFAULT_MAX_PARKED,
    ) -> None:
        self.app = app
        if max_body_size < 1:
            raise ValueError("max_body_size must be positive")
        self.metrics = (
            metrics
            if metrics is not None
            else MCPMetrics.for_registry(registry, max_sessions=max_sessions, max_clients=max_clients)
        )
        # The static allow-list is the operator's word: admitted regardless of the cap.
        self.metrics.tools.update(known_tools)
        self.metrics.prompts.update(known_prompts)
        self.metrics.add_known_clients(known_clients)
        paths = (mcp_path,) if isinstance(mcp_path, str) else tuple(mcp_path)
        if not paths:
            raise ValueError("mcp_path needs at least one path")
        self.first_path = paths[0]
        self.mcp_paths = frozenset(_normalise(p) for p in paths)
        # Request paths routed to MCP without a root_path, with and without their trailing slash.
        self._exact = frozenset(self.mcp_paths | {p + "/" for p in self.mcp_paths if p != "/"}) - {metrics_path}
        self._last_segments = frozenset(p.rsplit("/", 1)[-1] for p in self.mcp_paths)
        self.metrics_path = metrics_path
        self.metrics_endpoint = (
            MetricsEndpoint(self.metrics.registry or registry, metrics_token) if metrics_path is not None else None
        )
        self.discover_tools = discover_tools
        self._discovery_started = False
        self.model_config: dict[str, Any] = dict(
            max_body_size=max_body_size,
            session_idle_timeout=session_idle_timeout,
            max_sessions=max_sessions,
            parked_timeout=parked_timeout,
            max_parked=max_parked,
        )
        self.max_body_size = max_body_size
        self.clock = time.perf_counter
        self._state: _LoopState | None = None
        self._other_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._near_misses: dict[str, int] = {}
        self._redirect_warned = False

    # -- routing ----------------------------------------------------------------------------

    def _route(self, scope: Scope) -> int:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        candidates = [path]
        if root_path:
            if path.startswith(root_path):
                candidates.append(path[len(root_path) :] or "/")
            else:
                candidates.append(root_path + path)
        for candidate in candidates:
            if candidate == self.metrics_path:
                return _METRICS
            if _normalise(candidate) in self.mcp_paths:
                return _MCP
        self._near_miss(root_path + path if root_path and not path.startswith(root_path) else path)
        return _PASS

    def _near_miss(self, path: str) -> None:
        """Count requests to another path ending in the MCP path's last segment (e.g. a mount)."""
        normal = _normalise(path)
        if normal.rsplit("/", 1)[-1] not in self._last_segments:
            return
        self.metrics.near_miss()
        seen = self._near_misses.get(normal, 0) + 1
        if len(self._near_misses) < 64 or normal in self._near_misses:
            self._near_misses[normal] = seen
        if seen == _NEAR_MISS_WARN_AT:
            logger.warning(
                "MCPMetricsMiddleware: %d requests to %r were not observed: mcp_path is %s. "
                "If that is the MCP endpoint, pass mcp_path=%r.",
                seen,
                normal,
                sorted(self.mcp_paths),
                normal,
            )

    # -- per loop state ---------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    def _new_model(self) -> ServerModel:
        return ServerModel(self.metrics, **self.model_config)

    def _loop_state(self) -> _LoopState:
        """The model of the running event loop: one per loop, so two loops never share state."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): one model, no timers
            loop = None
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if state is None:
            state = self._state = _LoopState(self._new_model(), loop, self._now)
            return state
        if loop is not None and loop in self._other_loops:
            return self._other_loops[loop]
        if state.loop is not None and state.loop.is_closed():
            # The loop before this one is gone (a server restarted in process, tests): its
            # model carries on in this one, sessions and all.
            state.loop, state.timer, state.sweep = loop, None, None
            state.waiting.clear()
            self._schedule_expiry(state)  # what it kept still expires, whatever traffic comes
            return state
        if loop is None:  # pragma: no cover - asyncio and another loop type in one process
            return state
        other = self._other_loops.get(loop)
        if other is None:
            other = self._other_loops[loop] = _LoopState(self._new_model(), loop, self._now)
        return other

    def _schedule_expiry(self, state: _LoopState) -> None:
        """Run the model's expiry when it next has work, whether or not traffic arrives."""
        model = state.model
        if state.timer is not None or state.loop is None or not (len(model.sessions) or len(model.parked)):
            return  # nothing can expire (the common case: cheaper than asking for a deadline)
        deadline = model.next_deadline()
        if deadline is None:
            return
        delay = max(deadline - self.clock(), _MIN_TIMER)
        state.timer = state.loop.call_later(delay, self._expire, state)

    def _expire(self, state: _LoopState) -> None:
        state.timer = None
        try:
            state.model.expire(self.clock())
        except Exception:
            report_internal(self.metrics)
        self._schedule_expiry(state)

    # -- the ASGI entry point ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http":
            if scope_type == "lifespan" and self.discover_tools:
                await self.app(scope, receive, self._lifespan_send(send))
                return
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self._exact or scope.get("root_path"):  # else: the MCP path
            route = self._route(scope)
            if route == _PASS:
                await self.app(scope, receive, send)
                return
            if route == _METRICS:
                assert self.metrics_endpoint is not None
                await self.metrics_endpoint(scope, receive, send)
                return
        if self.discover_tools and not self._discovery_started:
            self._start_discovery()  # no lifespan reached us (a mounted app): discover now
        state = self._state
        if state is None or state.loop is not _running_loop():
            state = self._loop_state()
        tap = _Tap(self, state, scope, receive, send)
        try:
            await self.app(scope, tap.receive, tap.send)
        except Exception:
            tap.end("exception")
            raise
        except BaseException:
            tap.end("cancelled")
            raise
        tap.end(None)

    # -- tool discovery ---------------------------------------------------------------------

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            await send(message)
            if message.get("type") == "lifespan.startup.complete":
                self._start_discovery()

        return lifespan_send

    def _start_discovery(self) -> None:
        self._discovery_started = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - not asyncio
            return
        task = loop.create_task(self._discover())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _discover(self) -> None:
        try:
            tools, prompts = await discover_names(self.app, self.first_path, self.max_body_size)
        except Exception:  # never let discovery hurt the server
            logger.debug("tool discovery failed", exc_info=True)
            return
        self.metrics.learn_tools(tools)
        self.metrics.learn_prompts(prompts)
        logger.debug("discovered %d tools and %d prompts", len(tools), len(prompts))

    def _redirected(self, scope: Scope, status: int, location: bytes | None) -> None:
        if self._redirect_warned:
            return
        self._redirect_warned = True
        target = location.decode("latin-1") if location else "another path"
        logger.warning(
            "MCPMetricsMiddleware: %s answered %d (redirect to %s); every MCP call pays an extra "
            "round trip. Point clients at the final URL (a trailing slash usually differs), or "
            "mount the MCP app so that it serves %s directly.",
            scope.get("path"),
            status,
            target,
            scope.get("path"),
        )


_background: set[asyncio.Task[None]] = set()


def first_wins(headers: Any) -> dict[bytes, bytes]:
    """Header name -> value, the first occurrence winning, as Starlette's ``Headers.get`` reads.

    ASGI request header names are lowercase. A client that repeats a header must not make us
    read a different value than the server does.
    """
    if type(headers) is not list:
        headers = list(headers)
    return dict(reversed(headers))


class _Tap:
    """Per-request state, created in ``__call__``; never stored on the middleware."""

    # No __slots__: attributes most requests never change are class-level defaults, so a new
    # tap sets only six (measured cheaper than setting ten slots).
    receiving = False
    watch: asyncio.Future[Message] | None = None
    ended = False
    exchange: HTTPExchange | None = None

    def __init__(self, mw: MCPMetricsMiddleware, state: _LoopState, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw = mw
        self.state = state
        self.scope = scope
        self._receive = receive
        self._send = send
        try:
            headers = first_wins(scope["headers"])
            self.exchange = HTTPExchange(state.model, mw.clock(), scope.get("method", "GET"), headers)
        except Exception:
            report_internal(mw.metrics)

    async def receive(self) -> Message:
        watch = self.watch
        if watch is not None:
            # The watcher already asked for the next message: hand it on, never lose it.
            self.watch = None
            message = await watch
        else:
            self.receiving = True
            try:
                message = await self._receive()
            finally:
                self.receiving = False
        exchange = self.exchange
        if exchange is not None:
            try:
                mtype = message["type"]
                if mtype == "http.request":
                    more = message.get("more_body", False)
                    now = self.mw.clock()
                    exchange.request_body(now, message.get("body", b""), more)
                    if not more and not exchange.complete:
                        state = self.state
                        state.waiting[self] = now
                        if state.sweep is None and state.loop is not None:
                            state.sweep = state.loop.call_later(_WATCH_AFTER, state.watch_old)
                elif mtype == "http.disconnect":
                    exchange.disconnected(self.mw.clock())
            except Exception:
                report_internal(self.mw.metrics)
        return message

    def start_watch(self) -> None:
        """Notice the client leaving while the app is busy and not listening (JSON responses)."""
        exchange = self.exchange
        if self.ended or self.receiving or self.watch is not None or exchange is None or exchange.complete:
            return
        loop = self.state.loop
        assert loop is not None
        watch: asyncio.Future[Message] = asyncio.ensure_future(self._receive(), loop=loop)
        self.watch = watch
        watch.add_done_callback(self._watched)

    def _watched(self, watch: asyncio.Future[Message]) -> None:
        if watch.cancelled() or watch.exception() is not None or self.exchange is None:
            return
        if watch.result().get("type") == "http.disconnect":
            try:
                self.exchange.disconnected(self.mw.clock())
            except Exception:
                report_internal(self.mw.metrics)

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        try:
            await self._send(message)
        except BaseException:
            if exchange is not None:
                exchange.disconnected(self.mw.clock())
            raise
        if exchange is None:
            return
        try:
            mtype = message["type"]
            if mtype == "http.response.body":
                exchange.response_body(self.mw.clock(), message.get("body", b""), message.get("more_body", False))
            elif mtype == "http.response.start":
                status = message.get("status", 0)
                if type(status) is not int:
                    # Starlette passes http.HTTPStatus members through: an int subclass.
                    status = int(status) if isinstance(status, int) else 0
                headers = message.get("headers", ())
                exchange.response_start(self.mw.clock(), status, headers)
                if status >= 300 and status < 400:  # unchained: one comparison for a 2xx
                    self.mw._redirected(self.scope, status, dict(headers).get(b"location"))
        except Exception:
            report_internal(self.mw.metrics)

    def end(self, failure: str | None) -> None:
        """The app returned or raised. Never raises."""
        self.ended = True
        self.state.waiting.pop(self, None)
        if self.watch is not None and not self.watch.done():
            self.watch.cancel()
        exchange = self.exchange
        if exchange is None:
            return
        try:
            exchange.end(self.mw.clock(), failure)
            state = self.state
            # Only an exchange with a session can add what expires (a session, a parked call).
            if state.timer is None and (exchange.session_id is not None or exchange.new_session is not None):
                self.mw._schedule_expiry(state)
        except Exception:
            report_internal(self.mw.metrics)
