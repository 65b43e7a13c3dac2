"""The store's connections: read-only operations without BEGIN/COMMIT, the pool's check without a round
trip on a quiet connection, the JSON loader's shortcut, read-only replica sessions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg.adapt import PyFormat, Transformer

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionExistsError,
    SessionNotFoundError,
    Settings,
    ValidationError,
    _pooled,
)
from ltst_memory._ops import Op, Query
from ltst_memory._queries import SET_SEARCH_SETTINGS

NOW = "SELECT now() AS t, current_setting('hnsw.ef_search', true) AS ef"


def _two_statements(*, local: bool) -> Op[list[Any]]:
    """Two statements 20 ms apart; with ``local``, a transaction-local setting comes first."""
    if local:
        yield Query(
            SET_SEARCH_SETTINGS, {"ef_search": "777", "probes": "3", "enable_sort": "on"}, fetch="none", local=True
        )
    first = yield Query(NOW, fetch="one")
    yield Query("SELECT pg_sleep(0.02)", fetch="none")
    second = yield Query(NOW, fetch="one")
    return [first, second]


def test_read_only_statements_run_on_their_own_and_writes_in_one_transaction(store: ConversationStorage) -> None:
    first, second = store._run(_two_statements(local=False), readonly=True)
    assert second["t"] > first["t"]  # now() moved on: no transaction around them
    first, second = store._run(_two_statements(local=False), readonly=False)
    assert second["t"] == first["t"]  # one transaction


def test_a_lone_atomic_write_runs_on_its_own(store: ConversationStorage) -> None:
    def op() -> Op[list[Any]]:
        first = yield Query(NOW, fetch="one", atomic=True)
        yield Query("SELECT pg_sleep(0.02)", fetch="none")
        second = yield Query(NOW, fetch="one")
        third = yield Query(NOW, fetch="one")
        return [first, second, third]

    first, second, third = store._run(op(), readonly=False)
    assert second["t"] > first["t"]  # no transaction around the atomic statement
    assert second["t"] == third["t"]  # the next query opened the operation's transaction
    store.create_session(ConversationSession("s", "u"))
    with pytest.raises(SessionExistsError):
        store.create_session(ConversationSession("s", "u"))
    stored = store.store_messages([ConversationMessage("s", "human", f"m{i}") for i in range(3)])
    assert [m.message_index for m in stored] == [0, 1, 2]
    with pytest.raises(SessionNotFoundError):
        store.store_message(ConversationMessage("nope", "human", "x"))
    summary = store.get_session_summary("s")
    assert summary is not None and summary.total_messages == 3


def test_a_local_setting_opens_the_transaction_and_ends_with_it(store: ConversationStorage) -> None:
    first, second = store._run(_two_statements(local=True), readonly=True)
    assert first["ef"] == second["ef"] == "777"  # the setting holds for what follows
    assert first["t"] == second["t"]
    after, _ = store._run(_two_statements(local=False), readonly=True)
    assert after["ef"] != "777"  # and ends with its transaction, on the same pooled connection


def test_pooled_connections_stay_transactional_for_your_own_queries(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s", "u"))
    for _ in range(3):
        store.get_messages("s")
        store.search_messages("anything", session_id="s")
    with store.pool.connection() as conn:
        assert conn.autocommit is False
        conn.execute("UPDATE conversation_sessions SET metadata = '{\"x\": 1}' WHERE session_id = 's'")
        conn.rollback()
    assert store.get_session("s").metadata == {}  # type: ignore[union-attr]


def test_empty_json_objects_are_fresh_dicts(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s", "u"))
    store.store_messages(
        [ConversationMessage("s", "human", "one"), ConversationMessage("s", "ai", "two", metadata={"k": [1, "a"]})]
    )
    first, second = store.get_messages("s")
    assert first.metadata == {} and second.metadata == {"k": [1, "a"]}
    first.metadata["changed"] = True
    again = store.get_messages("s")[0]
    assert again.metadata == {} and again.metadata is not first.metadata


ARRAYS = {
    "float32 row": np.linspace(-1.5, 2.5, 6, dtype=np.float32),
    "float32 strided view": np.linspace(-3, 3, 12, dtype=np.float32)[::2],
    "float32 tiny and huge": np.array([1e-38, -3e38, 1.0, 0.0, -0.0, 7e-45], dtype=np.float32),
    "float64": np.linspace(-1.5, 2.5, 6),
    "big-endian float32": np.linspace(-1.5, 2.5, 6, dtype=np.float32).astype(">f4"),
    "float16": np.linspace(-1.5, 2.5, 6, dtype=np.float16),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_numpy_vectors_go_out_as_pgvector_sends_them(store: ConversationStorage, name: str) -> None:
    array = ARRAYS[name]
    with store.pool.connection() as conn, psycopg.connect(store._conninfo) as plain:
        register_vector(plain)  # pgvector's own dumper
        ours = Transformer(conn).get_dumper(array, PyFormat.AUTO).dump(array)
        theirs = Transformer(plain).get_dumper(array, PyFormat.AUTO).dump(array)
        assert bytes(ours) == bytes(theirs)
        stored = conn.execute("SELECT %s::text", (array,)).fetchone()[0]
        assert stored == plain.execute("SELECT %s::text", (array,)).fetchone()[0]
        parsed = np.array([float(x) for x in stored.strip("[]").split(",")], dtype=np.float32)
        assert parsed.tobytes() == array.astype(np.float32).tobytes()  # every value as sent, -0.0 too
        with pytest.raises(ValueError):  # a 2-d array: refused as pgvector refuses it
            conn.execute("SELECT %s::text", (np.ones((2, 3), dtype=np.float32),))


def test_the_vector_shortcut_needs_pgvector_s_numpy_dumper(database_dsn: str) -> None:
    with psycopg.connect(database_dsn) as conn:  # no pgvector types registered: nothing to put in front of
        _pooled._fast_vectors(conn)
        with pytest.raises(psycopg.ProgrammingError):
            conn.adapters.get_dumper(np.ndarray, PyFormat.BINARY)


def test_a_stored_float32_embedding_reads_back_exactly(store: ConversationStorage, hashing_embedder: Any) -> None:
    store.create_session(ConversationSession("s", "u"))
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3, hashing_embedder.dimension)).astype(np.float32)
    store.store_message(ConversationMessage("s", "human", "one", embedding=vectors[0]))
    store.store_messages([ConversationMessage("s", "ai", f"m{i}", embedding=v) for i, v in enumerate(vectors[1:])])
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT embedding::real[] FROM conversation_messages ORDER BY message_index").fetchall()
    assert np.array([r[0] for r in rows], dtype=np.float32).tobytes() == vectors.tobytes()


def _failing() -> Op[Any]:
    yield Query("SELECT 1 / 0", fetch="one")


def _calls_in_turn(store: Any, round_: int) -> None:
    sid = f"s{round_}"
    assert store.create_session(ConversationSession(sid, "u")).session_id == sid
    one = store.store_message(ConversationMessage(sid, "human", f"apples {round_}", metadata={"n": round_}))
    batch = store.store_messages([ConversationMessage(sid, "ai", f"pears {round_} {i}") for i in range(3)])
    assert (one.message_index, [m.message_index for m in batch]) == (0, [1, 2, 3])
    with pytest.raises(SessionNotFoundError):
        store.store_message(ConversationMessage("missing", "human", "x"))
    with pytest.raises(ValidationError, match="division by zero"):  # a statement that fails
        store._run(_failing())
    session = store.get_session(sid)
    assert session is not None and session.user_id == "u"
    assert [m.content for m in store.get_messages(sid)] == [f"apples {round_}", *(m.content for m in batch)]
    assert store.get_messages(sid)[0].metadata == {"n": round_}
    assert store.get_recent_messages(sid, 2)[-1].content == f"pears {round_} 2"
    assert store.search_messages(f"apples {round_}", session_id=sid, limit=1)[0][0].content == f"apples {round_}"
    assert store.get_session_summary(sid).total_messages == 4
    assert store.get_user_sessions("u")[0].session_id == sid


def test_one_connection_serves_every_kind_of_call_in_turn(database_dsn: str, hashing_embedder: Any) -> None:
    """The executor keeps a cursor per row factory on each pooled connection (_pooled.kept_cursor): on a
    pool of one connection, every kind of call in turn, failures between them, gets its own answers."""
    settings = Settings(pool_min_size=1, pool_max_size=1)
    with ConversationStorage(database_dsn, embedder=hashing_embedder, settings=settings) as store:
        for round_ in range(3):
            _calls_in_turn(store, round_)
        with store.pool.connection() as conn:
            kept = conn.__dict__["_ltst_cursors"]
            # (one per row factory of the statements that fetch one row; on a Citus cluster fewer kinds)
            assert 1 <= len(kept) <= _pooled.CURSORS_KEPT and not any(c.closed for c in kept.values())

    async def main() -> None:
        async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder, settings=settings) as store:
            sid = "async"
            await store.create_session(ConversationSession(sid, "u"))
            for i in range(3):
                stored = await store.store_message(ConversationMessage(sid, "human", f"turn {i}"))
                assert stored.message_index == i
                assert [m.message_index for m in await store.get_messages(sid)] == list(range(i + 1))
                assert (await store.get_session(sid)) is not None

    asyncio.run(main())


def _wait_readable(conn: psycopg.Connection[Any]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _pooled.is_quiet(conn):
            return True
        time.sleep(0.02)
    return False


def test_quiet_check_sees_a_connection_the_server_ended(database_dsn: str) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as admin, psycopg.connect(database_dsn) as conn:
        assert not _pooled.is_quiet(conn)  # never handed back by a store: the full check
        _pooled.handed_back(conn)
        assert _pooled.is_quiet(conn)
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        assert _wait_readable(conn)  # the server's goodbye makes the socket readable
        with pytest.raises(psycopg.OperationalError):
            _pooled.check(conn)


def test_quiet_check_is_short_lived(database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(database_dsn) as conn:
        _pooled.handed_back(conn)
        assert _pooled.is_quiet(conn)
        later = time.monotonic() + _pooled.QUIET_SECONDS + 1
        monkeypatch.setattr(_pooled.time, "monotonic", lambda: later)
        assert not _pooled.is_quiet(conn)
        conn.execute("SELECT 1")  # in a transaction: never quiet
        monkeypatch.undo()
        _pooled.handed_back(conn)
        assert not _pooled.is_quiet(conn)


def test_store_recovers_when_its_idle_connections_are_killed(database_dsn: str, hashing_embedder: Any) -> None:
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        store.create_session(ConversationSession("s", "u"))
        with psycopg.connect(database_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        time.sleep(0.1)
        for _ in range(5):  # every pooled connection is dead; none of these calls fails
            assert store.get_messages("s") == []


def test_replica_sessions_refuse_writes_outside_transactions_too(database_dsn: str, hashing_embedder: Any) -> None:
    with ConversationStorage(database_dsn, read_dsn=database_dsn, embedder=hashing_embedder) as store:
        store.create_session(ConversationSession("s", "u"))
        assert store.get_messages("s") == []
        assert store._read_pool is not None
        with store._read_pool.connection() as conn:
            conn.autocommit = True
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM conversation_sessions")
            conn.autocommit = False
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        assert store.get_session("s") is not None


def test_async_store_reads_and_writes_the_same_way(database_dsn: str, hashing_embedder: Any) -> None:
    async def main() -> None:
        async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as store:
            first, second = await store._arun(_two_statements(local=False), readonly=True)
            assert second["t"] > first["t"]
            first, second = await store._arun(_two_statements(local=True), readonly=True)
            assert first["ef"] == second["ef"] == "777" and first["t"] == second["t"]
            first, second = await store._arun(_two_statements(local=False), readonly=False)
            assert first["t"] == second["t"]
            await store.create_session(ConversationSession("s", "u"))
            assert (await store.get_messages("s")) == []
            assert store._pool is not None
            async with store._pool.connection() as conn:
                assert conn.autocommit is False

    asyncio.run(main())


def test_your_own_pool_keeps_its_autocommit(database_dsn: str, hashing_embedder: Any) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(database_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        with ConversationStorage(pool=pool, embedder=hashing_embedder) as store:
            store.create_session(ConversationSession("s", "u"))
            store.store_messages([ConversationMessage("s", "human", f"m{i}") for i in range(3)])
            assert len(store.get_messages("s")) == 3
            assert store.search_messages("m1", session_id="s")
            with pytest.raises(SessionNotFoundError):  # a failing write still changes nothing
                store.store_messages([ConversationMessage("s", "human", "x"), ConversationMessage("gone", "ai", "y")])
            assert len(store.get_messages("s")) == 3
        for _ in range(2):
            with pool.connection() as conn:
                assert conn.autocommit is True


def test_the_store_reuses_the_connection_handed_back_last(database_dsn: str, hashing_embedder: Any) -> None:
    """The store's pool is a stack: after a burst of concurrent calls has opened every connection, calls
    made one at a time keep landing on one warm connection (one server process) instead of cycling
    through them all, and the connection handed back last is the next one handed out."""
    settings = Settings(pool_min_size=3, pool_max_size=3)
    with ConversationStorage(database_dsn, embedder=hashing_embedder, settings=settings) as store:
        store.pool.wait()
        first, second, third = (store.pool.getconn() for _ in range(3))
        for conn in (first, third, second):
            store.pool.putconn(conn)
        assert store.pool.getconn() is second  # the last one handed back
        store.pool.putconn(second)
        store.create_session(ConversationSession("s", "u"))
        pids = set()
        for i in range(6):
            store.store_message(ConversationMessage("s", "human", f"turn {i}"))
            with store.pool.connection() as conn:
                pids.add(conn.info.backend_pid)
        assert len(pids) == 1

    async def main() -> None:
        async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder, settings=settings) as store:
            await store.pool.wait()
            conns = [await store.pool.getconn() for _ in range(3)]
            for conn in (conns[0], conns[2], conns[1]):
                await store.pool.putconn(conn)
            assert await store.pool.getconn() is conns[1]
            await store.pool.putconn(conns[1])
            pids = set()
            for _ in range(6):
                await store.get_session("s")
                async with store.pool.connection() as conn:
                    pids.add(conn.info.backend_pid)
            assert len(pids) == 1

    asyncio.run(main())
