"""``mcp-metrics top``: PromQL-exact quantiles, window arithmetic, rendering, unreachable endpoints."""

from __future__ import annotations

import http.server
import io
import math
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

import pytest

from mcp_metrics_middleware import cli
from mcp_metrics_middleware.cli import (
    ScrapeError,
    bucket_quantile,
    compute_rows,
    format_seconds,
    normalise_url,
    parse_snapshot,
    render,
)
from tests.conftest import free_port

INF = math.inf
# Cumulative buckets used across these tests; 20 observations.
BUCKETS = [(0.01, 2.0), (0.02, 5.0), (0.05, 10.0), (0.1, 18.0), (1.0, 19.0), (INF, 20.0)]


# --------------------------------------------------------------------------- bucket_quantile


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # Expected values are what Prometheus 2.x `promtool test rules` printed for
        # histogram_quantile(q, h_bucket) over these buckets (same float operations, same bits).
        (0.05, 0.005),  # rank 1 in the first bucket, which starts at 0
        (0.3, 0.026000000000000002),  # rank 6: 0.02 + 0.03 * (1/5)
        (0.5, 0.05),  # rank 10: exactly the top of the 0.05 bucket
        (0.8, 0.08750000000000001),  # rank 16: 0.05 + 0.05 * (6/8)
        (0.9, 0.1),
        (0.95, 1.0),  # rank 19: top of the 1s bucket
        (0.99, 1.0),  # rank 19.8 falls in +Inf: the highest finite bound
        (1.0, 1.0),
    ],
)
def test_bucket_quantile_matches_promql(q: float, expected: float) -> None:
    assert bucket_quantile(q, BUCKETS) == expected


def test_bucket_quantile_ignores_input_order() -> None:
    assert bucket_quantile(0.8, list(reversed(BUCKETS))) == 0.08750000000000001


def test_bucket_quantile_edge_cases() -> None:
    assert bucket_quantile(-0.1, BUCKETS) == -INF
    assert bucket_quantile(1.1, BUCKETS) == INF
    assert math.isnan(bucket_quantile(math.nan, BUCKETS))
    assert math.isnan(bucket_quantile(0.5, BUCKETS[:-1]))  # no +Inf bucket
    assert math.isnan(bucket_quantile(0.5, [(INF, 3.0)]))  # fewer than two buckets
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))  # no observations
    assert math.isnan(bucket_quantile(0.5, []))
    # Everything above the highest finite bound: that bound, as PromQL answers.
    assert bucket_quantile(0.5, [(0.1, 0.0), (1.0, 0.0), (INF, 4.0)]) == 1.0
    # A non-monotonic scrape is forced monotonic: the 0.05 bucket counts as 5, not 3.
    racy = [(0.01, 2.0), (0.02, 5.0), (0.05, 3.0), (0.1, 8.0), (INF, 8.0)]
    assert bucket_quantile(0.75, racy) == 0.05 + 0.05 * ((6 - 5) / 3)


# --------------------------------------------------------------------------- snapshots

LABELS = (
    "mcp_method_name",
    "gen_ai_tool_name",
    "gen_ai_prompt_name",
    "error_type",
    "rpc_response_status_code",
    "mcp_protocol_version",
)


def histogram(values: Sequence[str], buckets: Sequence[tuple[float, float]]) -> list[str]:
    labels = ",".join(f'{k}="{v}"' for k, v in zip(LABELS, values, strict=True))
    name = "mcp_server_operation_duration_seconds"
    lines = []
    for le, count in buckets:
        bound = "+Inf" if le == INF else repr(le)
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
    lines.append(f"{name}_count{{{labels}}} {buckets[-1][1]}")
    lines.append(f"{name}_sum{{{labels}}} 1.0")
    return lines


