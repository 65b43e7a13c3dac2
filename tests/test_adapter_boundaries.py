"""Adapter data has an owner: scoped by default, apart per user, under RLS, erased with the user.

Real database, real roles: the application role is a LOGIN role that does not own the tables (as
docs/security.md recommends), so Row Level Security applies to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import dspy
import psycopg
import pytest
from _helpers import login_role
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage
from ltst_memory.adapters.dspy import LTSTMemory, LTSTRetriever
from ltst_memory.adapters.langchain import LTSTChatMessageHistory, LTSTVectorStore
from ltst_memory.adapters.langgraph import LTSTStore
from ltst_memory.schema import migration_files
from psycopg import sql

from ltst_memory import (
    AccessDeniedError,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    ValidationError,
)

ADAPTER_TABLES = ("ltst_collections", "ltst_documents", "ltst_store_items", "ltst_store_vectors")
EMBED = DeterministicFakeEmbedding(size=8)
INDEX = {"dims": 8, "embed": EMBED, "fields": ["text"]}


@pytest.fixture
def app_dsn(database_dsn: str) -> Iterator[str]:
    """A DSN for a LOGIN role that is not the tables' owner, with ordinary read/write grants."""
    with login_role(database_dsn, "ltst_adapter_app") as dsn:
        yield dsn


def _rows_of(conn: psycopg.Connection, user: str) -> dict[str, int]:
    return {
        t: conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier(t)), (user,)
        ).fetchone()[0]
        for t in ADAPTER_TABLES
    }


def _fill(storage: ConversationStorage, user: str) -> None:
    """Adapter data of ``user`` in every adapter table, with the same names as every other user's."""
    LTSTVectorStore(storage, EMBED, user_id=user).add_texts([f"{user} handbook"], [{"owner": user}], ids=["d1"])
    store = LTSTStore(storage, user_id=user, index=INDEX)
    store.put(("memories", user), "m1", {"text": f"{user} likes tea"})
    store.put(("memories",), "shared-name", {"text": f"{user} private memory"})


# --------------------------------------------------------------------------- scoped by default


def test_every_adapter_needs_a_user_or_asks_for_unscoped_by_name(store: ConversationStorage) -> None:
    program = dspy.Predict("question -> answer")
    for build in (
        lambda **kw: LTSTChatMessageHistory(store, "bob-chat", **kw),
        lambda **kw: LTSTVectorStore(store, EMBED, **kw),
        lambda **kw: LTSTStore(store, **kw),
        lambda **kw: LTSTRetriever(store, **kw),
        lambda **kw: LTSTMemory(program, store, session_id="s", **kw),
    ):
        with pytest.raises(ValidationError, match="needs a user"):
            build()
        with pytest.raises(ValidationError, match="unscoped=True cannot be combined"):
            build(user_id="alice", unscoped=True)
        with pytest.raises(ValidationError):
            build(user_id="")
        assert build(user_id="alice") is not None
        assert build(unscoped=True) is not None
    with pytest.raises(AccessDeniedError):  # a store scoped to alice cannot act for bob
        LTSTVectorStore(store.for_user("alice"), EMBED, user_id="bob")
    assert LTSTStore.unscoped(store).user_id is None
    assert LTSTVectorStore(store.for_user("alice"), EMBED).user_id == "alice"


def test_chat_history_cannot_read_or_clear_another_users_chat(store: ConversationStorage) -> None:
    LTSTChatMessageHistory(store, "bob-chat", user_id="bob").add_messages(
        [HumanMessage("bob's diagnosis: asthma"), AIMessage("noted")]
    )
    for alice in (
        lambda: LTSTChatMessageHistory(store, "bob-chat", user_id="alice"),
        lambda: LTSTChatMessageHistory(store.for_user("alice"), "bob-chat"),
    ):
        with pytest.raises(AccessDeniedError):
            alice().clear()
        with pytest.raises(AccessDeniedError):
            alice().messages  # noqa: B018
    assert [m.content for m in store.get_messages("bob-chat")] == ["bob's diagnosis: asthma", "noted"]


def test_retriever_and_its_tool_search_only_the_users_messages(store: ConversationStorage) -> None:
    for user, secret in (("alice", "alice locker code 1111"), ("bob", "bob locker code 2222")):
        store.create_session(ConversationSession(f"{user}-s", user))
        store.store_message(ConversationMessage(session_id=f"{user}-s", role="human", content=secret))
    for retriever in (LTSTRetriever(store, user_id="alice", k=5), LTSTRetriever(store.for_user("alice"), k=5)):
        assert retriever("locker code").passages == ["alice locker code 1111"]
        assert retriever.as_tool()(query="locker code") == ["alice locker code 1111"]
    with pytest.raises(AccessDeniedError):  # bob's session through alice's retriever
        LTSTRetriever(store, user_id="alice", session_id="bob-s")("locker code")
    passages = LTSTRetriever(store, unscoped=True, k=5)("locker code").passages  # asked for by name
    assert sorted(passages) == ["alice locker code 1111", "bob locker code 2222"]


