"""Fallback load generator when wrk is missing: raw asyncio sockets, HTTP/1.1 keep-alive.

Several connections, each sending the same POST back to back; it only parses the status line,
content-length and the body length, so it stays far cheaper per request than the server.
Prints one JSON line shaped like the wrk script's ``done()``.

``python -m benchmarks.loadgen --port 8101 --connections 8 --duration 5``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        "POST /mcp HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
        "MCP-Protocol-Version: 2026-07-28\r\n"
        "MCP-Method: tools/call\r\n"
        "MCP-Name: sharpen_claw\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, payload: bytes, until: float, out: dict) -> None:
    latencies: list[float] = out["latencies"]
    perf = time.perf_counter
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        out["errors_connect"] += 1
        return
    try:
        while perf() < until:
            t0 = perf()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            lower = head.lower()
            i = lower.find(b"content-length:")
            if i < 0:
                out["errors_read"] += 1
                break
            length = int(lower[i + 15 : lower.find(b"\r\n", i)])
            await reader.readexactly(length)
            latencies.append(perf() - t0)
            if status >= 400:
                out["errors_status"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        out["errors_read"] += 1
    finally:
        writer.close()


async def run(port: int, body: bytes, connections: int, duration: float) -> dict:
    out = {"latencies": [], "errors_status": 0, "errors_connect": 0, "errors_read": 0}
    payload = request_bytes(port, body)
    t0 = time.perf_counter()
    until = t0 + duration
    await asyncio.gather(*(_connection(port, payload, until, out) for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    lat = sorted(out.pop("latencies"))

    def pct(p: float) -> int:
        return int(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6) if lat else 0

    return {
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        **out,
        "errors_write": 0,
        "errors_timeout": 0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": statistics.fmean(lat) * 1e6 if lat else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    body = os.environ["BENCH_BODY"].encode()
    print(json.dumps(asyncio.run(run(args.port, body, args.connections, args.duration))))


if __name__ == "__main__":
    main()
