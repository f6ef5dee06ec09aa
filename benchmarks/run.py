"""``make bench``: the rows issue 11 asks for; one table, one JSON file.

Sections: in-process (ours, bare, a no-op wrapper and the two peers, alternated with the order
rotated each round: real MCPServer 2026-07-28 JSON, real handshake session SSE, stub JSON, stub
SSE), sse-decoding (MB/s per framing), scrape (tools/call p50/p99 with and without a scraper,
20,000 series), network (uvicorn + wrk, with its spread), streams (the middleware on large
responses: MB/s and extra peak memory), proxy (tools/call p50/p99 through ``mcp-metrics proxy``
vs direct, alternated; no rows, and the reason in the meta, when the proxy is missing).

    python -m benchmarks.run            # full run, a few minutes
    python -m benchmarks.run --quick    # under a minute
    python -m benchmarks.run --smoke    # seconds; every row, meaningless numbers (tests)

Writes benchmarks/results/latest.json unless --output says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import inprocess, network, proxy_row, report, scrape, sse_decode, streams

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
SECTIONS = ("in-process", "sse-decoding", "scrape", "network", "streams", "proxy")

MODES: dict[str, dict[str, Any]] = {
    "full": {
        "in-process": dict(
            stub_rounds=21, stub_iterations=2000, real_rounds=15, real_iterations=150
        ),
        "sse-decoding": dict(rounds=9, repeat=3, events=10_000),
        "scrape": dict(rounds=3, duration=4.0, series=20_000),
        "network": dict(rounds=8, duration=4.0, warmup=2.0, connections=8),
        "streams": dict(events=10_000, json_mb=20, under_cap_mb=4, rounds=7, iterations=3),
        "proxy": dict(rounds=8, duration=4.0),
    },
    "quick": {
        "in-process": dict(stub_rounds=7, stub_iterations=500, real_rounds=5, real_iterations=30),
        "sse-decoding": dict(rounds=3, repeat=2, events=10_000),
        "scrape": dict(rounds=1, duration=2.0, series=20_000),
        "network": dict(rounds=2, duration=2.0, warmup=1.0, connections=8),
        "streams": dict(events=10_000, json_mb=20, under_cap_mb=4, rounds=3, iterations=1),
        "proxy": dict(rounds=2, duration=2.0),
    },
    "smoke": {
        "in-process": dict(stub_rounds=2, stub_iterations=20, real_rounds=2, real_iterations=3),
        "sse-decoding": dict(rounds=1, repeat=1, events=300),
        "scrape": dict(rounds=1, duration=0.3, series=2_000),
        "network": dict(rounds=1, duration=1.0, warmup=1.0, connections=4),
        "streams": dict(events=200, json_mb=1, under_cap_mb=0.5, rounds=1, iterations=1),
        "proxy": dict(rounds=1, duration=1.0),
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="under a minute")
    mode.add_argument("--smoke", action="store_true", help="tiny: checks every row is produced")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    params = MODES[mode_name]
    sections = args.only or list(SECTIONS)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"  ... {message}", file=sys.stderr, flush=True)

    load_before = report.loadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "in-process" in sections:
        rows += asyncio.run(inprocess.run(**params["in-process"], progress=progress))
    if "sse-decoding" in sections:
        progress("sse-decoding")
        rows += sse_decode.run(**params["sse-decoding"])
    if "scrape" in sections:
        rows += asyncio.run(scrape.run(**params["scrape"], progress=progress))
    if "network" in sections:
        rows += network.run(**params["network"], progress=progress)
    if "streams" in sections:
        rows += asyncio.run(streams.run(**params["streams"], progress=progress))
    if "proxy" in sections:
        # The hook for "proxy adds per tools/call (p50, p99) vs a direct connection".
        rows += proxy_row.run(**params["proxy"], progress=progress)
    elapsed = time.perf_counter() - started

    meta = report.machine()
    meta.update(
        mode=mode_name,
        parameters={s: params[s] for s in sections},
        load_generator=network.load_generator() if "network" in sections else None,
        proxy_skipped=proxy_row.skipped() if "proxy" in sections else None,
        seconds=round(elapsed, 1),
        loadavg_1m_before=load_before,
    )
    print(
        f"mcp-metrics-middleware benchmark ({mode_name}), {meta['date']}, "
        f"{meta['nproc']} x {meta['cpu']}, Python {meta['python']}, "
        f"load generator: {meta['load_generator'] or '-'}, {elapsed:.0f} s, "
        f"loadavg {load_before} -> {meta['loadavg_1m']}"
    )
    print(report.table(rows, markdown=args.markdown))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(args.output)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
