"""Where the middleware's per-request time goes, on the stub cases.

    python -m benchmarks.profile                 # stub json and stub sse
    python -m benchmarks.profile --case "stub sse" -n 20000 --top 30

Two views:

* ablation, unprofiled: the overhead against bare with parts of the middleware switched off
  one after another (each step also keeps the previous ones off), so the differences are what
  each part costs in place, with the caches as cold as they really are;
* cProfile: the middleware's functions by own time per request. cProfile inflates every call
  (here by about 4x), so read it for shares and call counts, not absolute µs.

The ablation patches internals by name (the recorder's observer methods, the model's
``decode``, the adapter's ``HTTPExchange``); steps whose names no longer exist are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from typing import Any

from benchmarks import cases

WATCH = ("mcp_metrics_middleware", "prometheus_client", "orjson", "benchmarks/variants")


async def _unprofiled(case: cases.Case, n: int) -> dict[str, float]:
    out = {}
    for variant in ("bare", "ours"):
        async with cases.prepared(case, variant) as (_app, call_one, _check):
            for _ in range(n):
                await call_one()
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n):
                    await call_one()
                best = min(best, (time.perf_counter() - t0) / n * 1e6)
            out[variant] = best
    return out


class _Tap:
    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> Any:
        return await self._receive()

    async def send(self, message: Any) -> None:
        await self._send(message)


class TapOnly:
    """The floor of any tapping middleware: a per-request object with async passthroughs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tap = _Tap(receive, send)
        await self.app(scope, tap.receive, tap.send)


async def _paired(make_variant: Any, shape: str, n: int, rounds: int) -> float:
    """Median over rounds of (variant - bare) µs per request, alternated."""
    from benchmarks import asgi, stub

    headers, body = stub.request_for(shape)
    bare = stub.build_app(shape)
    other = make_variant(stub.build_app(shape))
    for _ in range(n):
        await asgi.call(bare, headers, body)
        await asgi.call(other, headers, body)
    diffs = []
    perf = time.perf_counter
    for _ in range(rounds):
        t0 = perf()
        for _ in range(n):
            await asgi.call(bare, headers, body)
        t1 = perf()
        for _ in range(n):
            await asgi.call(other, headers, body)
        t2 = perf()
        diffs.append(((t2 - t1) - (t1 - t0)) / n * 1e6)
    return statistics.median(diffs)


class _NoExchange:
    """An HTTPExchange that does nothing: what is left is the ASGI adapter alone."""

    complete = False

    def __init__(self, *args: Any) -> None:
        pass

    def request_body(self, *args: Any) -> None:
        pass

    def response_start(self, *args: Any) -> None:
        pass

    def response_body(self, *args: Any) -> None:
        pass

    def disconnected(self, *args: Any) -> None:
        pass

    def end(self, *args: Any) -> None:
        pass


