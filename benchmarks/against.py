"""The middleware's added cost per request, alternated against its own code at other commits.

    python -m benchmarks.against 9be98e7 a38e41d           # the working tree vs two commits
    python -m benchmarks.against v0.2.0 --rounds 41
    python -m benchmarks.against --layers               # where this code's time goes

Each commit's package is extracted with ``git archive`` into a temporary directory and imported
under another name, so every version runs in this one process. The apps are minimal ASGI
callables shaped like the Python SDK's answers (a JSON body; two progress events and the result
over SSE), driven without a server: the figures are the middleware's own work, not an app's.
Each round runs a block of requests per variant (bare first, the order rotated every round);
the result is the median of the per-round differences against bare and, per commit, the median
and quartiles of the per-round ratios ours/theirs, and the ratio of the best blocks (each
variant's fastest block less bare's fastest: noise only ever adds time, so on a shared machine
this is the steadiest estimate of the code's own cost). Read the ratios, not the µs.

``--layers`` adds two variants built through the public API: a passthrough tap (what any
middleware that wraps receive and send costs) and ours with a recorder that records nothing (a
``metrics=`` subclass whose observer methods do nothing), and splits ours' best block into the
tap, the adapter and core on top of it, and the recorder.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mcp_metrics_middleware"

CALL = orjson.dumps(
    {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "sharpen_claw", "arguments": {"level": 3}}}
)
RESULT = orjson.dumps(
    {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "ok"}], "isError": False}}
)
PROGRESS = orjson.dumps(
    {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7, "progress": 1}}
)
SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/mcp",
    "root_path": "",
    "headers": [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", b"2026-07-28"),
        (b"mcp-method", b"tools/call"),
        (b"mcp-name", b"sharpen_claw"),
    ],
}
REQUEST = {"type": "http.request", "body": CALL, "more_body": False}


def _event(payload: bytes) -> bytes:
    return b"event: message\r\ndata: " + payload + b"\r\n\r\n"


async def json_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(RESULT)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": RESULT})


async def sse_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for chunk in (_event(PROGRESS), _event(PROGRESS), _event(RESULT)):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _receive() -> Any:
    return REQUEST


async def _send(message: Any) -> None:
    pass


def load_commit(rev: str) -> Any:
    """``MCPMetricsMiddleware`` as it was at ``rev``, imported as its own package."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True)
    name = f"{PACKAGE}_{re.sub(r'[^0-9a-zA-Z]', '_', sha.stdout.strip())}"
    archive = subprocess.run(["git", "archive", rev, PACKAGE], cwd=ROOT, capture_output=True, check=True).stdout
    target = Path(tempfile.mkdtemp(prefix="against-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    (target / PACKAGE).rename(target / name)
    for path in (target / name).rglob("*.py"):
        path.write_text(re.sub(rf"\b{PACKAGE}\b", name, path.read_text()))
    sys.path.insert(0, str(target))
    return importlib.import_module(name).MCPMetricsMiddleware


def wrap(middleware: Any, app: Any) -> Any:
    try:
        return middleware(app, registry=CollectorRegistry(), known_tools=["sharpen_claw"], discover_tools=False)
    except TypeError:  # before discover_tools existed
        return middleware(app, registry=CollectorRegistry(), known_tools=["sharpen_claw"])


async def _block(app: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await app(SCOPE, _receive, _send)
    return (time.perf_counter() - start) / n * 1e6


class _Tap:
    """A passthrough tap: a per-request object wrapping receive and send, and nothing else."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tap_receive() -> Any:
            return await receive()

        async def tap_send(message: Any) -> None:
            await send(message)

        await self.app(scope, tap_receive, tap_send)


def _no_recording(app: Any) -> Any:
    """Ours, with a recorder (``metrics=``) whose observer methods do nothing."""
    from mcp_metrics_middleware import MCPMetrics, MCPMetricsMiddleware

    class NoRecording(MCPMetrics):
        def _nothing(self, *args: Any, **kwargs: Any) -> None:
            return None

        operation_started = operation_finished = operation_withdrawn = message = _nothing
        names_listed = session_started = session_ended = http_request = _nothing
        parse_error = near_miss = invalid_trace_context = _nothing

    return MCPMetricsMiddleware(app, metrics=NoRecording(CollectorRegistry()), discover_tools=False)


async def compare(revs: list[str], rounds: int, n: int, layers: bool = False) -> None:
    from mcp_metrics_middleware import MCPMetricsMiddleware

    others = {rev: load_commit(rev) for rev in revs}
    for case, app in (("json", json_app), ("sse", sse_app)):
        variants: dict[str, Any] = {"bare": app, "ours": wrap(MCPMetricsMiddleware, app)}
        variants.update({rev: wrap(mw, app) for rev, mw in others.items()})
        if layers:
            variants["tap"] = _Tap(app)
            variants["no recording"] = _no_recording(app)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for variant in variants.values():
            await _block(variant, n // 2)  # warm-up
        names = list(variants)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                samples[name].append(await _block(variants[name], n))
        bare = samples["bare"]
        added = {name: [x - b for x, b in zip(samples[name], bare, strict=True)] for name in names[1:]}
        line = [f"{case}: bare {statistics.median(bare):.2f} µs/req; added per request:"]
        line += [f"{name} +{statistics.median(values):.2f} µs" for name, values in added.items()]
        print("  ".join(line))
        # Each variant's fastest block: noise on a shared machine only ever adds time, so the
        # best block is the steadiest estimate of what the code itself costs.
        best = {name: min(samples[name]) - min(bare) for name in names[1:]}
        print("    best blocks, added per request: " + "  ".join(f"{k} +{v:.2f} µs" for k, v in best.items()))
        if layers:
            tap, core, ours = best["tap"], best["no recording"], best["ours"]
            print(
                f"    layers of ours (best blocks): the tap +{tap:.2f} µs, adapter and core +{core - tap:.2f} µs,"
                f" the recorder +{ours - core:.2f} µs"
            )
        for rev in revs:
            ratios = [a / b for a, b in zip(added["ours"], added[rev], strict=True)]
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            print(
                f"    ours / {rev}: {statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f});"
                f" best blocks {best['ours'] / best[rev]:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", help="git commits or tags to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("-n", type=int, default=1000, help="requests per block")
    parser.add_argument("--layers", action="store_true", help="split ours into the tap, adapter and core, recorder")
    args = parser.parse_args(argv)
    if not args.revs and not args.layers:
        parser.error("give a commit to compare against, or --layers")
    try:
        asyncio.run(compare(args.revs, args.rounds, args.n, args.layers))
    except subprocess.CalledProcessError as exc:
        print(f"benchmarks.against: git failed: {' '.join(exc.cmd)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
