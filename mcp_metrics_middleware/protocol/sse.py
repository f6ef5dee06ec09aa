"""Incremental, sans-IO decoder for ``text/event-stream`` under the WHATWG rules.

Contract (what the core consumes):

* ``SSEDecoder(max_event_size)``; ``feed(chunk) -> list[ServerSentEvent]`` returns the events
  that ``chunk`` completes, in stream order. ``ServerSentEvent.data`` is always ``bytes`` (the
  data lines joined with LF), ``event`` is ``bytes`` (``b""`` is the default type, "message"),
  ``id`` is the last event ID (``bytes | None``). The result never depends on where the stream
  was cut.
* ``feed_messages(chunk) -> (payloads, notifications)`` is the same stream seen the way the
  middleware consumes it: events of another type than "message" and events with empty data are
  skipped; a notification serialised the SDKs' way (``{"jsonrpc":"2.0","method":"notifications/``)
  is counted by method in ``notifications`` (``dict[bytes, int]``, the method read without
  decoding, exactly as ``notification_method`` does); every other payload is in ``payloads``, in
  stream order, for JSON decoding. Use one of ``feed`` or ``feed_messages`` per decoder.
* ``pending`` is true while a partial line or an undispatched event is buffered (a stream that
  ends there was truncated); ``oversized`` counts the events dropped for size.

Size and memory: an event whose data (joined, plus one) is larger than ``max_event_size`` is
dropped and counted in ``oversized``; a longer non-data line is ignored; the decoder keeps its
place in the stream, so the events after them still decode. The real heap cost is bounded, not
only the payload bytes: a partial line is one ``bytearray`` (never a list of small pieces), the
data of an event is one ``bytes`` or, from its second data line, one ``bytearray``, so an event
never holds more than about ``max_event_size`` bytes plus its dispatch copy, however it is
chunked; a huge chunk is decoded in 64 KiB pieces, so the per-line objects of one piece are the
only other transient cost. Work is O(n): each byte is looked at a fixed number of times.

Speed: the per-line Python loop costs about 0.1-0.3 µs per line, so whole runs of events in the
common framings are checked and split in bulk with a few C-level calls per chunk (see ``_bulk``):
``H payload T`` repeated (the SDKs' ``event: message`` + ``data:`` framing, or ``data:`` alone,
with CRLF, LF or CR line endings) and the TypeScript SDK's ``event: message\\nid: X\\ndata: P``.
A run is taken in bulk only when the checks prove the line-by-line rules give the same events.
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    event: bytes  # b"" means the default type, "message"
    data: bytes  # data lines joined with b"\n"
    id: bytes | None


# A buffered line may exceed the event cap by its field name ("data: "), so that the cap applies
# to the event's data, whichever way the stream was chunked.
_FIELD_SLACK = 16
_PIECE = 64 * 1024
_SDK_PREFIX = b"event: message\r\ndata: "
_NOTIFICATION_PREFIX = b'{"jsonrpc":"2.0","method":"notifications/'
_TS_HEAD = b"event: message\nid: "
_TS_SEP = b"\n\nevent: message\nid: "
_TS_DATA = b"\ndata: "
_new_event = tuple.__new__  # NamedTuple construction without its Python-level __new__
_find = bytes.find


def notification_method(payload: bytes) -> bytes | None:
    """The method of a notification serialised the SDKs' way, read without decoding it."""
    if payload[:41] == _NOTIFICATION_PREFIX:
        end = payload.find(b'"', 27, 27 + 128)
        if end != -1 and payload.find(b"\\", 27, end) == -1:
            return payload[27:end]
    return None


def sdk_event(chunk: bytes, max_event_size: int) -> bytes | None:
    """The data of a chunk that is exactly one event in the SDKs' framing, else ``None``.

    ``b"event: message\r\ndata: <data>\r\n\r\n"`` with no other line break, and data within
    ``max_event_size`` (as :class:`SSEDecoder` counts it, before anything is copied): a
    decoder at an event boundary would dispatch exactly this one "message" event with this
    data (``b""``: a priming event, which is skipped), so a caller that has seen only such
    chunks may skip the decoder (see :meth:`SSEDecoder.resume` for handing over to one).
    """
    if (
        chunk[:22] == _SDK_PREFIX
        and chunk[-4:] == b"\r\n\r\n"
        and len(chunk) - 25 <= max_event_size  # the data and its LF
        and _find(chunk, b"\r", 22, -4) == -1
        and _find(chunk, b"\n", 22, -4) == -1
    ):
        return chunk[22:-4]
    return None


