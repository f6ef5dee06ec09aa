"""The evil-cat MCP server: the article's two tools plus every outcome the middleware tells apart.

Run it with ``python -m demo.server`` (uvicorn on ``$DEMO_HOST:$DEMO_PORT``, MCP on ``/mcp``,
Prometheus on ``/metrics``). Environment:

* ``DEMO_HOST`` (default ``127.0.0.1``) and ``DEMO_PORT`` (default ``8000``);
* ``DEMO_JSON_RESPONSE=1`` answers handshake-era requests with JSON instead of SSE;
* ``DEMO_STATELESS=1`` runs handshake-era sessions statelessly;
* ``DEMO_LOG_LEVEL`` (default ``WARNING``).

The tools know nothing about the middleware. The only business metrics are the article's, kept by
hand in the default ``prometheus_client`` registry; the middleware serves them on the same
``/metrics`` next to the generic MCP metrics.

Outcomes, and what the middleware records for each:

=================  ===================================================  ===========================
tool               behaviour                                            ``error_type``
=================  ===================================================  ===========================
sharpen_claw       always succeeds                                      ``""``
scratch_sofa       fails (``isError`` result) when hardness > claw      ``tool_error``
nap                sleeps, sending progress notifications               ``""``
hiss               raises ``MCPError(-32050)`` with probability vol/10  ``-32050``
cough_hairball     raises ``RuntimeError`` with probability fur/100     ``tool_error``
=================  ===================================================  ===========================
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Literal, cast

import anyio
import uvicorn
from mcp import MCPError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import Counter, Histogram

from mcp_metrics_middleware import MCPMetricsMiddleware

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HISS_CODE = -32050  # a server-defined JSON-RPC error code (the -32000..-32099 range)
MAX_NAP_SECONDS = 10.0

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The article's business metrics, by hand, in the default registry.
CLAW_LEVEL = Histogram(
    "cat_claw_level",
    "Claw level the evil cat sharpened to.",
    buckets=(10, 100, 1000, 2500, 5000, 7500, 10000),
)
SOFA_SCRATCHES = Counter(
    "cat_sofa_scratches",
    "Attempts to ruin the leather sofa, by outcome.",
    ("outcome",),
)
for _outcome in ("success", "failure"):
    SOFA_SCRATCHES.labels(_outcome)

mcp = MCPServer(
    "evil-cat",
    version="1.0.0",
    instructions="An evil cat. Sharpen its claws, then let it ruin the sofa.",
    log_level=cast(LogLevel, os.environ.get("DEMO_LOG_LEVEL", "WARNING").upper()),
)


@mcp.tool(description="Sharpen the evil cat's claw to a new level (1-10000).")
def sharpen_claw(level: int) -> str:
    CLAW_LEVEL.observe(level)
    return f"claw sharpened to level: {level}"


@mcp.tool(description="Let the evil cat try to ruin the leather sofa with its claws.")
def scratch_sofa(claw_level: int) -> str:
    hardness = random.randint(1, 10000)
    if hardness > claw_level:
        SOFA_SCRATCHES.labels("failure").inc()
        # ToolError becomes a result with isError: true, which is what the article's
        # "not sharp enough" case is: the tool ran, and it failed.
        raise ToolError(f"your claws are not sharp enough (sofa hardness {hardness})")
    SOFA_SCRATCHES.labels("success").inc()
    return "sofa is completely ruined. Evil Cat now laughs"


@mcp.tool(description="Take a nap for a number of seconds (at most 10), reporting progress.")
async def nap(seconds: float, ctx: Context) -> str:
    seconds = min(max(seconds, 0.0), MAX_NAP_SECONDS)
    steps = 4
    for step in range(1, steps + 1):
        await anyio.sleep(seconds / steps)
        await ctx.report_progress(step, steps, "zzz" if step < steps else "stretching")
    return f"napped for {seconds:.2f}s"


@mcp.tool(description="Hiss at someone. The louder (volume 0-10), the likelier a protocol error.")
def hiss(at: str, volume: int = 5) -> str:
    if random.random() < volume / 10:
        raise MCPError(HISS_CODE, f"the cat hissed at {at} and walked off", {"volume": volume})
    return f"the cat stares at {at} in silence"


@mcp.tool(description="Cough up a hairball. More fur (0-100) means a likelier crash.")
def cough_hairball(fur: int = 20) -> str:
    if random.random() < fur / 100:
        raise RuntimeError(f"hairball stuck ({fur} units of fur)")
    return f"a hairball of {fur} units lands on the carpet"


@mcp.prompt(description="Plan the next act of feline villainy against a target.")
def evil_plan(target: str) -> str:
    return (
        f"You are an evil cat. Plan, step by step, how to ruin the {target} "
        "without being caught. Sharpen claws first."
    )


@mcp.resource("cat://profile", description="The evil cat's profile.", mime_type="application/json")
def cat_profile() -> str:
    return json.dumps({"name": "Gato Malo", "lives_left": 7, "favourite_target": "sofa"})


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_app(
    *,
    host: str | None = None,
    json_response: bool | None = None,
    stateless: bool | None = None,
) -> Any:
    """The ASGI app: the SDK's Starlette app wrapped in the metrics middleware.

    Every call builds a new SDK app (its session manager runs once, in the app's lifespan); the
    middleware instances share their metrics through the default registry. For uvicorn or
    gunicorn directly: ``uvicorn --factory demo.server:build_app``.
    """
    host = host if host is not None else os.environ.get("DEMO_HOST", "127.0.0.1")
    json_response = json_response if json_response is not None else _flag("DEMO_JSON_RESPONSE")
    stateless = stateless if stateless is not None else _flag("DEMO_STATELESS")
    # The SDK turns on DNS-rebinding protection for loopback hosts only; in a container
    # (DEMO_HOST=0.0.0.0) Prometheus and friends arrive with their own Host header.
    security = (
        None
        if host in LOOPBACK_HOSTS
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    options: dict[str, Any] = {
        "json_response": json_response,
        "stateless_http": stateless,
        "transport_security": security,
        "host": host,
    }
    app = MCPMetricsMiddleware(mcp.streamable_http_app(**options))
    return app


def main() -> None:
    host = os.environ.get("DEMO_HOST", "127.0.0.1")
    port = int(os.environ.get("DEMO_PORT", "8000"))
    uvicorn.run(build_app(host=host), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
