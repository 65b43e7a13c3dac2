"""Read replicas (``read_dsn`` / ``read_pool`` / ``LTST_READ_DATABASE_URL``): operations that only read run
on the replica, everything else on the primary.

The "replica" is a real database on the test server, reached as a role whose transactions are read-only
(``default_transaction_read_only = on``), as on a hot standby: a write routed there fails. Two setups:

* the replica role on the *same* database as the primary, given as ``read_pool``: the pool's own
  request counter shows which calls used it — every read exactly once, no write ever;
* the replica role on a *copy* of the primary taken earlier (``read_dsn``): a lagging replica. Every
  read answers from the copy (old data), the same read inside ``with store.primary:`` answers the
  new data: each read method's result shows which server it ran on.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from _helpers import scratch_database
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ltst_memory import (
    AsyncConversationStorage,
    ConfigurationError,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseUnavailableError,
    HashingEmbedder,
    MigrationError,
    SessionRelationship,
    Settings,
    UserPreference,
)
from ltst_memory import _ops as ops
from ltst_memory._executor import READ_ONLY_OPERATIONS
from ltst_memory.crypto import generate_key

READER = f"ltst_test_reader_{os.getpid()}"
SECRET = "Rep1ica-s3cret-pw"
TABLE = "conversation_sessions"

#: The read-only operations (issue 5); each is a method of both stores.
READ_METHODS = {
    "get_session",
    "get_messages",
    "get_recent_messages",
    "search_messages",
    "get_context",
    "get_user_sessions",
    "get_session_summary",
    "get_preferences",
    "get_related_sessions",
    "recall",
    "rehydrate",
}


async def v(value: Any) -> Any:
    """The result of a sync store call, or of an async one once awaited."""
    return await value if inspect.isawaitable(value) else value


# --------------------------------------------------------------------------- the replica role


@pytest.fixture(scope="session")
def reader_role(pg_admin_dsn: str) -> Iterator[str]:
    """A login role whose transactions are read-only (BYPASSRLS: on a physical replica the application
    connects as the same role as on the primary, which owns the tables)."""
    role = sql.Identifier(READER)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS PASSWORD {}").format(role, sql.Literal(SECRET)))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    yield READER
    still_granted = psycopg.errors.DependentObjectsStillExist  # by the database of a failed test
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn, contextlib.suppress(still_granted):
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def as_reader(dsn: str) -> str:
    """GRANT the reader role SELECT on the ltst tables of the database at ``dsn``; return its DSN for it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = %s", (TABLE,))
        name = sql.Identifier(row.fetchone()[0])  # type: ignore[index]
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, sql.Identifier(READER)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, sql.Identifier(READER)))
    return make_conninfo(dsn, user=READER, password=SECRET)


