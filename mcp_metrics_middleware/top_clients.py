"""``mcp-metrics top --by client``: the terminal view, one row per (client, method).

Reads ``mcp_server_client_operation_duration_seconds`` instead of the operation histogram and
reuses the view's pure parts (windows, rates, error shares, quantiles). Kept apart from
``cli.py`` so that the two can change independently; ``cli.top`` picks these two functions when
asked for ``--by client``. No I/O here.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from mcp_metrics_middleware.cli import (
    SESSIONS_ACTIVE,
    Key,
    OpTotals,
    Snapshot,
    _fit,
    _number,
    compute_rows,
    format_seconds,
)

CLIENT_DURATION = "mcp_server_client_operation_duration_seconds"
NO_CLIENT = "(none)"  # mcp_client_name="": no clientInfo reached the server (stateless requests)
_COLUMNS = (
    ("CLIENT", 16, "<"),
    ("METHOD", 16, "<"),
    ("CALLS/S", 7, ">"),
    ("TOTAL", 6, ">"),
    ("ERR%", 5, ">"),
    ("P50", 6, ">"),
    ("P95", 6, ">"),
    ("P99", 6, ">"),
)
WIDTH = 100  # like `top` by tool: every line fits 100 columns


def parse_client_snapshot(text: str, taken_at: float = 0.0) -> Snapshot:
    """Reduce a scrape to a :class:`~cli.Snapshot` keyed by (client, method); ``ValueError`` on bad input."""
    ops: dict[Key, OpTotals] = {}
    sessions: float | None = None
    found = False
    for family in text_string_to_metric_families(text):
        if family.name == CLIENT_DURATION:
            found = True
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("mcp_client_name", ""), labels.get("mcp_method_name", ""))
                if sample.name == CLIENT_DURATION + "_bucket":
                    le = float(labels.get("le", "nan"))
                    if math.isnan(le):
                        continue
                    totals = ops.setdefault(key, OpTotals())
                    totals.buckets[le] = totals.buckets.get(le, 0.0) + sample.value
                elif sample.name == CLIENT_DURATION + "_count":
                    error_type = labels.get("error_type", "")
                    totals = ops.setdefault(key, OpTotals())
                    totals.by_error[error_type] = totals.by_error.get(error_type, 0.0) + sample.value
        elif family.name == SESSIONS_ACTIVE:
            sessions = sum(sample.value for sample in family.samples)
    return Snapshot(taken_at, ops, {}, sessions, found)


def _line(cells: list[str], tail: str) -> str:
    # Two spaces after a text column, one between right-aligned numbers (as `top` by tool).
    line = ""
    after_text = False
    for cell, (_, w, align) in zip(cells, _COLUMNS, strict=True):
        if line:
            line += "  " if after_text else " "
        line += f"{_fit(cell, w):{align}{w}}"
        after_text = align == "<"
    return (line + "  " + _fit(tail, WIDTH - len(line) - 2)).rstrip()


def render_by_client(url: str, current: Snapshot, previous: Snapshot | None, *, now: str = "") -> str:
    """The whole ``--by client`` frame as text."""
    rows = sorted(compute_rows(current, previous), key=lambda row: (row.method, row.name))
    window = (
        f"last {current.taken_at - previous.taken_at:.1f}s" if previous is not None else "since start (first scrape)"
    )
    sessions = "-" if current.sessions_active is None else _number(current.sessions_active)
    header = f"mcp-metrics top --by client  {url}  {now}".rstrip() + f"\nwindow: {window}  sessions active: {sessions}"
    if not current.has_mcp_metrics:
        return header + f"\nno per-client metrics at this endpoint (no {CLIENT_DURATION})"
    if not any(row.total > 0 for row in rows):
        return header + "\nno MCP traffic recorded yet"
    lines = [header, "", _line([name for name, _, _ in _COLUMNS], "ERRORS BY TYPE")]
    for row in rows:
        cells = [
            row.method or NO_CLIENT,  # compute_rows' first key field: here the client
            row.name,
            "-" if row.rate is None else f"{row.rate:.1f}",
            _number(row.total),
            "-" if row.err_pct is None else f"{row.err_pct:.1f}",
            *(format_seconds(value) for value in row.quantiles),
        ]
        lines.append(_line(cells, "  ".join(f"{e} {pct:.1f}%" for e, pct in row.errors)))
    return "\n".join(lines)
