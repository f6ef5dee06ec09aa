"""The one outcome table: what came back for an operation -> (``error_type``, status code).

Every transport ends its operations through this module, so an outcome means the same thing
whether it was read from an ASGI app, a proxied upstream or a stdio pipe. ``error_type``
follows the OTel MCP semantic conventions: empty if and only if the operation did not fail.

See: https://github.com/open-telemetry/semantic-conventions-genai/blob/main/docs/gen-ai/mcp.md

=========================================  ===============  ===========  =========
What came back                             ``error_type``   code label   vouched
=========================================  ===============  ===========  =========
result                                     ``""``           ``""``       yes
result, ``tools/call``, ``isError: true``  ``tool_error``   ``""``       yes
error -32800 (request cancelled)           ``cancelled``    ``-32800``   yes
error with a caller code (below)           ``""``           the code     no
error with any other integer code          the code         the code     yes
error without an integer code              ``_OTHER``       ``""``       yes
no answer; HTTP 400                        ``""``           ``""``       no
no answer; any other HTTP status >= 400    the status       ``""``       no
2xx ack of a notification                  ``""``           ``""``       yes
the client went away first                 ``cancelled``    ``""``       yes
the server (app) raised                    ``500``          ``""``       yes
answer past the size cap, or undecodable   ``""``           ``""``       no
no answer at all                           ``no_response``  ``""``       yes
``subscriptions/listen`` stream ended      ``""``           ``""``       yes
=========================================  ===============  ===========  =========

*Caller codes* (-32700, -32600, -32601, -32602, -32002, and 2026-07-28's -32020, -32021,
-32022) mean the server refused the request as the caller's mistake; semconv says the server
"SHOULD NOT" count them as errors. An error with a null id answers the whole HTTP request: when
it comes with a status other than 400 (404 "Session not found", for example) the status is
the cause, because the transport or session layer refused the request. An operation that is
not *vouched* for never lends its client-supplied name to a label: a client cannot move a real
tool's numbers with requests the server refused.

A 3xx answer is not an outcome: the request is repeated at the new location, so the operation
is withdrawn, not recorded. A ``resultType: "input_required"`` result (2026-07-28 multi-round
requests) ends a *round*, not the logical call: it is reported with ``error_type`` empty and
``result_type == "input_required"``, and the recorder keeps it out of the operation histogram.
"""

from __future__ import annotations

from typing import Final

CANCELLED_CODE: Final = -32800
# Semconv (server side): -32700, -32600, -32601, -32602 and -32002 "SHOULD NOT be considered
# errors". 2026-07-28 adds the caller's header and version mistakes.
# See: https://modelcontextprotocol.io/specification/2026-07-28/basic/transports (SEP-2243)
CALLER_ERROR_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32002, -32020, -32021, -32022})

OK: Final = ""
TOOL_ERROR: Final = "tool_error"
CANCELLED: Final = "cancelled"
NO_RESPONSE: Final = "no_response"
SERVER_FAILED: Final = "500"
OTHER: Final = "_OTHER"

_STATUS_TEXT = {status: str(status) for status in range(100, 600)}


def of_result(method: str, is_tool_error: bool) -> str:
    """``error_type`` of a ``result``."""
    return TOOL_ERROR if is_tool_error and method == "tools/call" else OK


def of_error(code: int | None) -> tuple[str, bool]:
    """(``error_type``, vouched) of a JSON-RPC error with this ``code``."""
    if code is None:
        return OTHER, True
    if code == CANCELLED_CODE:
        return CANCELLED, True
    if code in CALLER_ERROR_CODES:
        return OK, False
    return str(code), True


def of_status(status: int) -> str:
    """``error_type`` of an HTTP rejection that carried no answer for the operation.

    400 is the caller's malformed request, like -32600; every other status is the cause of a
    failed operation (semantic-conventions-genai proposal #458: ``error.type`` = the status).
    """
    if status == 400:
        return OK
    return _STATUS_TEXT.get(status, OTHER)


def of_whole_request_error(code: int | None, status: int) -> tuple[str, bool]:
    """(``error_type``, vouched) of a null-id error that answers every operation of a request."""
    if status >= 400 and status != 400:
        return of_status(status), False
    # The server could not tie the error to a request: no name in it is vouched for.
    return of_error(code)[0], False
