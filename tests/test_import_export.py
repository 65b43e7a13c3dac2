"""Importers and the JSONL exporter: ChatGPT branches and timestamps, idempotent re-import,
generic JSONL, LangChain dumps and langchain-postgres tables, lossless export round trip."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from pgvector.psycopg import register_vector

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    SessionRelationship,
    UserPreference,
    ValidationError,
)
from ltst_memory.io import (
    detect_format,
    export_jsonl,
    import_chatgpt,
    import_export,
    import_file,
    import_jsonl,
    import_langchain_messages,
    import_langchain_postgres,
    import_langchain_vectorstore,
)

DATA = Path(__file__).parent / "data"
CHATGPT = DATA / "chatgpt_conversations.json"
LISBON = "chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000001"
PYTHON = "chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000002"


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def test_chatgpt_import_keeps_branches_timestamps_and_sessions(store: ConversationStorage) -> None:
    result = import_chatgpt(store, CHATGPT, "alice")
    assert (result.sessions_created, result.messages_added) == (2, 9)

    session = store.get_session(LISBON)
    assert session is not None and session.user_id == "alice" and session.session_name == "Lisbon trip"
    assert session.created_at == _utc(1709280000.0)
    assert session.last_activity == _utc(1709283600.5)

    messages = store.get_messages(LISBON)
    by_node = {m.metadata["chatgpt"]["node_id"]: m for m in messages}
    assert set(by_node) == {"n1", "n2", "n3a", "n4a", "n3b", "n4b", "n5b"}  # hidden system + empty root dropped
    # both branches after n2 are kept, each pointing to its parent
    assert by_node["n3a"].parent_message_id == by_node["n2"].message_id
    assert by_node["n3b"].parent_message_id == by_node["n2"].message_id
    assert by_node["n4a"].parent_message_id == by_node["n3a"].message_id
    assert by_node["n5b"].parent_message_id == by_node["n4b"].message_id
    assert by_node["n1"].parent_message_id is None
    assert by_node["n1"].timestamp == _utc(1709280000.25)
    assert [m.role for m in messages[:2]] == ["human", "ai"]
    assert by_node["n3a"].metadata["chatgpt"]["on_current_branch"] is False
    assert by_node["n3b"].metadata["chatgpt"]["on_current_branch"] is True
    assert "Is this place on your list?" in by_node["n5b"].content
    # a 'code' message keeps its text
    assert store.get_messages(PYTHON)[1].content.startswith("items.reverse()")
    assert store.get_session_summary(LISBON).total_messages == 7


def test_reimporting_adds_nothing(store: ConversationStorage) -> None:
    import_chatgpt(store, CHATGPT, "alice")
    before = [m.message_uuid for m in store.get_messages(LISBON)]
    again = import_chatgpt(store, CHATGPT, "alice")
    assert (again.sessions_created, again.messages_added, again.messages_seen) == (0, 0, 9)
    assert [m.message_uuid for m in store.get_messages(LISBON)] == before
    assert store.get_session_summary(LISBON).total_messages == 7


def test_chatgpt_import_adds_only_new_messages_of_a_newer_export(store: ConversationStorage, tmp_path: Path) -> None:
    import_chatgpt(store, CHATGPT, "alice")
    data = json.loads(CHATGPT.read_text())
    data[1]["mapping"]["m3"] = {
        "id": "m3",
        "message": {
            "id": "m3",
            "author": {"role": "user"},
            "create_time": 1714000200.0,
            "content": {"content_type": "text", "parts": ["And sorting?"]},
        },
        "parent": "m2",
        "children": [],
    }
    newer = tmp_path / "conversations.json"
    newer.write_text(json.dumps(data))
    result = import_chatgpt(store, newer, "alice")
    assert result.messages_added == 1
    last = store.get_messages(PYTHON)[-1]
    assert last.content == "And sorting?" and last.parent_message_id == store.get_messages(PYTHON)[1].message_id


def test_same_export_for_another_user_is_refused(store: ConversationStorage) -> None:
    import_chatgpt(store, CHATGPT, "alice")
    with pytest.raises(ValidationError, match="another user"):
        import_chatgpt(store, CHATGPT, "bob")


def test_not_a_chatgpt_file(store: ConversationStorage, tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('[{"title": "no mapping"}]')
    with pytest.raises(ValidationError, match="mapping"):
        import_chatgpt(store, bad, "alice")
    assert store.get_user_sessions("alice") == []


def test_generic_jsonl_import_is_idempotent_and_links_parents(store: ConversationStorage, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    lines = [
        {"role": "user", "content": "hello", "timestamp": "2024-05-01T10:00:00Z", "id": "a"},
        {"role": "assistant", "content": "hi!", "timestamp": 1714557601, "id": "b", "parent_id": "a"},
        {"role": "user", "content": "hello", "metadata": {"k": 1}},
        {"role": "user", "content": "hello"},
        {"session_id": "other", "role": "system", "content": "be brief"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    first = import_jsonl(store, path, "carol", session_id="chat")
    assert (first.sessions_created, first.messages_added) == (2, 5)
    messages = store.get_messages("chat")
    assert [m.content for m in messages] == ["hello", "hi!", "hello", "hello"]  # identical lines both kept
    assert messages[0].timestamp == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert messages[1].parent_message_id == messages[0].message_id
    assert messages[2].metadata == {"k": 1}
    assert store.get_messages("other")[0].role == "system"
    assert import_jsonl(store, path, "carol", session_id="chat").messages_added == 0


def test_jsonl_errors_name_the_line(store: ConversationStorage, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"role": "user", "content": "ok"}\n{"role": "user"}\n')
    with pytest.raises(ValidationError, match="line 2"):
        import_jsonl(store, path, "carol")


def test_langchain_message_dump(store: ConversationStorage, tmp_path: Path) -> None:
    messages_to_dict = pytest.importorskip("langchain_core.messages").messages_to_dict
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    dump = messages_to_dict(
        [
            SystemMessage("You are terse."),
            HumanMessage("What's 2+2?", id="h1"),
            AIMessage("", tool_calls=[{"name": "calc", "args": {"q": "2+2"}, "id": "call1"}]),
            ToolMessage("4", tool_call_id="call1"),
            AIMessage("4."),
        ]
    )
    dump[2]["data"]["content"] = "(calling calc)"
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(dump))
    assert detect_format(path) == "langchain"
    result = import_langchain_messages(store, path, "dave", session_id="lc")
    assert result.messages_added == 5
    stored = store.get_messages("lc")
    assert [m.role for m in stored] == ["system", "human", "ai", "tool", "ai"]
    assert stored[2].metadata["langchain"]["tool_calls"][0]["name"] == "calc"
    assert stored[3].metadata["langchain"]["tool_call_id"] == "call1"
    assert import_langchain_messages(store, path, "dave", session_id="lc").messages_added == 0


def _source_db(pg_admin_dsn: str, name: str) -> str:
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(pg_admin_dsn)
    params["dbname"] = name
    return make_conninfo("", **params)


def test_langchain_postgres_chat_history_table(store: ConversationStorage, pg_admin_dsn: str) -> None:
    source = _source_db(pg_admin_dsn, "lc_source_chat")
    with psycopg.connect(source) as conn:  # the table PostgresChatMessageHistory.create_tables makes
        conn.execute(
            "CREATE TABLE message_store (id SERIAL PRIMARY KEY, session_id UUID NOT NULL, message JSONB NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
        )
        sid = "5b8a4c1e-0000-4000-8000-000000000001"
        for i, (kind, text) in enumerate([("human", "hi"), ("ai", "hello"), ("human", "hi")]):
            conn.execute(
                "INSERT INTO message_store (session_id, message, created_at) VALUES (%s, %s, %s)",
                (sid, json.dumps({"type": kind, "data": {"content": text, "type": kind}}), _utc(1700000000 + i)),
            )
    result = import_langchain_postgres(store, source, "erin", table="message_store")
    assert (result.sessions_created, result.messages_added) == (1, 3)
    stored = store.get_messages(sid)
    assert [(m.role, m.content) for m in stored] == [("human", "hi"), ("ai", "hello"), ("human", "hi")]
    assert stored[2].timestamp == _utc(1700000002)
    assert import_langchain_postgres(store, source, "erin", table="message_store").messages_added == 0


def test_langchain_postgres_vector_stores_keep_ids_metadata_and_vectors(
    store: ConversationStorage, pg_admin_dsn: str
) -> None:
    source = _source_db(pg_admin_dsn, "lc_source_vectors")
    with psycopg.connect(source) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        # PGVector (v1) tables
        conn.execute(
            "CREATE TABLE langchain_pg_collection (uuid UUID PRIMARY KEY, name VARCHAR UNIQUE, cmetadata JSON)"
        )
        conn.execute(
            "CREATE TABLE langchain_pg_embedding (id VARCHAR PRIMARY KEY, collection_id UUID REFERENCES "
            "langchain_pg_collection(uuid), embedding vector(3), document VARCHAR, cmetadata JSONB)"
        )
        cid = "0b6d8d5a-0000-4000-8000-000000000001"
        conn.execute("INSERT INTO langchain_pg_collection VALUES (%s, 'docs', '{}')", (cid,))
        for i in range(3):
            conn.execute(
                "INSERT INTO langchain_pg_embedding VALUES (%s, %s, %s, %s, %s)",
                (f"doc-{i}", cid, [float(i), 1.0, 0.5], f"text {i}", json.dumps({"n": i})),
            )
        # PGVectorStore (v2) table with an extra metadata column
        conn.execute(
            'CREATE TABLE "v2_docs" (langchain_id UUID PRIMARY KEY, content TEXT NOT NULL,'
            " embedding vector(3) NOT NULL, topic TEXT, langchain_metadata JSON)"
        )
        conn.execute(
            "INSERT INTO v2_docs VALUES ('7f6f1b9c-0000-4000-8000-000000000001', 'hello', '[1,2,3]', 'greeting', "
            '\'{"lang": "en"}\')'
        )
    first = import_langchain_vectorstore(store, source, collection="docs")
    assert first.other_rows_added == 3
    assert import_langchain_vectorstore(store, source, collection="docs").other_rows_added == 0
    assert import_langchain_vectorstore(store, source, table="v2_docs").other_rows_added == 1
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT collection, document_id, content, metadata, embedding FROM ltst_documents ORDER BY 1, 2"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("docs", "doc-0", "text 0", {"n": 0}),
        ("docs", "doc-1", "text 1", {"n": 1}),
        ("docs", "doc-2", "text 2", {"n": 2}),
        ("v2_docs", "7f6f1b9c-0000-4000-8000-000000000001", "hello", {"lang": "en", "topic": "greeting"}),
    ]
    assert [float(x) for x in rows[1][4].to_list()] == [1.0, 1.0, 0.5]


def _fill(store: ConversationStorage) -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    store.create_session(ConversationSession("x1", "zoe", "First", metadata={"a": [1, 2]}, relevance_score=0.25))
    store.create_session(ConversationSession("x2", "zoe", None, session_type="task", status="archived"))
    store.create_session(ConversationSession("other", "yann", "not exported"))
    first = store.store_message(
        ConversationMessage("x1", "human", 'Ünïcode ✓ and "quotes"\nnewline', timestamp=now, metadata={"s": "x"})
    )
    store.store_messages(
        [
            ConversationMessage("x1", "ai", "reply", parent_message_id=first.message_id, relevance_score=0.5),
            ConversationMessage("x1", "tool", "tool out", message_type="tool_result", is_context_message=True),
            ConversationMessage("x2", "system", "be nice", timestamp=now - timedelta(days=400)),
        ]
    )
    store.store_context(ConversationContext("x1", "project", "task", "memory", 0.9, {"m": 1}))
    store.store_context(ConversationContext("x1", "user_info", "old", "expired", expires_at=now - timedelta(days=1)))
    store.store_preference(UserPreference("zoe", "tone", {"style": "concise", "n": 1.5}, "style", 0.75))
    store.store_relationship(SessionRelationship("x1", "x2", "follow_up", 0.8, {"why": "same topic"}))


def _export(store: ConversationStorage, **scope: str) -> list[dict]:
    buffer = io.StringIO()
    export_jsonl(store, buffer, **scope)
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    records[0].pop("exported_at")
    return records


def test_export_round_trip_is_lossless(
    store: ConversationStorage, empty_database_dsn: str, hashing_embedder: HashingEmbedder, tmp_path: Path
) -> None:
    _fill(store)
    original = _export(store, user_id="zoe")
    kinds = [r["type"] for r in original]
    assert kinds.count("session") == 2 and kinds.count("message") == 4 and kinds.count("preference") == 1
    assert "yann" not in json.dumps(original)
    path = tmp_path / "zoe.jsonl"
    export_jsonl(store, path, user_id="zoe")

    with ConversationStorage(empty_database_dsn, embedder=hashing_embedder) as other:
        result = import_export(other, path)
        assert (result.sessions_created, result.messages_added, result.other_rows_added) == (2, 4, 4)
        assert _export(other, user_id="zoe") == original  # every field, timestamp and vector identical
        again = import_export(other, path)
        assert (again.sessions_created, again.messages_added, again.other_rows_added) == (0, 0, 0)
        copied = other.get_messages("x1")
        assert copied[1].parent_message_id == copied[0].message_id
        hits = other.search_messages("tool out", session_id="x1", limit=1)
        assert hits[0][0].content == "tool out"


def test_session_export_and_format_detection(store: ConversationStorage, tmp_path: Path) -> None:
    _fill(store)
    records = _export(store, session_id="x2")
    assert [r["type"] for r in records] == ["ltst-export", "session", "message"]
    path = tmp_path / "x2.jsonl"
    export_jsonl(store, path, session_id="x2", embeddings=False)
    assert "embedding" not in path.read_text().splitlines()[2]
    assert detect_format(path) == "ltst"
    assert detect_format(CHATGPT) == "chatgpt"
    assert import_file(store, path).messages_added == 0
    with pytest.raises(ValidationError, match="exactly one"):
        _export(store)


def test_import_re_embeds_when_the_file_has_another_model(
    store: ConversationStorage, empty_database_dsn: str, tmp_path: Path
) -> None:
    _fill(store)
    path = tmp_path / "zoe.jsonl"
    export_jsonl(store, path, user_id="zoe")
    with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder(64, model_name="hashing-64")) as other:
        result = import_export(other, path, user_id="zed")
        assert result.messages_added == 4 and result.warnings
        assert {s.user_id for s in other.get_user_sessions("zed")} == {"zed"}
        assert other.search_messages("reply", user_id="zed", limit=1)[0][0].content == "reply"
