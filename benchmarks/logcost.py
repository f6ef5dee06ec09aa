"""What the per-operation log line costs the recorder: disabled (the default), and enabled.

    python -m benchmarks.logcost [--iterations N] [--rounds R]

Times ``operation_started`` + ``operation_finished`` of one traced ``tools/call`` on a fresh
registry (best of R rounds of N operations), with the ``mcp_metrics`` logger

* disabled for INFO (Python's default: the library only adds a NullHandler),
* enabled, writing to a NullHandler only (the line is built, then dropped),

and the ``isEnabledFor(INFO)`` check on its own, which is all the disabled path adds.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from mcp_metrics_middleware import MCPMetrics
from mcp_metrics_middleware.logs import logger
from mcp_metrics_middleware.protocol.jsonrpc import REQUEST, RESPONSE
from mcp_metrics_middleware.protocol.model import Operation


def best_ns(fn: Callable[[int], None], iterations: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter_ns()
        fn(iterations)
        best = min(best, (time.perf_counter_ns() - started) / iterations)
    return best


def recorder_loop() -> Callable[[int], None]:
    metrics = MCPMetrics(CollectorRegistry())
    metrics.learn_tools(["sharpen_claw"])
    op = Operation("tools/call", "sharpen_claw", REQUEST, 0.0, 60, "2026-07-28", "tcp")
    op.client_name, op.client_version = "cat-client", "9.9.9"
    op.trace_id, op.span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    started, finished = metrics.operation_started, metrics.operation_finished

    def run(n: int) -> None:
        for _ in range(n):
            started(op)
            op.end = 0.003
            op.answer_kind = RESPONSE
            op.response_size = 120
            finished(op)

    return run


def check_loop(n: int) -> None:
    enabled = logger.isEnabledFor
    for _ in range(n):
        enabled(logging.INFO)


def empty_loop(n: int) -> None:
    for _ in range(n):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, r = args.iterations, args.rounds

    level, propagate = logger.level, logger.propagate
    try:
        logger.setLevel(logging.WARNING)
        disabled = best_ns(recorder_loop(), n, r)
        check = best_ns(check_loop, n, r) - best_ns(empty_loop, n, r)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # NullHandler only: the cost of building the record
        enabled = best_ns(recorder_loop(), n, r)
    finally:
        logger.setLevel(level)
        logger.propagate = propagate
    print(f"recorder, one traced tools/call, logger disabled: {disabled:8.0f} ns/op")
    print(f"  of which the isEnabledFor(INFO) check:           {check:8.0f} ns/op ({100 * check / disabled:.1f}%)")
    print(f"recorder, logger enabled (NullHandler only):       {enabled:8.0f} ns/op")
    print(f"  the log line when enabled:                       {enabled - disabled:8.0f} ns/op")


if __name__ == "__main__":
    main()
