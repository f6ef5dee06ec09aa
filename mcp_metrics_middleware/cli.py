"""``mcp-metrics top URL``: a terminal view of an MCP server's ``/metrics``, without Grafana.

It scrapes any Prometheus endpoint that carries the MCP metrics (this package's, or another
server's that follows the same OpenTelemetry-derived names) every few seconds and redraws one row
per (method, tool or prompt): calls per second, error percentage split by ``error_type``, and
p50/p95/p99 latency estimated from the histogram buckets the way Prometheus'
``histogram_quantile`` does, plus requests in flight and active sessions.

Rates, error shares and quantiles cover the window between the last two scrapes (bucket deltas,
as ``histogram_quantile(q, rate(...[window]))`` would); the first frame, which has no previous
scrape, falls back to the cumulative totals since the server started.

Only the standard library and ``prometheus_client`` are used. The pure parts
(:func:`bucket_quantile`, :func:`parse_snapshot`, :func:`compute_rows`, :func:`render`) do no I/O.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

DURATION = "mcp_server_operation_duration_seconds"
IN_FLIGHT = "mcp_server_operations_in_flight"
SESSIONS_ACTIVE = "mcp_server_sessions_active"
QUANTILES = (0.5, 0.95, 0.99)
DEFAULT_INTERVAL = 2.0
DEFAULT_TIMEOUT = 5.0

Key = tuple[str, str]  # (mcp_method_name, tool or prompt name)


class ScrapeError(Exception):
    """The endpoint could not be scraped; ``str()`` is a one-line reason."""


# --------------------------------------------------------------------------- pure functions


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Estimate the ``q`` quantile from cumulative histogram buckets, as PromQL does.

    ``buckets`` holds ``(upper_bound, cumulative_count)`` pairs in any order and must include the
    ``+Inf`` bucket. The rank is located in its bucket and interpolated linearly inside it, the
    first bucket starting at 0. A rank in the ``+Inf`` bucket returns the highest finite bound.
    NaN when there is nothing to estimate (no ``+Inf`` bucket, fewer than two buckets, no
    observations).
    """
    # See: https://github.com/prometheus/prometheus/blob/main/promql/quantile.go (bucketQuantile)
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return math.nan
    # Coalesce duplicate bounds, then force the counts monotonic (a scrape racing an observation,
    # or a delta across a partial counter reset, can break monotonicity by a little).
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    highest = -math.inf
    for entry in merged:
        highest = max(highest, entry[1])
        entry[1] = highest
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations <= 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    if count <= 0:  # only when q == 0 and the first bucket is empty (0/0 in PromQL)
        return math.nan
    return start + (end - start) * (rank / count)


@dataclasses.dataclass
class OpTotals:
    """Cumulative counters of one (method, name), summed over its other label values."""

    buckets: dict[float, float] = dataclasses.field(default_factory=dict)  # le -> count
    by_error: dict[str, float] = dataclasses.field(default_factory=dict)  # error_type -> count

    @property
    def count(self) -> float:
        return sum(self.by_error.values())


@dataclasses.dataclass
class Snapshot:
    """What one scrape said, reduced to what the view shows."""

    taken_at: float
    ops: dict[Key, OpTotals]
    in_flight: dict[Key, float]
    sessions_active: float | None
    has_mcp_metrics: bool


def parse_snapshot(text: str, taken_at: float = 0.0) -> Snapshot:
    """Reduce Prometheus text exposition to a :class:`Snapshot`; ``ValueError`` on bad input."""
    ops: dict[Key, OpTotals] = {}
    in_flight: dict[Key, float] = {}
    sessions: float | None = None
    found = False
    for family in text_string_to_metric_families(text):
        if family.name == DURATION:
            found = True
            for sample in family.samples:
                labels = sample.labels
                key = (
                    labels.get("mcp_method_name", ""),
                    labels.get("gen_ai_tool_name", "") or labels.get("gen_ai_prompt_name", ""),
                )
                if sample.name == DURATION + "_bucket":
                    le = float(labels.get("le", "nan"))
                    if math.isnan(le):
                        continue
                    totals = ops.setdefault(key, OpTotals())
                    totals.buckets[le] = totals.buckets.get(le, 0.0) + sample.value
                elif sample.name == DURATION + "_count":
                    error_type = labels.get("error_type", "")
                    totals = ops.setdefault(key, OpTotals())
                    totals.by_error[error_type] = totals.by_error.get(error_type, 0.0) + sample.value
        elif family.name == IN_FLIGHT:
            found = True
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("mcp_method_name", ""), labels.get("gen_ai_tool_name", ""))
                in_flight[key] = in_flight.get(key, 0.0) + sample.value
        elif family.name == SESSIONS_ACTIVE:
            found = True
            sessions = sum(sample.value for sample in family.samples)
    return Snapshot(taken_at, ops, in_flight, sessions, found)


