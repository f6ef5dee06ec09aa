"""Latency the proxy adds per ``tools/call``: p50/p99 direct to an upstream vs through ``mcp-metrics proxy``.

The upstream (the Python SDK cat server, stateless, JSON answers) and the proxy each run in their own process
under uvicorn on 127.0.0.1; this process is the client (one keep-alive httpx connection, sequential calls).
Bounded: ``--calls`` per side (default 500) after 50 warm-up calls, and at most ``--seconds`` per side.

Run: python -m benchmarks.proxy [--calls N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = """
import sys, uvicorn
sys.path.insert(0, {root!r})
from tests.catserver import build_server
app = build_server().streamable_http_app(stateless_http=True, json_response=True)
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "scratch_sofa", "arguments": {"claw_level": 5}},
}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def measure(url: str, calls: int, seconds: float) -> list[float]:
    body = json.dumps(CALL).encode()
    samples: list[float] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(50):
            client.post(url, content=body, headers=HEADERS).raise_for_status()
        deadline = time.monotonic() + seconds
        for _ in range(calls):
            start = time.perf_counter()
            r = client.post(url, content=body, headers=HEADERS)
            samples.append(time.perf_counter() - start)
            r.raise_for_status()
            if time.monotonic() > deadline:
                break
    return samples


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    up, px = _port(), _port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM.format(root=str(ROOT), port=up)], cwd=ROOT)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "mcp_metrics_middleware.cli", "proxy", "--upstream", f"http://127.0.0.1:{up}/mcp",
         "--listen", f"127.0.0.1:{px}", "--no-discover-tools"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        _wait(up)
        _wait(px)
        direct = measure(f"http://127.0.0.1:{up}/mcp", args.calls, args.seconds)
        proxied = measure(f"http://127.0.0.1:{px}/mcp", args.calls, args.seconds)
    finally:
        for proc in (proxy, upstream):
            proc.terminate()
            proc.wait(10)
    print(f"tools/call, {len(direct)}/{len(proxied)} calls, sequential, one keep-alive connection")
    print(f"{'':10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, values in (("direct", direct), ("proxied", proxied)):
        print(f"{name:10}{quantile(values, 0.5) * 1e3:10.3f}{quantile(values, 0.99) * 1e3:10.3f}")
    print(
        f"{'added':10}{(quantile(proxied, 0.5) - quantile(direct, 0.5)) * 1e3:10.3f}"
        f"{(quantile(proxied, 0.99) - quantile(direct, 0.99)) * 1e3:10.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