def test_vector_store_collections_of_the_same_name_are_apart(store: ConversationStorage) -> None:
    _fill(store, "alice")
    _fill(store, "bob")
    alice = LTSTVectorStore(store, EMBED, user_id="alice")
    bob = LTSTVectorStore(store.for_user("bob"), EMBED)
    assert [d.page_content for d in alice.similarity_search("handbook", k=10)] == ["alice handbook"]
    assert [d.page_content for d in alice.get_by_ids(["d1"])] == ["alice handbook"]
    assert alice.as_retriever(k=10).invoke("handbook")[0].metadata == {"owner": "alice"}
    alice.delete(["d1"])
    alice.delete_collection()
    assert [d.page_content for d in bob.similarity_search("handbook", k=10)] == ["bob handbook"]
    everyone = LTSTVectorStore(store, EMBED, unscoped=True)
    assert [d.page_content for d in everyone.similarity_search("handbook", k=10)] == ["bob handbook"]


def test_langgraph_items_of_the_same_namespace_and_key_are_apart(store: ConversationStorage) -> None:
    _fill(store, "alice")
    _fill(store, "bob")
    alice = LTSTStore(store, user_id="alice", index=INDEX)
    assert alice.get(("memories",), "shared-name").value == {"text": "alice private memory"}
    assert {i.value["text"] for i in alice.search(("memories",), limit=100)} == {
        "alice likes tea",
        "alice private memory",
    }
    assert {i.value["text"] for i in alice.search(("memories",), query="tea", limit=100)} == {
        "alice likes tea",
        "alice private memory",
    }
    assert alice.list_namespaces(prefix=("memories",)) == [("memories",), ("memories", "alice")]
    alice.delete(("memories",), "shared-name")
    bob = LTSTStore(store.for_user("bob"))
    assert bob.get(("memories",), "shared-name").value == {"text": "bob private memory"}
    everyone = LTSTStore.unscoped(store)
    assert len(everyone.search(("memories",), limit=100)) == 3


# --------------------------------------------------------------------------- the RLS application role