def reader_connections(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (READER,)).fetchone()
    return int(row[0])  # type: ignore[index]


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def unreachable_dsn() -> str:
    """A DSN (with a password) of a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return make_conninfo("", host="127.0.0.1", port=port, dbname="ltst", user=READER, password=SECRET)


# --------------------------------------------------------------------------- every write on the primary


async def every_write(store: Any) -> None:
    """Call every operation that writes (and the primary-only reads next to them)."""
    await v(store.create_session(ConversationSession("s1", "u1", session_name="Dev")))
    await v(store.create_session(ConversationSession("s2", "u1", session_name="Trip")))
    await v(store.create_session(ConversationSession("s3", "u1")))
    await v(store.create_session(ConversationSession("x1", "u2")))
    await v(store.update_session(ConversationSession("s1", "u1", session_name="Development")))
    await v(store.update_session_activity("s1"))
    await v(store.store_message(ConversationMessage("s1", "human", "I drink black coffee every morning")))
    await v(store.store_messages([ConversationMessage("s1", "ai", "Noted: black coffee."),
                                  ConversationMessage("s2", "human", "My sister Ana is vegetarian.")]))  # fmt: skip
    await v(store.store_context(ConversationContext("s1", "project", "task", "read replicas")))
    await v(store.store_preference(UserPreference("u1", "tone", "concise")))
    await v(store.store_preference(UserPreference("u1", "phone", "555-0100", is_sensitive=True)))
    await v(store.store_relationship(SessionRelationship("s1", "s2", relationship_type="follow_up")))
    assert await v(store.summarize_session("s1"))
    result = await v(store.import_messages([ConversationMessage("s3", "human", "imported")], defer_embedding=True))
    assert result.inserted == 1
    assert await v(store.pending_embeddings()) == 1
    assert await v(store.embed_pending()) == 1
    await v(store.search_unembedded("imported", user_id="u1"))
    await v(store.set_retention_policy(user_id="u1", message_days=365))
    assert await v(store.get_retention_policies())
    assert await v(store.delete_retention_policy(user_id="u1"))
    await v(store.cleanup_expired_data())
    await v(store.rotate_encryption_keys())
    await v(store.export_analytics())
    await v(store.stats())
    await v(store.versions())
    assert await v(store.migrate()) == []  # both stores migrate on the primary
    await v(store.store_message(ConversationMessage("x1", "human", "gone soon")))
    assert (await v(store.delete_session("s3")))["messages"] == 1
    assert await v(store.delete_user("u2"))


async def every_read(store: Any, requests: Callable[[], int]) -> None:
    """Call every read-only operation: each takes exactly one connection of the replica pool and sees
    what ``every_write`` wrote."""
    coffee = "I drink black coffee every morning"
    calls: dict[str, Callable[[], Any]] = {
        "get_session": lambda: store.get_session("s1"),
        "get_user_sessions": lambda: store.get_user_sessions("u1"),
        "get_session_summary": lambda: store.get_session_summary("s1"),
        "get_messages": lambda: store.get_messages("s1"),
        "get_recent_messages": lambda: store.get_recent_messages("s1", 1),
        "search_messages": lambda: store.search_messages(coffee, session_id="s1", limit=1),
        "get_context": lambda: store.get_context("s1"),
        "get_preferences": lambda: store.get_preferences("u1"),
        "get_related_sessions": lambda: store.get_related_sessions("s1"),
        "recall": lambda: store.recall("black coffee", user_id="u1", limit=3),
        "rehydrate": lambda: store.rehydrate("s1", "what do I drink?"),
    }
    checks: dict[str, Callable[[Any], bool]] = {
        "get_session": lambda r: r.session_name == "Development",
        "get_user_sessions": lambda r: {s.session_id for s in r} == {"s1", "s2"},
        "get_session_summary": lambda r: r.total_messages == 2,
        "get_messages": lambda r: [m.role for m in r] == ["human", "ai"],
        "get_recent_messages": lambda r: [m.content for m in r] == ["Noted: black coffee."],
        "search_messages": lambda r: r[0][0].content == coffee,
        "get_context": lambda r: [c.context_value for c in r] == ["read replicas"],
        "get_preferences": lambda r: (
            {p.preference_key: p.preference_value for p in r} == {"tone": "concise", "phone": "555-0100"}
        ),
        "get_related_sessions": lambda r: [s.session_id for s, _ in r] == ["s2"],
        "recall": lambda r: coffee in [m.content for m, _ in r],
        "rehydrate": lambda r: "black coffee" in r.to_prompt(),
    }
    assert set(calls) == set(checks) == READ_METHODS
    for name, call in calls.items():
        before = requests()
        result = await v(call())
        # one connection each (recall, also within rehydrate, embeds its question beside its lexical leg)
        assert requests() == before + 1, f"{name} did not run on the replica pool"
        assert checks[name](result), f"{name} returned {result!r}"


def test_sync_writes_on_primary_reads_on_read_pool(
    database_dsn: str, reader_role: str, hashing_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setenv("LTST_CACHE_TTL", "0")  # get_session reads the replica only without the cache
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    with ConnectionPool(as_reader(database_dsn), min_size=1, max_size=2, open=False) as read_pool:
        requests = lambda: read_pool.get_stats().get("requests_num", 0)  # noqa: E731
        with ConversationStorage(
            database_dsn, embedder=hashing_embedder, read_pool=read_pool, settings=Settings(read_check_interval=3600)
        ) as store:
            assert store.read_dsn == "<external pool>"
            opened = requests()  # the replica's lag, checked as the store opens (then once an hour here)
            asyncio.run(every_write(store))  # the replica role is read-only: any write routed there fails
            assert requests() == opened
            asyncio.run(every_read(store, requests))
        assert not read_pool.closed  # a given pool belongs to the caller


async def test_async_writes_on_primary_reads_on_read_pool(
    database_dsn: str, reader_role: str, hashing_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTST_CACHE_TTL", "0")
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    async with AsyncConnectionPool(as_reader(database_dsn), min_size=1, max_size=2, open=False) as read_pool:
        requests = lambda: read_pool.get_stats().get("requests_num", 0)  # noqa: E731
        async with AsyncConversationStorage(
            database_dsn, embedder=hashing_embedder, read_pool=read_pool, settings=Settings(read_check_interval=3600)
        ) as store:
            opened = requests()
            await every_write(store)
            assert requests() == opened
            await every_read(store, requests)
        assert not read_pool.closed


# --------------------------------------------------------------------------- a lagging replica

OLD = {
    "get_session": "before",
    "get_user_sessions": ["s1", "s2"],
    "get_session_summary": 2,
    "get_messages": ["I like green tea", "Noted: green tea."],
    "get_recent_messages": ["I like green tea", "Noted: green tea."],
    "search_messages": False,
    "get_context": ["task"],
    "get_preferences": ["tone"],
    "get_related_sessions": ["s2"],
    "recall": False,
    "rehydrate": False,
}
NEW = {
    "get_session": "after",
    "get_user_sessions": ["s1", "s2", "s3"],
    "get_session_summary": 3,
    "get_messages": ["I like green tea", "Noted: green tea.", "Now I drink black coffee"],
    "get_recent_messages": ["I like green tea", "Noted: green tea.", "Now I drink black coffee"],
    "search_messages": True,
    "get_context": ["deadline", "task"],
    "get_preferences": ["language", "tone"],
    "get_related_sessions": ["s2", "s3"],
    "recall": True,
    "rehydrate": True,
}


@pytest.fixture
def lagging_replica(database_dsn: str, pg_admin_dsn: str, reader_role: str) -> Iterator[str]:
    """The reader's DSN of a copy of the primary taken after the first writes (a replica that lags)."""
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as store:
        store.create_session(ConversationSession("s1", "u1", session_name="before"))
        store.create_session(ConversationSession("s2", "u1"))
        store.store_messages([ConversationMessage("s1", "human", "I like green tea"),
                              ConversationMessage("s1", "ai", "Noted: green tea.")])  # fmt: skip
        store.store_context(ConversationContext("s1", "project", "task", "tea"))
        store.store_preference(UserPreference("u1", "tone", "concise"))
        store.store_relationship(SessionRelationship("s1", "s2"))
    with scratch_database(pg_admin_dsn, conninfo_to_dict(database_dsn)["dbname"]) as copy_dsn:
        yield as_reader(copy_dsn)


