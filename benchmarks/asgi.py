"""Driving an ASGI app in process with synthetic scope, receive and send."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks import wire

_DISCONNECT = {"type": "http.disconnect"}


class Exchange:
    """One request: ``receive`` hands over the body, then blocks until the response has ended
    (as a live connection would) and reports ``http.disconnect``."""

    __slots__ = ("body", "sent_body", "done", "status", "headers", "chunks", "keep")

    def __init__(self, body: bytes, keep: bool = False) -> None:
        self.body = body
        self.sent_body = False
        self.done: asyncio.Event | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] | None = [] if keep else None
        self.keep = keep

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.status >= 0:  # not finished yet: wait like a connection that stays open
            if self.done is None:
                self.done = asyncio.Event()
            await self.done.wait()
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if self.chunks is not None:
                self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.status = -self.status or -1  # finished (status kept as its negative)
                if self.done is not None:
                    self.done.set()
        elif message["type"] == "http.response.start":
            self.status = int(message["status"])
            if self.keep:
                self.headers = list(message.get("headers", ()))


async def call(app: Any, headers: list[tuple[bytes, bytes]], body: bytes, keep: bool = False):
    """Run one request through ``app``; returns the Exchange (status, headers, chunks)."""
    ex = Exchange(body, keep)
    await app(wire.http_scope(headers), ex.receive, ex.send)
    if ex.status < 0:
        ex.status = -ex.status
    return ex


async def call_path(
    app: Any, headers: list[tuple[bytes, bytes]], path: str, keep: bool = True
) -> Exchange:
    """A GET of ``path`` (a scrape of ``/metrics``); the body is kept by default."""
    ex = Exchange(b"", keep)
    await app(wire.http_scope(headers, method="GET", path=path), ex.receive, ex.send)
    if ex.status < 0:
        ex.status = -ex.status
    return ex


def header(ex: Exchange, name: bytes) -> bytes | None:
    for key, value in ex.headers:
        if key.lower() == name:
            return value
    return None
