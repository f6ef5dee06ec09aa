"""The three ways users wire the middleware, each through real uvicorn and the real SDK client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from mcp import Client
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount

from mcp_metrics_middleware import MCPMetricsMiddleware
from tests.catserver import build_server
from tests.conftest import wait_for
from tests.helpers import in_flight_total, op_count, value

pytestmark = pytest.mark.anyio


async def call_once(url: str) -> None:
    async with Client(url) as client:
        await client.list_tools()
        await client.call_tool("sharpen_claw", {"level": 3})


def assert_recorded(registry: CollectorRegistry) -> None:
    # The last answer is recorded just after it was handed to the server: let that finish.
    wait_for(lambda: in_flight_total(registry) == 0)
    assert op_count(registry, "tools/list", version="2026-07-28") == 1
    assert op_count(registry, "tools/call", "sharpen_claw", version="2026-07-28") == 1


async def test_wrapping_the_app(registry: CollectorRegistry, serve: Any) -> None:
    app = MCPMetricsMiddleware(build_server().streamable_http_app(), registry=registry)
    srv = serve(app)
    await call_once(srv.url + "/mcp")
    assert_recorded(registry)


async def test_starlette_add_middleware(registry: CollectorRegistry, serve: Any) -> None:
    app = build_server().streamable_http_app()
    app.add_middleware(MCPMetricsMiddleware, registry=registry)
    srv = serve(app)
    await call_once(srv.url + "/mcp")
    assert_recorded(registry)


def mounted_parent(mcp_app: Any, session_manager: Any, framework: str) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with session_manager.run():
            yield

    if framework == "fastapi":
        parent = FastAPI(lifespan=lifespan)
        parent.mount("/cats", mcp_app)
        return parent
    return Starlette(routes=[Mount("/cats", app=mcp_app)], lifespan=lifespan)


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_middleware_on_the_parent(
    registry: CollectorRegistry, serve: Any, framework: str
) -> None:
    mcp = build_server()
    inner = mcp.streamable_http_app()
    parent = mounted_parent(inner, mcp.session_manager, framework)
    parent.add_middleware(MCPMetricsMiddleware, registry=registry, mcp_path="/cats/mcp")
    srv = serve(parent)
    await call_once(srv.url + "/cats/mcp")
    assert_recorded(registry)


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_middleware_on_the_mounted_child_honours_root_path(
    registry: CollectorRegistry, serve: Any, framework: str
) -> None:
    mcp = build_server()
    child = MCPMetricsMiddleware(mcp.streamable_http_app(), registry=registry)
    srv = serve(mounted_parent(child, mcp.session_manager, framework))
    await call_once(srv.url + "/cats/mcp")
    assert_recorded(registry)
    # /metrics is answered under the mount too, from the same registry.
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.get(srv.url + "/cats/metrics")
    assert r.status_code == 200
    assert 'mcp_method_name="tools/call"' in r.text
    assert value(registry, "mcp_server_sessions_active") == 0
