"""Hook for the row "proxy adds per tools/call (p50, p99) vs a direct connection".

Another engineer builds ``mcp-metrics proxy`` (an HTTP forwarding proxy over the sans-IO core).
When it exists, ``run`` measures tools/call p50/p99 through the proxy and directly against the
same upstream server, alternated in rounds, and returns one row per variant shaped like the
network rows (section "proxy", unit "ms p50", ``p99_ms``, ``samples``, ``added_p50_ms``,
``added_p99_ms``). Until then it returns no rows and says why, so ``make bench`` never fails on it.

To fill it in: start ``benchmarks.server --variant bare`` as the upstream, start the proxy in front
of it (``mcp-metrics proxy --upstream http://127.0.0.1:PORT ...``), then reuse
``network._load`` (wrk or the asyncio load generator) against both ports, alternating.
"""

from __future__ import annotations

import shutil
from typing import Any

CASE = "proxy adds per tools/call (p50, p99) vs a direct connection"


def available() -> str | None:
    """Why the proxy row cannot run, or None when it can."""
    if shutil.which("mcp-metrics") is None:
        return "mcp-metrics CLI not installed"
    try:
        import mcp_metrics_middleware.proxy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "mcp-metrics proxy not built yet (mcp_metrics_middleware.proxy is missing)"
    return None


def skipped() -> str | None:
    """Why ``run`` returns no rows (recorded in latest.json's meta), or None."""
    return available() or "not measured yet: benchmarks.proxy.run is still the stub"


def run(*, rounds: int, duration: float, progress: Any = None) -> list[dict[str, Any]]:
    reason = skipped()
    if reason is not None:
        if progress:
            progress(f"proxy: skipped ({reason})")
        return []
    return []  # pragma: no cover - the proxy's author replaces this (see the docstring)
