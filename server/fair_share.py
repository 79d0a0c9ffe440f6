"""A byte-budgeted LRU shared by users, where one user's new entries cannot push out another's.

Every entry is held by the users who stored or used it; its bytes count against each holder equally.
When the budget is full, an insert evicts, least recently used first, only entries whose every holder
is the inserting user or holds more than a fair share: the budget divided by the number of users
holding entries (the inserter included). A user within their share keeps their entries whatever
others store; a user alone on the server may use the whole budget. When nothing may be evicted the
insert is refused (`Full`) and the caller decides: an upload is answered RESOURCE_EXHAUSTED with a
retry hint, an embedding is used once and not kept.

The acting user (`acting_user`, set by the scheduler around each job with `run_as`) is the user a
cache entry is stored or used for.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

SERVER_USER = "server"
"""The acting user of model work outside any request (precompute, evaluation, tests)."""
_acting_user: ContextVar[str] = ContextVar("slidesam_acting_user", default=SERVER_USER)


def acting_user() -> str:
    """The user whose job the model thread is running: what it caches is held on their behalf."""
    return _acting_user.get()


def run_as(user: str, function: Callable[[], T]) -> T:
    """Runs `function` with `user` as the acting user."""
    token = _acting_user.set(user)
    try:
        return function()
    finally:
        _acting_user.reset(token)


class Full(Exception):
    """No room for an entry without evicting entries of users within their fair share."""

    def __init__(self, needed: int, free: int, share: int):
        super().__init__(f"needs {needed} bytes; {free} are free and the rest is held by users within their share ({share} bytes each)")
        self.needed, self.free, self.share = needed, free, share


@dataclass
class _Entry(Generic[V]):
    value: V
    size: int
    holders: set[str] = field(default_factory=set)


class FairShareLRU(Generic[K, V]):
    """Entries by key within budget_bytes (see the module's docstring for who may evict what). Thread-safe."""

    def __init__(self, budget_bytes: int, size_of: Callable[[V], int]):
        if budget_bytes <= 0:
            raise ValueError("the budget must be positive")
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: K, user: str | None = None) -> V | None:
        """The value, marked most recently used (and held by user, when given); None when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            if user is not None:
                entry.holders.add(user)
            return entry.value

    def put(self, key: K, value: V, user: str) -> None:
        """Stores value for user, replacing the key's value (whose holders it keeps) if there is one.

        Raises Full when no room may be made for user (always for a value larger than the whole budget).
        """
        with self._lock:
            holders = {user}
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.size
                holders |= previous.holders
            self._insert(key, value, holders, user)

    def setdefault(self, key: K, value: V, user: str) -> V:
        """The key's value if there is one (now held by user too), else value, stored for user as put does."""
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:
                existing.holders.add(user)
                self._entries.move_to_end(key)
                return existing.value
            self._insert(key, value, {user}, user)
            return value

    def _insert(self, key: K, value: V, holders: set[str], user: str) -> None:
        size = self._size_of(value)
        if size > self.budget_bytes:
            raise Full(size, self.budget_bytes - self._bytes, self.budget_bytes)
        while self._bytes + size > self.budget_bytes:
            victim = self._evictable(user)
            if victim is None:
                raise Full(size, self.budget_bytes - self._bytes, self._share(user))
            self._bytes -= self._entries.pop(victim).size
            self.evictions += 1
        self._entries[key] = _Entry(value, size, holders)
        self._bytes += size

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._bytes -= entry.size
            return entry.value

    def clear(self) -> int:
        """Forgets every entry; returns how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            self.evictions += count
            return count

    def held_by(self) -> dict[str, int]:
        """Bytes each user holds (shared entries split equally between their holders)."""
        with self._lock:
            return self._holdings()

    def _holdings(self) -> dict[str, int]:
        holdings: dict[str, float] = {}
        for entry in self._entries.values():
            for holder in entry.holders:
                holdings[holder] = holdings.get(holder, 0) + entry.size / len(entry.holders)
        return {user: round(size) for user, size in holdings.items()}

    def _share(self, user: str) -> int:
        users = set(self._holdings()) | {user}
        return self.budget_bytes // len(users)

    def _evictable(self, user: str) -> K | None:
        """The least recently used key whose every holder is user or above the fair share."""
        holdings = self._holdings()
        share = self.budget_bytes // len(set(holdings) | {user})
        for key, entry in self._entries.items():
            if all(holder == user or holdings[holder] > share for holder in entry.holders):
                return key
        return None
