"""W3C trace context, read strictly from ``params._meta`` or the HTTP ``traceparent`` header.

MCP carries trace context in ``params._meta`` under the unprefixed keys ``traceparent`` and
``tracestate`` (SEP-414). A value that does not follow the W3C format is ignored (and counted by
the caller), never raised; no trace ids are ever made up here.

See: https://www.w3.org/TR/trace-context/#traceparent-header-field-values
See: https://modelcontextprotocol.io/specification/2026-07-28/basic/index#meta (SEP-414)
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: object) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a valid ``traceparent`` value, else ``None``.

    Version ``00`` must be exactly ``00-<32 hex>-<16 hex>-<2 hex>``; a higher version may carry
    more fields after the flags (``-...``), and version ``ff`` is invalid. Hex is lowercase; an
    all-zero trace id or span id is invalid.
    """
    if type(value) is not str or len(value) < 55:
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not _HEX.issuperset(version) or version == "ff":
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    if not (_HEX.issuperset(trace_id) and _HEX.issuperset(span_id) and _HEX.issuperset(flags)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


_MAX_TRACESTATE = 512  # W3C: vendors SHOULD propagate at least 512 characters


def parse_tracestate(value: object) -> str | None:
    """A ``tracestate`` value kept as it came, or ``None`` if absent or not plausibly W3C.

    Kept only alongside a valid ``traceparent``; at most 512 printable ASCII characters and 32
    list members. It is passed on (to the log line), never interpreted.
    See: https://www.w3.org/TR/trace-context/#tracestate-header
    """
    if type(value) is not str or not value or len(value) > _MAX_TRACESTATE:
        return None
    if not value.isascii() or not value.isprintable() or value.count(",") >= 32:
        return None
    return value
