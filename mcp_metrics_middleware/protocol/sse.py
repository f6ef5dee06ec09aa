"""Incremental, sans-IO decoder for ``text/event-stream`` under the WHATWG rules.

Feed it chunks exactly as they leave the app; it returns the events that each chunk completes,
and the result never depends on where the stream was cut. Work is O(n) in the stream size: each
byte is looked at a fixed number of times, and a line that spans chunks is kept as a list of
parts and joined once, never re-scanned as it grows. Memory is bounded by ``max_event_size``: an
event whose data is larger is dropped (and counted in ``oversized``), a longer non-data line is
ignored, and the decoder keeps its place in the stream, so the events after them still decode.
Two fast paths (one whole SDK-framed event per chunk; whole events split on blank lines) give the
same result as the line-by-line rules.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    event: bytes  # b"" means the default type, "message"
    data: bytes  # data lines joined with b"\n"
    id: bytes | None


# A buffered line may exceed the event cap by its field name ("data: "), so that the cap applies
# to the event's data, whichever way the stream was chunked.
_FIELD_SLACK = 16
_PIECE = 1024 * 1024
_SDK_PREFIX = b"event: message\r\ndata: "
_new_event = tuple.__new__  # NamedTuple construction without its Python-level __new__


class SSEDecoder:
    __slots__ = (
        "_parts",
        "_parts_size",
        "_skip_line",
        "_after_cr",
        "_first_line",
        "_data",
        "_data_size",
        "_event",
        "_id",
        "_skip_event",
        "max_event_size",
        "oversized",
    )

    def __init__(self, max_event_size: int = 4 * 1024 * 1024) -> None:
        self.max_event_size = max_event_size
        self.oversized = 0  # events dropped because they were larger than max_event_size
        self._parts: list[bytes] = []  # the current incomplete line, in pieces
        self._parts_size = 0
        self._skip_line = False  # the current line is past the cap: discard until its end
        self._after_cr = False  # the previous chunk ended with CR: a leading LF is its pair
        self._first_line = True
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._id: bytes | None = None
        self._skip_event = False

    @property
    def pending(self) -> bool:
        """True when a partial line or an undispatched event is buffered."""
        return bool(self._parts or self._data or self._skip_line or self._skip_event)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk; returns the events it completes."""
        events: list[ServerSentEvent] = []
        if (
            chunk[:22] == _SDK_PREFIX
            and chunk[-4:] == b"\r\n\r\n"
            and not (self._parts or self._data or self._after_cr or self._skip_line)
            and not self._skip_event
            and chunk.find(b"\r", 22, -4) == -1
            and chunk.find(b"\n", 22, -4) == -1
        ):
            # Fast path for the MCP SDKs' framing, one whole event per chunk:
            # b"event: message\r\ndata: <json>\r\n\r\n". Same result as the general path.
            self._first_line = False
            self._skip_event = False
            self._event = b""
            self._data_size = 0
            if len(chunk) - 25 > self.max_event_size:  # the data and its LF, before copying
                self.oversized += 1
                return events
            events.append(_new_event(ServerSentEvent, (b"message", chunk[22:-4], self._id)))
            return events
        if len(chunk) <= _PIECE:
            return self._feed(chunk, events)
        # A huge chunk goes through in pieces (the result does not depend on chunking), so that
        # line splitting never copies more than a piece at a time.
        for i in range(0, len(chunk), _PIECE):
            self._feed(chunk[i : i + _PIECE], events)
        return events

    def _feed(self, chunk: bytes, events: list[ServerSentEvent]) -> list[ServerSentEvent]:
        if not chunk:
            return events
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return events
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                self._after_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" in chunk:
            if self._first_line or not self._clean():
                # Finish the event in progress the general way; whole events follow.
                end = chunk.find(b"\n\n") + 2
                self._general(chunk[:end], events)
                chunk = chunk[end:]
            if self._clean():
                chunk = self._blocks(chunk, events)
        if chunk:
            self._general(chunk, events)
        return events

    def _clean(self) -> bool:
        """Between events: nothing buffered, nothing being skipped."""
        return not (self._parts or self._data or self._skip_line or self._skip_event or self._event or self._first_line)

    def _blocks(self, chunk: bytes, events: list[ServerSentEvent]) -> bytes:
        """Whole events (LF-normalised): the plain ones skip the per-line loop.

        Returns what follows the last blank line, for the general path.
        """
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        cap = self.max_event_size
        for block in blocks:
            if block[:21] == b"event: message\ndata: " and block.find(b"\n", 21) == -1:
                event, offset = b"message", 21
            elif block[:6] == b"data: " and block.find(b"\n", 6) == -1:
                event, offset = b"", 6
            else:
                lines = block.split(b"\n")
                lines.append(b"")  # the blank line that ended the block
                self._lines(lines, 0, events)
                continue
            if len(block) - offset + 1 > cap:
                self.oversized += 1
                continue
            events.append(_new_event(ServerSentEvent, (event, block[offset:], self._id)))
        return rest

    def _general(self, chunk: bytes, events: list[ServerSentEvent]) -> None:
        """Line by line, joining a line split across chunks once."""
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the bytes after the last line ending: an incomplete line, maybe b""
        if lines:
            start = 0
            if self._skip_line:
                # This chunk ends the oversized line; its event was already dropped.
                self._skip_line = False
                start = 1
            elif self._parts:
                parts = self._parts
                parts.append(lines[0])
                size = self._parts_size + len(lines[0])
                self._parts = []
                self._parts_size = 0
                if size > self.max_event_size + _FIELD_SLACK:
                    self._overlong(parts, b"")
                    start = 1
                else:
                    lines[0] = b"".join(parts)
            if self._first_line and start < len(lines):
                self._first_line = False
                if lines[start][:3] == _BOM:
                    lines[start] = lines[start][3:]
            self._lines(lines, start, events)
        if tail and not self._skip_line:
            if self._parts_size + len(tail) > self.max_event_size + _FIELD_SLACK:
                self._overlong(self._parts, tail)
                self._parts = []
                self._parts_size = 0
                self._skip_line = True
            else:
                self._parts.append(tail)
                self._parts_size += len(tail)

    def _lines(self, lines: list[bytes], start: int, events: list[ServerSentEvent]) -> None:
        """The WHATWG per-line rules, for complete lines."""
        cap = self.max_event_size
        line_cap = cap + _FIELD_SLACK
        for i in range(start, len(lines)):
            line = lines[i]
            if not line:
                # Dispatch.
                if self._skip_event:
                    self._skip_event = False
                elif self._data:
                    pieces = self._data
                    events.append(
                        _new_event(
                            ServerSentEvent,
                            (
                                self._event,
                                pieces[0] if len(pieces) == 1 else b"\n".join(pieces),
                                self._id,
                            ),
                        )
                    )
                    self._data = []
                self._data_size = 0
                self._event = b""
                continue
            if line[:5] == b"data:":
                # The common line, sliced once.
                if self._skip_event:
                    continue
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data_size += len(value) + 1
                if self._data_size > cap:
                    self._drop_event()
                    continue
                self._data.append(value)
                continue
            if line[0] == 58:  # b":" - a comment (keep-alive pings)
                continue
            colon = line.find(b":")
            if colon == -1:
                field, value = line, b""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                if self._skip_event:
                    continue
                self._data_size += len(value) + 1
                if self._data_size > cap:
                    self._drop_event()
                    continue
                self._data.append(value)
            elif len(line) > line_cap:
                pass  # an over-long id or event line is ignored, as when it arrives split
            elif field == b"event":
                self._event = value
            elif field == b"id":
                if b"\x00" not in value:
                    self._id = value
            # "retry" and unknown fields are ignored.

    def _overlong(self, parts: list[bytes], tail: bytes) -> None:
        """A line longer than the cap: a data line sinks its event; any other is ignored."""
        prefix = b""
        for part in (*parts, tail):
            prefix += part[:8]
            if len(prefix) >= 8:
                break
        if self._first_line and prefix[:3] == _BOM:
            prefix = prefix[3:]
        if prefix[:5] == b"data:":
            self._drop_event()

    def _drop_event(self) -> None:
        if not self._skip_event:
            self.oversized += 1
        self._skip_event = True
        self._data = []
        self._data_size = 0