def exposition(
    series: Sequence[tuple[Sequence[str], Sequence[tuple[float, float]]]],
    in_flight: Sequence[tuple[str, str, float]] = (),
    sessions: float = 0.0,
) -> str:
    lines = [
        "# HELP mcp_server_operation_duration_seconds MCP operation duration.",
        "# TYPE mcp_server_operation_duration_seconds histogram",
    ]
    for values, buckets in series:
        lines += histogram(values, buckets)
    lines += [
        "# HELP mcp_server_operations_in_flight In flight.",
        "# TYPE mcp_server_operations_in_flight gauge",
    ]
    for method, tool, value in in_flight:
        lines.append(f'mcp_server_operations_in_flight{{mcp_method_name="{method}",gen_ai_tool_name="{tool}"}} {value}')
    lines += [
        "# HELP mcp_server_sessions_active Sessions.",
        "# TYPE mcp_server_sessions_active gauge",
        f"mcp_server_sessions_active {sessions}",
        "# HELP cat_claw_level Claws.",
        "# TYPE cat_claw_level histogram",
        'cat_claw_level_bucket{le="+Inf"} 3.0',
        "cat_claw_level_count 3.0",
        "cat_claw_level_sum 30.0",
    ]
    return "\n".join(lines) + "\n"


def cumulative(*counts: float) -> list[tuple[float, float]]:
    bounds = [b for b, _ in BUCKETS]
    return list(zip(bounds, counts, strict=True))


SOFA_OK = ("tools/call", "scratch_sofa", "", "", "", "2026-07-28")
SOFA_OK_LEGACY = ("tools/call", "scratch_sofa", "", "", "", "2025-11-25")
SOFA_ERR = ("tools/call", "scratch_sofa", "", "tool_error", "", "2026-07-28")
HISS_ERR = ("tools/call", "hiss", "", "-32050", "-32050", "2026-07-28")
PROMPT = ("prompts/get", "", "evil_plan", "", "", "2025-11-25")

# One earlier scrape, at t=10s: one quick success, in the 0.01 bucket.
PREVIOUS = exposition([(SOFA_OK, cumulative(1, 1, 1, 1, 1, 1))])
# Two seconds later: 15 more successes (split over two protocol versions) and 5 tool errors,
# whose bucket increases add up to BUCKETS; plus a hiss error, a prompt, and two calls in flight.
CURRENT = exposition(
    [
        (SOFA_OK, cumulative(1, 1, 4, 10, 11, 11)),
        (SOFA_OK_LEGACY, cumulative(0, 0, 2, 4, 4, 5)),
        (SOFA_ERR, cumulative(2, 5, 5, 5, 5, 5)),
        (HISS_ERR, cumulative(1, 1, 1, 1, 1, 1)),
        (PROMPT, cumulative(0, 1, 1, 1, 1, 1)),
    ],
    in_flight=[("tools/call", "nap", 2.0), ("tools/call", "scratch_sofa", 0.0)],
    sessions=3.0,
)


def test_parse_snapshot_sums_other_labels() -> None:
    snap = parse_snapshot(CURRENT, 12.0)
    assert snap.has_mcp_metrics
    assert snap.sessions_active == 3.0
    sofa = snap.ops[("tools/call", "scratch_sofa")]
    assert sofa.by_error == {"": 16.0, "tool_error": 5.0}
    assert sofa.buckets == {0.01: 3.0, 0.02: 6.0, 0.05: 11.0, 0.1: 19.0, 1.0: 20.0, INF: 21.0}
    assert snap.ops[("prompts/get", "evil_plan")].count == 1.0  # the prompt name is the name
    assert snap.in_flight == {("tools/call", "nap"): 2.0, ("tools/call", "scratch_sofa"): 0.0}


def test_rows_use_the_window_between_scrapes() -> None:
    rows = compute_rows(parse_snapshot(CURRENT, 12.0), parse_snapshot(PREVIOUS, 10.0))
    by_key = {(row.method, row.name): row for row in rows}
    # Tools first; an in-flight-only key gets a row while it is busy.
    assert [(r.method, r.name) for r in rows] == [
        ("tools/call", "hiss"),
        ("tools/call", "nap"),
        ("tools/call", "scratch_sofa"),
        ("prompts/get", "evil_plan"),
    ]
    sofa = by_key[("tools/call", "scratch_sofa")]
    assert sofa.total == 21.0
    assert sofa.rate == 10.0  # 20 calls in 2 s
    assert sofa.err_pct == 25.0
    assert sofa.errors == [("tool_error", 25.0)]
    # The window's bucket increases are exactly BUCKETS.
    assert sofa.quantiles == tuple(bucket_quantile(q, BUCKETS) for q in (0.5, 0.95, 0.99))
    assert sofa.quantiles == (0.05, 1.0, 1.0)
    hiss = by_key[("tools/call", "hiss")]
    assert (hiss.rate, hiss.err_pct, hiss.errors) == (0.5, 100.0, [("-32050", 100.0)])
    nap = by_key[("tools/call", "nap")]
    assert (nap.in_flight, nap.total, nap.rate, nap.err_pct) == (2.0, 0.0, 0.0, None)
    assert all(math.isnan(q) for q in nap.quantiles)


