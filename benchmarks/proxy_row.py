"""The row "proxy adds per tools/call (p50, p99) vs a direct connection", for ``make bench``.

``benchmarks/proxy.py`` (the proxy author's script) starts the upstream (the SDK cat server,
stateless, JSON answers) and ``mcp-metrics proxy`` in front of it, and times sequential
``tools/call`` POSTs over one keep-alive connection. Here the same helpers run in alternated
rounds (direct, proxied, then proxied, direct, ...), and the rows carry the per-round p50/p99
and the paired differences. When the proxy or its script is missing, no rows are produced and
``skipped()`` says why (recorded in latest.json's meta), so ``make bench`` never fails on it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

CASE = "proxy adds per tools/call (p50, p99) vs a direct connection"


def skipped() -> str | None:
    """Why the proxy row cannot run, or None when it can."""
    try:
        import mcp_metrics_middleware.proxy  # noqa: F401
    except ImportError:
        return "mcp-metrics proxy not built (mcp_metrics_middleware.proxy is missing)"
    try:
        from benchmarks import proxy
    except ImportError as exc:
        return f"benchmarks/proxy.py cannot be imported: {exc}"
    for name in ("measure", "_port", "_wait", "UPSTREAM", "ROOT"):
        if not hasattr(proxy, name):
            return f"benchmarks/proxy.py has no {name}"
    return None


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(*, rounds: int, duration: float, progress: Any = None) -> list[dict[str, Any]]:
    reason = skipped()
    if reason is not None:
        if progress:
            progress(f"proxy: skipped ({reason})")
        return []
    from benchmarks import proxy

    up, px = proxy._port(), proxy._port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", proxy.UPSTREAM.format(root=str(proxy.ROOT), port=up)],
        cwd=proxy.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the SDK logs a line per stateless request
    )
    front = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_metrics_middleware.cli",
            "proxy",
            "--upstream",
            f"http://127.0.0.1:{up}/mcp",
            "--listen",
            f"127.0.0.1:{px}",
            "--no-discover-tools",
        ],
        cwd=proxy.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    urls = {"direct": f"http://127.0.0.1:{up}/mcp", "proxied": f"http://127.0.0.1:{px}/mcp"}
    samples: dict[str, list[dict[str, float]]] = {"direct": [], "proxied": []}
    try:
        proxy._wait(up)
        proxy._wait(px)
        order = ["direct", "proxied"]
        for r in range(rounds):
            for name in order:
                if progress:
                    progress(f"proxy: round {r + 1}/{rounds} {name}")
                # Bounded by time: calls=10**6 never binds; measure() warms up 50 calls first.
                values = [v * 1e3 for v in proxy.measure(urls[name], 10**6, duration)]
                samples[name].append(
                    {"p50_ms": _pct(values, 50), "p99_ms": _pct(values, 99), "calls": len(values)}
                )
            order.reverse()
    finally:
        for proc in (front, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    rows = []
    for name in ("direct", "proxied"):
        p50 = [s["p50_ms"] for s in samples[name]]
        p99 = [s["p99_ms"] for s in samples[name]]
        row: dict[str, Any] = {
            "section": "proxy",
            "case": CASE,
            "variant": name,
            "unit": "ms p50",
            "median": statistics.median(p50),
            "min": min(p50),
            "max": max(p50),
            "p99_ms": statistics.median(p99),
            "p99_min": min(p99),
            "p99_max": max(p99),
            "samples": samples[name],
        }
        if name == "proxied":
            direct = samples["direct"]
            row["added_p50_ms"] = statistics.median(
                s["p50_ms"] - d["p50_ms"] for s, d in zip(samples[name], direct, strict=True)
            )
            row["added_p99_ms"] = statistics.median(
                s["p99_ms"] - d["p99_ms"] for s, d in zip(samples[name], direct, strict=True)
            )
        rows.append(row)
    return rows
