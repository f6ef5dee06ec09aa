"""The variants every app runs under: bare, a no-op wrapper, this middleware and the two peers.

Each variant gets its own instance of the same app (built by the same factory), so peers that
install themselves with ``app.add_middleware`` sit exactly where their documentation puts them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

VARIANTS = ("bare", "noop", "ours", "starlette-exporter", "instrumentator")
PEERS = ("starlette-exporter", "instrumentator")
NETWORK_VARIANTS = ("bare", "ours", "starlette-exporter", "instrumentator")


class NoopMiddleware:
    """A pure-ASGI wrapper that does nothing: the floor for any middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def _ours(app: Starlette) -> Any:
    from mcp_metrics_middleware import MCPMetricsMiddleware

    registry = CollectorRegistry()
    mw = MCPMetricsMiddleware(app, registry=registry)
    mw.bench_registry = registry  # type: ignore[attr-defined]
    return mw


def _starlette_exporter(app: Starlette) -> Any:
    # starlette-exporter has no registry option: its metrics live on the class, in the default
    # REGISTRY, shared by every instance in the process.
    from starlette_exporter import PrometheusMiddleware

    app.add_middleware(PrometheusMiddleware)
    return app


def _instrumentator(app: Starlette) -> Any:
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


APPLY: dict[str, Callable[[Starlette], Any]] = {
    "bare": lambda app: app,
    "noop": NoopMiddleware,
    "ours": _ours,
    "starlette-exporter": _starlette_exporter,
    "instrumentator": _instrumentator,
}


def wrap(variant: str, app: Starlette) -> Any:
    return APPLY[variant](app)