def test_first_frame_falls_back_to_cumulative_totals() -> None:
    rows = compute_rows(parse_snapshot(CURRENT, 12.0), None)
    sofa = next(row for row in rows if row.name == "scratch_sofa")
    assert sofa.rate is None
    assert sofa.err_pct == 100.0 * 5 / 21
    cumulative_buckets = [(0.01, 3.0), (0.02, 6.0), (0.05, 11.0), (0.1, 19.0), (1.0, 20.0)]
    assert sofa.quantiles[0] == bucket_quantile(0.5, [*cumulative_buckets, (INF, 21.0)])
    assert sofa.quantiles[0] == 0.02 + 0.03 * (4.5 / 5)


def test_counter_reset_uses_current_totals() -> None:
    # The server restarted between the scrapes: counts went down, the window is the new totals.
    later_but_reset = exposition([(SOFA_OK, cumulative(1, 1, 1, 1, 1, 1))])
    previous = parse_snapshot(CURRENT, 10.0)
    rows = compute_rows(parse_snapshot(later_but_reset, 14.0), previous)
    sofa = next(row for row in rows if row.name == "scratch_sofa")
    assert (sofa.total, sofa.rate, sofa.err_pct) == (1.0, 0.25, 0.0)


# --------------------------------------------------------------------------- rendering


def test_render_table() -> None:
    frame = render(
        "http://x/metrics",
        parse_snapshot(CURRENT, 12.0),
        parse_snapshot(PREVIOUS, 10.0),
        now="12:00:00",
    )
    lines = frame.splitlines()
    assert lines[0] == "mcp-metrics top  http://x/metrics  12:00:00"
    assert lines[1] == "window: last 2.0s  sessions active: 3  in flight: 2"
    assert lines[3].split() == [
        "METHOD",
        "TOOL/PROMPT",
        "CALLS/S",
        "TOTAL",
        "ERR%",
        "P50",
        "P95",
        "P99",
        "INFL",
        "ERRORS",
        "BY",
        "TYPE",
    ]
    # hiss's one call is in the lowest bucket (0.01 here): below 10 ms is all that is known, so
    # no interpolated 5.0 / 9.5 / 9.9 ms.
    assert lines[4].split() == [
        "tools/call", "hiss", "0.5", "1", "100.0", "<10ms", "<10ms", "<10ms", "0", "-32050", "100.0%"
    ]  # fmt: skip
    assert lines[5].split() == ["tools/call", "nap", "0.0", "0", "-", "-", "-", "-", "2"]
    assert lines[6].split() == [
        "tools/call", "scratch_sofa", "10.0", "21", "25.0", "50.0ms", "1.00s", "1.00s", "0",
        "tool_error", "25.0%",
    ]  # fmt: skip
    assert lines[7].split()[:4] == ["prompts/get", "evil_plan", "0.5", "1"]


def test_render_first_frame_and_empty_states() -> None:
    first = render("u", parse_snapshot(CURRENT, 1.0), None)
    assert "window: since start (first scrape)" in first
    assert "tools/call" in first
    empty = exposition([])
    assert render("u", parse_snapshot(empty), None).splitlines()[-1] == ("no MCP traffic recorded yet")
    unrelated = "# TYPE http_requests_total counter\nhttp_requests_total 3.0\n"
    assert render("u", parse_snapshot(unrelated), None).splitlines()[-2:] == [
        "no MCP metrics at this endpoint (no mcp_server_operation_duration_seconds);",
        "is MCPMetricsMiddleware installed?",
    ]


