"""Bulk import, the fast path: column-wise validation, hand-written binary COPY, exact bookkeeping."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest
from _helpers import TERM_STATS_KEPT, USER_STATS_KEPT

from ltst_memory import (
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    EmbeddingDimensionError,
    ValidationError,
)
from ltst_memory._bulk_rows import timestamp_micros


def _sessions(store: ConversationStorage, ids: dict[str, str]) -> None:
    for session_id, user_id in ids.items():
        store.create_session(ConversationSession(session_id=session_id, user_id=user_id))


def _rows(store: ConversationStorage, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(store.pool.conninfo) as conn:
        return conn.execute(sql).fetchall()


def _term_stats_are_exact(store: ConversationStorage) -> None:
    """ltst_term_stats / ltst_user_stats (with the messages not counted yet) equal a recount of the messages."""
    kept = _rows(store, TERM_STATS_KEPT)
    truth = _rows(
        store,
        "SELECT m.user_id, t.lexeme, count(*) FROM conversation_messages m, unnest(m.search_tsv) t "
        "GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert kept == truth
    users = _rows(store, USER_STATS_KEPT)
    user_truth = _rows(
        store,
        "SELECT user_id, count(*), sum(length(search_tsv)) FROM conversation_messages GROUP BY 1 ORDER BY 1",
    )
    assert users == user_truth


def _summaries_are_exact(store: ConversationStorage) -> None:
    kept = _rows(
        store,
        "SELECT session_id, total_messages, human_messages, ai_messages, first_message_at, last_message_at, "
        "total_tokens_estimate FROM session_summary WHERE total_messages > 0 ORDER BY 1",
    )
    truth = _rows(
        store,
        "SELECT session_id, count(*), count(*) FILTER (WHERE role = 'human'), count(*) FILTER (WHERE role = 'ai'), "
        'min("timestamp"), max("timestamp"), sum(ceil(length(content) / 4.0))::bigint '
        "FROM conversation_messages GROUP BY 1 ORDER BY 1",
    )
    assert kept == truth


def test_every_field_round_trips(store: ConversationStorage) -> None:
    _sessions(store, {"s": "u1"})
    parent = store.store_message(ConversationMessage(session_id="s", role="human", content="the parent"))
    rng = np.random.default_rng(3)
    when = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    given = uuid.uuid4()
    vectors = rng.standard_normal((5, 384))
    messages = [
        ConversationMessage(
            session_id="s",
            role="assistant",
            content="héllo wörld ✓ 𝄞 multi-byte",
            message_type="tool_result",
            parent_message_id=parent.message_id,
            metadata={"speaker": "Zoë", "nested": {"a": [1, 2.5, None, "ü"]}},
            embedding=vectors[0].astype(np.float32),
            relevance_score=1,
            is_context_message=True,
            timestamp=when,
            message_uuid=str(given),
        ),
        ConversationMessage(session_id="s", role="user", content="list vector", embedding=list(vectors[1])),
        ConversationMessage(session_id="s", role="system", content="float64 vector", embedding=vectors[2]),
        ConversationMessage(session_id="s", role="tool", content="uuid object", message_uuid=uuid.UUID(int=7)),  # type: ignore[arg-type]
        ConversationMessage(session_id="s", role="ai", content="no vector given"),
    ]
    before = datetime.now(timezone.utc)
    result = store.import_messages(messages)
    assert (result.inserted, result.embedded) == (5, 2)
    assert result.encode_seconds > 0 and result.copy_seconds > 0
    stored = store.get_messages("s", limit=10)
    first = stored[1]
    assert (first.role, first.content, first.message_type, first.message_index) == (
        "ai", "héllo wörld ✓ 𝄞 multi-byte", "tool_result", 1,
    )  # fmt: skip
    assert first.parent_message_id == parent.message_id
    assert first.metadata == {"speaker": "Zoë", "nested": {"a": [1, 2.5, None, "ü"]}}
    assert first.relevance_score == 1.0 and first.is_context_message is True
    assert first.timestamp == when and first.user_id == "u1" and str(first.message_uuid) == str(given)
    assert [m.role for m in stored[2:]] == ["human", "system", "tool", "ai"]
    assert str(stored[4].message_uuid) == str(uuid.UUID(int=7))
    kept = [r[0] for r in _rows(store, "SELECT embedding::real[] FROM conversation_messages ORDER BY message_index")]
    for vector, given_vector in zip(kept[1:4], vectors[:3], strict=True):  # bit for bit, as float32
        assert np.array_equal(np.asarray(vector, dtype=np.float32), given_vector.astype(np.float32))
    expected = np.asarray(store._core.embedder.embed(["no vector given"])[0])  # type: ignore[attr-defined]
    assert np.allclose(np.asarray(kept[5], dtype=np.float32), expected)
    for message in stored[2:]:  # no timestamp given: the transaction's time
        assert before - timedelta(seconds=5) <= message.timestamp <= datetime.now(timezone.utc)
    # the speaker in metadata reaches the generated search_tsv (weight A), as with store_messages
    assert _rows(store, "SELECT count(*) FROM conversation_messages WHERE search_tsv @@ 'zoë:A'::tsquery") == [(1,)]


def test_timestamp_encoding() -> None:
    assert timestamp_micros(datetime(2000, 1, 1, tzinfo=timezone.utc)) == 0
    assert timestamp_micros(datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)) == -1
    assert timestamp_micros(datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 0


def test_statistics_and_summaries_stay_exact(store: ConversationStorage) -> None:
    """Term statistics and session summaries after bulk imports equal a recount from scratch, also after
    a delete, for several users, with speakers in metadata and duplicate uuids skipped."""
    _sessions(store, {"a1": "ua", "a2": "ua", "b1": "ub"})
    store.store_messages([ConversationMessage(session_id="a1", role="human", content="before the import: pelicans")])
    words = ["pelican", "heron", "osprey", "gannet", "cormorant", "puffin", "tern", "gull", "petrel", "albatross"]
    messages = [
        ConversationMessage(
            session_id=("a1", "a2", "b1")[i % 3],
            role="human" if i % 2 else "ai",
            content=f"turn {i}: " + " ".join(words[(i * k) % len(words)] for k in range(1, 6)),
            metadata={"speaker": "Ann"} if i % 4 == 0 else {},
            message_uuid=str(uuid.UUID(int=i + 1)),
            timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i) if i % 5 else None,
        )
        for i in range(120)
    ]
    result = store.import_messages(messages + messages[:10], batch_size=25)
    assert (result.inserted, result.skipped) == (120, 10)
    _term_stats_are_exact(store)
    _summaries_are_exact(store)
    assert [m.message_index for m in store.get_messages("a1", limit=100)] == list(range(41))
    store.delete_session("a2")
    _term_stats_are_exact(store)
    _summaries_are_exact(store)


def test_bad_row_in_second_batch_keeps_the_first(store: ConversationStorage) -> None:
    _sessions(store, {"s": "u1"})
    messages = [ConversationMessage(session_id="s", role="human", content=f"ok {i}") for i in range(15)]
    messages[12].embedding = [math.nan] * 384
    with pytest.raises(ValidationError, match="NaN or infinite"):
        store.import_messages(messages, batch_size=10)
    stored = store.get_messages("s", limit=100)
    assert [m.content for m in stored] == [f"ok {i}" for i in range(10)]  # batch 1 whole, batch 2 absent
    assert store.get_session_summary("s").total_messages == 10
    after = store.store_message(ConversationMessage(session_id="s", role="ai", content="next"))
    assert after.message_index == 10  # no gap
    _term_stats_are_exact(store)


def test_server_error_during_copy_writes_nothing_of_the_batch(store: ConversationStorage) -> None:
    """A row the server rejects in the middle of a batch's COPY rolls the whole batch back: rows,
    message_index, summary, last_activity and term statistics are as before."""
    _sessions(store, {"s": "u1", "t": "u1"})
    with psycopg.connect(store.pool.conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION reject_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.content = 'boom' THEN RAISE EXCEPTION 'rejected by the test'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER reject_boom BEFORE INSERT ON conversation_messages "
            "FOR EACH ROW EXECUTE FUNCTION reject_boom()"
        )
    first = [ConversationMessage(session_id=("s", "t")[i % 2], role="human", content=f"first {i}") for i in range(8)]
    store.import_messages(first)
    activity = store.get_session("t").last_activity  # type: ignore[union-attr]
    second = [ConversationMessage(session_id=("s", "t")[i % 2], role="ai", content=f"second {i}") for i in range(8)]
    second[5].content = "boom"
    with pytest.raises(psycopg.Error, match="rejected by the test"):
        store.import_messages(second)
    assert len(store.get_messages("s")) == 4 and len(store.get_messages("t")) == 4
    assert store.get_session_summary("t").total_messages == 4
    assert _rows(store, "SELECT last_activity FROM conversation_sessions WHERE session_id = 't'") == [(activity,)]
    assert store.store_message(ConversationMessage(session_id="t", role="ai", content="x")).message_index == 4
    _term_stats_are_exact(store)


_BAD: list[tuple[str, dict[str, Any]]] = [
    ("parent bool", {"parent_message_id": True}),
    ("parent str", {"parent_message_id": "3"}),
    ("uuid", {"message_uuid": "not-a-uuid"}),
    ("context flag", {"is_context_message": 1}),
    ("empty session", {"session_id": ""}),
    ("long session", {"session_id": "s" * 256}),
    ("session type", {"session_id": 5}),
    ("role", {"role": "robot"}),
    ("role type", {"role": ["human"]}),
    ("empty content", {"content": ""}),
    ("blank content", {"content": " \n\t"}),
    ("NUL content", {"content": "a\x00b"}),
    ("surrogate content", {"content": "a\ud800b"}),
    ("content type", {"content": b"bytes"}),
    ("long content", {"content": "x" * 101}),
    ("message type", {"message_type": ""}),
    ("metadata type", {"metadata": ["a"]}),
    ("metadata NaN", {"metadata": {"x": math.nan}}),
    ("metadata NUL", {"metadata": {"x": "\x00"}}),
    ("metadata object", {"metadata": {"x": object()}}),
    ("embedding size", {"embedding": [0.5] * 3}),
    ("embedding matrix", {"embedding": np.zeros((2, 384), dtype=np.float32)}),
    ("embedding NaN", {"embedding": np.full(384, np.nan, dtype=np.float32)}),
    ("embedding overflow", {"embedding": np.full(384, 1e300)}),
    ("score high", {"relevance_score": 1.5}),
    ("score NaN", {"relevance_score": math.nan}),
    ("score bool", {"relevance_score": True}),
    ("naive timestamp", {"timestamp": datetime(2024, 1, 1)}),
    ("timestamp type", {"timestamp": "2024-01-01"}),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # store_messages' own cast
def test_import_rejects_what_store_messages_rejects(database_dsn: str, hashing_embedder: object) -> None:
    """For every kind of bad value: same error type and message as store_messages, and nothing written."""
    with ConversationStorage(database_dsn, embedder=hashing_embedder, max_content_chars=100) as store:  # type: ignore[arg-type]
        _sessions(store, {"s": "u1"})
        good = [ConversationMessage(session_id="s", role="human", content=f"fine {i}") for i in range(3)]
        for case, change in _BAD:
            bad = ConversationMessage(session_id="s", role="human", content="bad one")
            for name, value in change.items():
                setattr(bad, name, value)
            with pytest.raises((ValidationError, EmbeddingDimensionError)) as direct:
                store.store_messages([bad])
            with pytest.raises(type(direct.value)) as bulk:
                store.import_messages([*good, bad])
            assert str(bulk.value) == str(direct.value), case
            assert store.get_messages("s") == [], case


def test_not_a_message_is_rejected(store: ConversationStorage) -> None:
    _sessions(store, {"s": "u1"})
    with pytest.raises(ValidationError, match="expected a ConversationMessage, got dict"):
        store.import_messages([{"session_id": "s", "role": "human", "content": "x"}])  # type: ignore[list-item]
