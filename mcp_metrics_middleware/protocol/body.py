"""Body decoding: content types, content-encodings within the cap, chunk assembly, lines.

Sans-IO: bytes in, complete JSON-RPC payloads out. Every buffer is a ``bytearray``, so the heap
cost of a body is its size (plus growth slack), however finely it was chunked; a list of chunks
would cost about 40 bytes of object header per chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from mcp_metrics_middleware.protocol.sse import SSEDecoder

JSON = 1  # application/json, or any +json type
SSE = 2  # text/event-stream
OPAQUE = 3  # anything else: not parsed (text/plain error pages, empty bodies)

ErrorSink = Callable[[str], None]
_PIECE = 64 * 1024  # inflate at most this much at a time


def content_kind(content_type: bytes | None) -> int:
    """The body kind of a ``Content-Type`` value (case-insensitive, parameters ignored)."""
    if content_type is None:
        return OPAQUE
    if content_type == b"application/json" or content_type == b"text/event-stream":
        mime = content_type  # what the SDKs send: no parameters to strip
    else:
        mime = content_type.split(b";", 1)[0].strip().lower()
    if mime == b"text/event-stream":
        return SSE
    if mime == b"application/json" or mime.endswith(b"+json"):
        return JSON
    return OPAQUE


def _inflater(encoding: bytes) -> Any:
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return zlib.decompressobj()
    return None


class BodyReader:
    """A response body, chunk by chunk, as the JSON-RPC payloads it completes.

    JSON bodies yield one payload when they end; SSE bodies yield the data of every event
    whose type is ``message`` (priming events with empty data and comments are skipped),
    except the SDK-serialised notifications, which are counted by method in ``notes``.
    Past ``cap`` bytes, or with an encoding that cannot be decoded, the reader gives up on the
    body (``skipped``) and reports why through ``errors``: ``too_large`` or ``encoding``.
    """

    __slots__ = ("kind", "cap", "errors", "skipped", "_buffer", "_inflate", "sse", "sink", "notes")

    def __init__(
        self,
        kind: int,
        encoding: bytes,
        cap: int,
        errors: ErrorSink,
        sink: Callable[[list[bytes | bytearray]], None] | None = None,
    ) -> None:
        self.kind = kind
        self.sink = sink
        self.notes: dict[bytes, int] = {}  # SSE notifications by method, not yet reported
        self.cap = cap
        self.errors = errors
        self.skipped = False
        self._buffer: bytearray | None = None
        self._inflate: Any = None
        self.sse: SSEDecoder | None = SSEDecoder(cap) if kind == SSE else None
        encoding = encoding.strip().lower()
        if encoding and encoding != b"identity" and kind != OPAQUE:
            self._inflate = _inflater(encoding)
            if self._inflate is None:
                errors("encoding")
                self.skipped = True

    @property
    def lost(self) -> bool:
        """True when some of the body was not decoded (over the cap, or an unknown encoding)."""
        return self.skipped or (self.sse is not None and self.sse.oversized > 0)

    @property
    def pending(self) -> bool:
        """True when part of a message is buffered (the body ended mid-message if it stops here)."""
        if self.sse is not None:
            return self.sse.pending
        return bool(self._buffer)

    def feed(self, data: bytes, more: bool) -> list[bytes | bytearray]:
        """Take one chunk; ``more`` is false on the last one. Returns completed payloads."""
        out: list[bytes | bytearray] = []
        if self.skipped or self.kind == OPAQUE:
            return out
        if self._inflate is not None:
            try:
                if self.sse is not None:
                    self._inflate_events(data, more, out)
                    return out
                data = self._decompress(data, more)
            except zlib.error:
                self.errors("encoding")
                self.skipped = True
                self._buffer = None
                return out
            if self.skipped:
                return out
        if self.sse is not None:
            if data:
                self._events(data, out)
            return out
        if data:
            buffer = self._buffer
            if buffer is None and not more:
                if len(data) > self.cap:
                    self._too_large()
                else:
                    out.append(data)
                return out
            if buffer is None:
                buffer = self._buffer = bytearray()
            if len(buffer) + len(data) > self.cap:
                self._too_large()
                return out
            buffer += data
        if not more and self._buffer:
            out.append(self._buffer)
            self._buffer = None
        return out

    def _too_large(self) -> None:
        self.skipped = True
        self._buffer = None
        self.errors("too_large")

    def _inflate_events(self, data: bytes, more: bool, out: list[bytes | bytearray]) -> None:
        """Inflate a piece (64 KiB) at a time into the SSE decoder.

        A compressed stream may inflate to any size; only its events are capped. Payloads are
        handed to ``sink`` as they complete, so the peak stays bounded however much one chunk
        inflates to.
        """
        inflate = self._inflate
        sink = self.sink
        piece = inflate.decompress(data, _PIECE)
        while True:
            if piece:
                self._events(piece, out)
                if sink is not None and out:
                    sink(out[:])
                    out.clear()
            tail = inflate.unconsumed_tail
            if not tail:
                break
            piece = inflate.decompress(tail, _PIECE)
        if not more:
            rest = inflate.flush()
            if rest:
                self._events(rest, out)

    def _decompress(self, data: bytes, more: bool) -> bytes:
        inflate = self._inflate
        cap = self.cap
        pieces = bytearray(inflate.decompress(data, cap + 1))
        while inflate.unconsumed_tail and len(pieces) <= cap:
            pieces += inflate.decompress(inflate.unconsumed_tail, cap + 1)
        if not more:
            pieces += inflate.flush()
        if self.sse is None and len(pieces) + len(self._buffer or b"") > cap:
            self._too_large()
            return b""
        return bytes(pieces)

    def _events(self, data: bytes, out: list[bytes | bytearray]) -> None:
        sse = self.sse
        assert sse is not None
        oversized = sse.oversized
        # Notifications serialised the SDKs' way are counted by method without being decoded
        # (progress and log notifications can be most of a stream); the rest is handed out.
        payloads, counts = sse.feed_messages(data)
        out.extend(payloads)
        if counts:
            notes = self.notes
            for method, n in counts.items():
                notes[method] = notes.get(method, 0) + n
        if sse.oversized != oversized:
            for _ in range(sse.oversized - oversized):
                self.errors("too_large")


class LineReader:
    """Newline-delimited JSON-RPC (the stdio transport), as complete lines within the cap.

    A line longer than ``cap`` is dropped (reported as ``too_large``); the reader resumes at the
    next newline. Lines are returned without their ``\\n`` (and without a trailing ``\\r``).

    See: https://modelcontextprotocol.io/specification/2025-11-25/basic/transports#stdio
    """

    __slots__ = ("cap", "errors", "_buffer", "_skipping")

    def __init__(self, cap: int, errors: ErrorSink) -> None:
        self.cap = cap
        self.errors = errors
        self._buffer = bytearray()
        self._skipping = False

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or self._skipping

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end == -1:
                break
            piece = data[start:end]
            start = end + 1
            if self._skipping:
                self._skipping = False
                continue
            if self._buffer:
                if len(self._buffer) + len(piece) > self.cap:
                    self._buffer = bytearray()
                    self.errors("too_large")
                    continue
                self._buffer += piece
                piece = bytes(self._buffer)
                self._buffer = bytearray()
            elif len(piece) > self.cap:
                self.errors("too_large")
                continue
            if piece.endswith(b"\r"):
                piece = piece[:-1]
            if piece.strip():
                lines.append(piece)
        rest = data[start:]
        if rest and not self._skipping:
            if len(self._buffer) + len(rest) > self.cap:
                self._buffer = bytearray()
                self._skipping = True
                self.errors("too_large")
            else:
                self._buffer += rest
        return lines
