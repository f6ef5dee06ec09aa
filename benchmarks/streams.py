"""Large responses: the middleware's parse throughput (MB/s) and its extra peak memory.

The app replays pre-built chunks, so bare measures the cost of moving them through ASGI and
the difference is what the middleware adds. Peak memory is traced (tracemalloc) in separate
runs, relative to bare, with the chunks allocated before tracing starts.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks import asgi, stats, wire

MiB = 1024 * 1024
REQUEST_ID = 7


class ReplayApp:
    """Reads the request, then sends the given chunks (more_body=False on the last one)."""

    def __init__(self, content_type: bytes, chunks: list[bytes], length: int | None) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        self.start = {"type": "http.response.start", "status": 200, "headers": headers}
        self.messages = [
            {"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        await send(self.start)
        for message in self.messages:
            await send(message)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _json_result(size: int) -> bytes:
    """A tools/call result whose text content makes the body about ``size`` bytes."""
    return wire.dumps(
        {
            "jsonrpc": "2.0",
            "id": REQUEST_ID,
            "result": {
                "content": [{"type": "text", "text": "x" * max(size - 120, 1)}],
                "isError": False,
                "resultType": "complete",
            },
        }
    )


def build_streams(events: int, json_mb: float, under_cap_mb: float) -> list[dict[str, Any]]:
    """The stream cases: name, app, size, and the middleware's max_body_size."""
    one = [
        wire.sse_event(wire.progress(REQUEST_ID, i + 1, events - 1, "purring"))
        for i in range(events - 1)
    ]
    one.append(wire.sse_event(wire.tool_result(REQUEST_ID)))
    sse = b"".join(one)
    big = _json_result(int(json_mb * 1e6))
    small = _json_result(int(under_cap_mb * 1e6))
    sse_detail = f"{events:,} events, {len(sse) / 1e6:.2f} MB"
    return [
        {
            "case": "sse, 1 event/chunk",
            "detail": sse_detail,
            "app": ReplayApp(b"text/event-stream", one, None),
            "bytes": len(sse),
            "max_body_size": 4 * MiB,
        },
        {
            "case": "sse, 64 KiB chunks",
            "detail": sse_detail,
            "app": ReplayApp(b"text/event-stream", split(sse, 64 * 1024), None),
            "bytes": len(sse),
            "max_body_size": 4 * MiB,
            "target_mbps": 300.0,
        },
        {
            "case": "json under the cap, 1 chunk (parsed)",
            "detail": f"{len(small) / 1e6:.1f} MB, cap 4 MiB",
            "app": ReplayApp(b"application/json", [small], len(small)),
            "bytes": len(small),
            "max_body_size": 4 * MiB,
        },
        {
            "case": "json past the cap, 1 chunk (skipped)",
            "detail": f"{len(big) / 1e6:.1f} MB, cap 4 MiB",
            "app": ReplayApp(b"application/json", [big], len(big)),
            "bytes": len(big),
            "max_body_size": 4 * MiB,
        },
        {
            "case": "json, 64 KiB chunks, cap raised (parsed)",
            "detail": f"{len(big) / 1e6:.1f} MB, cap 32 MiB",
            "app": ReplayApp(b"application/json", split(big, 64 * 1024), len(big)),
            "bytes": len(big),
            "max_body_size": 32 * MiB,
        },
    ]


def _ours(app: Any, max_body_size: int) -> Any:
    from mcp_metrics_middleware import MCPMetricsMiddleware

    return MCPMetricsMiddleware(app, registry=CollectorRegistry(), max_body_size=max_body_size)


async def _time(app: Any, headers: Any, body: bytes, n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        await asgi.call(app, headers, body)
    return (time.perf_counter() - t0) / n


async def _peak(app: Any, headers: Any, body: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await asgi.call(app, headers, body)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


async def run(
    *,
    events: int,
    json_mb: float,
    under_cap_mb: float,
    rounds: int,
    iterations: int,
    progress: Any = None,
) -> list[dict[str, Any]]:
    body = wire.tool_call(REQUEST_ID, progress=True)
    headers = wire.modern_headers("tools/call", "sharpen_claw", len(body))
    rows = []
    for spec in build_streams(events, json_mb, under_cap_mb):
        if progress:
            progress(f"streams: {spec['case']}")
        bare = spec["app"]
        ours = _ours(bare, spec["max_body_size"])
        check = await asgi.call(ours, headers, body, keep=True)
        if check.status != 200:
            raise RuntimeError(f"{spec['case']}: status {check.status}")
        await _time(bare, headers, body, 1)
        await _time(ours, headers, body, 1)
        t_bare: list[float] = []
        t_ours: list[float] = []
        for _ in range(rounds):
            t_bare.append(await _time(bare, headers, body, iterations))
            t_ours.append(await _time(ours, headers, body, iterations))
        mem_bare = await _peak(bare, headers, body)
        mem_ours = await _peak(ours, headers, body)
        size = spec["bytes"]
        mbps = [size / 1e6 / max(o - b, 1e-9) for o, b in zip(t_ours, t_bare, strict=True)]
        row = {
            "section": "streams",
            "case": spec["case"],
            "detail": spec["detail"],
            "variant": "ours",
            "unit": "MB/s",
            **stats.summary(mbps),
            "bytes": size,
            "bare_ms": stats.summary([t * 1e3 for t in t_bare]),
            "ours_ms": stats.summary([t * 1e3 for t in t_ours]),
            "extra_peak_bytes": max(mem_ours - mem_bare, 0),
            "max_body_size": spec["max_body_size"],
        }
        row.update(stats.paired([t * 1e3 for t in t_ours], [t * 1e3 for t in t_bare]))
        if "target_mbps" in spec:
            row["target"] = f">= {spec['target_mbps']:g} MB/s"
            row["met"] = row["median"] >= spec["target_mbps"]
        rows.append(row)
    return rows
