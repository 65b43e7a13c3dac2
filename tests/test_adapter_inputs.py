"""Hostile and odd inputs to the adapters: each a typed error (ValidationError, also a ValueError as
LangChain expects) raised before anything is written, or a documented result; options are supported
or refused, never silently ignored."""

from __future__ import annotations

import asyncio
import math

import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from ltst_memory.adapters.langchain import LTSTChatMessageHistory, LTSTVectorStore
from ltst_memory.adapters.langgraph import InvalidNamespace, LTSTStore

from ltst_memory import AsyncConversationStorage, ConfigurationError, ConversationStorage, ValidationError

EMBED = DeterministicFakeEmbedding(size=8)

BAD_FILTERS = [
    {"a\x00b": 1},  # NUL in a key
    {"a": "x\x00y"},  # NUL in a value
    {"\ud800": 1},  # lone surrogate in a key
    {"a": "\udfff"},  # lone surrogate in a value
    {"a": {"$eq": "x\x00"}},
    {"a": {"$in": ["ok", "bad\x00"]}},
    {"a": {"$in": [math.nan]}},  # NaN
    {"a": {"$in": [object()]}},  # not JSON
    {"a": {"$nin": [{"k": math.inf}]}},
    {"a": {"$gt": 10**400}},  # beyond a double
    {"a": {"$lte": math.nan}},
    {"a": {"$between": [1]}},
    {"a": {"$like": 5}},
    {"a": {"$exists": "yes"}},
    {"a": {"$regex": "x"}},  # unknown operator
    {"$nor": [{"a": 1}]},
    {"a": object()},
]


def _nested_not(depth: int, base: dict | None = None) -> dict:
    filter: dict = base or {"a": 1}
    for _ in range(depth):
        filter = {"$not": filter}
    return filter


@pytest.fixture
def docs(store: ConversationStorage) -> LTSTVectorStore:
    vs = LTSTVectorStore(store, EMBED, user_id="u1", collection_name="c")
    vs.add_texts(
        ["alpha", "beta", "gamma", "delta"],
        [
            {"n": 1, "name": "Alpha one", "tag": "x", "info": {"city": "Oslo", "year": 2020}},
            {"n": 5, "name": "beta two", "tag": "y", "info": {"city": "Paris", "year": 2024}},
            {"n": 9, "name": "gamma", "tag": "z", "info": {"city": "Oslo", "year": 2025}},
            {"n": "7", "name": "delta"},
        ],
        ids=["a", "b", "g", "d"],
    )
    return vs


def _ids(documents: list) -> list[str]:
    return sorted(d.id for d in documents)


# --------------------------------------------------------------------------- vector store


@pytest.mark.parametrize("filter", [*BAD_FILTERS, _nested_not(330)], ids=lambda f: repr(f)[:40])
def test_vector_store_refuses_bad_filters_before_any_query(docs: LTSTVectorStore, filter: dict) -> None:
    with pytest.raises(ValidationError) as info:
        docs.similarity_search("alpha", k=4, filter=filter)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValidationError):
        docs.delete(filter=filter)
    assert len(docs.get_by_ids(["a", "b", "g", "d"])) == 4  # nothing deleted


@pytest.mark.parametrize("name", ["c\x00", "\ud800", "", "   ", "x" * 256, 5])
def test_vector_store_refuses_bad_collection_names(store: ConversationStorage, name: object) -> None:
    with pytest.raises(ValidationError):
        LTSTVectorStore(store, EMBED, user_id="u1", collection_name=name)  # type: ignore[arg-type]


