"""Bulk import (binary COPY) and deferred embedding."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    EmbeddingDimensionError,
    EmbeddingError,
    SessionNotFoundError,
    ValidationError,
)
from ltst_memory.bulk import AsyncEmbeddingWorker, BulkResult, EmbeddingWorker


class CountingEmbedder:
    """Wraps an embedder and records the size of every call."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def model_name(self) -> str:
        return self.inner.model_name  # type: ignore[attr-defined,no-any-return]

    @property
    def dimension(self) -> int:
        return self.inner.dimension  # type: ignore[attr-defined,no-any-return]

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)  # type: ignore[attr-defined,no-any-return]


def _sessions(store: ConversationStorage, n: int, user: str = "u1") -> None:
    for i in range(n):
        store.create_session(ConversationSession(session_id=f"s{i}", user_id=user))


def test_import_assigns_dense_indexes_and_summary(store: ConversationStorage) -> None:
    _sessions(store, 3)
    store.store_message(ConversationMessage(session_id="s0", role="human", content="before the import"))
    vectors = np.random.default_rng(1).standard_normal((300, 384)).astype(np.float32)
    messages = [
        ConversationMessage(
            session_id=f"s{i % 3}", role="human" if i % 2 else "ai", content=f"imported {i}", embedding=vectors[i]
        )
        for i in range(300)
    ]
    result = store.import_messages(messages, batch_size=70)
    assert isinstance(result, BulkResult)
    assert (result.inserted, result.skipped, result.batches, result.embedded) == (300, 0, 5, 0)
    s0 = store.get_messages("s0", limit=1000)
    assert [m.message_index for m in s0] == list(range(101))
    assert s0[0].content == "before the import"
    assert [m.content for m in s0[1:4]] == ["imported 0", "imported 3", "imported 6"]
    summary = store.get_session_summary("s0")
    assert summary.total_messages == 101
    assert summary.ai_messages == 50 and summary.human_messages == 51
    # a message stored afterwards continues the numbering; the stored vectors are the given ones
    after = store.store_message(ConversationMessage(session_id="s1", role="human", content="after"))
    assert after.message_index == 100
    s1 = store.get_messages("s1", limit=3)
    by_vector = store.search_messages("unused", session_id="s1", limit=1)
    assert s1[0].content == "imported 1" and by_vector  # search works on imported rows


def test_import_embeds_each_batch_with_one_call(database_dsn: str, hashing_embedder: object) -> None:
    embedder = CountingEmbedder(hashing_embedder)
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _sessions(store, 2)
        given = np.asarray(hashing_embedder.embed(["given"])[0])  # type: ignore[attr-defined]
        messages = [ConversationMessage(session_id=f"s{i % 2}", role="human", content=f"topic {i}") for i in range(25)]
        messages[3].embedding = list(given)
        embedder.calls.clear()
        result = store.import_messages(messages, batch_size=10)
        assert embedder.calls == [9, 10, 5]  # one call per batch, the pre-embedded message skipped
        assert result.embedded == 24
        hits = store.search_messages("topic 17", user_id="u1", limit=1)
        assert hits[0][0].content == "topic 17"


def test_import_is_idempotent_by_uuid(store: ConversationStorage) -> None:
    _sessions(store, 1)
    messages = [
        ConversationMessage(
            session_id="s0", role="human", content=f"m{i}", message_uuid=f"00000000-0000-0000-0000-{i:012d}"
        )
        for i in range(20)
    ]
    first = store.import_messages(messages)
    second = store.import_messages(messages)
    assert (first.inserted, first.skipped) == (20, 0)
    assert (second.inserted, second.skipped) == (0, 20)
    assert store.get_session_summary("s0").total_messages == 20


def test_failing_batch_rolls_back_alone(store: ConversationStorage) -> None:
    _sessions(store, 1)
    good = [ConversationMessage(session_id="s0", role="human", content=f"ok {i}") for i in range(10)]
    bad = [ConversationMessage(session_id="missing", role="human", content="orphan")]
    with pytest.raises(SessionNotFoundError):
        store.import_messages(good + bad, batch_size=10)
    assert len(store.get_messages("s0")) == 10  # the first batch committed, the second wrote nothing
    with pytest.raises(SessionNotFoundError):
        store.import_messages(bad)
    assert store.get_session_summary("s0").total_messages == 10


def test_import_validates_before_writing(store: ConversationStorage) -> None:
    _sessions(store, 1)
    with pytest.raises(EmbeddingDimensionError):
        store.import_messages([ConversationMessage(session_id="s0", role="human", content="x", embedding=[0.1] * 3)])
    with pytest.raises(ValidationError):
        store.import_messages([ConversationMessage(session_id="s0", role="robot", content="x")])
    with pytest.raises(ValidationError):
        store.import_messages("not a list")  # type: ignore[arg-type]
    assert store.get_messages("s0") == []


def test_deferred_embedding_worker(store: ConversationStorage) -> None:
    _sessions(store, 2)
    messages = [
        ConversationMessage(session_id=f"s{i % 2}", role="human", content=f"pelican number {i}") for i in range(50)
    ]
    result = store.import_messages(messages, defer_embedding=True)
    assert (result.inserted, result.deferred, result.embedded) == (50, 50, 0)
    assert store.pending_embeddings() == 50
    assert store.search_messages("pelican number 7", user_id="u1") == []  # no vectors yet
    words = store.search_unembedded("pelicans", user_id="u1", limit=100)  # ...but the text path finds them
    assert len(words) == 50
    assert store.search_unembedded("pelican", user_id="someone-else") == []

    worker = EmbeddingWorker(store, batch_size=16, poll_interval=0.05)
    future = worker.start()
    for _ in range(200):
        if store.pending_embeddings() == 0 or future.done():
            break
        time.sleep(0.05)
    assert worker.stop(timeout=10) == 50
    assert future.done() and future.result() == 50
    assert store.pending_embeddings() == 0
    assert store.search_unembedded("pelicans", user_id="u1") == []
    hit = store.search_messages("pelican number 7", user_id="u1", limit=1)[0][0]
    assert hit.content == "pelican number 7"


