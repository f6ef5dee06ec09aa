"""``mcp-metrics proxy``: MCP metrics for any Streamable HTTP server, in any language, with no code.

A streaming reverse proxy: :class:`ProxyApp` is a plain ASGI app that forwards each request to
the upstream with an ``httpx`` async client, and :func:`build_app` wraps it in
:class:`~mcp_metrics_middleware.middleware.MCPMetricsMiddleware`, so the proxied traffic is read
by the same exchange model as an in-process server. uvicorn serves it.

What passes through, and how:

* **Bytes.** Request and response bodies are streamed chunk by chunk, never buffered and never
  decoded (``aiter_raw``: a gzip body stays gzip). SSE, the GET stream, DELETE and ``202``
  pass as they come.
* **Headers** pass untouched, minus the hop-by-hop ones (RFC 9110 section 7.6.1) and ``Host``,
  which names the upstream (as a reverse proxy's ``Host`` does by default): the Python SDK's
  DNS-rebinding check wants its own address there. The proxy adds no header of its own.
* **Flow control.** The next chunk is read from one side only once the other side took the last
  one: uvicorn's ``send`` waits for a draining socket, and httpx pulls the request body as it
  writes it. A client that goes away cancels the upstream request (its connection is closed).
* **Failures.** An upstream that cannot be reached gives the client ``502``; one that does not
  start its answer within ``--timeout`` seconds (or connect within ``--connect-timeout``)
  gives ``504``; each with a one-line body. The middleware records those operations with
  ``error_type`` ``"502"``/``"504"``. An upstream that dies after its answer started cannot
  be reported in HTTP any more: the client's connection is closed mid-body, and the operation
  ends as ``no_response`` (or, for a handshake-era SSE stream with a session, waits for its
  answer to be replayed on the GET stream, as the model's resumability rule says).

Tool discovery (``discover_tools``) is on: at startup the middleware's in-process
``tools/list`` goes through the proxy to the upstream, so tool names are labels from the first
call. An upstream that is not up yet at that moment is simply not asked again; tool names are
then learned from the clients' own ``tools/list`` calls and successful results.

See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#streamable-http
See: https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from typing import Any

import anyio
import httpx
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware._types import Message, Receive, Scope, Send
from mcp_metrics_middleware.exposition import start_metrics_server
from mcp_metrics_middleware.middleware import MCPMetricsMiddleware

logger = logging.getLogger("mcp_metrics.proxy")

# RFC 9110 7.6.1 (Connection) and the usual list of proxies (RFC 2616 13.5.1), plus Host.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_LISTEN = "127.0.0.1:8000"
DEFAULT_TIMEOUT = 300.0  # seconds until the upstream starts its answer (JSON answers: the whole call)
DEFAULT_CONNECT_TIMEOUT = 10.0


def _forwarded_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """``headers`` minus the hop-by-hop ones and those the ``Connection`` header names."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return [(n, v) for n, v in headers if (low := n.lower()) not in HOP_BY_HOP and low not in named]


class _Gone(Exception):
    """The client went away while its request body was being read."""