def test_adapters_on_the_rls_application_role(store: ConversationStorage, app_dsn: str, hashing_embedder) -> None:
    _fill(store, "alice")
    _fill(store, "bob")
    with ConversationStorage(app_dsn, embedder=hashing_embedder, auto_migrate=False) as app:
        # the docs' per-user namespaces: alice's store sees alice's memories only
        found = LTSTStore(app.for_user("alice")).search(("memories",), limit=100)
        assert {i.value["text"] for i in found} == {"alice likes tea", "alice private memory"}
        assert {i.value["text"] for i in LTSTStore(app, user_id="bob").search(("memories",), limit=100)} == {
            "bob likes tea",
            "bob private memory",
        }
        # unscoped on the application role: RLS shows no row (fail closed)
        assert LTSTStore.unscoped(app).search(("memories",), limit=100) == []
        assert LTSTVectorStore(app, EMBED, unscoped=True).similarity_search("handbook", k=10) == []
        vs = LTSTVectorStore(app, EMBED, user_id="alice")
        vs.add_texts(["alice second"], ids=["d2"])
        assert sorted(d.page_content for d in vs.similarity_search("x", k=10)) == ["alice handbook", "alice second"]
    with psycopg.connect(app_dsn) as conn:
        # raw SQL without a user sees and changes nothing
        assert set(_rows_of(conn, "alice").values()) == {0}
        assert conn.execute("UPDATE ltst_store_items SET value = '{}'").rowcount == 0
        conn.rollback()
        conn.execute("SET LOCAL ltst.user_id = 'alice'")  # SET LOCAL: Citus sends it on to the workers
        assert conn.execute("SELECT count(*) FROM ltst_store_items WHERE user_id = 'bob' OR true").fetchone() == (2,)
        assert conn.execute("DELETE FROM ltst_documents WHERE user_id = 'bob'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # cannot write rows owned by bob
            conn.execute("INSERT INTO ltst_collections (user_id, collection) VALUES ('bob', 'planted')")
        conn.rollback()
    with store.pool.connection() as conn:
        assert _rows_of(conn, "bob") == {
            "ltst_collections": 1,
            "ltst_documents": 1,
            "ltst_store_items": 2,
            "ltst_store_vectors": 2,
        }


# --------------------------------------------------------------------------- erase


def test_delete_user_erases_every_adapter_row_of_the_user(store: ConversationStorage) -> None:
    LTSTChatMessageHistory(store, "bob-chat", user_id="bob").add_messages([HumanMessage("hello")])
    _fill(store, "alice")
    _fill(store, "bob")
    with store.pool.connection() as conn:
        before = _rows_of(conn, "alice")
        assert all(_rows_of(conn, "bob").values())
    erased = store.delete_user("bob")
    assert erased.complete
    assert {k: v for k, v in erased.items() if k in ("store_vectors", "store_items", "documents", "collections")} == {
        "store_vectors": 2,
        "store_items": 2,
        "documents": 1,
        "collections": 1,
    }
    with store.pool.connection() as conn:
        assert set(_rows_of(conn, "bob").values()) == {0}
        assert _rows_of(conn, "alice") == before
    assert store.get_session("bob-chat") is None


# --------------------------------------------------------------------------- the migration


def test_migration_gives_existing_rows_their_known_owner(empty_database_dsn: str, hashing_embedder) -> None:
    files = migration_files()
    with psycopg.connect(empty_database_dsn, autocommit=True) as conn:
        for name, text in files:
            if name < "0010":
                conn.execute(text)
        conn.execute("INSERT INTO conversation_sessions (session_id, user_id) VALUES ('s1', 'alice')")
        conn.execute(
            """INSERT INTO ltst_collections (collection, dimension, metadata) VALUES
               ('mine', 2, '{"user_id": "alice"}'), ('theirs', 2, '{}')"""
        )
        conn.execute(
            """INSERT INTO ltst_documents (collection, document_id, content, embedding) VALUES
               ('mine', 'a', 'x', '[1,0]'), ('theirs', 'b', 'y', '[0,1]')"""
        )
        conn.execute(
            r"""INSERT INTO ltst_store_items (ns_path, key, namespace, value) VALUES
               (E'memories\x1falice\x1f', 'k', '{memories,alice}', '{}'),
               (E'memories\x1fnobody\x1f', 'k', '{memories,nobody}', '{}')"""
        )
        conn.execute(
            r"""INSERT INTO ltst_store_vectors (ns_path, key, field_name, embedding) VALUES
               (E'memories\x1falice\x1f', 'k', '$', '[1,0]'), (E'memories\x1fnobody\x1f', 'k', '$', '[1,0]')"""
        )
        migration = dict(files)["0010_adapter_owners.sql"]
        conn.execute(migration)
        conn.execute(migration)  # idempotent
        owners = {
            t: sorted(r[0] for r in conn.execute(sql.SQL("SELECT user_id FROM {}").format(sql.Identifier(t))))
            for t in ADAPTER_TABLES
        }
    assert owners == {t: [" ", "alice"] for t in ADAPTER_TABLES}
    # the placeholder owner ' ' is a blank id: no for_user store or adapter can name it
    with ConversationStorage(empty_database_dsn, embedder=hashing_embedder) as storage:
        with pytest.raises(ValidationError):
            storage.for_user(" ")
        with pytest.raises(ValidationError):
            LTSTStore(storage, user_id=" ")
        assert LTSTStore(storage, user_id="alice").get(("memories", "alice"), "k").value == {}
        assert LTSTStore(storage, user_id="alice").get(("memories", "nobody"), "k") is None
        assert LTSTStore.unscoped(storage).get(("memories", "nobody"), "k").value == {}


def test_imported_langchain_vectors_belong_to_the_importing_user(store: ConversationStorage, pg_admin_dsn: str) -> None:
    from _helpers import scratch_database

    from ltst_memory.io import import_langchain_vectorstore

    with scratch_database(pg_admin_dsn) as source:
        with psycopg.connect(source) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                "CREATE TABLE v2 (langchain_id UUID PRIMARY KEY, content TEXT NOT NULL, embedding vector(8) NOT NULL, "
                "langchain_metadata JSON)"
            )
            conn.execute(
                "INSERT INTO v2 VALUES ('7f6f1b9c-0000-4000-8000-000000000001', 'imported', %s, '{}')",
                (str([float(x) for x in EMBED.embed_query("imported")]),),
            )
        assert import_langchain_vectorstore(store, source, table="v2", user_id="alice").other_rows_added == 1
        assert import_langchain_vectorstore(store, source, table="v2").other_rows_added == 1  # shared rows
    assert [
        d.page_content
        for d in LTSTVectorStore(store, EMBED, user_id="alice", collection_name="v2").get_by_ids(
            ["7f6f1b9c-0000-4000-8000-000000000001"]
        )
    ] == ["imported"]
    assert LTSTVectorStore(store, EMBED, user_id="bob", collection_name="v2").similarity_search("imported") == []
    with store.pool.connection() as conn:
        assert _rows_of(conn, " ")["ltst_documents"] == 1
