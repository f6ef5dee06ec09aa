"""Generate the two provisioned Grafana dashboards (deploy/grafana/dashboards/*.json).

    python deploy/grafana/generate_dashboards.py          # rewrite the JSON files
    python deploy/grafana/generate_dashboards.py --check  # exit 1 if they are out of date

The JSON files are what Grafana loads; this script is their source, so that the queries follow
one set of rules everywhere:

* every panel queries the datasource chosen in the ``datasource`` template variable (default:
  the provisioned one, uid ``mcp-prometheus``), so the files import into any Grafana;
* counters are shown as ``rate(...[$__rate_interval])``, and totals as
  ``increase(...[$__range])``, never as raw counter values;
* quantiles are ``histogram_quantile`` over ``sum by (le, ...)`` of bucket rates, so replicas are
  merged before the quantile is taken (averaging per-instance quantiles is wrong);
* ratios divide sums by sums.

tests/test_deploy.py checks that the files match this script, and tests/test_dashboards_live.py
evaluates every query against a real Prometheus scraping the demo.

Why not grafana-foundation-sdk (measured 2026-11-30, issue 14): its PyPI builds carry epoch
versions, so a plain ``pip install grafana-foundation-sdk`` resolves to the Grafana 10.1 schema
build; the newest build targets 11.6 and none targets 12.x; it is marked Alpha. It can express
every panel, target option (exemplar, heatmap/table format) and the datasource variable used here,
but its automatic layout placed a 12-wide panel at x=16 (past the 24-column grid) in a three-panel
row, so positions would still have to come from this file's Layout. Revisit when a 12.x build
exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
PROVISIONED_UID = "mcp-prometheus"
RI = "$__rate_interval"

# Label selectors shared by the queries.
SCOPE = 'job=~"$job", instance=~"$instance"'
OPS = SCOPE + ', mcp_method_name=~"$method"'
TOOLS = SCOPE + ', mcp_method_name="tools/call", gen_ai_tool_name=~"$tool"'
# Requests only: notifications are in the operation histogram too, but they are not calls.
REQS = OPS + ', mcp_method_name!~"notifications/.*"'
OP = "mcp_server_operation_duration_seconds"
# Per-client histogram (issue 13): same buckets; labels mcp_client_name, mcp_method_name,
# error_type.
CLIENT_OP = "mcp_server_client_operation_duration_seconds"
CLIENTS = SCOPE + ', mcp_method_name=~"$method"'

HTTP = "mcp_http_server_request_duration_seconds"
PAYLOAD = "mcp_server_operation_payload_bytes"


def rate(metric: str, selector: str, by: str | None = None, window: str = RI) -> str:
    inner = f"rate({metric}{{{selector}}}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def total(metric: str, selector: str, by: str | None = None) -> str:
    inner = f"increase({metric}{{{selector}}}[$__range])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, metric: str, selector: str, by: str | None = None) -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))"


def ratio(num_selector: str, den_selector: str, metric: str, by: str | None = None) -> str:
    """Errors / all, per group; groups with traffic but no errors show 0 rather than nothing."""
    num = rate(metric, num_selector, by)
    den = rate(metric, den_selector, by)
    return f"({num} or {den} * 0) / {den}"


# --------------------------------------------------------------------------- panel builders


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "instant": False,
    }
    t.update(extra)
    return t


def targets(*pairs: tuple[str, str], exemplar: bool = False) -> list[dict[str, Any]]:
    """Range queries A, B, ...; ``exemplar`` asks Prometheus for the trace ids stored with the
    operation histogram's buckets (shown as dots that link to the trace)."""
    extra = {"exemplar": True} if exemplar else {}
    return [
        target(expr, legend, chr(ord("A") + i), **extra) for i, (expr, legend) in enumerate(pairs)
    ]


def timeseries(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    unit: str,
    *,
    stack: bool = False,
    max_value: float | None = None,
    units_by_ref: dict[str, str] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 5,
            "showPoints": "never",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "spanNulls": False,
        },
    }
    if max_value is not None:
        defaults["min"] = 0
        defaults["max"] = max_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": defaults,
            "overrides": [
                {
                    "matcher": {"id": "byFrameRefID", "options": ref},
                    "properties": [{"id": "unit", "value": ref_unit}],
                }
                for ref, ref_unit in (units_by_ref or {}).items()
            ],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    *,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "", "A", instant=True, range=False)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
        },
    }