LONG = "a_tool_name_far_longer_than_any_column_gives_it"
# Worst cases for the width: a long URL, long names, many error types, large numbers.
WIDE = exposition(
    [
        (("resources/templates/list", "", "", "", "", "2026-07-28"), cumulative(0, 0, 0, 0, 0, 7)),
        (("tools/call", LONG, "", "tool_error", "", "2026-07-28"), cumulative(1, 2, 3, 4, 5, 6)),
        (("tools/call", LONG, "", "-32050", "-32050", "2026-07-28"), cumulative(1, 2, 3, 4, 5, 6)),
        (("tools/call", LONG, "", "cancelled", "", "2026-07-28"), cumulative(1, 2, 3, 4, 5, 6)),
        (("tools/call", LONG, "", "", "", "2026-07-28"), cumulative(0, 0, 0, 0, 0, 123456789)),
    ],
    in_flight=[("tools/call", LONG, 1234.0)],
    sessions=99999.0,
)


@pytest.mark.parametrize(("compact", "width"), [(False, 100), (True, 80)])
def test_every_line_fits_the_terminal(compact: bool, width: int) -> None:
    url = "http://a-very-long-host-name.example.internal:8000/some/deeply/nested/metrics/path"
    for previous in (None, parse_snapshot(PREVIOUS, 10.0)):
        for text in (WIDE, CURRENT, exposition([]), "# TYPE x counter\nx_total 1\n"):
            frame = render(
                url + "?" + "q" * 80,
                parse_snapshot(text, 12.0),
                previous,
                now="12:00:00",
                compact=compact,
            )
            lines = frame.splitlines()
            assert max(len(line) for line in lines) <= width, frame
    # the first errors still show, cut with "~" where they do not fit
    frame = render("u", parse_snapshot(WIDE, 12.0), None, compact=compact)
    row = next(line for line in frame.splitlines() if line.startswith("tools/call"))
    assert "~" in row


def test_compact_keeps_the_essential_columns() -> None:
    frame = render("u", parse_snapshot(CURRENT, 12.0), parse_snapshot(PREVIOUS, 10.0), compact=True)
    lines = frame.splitlines()
    assert lines[3].split() == [
        "METHOD", "TOOL/PROMPT", "CALLS/S", "ERR%", "P95", "INFL", "ERRORS", "BY", "TYPE"
    ]  # fmt: skip
    assert lines[6].split() == [
        "tools/call", "scratch_sofa", "10.0", "25.0", "1.00s", "0", "tool_error", "25.0%"
    ]  # fmt: skip


def test_sub_millisecond_calls_read_below_1ms() -> None:
    """On the default buckets (0.5 ms first) every call under 0.5 ms reads <1ms, not 0.2 ms."""
    fast = (
        "# TYPE mcp_server_operation_duration_seconds histogram\n"
        + "".join(
            f'mcp_server_operation_duration_seconds_bucket{{mcp_method_name="tools/call",'
            f'gen_ai_tool_name="nap",error_type="",le="{le}"}} {n}\n'
            for le, n in (("0.0005", 40), ("0.001", 40), ("0.0025", 40), ("+Inf", 40))
        )
        + 'mcp_server_operation_duration_seconds_count{mcp_method_name="tools/call",'
        'gen_ai_tool_name="nap",error_type=""} 40\n'
    )
    rows = compute_rows(parse_snapshot(fast), None)
    assert rows[0].below == (0.0005, 0.0005, 0.0005)
    assert rows[0].quantiles[0] == 0.00025  # what interpolation would have shown
    line = render("u", parse_snapshot(fast), None).splitlines()[4]
    assert line.split()[2:8] == ["-", "40", "0.0", "<1ms", "<1ms", "<1ms"]
    # p50 in the first bucket, p95 and p99 above it: only p50 is "<"
    mixed = fast.replace('le="0.0005"} 40', 'le="0.0005"} 30').replace('le="0.001"} 40', 'le="0.001"} 30')
    row = compute_rows(parse_snapshot(mixed), None)[0]
    assert row.below == (0.0005, None, None)
    assert render("u", parse_snapshot(mixed), None).splitlines()[4].split()[5:8] == [
        "<1ms", "2.2ms", "2.4ms"
    ]  # fmt: skip


@pytest.mark.parametrize(("bound", "text"), [(0.0005, "<1ms"), (0.001, "<1ms"), (0.01, "<10ms")])
def test_format_below(bound: float, text: str) -> None:
    assert cli.format_below(bound) == text


