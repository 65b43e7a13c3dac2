"""``ConversationStorage``: the synchronous store."""

from __future__ import annotations

import concurrent.futures
import logging
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from . import _ops as ops
from . import _pooled, bulk, cache, crypto, privacy, retention, scoped
from . import recall as recall_ops
from . import rehydrate as rehydrate_ops
from . import stats as stats_ops
from . import summarize as summarize_ops
from ._connection import (
    ROW_FACTORY,
    acquire_embedded,
    pool_timeout_error,
    redact,
    release_embedded,
    unavailable,
)
from ._executor import (
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
    sync_method,
)
from ._kernel import Call, Commit, Copy, Embed, Op, Parallel, Query, R
from ._sqlstate import CLASSIFIED, LTSTError, classify
from .config import Settings
from .embeddings import Embedder, embed_checked, warm_up
from .errors import ConfigurationError, EmbeddingError
from .migrate import migrate
from .stats import track_operation

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
        self._closed = True
        self._embedded_dir: Path | None = None
        self._owns_pool = pool is None
        self._given_read_pool = read_pool
        self._read_pool: ConnectionPool[Any] | None = None  # None: every operation runs on the primary
        self._read_conninfo = "" if read_pool is not None else (self._settings.read_dsn or "")
        self._registered: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        conninfo = self._settings.dsn
        if pool is None and conninfo is None:
            self._embedded_dir = self._settings.data_dir
            conninfo = acquire_embedded(self._embedded_dir)
        self._conninfo = conninfo or ""
        opened: list[ConnectionPool[Any]] = []
        try:
            if pool is None:
                prepare_database(self._conninfo, self._settings, self._core.embedder)
                pool = self._start_pool(self._conninfo, opened, replica=False)
            self._pool = pool
            self._read_pool = self._open_read_pool(opened)
        except BaseException:
            for opened_pool in opened:
                opened_pool.close()
            self._release_embedded()
            raise
        self._closed = False
        if warm:
            warm_up(self._core.embedder)
        logger.info("ltst-memory store open on %s", redact(self._conninfo) if self._conninfo else "a given pool")
        if self._read_pool is not None:
            logger.info("ltst-memory reads on replica %s", self.read_dsn)

    # ------------------------------------------------------------------ lifecycle

    def _start_pool(self, conninfo: str, opened: list[ConnectionPool[Any]], *, replica: bool) -> ConnectionPool[Any]:
        """Open a pool on the primary or the replica; it goes into ``opened`` first, so a failed open
        is closed by the caller."""
        pool: ConnectionPool[Any] = ConnectionPool(
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
        check_replica(self._read_conninfo, self._settings.pool_timeout)
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
        if self._owns_pool:
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
        replica = replica and self._read_pool is not None
        pool = self._read_pool if replica and self._read_pool is not None else self._pool
        given = self._given_read_pool is not None if replica else not self._owns_pool
        try:
            with pool.connection() as conn:
                if given and conn not in self._registered:
                    _pooled.configure(conn)
                    self._registered.add(conn)
                try:
                    yield conn
                finally:
                    _pooled.handed_back(conn)
        except PoolTimeout as exc:
            shown = self.read_dsn if replica else self.dsn
            raise pool_timeout_error(pool, self._settings.pool_timeout, str(shown), replica=replica) from exc
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
            return self._drive(op, readonly, on_replica(self, op, readonly))

    def _drive(self, op: Op[R], readonly: bool, replica: bool) -> R:
        """The executor of every instruction (ltst_memory/_kernel.py). Embeddings and callbacks run with
        no connection held; a :class:`Commit` ends the transaction and gives the connection back."""
        held: ExitStack | None = None  # the pool connection (and the transaction), while held
        conn: psycopg.Connection[Any] | None = None
        in_transaction = False
        wrote = False  # a query that may write ran in the open transaction
        result: Any = None
        failed: EmbeddingError | None = None  # thrown into the operation, which may handle it
        try:
            while True:
                try:
                    instruction = op.send(result) if failed is None else op.throw(failed)
                except StopIteration as stop:
                    if held is not None:
                        held.close()  # commits
                    return stop.value  # type: ignore[no-any-return]
                failed = None
                if isinstance(instruction, (Embed, Call)):
                    check_outside_transaction(op, instruction, wrote)
                    if held is not None and not in_transaction:
                        held.close()  # back to the pool while the embedder or the callback works
                        held, conn = None, None
                    try:
                        result = self._outside(instruction)
                    except EmbeddingError as exc:
                        failed = exc
                    continue
                if isinstance(instruction, (Commit, Parallel)):
                    if held is not None:
                        held.close()  # commits, gives the connection back
                        held, conn, in_transaction, wrote = None, None, False, False
                    result = self._parallel(instruction.ops) if isinstance(instruction, Parallel) else None
                    continue
                begin = isinstance(instruction, Copy) or needs_transaction(readonly, instruction)
                if held is None or conn is None:
                    held = ExitStack()
                    conn = held.enter_context(self._connection(replica))
                    if not begin and not conn.autocommit:  # statements on their own until one needs it
                        conn.autocommit = True
                        held.callback(_end_autocommit, conn)
                if begin and not in_transaction:
                    held.enter_context(conn.transaction())
                    in_transaction = True
                if isinstance(instruction, Copy):
                    wrote = True
                    try:
                        result = _copy(conn, instruction)
                    except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
                        raise self._unavailable(replica, exc) from exc
                    continue
                wrote = wrote or (in_transaction and not (readonly or instruction.alone))
                result = self._execute(conn, instruction, replica)
        except BaseException as exc:
            if held is not None:
                held.__exit__(type(exc), exc, exc.__traceback__)  # rolls back, gives the connection back
            raise

    def _parallel(self, ops: tuple[Op[Any], ...]) -> list[Any]:
        """Run ``ops`` at once, each in a thread on its own connection (at most ``pool_max_size``)."""
        workers = max(1, min(len(ops), self._pool.max_size))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ltst-parallel") as threads:
            futures = [threads.submit(self._drive, op, False, False) for op in ops]
            concurrent.futures.wait(futures)
        return results_or_first_error([f.exception() or f.result() for f in futures])

    def _outside(self, instruction: Embed | Call) -> Any:
        if isinstance(instruction, Embed):
            return embed_checked(self._core.embedder, instruction.texts)
        return instruction.function(*instruction.args)

    def _execute(self, conn: psycopg.Connection[Any], query: Query, replica: bool = False) -> Any:
        logger.debug("query %s", describe(query))
        try:
            with conn.cursor(row_factory=ROW_FACTORY) as cur:
                if query.many is None:
                    cur.execute(query.sql, query.params)
                    return result_of(cur, query)
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

    create_session = sync_method(ops.create_session)
    get_or_create_session = sync_method(ops.get_or_create_session)
    get_session = cache.sync_cached("session", ops.get_session)
    update_session = cache.sync_invalidating(sync_method(ops.update_session))
    update_session_activity = cache.sync_invalidating(sync_method(ops.update_session_activity))
    get_user_sessions = sync_method(ops.get_user_sessions)
    delete_session = cache.sync_invalidating(sync_method(ops.delete_session))
    get_session_summary = sync_method(ops.get_session_summary)
    store_message = cache.sync_invalidating(sync_method(ops.store_message))
    store_messages = cache.sync_invalidating(sync_method(ops.store_messages))
    get_messages = sync_method(ops.get_messages)
    get_recent_messages = sync_method(ops.get_recent_messages)
    search_messages = sync_method(ops.search_messages)
    store_context = sync_method(ops.store_context)
    get_context = sync_method(ops.get_context)
    cleanup_expired_data = cache.sync_invalidating(sync_method(ops.cleanup_expired_data), cache.every_session)
    store_preference = sync_method(ops.store_preference)
    get_preferences = sync_method(ops.get_preferences)
    store_relationship = sync_method(ops.store_relationship)
    get_related_sessions = sync_method(ops.get_related_sessions)
    recall = sync_method(recall_ops.recall)  # hybrid retrieval (ltst_memory/recall.py)
    rehydrate = sync_method(rehydrate_ops.rehydrate)  # context merging (ltst_memory/rehydrate.py)
    # compaction (ltst_memory/summarize.py)
    summarize_session = cache.sync_invalidating(sync_method(summarize_ops.summarize_session))
    for_user = scoped.for_user  # user-scoped view (ltst_memory/scoped.py)
    # privacy, retention, encryption keys (ltst_memory/privacy.py, retention.py, crypto.py)
    delete_user = cache.sync_invalidating(sync_method(privacy.delete_user), cache.every_session)
    export_analytics = sync_method(privacy.export_analytics)
    set_retention_policy = sync_method(retention.set_retention_policy)
    delete_retention_policy = sync_method(retention.delete_retention_policy)
    get_retention_policies = sync_method(retention.get_retention_policies)
    rotate_encryption_keys = cache.sync_invalidating(sync_method(crypto.rotate_encryption_keys), cache.every_session)
    stats = stats_ops.sync_stats_method(stats_ops.stats)  # observability (ltst_memory/stats.py)
    # bulk import and deferred embedding (ltst_memory/bulk.py)
    import_messages = cache.sync_invalidating(sync_method(bulk.import_messages))
    embed_pending = sync_method(bulk.embed_pending)
    pending_embeddings = sync_method(bulk.pending_embeddings)
    search_unembedded = sync_method(bulk.search_unembedded)
    # in-process session cache (ltst_memory/cache.py)
    cache_stats = cache.cache_stats
    clear_cache = cache.clear_cache


def _copy(conn: psycopg.Connection[Any], instruction: Copy) -> int:
    with conn.cursor() as cur:
        with cur.copy(instruction.sql) as copy:
            for chunk in instruction.chunks:
                copy.write(chunk)
        return cur.rowcount


def _end_autocommit(conn: psycopg.Connection[Any]) -> None:
    with suppress(psycopg.Error):  # a broken connection: the pool discards it anyway
        conn.autocommit = False