# The bulk framings, by the terminator of the chunk's line endings: (head, event type).
_HEADS = {
    terminator: (
        (b"event: message" + terminator[: len(terminator) // 2] + b"data: ", b"message"),
        (b"data: ", b""),
    )
    for terminator in (b"\r\n\r\n", b"\n\n", b"\r\r")
}


class SSEDecoder:
    __slots__ = (
        "_line",
        "_skip_line",
        "_after_cr",
        "_first_line",
        "_data",
        "_data_size",
        "_event",
        "_id",
        "_skip_event",
        "_payloads",
        "_counts",
        "_methods",
        "max_event_size",
        "oversized",
    )

    def __init__(self, max_event_size: int = 4 * 1024 * 1024) -> None:
        self.max_event_size = max_event_size
        self.oversized = 0  # events dropped because they were larger than max_event_size
        self._line = bytearray()  # the current incomplete line
        self._skip_line = False  # the current line is past the cap: discard until its end
        self._after_cr = False  # the previous piece ended with CR: a leading LF is its pair
        self._first_line = True
        self._data: bytes | bytearray | None = None  # one data line, or several joined by LF
        self._data_size = 0
        self._event = b""
        self._id: bytes | None = None
        self._skip_event = False
        self._payloads: list[bytes] | None = None  # set during feed_messages
        self._counts: dict[bytes, int] = {}
        # Notification methods seen, most recent first: the bulk path counts these by search.
        self._methods: list[bytes] = [b"progress", b"message"]

    def resume(self) -> None:
        """Decode from here as the continuation of a stream that has begun (at an event boundary).

        Only the first line of a stream may start with a byte order mark, so one is not stripped.
        """
        self._first_line = False

    @property
    def pending(self) -> bool:
        """True when a partial line or an undispatched event is buffered."""
        return bool(self._line or self._data is not None or self._skip_line or self._skip_event)

    @property
    def _parts_size(self) -> int:
        """Bytes of the buffered partial line (the name the older tests know it by)."""
        return len(self._line)

    # -- public entry points ------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk; returns the events it completes."""
        events: list[ServerSentEvent] = []
        payload = self._one_sdk_event(chunk)
        if payload is not None:
            events.append(_new_event(ServerSentEvent, (b"message", payload, self._id)))
            return events
        self._run(chunk, events)
        return events

    def feed_messages(self, chunk: bytes) -> tuple[list[bytes], dict[bytes, int]]:
        """Decode one chunk the way the middleware consumes it (see the module docstring)."""
        payload = self._one_sdk_event(chunk)
        if payload is not None:
            # The SDKs' one-event chunk, answered without the general bookkeeping (measured:
            # 3.0 -> about 1.2 us per progress event).
            if not payload:  # b"": a priming event
                return [], {}
            method = notification_method(payload)
            if method is None:
                return [payload], {}
            methods = self._methods
            if not methods or methods[0] != method[14:]:
                self._learn(method[14:])
            return [], {method: 1}
        payloads: list[bytes] = []
        counts: dict[bytes, int] = {}
        events: list[ServerSentEvent] = []
        self._payloads = payloads
        self._counts = counts
        try:
            self._run(chunk, events)
            self._classify(events)
        finally:
            self._payloads = None
            self._counts = {}
        if counts:
            return payloads, {b"notifications/" + m: n for m, n in counts.items()}
        return payloads, counts

    # -- internals ----------------------------------------------------------------------------

    def _one_sdk_event(self, chunk: bytes) -> bytes | None:
        """The MCP SDKs' framing, one whole event per chunk: its data, or None (not that shape).

        Same result as the general path, which takes every other chunk (an oversized event too).
        """
        if self._line or self._data is not None or self._after_cr or self._skip_line or self._skip_event:
            return None
        payload = sdk_event(chunk, self.max_event_size)
        if payload is not None:
            self._first_line = False
            self._event = b""
            self._data_size = 0
        return payload

    def _classify(self, events: list[ServerSentEvent]) -> None:
        payloads = self._payloads
        assert payloads is not None
        counts = self._counts
        for event in events:
            payload = event.data
            if not payload or (event.event and event.event != b"message"):
                continue  # priming events (empty data) and other event types carry no JSON-RPC
            method = notification_method(payload)
            if method is None:
                payloads.append(payload)
            else:
                method = method[14:]
                counts[method] = counts.get(method, 0) + 1
                self._learn(method)
        events.clear()

    def _learn(self, method: bytes) -> None:
        methods = self._methods
        if not methods or methods[0] != method:
            if method in methods:
                methods.remove(method)
            elif len(methods) >= 8:
                methods.pop()
            methods.insert(0, method)

    def _run(self, chunk: bytes, events: list[ServerSentEvent]) -> None:
        if len(chunk) <= _PIECE:
            self._feed(chunk, events)
            return
        # A huge chunk goes through in pieces (the result does not depend on chunking), so that
        # the per-line objects of one piece are all that exists at a time.
        for i in range(0, len(chunk), _PIECE):
            self._feed(chunk[i : i + _PIECE], events)

    def _feed(self, chunk: bytes, events: list[ServerSentEvent]) -> None:
        n = len(chunk)
        pos = 0
        if not n:
            return
        if self._after_cr:
            self._after_cr = False
            if chunk[0] == 10:
                pos = 1
                if n == 1:
                    return
        if self._line or self._skip_line:
            pos = self._finish_line(chunk, pos, events)
            if pos >= n:
                return
        # At a line start. The chunk's line endings pick the bulk framing.
        if chunk.find(b"\r", pos) == -1:
            terminator = b"\n\n"
        elif chunk.find(b"\n", pos) == -1:
            terminator = b"\r\r"
        else:
            terminator = b"\r\n\r\n"
        last = chunk.rfind(terminator, pos)
        if last != -1:
            end = last + len(terminator)
            if self._data is not None or self._event or self._skip_event or self._first_line:
                # Finish the event in progress line by line: the first blank line ends it.
                head = chunk.find(terminator, pos) + len(terminator)
                self._general(chunk[pos:head], events)
                pos = head
                if self._after_cr and pos < n:
                    self._after_cr = False
                    if chunk[pos] == 10:
                        pos += 1
            if end > pos and self._bulk(chunk, pos, end, terminator, events):
                pos = end
                if terminator[-1] == 13:  # a CR ends the run: an LF after it is its pair
                    if end == n:
                        self._after_cr = True
                    elif chunk[end] == 10:
                        pos += 1
        if pos < n:
            self._general(chunk[pos:] if pos else chunk, events)

    def _bulk(
        self,
        chunk: bytes,
        start: int,
        end: int,
        terminator: bytes,
        events: list[ServerSentEvent],
    ) -> bool:
        """Whole events in ``chunk[start:end]``, decoded without the per-line loop.

        ``start`` is an event boundary (nothing buffered), ``end`` follows a blank line. Returns
        False, having done nothing, unless the run has one of the bulk shapes:

        * ``H P T H P T ... H P T`` with ``H`` = ``event: message<NL>data: `` or ``data: ``,
          ``T`` = two line endings. After splitting on ``T H``, no payload may hold a CR or LF:
          then every line is the head's event line, a data line or the blank line, exactly.
        * ``event: message\\nid: I\\ndata: P\\n\\n`` (TypeScript SDK): each piece between the
          event heads holds exactly one LF (first == last), followed by ``data: ``.
        """
        for head, event_type in _HEADS[terminator]:  # noqa: B007 - the loop finds the pair
            if chunk.startswith(head, start):
                break
        else:
            if terminator == b"\n\n" and chunk.startswith(_TS_HEAD, start):
                return self._bulk_ts(chunk, start, end, events)
            return False
        inner = chunk[start + len(head) : end - len(terminator)]
        separator = terminator + head
        payloads = inner.split(separator)
        joined = b"".join(payloads) if len(payloads) > 1 else inner
        if b"\n" in joined or b"\r" in joined:
            return False
        if end - start > self.max_event_size and max(map(len, payloads)) >= self.max_event_size:
            return False  # an oversized event: the line path drops it
        self._first_line = False
        if self._payloads is None:
            new, event_id = _new_event, self._id
            events.extend([new(ServerSentEvent, (event_type, p, event_id)) for p in payloads])
            return True
        if events:
            self._classify(events)  # keep the payloads in stream order
        self._count(inner, separator, True, payloads)
        return True

    def _bulk_ts(self, chunk: bytes, start: int, end: int, events: list[ServerSentEvent]) -> bool:
        if chunk.find(b"\x00", start, end) != -1:
            return False  # an id with NUL is ignored: the line path knows
        inner = chunk[start + len(_TS_HEAD) : end - 2]
        pieces = inner.split(_TS_SEP)
        firsts = list(map(_find, pieces, repeat(b"\n")))
        # Every piece has an LF, and the pieces hold as many LFs as there are pieces (each
        # separator holds three): so each piece holds exactly one, between its id and its data.
        if -1 in firsts or inner.count(b"\n") != 4 * len(pieces) - 3:
            return False  # a piece without its data line, or with more lines than id and data
        cap = self.max_event_size
        if end - start > cap and any(len(p) - f - 7 >= cap for p, f in zip(pieces, firsts, strict=True)):
            return False
        counting = self._payloads is not None
        if not (counting and self._count(inner, _TS_DATA, False, None, len(pieces))):
            if inner.count(_TS_DATA) != len(pieces):
                return False  # some id line is followed by another field than "data: "
            if counting:
                if events:
                    self._classify(events)
                self._count(
                    inner,
                    _TS_DATA,
                    False,
                    [p[f + 7 :] for p, f in zip(pieces, firsts, strict=True)],
                )
            else:
                new = _new_event
                events.extend(
                    [new(ServerSentEvent, (b"message", p[f + 7 :], p[:f])) for p, f in zip(pieces, firsts, strict=True)]
                )
        self._first_line = False
        last = pieces[-1]
        self._id = last[: firsts[-1]]
        return True

    def _count(
        self,
        text: bytes,
        separator: bytes,
        at_start: bool,
        payloads: list[bytes] | None,
        n: int = 0,
    ) -> bool:
        """Count the notifications among the payloads in ``text``, each preceded by
        ``separator`` (the first one at offset 0 instead, if ``at_start``), by search.

        When every payload is a notification of a known method, counts them and returns True.
        Otherwise, without ``payloads`` (``n`` of them), returns False having changed nothing;
        with them, goes through ``payloads`` one by one.
        """
        if payloads is not None:
            n = len(payloads)
        counts = self._counts
        found: list[tuple[bytes, int]] = []
        remaining = n
        for method in self._methods:
            key = _NOTIFICATION_PREFIX + method + b'"'
            c = text.count(separator + key)
            if at_start and text.startswith(key):
                c += 1
            if c:
                found.append((method, c))
                remaining -= c
                if remaining <= 0:
                    break
        if remaining == 0:
            for method, c in found:
                counts[method] = counts.get(method, 0) + c
            return True
        if payloads is None:
            return False
        out = self._payloads
        assert out is not None
        for payload in payloads:
            if not payload:
                continue
            full = notification_method(payload)
            if full is None:
                out.append(payload)
            else:
                method = full[14:]
                counts[method] = counts.get(method, 0) + 1
                self._learn(method)
        return True

    def _finish_line(self, chunk: bytes, pos: int, events: list[ServerSentEvent]) -> int:
        """Complete the buffered line with the start of ``chunk``; returns where the next line
        starts (``len(chunk)`` when the line goes on)."""
        n = len(chunk)
        cr = chunk.find(b"\r", pos)
        lf = chunk.find(b"\n", pos)
        if cr == -1 or (lf != -1 and lf < cr):
            eol = lf
        else:
            eol = cr
        if eol == -1:
            if not self._skip_line:
                self._extend(chunk[pos:] if pos else chunk)
            return n
        nxt = eol + 1
        if eol == cr:
            if nxt == n:
                self._after_cr = True
            elif chunk[nxt] == 10:
                nxt += 1
        if self._skip_line:
            self._skip_line = False  # the over-long line ends here; its event was handled
            return nxt
        if self._extend(chunk[pos:eol]):
            self._complete(events)
        else:
            self._skip_line = False
        return nxt

    def _extend(self, piece: bytes) -> bool:
        """Add to the buffered line; past the cap, the line is over-long: returns False."""
        line = self._line
        if len(line) + len(piece) > self.max_event_size + _FIELD_SLACK:
            self._overlong(line, piece)
            self._line = bytearray()
            self._skip_line = True
            return False
        line += piece
        return True

    def _complete(self, events: list[ServerSentEvent]) -> None:
        """The buffered line is complete: apply it."""
        line = self._line
        self._line = bytearray()
        if self._first_line:
            self._first_line = False
            if line[:3] == _BOM:
                del line[:3]
        if line[:5] == b"data:":
            # A long line (the common reason to buffer): one copy out of the buffer.
            if not self._skip_event:
                self._data_line(bytes(memoryview(line)[6 if line[5:6] == b" " else 5 :]))
        else:
            self._lines([bytes(line)], 0, events)

    def _data_line(self, value: bytes) -> None:
        self._data_size += len(value) + 1
        if self._data_size > self.max_event_size:
            self._drop_event()
            return
        data = self._data
        if data is None:
            self._data = value
        elif type(data) is bytes:
            joined = bytearray(data)
            joined += b"\n"
            joined += value
            self._data = joined
        else:
            data += b"\n"
            data += value

    def _general(self, span: bytes, events: list[ServerSentEvent]) -> None:
        """Line by line, for a span that starts at a line start with nothing buffered."""
        if self._after_cr:
            self._after_cr = False
            if span[:1] == b"\n":
                span = span[1:]
                if not span:
                    return
        lines = span.splitlines()
        last = span[-1]
        if last == 13:
            self._after_cr = True
        tail = None if last == 13 or last == 10 else lines.pop()
        if lines:
            if self._first_line:
                self._first_line = False
                if lines[0][:3] == _BOM:
                    lines[0] = lines[0][3:]
            self._lines(lines, 0, events)
        if tail is not None:
            if len(tail) > self.max_event_size + _FIELD_SLACK:
                self._overlong(self._line, tail)
                self._skip_line = True
            else:
                self._line = bytearray(tail)

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
                elif self._data is not None:
                    data = self._data
                    events.append(
                        _new_event(
                            ServerSentEvent,
                            (
                                self._event,
                                data if type(data) is bytes else bytes(data),
                                self._id,
                            ),
                        )
                    )
                    self._data = None
                self._data_size = 0
                self._event = b""
                continue
            if line[:5] == b"data:":
                # The common line, sliced once.
                if self._skip_event:
                    continue
                v = line[6:] if line[5:6] == b" " else line[5:]
            elif line[0] == 58:  # b":" - a comment (keep-alive pings)
                continue
            else:
                colon = line.find(b":")
                if colon == -1:
                    field, v = line, b""
                else:
                    field = line[:colon]
                    v = line[colon + 1 :]
                    if v[:1] == b" ":
                        v = v[1:]
                if field != b"data":
                    if len(line) > line_cap:
                        pass  # an over-long id or event line is ignored, as when it arrives split
                    elif field == b"event":
                        self._event = v
                    elif field == b"id":
                        if b"\x00" not in v:
                            self._id = v
                    # "retry" and unknown fields are ignored.
                    continue
                if self._skip_event:
                    continue
            # A data line: append its value to the event's data.
            self._data_size += len(v) + 1
            if self._data_size > cap:
                self._drop_event()
                continue
            buffered = self._data
            if buffered is None:
                self._data = v
            elif type(buffered) is bytes:
                joined = bytearray(buffered)
                joined += b"\n"
                joined += v
                self._data = joined
            else:
                buffered += b"\n"
                buffered += v

    def _overlong(self, line: bytearray, tail: bytes) -> None:
        """A line longer than the cap: a data line sinks its event; any other is ignored."""
        prefix = bytes(line[:8]) + tail[:8]
        if self._first_line:
            self._first_line = False
            if prefix[:3] == _BOM:
                prefix = prefix[3:]
        if prefix[:5] == b"data:":
            self._drop_event()

    def _drop_event(self) -> None:
        if not self._skip_event:
            self.oversized += 1
        self._skip_event = True
        self._data = None
        self._data_size = 0
