"""Retention policies, the sweeper, delete_user and the anonymised export (issue 6, spec Privacy)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionRelationship,
    UserPreference,
    ValidationError,
)
from ltst_memory.retention import AsyncRetentionSweeper, RetentionSweeper

NOW = datetime.now(timezone.utc)


def _message(session_id: str, days_ago: float, text: str) -> ConversationMessage:
    return ConversationMessage(
        session_id=session_id, role="human", content=text, timestamp=NOW - timedelta(days=days_ago)
    )


@pytest.fixture
def aged(store: ConversationStorage) -> ConversationStorage:
    """alice: a 'conversation' and a 'support' session; bob: a 'conversation'. Messages 1, 10, 100 days old."""
    for sid, user, kind in (
        ("a-conv", "alice", "conversation"),
        ("a-sup", "alice", "support"),
        ("b-conv", "bob", "conversation"),
    ):
        store.create_session(ConversationSession(session_id=sid, user_id=user, session_type=kind))
        store.store_messages([_message(sid, d, f"{sid} {d} days") for d in (100, 10, 1)])
    return store


def _ages(store: ConversationStorage, sid: str) -> list[str]:
    return [m.content.split(" ", 1)[1] for m in store.get_messages(sid)]


def test_no_policy_keeps_everything(aged: ConversationStorage) -> None:
    assert aged.cleanup_expired_data() == {"context": 0, "messages": 0}
    assert _ages(aged, "a-conv") == ["100 days", "10 days", "1 days"]


def test_most_specific_policy_wins(aged: ConversationStorage) -> None:
    aged.set_retention_policy(message_days=365)  # everyone: a year
    aged.set_retention_policy(session_type="conversation", message_days=30)  # conversations: 30 days
    aged.set_retention_policy(user_id="alice", message_days=5)  # alice: 5 days ...
    aged.set_retention_policy(user_id="alice", session_type="support", message_days=None)  # ... support kept forever
    assert aged.cleanup_expired_data() == {"context": 0, "messages": 3}
    assert _ages(aged, "a-conv") == ["1 days"]
    assert _ages(aged, "a-sup") == ["100 days", "10 days", "1 days"]
    assert _ages(aged, "b-conv") == ["10 days", "1 days"]
    summary = aged.get_session_summary("a-conv")
    assert summary.total_messages == 1  # triggers kept the summary right
    assert aged.cleanup_expired_data() == {"context": 0, "messages": 0}  # idempotent
    assert {(p.user_id, p.session_type, p.message_days) for p in aged.get_retention_policies()} == {
        (None, None, 365),
        (None, "conversation", 30),
        ("alice", None, 5),
        ("alice", "support", None),
    }
    assert aged.delete_retention_policy(user_id="alice") is True
    assert aged.delete_retention_policy(user_id="alice") is False


def test_context_expiry_and_context_days(aged: ConversationStorage) -> None:
    aged.store_context(
        ConversationContext(
            session_id="a-conv",
            context_type="t",
            context_key="gone",
            context_value="x",
            expires_at=NOW - timedelta(seconds=1),
        )
    )
    aged.store_context(
        ConversationContext(session_id="a-conv", context_type="t", context_key="kept", context_value="x")
    )
    aged.store_context(ConversationContext(session_id="b-conv", context_type="t", context_key="old", context_value="x"))
    with aged.pool.connection() as conn:
        conn.execute(
            "UPDATE conversation_context SET updated_at = now() - interval '40 days' WHERE session_id = 'b-conv'"
        )
    aged.set_retention_policy(user_id="bob", context_days=30)
    assert aged.cleanup_expired_data() == {"context": 2, "messages": 0}
    assert [c.context_key for c in aged.get_context("a-conv")] == ["kept"]
    assert aged.get_context("b-conv") == []


def test_policy_validation(store: ConversationStorage) -> None:
    for bad in (-1, 1.5, "7", True):
        with pytest.raises(ValidationError):
            store.set_retention_policy(message_days=bad)
    with pytest.raises(ValidationError):
        store.set_retention_policy(user_id="")


def test_scoped_user_sets_only_their_own_policy(aged: ConversationStorage) -> None:
    alice = aged.for_user("alice")
    policy = alice.set_retention_policy(message_days=5)
    assert policy.user_id == "alice"
    assert not hasattr(type(alice), "get_retention_policies")
    aged.cleanup_expired_data()
    assert _ages(aged, "a-conv") == ["1 days"] and len(_ages(aged, "b-conv")) == 3


def test_background_sweeper(aged: ConversationStorage) -> None:
    aged.set_retention_policy(message_days=50)
    sweeper = RetentionSweeper(aged, interval=3600)
    future = sweeper.start()
    assert sweeper.start() is future
    assert sweeper.stop(timeout=30) is True
    assert future.result(timeout=0) >= 1
    assert sweeper.last_result is not None and sweeper.last_result["messages"] == 3
    assert all(_ages(aged, s)[0] == "10 days" for s in ("a-conv", "a-sup", "b-conv"))


def test_sweeper_stops_when_store_closes(database_dsn: str, hashing_embedder) -> None:
    store = ConversationStorage(database_dsn, embedder=hashing_embedder)
    sweeper = RetentionSweeper(store, interval=0.05)
    future = sweeper.start()
    store.close()
    assert future.result(timeout=30) >= 0  # ended by itself, no exception


async def test_async_sweeper(database_dsn: str, hashing_embedder) -> None:
    async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as astore:
        await astore.create_session(ConversationSession(session_id="s", user_id="u"))
        await astore.store_message(_message("s", 9, "old"))
        await astore.set_retention_policy(message_days=1)
        sweeper = AsyncRetentionSweeper(astore, interval=3600)
        task = sweeper.start()
        while sweeper.sweeps == 0:
            await asyncio.sleep(0.01)
        assert await sweeper.stop(timeout=10) is True and task.done()
        assert await astore.get_messages("s") == []


def test_delete_user_erases_every_row_and_reports(store: ConversationStorage) -> None:
    for user in ("alice", "bob"):
        store.create_session(ConversationSession(session_id=f"{user}-1", user_id=user))
        store.create_session(ConversationSession(session_id=f"{user}-2", user_id=user))
        store.store_messages([_message(f"{user}-1", 0, "hello there"), _message(f"{user}-2", 0, "general kenobi")])
        store.store_context(
            ConversationContext(session_id=f"{user}-1", context_type="t", context_key="k", context_value="v")
        )
        store.store_preference(UserPreference(user_id=user, preference_key="k", preference_value=1))
        store.store_relationship(SessionRelationship(source_session_id=f"{user}-1", target_session_id=f"{user}-2"))
        store.set_retention_policy(user_id=user, message_days=9)
    removed = store.delete_user("alice")
    assert {
        k: removed[k]
        for k in ("sessions", "messages", "context", "preferences", "relationships", "summaries", "retention_policies")
    } == {
        "sessions": 2,
        "messages": 2,
        "context": 1,
        "preferences": 1,
        "relationships": 1,
        "summaries": 2,
        "retention_policies": 1,
    }
    with store.pool.connection() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT table_name FROM information_schema.columns WHERE column_name = 'user_id' "
                "AND table_schema = current_schema()"
            ).fetchall()
        ]
        for table in tables:
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE user_id = 'alice'").fetchone()[0]
            assert n == 0, table
        assert conn.execute("SELECT count(*) FROM session_summary WHERE session_id LIKE 'alice%'").fetchone()[0] == 0
    assert len(store.get_messages("bob-1")) == 1 and store.get_preferences("bob")
    assert set(store.delete_user("alice").values()) == {0}
    with pytest.raises(AccessDeniedError):
        store.for_user("bob").delete_user("alice")
    assert store.for_user("bob").delete_user()["sessions"] == 2


def test_anonymised_export(store: ConversationStorage) -> None:
    store.create_session(ConversationSession(session_id="alice@example.com/1", user_id="alice@example.com"))
    store.create_session(ConversationSession(session_id="bob/1", user_id="bob", session_type="support"))
    store.store_messages([_message("alice@example.com/1", 2, "my address is 1 Main St"), _message("bob/1", 1, "hi")])
    rows = store.export_analytics(salt="a-secret-salt-of-16+chars")
    assert [r["role"] for r in rows] == ["human", "human"]
    text = repr(rows)
    assert "alice" not in text and "bob" not in text and "Main St" not in text
    assert rows[0]["user"] != rows[1]["user"] and rows[1]["session_type"] == "support"
    assert rows[0]["characters"] == len("my address is 1 Main St")
    again = store.export_analytics(salt="a-secret-salt-of-16+chars", include_content=True)
    assert [r["user"] for r in again] == [r["user"] for r in rows]  # stable with the same salt
    assert again[0]["content"] == "my address is 1 Main St"
    other = store.export_analytics()  # random salt: unlinkable to the first export
    assert other[0]["user"] != rows[0]["user"]
    assert len(store.export_analytics(since=NOW - timedelta(days=1, hours=12))) == 1
    with pytest.raises(ValidationError):
        store.export_analytics(salt="short")
    assert not hasattr(type(store.for_user("bob")), "export_analytics")


from ltst_memory import AccessDeniedError  # noqa: E402
