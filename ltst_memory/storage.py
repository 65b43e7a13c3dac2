# Generated from ltst_memory/storage_async.py by `python -m ltst_memory._codegen` (ltst_memory/_unasync.py).
# Do not edit: change storage_async.py and regenerate.
"""``ConversationStorage``: the synchronous store.

Generated from ``storage_async.py`` (do not edit) by ``python -m ltst_memory._codegen`` (ltst_memory/_unasync.py).
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from . import _declared, _pooled, cache, scoped
from . import _ops as ops
from ._acompat import blocking, finish, gather, sleep, start
from ._connection import (
    ROW_FACTORY,
    acquire_embedded,
    pool_timeout_error,
    redact,
    release_embedded,
    unavailable,
)
from ._executor import (
    REPLICA_CHECK_TIMEOUT,
    REPLICA_LAG,
    REPLICA_UNKNOWN_RETRY,
    ReplicaHealth,
    check_open,
    check_outside_transaction,
    check_replica,
    describe,
    is_read_only,
    make_core,
    needs_transaction,
    on_replica,
    pool_sizes,
    prepare_database,
    primary_reads,
    resolve_settings,
    result_of,
    results_or_first_error,
)
from ._kernel import Call, Commit, Copy, Core, Embed, Op, Operation, Parallel, Pending, Query, R
from ._sqlstate import CLASSIFIED, classify
from .config import Settings
from .embeddings import Embedder, embed_checked, warm_up
from .errors import ConfigurationError, EmbeddingError, LTSTError
from .migrate import migrate
from .models import check_id
from .stats import track_operation

if TYPE_CHECKING:  # the names in the annotations of the generated methods
    # BEGIN GENERATED imports (python -m ltst_memory._codegen; do not edit)
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from datetime import datetime
    from typing import Any

    from .bulk import BulkResult
    from .models import (
        ConversationContext,
        ConversationMessage,
        ConversationSession,
        SessionRelationship,
        SessionSummary,
        UserPreference,
    )
    from .privacy import ErasureResult
    from .recall import RecallScope
    from .rehydrate import RehydrationResult
    from .retention import RetentionPolicy
    from .tokens import TokenCounter
    # END GENERATED imports

P = ParamSpec("P")

__all__ = ["ConversationStorage"]

logger = logging.getLogger(__name__)


class ConversationStorage:
    """Conversation memory on PostgreSQL + pgvector (synchronous API).

    The database is, in order: ``dsn``, ``LTST_DATABASE_URL``, ``DATABASE_URL``, else an embedded
    PostgreSQL server in ``data_dir`` / ``LTST_DATA_DIR`` / the user data directory. You may also hand
    over your own psycopg ``ConnectionPool`` as ``pool`` (the store does not close it). The schema is
    migrated on open unless ``auto_migrate=False``. Use it as a context manager or call :meth:`close`.

    ``read_dsn`` (or ``LTST_READ_DATABASE_URL``, or your own ``read_pool``) names a read replica: the
    reads of sessions, messages, context, preferences and relationships, ``search_messages``,
    ``recall`` and ``rehydrate`` run there, everything else on the primary. Replica reads may lag:
    ``with store.primary:`` reads the primary (docs/scaling.md).

    ``warm=True`` loads the embedding model while the store opens (the first embedding otherwise
    pays for it: a few hundred milliseconds for the bundled model, seconds with torch).

    Every method that writes runs in one transaction (or one statement): a call either fully happens or
    changes nothing.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        data_dir: str | Path | None = None,
        embedder: Embedder | None = None,
        pool: ConnectionPool[Any] | None = None,
        read_dsn: str | None = None,
        read_pool: ConnectionPool[Any] | None = None,
        settings: Settings | None = None,
        auto_migrate: bool | None = None,
        max_content_chars: int | None = None,
        pool_max_size: int | None = None,
        warm: bool = False,
    ) -> None:
        self._settings = resolve_settings(
            dsn,
            data_dir,
            settings,
            {
                "auto_migrate": auto_migrate,
                "max_content_chars": max_content_chars,
                "pool_max_size": pool_max_size,
                "read_dsn": read_dsn,
            },
        )
        if read_dsn is not None and read_pool is not None:
            raise ConfigurationError("pass read_dsn or read_pool, not both")
        self._core = make_core(self._settings, embedder)
        self._warm = warm
        self._given_pool = pool
        self._pool: ConnectionPool[Any] | None = None
        self._owns_pool = pool is None
        self._given_read_pool = read_pool
        self._read_pool: ConnectionPool[Any] | None = None  # None: every operation runs on the primary
        self._read_conninfo = "" if read_pool is not None else (self._settings.read_dsn or "")
        self._replica_health = ReplicaHealth(self._settings)
        self._embedded_dir: Path | None = None
        self._conninfo = ""
        self._closed = True
        self._registered: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._open()  # the sync store opens here

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        opened: list[ConnectionPool[Any]] = []
        try:
            pool = self._given_pool
            if pool is None:
                pool = self._open_pool(opened)
            read_pool = self._open_read_pool(opened)
        except BaseException:
            for opened_pool in opened:
                opened_pool.close()
            self._release_embedded()
            raise
        self._pool = pool
        self._read_pool = read_pool
        self._closed = False
        if read_pool is not None:
            self._replica_takes_reads()  # its lag now (a warning if reads start on the primary)
        if self._warm:
            blocking(warm_up, self._core.embedder)
        logger.info("ltst-memory store open on %s", self.dsn)
        if read_pool is not None:
            logger.info("ltst-memory store reads on replica %s", self.read_dsn)

    def _open_pool(self, opened: list[ConnectionPool[Any]]) -> ConnectionPool[Any]:
        conninfo = self._settings.dsn
        if conninfo is None:
            self._embedded_dir = self._settings.data_dir
            conninfo = blocking(acquire_embedded, self._embedded_dir)
        self._conninfo = conninfo
        blocking(prepare_database, conninfo, self._settings, self._core.embedder)
        return self._start_pool(conninfo, opened, replica=False)

    def _start_pool(self, conninfo: str, opened: list[ConnectionPool[Any]], *, replica: bool) -> ConnectionPool[Any]:
        """Open a pool on the primary or the replica; it goes into ``opened`` first, so a failed open
        is closed by the caller."""
        pool: ConnectionPool[Any] = _pooled.STORE_POOL(  # (a stack: the warm connection first)
            conninfo,
            **pool_sizes(self._settings),
            configure=_pooled.configure_replica if replica else _pooled.configure,
            check=_pooled.check,  # drop connections a server restart killed
            name="ltst-memory-read" if replica else "ltst-memory",
            open=False,
        )
        opened.append(pool)
        try:
            pool.open(wait=True, timeout=self._settings.pool_timeout)
        except PoolTimeout as exc:
            raise unavailable(conninfo, exc, replica=replica) from None
        return pool

    def _open_read_pool(self, opened: list[ConnectionPool[Any]]) -> ConnectionPool[Any] | None:
        """The read replica's pool: the given ``read_pool``, one opened on ``read_dsn``, or ``None``."""
        if self._given_read_pool is not None or not self._read_conninfo:
            return self._given_read_pool
        blocking(check_replica, self._read_conninfo, self._settings.pool_timeout)
        return self._start_pool(self._read_conninfo, opened, replica=True)

    def _release_embedded(self) -> None:
        if self._embedded_dir is not None:
            release_embedded(self._embedded_dir)
            self._embedded_dir = None

    def close(self) -> None:
        """Close the pools (those the store opened) and release the embedded server. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._read_pool is not None and self._given_read_pool is None:
            self._read_pool.close()
        if self._owns_pool and self._pool is not None:
            self._pool.close()
        self._release_embedded()
        logger.info("ltst-memory store closed")

    def __enter__(self) -> ConversationStorage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` was called."""
        return self._closed

    @property
    def settings(self) -> Settings:
        """The resolved settings of this store."""
        return self._settings

    @property
    def embedder(self) -> Embedder:
        """The embedder that turns text into vectors for this store."""
        return self._core.embedder

    @property
    def dsn(self) -> str:
        """The connection string in use, password redacted."""
        return redact(self._conninfo) if self._conninfo else "<external pool>"

    @property
    def read_dsn(self) -> str | None:
        """The read replica's connection string, password redacted (``"<external pool>"`` for a given
        ``read_pool``); ``None`` when every operation runs on the primary."""
        if self._given_read_pool is not None:
            return "<external pool>"
        return redact(self._read_conninfo) if self._read_conninfo else None

    primary = property(primary_reads)  # `with store.primary:` reads the primary (ltst_memory/_executor.py)

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The psycopg connection pool (for advanced use: your own queries on the same database)."""
        assert self._pool is not None  # set once open
        return self._pool

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; return the names applied."""
        check_open(self._closed)
        with self._connection() as conn:
            conn.commit()
            return migrate(conn)

    def versions(self) -> dict[str, str]:
        """``{"postgres": ..., "pgvector": ...}`` versions of the server."""
        return self._run(ops.server_versions(self._core))

    # ------------------------------------------------------------------ executor

    @contextmanager
    def _connection(self, replica: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the primary pool, or of the read replica's with ``replica``."""
        pool, conn = self._take(replica)
        try:
            yield conn
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc
        finally:
            self._give(pool, conn, replica)

    def _take(self, replica: bool) -> tuple[ConnectionPool[Any], psycopg.Connection[Any]]:
        """A connection of the primary pool, or of the read replica's with ``replica`` (then the store has
        one), and its pool; hand it back with :meth:`_give`."""
        assert self._pool is not None  # guarded by check_open
        if replica and self._read_pool is not None:
            pool, given = self._read_pool, self._given_read_pool is not None
        else:
            pool, given, replica = self._pool, not self._owns_pool, False
        try:
            # getconn/putconn rather than pool.connection(), whose `with conn:` ends a transaction the
            # executor always ends itself (its statements run in autocommit or in conn.transaction()).
            conn = pool.getconn()
        except PoolTimeout as exc:
            shown = self.read_dsn if replica else self.dsn
            timeout = self._settings.pool_timeout
            raise blocking(pool_timeout_error, pool, timeout, str(shown), replica=replica) from exc
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc
        if given and conn not in self._registered:  # a given pool's connection, on its first use
            try:
                _pooled.configure(conn)
            except BaseException as exc:
                self._give(pool, conn, replica)
                if isinstance(exc, CLASSIFIED):
                    raise self._unavailable(replica, exc) from exc
                raise
            self._registered.add(conn)
        return pool, conn

    def _give(self, pool: ConnectionPool[Any], conn: psycopg.Connection[Any], replica: bool) -> None:
        """Hand ``conn`` back to ``pool`` (:meth:`_take`)."""
        _pooled.handed_back(conn)
        try:
            pool.putconn(conn)
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc

    def _unavailable(self, replica: bool, exc: psycopg.Error) -> LTSTError:
        return classify(exc, self._read_conninfo if replica else self._conninfo, replica=replica)

    def _run(self, op: Op[R], *, readonly: bool | None = None) -> R:
        """Run operation ``op``: on the read replica when the store has one and ``op`` only reads
        (``readonly``, else as declared: ltst_memory/_kernel.py)."""
        check_open(self._closed)
        readonly = is_read_only(op) if readonly is None else readonly
        with track_operation(self._core, op):  # timings by operation: ltst_memory/stats.py
            replica = on_replica(self, op, readonly) and self._replica_takes_reads()
            return self._drive(op, readonly, replica)

    def _replica_takes_reads(self) -> bool:
        """Whether the read replica takes reads now (:class:`~ltst_memory._executor.ReplicaHealth`):
        when a check is due, its lag is read on a connection of the replica pool."""
        health = self._replica_health
        now = time.monotonic()
        if not health.due(now):
            return health.usable
        assert self._read_pool is not None  # on_replica() said the store has one
        lag: float | None = None
        try:
            with self._read_pool.connection(timeout=REPLICA_CHECK_TIMEOUT) as conn:
                while True:  # an unknown lag (NULL) is asked again, a transaction each time
                    with conn.transaction():
                        cur = conn.execute(REPLICA_LAG)
                        row = cur.fetchone()
                    lag = None if row is None or row[0] is None else float(row[0])
                    if lag is not None or time.monotonic() - now >= REPLICA_CHECK_TIMEOUT:
                        break
                    sleep(REPLICA_UNKNOWN_RETRY)
        except (psycopg.Error, PoolTimeout) as exc:
            return health.record(now, None, exc)
        return health.record(now, math.inf if lag is None else lag, None)

    def _drive(self, op: Op[R], readonly: bool, replica: bool) -> R:
        """The executor of every instruction (ltst_memory/_kernel.py). Embeddings and callbacks run with
        no connection held; a :class:`Commit` ends the transaction and gives the connection back.

        While the operation holds a connection: ``held`` (its pool, the connection, its transaction once
        open, whether autocommit was turned on for it), ended by :meth:`_release` (commit or rollback,
        autocommit off again, back to the pool)."""
        held: _Held | None = None
        result: Any = None
        failed: EmbeddingError | None = None  # thrown into the operation, which may handle it
        started: dict[tuple[str, ...], Pending] | None = None  # embeddings started ahead, by texts
        wrote = False  # a query that may write ran in the open transaction
        try:
            while True:
                try:
                    instruction = op.send(result) if failed is None else op.throw(failed)
                except StopIteration as stop:
                    if held is not None:
                        ending, held = held, None
                        self._release(ending, None)  # commits
                    return stop.value  # type: ignore[no-any-return]
                failed = None
                if instruction.__class__ is Query:  # (the common case first)
                    query: Query = instruction
                    begin = needs_transaction(readonly, query)
                else:
                    if isinstance(instruction, Embed) and instruction.ahead:  # computed while the operation goes on
                        check_outside_transaction(op, instruction, wrote)
                        if started is None:
                            started = {}
                        result = started.get(instruction.texts)
                        if result is None:
                            result = started[instruction.texts] = Pending(instruction)
                            result.job = start(embed_checked, self._core.embedder, instruction.texts)
                        continue
                    if isinstance(instruction, Pending):
                        check_outside_transaction(op, instruction.embed, wrote)
                        if not instruction.done:
                            self._embed_pending(instruction)  # the connection kept: the rest is short
                        if instruction.error is None:
                            result = instruction.vectors
                        elif isinstance(instruction.error, EmbeddingError):
                            failed = instruction.error
                        else:
                            raise instruction.error
                        continue
                    if isinstance(instruction, (Embed, Call)):
                        check_outside_transaction(op, instruction, wrote)
                        if held is not None and held.transaction is None:
                            ending, held = held, None
                            self._release(ending, None)  # back to the pool while the embedder or the callback works
                        try:
                            result = self._outside(instruction)
                        except EmbeddingError as exc:
                            failed = exc
                        continue
                    if isinstance(instruction, (Commit, Parallel)):
                        if held is not None:
                            ending, held, wrote = held, None, False
                            self._release(ending, None)  # commits, gives the connection back
                        result = self._parallel(instruction.ops) if isinstance(instruction, Parallel) else None
                        continue
                    begin = isinstance(instruction, Copy) or needs_transaction(readonly, instruction)
                    if not isinstance(instruction, Copy):
                        query = instruction
                if held is None:
                    pool, conn = self._take(replica)
                    held = _Held(pool, conn, replica)
                    if not begin and not conn.autocommit:  # statements on their own until one needs it
                        conn.autocommit = True
                        held.autocommit = True
                conn = held.connection
                if begin and held.transaction is None:
                    transaction = conn.transaction()
                    transaction.__enter__()
                    held.transaction = transaction
                if isinstance(instruction, Copy):
                    wrote = True
                    try:
                        result = _copy(conn, instruction)
                    except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
                        raise self._unavailable(replica, exc) from exc
                    continue
                in_transaction = held.transaction is not None
                wrote = wrote or (in_transaction and not (readonly or query.alone))
                result = self._execute(conn, query, replica)
        except BaseException as exc:
            if held is not None:
                self._release(held, exc)  # rolls back, gives the connection back
            if isinstance(exc, CLASSIFIED) and held is not None:  # by SQLSTATE: ltst_memory/_sqlstate.py
                raise self._unavailable(replica, exc) from exc
            raise
        finally:
            if started:  # an embedding never waited for: its thread ends before the call does
                for pending in started.values():
                    if not pending.done:
                        self._embed_pending(pending)

    def _release(self, held: _Held, exc: BaseException | None) -> None:
        """End what the executor holds: the transaction (committed, or rolled back when ``exc`` ends the
        operation), autocommit (off again), the connection (back to its pool). A database error doing so
        is raised classified."""
        try:
            try:
                if held.transaction is not None:
                    if exc is None:
                        held.transaction.__exit__(None, None, None)
                    else:
                        held.transaction.__exit__(type(exc), exc, exc.__traceback__)
            finally:
                if held.autocommit:
                    _end_autocommit(held.connection)
        except CLASSIFIED as error:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(held.replica, error) from error
        finally:
            self._give(held.pool, held.connection, held.replica)

    def _parallel(self, ops: tuple[Op[Any], ...]) -> list[Any]:
        """Run ``ops`` at once, each on its own connection (at most ``pool_max_size`` at a time)."""
        assert self._pool is not None  # guarded by check_open
        outcomes = gather(self._drive, [(op, False, False) for op in ops], self._pool.max_size)
        return results_or_first_error(outcomes)

    def _call(self, function: Callable[Concatenate[Core, P], Op[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the declared operation ``function`` (ltst_memory/_kernel.py) with ``args``: every
        generated method comes here."""
        return self._invoke(function.__ltst_operation__, self._core, args, kwargs)  # type: ignore[attr-defined,no-any-return]

    def _invoke(
        self, declared: Operation, core: Any, args: Any, kwargs: Any, *, function: Any = None, cached: bool = True
    ) -> Any:
        """Run ``declared``'s operation on ``core``: through the session cache if it is ``cached`` (and
        ``cached`` is allowed), then invalidating what it declares it changes. ``function`` replaces the
        operation (a user-scoped store runs it wrapped: ltst_memory/scoped.py)."""
        run = declared.function if function is None else function
        cache = core.cache
        if declared.cached and cached:
            session_id = args[0] if args else kwargs.get("session_id")
            if session_id.__class__ is not str:  # a list is unhashable: the ValidationError of the others
                check_id("session_id", session_id)
            hit, value = cache.get("session", session_id)
            if hit:
                return value
            generation = cache.generation(session_id) if isinstance(session_id, str) else (0, 0)
            readonly = declared.read_only and cache.ttl <= 0  # a miss that will be cached reads the primary
            value = self._run(run(core, *args, **kwargs), readonly=readonly)
            if value is not None:
                cache.put("session", session_id, value, generation)
            return value
        if declared.invalidates is None:
            return self._run(run(core, *args, **kwargs), readonly=declared.read_only)
        try:
            return self._run(run(core, *args, **kwargs), readonly=declared.read_only)
        finally:
            cache.invalidate_after_write(declared.sessions_changed, args, kwargs)

    def _outside(self, instruction: Embed | Call) -> Any:
        if isinstance(instruction, Embed):
            return blocking(embed_checked, self._core.embedder, instruction.texts)
        return blocking(instruction.function, *instruction.args)

    def _embed_pending(self, pending: Pending) -> None:
        """Wait for an embedding announced ahead (started in a worker thread); its outcome (vectors or
        error) goes into ``pending``."""
        try:
            pending.vectors = finish(pending.job)
        except Exception as exc:  # kept for the operation, which gets it where it yields the handle
            pending.error = exc
        pending.done = True

    def _execute(self, conn: psycopg.Connection[Any], query: Query, replica: bool = False) -> Any:
        """Run ``query`` on ``conn``."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("query %s", describe(query))
        try:
            if query.many is None and query.fetch == "one":  # (at most a row: the cursor may keep it)
                cur = _pooled.kept_cursor(conn, query.row or ROW_FACTORY)
                cur.execute(query.sql, query.params)
                return cur.fetchone()
            with conn.cursor(row_factory=query.row or ROW_FACTORY) as cur:
                if query.many is None:
                    cur.execute(query.sql, query.params)
                    return _fetch(cur, query)
                returning = query.fetch == "all"
                cur.executemany(query.sql, query.many, returning=returning)
                if not returning:
                    return cur.rowcount
                rows: list[dict[str, Any]] = []
                while True:
                    rows.extend(cur.fetchall())
                    if not cur.nextset():
                        return rows
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc

    # ------------------------------------------------------------------ API

    for_user = scoped.for_user  # user-scoped view (ltst_memory/scoped.py)
    cache_stats = cache.cache_stats
    clear_cache = cache.clear_cache

    # BEGIN GENERATED methods (python -m ltst_memory._codegen; do not edit)
    # Sessions

    def create_session(self, session: ConversationSession) -> ConversationSession:
        """Create ``session``; raise SessionExistsError if its id is taken."""
        return self._call(_declared._ops.create_session, session)

    def get_or_create_session(self, session: ConversationSession) -> ConversationSession:
        """The stored session with ``session.session_id``, created from ``session`` when there is none.

        An existing session is returned as stored (its fields are left alone; use ``update_session`` to
        change them), so running the same set-up code twice is harmless. Raises SessionExistsError if the
        id belongs to another user's session.
        """
        return self._call(_declared._ops.get_or_create_session, session)

    def get_session(self, session_id: str) -> ConversationSession | None:
        """The session with ``session_id``, or ``None``."""
        return self._call(_declared._ops.get_session, session_id)

    def update_session(self, session: ConversationSession) -> ConversationSession:
        """Write the mutable fields of ``session`` (name, type, status, metadata, summary, score)."""
        return self._call(_declared._ops.update_session, session)

    def update_session_activity(self, session_id: str) -> datetime:
        """Set the session's ``last_activity`` to now and return it."""
        return self._call(_declared._ops.update_session_activity, session_id)

    def get_user_sessions(self, user_id: str, limit: int = 50) -> list[ConversationSession]:
        """The user's sessions, most recently active first."""
        return self._call(_declared._ops.get_user_sessions, user_id, limit)

    def get_session_summary(self, session_id: str) -> SessionSummary:
        """Trigger-maintained statistics of the session."""
        return self._call(_declared._ops.get_session_summary, session_id)

    # Messages

    def delete_message(self, message_id: int, user_id: str | None = None) -> dict[str, Any]:
        """Delete one message (of ``user_id`` when given; a scoped store: of its user only) in one
        statement, its triggers keeping the session summary and the word statistics current; return
        ``{"message_id", "session_id"}``. No such message (of that user) is a
        :class:`~ltst_memory.NotFoundError`.
        """
        return self._call(_declared._ops.delete_message, message_id, user_id)

    def store_messages(self, messages: Sequence[ConversationMessage]) -> list[ConversationMessage]:
        """Store ``messages`` in one transaction with one embedding call; return them as stored, in order.

        ``message_index`` is assigned per session (0, 1, 2, ...) under a lock on the session rows, so
        concurrent writers never produce gaps or duplicates. A message whose ``message_uuid`` is already
        stored is not stored again: the stored row is returned in its place.
        """
        return self._call(_declared._ops.store_messages, messages)

    def store_message(self, message: ConversationMessage) -> ConversationMessage:
        """Store one message (see :func:`store_messages`) and return it with its id, index and timestamp."""
        return self._call(_declared._ops.store_message, message)

    def get_messages(self, session_id: str, limit: int = 100, offset: int = 0) -> list[ConversationMessage]:
        """Messages of the session in order (oldest first), ``limit`` of them from ``offset``."""
        return self._call(_declared._ops.get_messages, session_id, limit, offset)

    def get_recent_messages(self, session_id: str, limit: int = 20) -> list[ConversationMessage]:
        """The last ``limit`` messages of the session, oldest first."""
        return self._call(_declared._ops.get_recent_messages, session_id, limit)

    # Search and rehydration

    def search_messages(
        self,
        query: str,
        session_id: str | None = None,
        limit: int = 10,
        threshold: float | None = None,
        *,
        user_id: str | None = None,
    ) -> list[tuple[ConversationMessage, float]]:
        """Messages most similar in meaning to ``query``, as ``(message, cosine similarity)`` best first.

        Scope: one session (``session_id``), all of a user's sessions (``user_id``), both, or — when
        neither is given — every stored message. With a ``threshold``, only messages with
        ``similarity >= threshold`` are returned (the spec's example uses 0.7; MiniLM scores clear
        paraphrases around 0.4-0.6); without one, the ``limit`` nearest messages. A scope of up to
        ``exact_search_max_rows`` messages is searched exactly; larger scopes and unscoped searches use
        the vector index (``ltst vector-index``) with iterative scans, so a scope never returns fewer
        rows than exist, and a message is found from the moment it is stored.
        """
        return self._call(_declared._ops.search_messages, query, session_id, limit, threshold, user_id=user_id)

    def recall(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        limit: int = 10,
        scope: RecallScope = "auto",
        metadata: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        roles: Sequence[str] | None = None,
        exclude_message_ids: Sequence[int] | None = None,
        lexical_weight: float = 0.5,
        neighbor_weight: float = 0.35,
        session_weight: float = 0.15,
        long_turn_penalty: float = 0.5,
        short_turn_penalty: float = 0.2,
        role_weight: float = 0.3,
        speaker_weight: float = 0.5,
        date_weight: float = 0.3,
        latest_weight: float = 0.0,
        spread_weight: float = 0.0,
        recency_weight: float = 0.0,
        recency_half_life_days: float = 30.0,
        expand_neighbors: int = 0,
        mmr: float | None = None,
        min_score: float = 0.0,
        candidates: int = 40,
        min_similarity: float | None = None,
    ) -> list[tuple[ConversationMessage, float]]:
        """Messages that best answer ``query``, as ``(message, score)`` pairs best first (hybrid search).

        Scope (``scope="auto"``): all of ``user_id``'s sessions when ``user_id`` is given (``session_id``,
        if also given, must belong to that user, else :class:`AccessDeniedError`); else the one session
        ``session_id``; else every stored message. Explicit scopes: ``"session"`` (only ``session_id``),
        ``"user"`` (all sessions of ``user_id``, or of ``session_id``'s owner), ``"related"``
        (``session_id`` and the sessions linked to it), ``"all"``.

        Filters: ``metadata`` (JSON containment, e.g. ``{"speaker": "Caroline"}``), ``since`` /
        ``until`` (timestamp range, ``until`` exclusive), ``roles``, ``exclude_message_ids``.

        Ranking: ``lexical_weight`` (0 = vectors only, 1 = BM25 only), ``neighbor_weight`` (share of an
        adjacent turn's score a turn inherits), ``long_turn_penalty`` (a turn of more than
        :data:`LONG_TURN_WORDS` words has its score divided by ``1 + long_turn_penalty``: a user's short
        statement is not buried under long assistant answers that repeat the topic's words),
        ``short_turn_penalty`` (when the question names a speaker stored in ``metadata["speaker"]``, a turn
        of fewer than :data:`SHORT_TURN_WORDS` words has its score multiplied by
        ``(words / SHORT_TURN_WORDS) ** short_turn_penalty``: the name, embedded and indexed with every turn
        of its speaker, is most of what both signals see of a short one, so "Thanks, Caroline!" no longer
        outranks what Caroline told), ``session_weight`` (share of the best score in its session a
        turn adds), and five weights driven by the question's wording
        (:mod:`ltst_memory._query_hints`): ``role_weight`` (a question in the first person multiplies
        the user's turns by ``1 + role_weight``, one about what the assistant said earlier — "did you
        recommend…" — the assistant's turns; a question in the third
        person changes nothing), ``speaker_weight`` (a question naming a speaker stored in
        ``metadata["speaker"]`` of the candidates — "what did Caroline paint?" — multiplies that
        speaker's turns by ``1 + speaker_weight``; naming none, or all of them, changes nothing),
        ``date_weight`` (turns dated in a period the question names — "on
        October 13, 2023", "in July 2023", "in June" — or up to a week after it, ``× (1 + date_weight)``)
        and ``latest_weight`` (off by default; a question asking for the present value — "now",
        "current", "latest" — multiplies each turn by ``1 + latest_weight × t``, ``t`` its time between
        the oldest (0) and newest (1) candidate), and ``spread_weight`` (off by default; a question that
        gathers several facts — "how many …", "what activities has …", "both" — multiplies the n-th best
        turn of a session by ``(1 - spread_weight) ** (n - 1)``, so the top reaches more sessions). Then
        ``recency_weight``
        with ``recency_half_life_days``,
        ``mmr`` (λ of maximal marginal relevance, e.g. 0.7; ``None`` = off), ``min_score``, and
        ``candidates`` (rows taken from each of the BM25 and vector searches before fusion).
        ``min_similarity`` is an absolute relevance floor (fused scores are relative to the pool, so an
        unrelated pool still has a best hit): a turn is kept only if its cosine similarity with the query
        reaches it, it shares a word with the query (BM25 > 0), or, with ``neighbor_weight`` > 0, the
        turn next to it does. ``None`` (default) keeps every candidate.
        ``expand_neighbors=n`` adds the ``n`` turns before and after each hit (score slightly below
        the hit's) so an answer comes with its context; they count towards ``limit``.

        Scores are in [0, (1 + neighbor_weight) * (1 + role_weight) * (1 + speaker_weight) * (1 + date_weight)
        * (1 + latest_weight) * (1 + session_weight)] and comparable within one call only.
        """
        return self._call(
            _declared.recall.recall,
            query,
            user_id=user_id,
            session_id=session_id,
            limit=limit,
            scope=scope,
            metadata=metadata,
            since=since,
            until=until,
            roles=roles,
            exclude_message_ids=exclude_message_ids,
            lexical_weight=lexical_weight,
            neighbor_weight=neighbor_weight,
            session_weight=session_weight,
            long_turn_penalty=long_turn_penalty,
            short_turn_penalty=short_turn_penalty,
            role_weight=role_weight,
            speaker_weight=speaker_weight,
            date_weight=date_weight,
            latest_weight=latest_weight,
            spread_weight=spread_weight,
            recency_weight=recency_weight,
            recency_half_life_days=recency_half_life_days,
            expand_neighbors=expand_neighbors,
            mmr=mmr,
            min_score=min_score,
            candidates=candidates,
            min_similarity=min_similarity,
        )

    def rehydrate(
        self,
        session_id: str,
        query: str | None = None,
        *,
        token_budget: int = 2000,
        recent_turns: int = 10,
        min_recent_turns: int = 4,
        memory_limit: int = 20,
        include_other_sessions: bool = True,
        include_related: bool = True,
        include_sensitive_preferences: bool = False,
        count_tokens: TokenCounter | None = None,
        recall_options: Mapping[str, Any] | None = None,
        memory_min_similarity: float | None = 0.2,
    ) -> RehydrationResult:
        """Merge the session's memory into a :class:`RehydrationResult` within ``token_budget`` tokens.

        ``query`` is what the next answer is about; with ``None`` the latest human turn of the session
        is used (no memories when there is none). ``include_other_sessions`` searches all of the user's
        sessions for memories (else only this one); ``include_related`` adds summaries of linked
        sessions. Sensitive preferences stay out unless ``include_sensitive_preferences``.
        ``count_tokens`` is any ``text -> int`` (default: the offline estimator of
        :mod:`ltst_memory.tokens`); ``recall_options`` are extra keyword arguments for
        :func:`~ltst_memory.recall.recall`. ``memory_min_similarity`` is the relevance floor of memories
        (recall's ``min_similarity``, default :data:`DEFAULT_MEMORY_MIN_SIMILARITY`): spare budget is left
        empty rather than filled with turns that neither resemble the query nor share a word with it;
        ``None`` turns it off. Only the session owner's data is ever read.
        """
        return self._call(
            _declared.rehydrate.rehydrate,
            session_id,
            query,
            token_budget=token_budget,
            recent_turns=recent_turns,
            min_recent_turns=min_recent_turns,
            memory_limit=memory_limit,
            include_other_sessions=include_other_sessions,
            include_related=include_related,
            include_sensitive_preferences=include_sensitive_preferences,
            count_tokens=count_tokens,
            recall_options=recall_options,
            memory_min_similarity=memory_min_similarity,
        )

    # Context

    def store_context(self, context: ConversationContext) -> ConversationContext:
        """Insert or update the context entry for ``(session_id, context_type, context_key)``."""
        return self._call(_declared._ops.store_context, context)

    def get_context(self, session_id: str, context_type: str | None = None) -> list[ConversationContext]:
        """Unexpired context of the session (optionally of one type), most relevant first."""
        return self._call(_declared._ops.get_context, session_id, context_type)

    # Preferences

    def store_preference(self, preference: UserPreference) -> UserPreference:
        """Insert or update the user's preference ``preference_key``."""
        return self._call(_declared._ops.store_preference, preference)

    def get_preferences(self, user_id: str, preference_type: str | None = None) -> list[UserPreference]:
        """The user's preferences (optionally of one type), most confident first.

        Sensitive preferences are decrypted; with no encryption key set they are left out.
        """
        return self._call(_declared._ops.get_preferences, user_id, preference_type)

    # Relationships

    def store_relationship(self, relationship: SessionRelationship) -> SessionRelationship:
        """Link two sessions of the same user (insert or update the link of that type)."""
        return self._call(_declared._ops.store_relationship, relationship)

    def get_related_sessions(
        self,
        session_id: str,
        limit: int = 20,
    ) -> list[tuple[ConversationSession, SessionRelationship]]:
        """Sessions linked to ``session_id`` in either direction, strongest link first."""
        return self._call(_declared._ops.get_related_sessions, session_id, limit)

    # Observability and maintenance

    def delete_session(self, session_id: str) -> dict[str, int]:
        """Delete the session and everything attached to it; return the number of rows removed per kind."""
        return self._call(_declared._ops.delete_session, session_id)

    def cleanup_expired_data(self) -> dict[str, int]:
        """Delete expired context and the data retention policies no longer keep, in one transaction, over
        every user (also on a role under Row Level Security: see schema/0009_owned_tables.sql).

        Returns the rows removed per kind: ``{"context": ..., "messages": ...}``.
        """
        return self._call(_declared.retention.cleanup_expired_data)

    def stats(self, growth_days: int = 30) -> dict[str, Any]:
        """Everything worth watching about this store, as a JSON-serialisable dict.

        Keys: ``operations`` (per operation of *this* store object since it opened: calls, errors, mean,
        p50, p95 and max in milliseconds), ``rows`` (exact counts), ``tables`` (bytes on disk, index
        bytes, sequential and index scans), ``indexes`` (scans and size of every index — an index with 0
        scans is unused), ``growth`` (messages by message timestamp and sessions created, per day, for the
        last ``growth_days`` days), ``database`` (size, versions, PostgreSQL buffer cache hit ratio),
        ``embedding`` (model and dimension recorded in the database) and ``cache`` (hit rates of the
        store's in-memory cache, or ``None`` without one). Server counters (scans, buffer hits) are
        PostgreSQL's cumulative statistics and may lag a second behind.
        """
        return self._call(_declared.stats.stats, growth_days)

    # More methods

    def rotate_encryption_keys(self) -> dict[str, int]:
        """Re-encrypt every sensitive preference with the newest key of ``LTST_ENCRYPTION_KEYS``.

        Values stored in plain text while marked sensitive (by a version without encryption) are
        encrypted too. A value no configured key opens, or one encrypted for another row, is left as it
        is and counted in ``"unreadable"`` (its user and key are logged as a warning) instead of stopping
        the rotation. Returns ``{"rotated": n, "encrypted": m, "unreadable": k}``. One transaction.
        """
        return self._call(_declared.crypto.rotate_encryption_keys)

    def import_messages(
        self,
        messages: Iterable[ConversationMessage],
        *,
        batch_size: int = 5000,
        defer_embedding: bool = False,
        workers: int = 1,
    ) -> BulkResult:
        """Bulk-store ``messages`` (any iterable, consumed lazily) with binary COPY; return a :class:`BulkResult`.

        Each batch of ``batch_size`` is embedded with one embedder call (messages that carry an
        ``embedding`` are not re-embedded) and written in one transaction; a failing batch rolls back
        alone (earlier batches stay). With ``defer_embedding=True`` messages without an embedding are
        stored with none, for :class:`EmbeddingWorker` to fill in. The sessions must exist.

        ``workers`` > 1 writes on that many connections at once (the server inserts on one CPU per
        connection): ``workers * batch_size`` messages are read at a time and split by the sessions'
        owner, so each user's messages go through one connection, in order, and concurrent transactions
        never wait for each other's session or statistics rows. Each part is written in transactions of
        up to ``batch_size`` messages. If one part fails, the parts running beside it still commit and the
        first error is raised. At most ``pool_max_size`` parts run at once.
        """
        return self._call(
            _declared.bulk.import_messages,
            messages,
            batch_size=batch_size,
            defer_embedding=defer_embedding,
            workers=workers,
        )

    def embed_pending(self, limit: int = 256) -> int:
        """Claim up to ``limit`` messages stored without an embedding (``FOR UPDATE SKIP LOCKED``), embed
        them with one call and store the vectors; return how many were embedded (0: nothing pending).

        A message the embedder rejects is set aside: the batch is split until the rejected messages are
        alone, the others are stored, and the rejected ones keep no embedding (logged as a warning;
        :class:`EmbeddingWorker` lists them in ``dead_letters`` and stops claiming them). If the embedder
        rejects every message of the batch, that is its failure, not theirs: the error is raised.
        """
        return self._call(_declared.bulk.embed_pending, limit)

    def pending_embeddings(self) -> int:
        """How many stored messages still wait for their embedding."""
        return self._call(_declared.bulk.pending_embeddings)

    def search_unembedded(
        self,
        query: str,
        session_id: str | None = None,
        limit: int = 10,
        *,
        user_id: str | None = None,
    ) -> list[tuple[ConversationMessage, float]]:
        """Messages still waiting for their embedding that match ``query``'s words (full text, English
        stemming), as ``(message, rank)`` best first; same scopes as ``search_messages``.
        """
        return self._call(_declared.bulk.search_unembedded, query, session_id, limit, user_id=user_id)

    def set_retention_policy(
        self,
        *,
        user_id: str | None = None,
        session_type: str | None = None,
        message_days: int | None = None,
        context_days: int | None = None,
    ) -> RetentionPolicy:
        """Set (insert or replace) the retention policy of ``user_id`` / ``session_type`` (``None``: any).

        ``message_days`` / ``context_days`` of ``None`` keep that data forever (overriding a more general
        policy). Applied by the next :func:`cleanup_expired_data`.
        """
        return self._call(
            _declared.retention.set_retention_policy,
            user_id=user_id,
            session_type=session_type,
            message_days=message_days,
            context_days=context_days,
        )

    def delete_retention_policy(self, *, user_id: str | None = None, session_type: str | None = None) -> bool:
        """Remove the policy of exactly ``user_id`` / ``session_type``; ``True`` if there was one."""
        return self._call(_declared.retention.delete_retention_policy, user_id=user_id, session_type=session_type)

    def get_retention_policies(self) -> list[RetentionPolicy]:
        """Every retention policy (administrative: not exposed on user-scoped stores)."""
        return self._call(_declared.retention.get_retention_policies)

    def delete_user(self, user_id: str) -> ErasureResult:
        """Erase every row of ``user_id`` from the library's tables (``ltst_memory/_tables.py``: sessions,
        messages, context, preferences, relationships, summaries, retention policies, retrieval statistics,
        adapter rows that carry an owner) in one transaction, then refresh the planner statistics of the
        tables of user data when it removed anything (``ANALYZE``), so sampled values of the user do not stay in
        ``pg_stats``, and drop the user's own vector index if ``ltst vector-index`` built one (its
        definition names the user; dropping it locks the messages table for an instant). Tables the
        library does not own are never touched.

        Returns an :class:`ErasureResult`: the rows removed per kind (all zero for an unknown user) and
        whether the erase is ``complete``. Works the same on the tables' owner and on a role under Row
        Level Security (the transaction acts as ``user_id``). Sessions cached by other processes'
        stores are not seen by them before their cache entries expire (the cache is off by default).
        """
        return self._call(_declared.privacy.delete_user, user_id)

    def export_analytics(
        self,
        *,
        include_content: bool = False,
        salt: str | bytes | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100000,
    ) -> list[dict[str, Any]]:
        """One anonymised row per message, oldest first: pseudonymous ``user``/``session``/``message`` ids
        (keyed HMAC-SHA256), session type, role, type, index, timestamp, length, token estimate and —
        only with ``include_content=True`` — the content, verbatim (names inside it are NOT scrubbed).

        The key is ``salt``, else ``LTST_ANALYTICS_SALT``, else a random one for this export only (ids
        then match within one export but not across exports). Keep the salt secret: with it, anyone can
        test guesses of user ids. Administrative: not available on user-scoped stores.
        """
        return self._call(
            _declared.privacy.export_analytics,
            include_content=include_content,
            salt=salt,
            since=since,
            until=until,
            limit=limit,
        )

    def summarize_session(
        self,
        session_id: str,
        *,
        summarizer: Callable[[str], str] | None = None,
        summary: str | None = None,
        max_messages: int = 2000,
        max_sentences: int = 6,
        max_words: int = 150,
        max_transcript_chars: int = 24000,
    ) -> str:
        """Write and return a summary of the session (see the module docstring).

        ``summary`` stores the given text as is; else ``summarizer(prompt)`` (an LLM callable) writes it
        from the last ``max_messages`` turns (transcript cut to ``max_transcript_chars`` from the end);
        else the summary is extractive. An empty session gets an empty summary.
        """
        return self._call(
            _declared.summarize.summarize_session,
            session_id,
            summarizer=summarizer,
            summary=summary,
            max_messages=max_messages,
            max_sentences=max_sentences,
            max_words=max_words,
            max_transcript_chars=max_transcript_chars,
        )

    # END GENERATED methods


class _Held:
    """What the executor holds while an operation has a connection (``ConversationStorage._drive``)."""

    __slots__ = ("autocommit", "connection", "pool", "replica", "transaction")

    def __init__(self, pool: ConnectionPool[Any], connection: psycopg.Connection[Any], replica: bool) -> None:
        self.pool = pool
        self.connection = connection
        self.replica = replica
        self.transaction: Any = None  # conn.transaction(), entered: the operation's open transaction
        self.autocommit = False  # turned on for the operation: turned off before the connection goes back


def _copy(conn: psycopg.Connection[Any], instruction: Copy) -> int:
    with conn.cursor() as cur:
        with cur.copy(instruction.sql) as copy:
            for chunk in instruction.chunks:
                copy.write(chunk)
        return cur.rowcount


def _end_autocommit(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):  # a broken connection: the pool discards it anyway
        conn.autocommit = False


def _fetch(cur: psycopg.Cursor[Any], query: Query) -> Any:
    if query.fetch in ("all", "one"):
        return cur.fetchall() if query.fetch == "all" else cur.fetchone()
    return result_of(cur, query)