def heatmap(title: str, description: str, expr: str, unit: str) -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "{{le}}", "A", format="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5},
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "rowsFrame": {"layout": "le"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
            "filterValues": {"le": 1e-9},
        },
    }


def bargauge(title: str, description: str, tgts: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    for t in tgts:
        t["instant"] = True
        t["range"] = False
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    }


def table(title: str, description: str, columns: list[tuple[str, str, str]]) -> dict[str, Any]:
    """One row per label value: columns are (header, expr, unit), joined on their labels."""
    tgts = []
    overrides = []
    rename = {}
    for i, (header, expr, unit) in enumerate(columns):
        ref = chr(ord("A") + i)
        tgts.append(target(expr, "", ref, instant=True, range=False, format="table"))
        rename[f"Value #{ref}"] = header
        overrides.append(
            {
                "matcher": {"id": "byName", "options": header},
                "properties": [{"id": "unit", "value": unit}],
            }
        )
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": {}, "overrides": overrides},
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True}, "renameByName": rename},
            },
        ],
        "options": {"showHeader": True, "sortBy": [{"displayName": columns[0][0], "desc": True}]},
    }


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
        "skipUrlSync": False,
    }


VAR_DATASOURCE: dict[str, Any] = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {"selected": False, "text": "Prometheus", "value": PROVISIONED_UID},
    "options": [],
    "regex": "",
    "refresh": 1,
    "includeAll": False,
    "multi": False,
    "hide": 0,
    "skipUrlSync": False,
}

VAR_JOB = variable("job", "Job", "label_values(mcp_metrics_parse_errors_total, job)")
VAR_INSTANCE = variable(
    "instance", "Instance", 'label_values(mcp_metrics_parse_errors_total{job=~"$job"}, instance)'
)
VAR_METHOD = variable(
    "method", "MCP method", f"label_values({OP}_count{{{SCOPE}}}, mcp_method_name)"
)
VAR_TOOL = variable(
    "tool",
    "Tool",
    f'label_values({OP}_count{{{SCOPE}, mcp_method_name="tools/call"}}, gen_ai_tool_name)',
)