class ProxyApp:
    """A streaming ASGI reverse proxy to one upstream origin.

    Args:
        upstream: the upstream MCP endpoint (``http://127.0.0.1:3001/mcp``); requests are sent to
            its origin with their own path and query, unchanged.
        timeout: seconds to wait for the upstream's response headers (``504`` past it). Once the
            answer has started, a stream may stay quiet for any time (GET streams do).
        connect_timeout: seconds to connect to the upstream (``504`` past it).
        client: the httpx client to use (default: one per proxy, created at startup).

    Raises:
        ValueError: for an upstream URL that is not absolute ``http`` or ``https``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        url = httpx.URL(upstream)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {upstream!r}")
        self.upstream = url
        self.origin = url.copy_with(path="/", query=None, fragment=None)
        self.path = url.path or "/"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client = client
        self._own_client = client is None

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                # No read timeout: a GET stream may be quiet for as long as the session lives;
                # waiting for the headers is bounded by ``timeout`` instead.
                timeout=httpx.Timeout(None, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                follow_redirects=False,
                trust_env=False,  # never route the upstream through an HTTP_PROXY of the environment
            )
        return self.client

    async def aclose(self) -> None:
        if self.client is not None and self._own_client:
            await self.client.aclose()
            self.client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _Forward(self, scope, receive, send).run()
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: MCP has none; refuse the handshake
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _Forward:
    """One proxied request: per-request state, created for each call."""

    def __init__(self, proxy: ProxyApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.proxy = proxy
        self.scope = scope
        self.receive = receive
        self.send = send
        self.body_read = anyio.Event()
        self.started = False  # the response start went to the client

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_client, group.cancel_scope)
            try:
                await self._exchange(group.cancel_scope)
            finally:
                group.cancel_scope.cancel()

    async def _watch_client(self, scope: anyio.CancelScope) -> None:
        """Once the request body is read, a disconnect cancels everything (and so the upstream)."""
        await self.body_read.wait()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    async def _body(self, scope: anyio.CancelScope) -> Any:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                raise _Gone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break
        self.body_read.set()

    async def _drain(self) -> None:
        """Read the rest of a request body the upstream never took (so the model sees it too)."""
        while not self.body_read.is_set():
            message = await self.receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                self.body_read.set()

    def _request(self, scope: anyio.CancelScope) -> httpx.Request:
        s = self.scope
        raw_path: bytes = s.get("raw_path") or s["path"].encode("utf-8")
        query: bytes = s.get("query_string", b"")
        url = self.proxy.origin.copy_with(raw_path=raw_path + (b"?" + query if query else b""))
        headers = [(n, v) for n, v in _forwarded_headers(s["headers"]) if n.lower() != b"host"]
        # A POST is streamed even without Content-Length (ASGI callers need not send one).
        has_body = s["method"] in _BODY_METHODS or any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in s["headers"]
        )
        if not has_body:
            self.body_read.set()  # the watcher reads the (empty) request message and waits on
        # httpx.Request, not client.build_request: the client's default headers (Accept-Encoding,
        # User-Agent...) must not be added to what the client sent.
        return httpx.Request(s["method"], url, headers=headers, content=self._body(scope) if has_body else None)

    async def _exchange(self, scope: anyio.CancelScope) -> None:
        client = self.proxy._client()
        request = self._request(scope)
        try:
            with anyio.fail_after(self.proxy.timeout):
                response = await client.send(request, stream=True)
        except _Gone:
            return
        except (TimeoutError, httpx.TimeoutException):
            await self._fail(504, f"upstream {self.proxy.origin} did not answer in time")
            return
        except httpx.ConnectError as exc:
            await self._fail(502, f"upstream {self.proxy.origin} unreachable: {_reason(exc)}")
            return
        except httpx.HTTPError as exc:
            await self._fail(502, f"upstream {self.proxy.origin} failed: {_reason(exc)}")
            return
        try:
            await self._relay(response)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _relay(self, response: httpx.Response) -> None:
        headers = _forwarded_headers(response.headers.raw)
        await self.send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        self.started = True
        try:
            async for chunk in response.aiter_raw():
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # The answer started: no status can tell the client any more. Returning without the
            # final message makes uvicorn close the connection, so the client sees a cut body.
            logger.warning("upstream %s closed mid-response: %s", self.proxy.origin, _reason(exc))
            return
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, status: int, line: str) -> None:
        logger.warning("%s %s: %s", self.scope["method"], self.scope["path"], line)
        await self._drain()
        body = (line + "\n").encode("utf-8", "replace")
        message: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        await self.send(message)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_app(
    upstream: str,
    *,
    registry: CollectorRegistry,
    metrics_path: str | None = "/metrics",
    metrics_token: str | None = None,
    discover_tools: bool = True,
    **options: Any,
) -> MCPMetricsMiddleware:
    """The proxy for ``upstream`` wrapped by the metrics middleware (``options``: ProxyApp's)."""
    proxy = ProxyApp(upstream, **options)
    return MCPMetricsMiddleware(
        proxy,
        registry=registry,
        mcp_path=proxy.path,
        metrics_path=metrics_path,
        metrics_token=metrics_token,
        discover_tools=discover_tools,
    )


# -- the command ---------------------------------------------------------------------------


class UsageError(Exception):
    """A bad argument or an unusable address: ``str()`` is the one line the user sees."""


def parse_address(value: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{option} wants HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def bind(host: str, port: int, option: str) -> socket.socket:
    """A listening socket, or a UsageError saying why not in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({option}): {exc.strerror or exc}") from None
    return sock


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read --metrics-token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise UsageError(f"--metrics-token-file {path} is empty")
    return token


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "proxy",
        help="reverse proxy that records metrics for any Streamable HTTP MCP server",
        description="Forward every request to an MCP server over Streamable HTTP, unchanged and "
        "streaming, and serve Prometheus metrics of the traffic.",
    )
    parser.add_argument(
        "--upstream", required=True, metavar="URL", help="the MCP endpoint, e.g. http://127.0.0.1:3001/mcp"
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where clients connect (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve /metrics on this separate address instead of on --listen (port 0: any free port)",
    )
    parser.add_argument(
        "--metrics-token-file", metavar="PATH", help="require 'Authorization: Bearer <token in the file>' on /metrics"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds until the upstream starts its answer, else 504 (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect to the upstream, else 504 (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--no-discover-tools",
        action="store_true",
        help="do not ask the upstream for its tool list at startup",
    )
    parser.set_defaults(run=run)
    return parser


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mcp-metrics proxy: %(message)s"))
    for name in ("mcp_metrics.proxy", "mcp_metrics"):
        log = logging.getLogger(name)
        if not log.handlers:
            log.addHandler(handler)
            log.setLevel(logging.WARNING)
            log.propagate = False


def run(args: argparse.Namespace) -> int:
    """Serve the proxy until interrupted; one line on stderr and status 2 for a usage error."""
    import uvicorn

    _log_to_stderr()
    metrics_server = None
    try:
        if args.timeout <= 0 or args.connect_timeout <= 0:
            raise UsageError("--timeout and --connect-timeout must be positive")
        token = read_token(args.metrics_token_file)
        registry = CollectorRegistry()
        try:
            app = build_app(
                args.upstream,
                registry=registry,
                metrics_path=None if args.metrics_listen else "/metrics",
                metrics_token=token,
                discover_tools=not args.no_discover_tools,
                timeout=args.timeout,
                connect_timeout=args.connect_timeout,
            )
        except ValueError as exc:
            raise UsageError(f"--upstream: {exc}") from None
        host, port = parse_address(args.listen, "--listen")
        sock = bind(host, port, "--listen")
        if args.metrics_listen:
            m_host, m_port = parse_address(args.metrics_listen, "--metrics-listen")
            try:
                started = start_metrics_server(m_port, m_host, registry, token=token)
                if started is None:  # multiprocess mode: another process serves this port
                    raise OSError(errno.EADDRINUSE, "Address already in use")
                metrics_server = started[0]
            except OSError as exc:
                sock.close()
                raise UsageError(
                    f"cannot listen on {m_host}:{m_port} (--metrics-listen): {exc.strerror or exc}"
                ) from None
    except UsageError as exc:
        print(f"mcp-metrics proxy: {exc}", file=sys.stderr)
        return 2
    where = sock.getsockname()
    metrics_at = (
        f"http://{_host(m_host)}:{metrics_server.server_port}/metrics"
        if metrics_server is not None
        else f"http://{_host(where[0])}:{where[1]}/metrics"
    )
    print(
        f"mcp-metrics proxy: http://{_host(where[0])}:{where[1]}{app.first_path} -> {args.upstream}; "
        f"metrics on {metrics_at}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        sock.close()
    return 0


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
