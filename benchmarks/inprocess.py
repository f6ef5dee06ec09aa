"""In-process ASGI benchmark: every variant of one case, alternated A B C ... in rounds."""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Any

from benchmarks import cases, stats, variants


async def _block(call_one: Any, n: int) -> float:
    """Mean µs per request over ``n`` back-to-back requests."""
    gc.collect()
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        await call_one()
    return (perf() - t0) / n * 1e6


async def run_case(
    case: cases.Case, *, rounds: int, iterations: int, warmup: int
) -> list[dict[str, Any]]:
    """Rows for one case: one per variant, with paired overhead against bare."""
    names = variants.VARIANTS
    samples: dict[str, list[float]] = {v: [] for v in names}
    notes: dict[str, str] = {}
    calls: dict[str, Any] = {}
    apps: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for variant in names:
            app, call_one, check_one = await stack.enter_async_context(
                cases.prepared(case, variant)
            )
            problem = cases.check(case, await check_one())
            if problem:
                raise RuntimeError(f"{case.name} / {variant}: {problem}")
            apps[variant] = app
            calls[variant] = call_one
        for variant in names:  # warm-up: caches, label children, code paths
            await _block(calls[variant], warmup)
        for _ in range(rounds):
            for variant in names:
                samples[variant].append(await _block(calls[variant], iterations))
        recorded = cases.ours_recorded(apps["ours"])
        expected = 1 + warmup + rounds * iterations
        if recorded is not None and recorded < expected:
            notes["ours"] = f"recorded {recorded:.0f} of {expected} operations"
    rows = []
    base = samples["bare"]
    for variant in names:
        row: dict[str, Any] = {
            "section": "in-process",
            "case": case.name,
            "variant": variant,
            "unit": "µs/req",
            **stats.summary(samples[variant]),
            "samples": [round(s, 3) for s in samples[variant]],
        }
        if variant != "bare":
            row.update(stats.paired(samples[variant], base))
            if variant == "ours":
                if case.target_us is not None:
                    row["target"] = f"<= {case.target_us:g} µs"
                    row["met"] = row["overhead"] <= case.target_us
                elif case.target_pct is not None:
                    row["target"] = f"<= {case.target_pct:g}%"
                    row["met"] = (row["ratio"] - 1) * 100 <= case.target_pct
        if variant in notes:
            row["note"] = notes[variant]
        rows.append(row)
    peers = [r["overhead"] for r in rows if r["variant"] in variants.PEERS]
    cheapest = min(peers)
    for row in rows:
        if row["variant"] == "ours" and cheapest > 0:
            # The relative target: at most a fifth of the cheapest peer.
            row["share_of_cheapest_peer"] = row["overhead"] / cheapest
    return rows


async def run(
    *,
    stub_rounds: int,
    stub_iterations: int,
    real_rounds: int,
    real_iterations: int,
    progress: Any = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases.CASES:
        if progress:
            progress(f"in-process: {case.name}")
        if case.app == "stub":
            rows += await run_case(
                case, rounds=stub_rounds, iterations=stub_iterations, warmup=stub_iterations
            )
        else:
            rows += await run_case(
                case, rounds=real_rounds, iterations=real_iterations, warmup=real_iterations
            )
    return rows
