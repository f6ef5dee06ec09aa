"""``/metrics`` under a scrape loop: tools/call latency with and without a concurrent scraper.

The real ``MCPServer`` (2026-07-28 ``tools/call`` -> JSON) runs in process under ours, with
20,000 extra series in the same registry, so every scrape renders all of them. A round is a
fixed time of calls, each timed (p50, p99), alone or with a scraper task on the same event loop
that GETs ``/metrics`` (through the middleware, as Prometheus would) back to back. The two modes
alternate, the order rotated each round. Only the public API is used.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from prometheus_client import Gauge

from benchmarks import asgi, cases, wire

SERIES = 20_000


def _inflate(registry: Any, series: int) -> None:
    gauge = Gauge(
        "bench_extra_series",
        "Series that make a scrape as large as a busy server's.",
        ["shard", "item"],
        registry=registry,
    )
    for i in range(series):
        gauge.labels(str(i % 97), f"item-{i}").set(i)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _round(call_one: Any, app: Any, duration: float, scraping: bool) -> dict[str, Any]:
    stop = False
    scrapes = 0
    scrape_bytes = 0
    headers = [(b"host", wire.HOST), (b"accept", b"text/plain")]

    async def scraper() -> None:
        nonlocal scrapes, scrape_bytes
        while not stop:
            ex = await asgi.call_path(app, headers, "/metrics")
            scrapes += 1
            scrape_bytes = sum(map(len, ex.chunks or []))
            await asyncio.sleep(0)

    task = asyncio.create_task(scraper()) if scraping else None
    await asyncio.sleep(0)
    latencies = []
    perf = time.perf_counter
    t_start = perf()
    until = t_start + duration
    while perf() < until or len(latencies) < 5:
        t0 = perf()
        await call_one()
        latencies.append((perf() - t0) * 1e3)
        await asyncio.sleep(0)  # let the scraper in between calls, as a second client would
    elapsed = perf() - t_start
    stop = True
    if task is not None:
        await task
    return {
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "scrapes_per_s": scrapes / elapsed,
        "scrape_bytes": scrape_bytes,
        "calls": len(latencies),
    }


async def run(
    *, rounds: int, duration: float, series: int = SERIES, progress: Any = None
) -> list[dict[str, Any]]:
    case = cases.CASE_BY_NAME["real modern json"]
    samples: dict[str, list[dict[str, Any]]] = {"alone": [], "scraped": []}
    async with cases.prepared(case, "ours") as (app, call_one, check_one):
        problem = cases.check(case, await check_one())
        if problem:
            raise RuntimeError(f"scrape: {problem}")
        _inflate(app.bench_registry, series)
        for _ in range(50):  # warm-up
            await call_one()
        ex = await asgi.call_path(app, [(b"host", wire.HOST)], "/metrics", keep=True)
        body = b"".join(ex.chunks or [])
        if ex.status != 200 or b"bench_extra_series" not in body:
            raise RuntimeError(f"scrape: /metrics answered {ex.status}")
        exposed = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        order = ["alone", "scraped"]
        for r in range(rounds):
            if progress:
                progress(f"scrape: round {r + 1}/{rounds}")
            for mode in order:
                samples[mode].append(await _round(call_one, app, duration, mode == "scraped"))
            order.reverse()
    rows = []
    for mode in ("alone", "scraped"):
        p50 = [s["p50_ms"] for s in samples[mode]]
        p99 = [s["p99_ms"] for s in samples[mode]]
        row: dict[str, Any] = {
            "section": "scrape",
            "case": "real modern json tools/call, /metrics with "
            f"{exposed:,} series ({len(body) / 1e6:.1f} MB)",
            "variant": f"ours, {'with a scraper looping' if mode == 'scraped' else 'no scraper'}",
            "unit": "ms p50",
            "median": statistics.median(p50),
            "min": min(p50),
            "max": max(p50),
            "p99_ms": statistics.median(p99),
            "p99_min": min(p99),
            "p99_max": max(p99),
            "samples": samples[mode],
            "series_exposed": exposed,
            "scrape_bytes": len(body),
            "seconds_per_round": duration,
        }
        if mode == "scraped":
            row["scrapes_per_s"] = statistics.median(s["scrapes_per_s"] for s in samples[mode])
            alone = rows[0]
            row["ratio"] = row["median"] / alone["median"]
            row["p99_ratio"] = row["p99_ms"] / alone["p99_ms"]
        rows.append(row)
    return rows