def ablation(shape: str, n: int = 3000, rounds: int = 9) -> list[tuple[str, float]]:
    """(step, overhead µs) with the layers of the middleware switched off cumulatively.

    Each step removes one layer's work, from the far end of the data flow back to the tap:
    the recorder (every observer event dropped), JSON decoding (memoised per body), the
    message handling of the model (no messages come out of decoding), the rest of the exchange
    model (headers, response start, settlement, end), then the adapter (routing, the tap,
    the disconnect watch list). The differences are what each layer costs in place.
    """
    import importlib

    from benchmarks import variants

    # A step whose module or name is gone (the code moved) is skipped, never an error.
    def module(name: str) -> Any:
        try:
            return importlib.import_module(name)
        except ImportError:
            return None

    metrics_module = module("mcp_metrics_middleware.metrics")
    model_module = module("mcp_metrics_middleware.protocol.model")
    mw_module = module("mcp_metrics_middleware.middleware")

    def ours(app: Any) -> Any:
        return variants.wrap("ours", app)

    steps: list[tuple[str, float]] = []
    undo: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> bool:
        if obj is None or not hasattr(obj, name):
            return False
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
        return True

    def nothing(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    try:
        steps.append(("ours, as is", asyncio.run(_paired(ours, shape, n, rounds))))
        recorder = getattr(metrics_module, "MCPMetrics", None)
        events = (
            "operation_started",
            "operation_finished",
            "operation_withdrawn",
            "message",
            "names_listed",
            "session_started",
            "session_ended",
            "http_request",
        )
        if recorder is not None and all([patch(recorder, name, nothing) for name in events]):
            steps.append(("- the recorder (labels, store, log check)", asyncio.run(_paired(ours, shape, n, rounds))))
        real_decode = getattr(model_module, "decode", None)
        if real_decode is not None:
            cache: dict[tuple[bytes, str], Any] = {}

            def cached(payload: Any, era: str = "server") -> Any:
                key = (bytes(payload), era)
                if key not in cache:
                    cache[key] = real_decode(payload, era)
                return cache[key]

            patch(model_module, "decode", cached)
            steps.append(
                ("- JSON decoding (orjson + classify), memoised", asyncio.run(_paired(ours, shape, n, rounds)))
            )
            patch(model_module, "decode", lambda payload, era="server": ([], None))
            steps.append(
                (
                    "- message handling (correlation, operations, outcomes)",
                    asyncio.run(_paired(ours, shape, n, rounds)),
                )
            )
        if patch(mw_module, "HTTPExchange", _NoExchange):
            steps.append(
                (
                    "- the rest of the exchange model (headers, SSE chunks, settle, end)",
                    asyncio.run(_paired(ours, shape, n, rounds)),
                )
            )
        steps.append(
            (
                "tap only (per-request object, async passthroughs)",
                asyncio.run(_paired(TapOnly, shape, n, rounds)),
            )
        )
        steps.append(("no-op wrapper", asyncio.run(_paired(variants.NoopMiddleware, shape, n, rounds))))
    finally:
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)
    return steps


async def _profiled(case: cases.Case, n: int) -> pstats.Stats:
    async with cases.prepared(case, "ours") as (_app, call_one, _check):
        for _ in range(n):
            await call_one()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await call_one()
        prof.disable()
    return pstats.Stats(prof)


def breakdown(stats: pstats.Stats, n: int, top: int) -> list[dict[str, Any]]:
    rows = []
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = path if path.startswith("<") else path.split("site-packages/")[-1]
        # Builtins ("~") cannot be told apart by caller; keep only orjson's.
        if not (any(w in path for w in WATCH) or (path.startswith("~") and "orjson" in func)):
            continue
        rows.append(
            {
                "function": f"{where.split('/work/main/')[-1]}:{line}({func})",
                "calls_per_req": calls / n,
                "own_us": tottime / n * 1e6,
                "cum_us": cumtime / n * 1e6,
            }
        )
    rows.sort(key=lambda r: r["own_us"], reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", action="append", choices=sorted(cases.CASE_BY_NAME))
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-ablation", action="store_true")
    args = parser.parse_args()
    for name in args.case or ["stub json", "stub sse"]:
        case = cases.CASE_BY_NAME[name]
        plain = asyncio.run(_unprofiled(case, args.n // 4))
        stats = asyncio.run(_profiled(case, args.n))
        total = sum(v[2] for v in stats.stats.values()) / args.n * 1e6  # type: ignore[attr-defined]
        print(
            f"\n== {name}: unprofiled bare {plain['bare']:.1f} µs, ours {plain['ours']:.1f} µs "
            f"(+{plain['ours'] - plain['bare']:.1f} µs); profiled total {total:.1f} µs/req"
        )
        if case.app == "stub" and not args.no_ablation:
            shape = name.split()[-1]
            print("ablation (unprofiled, overhead vs bare, µs/request):")
            previous = None
            for step, value in ablation(shape):
                delta = "" if previous is None else f"  (step: {value - previous:+.2f})"
                print(f"  {value:7.2f}  {step}{delta}")
                previous = value
        print(f"cProfile ({args.n} requests), per request:")
        print(f"{'own µs':>8} {'cum µs':>8} {'calls':>6}  function")
        for row in breakdown(stats, args.n, args.top):
            print(
                f"{row['own_us']:8.2f} {row['cum_us']:8.2f} {row['calls_per_req']:6.1f}  "
                f"{row['function']}"
            )


if __name__ == "__main__":
    main()
