"""Over the network: uvicorn (one worker, 127.0.0.1) per variant, load alternated between them.

All servers start together and idle while another is loaded; rounds go bare, ours, peers,
bare, ... so slow drift hits every variant alike. wrk (one thread) drives modern tools/call
POSTs; without wrk, the in-repo asyncio load generator does. The server and the load generator
share the machine's cores, so the ratios to bare are the result, not the absolute req/s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import loadgen, stats, variants, wire

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = wire.tool_call(1, "sharpen_claw", {"level": 7}, modern=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int) -> tuple[int, bytes]:
    """One request over a fresh connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        request = loadgen.request_bytes(port, BODY)
        s.sendall(request.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


@contextlib.contextmanager
def servers(names: tuple[str, ...]):
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in names:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.server", "--variant", name, "--port", str(port)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            procs[name] = (proc, port)
        deadline = time.monotonic() + 30
        for name, (proc, port) in procs.items():
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"server {name} exited: {err[-2000:]}")
                try:
                    status, body = probe(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server {name} did not start") from None
                    time.sleep(0.1)
            if status != 200 or b'"isError":false' not in body:
                raise RuntimeError(f"server {name}: {status} {body[:300]!r}")
        yield {name: port for name, (_proc, port) in procs.items()}
    finally:
        for proc, _port in procs.values():
            proc.terminate()
        for proc, _port in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "asyncio-loadgen"


def _load(tool: str, port: int, duration: float, connections: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_BODY": BODY.decode()}
    if tool == "wrk":
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "-s",
            str(HERE / "tools_call.lua"),
            f"http://127.0.0.1:{port}/mcp",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def run(
    *, rounds: int, duration: float, warmup: float, connections: int, progress: Any = None
) -> list[dict[str, Any]]:
    tool = load_generator()
    names = variants.NETWORK_VARIANTS
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with servers(names) as ports:
        for name in names:
            if progress:
                progress(f"network: warm-up {name}")
            _load(tool, ports[name], warmup, connections)
        for r in range(rounds):
            for name in names:
                if progress:
                    progress(f"network: round {r + 1}/{rounds} {name}")
                runs[name].append(_load(tool, ports[name], duration, connections))
    base = [x["rps"] for x in runs["bare"]]
    rows = []
    for name in names:
        rps = [x["rps"] for x in runs[name]]
        errors = sum(
            x["errors_status"] + x["errors_connect"] + x["errors_read"] + x["errors_timeout"]
            for x in runs[name]
        )
        row: dict[str, Any] = {
            "section": "network",
            "case": "uvicorn, modern tools/call -> JSON",
            "variant": name,
            "unit": "req/s",
            **stats.summary(rps),
            "samples": [round(x, 1) for x in rps],
            "p50_ms": statistics.median(x["p50_us"] for x in runs[name]) / 1e3,
            "p90_ms": statistics.median(x["p90_us"] for x in runs[name]) / 1e3,
            "p99_ms": statistics.median(x["p99_us"] for x in runs[name]) / 1e3,
            "errors": errors,
            "load_generator": tool,
            "connections": connections,
            "seconds_per_run": duration,
        }
        if name != "bare":
            row.update(stats.paired(rps, base))
            row.pop("overhead_min", None)
            row.pop("overhead_max", None)
            row["overhead"] = None
        if name == "ours":
            row["target"] = ">= 0.99"
            row["met"] = row["ratio"] >= 0.99
        rows.append(row)
    return rows
