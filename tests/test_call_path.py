"""The executor's per-call path: what it holds and gives back, what it counts, and the shortcuts it takes
(cache invalidation without signature binding, a float32 vector checked in one pass, session rows built
straight from their values) give the same answers as the long way."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from psycopg.pq import TransactionStatus

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    EmbeddingDimensionError,
    LTSTError,
    SessionNotFoundError,
    ValidationError,
)
from ltst_memory import stats as stats_module
from ltst_memory._kernel import REGISTRY
from ltst_memory._ops import Op, Query

ROWS = "SELECT count(*) AS n FROM conversation_sessions WHERE session_id = 'written'"
WRITE = "INSERT INTO conversation_sessions (session_id, user_id) VALUES ('written', 'u')"


def _writes_then_fails() -> Op[None]:
    yield Query(WRITE, fetch="none")
    yield Query("SELECT 1 / 0 AS boom", fetch="one")  # division_by_zero: a DataError


def _fails_alone() -> Op[None]:
    yield Query("SELECT 1 / 0 AS boom", fetch="one", atomic=True)  # run in autocommit


def _assert_clean(conn: Any) -> None:
    assert conn.autocommit is False
    assert conn.info.transaction_status == TransactionStatus.IDLE


def test_a_failing_statement_rolls_back_and_hands_the_connection_back_clean(
    database_dsn: str, hashing_embedder: Any
) -> None:
    with ConversationStorage(database_dsn, embedder=hashing_embedder, pool_max_size=1) as store:
        for op in (_writes_then_fails, _fails_alone):
            with pytest.raises(LTSTError):  # typed (by SQLSTATE), not psycopg's
                store._run(op(), readonly=False)
            with store.pool.connection(timeout=2) as conn:  # the one connection is back, as it came
                _assert_clean(conn)
                assert conn.execute(ROWS).fetchone()[0] == 0  # the write was rolled back
        with pytest.raises(LTSTError):  # a read-only operation's failure, in autocommit
            store._run(_fails_alone(), readonly=True)
        with store.pool.connection(timeout=2) as conn:
            _assert_clean(conn)
        store.create_session(ConversationSession("s", "u"))  # and the store goes on
        assert store.get_session("s") is not None


def test_the_async_store_rolls_back_and_hands_back_the_same_way(database_dsn: str, hashing_embedder: Any) -> None:
    async def main() -> None:
        async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder, pool_max_size=1) as store:
            for op in (_writes_then_fails, _fails_alone):
                with pytest.raises(LTSTError):
                    await store._arun(op(), readonly=False)
                async with store.pool.connection(timeout=2) as conn:
                    _assert_clean(conn)
                    row = await (await conn.execute(ROWS)).fetchone()
                    assert row is not None and row[0] == 0
            await store.create_session(ConversationSession("s", "u"))
            assert await store.get_session("s") is not None

    asyncio.run(main())


def test_calls_and_errors_are_counted_in_stats_and_prometheus(store: ConversationStorage) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")

    def sample(name: str, **labels: str) -> float:
        value = prometheus_client.REGISTRY.get_sample_value(name, {"operation": "get_recent_messages", **labels})
        return value or 0.0

    if stats_module._instrumentation()[1] is None:
        pytest.skip("instrumentation switched off (LTST_INSTRUMENTATION=0)")
    before = sample("ltst_operation_seconds_count"), sample("ltst_operation_seconds_bucket", le="+Inf")
    store.create_session(ConversationSession("s", "u"))
    store.store_message(ConversationMessage("s", "human", "hello"))
    store.get_recent_messages("s", 5)
    store.get_recent_messages("s", 5)
    with pytest.raises(SessionNotFoundError):
        store.get_recent_messages("missing", 5)
    operations = store.stats()["operations"]
    assert operations["get_recent_messages"]["calls"] == 3 and operations["get_recent_messages"]["errors"] == 1
    assert operations["store_message"]["calls"] == 1 and operations["store_message"]["errors"] == 0
    after = sample("ltst_operation_seconds_count"), sample("ltst_operation_seconds_bucket", le="+Inf")
    assert after[0] - before[0] == 3 and after[1] - before[1] == 3  # every call, failed ones too
    assert sample("ltst_operation_seconds_sum") > 0
    small = sample("ltst_operation_seconds_bucket", le="10.0")
    assert 0 < small <= after[0]  # cumulative buckets


@pytest.mark.parametrize("kind", ["text", "objects"])
def test_sessions_changed_names_what_signature_binding_names(kind: str) -> None:
    checked = 0
    for declared in REGISTRY.values():
        if declared.invalidates is None:
            continue
        names = [p.name for p in declared.parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for count in range(len(names) + 1):
            if kind == "text":
                args = tuple(f"s-{name}" for name in names[:count])
            else:
                args = tuple([SimpleNamespace(session_id=f"s-{name}")] for name in names[:count])
            bound = declared.signature.bind_partial(None, *args).arguments
            bound.pop(next(iter(declared.signature.parameters)))
            assert declared.sessions_changed(args, {}) == declared.invalidates(bound), (declared.name, args)
            checked += 1
    assert checked > 10


def test_cache_sees_a_message_stored_by_position_or_by_keyword(
    database_dsn: str, hashing_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTST_CACHE_TTL", "60")
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        store.create_session(ConversationSession("s", "u"))
        seen = store.get_session("s")
        assert seen is not None and store.get_session("s") == seen  # cached
        for call in (
            lambda: store.store_message(ConversationMessage("s", "human", "one")),
            lambda: store.store_message(message=ConversationMessage("s", "human", "two")),
        ):
            call()  # moves the session's last_activity: its cache entry must go
            fresh = store.get_session("s")
            assert fresh is not None and seen.last_activity is not None and fresh.last_activity is not None
            assert fresh.last_activity > seen.last_activity
            seen = fresh


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.full(384, np.nan, dtype=np.float32), ValidationError, "NaN or infinite"),
        (np.full(384, np.inf, dtype=np.float32), ValidationError, "NaN or infinite"),
        (np.concatenate([np.ones(383), [-np.inf]]).astype(np.float32), ValidationError, "NaN or infinite"),
        (np.zeros(384, dtype=np.float32), ValidationError, "all zeros"),
        (np.ones(383, dtype=np.float32), EmbeddingDimensionError, "383 dimensions"),
    ],
)
def test_a_float32_vector_is_refused_as_before(store: ConversationStorage, value: Any, error: Any, match: str) -> None:
    store.create_session(ConversationSession("s", "u"))
    with pytest.raises(error, match=match):
        store.store_message(ConversationMessage("s", "human", "x", embedding=value))
    assert store.get_session_summary("s").total_messages == 0


@pytest.mark.parametrize("scale", [3e38, 1e-30], ids=["near-float32-max", "squares-underflow"])
def test_extreme_but_finite_float32_vectors_are_stored(store: ConversationStorage, scale: float) -> None:
    store.create_session(ConversationSession("s", "u"))
    vector = np.full(384, scale, dtype=np.float32)
    stored = store.store_message(ConversationMessage("s", "human", "x", embedding=vector))
    assert np.array_equal(np.asarray(stored.embedding, dtype=np.float32), vector)


def test_session_rows_and_scoped_stores(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("a1", "alice", session_name="A", metadata={"k": 1}))
    store.create_session(ConversationSession("b1", "bob"))
    session = store.get_session("a1")
    assert session is not None and session.session_name == "A" and session.metadata == {"k": 1}
    assert session.created_at is not None and session.last_activity is not None
    assert store.get_session("nope") is None
    alice = store.for_user("alice")
    assert alice.get_session("a1") == session
    with pytest.raises(AccessDeniedError):
        alice.get_session("b1")
    assert [s.session_id for s in alice.get_user_sessions("alice")] == ["a1"]
    with pytest.raises(AccessDeniedError):
        alice.get_user_sessions("bob")