def test_filters_like_ilike_between_not_list_and_dotted_paths(docs: LTSTVectorStore) -> None:
    def found(filter: dict) -> list[str]:
        return _ids(docs.similarity_search("q", k=10, filter=filter))

    assert found({"name": {"$like": "%ta%"}}) == ["b", "d"]
    assert found({"name": {"$like": "Alpha%"}}) == ["a"]
    assert found({"name": {"$ilike": "alpha%"}}) == ["a"]
    assert found({"n": {"$between": [1, 5]}}) == ["a", "b"]  # inclusive; the string "7" is not a number
    assert found({"name": {"$between": ["b", "d~"]}}) == ["b", "d"]
    assert found({"$not": [{"tag": "x"}, {"tag": "y"}]}) == ["d", "g"]  # none of them
    assert found({"$not": {"tag": "x"}}) == ["b", "d", "g"]
    assert found({"info.city": "Oslo"}) == ["a", "g"]  # dotted JSON path
    assert found({"info.year": {"$gte": 2024}}) == ["b", "g"]
    assert found({"n": {"$in": [1, 9]}, "info.city": {"$ne": "Paris"}}) == ["a", "g"]
    assert found(_nested_not(32, {"tag": "x"})) == ["a"]  # 32 levels are allowed (an even number of NOTs)
    assert found(_nested_not(31, {"tag": "x"})) == ["b", "d", "g"]


def test_delete_by_filter_deletes_the_matching_documents(docs: LTSTVectorStore) -> None:
    assert docs.delete(filter={"info.city": "Oslo"}) is True
    assert _ids(docs.get_by_ids(["a", "b", "g", "d"])) == ["b", "d"]
    assert docs.delete(filter={"tag": "nothing matches"}) is True  # ran; nothing matched
    assert docs.delete() is False  # neither ids nor filter: nothing to do
    with pytest.raises(ValidationError):
        docs.delete(["b"], filter={"tag": "y"})
    with pytest.raises(ValidationError):
        docs.delete(filter={})
    with pytest.raises(ValidationError):
        docs.delete(["b"], cascade=True)
    assert _ids(docs.get_by_ids(["a", "b", "g", "d"])) == ["b", "d"]


def test_unknown_search_options_are_refused(docs: LTSTVectorStore) -> None:
    for call in (
        lambda: docs.similarity_search("alpha", hybrid_search_config={"x": 1}),
        lambda: docs.similarity_search_with_score("alpha", fetch_k=3),
        lambda: docs.similarity_search_by_vector(EMBED.embed_query("alpha"), where="1=1"),
        lambda: docs.max_marginal_relevance_search("alpha", hybrid_search_config=None),
        lambda: docs.add_texts(["x"], batch_size=10),
        lambda: asyncio.run(docs.asimilarity_search("alpha", hybrid_search_config={})),
    ):
        with pytest.raises(ValidationError):
            call()
    with pytest.raises(ValidationError):
        LTSTVectorStore(docs._runner.sync, EMBED, user_id="u1", distance_strategy="l1")
    # what LangChain itself passes is accepted
    assert len(docs.similarity_search_with_relevance_scores("alpha", k=2, score_threshold=0.0)) == 2
    assert len(docs.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4}).invoke("alpha")) == 2


