"""The connections of a store's pools: how they are set up, and the check before each is handed out.

**Set-up** (the pool's ``configure``): pgvector's types, with a shortcut in the binary dumper of numpy
arrays for a 1-d float32 array (an embedder's row: the same bytes as pgvector's, a third of its time),
and a JSON loader that returns ``{}`` for the empty object without running the JSON parser (most
rows' ``metadata``). A replica pool's sessions are
also made read-only with ``default_transaction_read_only``, which holds for statements run outside an
explicit transaction too (read-only operations run that way: ltst_memory/_executor.py).

**Check** (the pool's ``check``): psycopg_pool's ``check_connection`` costs a round trip on every
``getconn``. A connection that fails it when the store uses the embedded server first makes sure the
server runs (ltst_memory/_embedded.py), which a crash or a kill may have stopped. A connection handed
back by this store less than :data:`QUIET_SECONDS` ago, idle, whose socket has nothing to read, skips
it: a server that ends a session (restart, crash, a killed backend, ``idle_session_timeout``) sends an
error message or closes the socket, which makes it readable. Any other connection gets psycopg_pool's
check.

**Order** (:class:`LifoConnectionPool`, :class:`AsyncLifoConnectionPool`: the pools a store opens itself):
the idle connection handed back last is handed out first, a stack (as SQLAlchemy's ``pool_use_lifo``
and node-postgres's pool do), where psycopg_pool hands out the one idle longest. A store that runs one
call at a time then reuses one warm connection (its server process, its prepared statements and kept
cursors in the CPU's caches) instead of cycling through every connection a burst of concurrent calls
opened, and those connections stay idle, so the pool closes them after ``max_idle``.
"""

from __future__ import annotations

import asyncio
import json
import select
import struct
import sys
import time
import weakref
from collections import deque
from typing import Any, overload

import numpy as np
import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format, TransactionStatus
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._connection import heal_embedded

__all__ = [
    "ASYNC_STORE_POOL",
    "CURSORS_KEPT",
    "QUIET_SECONDS",
    "STORE_POOL",
    "AsyncLifoConnectionPool",
    "Float32VectorDumper",
    "LifoConnectionPool",
    "check",
    "check_async",
    "configure",
    "configure_async",
    "configure_replica",
    "configure_replica_async",
    "handed_back",
    "kept",
    "kept_cursor",
]

#: A connection handed back at most this long ago, with a quiet socket, is handed out without a round trip.
QUIET_SECONDS = 10.0

_EMPTY_OBJECT = b"{}"
_READ_ONLY_SESSION = "SET default_transaction_read_only = on"
_kept_aside: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def kept(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """What the store keeps with a pooled connection (the quiet check's state, the executor's cursors),
    by key: the connection's own attributes, or, for a connection that takes none, an entry of a weak
    dictionary that goes with it."""
    attributes = getattr(conn, "__dict__", None)
    return attributes if attributes is not None else _kept_aside.setdefault(conn, {})


#: How many cursors (one per row factory) a pooled connection keeps for the executor.
CURSORS_KEPT = 16


@overload
def kept_cursor(conn: psycopg.Connection[Any], row_factory: Any) -> psycopg.Cursor[Any]: ...
@overload
def kept_cursor(conn: psycopg.AsyncConnection[Any], row_factory: Any) -> psycopg.AsyncCursor[Any]: ...
def kept_cursor(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], row_factory: Any
) -> psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]:
    """The executor's cursor of ``conn`` for ``row_factory``, kept on the connection (:func:`kept`) and
    reused by the calls that run on it: psycopg keeps a cursor's adaptation context (the dumpers it looked
    up for the parameters' types) while the cursor runs the same statement again, so a call spares
    creating a cursor and looking its dumpers up (~5 us in a loop, ~35 us between round trips for
    ``store_message``: docs/benchmarks.md). Only statements that fetch one row use it (a cursor keeps its
    last result until its next statement: at most a row here, never a large read's rows). Beyond
    :data:`CURSORS_KEPT` row factories, a new one."""
    cursors: dict[Any, Any] = kept(conn).setdefault("_ltst_cursors", {})
    cur = cursors.get(row_factory)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=row_factory)
        if len(cursors) < CURSORS_KEPT:
            cursors[row_factory] = cur
    return cur


def loads(data: str | bytes) -> Any:
    """``json.loads``, with a shortcut for ``{}``."""
    return {} if data == _EMPTY_OBJECT else json.loads(data)


_FLOAT32 = np.dtype(np.float32)
_VECTOR_HEAD = struct.Struct(">HH")  # pgvector's binary vector: dimensions, 0, then big-endian float32s
_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


class Float32VectorDumper(Dumper):
    """pgvector's binary dumper of numpy arrays (the ``vector`` type), with a shortcut for a 1-d float32
    array: its bytes byte-swapped, after the header, with no ``pgvector.Vector`` in between (~0.8 us
    instead of ~2.6). Any other array goes to pgvector's dumper (:attr:`fallback`), as before."""

    format = Format.BINARY
    fallback: type[Dumper]  # pgvector's binary dumper of numpy arrays, with its oid (set per connection)

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self._context = context
        self._other: Dumper | None = None

    def dump(self, obj: Any) -> Buffer | None:
        if obj.__class__ is np.ndarray and obj.dtype is _FLOAT32 and obj.ndim == 1:
            data = obj.tobytes() if _NATIVE_BIG_ENDIAN else obj.byteswap().tobytes()
            return _VECTOR_HEAD.pack(obj.shape[0], 0) + data
        if self._other is None:
            self._other = self.fallback(self.cls, self._context)
        return self._other.dump(obj)