def window_totals(current: OpTotals, previous: OpTotals | None) -> OpTotals:
    """The increase between two scrapes; after a counter reset, the current totals."""
    if previous is None:
        return current
    if current.count < previous.count or any(
        current.buckets.get(le, 0.0) < count for le, count in previous.buckets.items()
    ):
        return current  # the server restarted: everything since then is in the window
    buckets = {le: count - previous.buckets.get(le, 0.0) for le, count in current.buckets.items()}
    errors = {e: count - previous.by_error.get(e, 0.0) for e, count in current.by_error.items()}
    return OpTotals(buckets, errors)


@dataclasses.dataclass
class Row:
    method: str
    name: str
    total: float  # calls since the server started
    rate: float | None  # calls per second over the window; None on the first frame
    err_pct: float | None  # share of the window's calls that failed, in percent
    errors: list[tuple[str, float]]  # (error_type, percent), largest first
    quantiles: tuple[float, ...]  # seconds, NaN when unknown
    in_flight: float
    # Per quantile: the first bucket's upper bound when the quantile falls in that bucket (its
    # value is then interpolated from 0 and means only "below the bound"), else None.
    below: tuple[float | None, ...] = ()


def _sort_key(key: Key) -> tuple[bool, str, str]:
    return (key[0] != "tools/call", key[0], key[1])


def compute_rows(current: Snapshot, previous: Snapshot | None) -> list[Row]:
    """One row per (method, name): tools first, the rest by method name.

    The in-flight gauge has no prompt-name label, so a ``prompts/get`` in flight shows on a row
    of its own (empty name); such rows appear only while something is in flight.
    """
    elapsed = current.taken_at - previous.taken_at if previous is not None else 0.0
    busy = {key for key, value in current.in_flight.items() if value > 0}
    rows = []
    for key in sorted(set(current.ops) | busy, key=_sort_key):
        totals = current.ops.get(key, OpTotals())
        if previous is not None:
            window = window_totals(totals, previous.ops.get(key))
            rate: float | None = window.count / elapsed if elapsed > 0 else None
        else:
            window, rate = totals, None
        calls = window.count
        errors = sorted(
            ((e, 100.0 * n / calls) for e, n in window.by_error.items() if e and n > 0 and calls),
            key=lambda item: (-item[1], item[0]),
        )
        rows.append(
            Row(
                method=key[0],
                name=key[1],
                total=totals.count,
                rate=rate,
                err_pct=sum(p for _, p in errors) if calls > 0 else None,
                errors=errors,
                quantiles=tuple(bucket_quantile(q, list(window.buckets.items())) for q in QUANTILES),
                in_flight=current.in_flight.get(key, 0.0),
                below=_below_first_bucket(window.buckets),
            )
        )
    return rows


def _below_first_bucket(buckets: dict[float, float]) -> tuple[float | None, ...]:
    """For each of QUANTILES: the lowest bucket's bound if the quantile's rank lies in it."""
    finite = sorted(b for b in buckets if not math.isinf(b))
    total = buckets.get(math.inf, 0.0)
    if not finite or total <= 0:
        return tuple(None for _ in QUANTILES)
    first = finite[0]
    return tuple(first if q * total <= buckets[first] else None for q in QUANTILES)


def format_below(bound: float) -> str:
    """A quantile known only to lie under ``bound``: ``<1ms`` for sub-millisecond bounds (the
    default buckets start at 0.5 ms), else ``<`` and the bound (``<10ms`` on OTel's buckets)."""
    if bound <= 0.001:
        return "<1ms"
    return "<" + format_seconds(bound).replace(".0ms", "ms")