def test_two_workers_never_embed_a_row_twice(database_dsn: str, hashing_embedder: object) -> None:
    embedder = CountingEmbedder(hashing_embedder)
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _sessions(store, 1)
        store.import_messages(
            [ConversationMessage(session_id="s0", role="human", content=f"row {i}") for i in range(120)],
            defer_embedding=True,
        )
        embedder.calls.clear()
        workers = [EmbeddingWorker(store, batch_size=7, poll_interval=0.02) for _ in range(3)]
        for w in workers:
            w.start()
        for _ in range(400):
            if store.pending_embeddings() == 0:
                break
            time.sleep(0.025)
        totals = [w.stop(timeout=10) for w in workers]
        assert sum(totals) == 120
        assert sum(embedder.calls) == 120


async def test_async_import_and_worker(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession(session_id="a", user_id="u1"))
    result = await astore.import_messages(
        [ConversationMessage(session_id="a", role="human", content=f"async bulk {i}") for i in range(30)],
        batch_size=8,
        defer_embedding=True,
    )
    assert (result.inserted, result.batches) == (30, 4)
    assert [m.message_index for m in await astore.get_messages("a")] == list(range(30))
    assert len(await astore.search_unembedded("bulk", session_id="a", limit=50)) == 30
    worker = AsyncEmbeddingWorker(astore, batch_size=10, poll_interval=0.02)
    task = worker.start()
    for _ in range(200):
        if await astore.pending_embeddings() == 0:
            break
        await asyncio.sleep(0.02)
    assert await worker.stop(timeout=10) == 30
    assert task.done()
    hits = await astore.search_messages("async bulk 12", session_id="a", limit=1)
    assert hits[0][0].content == "async bulk 12"


class RejectingEmbedder(CountingEmbedder):
    """Rejects any batch holding a text with ``poison`` in it (as a model server rejects an input)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if any("poison" in t for t in texts):
            raise ValueError("input rejected by the model")
        return self.inner.embed(texts)  # type: ignore[attr-defined,no-any-return]


def _deferred(store: ConversationStorage, contents: list[str]) -> None:
    store.create_session(ConversationSession(session_id="s0", user_id="u1"))
    store.import_messages(
        [ConversationMessage(session_id="s0", role="human", content=c) for c in contents], defer_embedding=True
    )


def test_worker_sets_rejected_messages_aside_and_moves_on(database_dsn: str, hashing_embedder: object) -> None:
    embedder = RejectingEmbedder(hashing_embedder)
    contents = [f"poison pill {i}" if i in (3, 11) else f"harmless row {i}" for i in range(20)]
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _deferred(store, contents)
        worker = EmbeddingWorker(store, batch_size=16)
        assert worker.run_once() == 14  # the batch minus its two poisoned rows
        assert worker.run_once() == 4  # the next rows: the poisoned ones are not claimed again
        assert worker.run_once() == 0
        assert store.pending_embeddings() == 2
        stored = {m.message_id: m.content for m in store.get_messages("s0")}
        assert sorted(stored[d.message_id] for d in worker.dead_letters) == ["poison pill 11", "poison pill 3"]
        assert all("input rejected by the model" in d.error for d in worker.dead_letters)
        calls = len(embedder.calls)
        assert worker.run_once() == 0 and len(embedder.calls) == calls  # nothing left to try
        # the rejected rows are still found by their words; the others by meaning
        assert {m.content for m, _ in store.search_unembedded("poison", session_id="s0")} == {
            "poison pill 3",
            "poison pill 11",
        }
        assert store.search_messages("harmless row 5", session_id="s0", limit=1)[0][0].content == "harmless row 5"
        # left alone with them, embed_pending cannot tell bad rows from a failing embedder: it raises
        with pytest.raises(EmbeddingError, match="input rejected"):
            store.embed_pending()
        assert store.pending_embeddings() == 2


def test_embedder_failing_on_everything_is_raised_and_sets_nothing_aside(
    database_dsn: str, hashing_embedder: object
) -> None:
    embedder = RejectingEmbedder(hashing_embedder)
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _deferred(store, ["poison one", "poison two", "poison three"])
        worker = EmbeddingWorker(store, batch_size=16)
        with pytest.raises(EmbeddingError, match="input rejected"):
            worker.run_once()
        assert worker.dead_letters == [] and store.pending_embeddings() == 3


async def test_async_worker_sets_rejected_messages_aside(database_dsn: str, hashing_embedder: object) -> None:
    embedder = RejectingEmbedder(hashing_embedder)
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _deferred(store, ["harmless a", "poison b", "harmless c"])
    async with AsyncConversationStorage(database_dsn, embedder=embedder) as astore:  # type: ignore[arg-type]
        worker = AsyncEmbeddingWorker(astore, batch_size=10)
        assert await worker.run_once() == 2
        assert [d.message_id for d in worker.dead_letters] == [(await astore.get_messages("s0"))[1].message_id]
        assert await worker.run_once() == 0
        assert await astore.pending_embeddings() == 1