async def write_after_the_copy(store: Any) -> None:
    await v(store.update_session(ConversationSession("s1", "u1", session_name="after")))
    await v(store.create_session(ConversationSession("s3", "u1")))
    await v(store.store_message(ConversationMessage("s1", "human", "Now I drink black coffee")))
    await v(store.store_context(ConversationContext("s1", "project", "deadline", "friday")))
    await v(store.store_preference(UserPreference("u1", "language", "fr")))
    await v(store.store_relationship(SessionRelationship("s1", "s3")))


async def answers(store: Any) -> dict[str, Any]:
    """What each read-only operation answers, reduced to what differs between OLD and NEW."""
    coffee = "Now I drink black coffee"
    return {
        "get_session": (await v(store.get_session("s1"))).session_name,
        "get_user_sessions": sorted(s.session_id for s in await v(store.get_user_sessions("u1"))),
        "get_session_summary": (await v(store.get_session_summary("s1"))).total_messages,
        "get_messages": [m.content for m in await v(store.get_messages("s1"))],
        "get_recent_messages": [m.content for m in await v(store.get_recent_messages("s1", 10))],
        "search_messages": coffee in [m.content for m, _ in await v(store.search_messages(coffee, session_id="s1"))],
        "get_context": sorted(c.context_key for c in await v(store.get_context("s1"))),
        "get_preferences": sorted(p.preference_key for p in await v(store.get_preferences("u1"))),
        "get_related_sessions": sorted(s.session_id for s, _ in await v(store.get_related_sessions("s1"))),
        "recall": coffee in [m.content for m, _ in await v(store.recall("black coffee", user_id="u1"))],
        "rehydrate": "black coffee" in (await v(store.rehydrate("s1", "what do I drink?"))).to_prompt(),
    }