def format_seconds(value: float) -> str:
    """Durations as a person reads them fastest: ``4.2ms``, ``120ms``, ``1.25s``; NaN is ``-``."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value < 0.1:
        return f"{value * 1000:.1f}ms"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 100:
        return f"{value:.2f}s"
    return f"{value:.0f}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


WIDTH = 100  # the default view fits 100 columns
COMPACT_WIDTH = 80  # --compact fits 80
# (header, width, alignment, kept by --compact)
_COLUMNS = (
    ("METHOD", 16, "<", True),
    ("TOOL/PROMPT", 14, "<", True),
    ("CALLS/S", 7, ">", True),
    ("TOTAL", 6, ">", False),
    ("ERR%", 5, ">", True),
    ("P50", 6, ">", False),
    ("P95", 6, ">", True),
    ("P99", 6, ">", False),
    ("INFL", 4, ">", True),
)


def _line(cells: Sequence[str], tail: str, *, compact: bool, width: int) -> str:
    """One table line: the columns, then ``tail`` cut (``~``) so that the line fits ``width``.

    Two spaces follow a text column, one separates right-aligned numbers (their own padding
    keeps them apart), which leaves room for the error breakdown.
    """
    line = ""
    after_text = False
    for cell, (_, w, align, keep) in zip(cells, _COLUMNS, strict=True):
        if compact and not keep:
            continue
        if line:
            line += "  " if after_text else " "
        line += f"{_fit(cell, w):{align}{w}}"
        after_text = align == "<"
    room = width - len(line) - 2
    if tail and room > 0:
        line += "  " + _fit(tail, room)
    return line.rstrip()


def render(
    url: str,
    current: Snapshot,
    previous: Snapshot | None,
    *,
    now: str = "",
    compact: bool = False,
) -> str:
    """The whole frame as text: a header line, then the table or an honest 'nothing yet'.

    Every line fits 100 columns, or 80 with ``compact`` (which drops TOTAL, P50 and P99); the
    error breakdown is cut to what fits. A quantile that falls in the lowest bucket reads
    ``<1ms`` (or ``<`` its bound), not a number interpolated from zero.
    """
    width = COMPACT_WIDTH if compact else WIDTH
    rows = compute_rows(current, previous)
    window = (
        f"last {current.taken_at - previous.taken_at:.1f}s" if previous is not None else "since start (first scrape)"
    )
    sessions = "-" if current.sessions_active is None else _number(current.sessions_active)
    in_flight = _number(sum(current.in_flight.values()))
    stamp = f"  {now}" if now else ""
    title = "mcp-metrics top  "
    header = f"{title}{_fit(url, width - len(title) - len(stamp))}{stamp}\n" + _fit(
        f"window: {window}  sessions active: {sessions}  in flight: {in_flight}", width
    )
    if not current.has_mcp_metrics:
        return header + f"\nno MCP metrics at this endpoint (no {DURATION});\nis MCPMetricsMiddleware installed?"
    if not any(row.total > 0 or row.in_flight > 0 for row in rows):
        return header + "\nno MCP traffic recorded yet"
    lines = [
        header,
        "",
        _line([c[0] for c in _COLUMNS], "ERRORS BY TYPE", compact=compact, width=width),
    ]
    for row in rows:
        below = row.below or tuple(None for _ in row.quantiles)
        cells = [
            row.method,
            row.name,
            "-" if row.rate is None else f"{row.rate:.1f}",
            _number(row.total),
            "-" if row.err_pct is None else f"{row.err_pct:.1f}",
            *(
                format_seconds(value) if bound is None else format_below(bound)
                for value, bound in zip(row.quantiles, below, strict=True)
            ),
            _number(row.in_flight),
        ]
        tail = "  ".join(f"{error_type} {pct:.1f}%" for error_type, pct in row.errors)
        lines.append(_line(cells, tail, compact=compact, width=width))
    return "\n".join(lines)


# --------------------------------------------------------------------------- I/O


def normalise_url(url: str) -> str:
    """Accept ``host:port`` and bare origins: add ``http://`` and the ``/metrics`` path."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        hint = " (pass --token)" if exc.code in (401, 403) else ""
        return f"HTTP {exc.code} {exc.reason}{hint}"
    if isinstance(exc, urllib.error.URLError):
        return _reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def fetch(url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """GET the exposition text; any failure becomes a :class:`ScrapeError` with one-line reason."""
    headers = {"Accept": "text/plain;version=0.0.4", "User-Agent": "mcp-metrics-top"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
            charset = response.headers.get_content_charset() or "utf-8"
    except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors; ValueError: bad URL
        raise ScrapeError(f"cannot reach {url}: {_reason(exc)}") from None
    return body.decode(charset, errors="replace")


def scrape(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    parse: Callable[[str, float], Snapshot] = parse_snapshot,
) -> Snapshot:
    text = fetch(url, token=token, timeout=timeout)
    taken_at = time.monotonic()
    try:
        return parse(text, taken_at)
    except Exception as exc:  # the parser raises ValueError mostly, but not only
        detail = " ".join(str(exc).split())[:80]
        raise ScrapeError(f"{url} did not answer in Prometheus text format ({detail})") from None


def top(
    url: str,
    *,
    interval: float = DEFAULT_INTERVAL,
    once: bool = False,
    token: str | None = None,
    duration: float | None = None,
    out: TextIO | None = None,
    clear: bool | None = None,
    footer: str = "",
    sleep: Callable[[float], None] = time.sleep,
    compact: bool = False,
    by: str = "tool",
) -> int:
    """Scrape and redraw until interrupted (or ``duration`` seconds, or one frame with ``once``).

    Returns the exit status: 0, or 1 when ``once`` could not scrape.
    """
    stream = out if out is not None else sys.stdout
    # top_clients imports this module's pure parts, hence the import here.
    from mcp_metrics_middleware.top_clients import parse_client_snapshot, render_by_client

    parse = parse_client_snapshot if by == "client" else parse_snapshot
    clear = stream.isatty() if clear is None else clear
    url = normalise_url(url)
    deadline = None if duration is None else time.monotonic() + duration
    previous: Snapshot | None = None
    failures = 0
    while True:
        stamp = time.strftime("%H:%M:%S")
        try:
            current = scrape(url, token=token, timeout=min(DEFAULT_TIMEOUT, max(interval, 1.0)), parse=parse)
        except ScrapeError as exc:
            if once:
                print(f"mcp-metrics: {exc}", file=sys.stderr if out is None else stream)
                return 1
            failures += 1
            frame = f"mcp-metrics: {exc} (retrying every {interval:g}s, Ctrl-C to quit)"
            if failures > 1:
                frame += f" [{failures} failed attempts]"
            frame = f"{stamp}  {frame}"
        else:
            failures = 0
            if by == "client":
                frame = render_by_client(url, current, previous, now=stamp)
            else:
                frame = render(url, current, previous, now=stamp, compact=compact)
            previous = current
        if footer:
            frame += "\n\n" + footer
        if clear:
            stream.write("\x1b[H\x1b[2J")
        stream.write(frame + "\n" + ("" if clear or once else "\n"))
        stream.flush()
        if once:
            return 0
        if deadline is not None and deadline - time.monotonic() < interval:
            return 0  # no room for another full window
        sleep(interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-metrics", description="Tools for the metrics of MCP servers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    top_parser = commands.add_parser(
        "top",
        help="live per-tool table from a /metrics endpoint",
        description="Scrape a Prometheus /metrics endpoint and redraw a per-method, per-tool "
        "table: calls/s, error % by error_type, p50/p95/p99, in-flight, sessions.",
    )
    top_parser.add_argument(
        "url",
        metavar="URL",
        help="the /metrics URL (host:port alone means http://host:port/metrics)",
    )
    top_parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between scrapes (default {DEFAULT_INTERVAL:g})",
    )
    top_parser.add_argument("--once", action="store_true", help="scrape once, print, exit (1 if unreachable)")
    top_parser.add_argument(
        "--token",
        default=os.environ.get("MCP_METRICS_TOKEN"),
        help="bearer token for a protected /metrics (default: $MCP_METRICS_TOKEN)",
    )
    top_parser.add_argument(
        "--compact",
        action="store_true",
        help="fit 80 columns: drop the TOTAL, P50 and P99 columns (default view: 100 columns)",
    )
    top_parser.add_argument(
        "--by",
        choices=("tool", "client"),
        default="tool",
        help="one row per (method, tool or prompt), or per (client, method) from the per-client histogram",
    )
    from mcp_metrics_middleware import proxy, wrap  # each add_parser sets args.run

    proxy.add_parser(commands)
    wrap.add_parser(commands)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if getattr(args, "run", None) is not None:  # proxy, wrap
        return int(args.run(args))
    if args.interval <= 0:
        parser.error("--interval must be positive")
    try:
        return top(
            args.url,
            interval=args.interval,
            once=args.once,
            token=args.token,
            compact=args.compact,
            by=args.by,
        )
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. `mcp-metrics top URL | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
