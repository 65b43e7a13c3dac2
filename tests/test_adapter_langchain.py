"""LangChain adapters: chat history round trips, the standard vector-store and retriever suites."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator

import pytest
from _helpers import scratch_database

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from ltst_memory.adapters.langchain import (
    LTSTChatMessageHistory,
    LTSTVectorStore,
    LTSTVectorStoreRetriever,
)

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConfigurationError,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    EmbeddingDimensionError,
    ValidationError,
)


@pytest.fixture(scope="module")
async def module_stores(
    pg_admin_dsn, template_db, hashing_embedder
) -> AsyncIterator[tuple[ConversationStorage, AsyncConversationStorage]]:
    """A sync and an async store on one database shared by this module's tests.

    Tests keep apart by unique session ids and collection names (a fresh database per test costs
    seconds on a busy machine, and the standard suites have 80 tests).
    """
    with (
        scratch_database(pg_admin_dsn, template_db) as dsn,
        ConversationStorage(dsn, embedder=hashing_embedder) as sync,
    ):
        async with AsyncConversationStorage(dsn, embedder=hashing_embedder) as astore:
            yield sync, astore


@pytest.fixture
def stores(module_stores) -> tuple[ConversationStorage, AsyncConversationStorage]:
    return module_stores


@pytest.fixture
def store(module_stores) -> ConversationStorage:
    return module_stores[0]


@pytest.fixture
def astore(module_stores) -> AsyncConversationStorage:
    return module_stores[1]


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def every_kind_of_message() -> list:
    return [
        SystemMessage(content="You are terse.", id="sys-1", additional_kwargs={"cache": True}),
        HumanMessage(content="What's the weather in Paris?", id="h-1", name="alice", additional_kwargs={"x": [1, 2]}),
        AIMessage(
            content="",
            id="run-abc",
            name="bot",
            tool_calls=[{"name": "weather", "args": {"city": "Paris", "days": 2}, "id": "call_1"}],
            invalid_tool_calls=[{"name": "bad", "args": "{oops", "id": "call_2", "error": "not json"}],
            additional_kwargs={"refusal": None},
            response_metadata={"model_name": "gpt-x", "finish_reason": "tool_calls"},
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        ),
        ToolMessage(content="18°C, sunny", tool_call_id="call_1", name="weather", artifact={"raw": [18]}, id="t-1"),
        ToolMessage(content="error!", tool_call_id="call_2", status="error"),
        FunctionMessage(content='{"temp": 18}', name="legacy_weather"),
        AIMessage(content=[{"type": "text", "text": "It is "}, {"type": "text", "text": "sunny."}], id="ai-2"),
        ChatMessage(content="Looks fine to me.", role="critic"),
        AIMessage(content=""),
        AIMessageChunk(content="partial", id="chunk-1"),
    ]


# --------------------------------------------------------------------------- chat history


def test_every_message_type_round_trips_exactly(store):
    history = LTSTChatMessageHistory(store, "chat-1", user_id="u1")
    messages = every_kind_of_message()
    history.add_messages(messages)
    assert history.messages == messages
    # a fresh history object reads the same from the database
    assert LTSTChatMessageHistory(store, "chat-1", user_id="u1").messages == messages


def test_stored_rows_are_searchable_and_role_mapped(store):
    history = LTSTChatMessageHistory(store, "chat-roles", user_id="u1")
    history.add_messages(every_kind_of_message())
    rows = store.get_messages("chat-roles")
    assert [r.role for r in rows] == ["system", "human", "ai", "tool", "tool", "tool", "ai", "system", "ai", "ai"]
    assert all(r.content.strip() for r in rows)
    assert "weather" in rows[2].content  # the tool call is rendered into the searchable text
    hits = store.search_messages("weather in Paris", session_id="chat-roles", limit=1)
    assert hits[0][0].content == "What's the weather in Paris?"


def test_add_messages_is_one_transaction(store):
    history = LTSTChatMessageHistory(store, "chat-atomic", user_id="u1")
    history.add_messages([HumanMessage(content="kept")])
    bad = HumanMessage(content="not JSON", additional_kwargs={"blob": {1, 2}})  # a set is not JSON
    with pytest.raises(ValidationError):
        history.add_messages([HumanMessage(content="first of the batch"), bad])
    assert history.messages == [HumanMessage(content="kept")]
    assert store.get_session_summary("chat-atomic").total_messages == 1


def test_any_session_id_string_and_session_creation(store):
    sid = "not a uuid: ünïcödé / 🙂"
    history = LTSTChatMessageHistory(store, sid, user_id="alice")
    assert store.get_session(sid).user_id == "alice"
    history.add_user_message("hi")
    history.add_ai_message("hello")
    assert [m.type for m in history.messages] == ["human", "ai"]
    # an existing session is adopted, not recreated; unscoped, its owner is found
    assert LTSTChatMessageHistory(store, sid, unscoped=True).user_id == "alice"
    with pytest.raises(AccessDeniedError):
        LTSTChatMessageHistory(store, sid, user_id="mallory")
    # unscoped, a new session belongs to the "default" user
    assert LTSTChatMessageHistory(store, "anon", unscoped=True).user_id == "default"


def test_clear_keeps_the_session(store):
    history = LTSTChatMessageHistory(store, "chat-clear", user_id="u1")
    history.add_messages([HumanMessage(content="a"), AIMessage(content="b")])
    history.clear()
    assert history.messages == []
    assert store.get_session("chat-clear") is not None
    history.add_messages([HumanMessage(content="c")])
    assert history.messages == [HumanMessage(content="c")]


def test_the_stores_session_cache_stays_current(store):
    sid = unique("cache")
    assert store.get_session(sid) is None
    history = LTSTChatMessageHistory(store, sid, user_id="u1")
    assert store.get_session(sid).user_id == "u1"
    assert store.get_session_summary(sid).total_messages == 0
    history.add_messages([HumanMessage(content="a"), AIMessage(content="b")])
    assert store.get_session_summary(sid).total_messages == 2
    history.clear()
    assert store.get_session_summary(sid).total_messages == 0


def test_messages_stored_without_the_adapter_are_converted(store):
    store.create_session(ConversationSession(session_id="core", user_id="u1"))
    store.store_messages(
        [
            ConversationMessage(session_id="core", role="human", content="q"),
            ConversationMessage(session_id="core", role="ai", content="a"),
            ConversationMessage(session_id="core", role="tool", content="r", metadata={"tool_call_id": "c9"}),
            ConversationMessage(session_id="core", role="system", content="s"),
        ]
    )
    got = LTSTChatMessageHistory(store, "core", user_id="u1").messages
    assert [type(m) for m in got] == [HumanMessage, AIMessage, ToolMessage, SystemMessage]
    assert [m.content for m in got] == ["q", "a", "r", "s"]
    assert got[2].tool_call_id == "c9"


async def test_async_methods_with_an_async_store(astore):
    history = LTSTChatMessageHistory(astore, "async-chat", user_id="u1")
    messages = every_kind_of_message()
    await history.aadd_messages(messages)
    assert await history.aget_messages() == messages
    assert (await astore.get_session("async-chat")).user_id == "u1"
    await history.aclear()
    assert await history.aget_messages() == []
    with pytest.raises(ConfigurationError):
        history.add_messages([HumanMessage(content="sync call on an async-only history")])


async def test_async_methods_with_a_sync_store(store):
    history = LTSTChatMessageHistory(store, "sync-backed", user_id="u1")
    await history.aadd_messages([HumanMessage(content="x", id="1")])
    assert await history.aget_messages() == [HumanMessage(content="x", id="1")]
    assert history.messages == [HumanMessage(content="x", id="1")]


async def test_sync_and_async_stores_share_one_history(stores):
    sync, astore = stores
    history = LTSTChatMessageHistory(sync, "shared", user_id="u1", async_storage=astore)
    history.add_messages([HumanMessage(content="from sync")])
    await history.aadd_messages([AIMessage(content="from async")])
    assert [m.content for m in await history.aget_messages()] == ["from sync", "from async"]


# --------------------------------------------------------------------------- vector store


class TestVectorStoreSyncAndAsyncStores(VectorStoreIntegrationTests):
    """The standard suite with a sync store for sync methods and an async store for async ones."""

    @pytest.fixture
    def vectorstore(self, stores) -> LTSTVectorStore:
        sync, astore = stores
        return LTSTVectorStore(
            sync, self.get_embeddings(), user_id="u1", async_storage=astore, collection_name=unique()
        )


class TestVectorStoreSyncStoreOnly(VectorStoreIntegrationTests):
    """The standard suite with only a sync store (async methods run the sync path)."""

    @pytest.fixture
    def vectorstore(self, store) -> LTSTVectorStore:
        return LTSTVectorStore(store, self.get_embeddings(), user_id="u1", collection_name=unique())


class _AsyncStoreOnly(VectorStoreIntegrationTests):
    """The async half of the standard suite with only an AsyncConversationStorage."""

    @property
    def has_sync(self) -> bool:
        return False

    @pytest.fixture
    def vectorstore(self, astore) -> LTSTVectorStore:
        return LTSTVectorStore(astore, self.get_embeddings(), user_id="u1", collection_name=unique())


# The sync half of the suite cannot run without a sync store (the two classes above run it); rather
# than collect it only to skip it, this variant leaves it out, and the test below checks the refusal.
_SYNC_SUITE_TESTS = {
    name: None
    for name in dir(VectorStoreIntegrationTests)
    if name.startswith("test_") and not inspect.iscoroutinefunction(getattr(VectorStoreIntegrationTests, name))
}
TestVectorStoreAsyncStoreOnly = type("TestVectorStoreAsyncStoreOnly", (_AsyncStoreOnly,), _SYNC_SUITE_TESTS)


def test_sync_vector_store_calls_need_a_sync_store(astore) -> None:
    vectorstore = LTSTVectorStore(astore, DeterministicFakeEmbedding(size=6), user_id="u1", collection_name=unique())
    with pytest.raises(ConfigurationError):
        vectorstore.add_texts(["needs a sync store"])
    with pytest.raises(ConfigurationError):
        vectorstore.similarity_search("anything")


class TestRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _filled(self, store) -> None:
        self._vectorstore = LTSTVectorStore(
            store, DeterministicFakeEmbedding(size=6), user_id="u1", collection_name=unique()
        )
        self._vectorstore.add_texts([f"memory note {i}" for i in range(5)])

    @property
    def retriever_constructor(self) -> type[LTSTVectorStoreRetriever]:
        return LTSTVectorStoreRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": self._vectorstore}

    @property
    def retriever_query_example(self) -> str:
        return "memory"


def _docs_store(store, **kwargs) -> LTSTVectorStore:
    kwargs.setdefault("collection_name", unique())
    vs = LTSTVectorStore(store, DeterministicFakeEmbedding(size=6), user_id="u1", **kwargs)
    vs.add_documents(
        [
            Document(page_content="apple pie", metadata={"kind": "food", "year": 2020, "tags": ["sweet"]}, id="a"),
            Document(page_content="apple laptop", metadata={"kind": "tech", "year": 2023}, id="b"),
            Document(page_content="banana bread", metadata={"kind": "food", "year": 2024, "vegan": True}, id="c"),
            Document(page_content="pear", metadata={"kind": "fruit", "name": "Pear"}, id="d"),
        ]
    )
    return vs


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"kind": "food"}, {"a", "c"}),
        ({"kind": {"$ne": "food"}}, {"b", "d"}),
        ({"year": {"$gte": 2023}}, {"b", "c"}),
        ({"year": {"$lt": 2023, "$gt": 2000}}, {"a"}),
        ({"kind": {"$in": ["tech", "fruit"]}}, {"b", "d"}),
        ({"kind": {"$nin": ["tech", "fruit"]}}, {"a", "c"}),
        ({"vegan": {"$exists": True}}, {"c"}),
        ({"$or": [{"kind": "tech"}, {"vegan": True}]}, {"b", "c"}),
        ({"$and": [{"kind": "food"}, {"year": {"$gt": 2021}}]}, {"c"}),
        ({"$not": {"kind": "food"}}, {"b", "d"}),
        ({"tags": ["sweet"]}, {"a"}),
        ({"name": {"$gt": "O"}}, {"d"}),
        ({"kind": "nothing"}, set()),
    ],
)
def test_metadata_filters(store, filter, expected):
    vs = _docs_store(store)
    assert {d.id for d in vs.similarity_search("apple", k=10, filter=filter)} == expected


def test_filter_never_returns_fewer_than_k(store):
    vs = LTSTVectorStore(store, DeterministicFakeEmbedding(size=6), user_id="u1", collection_name=unique())
    vs.add_texts([f"doc {i}" for i in range(300)], [{"group": i % 50} for i in range(300)])
    assert len(vs.similarity_search("doc 7", k=6, filter={"group": 7})) == 6


def test_generated_document_ids_are_time_ordered_uuids(store):
    vs = LTSTVectorStore(store, DeterministicFakeEmbedding(size=6), user_id="u1", collection_name=unique())
    ids = vs.add_texts(["first", "second", "third"]) + vs.add_texts(["fourth"], ids=[None])
    assert [uuid.UUID(i).version for i in ids] == [7, 7, 7, 7] and ids == sorted(ids)  # (as text, too)
    assert {d.id for d in vs.similarity_search("first", k=10)} == set(ids)


def test_bad_filter_is_a_validation_error(store):
    vs = _docs_store(store)
    with pytest.raises(ValidationError):
        vs.similarity_search("x", filter={"kind": {"$regex": ".*"}})


def test_collections_are_kept_apart_with_their_own_dimension(store):
    six = _docs_store(store)
    other = LTSTVectorStore(store, DeterministicFakeEmbedding(size=12), user_id="u1", collection_name=unique())
    other.add_texts(["apple pie"], ids=["a"])
    assert [d.id for d in other.similarity_search("apple", k=10)] == ["a"]
    assert len(six.similarity_search("apple", k=10)) == 4
    wrong = LTSTVectorStore(
        store, DeterministicFakeEmbedding(size=12), user_id="u1", collection_name=six.collection_name
    )
    with pytest.raises(EmbeddingDimensionError):
        wrong.add_texts(["x"])
    other.delete_collection()
    assert other.similarity_search("apple") == []
    assert len(six.similarity_search("apple", k=10)) == 4


def test_scores_and_mmr(store):
    vs = _docs_store(store)
    (doc, distance), *_ = vs.similarity_search_with_score("pear", k=2)
    assert doc.id == "d" and distance == pytest.approx(0.0, abs=1e-5)
    (doc, relevance), *_ = vs.similarity_search_with_relevance_scores("pear", k=1)
    assert relevance == pytest.approx(1.0, abs=1e-5)
    mmr = vs.max_marginal_relevance_search("pear", k=2, fetch_k=4)
    assert len(mmr) == 2 and mmr[0].id == "d"


def test_default_embedding_is_the_store_embedder(semantic_store):
    vs = LTSTVectorStore(semantic_store, user_id="u1")
    vs.add_texts(["The cat sat on the mat.", "PostgreSQL is a relational database.", "I love hiking."])
    assert vs.similarity_search("Which database system?", k=1)[0].page_content.startswith("PostgreSQL")


async def test_retriever_with_filter_and_k(stores):
    sync, astore = stores
    vs = _docs_store(sync, async_storage=astore)
    retriever = vs.as_retriever(k=1, search_kwargs={"filter": {"kind": "food"}})
    assert [d.id for d in retriever.invoke("banana bread")] == ["c"]
    assert len(await retriever.ainvoke("apple", k=2)) == 2
    assert all(d.metadata["kind"] == "food" for d in await retriever.ainvoke("apple", k=4))


async def test_async_methods_never_fall_back_to_the_thread_pool(stores, monkeypatch):
    import langchain_core.chat_history
    import langchain_core.vectorstores.base

    def fallback(*args, **kwargs):
        raise AssertionError("LangChain's run_in_executor fallback was used")

    monkeypatch.setattr(langchain_core.chat_history, "run_in_executor", fallback)
    monkeypatch.setattr(langchain_core.vectorstores.base, "run_in_executor", fallback)
    astore = stores[1]
    history = LTSTChatMessageHistory(astore, unique("s"), user_id="u1")
    await history.aadd_messages([HumanMessage(content="a")])
    await history.aadd_messages([AIMessage(content="b")])
    assert [m.content for m in await history.aget_messages()] == ["a", "b"]
    await history.aclear()
    vs = LTSTVectorStore(astore, DeterministicFakeEmbedding(size=6), user_id="u1", collection_name=unique())
    ids = await vs.aadd_texts(["x", "y", "z"], [{"n": 1}, {"n": 2}, {"n": 3}])
    await vs.aadd_documents([Document(page_content="w", id="w")])
    assert len(await vs.asimilarity_search("x", k=2, filter={"n": {"$gte": 2}})) == 2
    scored = await vs.asimilarity_search_with_relevance_scores("x", k=4)
    assert len(scored) == 4 and all(0.0 <= score <= 1.0 for _, score in scored)
    assert len(await vs.amax_marginal_relevance_search("x", k=2)) == 2
    assert len(await vs.aget_by_ids(ids)) == 3
    await vs.adelete(ids)
    assert [d.id for d in await vs.asimilarity_search("x", k=4)] == ["w"]
