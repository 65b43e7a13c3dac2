"""``AsyncConversationStorage``: the asyncio store, same methods and semantics as the sync one.

It runs the very same operations (:mod:`ltst_memory._ops`) on psycopg's async pool. Embedding is
CPU-bound model inference and runs in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
    async_method,
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
from ._kernel import Call, Commit, Copy, Embed, Op, Parallel, Query, R
from ._sqlstate import CLASSIFIED, LTSTError, classify
from .config import Settings
from .embeddings import Embedder, embed_checked, warm_up
from .errors import ConfigurationError, EmbeddingError
from .stats import track_operation

__all__ = ["AsyncConversationStorage"]

logger = logging.getLogger(__name__)


class AsyncConversationStorage:
    """Conversation memory on PostgreSQL + pgvector (asyncio API).

    Create it with ``await AsyncConversationStorage.open(...)`` or ``async with
    AsyncConversationStorage(...) as store:``; the arguments are those of
    :class:`~ltst_memory.ConversationStorage` (``pool`` and ``read_pool`` are ``AsyncConnectionPool``s).
    Every method is a coroutine; those that write are atomic (one transaction or one statement).
    ``warm=True`` loads the embedding model when the store opens (``open``/``async with``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        data_dir: str | Path | None = None,
        embedder: Embedder | None = None,
        pool: AsyncConnectionPool[Any] | None = None,
        read_dsn: str | None = None,
        read_pool: AsyncConnectionPool[Any] | None = None,
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
        self._pool: AsyncConnectionPool[Any] | None = None
        self._owns_pool = pool is None
        self._given_read_pool = read_pool
        self._read_pool: AsyncConnectionPool[Any] | None = None  # None: every operation runs on the primary
        self._read_conninfo = "" if read_pool is not None else (self._settings.read_dsn or "")
        self._embedded_dir: Path | None = None
        self._conninfo = ""
        self._closed = True
        self._registered: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    @classmethod
    async def open(cls, dsn: str | None = None, **kwargs: Any) -> AsyncConversationStorage:
        """Create and open a store (see the class docstring for the arguments)."""
        store = cls(dsn, **kwargs)
        await store.connect()
        return store

    async def connect(self) -> None:
        """Start/join the database, migrate and open the pool. Called by ``open`` and ``async with``."""
        if not self._closed:
            return
        opened: list[AsyncConnectionPool[Any]] = []
        try:
            if self._given_pool is not None:
                pool = self._given_pool
            else:
                pool = await self._open_pool(opened)
            read_pool = await self._open_read_pool(opened)
        except BaseException:
            for opened_pool in opened:
                await opened_pool.close()
            self._release_embedded()
            raise
        self._pool = pool
        self._read_pool = read_pool
        self._closed = False
        if self._warm:
            await asyncio.to_thread(warm_up, self._core.embedder)
        logger.info("ltst-memory async store open on %s", self.dsn)
        if read_pool is not None:
            logger.info("ltst-memory async store reads on replica %s", self.read_dsn)

    async def _open_pool(self, opened: list[AsyncConnectionPool[Any]]) -> AsyncConnectionPool[Any]:
        conninfo = self._settings.dsn
        if conninfo is None:
            self._embedded_dir = self._settings.data_dir
            conninfo = await asyncio.to_thread(acquire_embedded, self._embedded_dir)
        self._conninfo = conninfo
        await asyncio.to_thread(prepare_database, conninfo, self._settings, self._core.embedder)
        return await self._start_pool(conninfo, opened, replica=False)

    async def _start_pool(
        self, conninfo: str, opened: list[AsyncConnectionPool[Any]], *, replica: bool
    ) -> AsyncConnectionPool[Any]:
        """Open a pool on the primary or the replica; it goes into ``opened`` first, so a failed open
        is closed by the caller."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            **pool_sizes(self._settings),
            configure=_pooled.configure_replica_async if replica else _pooled.configure_async,
            check=_pooled.check_async,  # drop connections a server restart killed
            name="ltst-memory-async-read" if replica else "ltst-memory-async",
            open=False,
        )
        opened.append(pool)
        try:
            await pool.open(wait=True, timeout=self._settings.pool_timeout)
        except PoolTimeout as exc:
            raise unavailable(conninfo, exc, replica=replica) from None
        return pool

    async def _open_read_pool(self, opened: list[AsyncConnectionPool[Any]]) -> AsyncConnectionPool[Any] | None:
        """The read replica's pool: the given ``read_pool``, one opened on ``read_dsn``, or ``None``."""
        if self._given_read_pool is not None or not self._read_conninfo:
            return self._given_read_pool
        await asyncio.to_thread(check_replica, self._read_conninfo, self._settings.pool_timeout)
        return await self._start_pool(self._read_conninfo, opened, replica=True)

    def _release_embedded(self) -> None:
        if self._embedded_dir is not None:
            release_embedded(self._embedded_dir)
            self._embedded_dir = None

    async def close(self) -> None:
        """Close the pools (those the store opened) and release the embedded server. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._read_pool is not None and self._given_read_pool is None:
            await self._read_pool.close()
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
        self._release_embedded()

    async def __aenter__(self) -> AsyncConversationStorage:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """``True`` before ``connect``/``open`` and after :meth:`close`."""
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

    async def versions(self) -> dict[str, str]:
        """``{"postgres": ..., "pgvector": ...}`` versions of the server."""
        return await self._arun(ops.server_versions(self._core))

    # ------------------------------------------------------------------ executor

    @asynccontextmanager
    async def _connection(self, replica: bool = False) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the primary pool, or of the read replica's with ``replica``."""
        assert self._pool is not None  # guarded by check_open
        replica = replica and self._read_pool is not None
        pool = self._read_pool if replica and self._read_pool is not None else self._pool
        given = self._given_read_pool is not None if replica else not self._owns_pool
        try:
            async with pool.connection() as conn:
                if given and conn not in self._registered:
                    await _pooled.configure_async(conn)
                    self._registered.add(conn)
                try:
                    yield conn
                finally:
                    _pooled.handed_back(conn)
        except PoolTimeout as exc:
            shown = self.read_dsn if replica else self.dsn
            timeout = self._settings.pool_timeout
            raise await asyncio.to_thread(pool_timeout_error, pool, timeout, str(shown), replica=replica) from exc
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc

    def _unavailable(self, replica: bool, exc: psycopg.Error) -> LTSTError:
        return classify(exc, self._read_conninfo if replica else self._conninfo, replica=replica)

    async def _arun(self, op: Op[R], *, readonly: bool | None = None) -> R:
        """Run operation ``op``: on the read replica when the store has one and ``op`` only reads
        (``readonly``, else as declared: ltst_memory/_kernel.py)."""
        check_open(self._closed)
        readonly = is_read_only(op) if readonly is None else readonly
        with track_operation(self._core, op):  # timings by operation: ltst_memory/stats.py
            return await self._drive(op, readonly, on_replica(self, op, readonly))

    async def _drive(self, op: Op[R], readonly: bool, replica: bool) -> R:
        """The executor of every instruction (ltst_memory/_kernel.py). Embeddings and callbacks run in a
        worker thread with no connection held; a :class:`Commit` ends the transaction."""
        held: AsyncExitStack | None = None  # the pool connection (and the transaction), while held
        conn: psycopg.AsyncConnection[Any] | None = None
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
                        await held.aclose()  # commits
                    return stop.value  # type: ignore[no-any-return]
                failed = None
                if isinstance(instruction, (Embed, Call)):
                    check_outside_transaction(op, instruction, wrote)
                    if held is not None and not in_transaction:
                        await held.aclose()  # back to the pool while the embedder or the callback works
                        held, conn = None, None
                    try:
                        result = await self._outside(instruction)
                    except EmbeddingError as exc:
                        failed = exc
                    continue
                if isinstance(instruction, (Commit, Parallel)):
                    if held is not None:
                        await held.aclose()  # commits, gives the connection back
                        held, conn, in_transaction, wrote = None, None, False, False
                    result = await self._parallel(instruction.ops) if isinstance(instruction, Parallel) else None
                    continue
                begin = isinstance(instruction, Copy) or needs_transaction(readonly, instruction)
                if held is None or conn is None:
                    held = AsyncExitStack()
                    conn = await held.enter_async_context(self._connection(replica))
                    if not begin and not conn.autocommit:  # statements on their own until one needs it
                        await conn.set_autocommit(True)
                        held.push_async_callback(_end_autocommit, conn)
                if begin and not in_transaction:
                    await held.enter_async_context(conn.transaction())
                    in_transaction = True
                if isinstance(instruction, Copy):
                    wrote = True
                    try:
                        result = await _copy(conn, instruction)
                    except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
                        raise self._unavailable(replica, exc) from exc
                    continue
                wrote = wrote or (in_transaction and not (readonly or instruction.alone))
                result = await self._execute(conn, instruction, replica)
        except BaseException as exc:
            if held is not None:
                await held.__aexit__(type(exc), exc, exc.__traceback__)  # rolls back, gives the connection back
            raise

    async def _parallel(self, ops: tuple[Op[Any], ...]) -> list[Any]:
        """Run ``ops`` at once, each on its own connection (at most ``pool_max_size`` at a time)."""
        assert self._pool is not None  # guarded by check_open
        slots = asyncio.Semaphore(max(1, min(len(ops), self._pool.max_size)))

        async def run(op: Op[Any]) -> Any:
            async with slots:
                return await self._drive(op, False, False)

        return results_or_first_error(list(await asyncio.gather(*(run(op) for op in ops), return_exceptions=True)))

    async def _outside(self, instruction: Embed | Call) -> Any:
        if isinstance(instruction, Embed):
            return await asyncio.to_thread(embed_checked, self._core.embedder, instruction.texts)
        value = await asyncio.to_thread(instruction.function, *instruction.args)
        return await value if inspect.isawaitable(value) else value

    async def _execute(self, conn: psycopg.AsyncConnection[Any], query: Query, replica: bool = False) -> Any:
        logger.debug("query %s", describe(query))
        try:
            async with conn.cursor(row_factory=ROW_FACTORY) as cur:
                if query.many is None:
                    await cur.execute(query.sql, query.params)
                    return await _fetch(cur, query)
                returning = query.fetch == "all"
                await cur.executemany(query.sql, query.many, returning=returning)
                if not returning:
                    return cur.rowcount
                rows: list[dict[str, Any]] = []
                while True:
                    rows.extend(await cur.fetchall())
                    if not cur.nextset():
                        return rows
        except CLASSIFIED as exc:  # by SQLSTATE: ltst_memory/_sqlstate.py
            raise self._unavailable(replica, exc) from exc

    # ------------------------------------------------------------------ API

    create_session = async_method(ops.create_session)
    get_or_create_session = async_method(ops.get_or_create_session)
    get_session = cache.async_cached("session", ops.get_session)
    update_session = cache.async_invalidating(async_method(ops.update_session))
    update_session_activity = cache.async_invalidating(async_method(ops.update_session_activity))
    get_user_sessions = async_method(ops.get_user_sessions)
    delete_session = cache.async_invalidating(async_method(ops.delete_session))
    get_session_summary = async_method(ops.get_session_summary)
    store_message = cache.async_invalidating(async_method(ops.store_message))
    store_messages = cache.async_invalidating(async_method(ops.store_messages))
    get_messages = async_method(ops.get_messages)
    get_recent_messages = async_method(ops.get_recent_messages)
    search_messages = async_method(ops.search_messages)
    store_context = async_method(ops.store_context)
    get_context = async_method(ops.get_context)
    cleanup_expired_data = cache.async_invalidating(async_method(ops.cleanup_expired_data), cache.every_session)
    store_preference = async_method(ops.store_preference)
    get_preferences = async_method(ops.get_preferences)
    store_relationship = async_method(ops.store_relationship)
    get_related_sessions = async_method(ops.get_related_sessions)
    recall = async_method(recall_ops.recall)  # hybrid retrieval (ltst_memory/recall.py)
    rehydrate = async_method(rehydrate_ops.rehydrate)  # context merging (ltst_memory/rehydrate.py)
    # compaction (ltst_memory/summarize.py)
    summarize_session = cache.async_invalidating(async_method(summarize_ops.summarize_session))
    for_user = scoped.for_user  # user-scoped view (ltst_memory/scoped.py)
    # privacy, retention, encryption keys (ltst_memory/privacy.py, retention.py, crypto.py)
    delete_user = cache.async_invalidating(async_method(privacy.delete_user), cache.every_session)
    export_analytics = async_method(privacy.export_analytics)
    set_retention_policy = async_method(retention.set_retention_policy)
    delete_retention_policy = async_method(retention.delete_retention_policy)
    get_retention_policies = async_method(retention.get_retention_policies)
    rotate_encryption_keys = cache.async_invalidating(async_method(crypto.rotate_encryption_keys), cache.every_session)
    stats = stats_ops.async_stats_method(stats_ops.stats)  # observability (ltst_memory/stats.py)
    # bulk import and deferred embedding (ltst_memory/bulk.py)
    import_messages = cache.async_invalidating(async_method(bulk.import_messages))
    embed_pending = async_method(bulk.embed_pending)
    pending_embeddings = async_method(bulk.pending_embeddings)
    search_unembedded = async_method(bulk.search_unembedded)
    # in-process session cache (ltst_memory/cache.py)
    cache_stats = cache.cache_stats
    clear_cache = cache.clear_cache


async def _copy(conn: psycopg.AsyncConnection[Any], instruction: Copy) -> int:
    async with conn.cursor() as cur:
        async with cur.copy(instruction.sql) as copy:
            for chunk in instruction.chunks:
                await copy.write(chunk)
        return cur.rowcount


async def _end_autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    with suppress(psycopg.Error):  # a broken connection: the pool discards it anyway
        await conn.set_autocommit(False)


async def _fetch(cur: psycopg.AsyncCursor[Any], query: Query) -> Any:
    if query.fetch in ("all", "one"):
        return await (cur.fetchall() if query.fetch == "all" else cur.fetchone())
    return result_of(cur, query)
