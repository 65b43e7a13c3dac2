"""Typed errors for inputs PostgreSQL or Python would refuse rawly (issue 14, findings 5 and 10).

Finding 5: psycopg maps SQLSTATE class 54 (program limit exceeded) to ``OperationalError``, so a
tsvector over 1 MB or an index row over 2,704 bytes was reported as ``DatabaseUnavailableError``
("check that the server runs") and retried forever. Errors are now classified by SQLSTATE
(ltst_memory/_sqlstate.py) and the cheap limits are checked before the query.
Finding 10: each raw error or odd result found by the hostile-input review is a typed error or a
documented result.
"""

from __future__ import annotations

import json
import math
import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConfigurationError,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseError,
    DatabaseUnavailableError,
    EmbeddingError,
    HashingEmbedder,
    SessionRelationship,
    ValidationError,
)
from ltst_memory._sqlstate import classify
from ltst_memory.io import import_jsonl

CJK = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3_000))  # distinct 3-byte characters


def _count(store: ConversationStorage, table: str) -> int:
    with store.pool.connection() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


@pytest.fixture
def session(store: ConversationStorage) -> str:
    store.create_session(ConversationSession("s", "u"))
    store.create_session(ConversationSession("t", "u"))
    store.store_message(ConversationMessage("s", "human", "hello there"))
    return "s"


# --------------------------------------------------------------------------- finding 5


def test_a_huge_speaker_is_a_validation_error_before_the_query(store: ConversationStorage, session: str) -> None:
    speaker = " ".join(f"w{i}" for i in range(400_000))
    with pytest.raises(ValidationError, match=r"metadata\['speaker'\] and content") as caught:
        store.store_message(ConversationMessage(session, "human", "x", metadata={"speaker": speaker}))
    assert not isinstance(caught.value, DatabaseUnavailableError)
    assert _count(store, "conversation_messages") == 1


def test_an_index_row_over_the_btree_limit_is_a_validation_error_naming_the_fields(
    store: ConversationStorage,
) -> None:
    """user_id of 255 three-byte characters (allowed) + a 2,040-character word: the ltst_term_stats
    key exceeds 2,704 bytes. Not checkable cheaply before the query: the SQLSTATE (54000) decides."""
    store.create_session(ConversationSession("s", CJK[:255]))
    rng = random.Random(7)  # a random word: PostgreSQL would compress a repetitive one into the limit
    with pytest.raises(ValidationError, match="user_id together with one word") as caught:
        store.store_message(
            ConversationMessage("s", "human", "".join(rng.choice(string.ascii_lowercase) for _ in range(2_040)))
        )
    assert caught.value.sqlstate == "54000"  # type: ignore[attr-defined]
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert _count(store, "conversation_messages") == 0 and _count(store, "ltst_term_stats") == 0
    store.store_message(ConversationMessage("s", "human", "short words are fine"))  # the store still works


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create_session(ConversationSession("x", "\U0001f600" * 255)),
        lambda s: s.store_context(ConversationContext("s", "\U0001f600" * 255, "k", "v")),
        lambda s: s.store_context(ConversationContext("s", "n", "\U0001f600" * 255, "v")),
        lambda s: s.store_relationship(SessionRelationship("s", "t", "\U0001f600" * 255)),
    ],
    ids=["user_id", "context_type", "context_key", "relationship_type"],
)
def test_identifiers_of_255_four_byte_characters_are_refused(
    store: ConversationStorage, session: str, call: Any
) -> None:
    with pytest.raises(ValidationError, match="1020 bytes of UTF-8; the limit is 765"):
        call(store)


def test_255_three_byte_identifiers_are_stored(store: ConversationStorage, session: str) -> None:
    stored = store.store_context(ConversationContext("s", CJK[:255], CJK[255:510], "v"))
    assert store.get_context("s", context_type=CJK[:255])[0].context_key == stored.context_key


def test_json_nested_20k_deep_is_a_validation_error(store: ConversationStorage, session: str) -> None:
    deep: dict[str, Any] = {}
    for _ in range(20_000):
        deep = {"d": deep}
    with pytest.raises(ValidationError, match="nested 255 levels deep; the limit is 254"):
        store.store_message(ConversationMessage(session, "ai", "x", metadata=deep))


