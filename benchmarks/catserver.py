"""A minimal evil-cat MCPServer (mcp SDK) for the benchmarks; no dependency on demo/."""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette


def build_server() -> MCPServer:
    mcp = MCPServer("catbox", version="0.1.0", log_level="WARNING")

    @mcp.tool()
    async def sharpen_claw(level: int, ctx: Context) -> str:
        """Sharpen a claw, reporting progress (sent only when the caller asked for it)."""
        await ctx.report_progress(1, 2, "filing")
        await ctx.report_progress(2, 2, "done")
        return f"claw sharpened to {level}"

    @mcp.tool()
    def scratch_sofa(claw_level: int) -> str:
        """Dull claws raise."""
        if claw_level < 3:
            raise ValueError(f"claws too dull: {claw_level}")
        return f"sofa scratched at {claw_level}"

    @mcp.tool()
    def nap(seconds: float = 0.0) -> str:
        """A nap (returns at once here)."""
        return "rested"

    return mcp


def build_app(
    *, json_response: bool = False, stateless: bool = False
) -> tuple[Starlette, MCPServer]:
    """The SDK's own Starlette app (route /mcp) and its server; the caller runs the lifespan."""
    mcp = build_server()
    app = mcp.streamable_http_app(json_response=json_response, stateless_http=stateless)
    return app, mcp