def dashboard(
    uid: str, title: str, description: str, layout: Layout, variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mcp", "mcp-metrics-middleware"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "MCP dashboards",
                "type": "dashboards",
                "tags": ["mcp"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "panels": layout.panels,
    }


# --------------------------------------------------------------------------- MCP server


def mcp_server() -> dict[str, Any]:
    lay = Layout()
    errors = OPS + ', error_type!=""'
    req_errors = REQS + ', error_type!=""'
    tool_errors = TOOLS + ', error_type!=""'

    lay.row("Overview")
    lay.add(
        stat(
            "Calls / s",
            "MCP requests handled per second (notifications are not calls).",
            rate(OP + "_count", REQS),
            "reqps",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Error %",
            'Share of requests with error_type != "" (server-side failures and transport '
            "rejections; caller mistakes such as invalid params are not errors).",
            f"({rate(OP + '_count', req_errors)} or vector(0)) / {rate(OP + '_count', REQS)}",
            "percentunit",
            thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "p95 latency",
            "95th percentile of request duration, all replicas merged.",
            quantile(0.95, OP, REQS),
            "s",
            thresholds=[(None, "green"), (1, "orange"), (2, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "In flight",
            "Requests received and not answered yet.",
            f'sum(mcp_server_operations_in_flight{{{SCOPE}, mcp_method_name=~"$method"}})',
            "short",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Active sessions",
            "Open handshake-era (<= 2025-11-25) sessions. The 2026-07-28 protocol has no sessions.",
            f"sum(mcp_server_sessions_active{{{SCOPE}}})",
            "short",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Unknown-tool calls",
            "tools/call requests in the time range naming a tool the server never listed "
            '(gen_ai_tool_name="_OTHER").',
            total(OP + "_count", TOOLS.replace('=~"$tool"', '="_OTHER"')) + " or vector(0)",
            "short",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        4,
        4,
    )
    lay.add(
        timeseries(
            "Operations by outcome",
            'Operations per second, split by error_type ("" = success).',
            targets((rate(OP + "_count", OPS, "error_type"), "error_type={{error_type}}")),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Latency (all operations)",
            "Quantiles of operation duration over the merged histogram of all replicas.",
            targets(
                (quantile(0.5, OP, OPS), "p50"),
                (quantile(0.95, OP, OPS), "p95"),
                (quantile(0.99, OP, OPS), "p99"),
                exemplar=True,
            ),
            "s",
        ),
        12,
        8,
    )

    lay.row("Tools")
    lay.add(
        timeseries(
            "Tool calls / s",
            "tools/call rate per tool.",
            targets((rate(OP + "_count", TOOLS, "gen_ai_tool_name"), "{{gen_ai_tool_name}}")),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Tool error ratio",
            'Failed calls / all calls per tool (error_type != "": isError results, JSON-RPC '
            "errors, crashes, cancellations).",
            targets(
                (
                    ratio(tool_errors, TOOLS, OP + "_count", "gen_ai_tool_name"),
                    "{{gen_ai_tool_name}}",
                )
            ),
            "percentunit",
            max_value=1,
        ),
        12,
        8,
    )
    for q in (0.5, 0.95, 0.99):
        lay.add(
            timeseries(
                f"Tool latency p{int(q * 100)}",
                f"p{int(q * 100)} of tools/call duration per tool, replicas merged.",
                targets(
                    (quantile(q, OP, TOOLS, "gen_ai_tool_name"), "{{gen_ai_tool_name}}"),
                    exemplar=True,
                ),
                "s",
            ),
            8,
            8,
        )
    lay.add(
        heatmap(
            "Tool latency heatmap",
            "Distribution of tools/call durations (per second).",
            f"sum by (le) (rate({OP}_bucket{{{TOOLS}}}[{RI}]))",
            "s",
        ),
        12,
        9,
    )
    lay.add(
        table(
            "Tools in the time range",
            "Calls, failures, error ratio and p95 per tool over the dashboard time range.",
            [
                ("Calls", total(OP + "_count", TOOLS, "gen_ai_tool_name"), "short"),
                (
                    "Errors",
                    total(OP + "_count", tool_errors, "gen_ai_tool_name")
                    + f" or {total(OP + '_count', TOOLS, 'gen_ai_tool_name')} * 0",
                    "short",
                ),
                (
                    "Error %",
                    f"({total(OP + '_count', tool_errors, 'gen_ai_tool_name')}"
                    f" or {total(OP + '_count', TOOLS, 'gen_ai_tool_name')} * 0)"
                    f" / {total(OP + '_count', TOOLS, 'gen_ai_tool_name')}",
                    "percentunit",
                ),
                (
                    "p95",
                    "histogram_quantile(0.95, sum by (le, gen_ai_tool_name) "
                    f"(increase({OP}_bucket{{{TOOLS}}}[$__range])))",
                    "s",
                ),
            ],
        ),
        12,
        9,
    )

    lay.row("Clients")
    client_errors = CLIENTS + ', error_type!=""'
    lay.add(
        timeseries(
            "Calls / s by client",
            "Requests per second by the client's name (clientInfo.name, bounded like tool names).",
            targets(
                (
                    rate(CLIENT_OP + "_count", CLIENTS, "mcp_client_name"),
                    "{{mcp_client_name}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Error ratio by client",
            "Failed requests / all requests per client: one client failing alone points at "
            "that client (its version, its arguments), all of them at the server.",
            targets(
                (
                    ratio(client_errors, CLIENTS, CLIENT_OP + "_count", "mcp_client_name"),
                    "{{mcp_client_name}}",
                )
            ),
            "percentunit",
            max_value=1,
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "p95 latency by client",
            "p95 request duration per client, replicas merged.",
            targets((quantile(0.95, CLIENT_OP, CLIENTS, "mcp_client_name"), "{{mcp_client_name}}")),
            "s",
        ),
        8,
        8,
    )

    lay.row("Errors")
    lay.add(
        timeseries(
            "Errors by error_type",
            "Failed operations per second by error_type: "
            "tool_error (isError result), a JSON-RPC code, 500 (the app raised), "
            "cancelled, no_response.",
            targets(
                (
                    rate(OP + "_count", errors, "error_type, mcp_method_name"),
                    "{{mcp_method_name}} {{error_type}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "JSON-RPC error responses by code",
            "Responses carrying a JSON-RPC error, by code, including the caller's mistakes "
            "(-32602 invalid params, -32601 method not found), which are not counted as errors.",
            targets(
                (
                    rate(
                        OP + "_count",
                        OPS + ', rpc_response_status_code!=""',
                        "rpc_response_status_code, mcp_method_name",
                    ),
                    "{{mcp_method_name}} {{rpc_response_status_code}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        bargauge(
            "Errors in the time range by error_type",
            "Failed operations in the range.",
            targets((total(OP + "_count", errors, "error_type"), "{{error_type}}")),
            "short",
        ),
        12,
        7,
    )
    lay.add(
        bargauge(
            "JSON-RPC codes in the time range",
            "JSON-RPC error responses in the range.",
            targets(
                (
                    total(
                        OP + "_count",
                        OPS + ', rpc_response_status_code!=""',
                        "rpc_response_status_code",
                    ),
                    "{{rpc_response_status_code}}",
                )
            ),
            "short",
        ),
        12,
        7,
    )

    lay.row("Methods and protocol versions")
    lay.add(
        timeseries(
            "Method mix",
            "Operations per second by MCP method.",
            targets((rate(OP + "_count", OPS, "mcp_method_name"), "{{mcp_method_name}}")),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "p95 latency by method",
            "p95 duration per MCP method, replicas merged.",
            targets(
                (quantile(0.95, OP, OPS, "mcp_method_name"), "{{mcp_method_name}}"), exemplar=True
            ),
            "s",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Protocol versions",
            "Operations per second by negotiated MCP protocol version (2026-07-28 is the "
            "sessionless protocol; up to 2025-11-25 the handshake era).",
            targets(
                (
                    rate(OP + "_count", OPS + ', mcp_protocol_version!=""', "mcp_protocol_version"),
                    "{{mcp_protocol_version}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        bargauge(
            "Methods in the time range",
            "Operations per method in the range.",
            targets((total(OP + "_count", OPS, "mcp_method_name"), "{{mcp_method_name}}")),
            "short",
        ),
        12,
        8,
    )

    lay.row("Payload sizes")
    for direction in ("request", "response"):
        sel = (
            f'{SCOPE}, direction="{direction}", mcp_method_name="tools/call", '
            'gen_ai_tool_name=~"$tool"'
        )
        lay.add(
            timeseries(
                f"Tool {direction} size p95",
                f"p95 size of tools/call {direction} messages per tool.",
                targets((quantile(0.95, PAYLOAD, sel, "gen_ai_tool_name"), "{{gen_ai_tool_name}}")),
                "bytes",
            ),
            8,
            8,
        )
    lay.add(
        timeseries(
            "MCP bytes / s",
            "JSON-RPC payload bytes per second, by direction.",
            targets((rate(PAYLOAD + "_sum", OPS, "direction"), "{{direction}}")),
            "Bps",
        ),
        8,
        8,
    )

    lay.row("Notifications and progress")
    msgs = "mcp_server_messages_total"
    lay.add(
        timeseries(
            "Notifications / s",
            "JSON-RPC notifications by direction and method (received: from clients, e.g. "
            "notifications/initialized; sent: progress and log messages from tools).",
            targets(
                (
                    rate(
                        msgs, SCOPE + ', message_type="notification"', "direction, mcp_method_name"
                    ),
                    "{{direction}} {{mcp_method_name}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Progress notifications per tool call",
            "notifications/progress sent per tools/call answered: how chatty long-running "
            "tools are.",
            targets(
                (
                    rate(
                        msgs, SCOPE + ', direction="sent", mcp_method_name="notifications/progress"'
                    )
                    + " / "
                    + rate(OP + "_count", SCOPE + ', mcp_method_name="tools/call"'),
                    "progress / call",
                )
            ),
            "short",
        ),
        6,
        8,
    )
    lay.add(
        timeseries(
            "Messages by type",
            "JSON-RPC messages per second by direction and type.",
            targets(
                (rate(msgs, SCOPE, "direction, message_type"), "{{direction}} {{message_type}}")
            ),
            "reqps",
        ),
        6,
        8,
    )

    lay.row("Middleware health")
    lay.add(
        timeseries(
            "Parse errors / s",
            "Traffic the middleware could not decode (it still reached the app untouched).",
            targets((rate("mcp_metrics_parse_errors_total", SCOPE, "reason"), "{{reason}}")),
            "reqps",
        ),
        8,
        7,
    )
    lay.add(
        bargauge(
            "Label overflow in the time range",
            "Label values folded into _OTHER (unknown values, or the cap reached), per label.",
            targets((total("mcp_metrics_label_overflow_total", SCOPE, "label"), "{{label}}")),
            "short",
        ),
        8,
        7,
    )
    lay.add(
        bargauge(
            "Parse errors in the time range",
            "Undecodable messages per reason.",
            targets((total("mcp_metrics_parse_errors_total", SCOPE, "reason"), "{{reason}}")),
            "short",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Scrape targets up",
            "1 when Prometheus can scrape the replica.",
            targets((f"up{{{SCOPE}}}", "{{instance}}")),
            "short",
        ),
        24,
        6,
    )

    lay.row("Business metrics (evil cat)")
    claw = "cat_claw_level"
    lay.add(
        timeseries(
            "Claw level",
            "Levels the cat sharpened its claws to (the demo's cat_claw_level histogram), "
            "quantiles over all replicas.",
            targets(
                (quantile(0.5, claw, SCOPE), "p50"),
                (quantile(0.9, claw, SCOPE), "p90"),
                (f"{rate(claw + '_sum', SCOPE)} / {rate(claw + '_count', SCOPE)}", "mean"),
            ),
            "short",
        ),
        8,
        8,
    )
    lay.add(
        bargauge(
            "Claw level distribution",
            "Sharpenings per claw-level bucket in the range.",
            [
                target(
                    f"sum by (le) (increase({claw}_bucket{{{SCOPE}}}[$__range]))",
                    "{{le}}",
                    "A",
                    format="heatmap",
                )
            ],
            "short",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Sofa scratches / s",
            "Attempts on the sofa by outcome (cat_sofa_scratches_total).",
            targets((rate("cat_sofa_scratches_total", SCOPE, "outcome"), "{{outcome}}")),
            "reqps",
            stack=True,
        ),
        8,
        8,
    )
    lay.add(
        stat(
            "Sofas ruined",
            "Successful scratches in the time range.",
            total("cat_sofa_scratches_total", SCOPE + ', outcome="success"'),
            "short",
        ),
        8,
        4,
    )
    lay.add(
        stat(
            "Failed scratches",
            "Scratches that bounced off in the time range.",
            total("cat_sofa_scratches_total", SCOPE + ', outcome="failure"'),
            "short",
        ),
        8,
        4,
    )
    lay.add(
        stat(
            "Scratch success %",
            "Successful share of scratches in the time range.",
            total("cat_sofa_scratches_total", SCOPE + ', outcome="success"')
            + " / "
            + total("cat_sofa_scratches_total", SCOPE),
            "percentunit",
        ),
        8,
        4,
    )

    return dashboard(
        "mcp-server",
        "MCP server",
        "MCP operations, tools, errors, sessions and payloads from mcp-metrics-middleware.",
        lay,
        [VAR_DATASOURCE, VAR_JOB, VAR_INSTANCE, VAR_METHOD, VAR_TOOL],
    )


# --------------------------------------------------------------------------- MCP HTTP transport


def mcp_http() -> dict[str, Any]:
    lay = Layout()
    count = HTTP + "_count"
    rejected = SCOPE + ', http_response_status_code=~"4..|5.."'
    get = SCOPE + ', http_request_method="GET"'

    lay.row("Requests")
    lay.add(
        stat(
            "Requests / s",
            "HTTP requests to the MCP endpoint per second.",
            rate(count, SCOPE),
            "reqps",
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "5xx %",
            "Share of requests answered with a 5xx status.",
            "(" + rate(count, SCOPE + ', http_response_status_code=~"5.."') + " or vector(0))"
            " / " + rate(count, SCOPE),
            "percentunit",
            thresholds=[(None, "green"), (0.01, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Rejected (4xx/5xx) in range",
            "Requests answered with 4xx or 5xx in the range.",
            total(count, rejected) + " or vector(0)",
            "short",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "POST p95",
            "p95 duration of POST requests (for SSE responses: until the stream ends).",
            quantile(0.95, HTTP, SCOPE + ', http_request_method="POST"'),
            "s",
        ),
        6,
        4,
    )
    lay.add(
        timeseries(
            "Requests by status code",
            "Requests per second by HTTP method and status.",
            targets(
                (
                    rate(count, SCOPE, "http_request_method, http_response_status_code"),
                    "{{http_request_method}} {{http_response_status_code}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Duration by status code (p95)",
            "p95 request duration per status code, replicas merged. GET streams are left out "
            "(see Long-lived streams).",
            targets(
                (
                    quantile(
                        0.95,
                        HTTP,
                        SCOPE + ', http_request_method!="GET"',
                        "http_response_status_code",
                    ),
                    "{{http_response_status_code}}",
                )
            ),
            "s",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Duration by method",
            "p50/p95/p99 per HTTP method (POST: one JSON-RPC exchange; DELETE: session end).",
            targets(
                (
                    quantile(
                        0.5, HTTP, SCOPE + ', http_request_method!="GET"', "http_request_method"
                    ),
                    "{{http_request_method}} p50",
                ),
                (
                    quantile(
                        0.95, HTTP, SCOPE + ', http_request_method!="GET"', "http_request_method"
                    ),
                    "{{http_request_method}} p95",
                ),
                (
                    quantile(
                        0.99, HTTP, SCOPE + ', http_request_method!="GET"', "http_request_method"
                    ),
                    "{{http_request_method}} p99",
                ),
            ),
            "s",
        ),
        12,
        8,
    )
    lay.add(
        heatmap(
            "POST duration heatmap",
            "Distribution of POST durations (per second).",
            f'sum by (le) (rate({HTTP}_bucket{{{SCOPE}, http_request_method="POST"}}[{RI}]))',
            "s",
        ),
        12,
        8,
    )

    lay.row("Rejected requests")
    lay.add(
        timeseries(
            "Rejected requests / s",
            "4xx/5xx answers: 400 bad JSON or missing session id, 404 unknown session (or "
            "method not found on 2026-07-28), 405, 406 bad Accept, 413 body too large, 421/403 "
            "Host/Origin checks, 5xx server failures.",
            targets(
                (
                    rate(count, rejected, "http_request_method, http_response_status_code"),
                    "{{http_request_method}} {{http_response_status_code}}",
                )
            ),
            "reqps",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        bargauge(
            "Rejected in the time range by status",
            "4xx/5xx answers per status code.",
            targets(
                (
                    total(count, rejected, "http_response_status_code"),
                    "{{http_response_status_code}}",
                )
            ),
            "short",
        ),
        12,
        8,
    )

    lay.row("Long-lived streams")
    lay.add(
        timeseries(
            "GET streams closed / s",
            "Standalone SSE streams (GET) ending per second; they are recorded when they end.",
            targets(
                (rate(count, get, "http_response_status_code"), "GET {{http_response_status_code}}")
            ),
            "reqps",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "GET stream lifetime",
            "Mean lifetime of closed GET streams, and the rate of those that lived longer than "
            "10 s (the last finite bucket).",
            [
                target(f"{rate(HTTP + '_sum', get)} / {rate(count, get)}", "mean lifetime", "A"),
                target(
                    rate(HTTP + "_bucket", get + ', le="+Inf"')
                    + " - "
                    + rate(HTTP + "_bucket", get + ', le="10.0"'),
                    "> 10 s / s",
                    "B",
                ),
            ],
            "s",
            units_by_ref={"B": "reqps"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Sessions",
            "Open sessions, and session-duration quantiles (handshake-era protocol only).",
            targets(
                (f"sum(mcp_server_sessions_active{{{SCOPE}}})", "active"),
                (quantile(0.5, "mcp_server_session_duration_seconds", SCOPE), "duration p50"),
                (quantile(0.95, "mcp_server_session_duration_seconds", SCOPE), "duration p95"),
            ),
            "short",
            units_by_ref={"B": "s", "C": "s"},
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Sessions opened and closed",
            "initialize requests answered per second (sessions opened) against sessions ended "
            "(DELETE, idle timeout, or not found).",
            targets(
                (
                    rate(OP + "_count", SCOPE + ', mcp_method_name="initialize", error_type=""'),
                    "opened",
                ),
                (rate("mcp_server_session_duration_seconds_count", SCOPE), "closed"),
            ),
            "reqps",
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "In-flight MCP operations",
            "Requests received and not answered yet, by method.",
            targets(
                (
                    f"sum by (mcp_method_name) (mcp_server_operations_in_flight{{{SCOPE}}})",
                    "{{mcp_method_name}}",
                )
            ),
            "short",
            stack=True,
        ),
        12,
        7,
    )

    return dashboard(
        "mcp-http",
        "MCP HTTP transport",
        "HTTP view of the MCP endpoint: request rate and duration by status, rejected "
        "requests, long-lived SSE streams and sessions.",
        lay,
        [VAR_DATASOURCE, VAR_JOB, VAR_INSTANCE],
    )


DASHBOARDS = {"mcp-server.json": mcp_server, "mcp-http.json": mcp_http}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        text = render(build)
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run deploy/grafana/generate_dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
