"""SSE decoding throughput (MB/s) of ``SSEDecoder`` alone, for the framings the issue names.

    python -m benchmarks.sse_decode                       # every framing, 64 KiB chunks
    python -m benchmarks.sse_decode --baseline main       # alternated against sse.py at a commit

Two ways of consuming the stream are timed:

* ``feed``: every event as a ``ServerSentEvent`` (the WHATWG view);
* ``messages``: ``feed_messages``, what the middleware consumes: notifications counted by method,
  only the payloads that need JSON decoding handed out.

Rounds alternate the variants (and the baseline, when given); the figure is the median over
rounds of bytes / seconds. Nothing here is a pass/fail test: the targets are printed next to it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import wire

KiB = 1024
MiB = 1024 * 1024
CHUNK = 64 * KiB
ROOT = Path(__file__).resolve().parent.parent


def _progress(i: int) -> bytes:
    return wire.progress(7, i, 10_000, "purring")


def _split(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def framings(events: int = 10_000) -> list[dict[str, Any]]:
    """name, chunks, bytes, target (MB/s), kind ("big", "sdk" or "other")."""
    result = wire.tool_result(7)
    big = wire.dumps({"jsonrpc": "2.0", "id": 7, "result": {"text": "x" * (MiB - 60)}})
    big = big[: MiB - 25 - 3] + b'"}}' if len(big) > MiB - 25 else big
    one_big = b"event: message\r\ndata: " + big + b"\r\n\r\n"
    sdk = b"".join(wire.sse_event(_progress(i)) for i in range(events)) + wire.sse_event(result)
    ts = b"".join(
        b"event: message\nid: %d\ndata: %s\n\n" % (i, _progress(i)) for i in range(events)
    ) + b"event: message\nid: %d\ndata: %s\n\n" % (events, result)
    data_only = b"".join(b"data: " + _progress(i) + b"\n\n" for i in range(events))
    lone_cr = b"".join(b"event: message\rdata: " + _progress(i) + b"\r\r" for i in range(events))
    multiline = b"".join(
        b"id: %d\r\n" % i + b"data: " + _progress(i).replace(b",", b",\r\ndata: ") + b"\r\n\r\n"
        for i in range(events // 2)
    )
    pings = b"".join(
        b": ping\n\nevent: message\ndata: " + _progress(i) + b"\nretry: 10\n\n"
        for i in range(events)
    )
    return [
        {"name": "one 1 MiB event", "chunks": _split(one_big), "kind": "big", "target": 1000},
        {"name": "SDK CRLF, small events", "chunks": _split(sdk), "kind": "sdk", "target": 500},
        {"name": "TS-SDK LF with ids", "chunks": _split(ts), "kind": "sdk", "target": 500},
        {"name": "data-only LF", "chunks": _split(data_only), "kind": "other", "target": 200},
        {"name": "lone CR", "chunks": _split(lone_cr), "kind": "other", "target": 200},
        {
            "name": "multi-line data CRLF",
            "chunks": _split(multiline),
            "kind": "other",
            "target": 200,
        },
        {"name": "pings and retry LF", "chunks": _split(pings), "kind": "other", "target": 200},
    ]


def load_baseline(rev: str) -> Any:
    """The sse module as it was at ``rev`` (git), imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:mcp_metrics_middleware/protocol/sse.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "sse_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("sse_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _consume_feed(module: Any, chunks: list[bytes], cap: int) -> int:
    decoder = module.SSEDecoder(cap)
    n = 0
    for chunk in chunks:
        n += len(decoder.feed(chunk))
    return n


def _consume_messages(module: Any, chunks: list[bytes], cap: int) -> int:
    decoder = module.SSEDecoder(cap)
    feed = decoder.feed_messages
    n = 0
    for chunk in chunks:
        payloads, counts = feed(chunk)
        n += len(payloads) + sum(counts.values())
    return n


def _consume_messages_old(module: Any, chunks: list[bytes], cap: int) -> int:
    """The pre-``feed_messages`` consumer: the middleware's loop over ``feed`` events."""
    prefix = b'{"jsonrpc":"2.0","method":"notifications/'
    decoder = module.SSEDecoder(cap)
    n = 0
    for chunk in chunks:
        counts: dict[bytes, int] = {}
        payloads = []
        for event in decoder.feed(chunk):
            data = event.data
            if not data or (event.event and event.event != b"message"):
                continue
            if data[:41] == prefix:
                end = data.find(b'"', 27, 27 + 128)
                if end != -1 and data.find(b"\\", 27, end) == -1:
                    method = data[27:end]
                    counts[method] = counts.get(method, 0) + 1
                    continue
            payloads.append(data)
        n += len(payloads) + sum(counts.values())
    return n


def _time(fn: Any, module: Any, chunks: list[bytes], cap: int, repeat: int) -> float:
    gc.collect()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(module, chunks, cap)
        best = min(best, time.perf_counter() - t0)
    return best


def run(
    *,
    rounds: int = 9,
    repeat: int = 3,
    events: int = 10_000,
    baseline: str | None = None,
    profile: bool = False,
) -> list[dict[str, Any]]:
    from mcp_metrics_middleware.protocol import sse

    modules: dict[str, Any] = {"ours": sse}
    if baseline:
        modules["baseline"] = load_baseline(baseline)
    rows = []
    for spec in framings(events):
        chunks = spec["chunks"]
        size = sum(map(len, chunks))
        cap = 4 * MiB
        variants: dict[str, tuple[Any, Any]] = {}
        for name, module in modules.items():
            variants[f"{name} feed"] = (_consume_feed, module)
            if hasattr(module.SSEDecoder, "feed_messages"):
                variants[f"{name} messages"] = (_consume_messages, module)
                if profile:
                    # What the core does today: feed(), then its own loop over the events.
                    variants[f"{name} feed+loop"] = (_consume_messages_old, module)
            else:
                variants[f"{name} messages"] = (_consume_messages_old, module)
        counts = {v: fn(m, chunks, cap) for v, (fn, m) in variants.items()}
        samples: dict[str, list[float]] = {v: [] for v in variants}
        names = list(variants)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotated each round
            for v in order:
                fn, m = variants[v]
                samples[v].append(size / 1e6 / _time(fn, m, chunks, cap, repeat))
        for v in names:
            row = {
                "section": "sse-decoding",
                "case": f"{spec['name']}, 64 KiB chunks",
                "variant": v,
                "unit": "MB/s",
                "median": statistics.median(samples[v]),
                "min": min(samples[v]),
                "max": max(samples[v]),
                "samples": [round(s, 3) for s in samples[v]],
                "bytes": size,
                "chunks": len(chunks),
                "kind": spec["kind"],
                "items": counts[v],
            }
            if v == "ours messages":
                row["target"] = f">= {spec['target']} MB/s"
                row["met"] = row["median"] >= spec["target"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse_decode", description=__doc__)
    parser.add_argument("--baseline", help="git revision whose sse.py to alternate against")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    rows = run(rounds=args.rounds, events=args.events, baseline=args.baseline, profile=True)
    width = max(len(r["case"]) for r in rows)
    for row in rows:
        target = row.get("target", "")
        if target:
            target += " ok" if row["met"] else " MISSED"
        print(
            f"{row['case']:<{width}}  {row['variant']:<18} {row['median']:8.0f} MB/s "
            f"({row['min']:.0f}-{row['max']:.0f})  {target}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
