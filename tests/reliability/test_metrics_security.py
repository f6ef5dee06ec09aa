"""Securing /metrics: the bearer token, the separate loopback port, and never reaching the app."""

from __future__ import annotations

import hmac
import inspect
import logging
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware, exposition
from mcp_metrics_middleware._types import Receive, Scope, Send
from mcp_metrics_middleware.exposition import start_metrics_server
from tests.apps import JSON, drive, request, result, scope
from tests.conftest import ServerThread, free_port
from tests.reliability.harness import figure

pytestmark = pytest.mark.slow  # the whole reliability suite: `make reliability`
TOKEN = "s3cret-Tok3n-0123456789"
checks = {"requests": 0}


class AppSpy:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope.get("path", ""))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            await send({"type": "http.response.body", "body": orjson.dumps(result(1))})


AUTH_CASES = [
    (None, 401),
    ("", 401),
    ("Bearer", 401),
    ("Bearer ", 401),
    ("Basic " + TOKEN, 401),
    ("Bearer " + TOKEN[:-1], 401),
    ("Bearer " + TOKEN + "x", 401),
    ("Bearer " + TOKEN.upper(), 401),
    ("Token " + TOKEN, 401),
    (TOKEN, 401),
    ("Bearer " + TOKEN, 200),
    ("bearer " + TOKEN, 200),  # the scheme is case-insensitive (RFC 7235)
    ("BEARER " + TOKEN, 200),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("authorization", "status"), AUTH_CASES)
async def test_bearer_token(
    registry: CollectorRegistry, authorization: str | None, status: int
) -> None:
    app = AppSpy()
    mw = MCPMetricsMiddleware(app, registry=registry, metrics_token=TOKEN)
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    for method in ("GET", "HEAD"):
        sent = await drive(mw, scope(method, "/metrics", headers))
        assert sent[0]["status"] == status
        body = b"".join(m.get("body", b"") for m in sent[1:])
        assert TOKEN.encode() not in body
        assert all(TOKEN.encode() not in v for _, v in sent[0]["headers"])
        if status == 401:
            assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
            assert b"mcp_server" not in body
        elif method == "GET":
            assert b"mcp_server_sessions_active" in body
    assert app.paths == []
    checks["requests"] += 2


@pytest.mark.anyio
async def test_non_ascii_token(registry: CollectorRegistry) -> None:
    """A token outside ASCII, sent as its UTF-8 bytes, is accepted (and nothing else is)."""
    token = "pässwört-猫"
    mw = MCPMetricsMiddleware(AppSpy(), registry=registry, metrics_token=token)
    good = [(b"authorization", b"Bearer " + token.encode("utf-8"))]
    assert (await drive(mw, scope("GET", "/metrics", good)))[0]["status"] == 200
    bad = [(b"authorization", b"Bearer " + token.encode("latin-1", "replace"))]
    assert (await drive(mw, scope("GET", "/metrics", bad)))[0]["status"] == 401
    checks["requests"] += 2


@pytest.mark.anyio
async def test_token_compared_in_constant_time(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    mw = MCPMetricsMiddleware(AppSpy(), registry=registry, metrics_token=TOKEN)
    for value in ("Bearer wrong", "Bearer " + TOKEN):
        await drive(mw, scope("GET", "/metrics", [(b"authorization", value.encode())]))
    assert len(calls) == 2  # every presented token went through hmac.compare_digest
    assert "compare_digest" in inspect.getsource(exposition.token_ok)
    checks["requests"] += 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/metrics", ""), ("/cats/metrics", "/cats"), ("/metrics", "/cats")],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
async def test_metrics_path_never_reaches_the_app(
    registry: CollectorRegistry, path: str, root_path: str, method: str
) -> None:
    app = AppSpy()
    mw = MCPMetricsMiddleware(app, registry=registry, metrics_token=TOKEN)
    auth = [(b"authorization", b"Bearer " + TOKEN.encode())]
    for headers in ([], auth):
        sent = await drive(mw, scope(method, path, headers, root_path=root_path), b"{}")
        expected = 405 if method not in ("GET", "HEAD") else (200 if headers else 401)
        assert sent[0]["status"] == expected
    assert app.paths == []
    checks["requests"] += 2


@pytest.mark.anyio
async def test_other_paths_still_reach_the_app(registry: CollectorRegistry) -> None:
    app = AppSpy()
    mw = MCPMetricsMiddleware(app, registry=registry, metrics_token=TOKEN)
    for path in ("/metrics/", "/metricsx", "/", "/mcp"):
        await drive(mw, scope("POST", path), orjson.dumps(request(1, "ping")))
    assert app.paths == ["/metrics/", "/metricsx", "/", "/mcp"]


def test_token_never_logged(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """Through real uvicorn (access log on, DEBUG everywhere): the token appears in no record."""
    mw = MCPMetricsMiddleware(AppSpy(), registry=registry, metrics_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    names = ("uvicorn", "uvicorn.access", "uvicorn.error")
    levels = {name: logging.getLogger(name).level for name in names}
    with ServerThread(mw) as server:
        for logger in names:
            logging.getLogger(logger).addHandler(caplog.handler)
            logging.getLogger(logger).setLevel(logging.DEBUG)
        try:
            with httpx.Client(base_url=server.url) as client:
                for value in ("Bearer " + TOKEN, "Bearer " + TOKEN + "-wrong", "Basic " + TOKEN):
                    r = client.get("/metrics", headers={"authorization": value})
                    assert TOKEN not in r.text
                    r = client.get("/metrics?token=" + "x", headers={"authorization": value})
        finally:
            for logger in names:
                logging.getLogger(logger).removeHandler(caplog.handler)
                logging.getLogger(logger).setLevel(levels[logger])
    messages = [r.getMessage() for r in caplog.records]
    assert any("/metrics" in m for m in messages)  # the access log did run
    assert not [m for m in messages if TOKEN in m]
    checks["requests"] += 6


def test_separate_port_on_loopback(
    registry: CollectorRegistry, capfd: pytest.CaptureFixture[str]
) -> None:
    assert inspect.signature(start_metrics_server).parameters["addr"].default == "127.0.0.1"
    MCPMetricsMiddleware(AppSpy(), registry=registry, metrics_path=None)
    port = free_port()
    started = start_metrics_server(port, registry=registry, token=TOKEN)
    assert started is not None
    server, thread = started
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer nope"}).status_code == 401
        r = httpx.get(url, headers={"authorization": "Bearer " + TOKEN})
        assert r.status_code == 200 and "mcp_server_sessions_active" in r.text
        r = httpx.head(url, headers={"authorization": "Bearer " + TOKEN})
        assert r.status_code == 200 and r.content == b""
        assert httpx.post(url, headers={"authorization": "Bearer " + TOKEN}).status_code == 405
        r = httpx.get(url, headers={"authorization": "Bearer " + TOKEN, "accept-encoding": "gzip"})
        assert r.status_code == 200 and "mcp_server_sessions_active" in r.text
    finally:
        server.shutdown()
        thread.join(5)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err  # the request handler logs nothing
    checks["requests"] += 6


def test_zz_security_figures() -> None:
    if checks["requests"]:
        figure(
            f"/metrics security: {checks['requests']} requests; {len(AUTH_CASES)} Authorization "
            "variants (401 unless 'Bearer <token>', scheme case-insensitive), token compared "
            "with hmac.compare_digest, never in a response or a log line; metrics path never "
            "forwarded (6 methods x 3 mountings); start_metrics_server on 127.0.0.1 by default"
        )
