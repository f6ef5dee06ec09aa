"""Bytecodes the middleware executes per request: a cost measure that a noisy machine cannot move.

    python -m benchmarks.bytecodes                    # the working tree
    python -m benchmarks.bytecodes 9be98e7 f46786c    # and other commits, side by side
    python -m benchmarks.bytecodes --top 15           # the functions that execute the most

Time on a shared VM drifts by 2x within minutes; the number of bytecodes a request executes does
not. It is counted with ``sys.settrace`` and ``f_trace_opcodes`` over a block of requests, on the
same minimal SDK-shaped apps as ``benchmarks.against`` (a JSON answer; two progress events and
the result over SSE), less what the bare app executes. Recorders that batch their work (ours
folds every 256 events; older code flushed every 4,096 records) are emptied before the count
and once more inside it, so each count includes all the recording of its requests and nothing
else. It leaves out what C code does (orjson,
dict and set operations), so it is a proxy for time, not a measure of it: read it next to
``benchmarks.against``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
from types import FrameType
from typing import Any

from benchmarks.against import SCOPE, _receive, _send, json_app, load_commit, sse_app, wrap

N = 512  # requests per count


def count(app: Any, n: int = N) -> tuple[float, collections.Counter[tuple[str, str]]]:
    """(bytecodes per request, per (file, function) totals) for ``n`` requests to ``app``."""

    metrics = getattr(app, "metrics", None)
    # The recorder's batch, done at once: fold() now, the store's flush() in the code before
    # the sans-IO rewrite.
    store = getattr(metrics, "store", None)
    settle = getattr(metrics, "fold", None) or getattr(store, "flush", None) or (lambda: None)

    async def run(k: int) -> None:
        for _ in range(k):
            await app(SCOPE, _receive, _send)
        settle()

    asyncio.run(run(n))  # warm-up: caches filled, tools known, the batch emptied
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename.rsplit("/", 1)[-1], code.co_name)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        asyncio.run(run(n))
    finally:
        sys.settrace(None)
    return sum(counts.values()) / n, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", help="git commits or tags to count next to the working tree")
    parser.add_argument("--top", type=int, default=0, help="show the working tree's busiest functions")
    parser.add_argument("-n", type=int, default=N, help="requests per count")
    args = parser.parse_args(argv)
    from mcp_metrics_middleware import MCPMetricsMiddleware

    try:
        variants = {"ours": MCPMetricsMiddleware, **{rev: load_commit(rev) for rev in args.revs}}
    except subprocess.CalledProcessError as exc:
        print(f"benchmarks.bytecodes: git failed: {' '.join(exc.cmd)}", file=sys.stderr)
        return 2
    for case, app in (("json", json_app), ("sse", sse_app)):
        bare, _ = count(app, args.n)
        added = {name: count(wrap(mw, app), args.n)[0] - bare for name, mw in variants.items()}
        line = "  ".join(f"{name} +{value:,.0f}" for name, value in added.items())
        print(f"{case}: bytecodes added per request: {line}")
        if args.top:
            _, counts = count(wrap(MCPMetricsMiddleware, app), args.n)
            for (filename, function), total in counts.most_common(args.top):
                print(f"    {total / args.n:8.1f}  {filename}:{function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