async def check_lagging_replica(store: Any, cached: Any) -> None:
    """``store`` (cache off) and ``cached`` (cache on) read from a replica that stopped at OLD."""
    assert set(OLD) == set(NEW) == READ_METHODS and all(OLD[k] != NEW[k] for k in OLD)
    await write_after_the_copy(store)  # on the primary (the replica's transactions are read-only)
    assert await answers(store) == OLD  # every read ran on the replica
    with store.primary:
        assert await answers(store) == NEW  # read-your-writes
        with store.primary:  # re-entrant
            assert len(await v(store.get_messages("s1"))) == 3
        assert len(await v(store.get_messages("s1"))) == 3
    assert await answers(store) == OLD  # back on the replica after the block
    with cached.primary:
        assert len(await v(store.get_messages("s1"))) == 2  # another store's block does not move this one
    # the user-scoped view reads the replica too
    assert len(await v(store.for_user("u1").get_messages("s1"))) == 2

    # the session cache never keeps a replica's (lagging) answer: a miss it will keep reads the primary
    assert (await v(cached.get_session("s1"))).session_name == "after"
    await v(cached.update_session(ConversationSession("s1", "u1", session_name="again")))
    assert (await v(cached.get_session("s1"))).session_name == "again"  # invalidated, refilled from the primary
    assert (await v(cached.get_session("s1"))).session_name == "again"
    assert cached.cache_stats()["hits"] == 1


async def test_sync_reads_follow_a_lagging_replica(
    database_dsn: str, lagging_replica: str, pg_admin_dsn: str, hashing_embedder: HashingEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("LTST_CACHE_TTL", "0")
    store = ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=lagging_replica)
    try:
        assert store.cache_stats()["ttl"] == 0  # the store's cache is made on first use: this one is off
        monkeypatch.setenv("LTST_CACHE_TTL", "3600")  # the cache is off by default: turned on here
        with ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=lagging_replica) as cached:
            assert cached.cache_stats()["ttl"] > 0
            assert SECRET not in str(cached.read_dsn) and "***" in str(cached.read_dsn)
            await check_lagging_replica(store, cached)
            # adapters run operation generators directly: a read-only one still goes to the replica
            assert len(store._run(ops.get_messages(store._core, "s1"))) == 2
        assert reader_connections(pg_admin_dsn) > 0
    finally:
        store.close()
    assert wait_for(lambda: reader_connections(pg_admin_dsn) == 0), "close() left replica connections open"


