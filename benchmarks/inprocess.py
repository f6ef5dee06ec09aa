"""In-process ASGI benchmark: every variant of one case, alternated in rounds.

Each round runs every variant once (a block of back-to-back requests), and the order is rotated
by one each round, so no variant always follows the same neighbour (cache state, GC debt). The
figures are medians over rounds; "added" is the median of the per-round differences against
bare, and ``share_of_instrumentator`` the median of the per-round ratios of ours' added cost to
prometheus-fastapi-instrumentator's.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
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
        order = list(names)
        for _ in range(rounds):
            for variant in order:
                samples[variant].append(await _block(calls[variant], iterations))
            order = order[1:] + order[:1]  # rotate: each variant leads in turn
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
        if variant in notes:
            row["note"] = notes[variant]
        rows.append(row)
    by_variant = {r["variant"]: r for r in rows}
    ours_added = [o - b for o, b in zip(samples["ours"], base, strict=True)]
    for peer, key in (
        ("instrumentator", "share_of_instrumentator"),
        ("starlette-exporter", "share_of_starlette_exporter"),
    ):
        peer_added = [p - b for p, b in zip(samples[peer], base, strict=True)]
        shares = [o / p for o, p in zip(ours_added, peer_added, strict=True) if p > 0]
        # Two figures: the median of per-round shares, and the share of the medians.
        by_variant["ours"][key] = statistics.median(shares) if shares else None
        by_variant["ours"][key + "_of_medians"] = (
            by_variant["ours"]["overhead"] / by_variant[peer]["overhead"]
            if by_variant[peer]["overhead"] > 0
            else None
        )
    ours = by_variant["ours"]
    if case.target_share is not None:
        ours["target"] = f"<= {case.target_share:.2f} x instrumentator"
        share = ours["share_of_instrumentator"]
        ours["met"] = share is not None and share <= case.target_share
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
