"""Bounded tables that return everything they evict, so that nothing leaves them unrecorded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedTable(Generic[K, V]):
    """An insertion-ordered map with a size cap and a time limit.

    Every method that removes entries returns them: the caller records each one. Entries are
    kept in the order they were last touched, so the oldest is always first and expiry looks
    only at the front.
    """

    __slots__ = ("max_size", "timeout", "_entries", "entries")

    def __init__(self, max_size: int, timeout: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.timeout = timeout
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        # Read-only: the same mapping, for a truth test that costs no method call.
        self.entries: Mapping[K, tuple[V, float]] = self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, now: float) -> list[V]:
        """Insert or replace ``key``; returns the replaced value and any evicted to keep the cap."""
        out: list[V] = []
        previous = self._entries.pop(key, None)
        if previous is not None:
            out.append(previous[0])
        while len(self._entries) >= self.max_size:
            out.append(self._entries.popitem(last=False)[1][0])
        self._entries[key] = (value, now)
        return out

    def touch(self, key: K, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], now)
            self._entries.move_to_end(key)

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def pop_prefix(self, prefix: object) -> list[V]:
        """Remove every entry whose key is a tuple starting with ``prefix``."""
        keys = [k for k in self._entries if isinstance(k, tuple) and k and k[0] == prefix]
        return [self._entries.pop(k)[0] for k in keys]

    def expire(self, now: float) -> list[tuple[V, float]]:
        """Remove entries idle for ``timeout`` or longer; returns (value, last touched)."""
        out: list[tuple[V, float]] = []
        entries = self._entries
        while entries:
            value, touched = next(iter(entries.values()))
            if now - touched < self.timeout:
                break
            entries.popitem(last=False)
            out.append((value, touched))
        return out

    def next_deadline(self) -> float | None:
        """When the oldest entry expires, or ``None`` if the table is empty."""
        if not self._entries:
            return None
        return next(iter(self._entries.values()))[1] + self.timeout

    def drain(self) -> list[V]:
        """Remove and return everything."""
        out = [value for value, _ in self._entries.values()]
        self._entries.clear()
        return out