def _fast_vectors(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Put :class:`Float32VectorDumper` in front of the binary dumper pgvector registered for numpy
    arrays on ``conn`` (which it then falls back to)."""
    adapters = conn.adapters
    try:
        pgvector_dumper = adapters.get_dumper(np.ndarray, PyFormat.BINARY)
    except psycopg.ProgrammingError:  # (a pgvector that registers no dumper of numpy arrays: nothing to speed up)
        return
    dumper = type(
        "Float32VectorDumper",
        (Float32VectorDumper,),
        {"oid": pgvector_dumper.oid, "fallback": pgvector_dumper, "__module__": __name__},
    )
    adapters.register_dumper(np.ndarray, dumper)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a new connection of a primary pool (or a given pool's, on first use)."""
    register_vector(conn)
    _fast_vectors(conn)
    set_json_loads(loads, conn)


async def configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`configure` for an async connection."""
    await register_vector_async(conn)
    _fast_vectors(conn)
    set_json_loads(loads, conn)


def configure_replica(conn: psycopg.Connection[Any]) -> None:
    """Set up a new connection of a replica pool the store opens: a write routed there by mistake fails,
    even on a server that is not a hot standby."""
    configure(conn)
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(_READ_ONLY_SESSION)
    finally:
        conn.autocommit = autocommit


async def configure_replica_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`configure_replica` for an async connection."""
    await configure_async(conn)
    autocommit = conn.autocommit
    await conn.set_autocommit(True)
    try:
        await conn.execute(_READ_ONLY_SESSION)
    finally:
        await conn.set_autocommit(autocommit)


class _Quiet:
    """What :func:`is_quiet` keeps per connection: when the store handed it back, and a poll object on its
    socket (made once per socket, not per check)."""

    __slots__ = ("fileno", "poller", "returned")

    def __init__(self) -> None:
        self.returned = 0.0
        self.fileno = -1
        self.poller: Any = None


_QUIET = "_ltst_quiet"


def handed_back(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Note that the store is done with ``conn`` (it goes back to its pool now)."""
    on_conn = kept(conn)
    state = on_conn.get(_QUIET)
    if state is None:
        state = on_conn[_QUIET] = _Quiet()
    state.returned = time.monotonic()


def _readable(state: _Quiet, fileno: int) -> bool:
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        readable, _, _ = select.select([fileno], [], [], 0)
        return bool(readable)
    if state.fileno != fileno:
        state.poller = select.poll()
        state.poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
        state.fileno = fileno
    return bool(state.poller.poll(0))


def is_quiet(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` may be handed out without a round trip (see the module's docstring)."""
    state: _Quiet | None = kept(conn).get(_QUIET)
    if state is None or time.monotonic() - state.returned > QUIET_SECONDS:
        return False
    if conn.closed or conn.pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        return not _readable(state, conn.fileno())
    except (OSError, ValueError, psycopg.Error):
        return False


def check(conn: psycopg.Connection[Any]) -> None:
    """The pool's check: raises if ``conn`` is broken (the pool then opens another). An embedded server
    found dead is started again first, so that the pool's next connection succeeds."""
    if not is_quiet(conn):
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            heal_embedded()
            raise


async def check_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`check` for an async pool."""
    if not is_quiet(conn):
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            await asyncio.to_thread(heal_embedded)
            raise


def _latest_first(idle: object) -> None:
    """Put the connection handed back last (the right end of psycopg_pool's deque of idle connections)
    where the pool takes the next one from (the left end); the others keep their order, the one idle
    longest at the left after it (the one psycopg_pool closes first when it shrinks the pool)."""
    if isinstance(idle, deque) and len(idle) > 1:
        idle.rotate(1)


class LifoConnectionPool(ConnectionPool[Any]):
    """psycopg_pool's ``ConnectionPool`` handing out the idle connection handed back last (see the
    module's docstring). It reorders the idle connections, under the pool's lock, just before
    psycopg_pool takes one (``_get_ready_connection``); everything else is psycopg_pool's."""

    def _get_ready_connection(self, timeout: float | None) -> Any:
        _latest_first(self._pool)
        return super()._get_ready_connection(timeout)


class AsyncLifoConnectionPool(AsyncConnectionPool[Any]):
    """:class:`LifoConnectionPool` for asyncio."""

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        _latest_first(self._pool)
        return await super()._get_ready_connection(timeout)


#: The pool classes a store opens: the stacks above, or psycopg_pool's own where its internals differ
#: from what they build on (a pool that works in psycopg_pool's order rather than one that fails).
STORE_POOL: type[ConnectionPool[Any]] = (
    LifoConnectionPool if hasattr(ConnectionPool, "_get_ready_connection") else ConnectionPool
)
ASYNC_STORE_POOL: type[AsyncConnectionPool[Any]] = (
    AsyncLifoConnectionPool if hasattr(AsyncConnectionPool, "_get_ready_connection") else AsyncConnectionPool
)
