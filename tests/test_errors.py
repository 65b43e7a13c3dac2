"""Every bad input gets a typed error with a useful message, and nothing stored changes."""

from __future__ import annotations

import pytest

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseUnavailableError,
    EmbeddingDimensionError,
    HashingEmbedder,
    LTSTError,
    SessionNotFoundError,
    StoreClosedError,
    UserPreference,
    ValidationError,
)


@pytest.fixture
def seeded(store: ConversationStorage) -> ConversationStorage:
    store.create_session(ConversationSession("s1", "u1"))
    store.store_messages([ConversationMessage("s1", "human", "one"), ConversationMessage("s1", "ai", "two")])
    return store


def _snapshot(store: ConversationStorage) -> list[tuple[int, str]]:
    return [(m.message_index, m.content) for m in store.get_messages("s1")]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (ConversationMessage("s1", "wizard", "x"), "unknown role"),
        (ConversationMessage("s1", "human", ""), "must not be empty"),
        (ConversationMessage("s1", "human", "   \n"), "must not be empty"),
        (ConversationMessage("s1", "human", "nul\x00byte"), "NUL"),
        (ConversationMessage("s1", "human", "lone \ud800 surrogate"), "surrogate"),
        (ConversationMessage("s1", "human", "x" * 100_001), "limit is 100000"),
        (ConversationMessage("s1", "human", "x", metadata={"f": object()}), "not JSON"),
        (ConversationMessage("s1", "human", "x", metadata={"nan": float("nan")}), "not JSON"),
        (ConversationMessage("s1", "human", "x", metadata=["not", "a", "dict"]), "must be a dict"),  # type: ignore[arg-type]
        (ConversationMessage("s1", "human", "x", metadata={"k": "nul\x00"}), "NUL"),
        (ConversationMessage("s1", "human", "x", relevance_score=2.0), "between 0.0 and 1.0"),
        (ConversationMessage("s1", "human", "x", message_uuid="not-a-uuid"), "not a UUID"),
        (ConversationMessage("", "human", "x"), "session_id must not be empty"),
        (ConversationMessage("s1", "human", 42), "content must be a string"),  # type: ignore[arg-type]
    ],
)
def test_bad_messages_raise_validation_error_and_change_nothing(
    seeded: ConversationStorage, message: ConversationMessage, match: str
) -> None:
    before = _snapshot(seeded)
    with pytest.raises(ValidationError, match=match) as info:
        seeded.store_message(message)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LTSTError)
    assert _snapshot(seeded) == before


def test_one_bad_message_in_a_batch_writes_none_of_it(seeded: ConversationStorage) -> None:
    before = _snapshot(seeded)
    with pytest.raises(ValidationError):
        seeded.store_messages([ConversationMessage("s1", "human", "fine"), ConversationMessage("s1", "human", "")])
    with pytest.raises(SessionNotFoundError):
        seeded.store_messages([ConversationMessage("s1", "human", "fine"), ConversationMessage("nope", "human", "x")])
    assert _snapshot(seeded) == before
    assert seeded.get_session_summary("s1").total_messages == 2


def test_unknown_session_for_a_message(seeded: ConversationStorage) -> None:
    with pytest.raises(SessionNotFoundError, match="create_session"):
        seeded.store_message(ConversationMessage("ghost", "human", "boo"))


def test_content_limit_is_configurable(database_dsn: str, hashing_embedder: HashingEmbedder) -> None:
    with ConversationStorage(database_dsn, embedder=hashing_embedder, max_content_chars=10) as small:
        small.create_session(ConversationSession("s", "u"))
        small.store_message(ConversationMessage("s", "human", "x" * 10))
        with pytest.raises(ValidationError, match="limit is 10"):
            small.store_message(ConversationMessage("s", "human", "x" * 11))


def test_embedding_of_wrong_dimension(seeded: ConversationStorage) -> None:
    with pytest.raises(EmbeddingDimensionError):
        seeded.store_message(ConversationMessage("s1", "human", "x", embedding=[0.1] * 3))


@pytest.mark.parametrize(
    "session",
    [
        ConversationSession("", "u"),
        ConversationSession("s", ""),
        ConversationSession("s" * 256, "u"),
        ConversationSession("s", "u", metadata={"x": {1, 2}}),  # type: ignore[dict-item]
        ConversationSession("s", "u", relevance_score=float("inf")),
    ],
)
def test_bad_sessions(store: ConversationStorage, session: ConversationSession) -> None:
    with pytest.raises(ValidationError):
        store.create_session(session)
    assert store.get_user_sessions("u") == []


def test_bad_context_and_preferences(seeded: ConversationStorage) -> None:
    with pytest.raises(ValidationError):
        seeded.store_context(ConversationContext("s1", "project", "", "v"))
    with pytest.raises(ValidationError):
        seeded.store_context(ConversationContext("s1", "project", "k", "v", relevance_score=-0.1))
    with pytest.raises(ValidationError, match="timezone-aware"):
        from datetime import datetime

        seeded.store_context(ConversationContext("s1", "project", "k", "v", expires_at=datetime(2030, 1, 1)))
    with pytest.raises(ValidationError):
        seeded.store_preference(UserPreference("u1", "k", float("nan")))
    assert seeded.get_context("s1") == [] and seeded.get_preferences("u1") == []


def test_bad_limits_and_queries(seeded: ConversationStorage) -> None:
    with pytest.raises(ValidationError):
        seeded.get_messages("s1", limit=-1)
    with pytest.raises(ValidationError):
        seeded.get_user_sessions("u1", limit="10")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        seeded.search_messages("", session_id="s1")
    with pytest.raises(ValidationError):
        seeded.search_messages("q", session_id="s1", threshold=1.5)


def test_a_store_opened_with_another_dimension_is_refused(database_dsn: str, seeded: ConversationStorage) -> None:
    with pytest.raises(EmbeddingDimensionError, match="384 dimensions"):
        ConversationStorage(database_dsn, embedder=HashingEmbedder(16))
    with pytest.raises(EmbeddingDimensionError, match="re-embed"):
        ConversationStorage(database_dsn, embedder=HashingEmbedder(384, model_name="another-model"))
    assert len(seeded.get_messages("s1")) == 2


def test_empty_database_adopts_the_model_dimension(empty_database_dsn: str) -> None:
    with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder(16, model_name="tiny")) as tiny:
        tiny.create_session(ConversationSession("s", "u"))
        stored = tiny.store_message(ConversationMessage("s", "human", "small vectors"))
        assert len(stored.embedding) == 16  # type: ignore[arg-type]
        assert tiny.search_messages("small vectors", session_id="s")[0][0].message_id == stored.message_id


def test_unreachable_database_error_hides_the_password(hashing_embedder: HashingEmbedder) -> None:
    dsn = "postgresql://app:s3cr3t-pw@127.0.0.1:1/ltst?connect_timeout=2"
    with pytest.raises(DatabaseUnavailableError) as info:
        ConversationStorage(dsn, embedder=hashing_embedder)
    assert "s3cr3t-pw" not in str(info.value)
    assert "***" in str(info.value) and "127.0.0.1" in str(info.value)


def test_closed_store_refuses_work(database_dsn: str, hashing_embedder: HashingEmbedder) -> None:
    s = ConversationStorage(database_dsn, embedder=hashing_embedder)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreClosedError):
        s.get_session("x")
