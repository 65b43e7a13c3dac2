"""The HNSW index stored as halfvec (ltst_memory/hnsw.py): same answers, float32 similarities, index used."""

from __future__ import annotations

import psycopg
import pytest
from test_semantic_search import FACTS as SEMANTIC_FACTS
from typer.testing import CliRunner

from ltst_memory import (
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    Settings,
    ValidationError,
)
from ltst_memory import _queries as q
from ltst_memory.cli import app
from ltst_memory.hnsw import index_storage, main_index, order_by, set_index_storage

FACTS = [
    *SEMANTIC_FACTS,
    ("human", "On weekends I paint watercolour landscapes by the lake."),
    ("ai", "Watercolour by the water sounds relaxing."),
]
QUESTIONS = ["What kind of pet do I have?", "Which food allergies do I have?", "When is our trip to Japan?"]


@pytest.fixture
def memory(semantic_store: ConversationStorage) -> ConversationStorage:
    semantic_store.create_session(ConversationSession("old", "alice"))
    semantic_store.create_session(ConversationSession("bob-s", "bob"))
    semantic_store.store_messages([ConversationMessage("old", r, c) for r, c in FACTS])
    semantic_store.store_messages([ConversationMessage("bob-s", "human", "My dog is a poodle called Max.")])
    return semantic_store


def _answers(store: ConversationStorage) -> list[list[tuple[int, float]]]:
    out = []
    for question in QUESTIONS:
        for kwargs in ({}, {"user_id": "alice"}, {"session_id": "old"}):
            hits = store.search_messages(question, limit=4, **kwargs)  # type: ignore[arg-type]
            out.append([(m.message_id, round(s, 6)) for m, s in hits])  # type: ignore[misc]
    return out


def _recalls(store: ConversationStorage) -> list[list[int]]:
    return [[m.message_id for m, _ in store.recall(question, user_id="alice", limit=3)] for question in QUESTIONS]


def test_halfvec_index_gives_the_same_answers_with_float32_similarities(
    memory: ConversationStorage, database_dsn: str
) -> None:
    settings = Settings.from_env(dsn=database_dsn, exact_search_max_rows=0)  # every scope through HNSW
    with ConversationStorage(settings=settings, embedder=memory.embedder) as before:
        vector_answers, vector_recalls = _answers(before), _recalls(before)
    assert "golden retriever" in memory.get_messages("old")[0].content
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert index_storage(conn) == "vector"
        assert set_index_storage(conn, "halfvec") is True
        assert set_index_storage(conn, "halfvec") is False  # already
        assert index_storage(conn) == "halfvec"
    with ConversationStorage(settings=settings, embedder=memory.embedder) as after:
        assert _answers(after) == vector_answers  # same rows, same (float32) similarities
        assert _recalls(after) == vector_recalls
        looked_up, index = after._core.main_index.get(None, float("inf"))
        assert looked_up and index is not None and index.storage == "halfvec"
        top = after.search_messages("What kind of pet do I have?", user_id="alice", limit=1)[0][0]
        assert "golden retriever" in top.content


def test_the_halfvec_query_walks_the_halfvec_index(memory: ConversationStorage, database_dsn: str) -> None:
    query_vector = memory.embedder.embed(["pets"])[0]
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        set_index_storage(conn, "halfvec", concurrently=True)
        from pgvector.psycopg import register_vector

        register_vector(conn)
        sql = q.search_by_watermark_sql("all", order_by("halfvec", 384, column="m.embedding"))
        params = {"query": query_vector, "limit": 3, "threshold": -1, "watermark": main_index(conn).watermark}
        with conn.transaction():
            conn.execute("SET LOCAL enable_sort = off")  # as the store's search does (_ops.vector_search_settings)
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
        assert "idx_messages_embedding_ivfflat" in plan
        assert [
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'idx_messages_emb%'")
        ] == ["idx_messages_embedding_ivfflat"]  # the concurrent build replaced the old index under the same name


def test_resizing_an_empty_store_keeps_the_halfvec_index(database_dsn: str) -> None:
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)):
        pass
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        set_index_storage(conn, "halfvec")
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(64, model_name="small")) as store:
        store.create_session(ConversationSession("s", "u"))
        store.store_message(ConversationMessage("s", "human", "hello there"))
        assert store.search_messages("hello", limit=1)[0][0].content == "hello there"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        definition = conn.execute("SELECT pg_get_indexdef('idx_messages_embedding_ivfflat'::regclass)").fetchone()[0]
    assert "halfvec(64)" in definition and "halfvec_cosine_ops" in definition


def test_bad_storage_is_refused_and_nothing_changes(database_dsn: str, store: ConversationStorage) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        with pytest.raises(ValidationError, match="vector, halfvec"):
            set_index_storage(conn, "float8")
        assert index_storage(conn) == "vector"


def test_cli_shows_and_switches_the_storage(database_dsn: str, store: ConversationStorage) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["hnsw-storage", "--dsn", database_dsn])
    assert shown.exit_code == 0 and "vector" in shown.output
    switched = runner.invoke(app, ["hnsw-storage", "halfvec", "--dsn", database_dsn])
    assert switched.exit_code == 0 and "rebuilt as halfvec" in switched.output, switched.output
    bad = runner.invoke(app, ["hnsw-storage", "int8", "--dsn", database_dsn])
    assert bad.exit_code != 0 and "halfvec" in bad.output
