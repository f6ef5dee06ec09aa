"""Constants: known label values, buckets and JSON-RPC codes. Imports nothing from the package."""

from __future__ import annotations

# OTel MCP semantic conventions' boundaries (0.01 ... 300 s), all kept so that dashboards built
# on them still work, plus four below 10 ms where most tool calls land.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# Sessions last minutes to hours (semantic-conventions-genai #314 asks for more than 300 s).
SESSION_DURATION_BUCKETS = (
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
# OpenTelemetry HTTP semantic conventions: http.server.request.duration advice.
HTTP_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# 64 B * 4**n up to 16 MiB.
PAYLOAD_BUCKETS = tuple(float(64 * 4**n) for n in range(10))

DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024  # the MCP Python SDK's own request body limit
DEFAULT_MAX_NAMES = 256  # distinct tool (and, separately, prompt) names admitted as label values
DEFAULT_MAX_ERROR_CODES = 32  # distinct non-standard JSON-RPC error codes admitted as label values
DEFAULT_MAX_NAME_LENGTH = 128
# Distinct label sets of the operation histogram (OTel's default cardinality limit). Each label is
# capped on its own, but their product can still be large; past this, new label sets keep their
# error_type and fold every other label into _OTHER.
DEFAULT_MAX_OPERATION_SERIES = 2000
# Per-client breakdown (mcp_server_client_operation_duration_seconds): client names admitted as
# label values after the known_clients allow-list, their length and characters, and the
# histogram's own cap on label sets (past it, new sets keep error_type only).
DEFAULT_MAX_CLIENTS = 32
DEFAULT_MAX_CLIENT_NAME_LENGTH = 64
DEFAULT_MAX_CLIENT_SERIES = 1000
# Printable ASCII a dashboard variable can hold without escaping surprises; anything else: _OTHER.
CLIENT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/@+()")
DEFAULT_SESSION_IDLE_TIMEOUT = 1800.0  # the SDK's session_idle_timeout default
DEFAULT_MAX_SESSIONS = 10_000  # the SDK's max_sessions default
DEFAULT_PARKED_TIMEOUT = 300.0  # how long a response may take to reappear on a GET stream
DEFAULT_MAX_PARKED = 10_000

OTHER = "_OTHER"

# Well-known MCP method names, every revision from 2024-11-05 to 2026-07-28.
KNOWN_METHODS = frozenset(
    {
        "completion/complete",
        "elicitation/create",
        "initialize",
        "logging/setLevel",
        "notifications/cancelled",
        "notifications/initialized",
        "notifications/message",
        "notifications/progress",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/roots/list_changed",
        "notifications/tools/list_changed",
        "notifications/elicitation/complete",
        "notifications/subscriptions/acknowledged",
        "ping",
        "prompts/get",
        "prompts/list",
        "resources/list",
        "resources/read",
        "resources/subscribe",
        "resources/templates/list",
        "resources/unsubscribe",
        "roots/list",
        "sampling/createMessage",
        "server/discover",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "notifications/tasks/status",
        "tools/call",
        "tools/list",
    }
)

KNOWN_PROTOCOL_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"})

KNOWN_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})

# Codes that are always admitted as label values (JSON-RPC 2.0 + MCP-defined).
STANDARD_ERROR_CODES = frozenset(
    {-32700, -32600, -32601, -32602, -32603, -32002, -32042, -32800, -32020, -32021, -32022, 0}
)

# mcp_metrics_parse_errors_total{reason}: a closed set.
PARSE_ERROR_REASONS = (
    "invalid_json",  # not valid UTF-8 JSON (or nested deeper than the decoder allows)
    "not_jsonrpc",  # valid JSON, but not a JSON-RPC 2.0 message or batch
    "too_large",  # a body or SSE event past max_body_size: parsing skipped, bytes still passed
    "truncated",  # a body or stream ended in the middle of a message
    "encoding",  # a content-encoding that cannot be decoded (or a corrupt gzip stream)
    "asgi_protocol",  # the app broke the ASGI message order (e.g. a second http.response.start)
    "internal",  # a bug in this middleware, caught so that it never reaches the app
)

LABELS_WITH_OVERFLOW = (
    "mcp_method_name",
    "gen_ai_tool_name",
    "gen_ai_prompt_name",
    "mcp_protocol_version",
    "error_type",
    "rpc_response_status_code",
    "http_request_method",
    "series",  # a whole operation label set folded by the series cap
    "mcp_client_name",
    "client_series",  # a per-client label set folded by that histogram's own cap
)
