"""LangGraph store: the same operations against ``InMemoryStore`` and ``LTSTStore`` give the same answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from _helpers import scratch_database
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.base import GetOp, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from ltst_memory.adapters.langgraph import LTSTStore

from ltst_memory import AsyncConversationStorage, ConfigurationError, ConversationStorage, ValidationError


@pytest.fixture(scope="module")
async def module_stores(pg_admin_dsn, template_db, hashing_embedder) -> AsyncIterator[tuple[Any, Any, str]]:
    """A sync and an async store on one fresh database for this module (tests use unique namespaces)."""
    with (
        scratch_database(pg_admin_dsn, template_db) as dsn,
        ConversationStorage(dsn, embedder=hashing_embedder) as sync,
    ):
        async with AsyncConversationStorage(dsn, embedder=hashing_embedder) as astore:
            yield sync, astore, dsn


@pytest.fixture
def root() -> str:
    """A namespace root unique to the test, so tests sharing the database never see each other."""
    return f"t{uuid.uuid4().hex[:8]}"


EMBED = DeterministicFakeEmbedding(size=16)
INDEX = {"dims": 16, "embed": EMBED, "fields": ["text"]}


def norm(result: Any) -> Any:
    """Comparable form of a store result (timestamps differ by nature; scores compared to 1e-5)."""
    if result is None:
        return None
    if isinstance(result, list):
        if result and isinstance(result[0], tuple):
            return result
        return [norm(r) for r in result]
    score = getattr(result, "score", None)
    return (result.namespace, result.key, result.value, None if score is None else round(score, 5))


def unordered(results: list) -> list:
    return sorted(norm(results), key=repr)


def populate(store: Any, root: str) -> None:
    store.put((root, "users", "alice", "memories"), "m1", {"text": "likes green tea", "n": 1, "tag": "food"})
    store.put((root, "users", "alice", "memories"), "m2", {"text": "works on PostgreSQL", "n": 2, "tag": "work"})
    store.put((root, "users", "alice", "prefs"), "p1", {"text": "answers in French", "n": 3, "nested": {"a": 1}})
    store.put((root, "users", "bob", "memories"), "m1", {"text": "likes black coffee", "n": 4, "tag": "food"})
    store.put((root, "users", "bob", "memories"), "m3", {"text": "runs marathons", "n": 5, "list": [1, 2]})
    store.put((root, "docs"), "d1", {"text": "manual", "n": 6})
    store.put((root, "users", "bob", "memories"), "m3", {"text": "runs half marathons", "n": 7, "list": [1, 2]})
    store.put((root, "users", "alice", "memories"), "gone", {"text": "temporary", "n": 8})
    store.delete((root, "users", "alice", "memories"), "gone")


def scenario(store: Any, root: str) -> dict[str, Any]:
    """Operations whose results must agree between the two stores."""
    populate(store, root)
    alice = (root, "users", "alice", "memories")
    out: dict[str, Any] = {
        "get": norm(store.get(alice, "m1")),
        "get_missing": norm(store.get(alice, "nope")),
        "get_deleted": norm(store.get(alice, "gone")),
        "get_overwritten": norm(store.get((root, "users", "bob", "memories"), "m3")),
        "search_all": unordered(store.search((root,), limit=100)),
        "search_prefix": unordered(store.search((root, "users", "alice"), limit=100)),
        "search_eq": unordered(store.search((root,), filter={"tag": "food"}, limit=100)),
        "search_gt": unordered(store.search((root,), filter={"n": {"$gt": 3}}, limit=100)),
        "search_range": unordered(store.search((root,), filter={"n": {"$gte": 2, "$lte": 4}}, limit=100)),
        "search_ne": unordered(store.search((root, "users"), filter={"tag": {"$ne": "food"}}, limit=100)),
        "search_nested": unordered(store.search((root,), filter={"nested": {"a": 1}}, limit=100)),
        "search_list": unordered(store.search((root,), filter={"list": [1, 2]}, limit=100)),
        "search_two": unordered(store.search((root,), filter={"tag": "food", "n": 4}, limit=100)),
        "search_none": unordered(store.search((root, "nobody"), limit=100)),
        "count_limited": len(store.search((root,), limit=2)),
        "count_offset": len(store.search((root,), limit=10, offset=4)),
        "semantic": norm(store.search((root,), query="likes green tea", limit=3)),
        "semantic_filtered": norm(store.search((root, "users"), query="runs half marathons", filter={"n": 7})),
        "semantic_offset": norm(store.search((root,), query="manual", limit=2, offset=1)),
        "ns_all": store.list_namespaces(prefix=(root,)),
        "ns_depth": store.list_namespaces(prefix=(root,), max_depth=3),
        "ns_suffix": store.list_namespaces(prefix=(root,), suffix=("memories",)),
        "ns_wildcard": store.list_namespaces(prefix=(root, "users", "*", "memories")),
        "ns_paged": store.list_namespaces(prefix=(root,), limit=2, offset=1),
    }
    return out


def test_same_results_as_in_memory_store(module_stores, root):
    sync, _, _ = module_stores
    ours = scenario(LTSTStore(sync, user_id="u1", index=INDEX), root)
    reference = scenario(InMemoryStore(index=INDEX), root)
    for key in reference:
        assert ours[key] == reference[key], key


def test_same_results_without_index(module_stores, root):
    sync, _, _ = module_stores
    ours = scenario(LTSTStore(sync, user_id="u1"), root)
    reference = scenario(InMemoryStore(), root)
    for key in reference:
        if key.startswith("semantic"):  # without an index a query is ignored and the order unspecified
            assert len(ours[key]) == len(reference[key]), key
        else:
            assert ours[key] == reference[key], key


async def ascenario(store: Any, root: str) -> dict[str, Any]:
    ns = (root, "a", "memories")
    await store.aput(ns, "k1", {"text": "likes green tea", "n": 1})
    await store.aput(ns, "k2", {"text": "PostgreSQL fan", "n": 2})
    await store.aput((root, "b"), "k3", {"text": "other", "n": 3})
    await store.aput((root, "b"), "k4", {"text": "kept", "n": 4})
    await store.adelete((root, "b"), "k3")
    return {
        "get": norm(await store.aget(ns, "k1")),
        "deleted": norm(await store.aget((root, "b"), "k3")),
        "search": norm(await store.asearch((root,), query="green tea", limit=5)),
        "filter": unordered(await store.asearch((root,), filter={"n": {"$lt": 2}})),
        "ns": await store.alist_namespaces(prefix=(root,)),
    }


@pytest.mark.parametrize("kind", ["async store", "sync store"])
async def test_async_api_matches_in_memory_store(module_stores, root, kind):
    sync, astore, _ = module_stores
    ours = LTSTStore(astore if kind == "async store" else sync, user_id="u1", index=INDEX)
    assert await ascenario(ours, root) == await ascenario(InMemoryStore(index=INDEX), f"{root}")


async def test_async_only_store_refuses_sync_calls(module_stores, root):
    _, astore, _ = module_stores
    store = LTSTStore(astore, user_id="u1")
    with pytest.raises(ConfigurationError):
        store.put((root,), "k", {"v": 1})


def test_emptied_namespace_is_not_listed(module_stores, root):
    """Deliberate difference: InMemoryStore keeps listing a namespace whose last item was deleted."""
    sync, _, _ = module_stores
    store = LTSTStore(sync, user_id="u1")
    store.put((root, "x"), "only", {"v": 1})
    store.delete((root, "x"), "only")
    assert store.list_namespaces(prefix=(root,)) == []
    memory = InMemoryStore()
    memory.put((root, "x"), "only", {"v": 1})
    memory.delete((root, "x"), "only")
    assert memory.list_namespaces(prefix=(root,)) == [(root, "x")]


def test_batch_reads_see_state_before_its_writes(module_stores, root):
    sync, _, _ = module_stores
    ops = [
        PutOp((root,), "k", {"v": 1}),
        GetOp((root,), "k"),
        PutOp((root,), "k", {"v": 2}),
        SearchOp((root,), None, 10, 0),
    ]
    ours = LTSTStore(sync, user_id="u1").batch(ops)
    reference = InMemoryStore().batch(ops)
    assert [norm(r) for r in ours] == [norm(r) for r in reference] == [None, None, None, []]
    assert LTSTStore(sync, user_id="u1").get((root,), "k").value == {"v": 2}  # the last write wins


def test_items_persist_and_keep_created_at(module_stores, root):
    sync, _, _ = module_stores
    LTSTStore(sync, user_id="u1").put((root, "p"), "k", {"v": 1})
    first = LTSTStore(sync, user_id="u1").get((root, "p"), "k")  # a new adapter object sees the stored item
    LTSTStore(sync, user_id="u1").put((root, "p"), "k", {"v": 2})
    second = LTSTStore(sync, user_id="u1").get((root, "p"), "k")
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at


def test_index_fields_and_index_false(module_stores, root):
    sync, _, _ = module_stores
    for store in (LTSTStore(sync, user_id="u1", index=INDEX), InMemoryStore(index=INDEX)):
        store.put((root, "i"), "a", {"text": "green tea", "other": "x"})
        store.put((root, "i"), "b", {"text": "green tea"}, index=False)
        store.put((root, "i"), "c", {"text": "zzz", "other": "green tea"}, index=["other"])
        store.put((root, "i"), "d", {"items": [{"text": "x"}, {"text": "green tea"}]}, index=["items[*].text"])
        hits = store.search((root, "i"), query="green tea", limit=10)
        scores = {h.key: h.score for h in hits}
        assert scores["a"] == pytest.approx(1.0) and scores["c"] == pytest.approx(1.0), type(store)
        assert scores["d"] == pytest.approx(1.0), type(store)  # the best of an item's vectors counts
        assert scores["b"] is None and [h.key for h in hits][-1] == "b", type(store)
        store.delete((root, "i"), "a")
        store.delete((root, "i"), "c")
        store.delete((root, "i"), "d")


def test_ttl_expiry_refresh_and_sweep(module_stores, root):
    sync, _, dsn = module_stores
    store = LTSTStore(sync, user_id="u1", ttl={"default_ttl": 60, "refresh_on_read": True})
    ns = (root, "ttl")
    store.put(ns, "short", {"v": 1})  # default_ttl: 60 minutes
    store.put(ns, "forever", {"v": 2}, ttl=None)
    store.put(ns, "custom", {"v": 3}, ttl=5)
    with psycopg.connect(dsn) as conn:
        rows = dict(
            conn.execute(
                "SELECT key, round(extract(epoch FROM expires_at - now()) / 60) FROM ltst_store_items "
                "WHERE namespace = %s::text[]",
                (list(ns),),
            ).fetchall()
        )
        assert rows == {"short": 60, "forever": None, "custom": 5}
        # age "custom" to 1 minute left, then read it: refresh_on_read puts it back to 5 minutes
        conn.execute("UPDATE ltst_store_items SET expires_at = now() + interval '1 minute' WHERE key = 'custom'")
        conn.commit()
        assert store.get(ns, "custom").value == {"v": 3}
        left = conn.execute("SELECT expires_at - now() FROM ltst_store_items WHERE key = 'custom'").fetchone()[0]
        assert left.total_seconds() > 4 * 60
        assert store.get(ns, "custom", refresh_ttl=False) is not None
        # expire "short": it disappears from every read at once, and the sweep deletes it
        conn.execute("UPDATE ltst_store_items SET expires_at = now() - interval '1 second' WHERE key = 'short'")
        conn.commit()
    assert store.get(ns, "short") is None
    assert {i.key for i in store.search(ns)} == {"forever", "custom"}
    assert store.sweep_ttl() >= 1
    assert store.get(ns, "forever").value == {"v": 2}
    with pytest.raises(ValidationError):
        store.put(ns, "bad", {"v": 1}, ttl=-1)


def test_ttl_sweeper_starts_and_stops(module_stores):
    sync, _, _ = module_stores
    store = LTSTStore(sync, user_id="u1", ttl={"default_ttl": 1, "sweep_interval_minutes": 1})
    future = store.start_ttl_sweeper()
    assert not future.done()
    assert store.stop_ttl_sweeper(timeout=10)
    assert future.result(timeout=10) is None


def test_semantic_search_with_the_store_embedder(semantic_store, root):
    store = LTSTStore(semantic_store, user_id="u1", index={"fields": ["text"]})  # embed and dims from the store's model
    ns = (root, "u1", "memories")
    store.put(ns, "1", {"text": "My daughter Emma turns seven in March."})
    store.put(ns, "2", {"text": "I deploy everything on PostgreSQL 18."})
    store.put(ns, "3", {"text": "Our cat is called Miso."})
    assert store.search(ns, query="which database do I use?", limit=1)[0].key == "2"
    assert store.search(ns, query="how old is my child?", limit=1)[0].key == "1"


def test_a_langgraph_graph_uses_the_store(module_stores, root):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.store.base import BaseStore

    class State(TypedDict):
        user: str
        fact: str
        recalled: list[str]

    def remember(state: State, *, store: BaseStore) -> dict:
        store.put((root, state["user"], "facts"), str(uuid.uuid4()), {"text": state["fact"]})
        return {}

    def recall(state: State, *, store: BaseStore) -> dict:
        return {"recalled": [i.value["text"] for i in store.search((root, state["user"], "facts"), limit=10)]}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    sync, _, _ = module_stores
    graph = builder.compile(store=LTSTStore(sync, user_id="u1", index=INDEX))
    graph.invoke({"user": "ann", "fact": "likes tea", "recalled": []})
    out = graph.invoke({"user": "ann", "fact": "owns a bike", "recalled": []})
    assert sorted(out["recalled"]) == ["likes tea", "owns a bike"]