def test_compact_flag_reaches_the_view(static_server: str) -> None:
    out = io.StringIO()
    assert cli.top(static_server, once=True, out=out, compact=True) == 0
    assert "P99" not in out.getvalue() and "P95" in out.getvalue()
    assert cli.build_parser().parse_args(["top", "u", "--compact"]).compact is True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (math.nan, "-"),
        (0.0042, "4.2ms"),
        (0.0999, "99.9ms"),
        (0.12, "120ms"),
        (1.254, "1.25s"),
        (250.0, "250s"),
        (INF, "+Inf"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("http://h:1/", "http://h:1/metrics"),
        ("https://h/custom/path", "https://h/custom/path"),
    ],
)
def test_normalise_url(given: str, url: str) -> None:
    assert normalise_url(given) == url


# --------------------------------------------------------------------------- endpoints


def test_stopped_endpoint_once_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    status = cli.main(["top", f"127.0.0.1:{port}", "--once"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err == (f"mcp-metrics: cannot reach http://127.0.0.1:{port}/metrics: connection refused\n")


def test_stopped_endpoint_console_script_has_no_traceback() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "mcp_metrics_middleware.cli", "top", f"http://127.0.0.1:{port}",
         "--once"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"mcp-metrics: cannot reach http://127.0.0.1:{port}/metrics: connection refused"
    ]


def test_stopped_endpoint_loop_keeps_retrying() -> None:
    port = free_port()
    out = io.StringIO()
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli.top(f"127.0.0.1:{port}", interval=0.5, out=out, sleep=sleep, clear=False)
    frames = [line for line in out.getvalue().splitlines() if line]
    assert len(frames) == 3
    assert naps == [0.5, 0.5, 0.5]
    for frame in frames:
        assert frame.split("  ", 1)[1].startswith(
            f"mcp-metrics: cannot reach http://127.0.0.1:{port}/metrics: connection refused "
            "(retrying every 0.5s, Ctrl-C to quit)"
        )
    assert frames[2].endswith("[3 failed attempts]")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {
            "/metrics": (200, CURRENT),
            "/html": (200, "<html><body>a dashboard</body></html>\n"),
            "/secret": (401, "unauthorized"),
        }
        status, body = routes.get(self.path, (404, "not found"))
        if self.path == "/secret" and self.headers.get("Authorization") == "Bearer s3cret":
            status, body = 200, CURRENT
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def static_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_endpoint_answers(static_server: str) -> None:
    out = io.StringIO()
    assert cli.top(static_server, once=True, out=out) == 0
    text = out.getvalue()
    assert "window: since start (first scrape)  sessions active: 3  in flight: 2" in text
    assert "scratch_sofa" in text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing", "cannot reach {base}/missing: HTTP 404 Not Found"),
        ("/secret", "cannot reach {base}/secret: HTTP 401 Unauthorized (pass --token)"),
        ("/html", "{base}/html did not answer in Prometheus text format (invalid metric name:"),
    ],
)
def test_endpoint_problems_are_one_line(static_server: str, path: str, reason: str) -> None:
    with pytest.raises(ScrapeError) as caught:
        cli.scrape(static_server + path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(reason.format(base=static_server))


def test_token_is_sent(static_server: str) -> None:
    assert cli.scrape(static_server + "/secret", token="s3cret").sessions_active == 3.0


def test_by_client_reads_the_per_client_histogram(static_server: str) -> None:
    """`--by client` switches parser and view to mcp_server_client_operation_duration_seconds."""
    out = io.StringIO()
    assert cli.top(static_server, once=True, out=out, by="client") == 0
    assert "no per-client metrics at this endpoint" in out.getvalue()
    assert cli.build_parser().parse_args(["top", "u", "--by", "client"]).by == "client"
    assert cli.build_parser().parse_args(["top", "u"]).by == "tool"
    text = (
        "# TYPE mcp_server_client_operation_duration_seconds histogram\n"
        'mcp_server_client_operation_duration_seconds_bucket{mcp_client_name="claude",'
        'mcp_method_name="tools/call",error_type="",le="+Inf"} 3.0\n'
        'mcp_server_client_operation_duration_seconds_count{mcp_client_name="claude",'
        'mcp_method_name="tools/call",error_type=""} 3.0\n'
    )
    from mcp_metrics_middleware.top_clients import parse_client_snapshot

    snap = parse_client_snapshot(text)
    assert snap.ops[("claude", "tools/call")].count == 3.0
