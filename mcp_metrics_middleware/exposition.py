"""Serving the metrics: on the middleware's own path, or on a separate loopback port.

Rendering is prometheus-client's own (``choose_encoder``), run off the event loop in a worker
thread, so a scrape of thousands of series never stalls the requests the loop is serving; scrapes
that arrive while one is rendering share its result instead of rendering again.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from mcp_metrics_middleware._types import Receive, Scope, Send
from mcp_metrics_middleware.multiprocess import cleanup_dead_processes, multiproc_dir


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry to expose: in multiprocess mode, every worker's files aggregated."""
    if multiproc_dir() is not None:
        from prometheus_client import multiprocess

        cleanup_dead_processes()
        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
        return aggregated
    return registry


def render(
    registry: CollectorRegistry, accept: str | None, accept_encoding: str | None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Render ``registry`` the way prometheus-client's own handlers do (OpenMetrics, gzip)."""
    encoder, content_type = choose_encoder(accept or "")
    output = encoder(exposition_registry(registry))
    headers = [(b"content-type", content_type.encode("latin-1"))]
    if accept_encoding and "gzip" in accept_encoding.lower():
        import gzip

        output = gzip.compress(output)
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(output)).encode("latin-1")))
    return output, headers


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    if expected is None:
        return True
    if not authorization or not authorization[:7].lower() == "bearer ":
        return False
    # Header values arrive as latin-1 text (ASGI and WSGI alike): these are the raw bytes, to
    # compare with the token's UTF-8 bytes.
    return hmac.compare_digest(authorization[7:].strip().encode("latin-1", "replace"), expected.encode("utf-8"))


logger = logging.getLogger("mcp_metrics")

Rendered = tuple[bytes, list[tuple[bytes, bytes]]]


class MetricsEndpoint:
    """A tiny ASGI app answering GET/HEAD with the registry's metrics.

    The exposition is rendered in a worker thread; concurrent scrapes asking for the same
    format share one rendering (per event loop).
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY, token: str | None = None) -> None:
        self.registry = registry
        self.token = token
        self._rendering: dict[tuple[int, str, bool], asyncio.Future[Rendered]] = {}

    async def _render(self, accept: str | None, accept_encoding: str | None) -> Rendered:
        loop = asyncio.get_running_loop()
        gzip_ok = bool(accept_encoding and "gzip" in accept_encoding.lower())
        _encoder, content_type = choose_encoder(accept or "")
        key = (id(loop), content_type, gzip_ok)
        future = self._rendering.get(key)
        if future is None:
            future = loop.run_in_executor(None, render, self.registry, accept, accept_encoding)
            self._rendering[key] = future
            future.add_done_callback(lambda _f: self._rendering.pop(key, None))
        # shield: one scraper going away must not cancel the rendering the others wait for.
        return await asyncio.shield(future)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"Method Not Allowed\n", [(b"allow", b"GET, HEAD")])
            return
        if not token_ok(self.token, headers.get("authorization")):
            await _plain(send, 401, b"Unauthorized\n", [(b"www-authenticate", b"Bearer")])
            return
        body, response_headers = await self._render(headers.get("accept"), headers.get("accept-encoding"))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _plain(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_metrics_app(registry: CollectorRegistry = REGISTRY, *, token: str | None = None) -> MetricsEndpoint:
    """An ASGI app serving ``registry`` (optionally behind a bearer token)."""
    return MetricsEndpoint(registry, token)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Never log requests: the Authorization header must not end up anywhere."""


def start_metrics_server(
    port: int,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry = REGISTRY,
    *,
    token: str | None = None,
) -> tuple[WSGIServer, threading.Thread] | None:
    """Serve the metrics on a separate port, loopback by default, in a daemon thread.

    Returns the server and its thread; call ``server.shutdown()`` to stop it. In multiprocess
    mode every worker exposes the same aggregate, so when the port is already taken (another
    worker got there first, as under ``uvicorn --workers N``) this logs one line and returns
    ``None`` instead of failing the worker.

    Raises:
        OSError: the address cannot be bound (outside multiprocess mode).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"Method Not Allowed\n"]
        if not token_ok(token, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
            return [b"Unauthorized\n"]
        body, headers = render(registry, environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"))
        start_response("200 OK", [(k.decode(), v.decode()) for k, v in headers])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    try:
        server = make_server(addr, port, app, _ThreadingWSGIServer, handler_class=_SilentHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and multiproc_dir() is not None:
            logger.info(
                "metrics port %s:%d is already served by another worker; this worker's numbers are in its aggregate",
                addr,
                port,
            )
            return None
        raise
    thread = threading.Thread(target=server.serve_forever, name="mcp-metrics-server", daemon=True)
    thread.start()
    return server, thread
