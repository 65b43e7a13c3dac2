"""Time-ordered message uuids: UUID version 7 (RFC 9562, section 5.7).

Every ``message_uuid`` the store assigns (a message stored with ``message_uuid=None``, one at a time, in
a batch or by a bulk import) is a UUIDv7: 48 bits of Unix time in milliseconds, the version (7), a
42-bit counter, the variant (``10``) and 32 random bits. A new uuid therefore sorts after the ones made
before it, and an append inserts into the rightmost leaf of the ``message_uuid`` unique index instead
of a random one (a random leaf costs a full-page image in the WAL after each checkpoint and a page
that must be in memory).

On Python 3.14 and later :func:`uuid7` is the standard library's ``uuid.uuid7()``. Before, it is this
module's generator, which follows CPython's (Method 1 of RFC 9562, section 6.2): within one millisecond
the counter goes up by one, a new millisecond starts it at a random value whose top bit is 0, and a
clock that goes back keeps the last timestamp, so the uuids of one process are strictly increasing.
Unlike CPython's, the state is kept under a lock (threads never share a counter value) and a process
forked from this one carries on with random counters of its own. :func:`uuid7_bytes` makes ``n`` at once
for bulk imports (raw 16 bytes each, one call to ``os.urandom``), from this module's state (on Python
3.14 the one-at-a-time uuids come from the standard library's: each sequence increases, and the two
are ordered by their millisecond).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import numpy as np

__all__ = ["uuid7", "uuid7_bytes"]

_VERSION_AND_VARIANT = (7 << 76) | (0b10 << 62)
_COUNTER_MAX = (1 << 42) - 1
_COUNTER_START = (1 << 41) - 1  # a fresh counter is random with its top bit 0: room for 2**41 more

_lock = threading.Lock()
_last_ms = -1
_last_counter = 0


def _reset_after_fork() -> None:
    global _lock, _last_ms
    _lock = threading.Lock()  # (held by another thread at fork time: never released in the child)
    _last_ms = -1  # the child starts a random counter of its own rather than follow the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _reserve(n: int) -> tuple[int, int]:
    """Reserve ``n`` consecutive counter values: ``(timestamp_ms, first counter)``."""
    global _last_ms, _last_counter
    now = time.time_ns() // 1_000_000
    with _lock:
        if now > _last_ms:
            ms, counter = now, int.from_bytes(os.urandom(6), "big") & _COUNTER_START
        else:  # the same millisecond, or a clock gone back: the last timestamp, the next counter
            ms, counter = _last_ms, _last_counter + 1
            if counter + n - 1 > _COUNTER_MAX:  # (2**41 uuids in one millisecond) the next millisecond
                ms, counter = ms + 1, int.from_bytes(os.urandom(6), "big") & _COUNTER_START
        _last_ms, _last_counter = ms, counter + n - 1
    return ms, counter


def _uuid7() -> uuid.UUID:
    """A UUIDv7 (see the module's docstring)."""
    ms, counter = _reserve(1)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | (counter >> 30) << 64
        | (counter & 0x3FFF_FFFF) << 32
        | int.from_bytes(os.urandom(4), "big")
        | _VERSION_AND_VARIANT
    )
    return uuid.UUID(int=value)


uuid7 = getattr(uuid, "uuid7") if sys.version_info >= (3, 14) else _uuid7  # noqa: B009


def uuid7_bytes(n: int) -> list[bytes]:
    """``n`` UUIDv7s as 16 raw bytes each, increasing (one timestamp, consecutive counters)."""
    if n <= 0:
        return []
    ms, first = _reserve(n)
    counters = np.arange(first, first + n, dtype=np.uint64)
    tails = np.frombuffer(os.urandom(4 * n), dtype=np.uint32).astype(np.uint64)
    high = np.uint64((ms & 0xFFFF_FFFF_FFFF) << 16 | 0x7000) | (counters >> np.uint64(30))
    low = np.uint64(0b10 << 62) | ((counters & np.uint64(0x3FFF_FFFF)) << np.uint64(32)) | tails
    data = np.stack([high, low], axis=1).astype(">u8").tobytes()
    return [data[i : i + 16] for i in range(0, 16 * n, 16)]
