"""In-process TTL cache for session data, with hit/miss counters. **Off by default.**

The cache is per store object: a session changed or deleted by another store, another process or SQL
outside the store (``delete_user`` elsewhere, a second worker, an admin job) is served from it, stale,
until its entry expires. That is why it is off unless asked for: ``LTST_CACHE_TTL=<seconds>`` (or
``cache_of(store).ttl = ...``) turns it on for a deployment where one store writes the sessions it
reads; keep the TTL at one second or less when other processes write them too.

When on, ``get_session`` answers (the session row) are kept per store for ``ttl`` seconds.
``get_session_summary`` is not cached: the summary changes with every message, wherever it is written
from, and is one primary-key read anyway. Every write through the same store that changes a session's
row (``update_session``, ``update_session_activity``, ``delete_session``, ``store_message(s)``,
``summarize_session``, ``import_messages``, ``delete_user``, ``cleanup_expired_data``) invalidates that
session's entries *after its transaction committed*; a read that overlapped such a write does not put
its (possibly old) answer in the cache (a per-session generation counter guards it).

With a read replica (``read_dsn``), a miss that will be cached is read from the primary: an answer
from a lagging replica, cached after this store's own write invalidated the entry, would hide that
write for the whole TTL. With caching off ``get_session`` reads the replica like the other read-only
operations.

Counters: ``store.cache_stats()`` -> ``{"hits", "misses", "hit_rate", "invalidations", "evictions",
"size", "ttl"}``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ._executor import _signature, is_read_only
from .errors import ConfigurationError
from .models import check_id

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
    """The store's cache, created on first use."""
    cache = store.__dict__.get("_session_cache")
    if cache is None:
        cache = store.__dict__.setdefault("_session_cache", SessionCache())
    return cache  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- which sessions a write touches


def _session_arg(args: tuple[Any, ...], kwargs: dict[str, Any], name: str = "session_id") -> list[str]:
    value = kwargs.get(name, args[0] if args else None)
    return [value] if isinstance(value, str) else []


def _session_object(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    session = kwargs.get("session", args[0] if args else None)
    sid = getattr(session, "session_id", None)
    return [sid] if isinstance(sid, str) else []


def _message_sessions(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    value = kwargs.get("message", kwargs.get("messages", args[0] if args else None))
    items = [value] if hasattr(value, "session_id") else value
    try:
        return [m.session_id for m in items if isinstance(getattr(m, "session_id", None), str)]
    except TypeError:
        return []


def every_session(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """For writes whose sessions are not known up front (e.g. an import from an iterator)."""
    return None


TOUCHES: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], list[str] | None]] = {
    "update_session": _session_object,
    "update_session_activity": _session_arg,
    "delete_session": _session_arg,
    "summarize_session": _session_arg,
    "store_message": _message_sessions,
    "store_messages": _message_sessions,
    "import_messages": every_session,
}


# --------------------------------------------------------------------------- method wrappers


def _wrap(method: Callable[..., Any], doc_from: Callable[..., Any]) -> None:
    method.__doc__ = doc_from.__doc__
    method.__signature__ = inspect.signature(doc_from)  # type: ignore[attr-defined]


def sync_cached(kind: str, op: Callable[..., Any]) -> Callable[..., Any]:
    """A sync store method running ``op(session_id)`` through the cache."""
    readonly = is_read_only(op)

    @functools.wraps(op)
    def method(self: Any, session_id: str) -> Any:
        if session_id.__class__ is not str:  # a list is unhashable: the same ValidationError as the other methods
            check_id("session_id", session_id)
        cache = cache_of(self)
        hit, value = cache.get(kind, session_id)
        if hit:
            return value
        generation = cache.generation(session_id) if isinstance(session_id, str) else (0, 0)
        value = self._run(op(self._core, session_id), readonly=readonly and cache.ttl <= 0)  # module docstring
        if value is not None:
            cache.put(kind, session_id, value, generation)
        return value

    method.__signature__ = _signature(op, inspect.signature(op).return_annotation)  # type: ignore[attr-defined]
    del method.__wrapped__  # type: ignore[attr-defined]
    return method


def async_cached(kind: str, op: Callable[..., Any]) -> Callable[..., Any]:
    """An async store method running ``op(session_id)`` through the cache."""
    readonly = is_read_only(op)

    @functools.wraps(op)
    async def method(self: Any, session_id: str) -> Any:
        if session_id.__class__ is not str:  # a list is unhashable: the same ValidationError as the other methods
            check_id("session_id", session_id)
        cache = cache_of(self)
        hit, value = cache.get(kind, session_id)
        if hit:
            return value
        generation = cache.generation(session_id) if isinstance(session_id, str) else (0, 0)
        value = await self._arun(op(self._core, session_id), readonly=readonly and cache.ttl <= 0)
        if value is not None:
            cache.put(kind, session_id, value, generation)
        return value

    method.__signature__ = _signature(op, inspect.signature(op).return_annotation)  # type: ignore[attr-defined]
    del method.__wrapped__  # type: ignore[attr-defined]
    return method


Touches = Callable[[tuple[Any, ...], dict[str, Any]], "list[str] | None"]


def sync_invalidating(bound: Callable[..., Any], touches: Touches | None = None) -> Callable[..., Any]:
    """Wrap an already bound sync method so the sessions it writes leave the cache after it commits."""
    touches = touches or TOUCHES[bound.__name__]

    @functools.wraps(bound)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        sessions = touches(args, kwargs)
        try:
            return bound(self, *args, **kwargs)
        finally:
            cache_of(self).invalidate(sessions)

    del method.__wrapped__  # type: ignore[attr-defined]
    _wrap(method, bound)
    return method


def async_invalidating(bound: Callable[..., Any], touches: Touches | None = None) -> Callable[..., Any]:
    """Wrap an already bound async method so the sessions it writes leave the cache after it commits."""
    touches = touches or TOUCHES[bound.__name__]

    @functools.wraps(bound)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        sessions = touches(args, kwargs)
        try:
            return await bound(self, *args, **kwargs)
        finally:
            cache_of(self).invalidate(sessions)

    del method.__wrapped__  # type: ignore[attr-defined]
    _wrap(method, bound)
    return method


def cache_stats(self: Any) -> dict[str, float]:
    """Counters of the in-process session cache: hits, misses, hit_rate, invalidations, evictions,
    size and ttl (seconds)."""
    return cache_of(self).stats()


def clear_cache(self: Any) -> None:
    """Drop every cached session entry (use after writing sessions outside this store)."""
    cache_of(self).clear()
