"""Context (upsert, expiry, cleanup), user preferences and session relationships."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ltst_memory import (
    ConversationContext,
    ConversationSession,
    ConversationStorage,
    SessionNotFoundError,
    SessionRelationship,
    UserPreference,
    ValidationError,
)


@pytest.fixture
def session(store: ConversationStorage) -> str:
    store.create_session(ConversationSession("s1", "u1"))
    return "s1"


def test_context_upserts_on_session_type_key(store: ConversationStorage, session: str) -> None:
    first = store.store_context(ConversationContext(session, "project", "current_task", "LTST", relevance_score=0.9))
    second = store.store_context(
        ConversationContext(session, "project", "current_task", "LTST v2", relevance_score=0.4)
    )
    assert second.context_id == first.context_id
    contexts = store.get_context(session, context_type="project")
    assert [(c.context_value, c.relevance_score) for c in contexts] == [("LTST v2", 0.4)]
    assert contexts[0].user_id == "u1"


def test_context_is_ordered_by_relevance_and_filtered_by_type(store: ConversationStorage, session: str) -> None:
    store.store_context(ConversationContext(session, "project", "a", "low", relevance_score=0.1))
    store.store_context(ConversationContext(session, "user_info", "b", "high", relevance_score=0.9))
    store.store_context(ConversationContext(session, "preference", "c", "mid", relevance_score=0.5))
    assert [c.context_value for c in store.get_context(session)] == ["high", "mid", "low"]
    assert [c.context_value for c in store.get_context(session, "project")] == ["low"]
    assert store.get_context(session, "conversation") == []


def test_expired_context_is_never_returned_and_cleanup_removes_it(store: ConversationStorage, session: str) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    store.store_context(ConversationContext(session, "project", "old", "gone", expires_at=past))
    store.store_context(ConversationContext(session, "project", "new", "here", expires_at=future))
    store.store_context(ConversationContext(session, "project", "forever", "always"))
    assert {c.context_key for c in store.get_context(session)} == {"new", "forever"}
    assert store.cleanup_expired_data()["context"] == 1
    assert store.cleanup_expired_data()["context"] == 0
    assert {c.context_key for c in store.get_context(session)} == {"new", "forever"}


def test_context_for_unknown_session_raises(store: ConversationStorage) -> None:
    with pytest.raises(SessionNotFoundError):
        store.store_context(ConversationContext("missing", "project", "k", "v"))
    with pytest.raises(SessionNotFoundError):
        store.get_context("missing")


def test_preferences_hold_any_json_and_upsert(store: ConversationStorage) -> None:
    store.store_preference(UserPreference("u1", "tone", "concise", "style", confidence_score=0.8))
    store.store_preference(UserPreference("u1", "langs", ["en", "pt"], "language"))
    store.store_preference(UserPreference("u1", "limits", {"max_words": 200, "strict": True}))
    updated = store.store_preference(UserPreference("u1", "tone", "detailed", "style", confidence_score=0.6))
    assert updated.preference_value == "detailed" and updated.created_at <= updated.updated_at
    prefs = {p.preference_key: p.preference_value for p in store.get_preferences("u1")}
    assert prefs == {"tone": "detailed", "langs": ["en", "pt"], "limits": {"max_words": 200, "strict": True}}
    assert [p.preference_key for p in store.get_preferences("u1", preference_type="style")] == ["tone"]
    assert store.get_preferences("u2") == []


def test_relationships_link_sessions_of_one_user_both_ways(store: ConversationStorage) -> None:
    for sid in ("a", "b", "c"):
        store.create_session(ConversationSession(sid, "u1", session_name=sid.upper()))
    store.create_session(ConversationSession("x", "u2"))
    store.store_relationship(SessionRelationship("a", "b", "continuation", 0.9))
    store.store_relationship(SessionRelationship("c", "a", "related", 0.3))
    related = store.get_related_sessions("a")
    assert [(s.session_id, r.relationship_type) for s, r in related] == [("b", "continuation"), ("c", "related")]
    assert [s.session_id for s, _ in store.get_related_sessions("b")] == ["a"]
    again = store.store_relationship(SessionRelationship("a", "b", "continuation", 0.2))
    assert again.relationship_strength == 0.2 and len(store.get_related_sessions("a")) == 2
    with pytest.raises(ValidationError, match="same user"):
        store.store_relationship(SessionRelationship("a", "x"))
    with pytest.raises(ValidationError, match="itself"):
        store.store_relationship(SessionRelationship("a", "a"))
    with pytest.raises(SessionNotFoundError):
        store.store_relationship(SessionRelationship("a", "zzz"))