def test_distance_strategies_rank_and_score_by_their_distance(store: ConversationStorage) -> None:
    vectors = {"near": [1.0, 0.0], "long": [10.0, 0.0], "side": [0.0, 1.0]}

    class Fixed(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [vectors[t] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return [2.0, 0.0]

    cases = (("cosine", "long", 0.0), ("euclidean", "near", 1.0), ("max_inner_product", "long", -20.0))
    for strategy, first, distance in cases:
        vs = LTSTVectorStore(store, Fixed(size=2), user_id="u1", collection_name=strategy, distance_strategy=strategy)
        vs.add_texts(list(vectors), ids=list(vectors))
        (doc, score), *_ = vs.similarity_search_with_score("q", k=3)
        if strategy == "cosine":  # "near" and "long" have the same direction: the id breaks the tie
            assert {d.id for d, s in vs.similarity_search_with_score("q", k=2)} == {"near", "long"}
        else:
            assert doc.id == first
        assert score == pytest.approx(distance)


def test_metadata_quoting_a_nul_escape_is_text(docs: LTSTVectorStore, store: ConversationStorage) -> None:
    """The six characters \\u0000 are text (they round-trip); only a real NUL is refused."""
    docs.add_texts(["quote"], [{"quote": "\\u0000 is how JSON writes a NUL"}], ids=["q"])
    assert docs.get_by_ids(["q"])[0].metadata["quote"] == "\\u0000 is how JSON writes a NUL"
    with pytest.raises(ValidationError):
        docs.add_texts(["x", "y"], [{"ok": 1}, {"bad": "\x00"}], ids=["x", "y"])
    assert docs.get_by_ids(["x", "y"]) == []  # nothing of the batch
    history = LTSTChatMessageHistory(store, "quoting", user_id="u1")
    batch = [HumanMessage("how does JSON write a NUL?"), AIMessage("as the six characters \\u0000")]
    history.add_messages(batch)
    assert history.messages == batch
    store_ = LTSTStore(store, user_id="u1")
    store_.put(("q",), "k", {"text": "\\u0000"})
    assert store_.get(("q",), "k").value == {"text": "\\u0000"}


# --------------------------------------------------------------------------- LangGraph store


@pytest.mark.parametrize("filter", [*BAD_FILTERS, _nested_not(330)], ids=lambda f: repr(f)[:40])
def test_langgraph_store_refuses_bad_filters(store: ConversationStorage, filter: dict) -> None:
    lg = LTSTStore(store, user_id="u1")
    lg.put(("ns",), "k", {"a": 1})
    with pytest.raises(ValidationError) as info:
        lg.search(("ns",), filter=filter)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValidationError):
        lg.batch([PutOp(("ns",), "new", {"a": 2}), SearchOp(("ns",), filter=filter)])
    assert lg.get(("ns",), "new") is None


def test_langgraph_store_refuses_bad_arguments_and_writes_nothing(store: ConversationStorage) -> None:
    lg = LTSTStore(store, user_id="u1")
    lg.put(("ns", "a"), "k", {"v": 1})
    lg.put(("ns", "b"), "k", {"v": 2})
    for ops in (
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "t", {"v": 1}, ttl=1e300)],
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "t", {"v": 1}, ttl=math.nan)],
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "t", {"v": 1}, ttl=0)],
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "k\x00", {"v": 1})],
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "\ud800", {"v": 1})],
        [PutOp(("ns",), "new", {"v": 3}), PutOp(("ns",), "k" * 3_000, {"v": 1})],
        [PutOp(("ns",), "new", {"v": 3}), SearchOp(("ns",), limit="5")],  # type: ignore[arg-type]
        [PutOp(("ns",), "new", {"v": 3}), SearchOp(("ns",), limit=-1)],
        [PutOp(("ns",), "new", {"v": 3}), SearchOp(("ns",), offset=-2)],
        [PutOp(("ns",), "new", {"v": 3}), ListNamespacesOp(limit=-1)],
        [PutOp(("ns",), "new", {"v": 3}), ListNamespacesOp(offset="1")],  # type: ignore[arg-type]
        [PutOp(("ns",), "new", {"v": 3}), ListNamespacesOp(max_depth=-1)],
    ):
        with pytest.raises(ValidationError):
            lg.batch(ops)
    assert lg.get(("ns",), "new") is None
    with pytest.raises(ValidationError):
        lg.put(("ns",), "t", {"v": 1}, ttl=1e300)
    with pytest.raises(ValidationError):
        lg.search(("ns",), limit="5")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        lg.list_namespaces(limit=-1)
    assert lg.list_namespaces(prefix=("ns",)) == [("ns", "a"), ("ns", "b")]  # nothing dropped
    assert lg.list_namespaces(prefix=("ns",), limit=1) == [("ns", "a")]
    lg.put(("ns",), "long", {"v": 1}, ttl=1e9)  # the longest TTL
    assert lg.get(("ns",), "long").value == {"v": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"index": {"dims": 8, "embed": EMBED, "distance_type": "l1"}},
        {"index": {"dims": 8, "embed": EMBED, "ann_index_config": {"kind": "hnsw"}}},
        {"ttl": {"default_ttl": 1e300}},
        {"ttl": {"omit_expired": "no"}},
        {"ttl": {"sweep_interval": 5}},
    ],
)
def test_langgraph_options_are_supported_or_refused(store: ConversationStorage, options: dict) -> None:
    with pytest.raises(ValidationError):
        LTSTStore(store, user_id="u1", **options)


