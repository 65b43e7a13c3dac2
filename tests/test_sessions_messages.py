"""The spec's API on a real PostgreSQL: sessions, messages, summaries, cascade."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    NotFoundError,
    SessionExistsError,
    SessionNotFoundError,
    ValidationError,
)


def make_session(store: ConversationStorage, session_id: str = "s1", user_id: str = "u1", **kw: object):
    return store.create_session(ConversationSession(session_id=session_id, user_id=user_id, **kw))  # type: ignore[arg-type]


def test_create_and_get_session_round_trips_every_field(store: ConversationStorage) -> None:
    created = make_session(
        store,
        session_name="Development Discussion",
        session_type="support",
        status="paused",
        metadata={"topic": "ltst", "tags": ["a", "b"], "n": 1.5},
        context_summary="so far",
        relevance_score=0.75,
    )
    assert created.created_at is not None and created.last_activity is not None
    loaded = store.get_session("s1")
    assert loaded == created
    assert loaded.metadata == {"topic": "ltst", "tags": ["a", "b"], "n": 1.5}
    assert (loaded.session_type, loaded.status, loaded.relevance_score) == ("support", "paused", 0.75)


def test_session_defaults_follow_the_spec(store: ConversationStorage) -> None:
    s = make_session(store)
    assert (s.session_type, s.status, s.metadata, s.relevance_score) == ("conversation", "active", {}, 0.0)


def test_get_unknown_session_is_none(store: ConversationStorage) -> None:
    assert store.get_session("nope") is None


def test_duplicate_session_id_raises_and_keeps_the_original(store: ConversationStorage) -> None:
    make_session(store, session_name="first")
    with pytest.raises(SessionExistsError, match="already exists"):
        make_session(store, user_id="someone-else", session_name="second")
    assert store.get_session("s1").session_name == "first"  # type: ignore[union-attr]
    assert store.get_session("s1").user_id == "u1"  # type: ignore[union-attr]


def test_store_message_fills_index_timestamp_embedding_and_id(store: ConversationStorage) -> None:
    make_session(store)
    m = store.store_message(ConversationMessage(session_id="s1", role="human", content="How do I implement LTST?"))
    assert m.message_id is not None and m.message_index == 0
    assert m.timestamp is not None and m.user_id == "u1" and m.message_uuid
    assert m.embedding is not None and len(m.embedding) == 384
    m2 = store.store_message(ConversationMessage(session_id="s1", role="ai", content="Like this."))
    assert m2.message_index == 1 and m2.message_id > m.message_id


def test_user_and_assistant_roles_are_normalised(store: ConversationStorage) -> None:
    make_session(store)
    stored = store.store_messages(
        [
            ConversationMessage("s1", "user", "hi"),
            ConversationMessage("s1", "assistant", "hello"),
            ConversationMessage("s1", "system", "be nice"),
            ConversationMessage("s1", "tool", "42"),
        ]
    )
    assert [m.role for m in stored] == ["human", "ai", "system", "tool"]
    assert [m.role for m in store.get_messages("s1")] == ["human", "ai", "system", "tool"]


def test_get_messages_pages_in_order(store: ConversationStorage) -> None:
    make_session(store)
    store.store_messages([ConversationMessage("s1", "human", f"message {i}") for i in range(10)])
    page = store.get_messages("s1", limit=3, offset=4)
    assert [m.content for m in page] == ["message 4", "message 5", "message 6"]
    assert [m.message_index for m in store.get_messages("s1", limit=100)] == list(range(10))
    assert [m.content for m in store.get_recent_messages("s1", limit=2)] == ["message 8", "message 9"]


def test_get_messages_of_empty_session_is_empty_but_unknown_session_raises(store: ConversationStorage) -> None:
    make_session(store)
    assert store.get_messages("s1") == []
    with pytest.raises(SessionNotFoundError):
        store.get_messages("missing")


def test_message_fields_round_trip(store: ConversationStorage) -> None:
    make_session(store)
    first = store.store_message(ConversationMessage("s1", "human", "question"))
    when = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    second = store.store_message(
        ConversationMessage(
            "s1",
            "ai",
            "answer",
            message_type="tool_result",
            parent_message_id=first.message_id,
            metadata={"speaker": "Caroline", "nested": {"a": [1, 2, None]}},
            relevance_score=0.5,
            is_context_message=True,
            timestamp=when,
        )
    )
    loaded = store.get_messages("s1")[1]
    assert loaded.message_id == second.message_id
    assert loaded.parent_message_id == first.message_id
    assert loaded.metadata == {"speaker": "Caroline", "nested": {"a": [1, 2, None]}}
    assert (loaded.message_type, loaded.relevance_score, loaded.is_context_message) == ("tool_result", 0.5, True)
    assert loaded.timestamp == when


def test_store_messages_is_one_batch_across_sessions(store: ConversationStorage) -> None:
    make_session(store, "a")
    make_session(store, "b")
    out = store.store_messages(
        [
            ConversationMessage("a", "human", "a0"),
            ConversationMessage("b", "human", "b0"),
            ConversationMessage("a", "ai", "a1"),
        ]
    )
    assert [(m.session_id, m.message_index) for m in out] == [("a", 0), ("b", 0), ("a", 1)]
    assert store.store_messages([]) == []


def test_retrying_with_the_same_message_uuid_stores_once(store: ConversationStorage) -> None:
    make_session(store)
    msg = ConversationMessage("s1", "human", "only once", message_uuid="2f1e3c9a-8d3b-4f6e-9a49-3c1d2e4f5a6b")
    first = store.store_message(msg)
    again = store.store_message(msg)
    assert again.message_id == first.message_id and again.message_index == 0
    nxt = store.store_message(ConversationMessage("s1", "ai", "next"))
    assert nxt.message_index == 1  # no gap left by the retry
    assert store.get_session_summary("s1").total_messages == 2


def test_user_sessions_most_recent_first_and_limited(store: ConversationStorage) -> None:
    for i in range(3):
        make_session(store, f"s{i}")
    make_session(store, "other", user_id="u2")
    store.store_message(ConversationMessage("s0", "human", "bump s0"))
    sessions = store.get_user_sessions("u1", limit=50)
    assert sessions[0].session_id == "s0"
    assert {s.session_id for s in sessions} == {"s0", "s1", "s2"}
    assert len(store.get_user_sessions("u1", limit=2)) == 2
    assert store.get_user_sessions("nobody") == []


def test_update_session_activity_moves_last_activity_forward(store: ConversationStorage) -> None:
    s = make_session(store)
    touched = store.update_session_activity("s1")
    assert touched >= s.last_activity
    assert store.get_session("s1").last_activity == touched  # type: ignore[union-attr]
    with pytest.raises(SessionNotFoundError):
        store.update_session_activity("missing")


def test_update_session_changes_fields_but_not_owner(store: ConversationStorage) -> None:
    s = make_session(store)
    s.session_name, s.context_summary, s.status = "Renamed", "summary text", "archived"
    updated = store.update_session(s)
    assert (updated.session_name, updated.context_summary, updated.status) == ("Renamed", "summary text", "archived")
    s.user_id = "thief"
    with pytest.raises(ValueError, match="cannot be changed"):
        store.update_session(s)


def test_summary_is_kept_by_triggers_on_insert_and_delete(store: ConversationStorage) -> None:
    make_session(store)
    empty = store.get_session_summary("s1")
    assert (empty.total_messages, empty.first_message_at) == (0, None)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    store.store_messages(
        [
            ConversationMessage("s1", "human", "a" * 40, timestamp=t0),
            ConversationMessage("s1", "ai", "b" * 8, timestamp=t0 + timedelta(minutes=1)),
            ConversationMessage("s1", "ai", "c", timestamp=t0 + timedelta(minutes=2)),
        ]
    )
    summary = store.get_session_summary("s1")
    assert (summary.total_messages, summary.human_messages, summary.ai_messages) == (3, 1, 2)
    assert summary.first_message_at == t0 and summary.last_message_at == t0 + timedelta(minutes=2)
    assert summary.total_tokens_estimate == 10 + 2 + 1
    with store.pool.connection() as conn:
        conn.execute("DELETE FROM conversation_messages WHERE content = 'c'")
    after = store.get_session_summary("s1")
    assert (after.total_messages, after.ai_messages, after.total_tokens_estimate) == (2, 1, 12)
    assert after.last_message_at == t0 + timedelta(minutes=1)


def test_message_insert_updates_last_activity(store: ConversationStorage) -> None:
    s = make_session(store)
    store.store_message(ConversationMessage("s1", "human", "hello"))
    assert store.get_session("s1").last_activity > s.last_activity  # type: ignore[union-attr]


def test_delete_session_removes_everything_and_reports_counts(store: ConversationStorage) -> None:
    from ltst_memory import ConversationContext, SessionRelationship

    make_session(store)
    make_session(store, "s2")
    store.store_messages([ConversationMessage("s1", "human", f"m{i}") for i in range(3)])
    store.store_context(ConversationContext("s1", "project", "task", "x"))
    store.store_relationship(SessionRelationship("s1", "s2"))
    store.store_message(ConversationMessage("s2", "human", "kept"))
    removed = store.delete_session("s1")
    assert removed == {"sessions": 1, "messages": 3, "context": 1, "relationships": 1}
    assert store.get_session("s1") is None
    with store.pool.connection() as conn:
        for table in ("conversation_messages", "conversation_context", "session_summary"):
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE session_id = 's1'").fetchone()[0]  # type: ignore[index]
            assert count == 0, table
    assert [m.content for m in store.get_messages("s2")] == ["kept"]
    assert store.get_related_sessions("s2") == []
    with pytest.raises(SessionNotFoundError):
        store.delete_session("s1")


def test_delete_message_removes_one_message_and_updates_the_summary(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    store.create_session(ConversationSession("b1", "bob"))
    kept, gone = store.store_messages(
        [ConversationMessage("s1", "human", "keep me"), ConversationMessage("s1", "ai", "forget me")]
    )
    bobs = store.store_message(ConversationMessage("b1", "human", "bob's words"))
    assert store.delete_message(gone.message_id) == {"message_id": gone.message_id, "session_id": "s1"}  # type: ignore[arg-type]
    assert [m.content for m in store.get_messages("s1")] == ["keep me"]
    assert store.get_session_summary("s1").total_messages == 1
    alice = store.for_user("alice")
    with pytest.raises(NotFoundError):  # bob's message is not alice's to delete: not found, nothing removed
        alice.delete_message(bobs.message_id)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        store.delete_message(gone.message_id)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.delete_message(0)
    assert [m.content for m in store.get_messages("b1")] == ["bob's words"]
    assert kept.message_id is not None


async def test_async_delete_message(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession("s1", "alice"))
    message = await astore.store_message(ConversationMessage("s1", "human", "forget me"))
    assert (await astore.delete_message(message.message_id))["session_id"] == "s1"  # type: ignore[arg-type]
    assert await astore.get_messages("s1") == []