async def test_async_reads_follow_a_lagging_replica(
    database_dsn: str, lagging_replica: str, pg_admin_dsn: str, hashing_embedder: HashingEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("LTST_CACHE_TTL", "0")
    store = await AsyncConversationStorage.open(database_dsn, embedder=hashing_embedder, read_dsn=lagging_replica)
    try:
        assert store.cache_stats()["ttl"] == 0
        monkeypatch.setenv("LTST_CACHE_TTL", "3600")  # the cache is off by default: turned on here
        async with AsyncConversationStorage(
            database_dsn, embedder=hashing_embedder, read_dsn=lagging_replica
        ) as cached:
            assert cached.cache_stats()["ttl"] > 0
            await check_lagging_replica(store, cached)
            assert len(await store._arun(ops.get_messages(store._core, "s1"))) == 2
    finally:
        await store.close()
    assert wait_for(lambda: reader_connections(pg_admin_dsn) == 0), "close() left replica connections open"


# --------------------------------------------------------------------------- configuration and failures


def test_without_replica_nothing_changes(database_dsn: str, hashing_embedder: HashingEmbedder,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("LTST_READ_DATABASE_URL", raising=False)
    assert Settings.from_env().read_dsn is None
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        assert store.read_dsn is None and store._read_pool is None  # no second pool
        store.create_session(ConversationSession("s1", "u1"))
        with store.primary:  # harmless without a replica
            assert store.get_session("s1") is not None


def test_replica_from_environment_and_settings(
    database_dsn: str, reader_role: str, hashing_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = as_reader(database_dsn)
    monkeypatch.setenv("LTST_READ_DATABASE_URL", unreachable_dsn())
    with pytest.raises(DatabaseUnavailableError):  # the environment's replica is used...
        ConversationStorage(database_dsn, embedder=hashing_embedder)
    with ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=reader) as store:  # ...unless given
        assert store.read_dsn is not None and READER in store.read_dsn and SECRET not in store.read_dsn
    monkeypatch.setenv("LTST_READ_DATABASE_URL", reader)
    assert Settings.from_env().read_dsn == reader
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        assert store.read_dsn is not None and READER in store.read_dsn
    monkeypatch.delenv("LTST_READ_DATABASE_URL")
    settings = Settings.from_env(dsn=database_dsn, read_dsn=reader)
    with ConversationStorage(settings=settings, embedder=hashing_embedder) as store:
        assert store.read_dsn is not None and READER in store.read_dsn
    with pytest.raises(ConfigurationError):
        ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=reader, read_pool=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=42)  # type: ignore[arg-type]


def test_unreachable_replica_sync(database_dsn: str, pg_admin_dsn: str, hashing_embedder: HashingEmbedder) -> None:
    dbname = conninfo_to_dict(database_dsn)["dbname"]
    with pytest.raises(DatabaseUnavailableError) as caught:
        ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=unreachable_dsn())
    message = str(caught.value)
    assert "read replica" in message and "***" in message and SECRET not in message
    assert wait_for(lambda: _connections_to(pg_admin_dsn, dbname) == 0), "the primary pool was left open"


async def test_unreachable_replica_async(
    database_dsn: str, pg_admin_dsn: str, hashing_embedder: HashingEmbedder
) -> None:
    dbname = conninfo_to_dict(database_dsn)["dbname"]
    store = AsyncConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=unreachable_dsn())
    with pytest.raises(DatabaseUnavailableError) as caught:
        await store.connect()
    message = str(caught.value)
    assert "read replica" in message and "***" in message and SECRET not in message
    assert store.closed
    assert wait_for(lambda: _connections_to(pg_admin_dsn, dbname) == 0), "the primary pool was left open"


def _connections_to(admin_dsn: str, dbname: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0])  # type: ignore[index]


def test_migrations_never_run_on_the_replica(
    database_dsn: str, empty_database_dsn: str, hashing_embedder: HashingEmbedder
) -> None:
    # a writable "replica" without the schema: the store refuses it, and does not install the schema there
    with pytest.raises(MigrationError):
        ConversationStorage(database_dsn, embedder=hashing_embedder, read_dsn=empty_database_dsn)
    with psycopg.connect(empty_database_dsn) as conn:
        assert conn.execute("SELECT to_regclass('conversation_sessions')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone() == (0,)


def test_read_only_operations_are_declared_once() -> None:
    resolved = set()
    for qualified in READ_ONLY_OPERATIONS:
        module, _, name = qualified.rpartition(".")
        op = getattr(importlib.import_module(module), name)
        assert inspect.isgeneratorfunction(op), qualified
        resolved.add(name)
    assert resolved == READ_METHODS
    for cls in (ConversationStorage, AsyncConversationStorage):
        assert set(dir(cls)) >= READ_METHODS