def test_langgraph_distance_types_score_as_postgres_store(store: ConversationStorage) -> None:
    vectors = {"near": [1.0, 0.0], "long": [10.0, 0.0], "side": [0.0, 1.0]}

    def embed(texts: list[str]) -> list[list[float]]:
        return [vectors.get(t, [2.0, 0.0]) for t in texts]

    scores = {}
    for distance in ("cosine", "l2", "inner_product"):
        lg = LTSTStore(
            store,
            user_id=f"u-{distance}",
            index={"dims": 2, "embed": embed, "fields": ["text"], "distance_type": distance},
        )
        for key in vectors:
            lg.put(("v",), key, {"text": key})
        scores[distance] = {i.key: round(i.score, 4) for i in lg.search(("v",), query="q", limit=3)}
    assert scores["cosine"] == {"near": 1.0, "long": 1.0, "side": 0.0}
    assert scores["l2"] == {"near": -1.0, "long": -8.0, "side": round(-math.sqrt(5), 4)}
    assert scores["inner_product"] == {"near": 2.0, "long": 20.0, "side": 0.0}


def test_omit_expired_false_reads_expired_items_until_swept(store: ConversationStorage) -> None:
    keep = LTSTStore(store, user_id="u1", ttl={"omit_expired": False})
    omit = LTSTStore(store, user_id="u1")
    keep.put(("t",), "k", {"v": 1}, ttl=1)
    with store.pool.connection() as conn:
        conn.execute("UPDATE ltst_store_items SET expires_at = now() - interval '1 minute'")
    assert omit.get(("t",), "k") is None
    assert keep.get(("t",), "k", refresh_ttl=False).value == {"v": 1}
    assert [i.key for i in keep.search(("t",), refresh_ttl=False)] == ["k"]
    assert keep.list_namespaces() == [("t",)]
    assert keep.sweep_ttl() == 1
    assert keep.get(("t",), "k") is None


async def test_async_only_store_has_awaitable_sweeper(database_dsn: str, hashing_embedder) -> None:
    async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as astore:
        lg = LTSTStore(astore, user_id="u1", ttl={"sweep_interval_minutes": 1})
        await lg.aput(("t",), "k", {"v": 1}, ttl=1)
        other = LTSTStore(astore, user_id="u2")
        await other.aput(("t",), "k", {"v": 1}, ttl=1)
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("UPDATE ltst_store_items SET expires_at = now() - interval '1 minute'")
        assert await lg.sweep_ttl() == 1  # awaitable; only u1's item
        task = await lg.start_ttl_sweeper()
        assert isinstance(task, asyncio.Task) and not task.done()
        assert await lg.start_ttl_sweeper() is task  # already running
        assert await lg.stop_ttl_sweeper(timeout=5) is True
        assert task.cancelled()
        assert await other.asweep_ttl() == 1


def test_async_only_store_refuses_a_sweeper_outside_an_event_loop(database_dsn: str, hashing_embedder) -> None:
    lg = LTSTStore(AsyncConversationStorage(database_dsn, embedder=hashing_embedder), user_id="u1")  # not opened
    with pytest.raises(ConfigurationError, match=r"await store\.start_ttl_sweeper"):
        lg.start_ttl_sweeper()
    with pytest.raises(ValidationError):
        lg.start_ttl_sweeper(-1)


@pytest.mark.parametrize("namespace", [("foo.bar",), ("foo", ""), ("foo", 1)])
def test_langgraph_batch_refuses_namespaces_langgraph_refuses(store: ConversationStorage, namespace: tuple) -> None:
    lg = LTSTStore(store, user_id="u1")
    for op in (
        GetOp(namespace, "k"),
        PutOp(namespace, "k", {"v": 1}),
        SearchOp(namespace),
        ListNamespacesOp((MatchCondition("prefix", namespace),)),
    ):
        with pytest.raises(InvalidNamespace) as info:  # the whole batch, before any query
            lg.batch([PutOp(("valid",), "k", {}), op])
        assert isinstance(info.value, ValidationError) and isinstance(info.value, InvalidNamespaceError)
    assert lg.get(("valid",), "k") is None
