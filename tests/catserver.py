"""A real MCPServer (mcp SDK) for the end-to-end tests, wrapped by the middleware."""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetricsMiddleware


class MemoryEventStore(EventStore):
    """Enough of an event store for the SDK's resumability (close_sse_stream + GET replay)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = f"{stream_id}-{len(self.events)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> Any:
        ids = [e[0] for e in self.events]
        if last_event_id not in ids:
            return None
        index = ids.index(last_event_id)
        stream_id = self.events[index][1]
        for event_id, sid, message in self.events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_server() -> MCPServer:
    mcp = MCPServer("catbox", version="0.1.0")

    @mcp.tool()
    async def sharpen_claw(level: int, ctx: Context) -> str:
        """Sharpen a claw, reporting progress."""
        await ctx.report_progress(1, 2, "filing")
        await ctx.report_progress(2, 2, "done")
        return f"claw sharpened to {level}"

    @mcp.tool()
    def scratch_sofa(claw_level: int) -> str:
        """Dull claws raise; level 42 hits a protected sofa (a JSON-RPC error)."""
        if claw_level == 42:
            raise MCPError(-32050, "sofa is protected")
        if claw_level < 3:
            raise ValueError(f"claws too dull: {claw_level}")
        return f"sofa scratched at {claw_level}"

    @mcp.tool()
    async def nap(seconds: float) -> str:
        """Sleep (for cancellation)."""
        await anyio.sleep(seconds)
        return "rested"

    @mcp.tool()
    async def hide_under_bed(ctx: Context) -> str:
        """Close the POST stream; the answer is replayed on the GET stream (resumability)."""
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
        return "found"

    @mcp.prompt()
    def cat_mood(mood: str = "grumpy") -> str:
        """A prompt."""
        return f"The cat is {mood}."

    @mcp.resource("cat://profile")
    def profile() -> str:
        """A resource."""
        return "name: Evil Cat"

    return mcp


def build_app(
    registry: CollectorRegistry,
    *,
    json_response: bool = False,
    stateless: bool = False,
    event_store: EventStore | None = None,
    **options: Any,
) -> MCPMetricsMiddleware:
    mcp = build_server()
    inner = mcp.streamable_http_app(
        json_response=json_response,
        stateless_http=stateless,
        event_store=event_store,
        retry_interval=100 if event_store is not None else None,
    )
    return MCPMetricsMiddleware(inner, registry=registry, **options)