def test_sqlstate_classification_of_real_server_errors(database_dsn: str) -> None:
    """Each class as the server really raises it, then classified."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        errors = {}
        for name, statement in {
            "22": "SELECT 1 / 0",
            "54": "SELECT to_tsvector('simple', string_agg(md5(i::text) || i, ' ')) FROM generate_series(1, 60000) i",
            "57014": "SET statement_timeout = '10ms'; SELECT pg_sleep(1)",
        }.items():
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                errors[name] = exc
            conn.execute("RESET statement_timeout")
        killer = psycopg.connect(database_dsn, autocommit=True)
        pid = conn.info.backend_pid
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        killer.close()
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            errors["57P01"] = exc
    assert isinstance(classify(errors["22"], database_dsn), ValidationError)
    assert isinstance(classify(errors["54"], database_dsn), ValidationError)
    assert "tsvector" in str(classify(errors["54"], database_dsn))
    timeout = classify(errors["57014"], database_dsn)
    assert isinstance(timeout, DatabaseError) and not isinstance(timeout, DatabaseUnavailableError)
    assert isinstance(classify(errors["57P01"], database_dsn), DatabaseUnavailableError)


# --------------------------------------------------------------------------- finding 10


def test_relevance_score_beyond_float(store: ConversationStorage, session: str) -> None:
    with pytest.raises(ValidationError, match="relevance_score"):
        store.store_message(ConversationMessage(session, "ai", "x", relevance_score=10**400))
    with pytest.raises(ValidationError, match="relevance_score"):
        store.store_context(ConversationContext(session, "n", "k", "v", relevance_score=10**400))


def test_an_embedding_of_strings_or_zeros(store: ConversationStorage, session: str) -> None:
    with pytest.raises(ValidationError, match="sequence of numbers"):
        store.store_message(ConversationMessage(session, "ai", "x", embedding=["a"] * 384))
    with pytest.raises(ValidationError, match="all zeros"):
        store.store_message(ConversationMessage(session, "ai", "x", embedding=[0.0] * 384))
    assert _count(store, "conversation_messages") == 1


class _ZeroEmbedder(HashingEmbedder):
    def embed(self, texts: Any) -> Any:
        return np.zeros((len(texts), self.dimension), dtype=np.float32)


class _StringEmbedder(HashingEmbedder):
    def embed(self, texts: Any) -> Any:
        return [["x"] * self.dimension for _ in texts]


@pytest.mark.parametrize("embedder", [_ZeroEmbedder(384), _StringEmbedder(384)], ids=["zeros", "strings"])
def test_an_embedder_returning_zeros_or_strings(database_dsn: str, embedder: Any) -> None:
    """A zero vector has no direction: cosine similarity with it is NaN. Refused, never returned."""
    with ConversationStorage(database_dsn, embedder=embedder) as store:
        store.create_session(ConversationSession("s", "u"))
        with pytest.raises(EmbeddingError):
            store.store_message(ConversationMessage("s", "human", "hello"))
        with pytest.raises(EmbeddingError):
            store.search_messages("hello")


def test_recall_refuses_huge_ids_and_nan_scores(store: ConversationStorage, session: str) -> None:
    with pytest.raises(ValidationError, match="64-bit"):
        store.recall("hello", user_id="u", exclude_message_ids=[2**70])
    for value in (math.nan, math.inf, 10**400):
        with pytest.raises(ValidationError, match="min_score"):
            store.recall("hello", user_id="u", min_score=value)
    assert store.recall("hello", user_id="u", exclude_message_ids=[2**62])  # a big but valid id


def test_rehydrate_options_and_token_counter(store: ConversationStorage, session: str) -> None:
    with pytest.raises(ValidationError, match=r"unknown option.*'bogus'"):
        store.rehydrate(session, "hello", recall_options={"bogus": 1})
    with pytest.raises(ValidationError, match="must be a dict"):
        store.rehydrate(session, "hello", recall_options="lexical_weight=1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="count_tokens must return a non-negative int"):
        store.rehydrate(session, "hello", count_tokens=lambda text: "5")  # type: ignore[arg-type,return-value]
    assert store.rehydrate(session, "hello", recall_options={"lexical_weight": 1.0}).to_prompt()


def test_import_messages_of_none(store: ConversationStorage) -> None:
    with pytest.raises(ValidationError, match="got NoneType"):
        store.import_messages(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("dsn", ["=== nope", "postgresql://app:s3cr3t-pw@[::1", "dbname='unterminated"])
def test_an_unparseable_dsn_is_a_configuration_error(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="not a valid PostgreSQL connection string") as caught:
        ConversationStorage(dsn, embedder=HashingEmbedder(8))
    assert "s3cr3t" not in str(caught.value)


def test_import_jsonl_on_a_user_scoped_store_writes_nothing(
    store: ConversationStorage, session: str, tmp_path: Path
) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"role": "human", "content": "hi"}) + "\n", encoding="utf-8")
    for user in ("alice", "bob"):
        with pytest.raises(AccessDeniedError, match="take the store itself"):
            import_jsonl(store.for_user("alice"), path, user)
    assert _count(store, "conversation_sessions") == 2 and _count(store, "conversation_messages") == 1


def test_search_with_limit_600_walks_the_index(store: ConversationStorage, session: str) -> None:
    """ef_search = 2 x limit would be 1,200, over pgvector's maximum of 1,000 (the call failed with
    InvalidParameterValue): clamped to 1,000. The unscoped search is approximate (HNSW), so it may
    return fewer rows than the limit when the index cannot reach them all."""
    store.store_messages([ConversationMessage("t", "human", f"message {i}") for i in range(700)])
    hits = store.search_messages("message", limit=600)
    assert 0 < len(hits) <= 600
    assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)


async def test_get_session_of_a_list_is_a_validation_error(store: ConversationStorage, database_dsn: str) -> None:
    with pytest.raises(ValidationError, match="session_id must be a string"):
        store.get_session(["a"])  # type: ignore[arg-type]
    async with AsyncConversationStorage(database_dsn, embedder=store.embedder) as astore:
        with pytest.raises(ValidationError, match="session_id must be a string"):
            await astore.get_session(["a"])  # type: ignore[arg-type]


def test_the_six_characters_backslash_u0000_are_text_not_a_nul(store: ConversationStorage, session: str) -> None:
    text = "\\u0000"
    stored = store.store_message(ConversationMessage(session, "ai", "x", metadata={"a": text, text: [text]}))
    assert store.get_messages(session, offset=stored.message_index or 0)[0].metadata == {"a": text, text: [text]}
    for nul in ({"a": "\x00"}, {"a\x00": 1}, {"a": "\\\x00"}):
        with pytest.raises(ValidationError, match="NUL"):
            store.store_message(ConversationMessage(session, "ai", "x", metadata=nul))
