"""In-process TTL cache for session data, with hit/miss counters. **Off by default.**

The cache is per store object: a session changed or deleted by another store, another process or SQL
outside the store (``delete_user`` elsewhere, a second worker, an admin job) is served from it, stale,
until its entry expires. That is why it is off unless asked for: ``LTST_CACHE_TTL=<seconds>`` (or
``cache_of(store).ttl = ...``) turns it on for a deployment where one store writes the sessions it
reads; keep the TTL at one second or less when other processes write them too.

When on, ``get_session`` answers (the session row) are kept per store for ``ttl`` seconds.
``get_session_summary`` is not cached: the summary changes with every message, wherever it is written
from, and is one primary-key read anyway. Every write through the same store that changes a session's
row invalidates that session's entries *after its transaction committed* (what each write
invalidates is declared with the operation: ``invalidates=`` of ``ltst_memory._kernel.operation``);
a read that overlapped such a write does not put its (possibly old) answer in the cache (a
per-session generation counter guards it).

With a read replica (``read_dsn``), a miss that will be cached is read from the primary: an answer
from a lagging replica, cached after this store's own write invalidated the entry, would hide that
write for the whole TTL. With caching off ``get_session`` reads the replica like the other read-only
operations.

Counters: ``store.cache_stats()`` -> ``{"hits", "misses", "hit_rate", "invalidations", "evictions",
"size", "ttl"}``.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["DEFAULT_TTL", "SessionCache"]

logger = logging.getLogger(__name__)

#: Seconds an entry lives; 0 = the cache is off (the default, see the module docstring).
DEFAULT_TTL = 0.0
DEFAULT_MAX_ENTRIES = 10_000


def _ttl_from_env() -> float:
    raw = os.environ.get("LTST_CACHE_TTL")
    if not raw:
        return DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        raise ConfigurationError(f"LTST_CACHE_TTL must be a number of seconds, got {raw!r}") from None
    if ttl < 0:
        raise ConfigurationError("LTST_CACHE_TTL must be >= 0")
    return ttl


class SessionCache:
    """A thread-safe LRU of ``(kind, session_id) -> value`` entries that expire after ``ttl`` seconds."""

    def __init__(self, ttl: float | None = None, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = _ttl_from_env() if ttl is None else float(ttl)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped by clear(): guards reads that overlapped a write of unknown sessions
        self._lock = threading.Lock()
        self.hits = self.misses = self.invalidations = self.evictions = 0

    def generation(self, session_id: str) -> tuple[int, int]:
        with self._lock:
            return self._epoch, self._generation.get(session_id, 0)

    def get(self, kind: str, session_id: str) -> tuple[bool, Any]:
        """``(True, value)`` on a fresh hit, else ``(False, None)``; counts hits and misses."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get((kind, session_id))
            if entry is not None and entry[0] > now:
                self._entries.move_to_end((kind, session_id))
                self.hits += 1
                return True, copy.deepcopy(entry[1])
            if entry is not None:
                del self._entries[(kind, session_id)]
            self.misses += 1
            return False, None

    def put(self, kind: str, session_id: str, value: Any, generation: tuple[int, int]) -> None:
        """Keep ``value`` unless the session was written since ``generation`` was read."""
        if self.ttl <= 0:
            return
        with self._lock:
            if (self._epoch, self._generation.get(session_id, 0)) != generation:
                return
            self._entries[(kind, session_id)] = (time.monotonic() + self.ttl, copy.deepcopy(value))
            self._entries.move_to_end((kind, session_id))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def invalidate(self, session_ids: Iterable[str] | None) -> None:
        """Forget the entries of ``session_ids`` (``None``: of every session)."""
        if session_ids is None:
            self.clear()
            return
        with self._lock:
            for sid in set(session_ids):
                self._generation[sid] = self._generation.get(sid, 0) + 1
                for kind in ("session", "summary"):
                    if self._entries.pop((kind, sid), None) is not None:
                        self.invalidations += 1
            if len(self._generation) > 4 * self.max_entries:  # forget old generations of uncached sessions
                cached = {sid for _, sid in self._entries}
                self._generation = {s: g for s, g in self._generation.items() if s in cached}

    def invalidate_after_write(
        self,
        sessions_changed: Callable[[tuple[Any, ...], Mapping[str, Any]], Iterable[str] | None],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> None:
        """After a write: ``invalidate(sessions_changed(args, kwargs))``, the sessions it may have changed.
        With the cache off and empty (the default) no session is worked out: only the epoch moves, so a
        read that overlapped the write does not cache its answer should the cache be turned on meanwhile."""
        with self._lock:
            if self.ttl <= 0 and not self._entries:
                self._epoch += 1
                return
        self.invalidate(sessions_changed(args, kwargs))

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self.invalidations += len(self._entries)
            self._entries.clear()

    def stats(self) -> dict[str, float]:
        with self._lock:
            total = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hits / total if total else 0.0,
                "invalidations": self.invalidations,
                "evictions": self.evictions,
                "size": len(self._entries),
                "ttl": self.ttl,
            }


def cache_of(store: Any) -> SessionCache:
    """The store's cache (its core's: a user-scoped view of the store shares it)."""
    core = store._core
    if core.cache is None:
        core.cache = SessionCache()
    return core.cache  # type: ignore[no-any-return]


def cache_stats(self: Any) -> dict[str, float]:
    """Counters of the in-process session cache: hits, misses, hit_rate, invalidations, evictions,
    size and ttl (seconds)."""
    return cache_of(self).stats()


def clear_cache(self: Any) -> None:
    """Drop every cached session entry (use after writing sessions outside this store)."""
    cache_of(self).clear()
