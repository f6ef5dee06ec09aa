"""Logs: one structured line per finished operation, and the middleware's own bugs, once each.

Everything goes to the stdlib logger ``mcp_metrics``. A library must stay silent until its user
configures logging, so the logger gets a ``NullHandler`` here, once, at import. With Python's
defaults (root at WARNING) the INFO operation lines are not even built: the recorder asks
``logger.isEnabledFor(INFO)`` first, which the logging module answers from a per-logger cache.

The operation line carries its fields as ``extra=`` attributes of the ``LogRecord``, so that a
JSON formatter (for example ``python-json-logger``) writes them as keys. A log is not a label:
the tool name, client name and session id are written as the client sent them, only capped in
length.

See: https://docs.python.org/3/howto/logging.html#configuring-logging-for-a-library
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from mcp_metrics_middleware.protocol.model import Operation

logger = logging.getLogger("mcp_metrics")
logger.addHandler(logging.NullHandler())

MAX_FIELD_LENGTH = 128  # characters kept of a client-supplied string (name, client, session id)

# The ``extra=`` keys of an operation line (none collides with a LogRecord attribute).
FIELDS = (
    "mcp_method_name",
    "gen_ai_tool_name",
    "gen_ai_prompt_name",
    "error_type",
    "rpc_response_status_code",
    "duration_ms",
    "request_bytes",
    "response_bytes",
    "mcp_protocol_version",
    "network_transport",
    "mcp_session_id",
    "mcp_client_name",
    "mcp_client_version",
    "trace_id",
    "span_id",
    "tracestate",
)


def _cap(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_FIELD_LENGTH:
        return value
    return value[:MAX_FIELD_LENGTH]


def log_operation(op: Operation) -> None:
    """Write the INFO line of one finished operation (the caller checked the level)."""
    name = _cap(op.name)
    method = _cap(op.method)
    duration_ms = round((op.end - op.start) * 1000.0, 3)
    tool = name if op.method == "tools/call" else None
    prompt = name if op.method == "prompts/get" else None
    extra = {
        "mcp_method_name": method,
        "gen_ai_tool_name": tool,
        "gen_ai_prompt_name": prompt,
        "error_type": op.error_type,
        "rpc_response_status_code": op.code,
        "duration_ms": duration_ms,
        "request_bytes": op.request_size,
        "response_bytes": op.response_size,
        "mcp_protocol_version": _cap(op.protocol_version) or None,
        "network_transport": op.transport,
        "mcp_session_id": _cap(op.session_id),
        "mcp_client_name": _cap(op.client_name),
        "mcp_client_version": _cap(op.client_version),
        "trace_id": op.trace_id,
        "span_id": op.span_id,
        "tracestate": op.tracestate,
    }
    # %r: client-supplied text never forges a line of its own in a plain-text log.
    logger.info("%r %r %s %.1f ms", method, name, op.error_type or "ok", duration_ms, extra=extra)


class _Counts(Protocol):
    def parse_error(self, reason: str) -> None: ...


class InternalErrors:
    """Warn about each distinct internal traceback once, at most ``burst`` lines per ``interval``.

    A traceback is told apart by its exception type and the (file, function, line) of each of
    its frames, not by its message, so one bug hit with a thousand different inputs is one line.
    A traceback that arrives while the budget is spent is not remembered: it gets its line once
    the budget refills. At most ``max_distinct`` tracebacks are remembered.
    """

    def __init__(
        self,
        *,
        burst: int = 5,
        interval: float = 60.0,
        max_distinct: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval = interval
        self.max_distinct = max_distinct
        self.clock = clock
        self.seen: set[tuple[Any, ...]] = set()
        self.window_start = -float("inf")
        self.in_window = 0
        self.suppressed = 0
        self.lock = threading.Lock()

    def report(self) -> None:
        """Log the exception being handled, if it is new and the budget allows."""
        exc = sys.exc_info()[1]
        if exc is None:
            return
        exc_type, tb = type(exc), exc.__traceback__
        frames = []
        while tb is not None:
            code = tb.tb_frame.f_code
            frames.append((code.co_filename, code.co_name, tb.tb_lineno))
            tb = tb.tb_next
        key = (exc_type.__module__, exc_type.__qualname__, tuple(frames))
        with self.lock:
            if key in self.seen or len(self.seen) >= self.max_distinct:
                return
            now = self.clock()
            if now - self.window_start >= self.interval:
                self.window_start = now
                self.in_window = 0
            if self.in_window >= self.burst:
                self.suppressed += 1
                return
            self.in_window += 1
            self.seen.add(key)
            suppressed, self.suppressed = self.suppressed, 0
        logger.warning(
            "mcp-metrics-middleware caught a bug of its own (counted as "
            'mcp_metrics_parse_errors_total{reason="internal"}; the request was not affected; '
            "%d similar reports were rate-limited before this one). Please report it with this traceback.",
            suppressed,
            exc_info=exc,
        )


_internal = InternalErrors()


def report_internal(metrics: _Counts) -> None:
    """Count an internal error and log its traceback once. Call it inside an ``except`` block.

    Never raises: it runs where the middleware is already recovering from its own bug.
    """
    metrics.parse_error("internal")
    try:
        _internal.report()
    except Exception:  # pragma: no cover - logging itself failed; the count above still stands
        pass
