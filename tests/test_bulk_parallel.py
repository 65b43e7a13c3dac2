"""Bulk import on several connections at once (``import_messages(..., workers=n)``)."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from test_bulk_rows import _rows, _sessions, _summaries_are_exact, _term_stats_are_exact

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationMessage,
    ConversationStorage,
    SessionNotFoundError,
    Settings,
    ValidationError,
)

SESSIONS = {f"s{i}": f"u{i % 4}" for i in range(12)}  # 4 users, 3 sessions each


def _messages(n: int, *, uuids: bool = False) -> list[ConversationMessage]:
    words = ["pelican", "heron", "osprey", "gannet", "cormorant", "puffin", "tern", "gull"]
    return [
        ConversationMessage(
            session_id=f"s{i % 12}",
            role="human" if i % 2 else "ai",
            content=f"turn {i}: " + " ".join(words[(i * k) % len(words)] for k in range(1, 5)),
            message_uuid=str(uuid.UUID(int=i + 1)) if uuids else None,
        )
        for i in range(n)
    ]


def _contents_by_session(store: ConversationStorage) -> dict[str, list[tuple[int, str]]]:
    rows = _rows(store, "SELECT session_id, message_index, content FROM conversation_messages ORDER BY 1, 2")
    out: dict[str, list[tuple[int, str]]] = {}
    for session_id, index, content in rows:
        out.setdefault(session_id, []).append((index, content))
    return out


def test_parallel_import_stores_what_a_serial_one_does(store: ConversationStorage) -> None:
    _sessions(store, SESSIONS)
    messages = _messages(600, uuids=True)
    result = store.import_messages(messages + messages[:30], batch_size=40, workers=3)
    assert (result.inserted, result.skipped) == (600, 30)
    by_session = _contents_by_session(store)
    for session_id in SESSIONS:
        expected = [m.content for m in messages if m.session_id == session_id]
        assert by_session[session_id] == list(enumerate(expected))  # dense indexes, input order kept
    _term_stats_are_exact(store)
    _summaries_are_exact(store)
    after = store.store_message(ConversationMessage(session_id="s5", role="human", content="after"))
    assert after.message_index == 50  # numbering continues with no gap


class BarrierEmbedder:
    """An embedder whose calls wait until ``parties`` calls are in flight at once (or fail after 20 s)."""

    def __init__(self, inner: object, parties: int) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(parties, timeout=20)
        self.model_name = inner.model_name  # type: ignore[attr-defined]
        self.dimension = inner.dimension  # type: ignore[attr-defined]

    def embed(self, texts: list[str]) -> np.ndarray:
        self.barrier.wait()
        return self.inner.embed(texts)  # type: ignore[attr-defined,no-any-return]


def test_workers_write_at_the_same_time(database_dsn: str, hashing_embedder: object) -> None:
    embedder = BarrierEmbedder(hashing_embedder, parties=2)
    with ConversationStorage(database_dsn, embedder=embedder) as store:  # type: ignore[arg-type]
        _sessions(store, {"a": "ua", "b": "ub"})
        messages = [ConversationMessage(session_id="ab"[i % 2], role="human", content=f"m{i}") for i in range(20)]
        # each user's part embeds once; both calls must be in flight together or the barrier breaks
        result = store.import_messages(messages, batch_size=10, workers=2)
        assert (result.inserted, result.batches) == (20, 2)


def test_a_failing_part_leaves_the_other_users_parts_committed(store: ConversationStorage) -> None:
    _sessions(store, SESSIONS)
    messages = _messages(48)
    messages.insert(30, ConversationMessage(session_id="no-such-session", role="human", content="orphan"))
    with pytest.raises(SessionNotFoundError):
        store.import_messages(messages, batch_size=100, workers=4)
    stored = _contents_by_session(store)
    # whatever was written is whole per transaction: every stored session is a dense prefix of its input
    for session_id, rows in stored.items():
        expected = [m.content for m in messages if m.session_id == session_id]
        assert rows == list(enumerate(expected))[: len(rows)]
    assert "no-such-session" not in stored
    _term_stats_are_exact(store)
    _summaries_are_exact(store)


def test_workers_is_checked(store: ConversationStorage) -> None:
    _sessions(store, {"s": "u"})
    with pytest.raises(ValidationError, match="workers"):
        store.import_messages([ConversationMessage(session_id="s", role="human", content="x")], workers=0)
    assert store.get_messages("s") == []


def test_user_scoped_store_imports_in_parallel_and_refuses_other_users(store: ConversationStorage) -> None:
    _sessions(store, {"a1": "alice", "a2": "alice", "b1": "bob"})
    alice = store.for_user("alice")
    own = [ConversationMessage(session_id=f"a{1 + i % 2}", role="human", content=f"mine {i}") for i in range(30)]
    assert alice.import_messages(iter(own), batch_size=4, workers=2).inserted == 30
    mixed = [ConversationMessage(session_id="a1", role="human", content="x"), ConversationMessage("b1", "human", "y")]
    with pytest.raises(AccessDeniedError):
        alice.import_messages(iter(mixed), workers=2)
    assert [m.content for m in store.get_messages("b1")] == []
    assert len(store.get_messages("a1", limit=100)) == 15


async def test_async_parallel_import(astore: AsyncConversationStorage) -> None:
    from ltst_memory import ConversationSession

    for session_id, user_id in SESSIONS.items():
        await astore.create_session(ConversationSession(session_id=session_id, user_id=user_id))
    messages = _messages(240)
    result = await astore.import_messages(messages, batch_size=25, workers=3)
    assert result.inserted == 240
    for session_id in SESSIONS:
        stored = await astore.get_messages(session_id, limit=100)
        assert [(m.message_index, m.content) for m in stored] == list(
            enumerate(m.content for m in messages if m.session_id == session_id)
        )
    messages.append(ConversationMessage(session_id="no-such-session", role="human", content="orphan"))
    with pytest.raises(SessionNotFoundError):
        await astore.import_messages(messages[-5:], workers=2)


class PeakEmbedder:
    """Records how many embedding calls were in flight at once (each takes 0.2 s)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.model_name = inner.model_name  # type: ignore[attr-defined]
        self.dimension = inner.dimension  # type: ignore[attr-defined]
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.2)
        with self.lock:
            self.active -= 1
        return self.inner.embed(texts)  # type: ignore[attr-defined,no-any-return]


def test_parts_never_outnumber_the_pool(database_dsn: str, hashing_embedder: object) -> None:
    embedder = PeakEmbedder(hashing_embedder)
    settings = Settings.from_env(dsn=database_dsn, pool_max_size=2)
    with ConversationStorage(settings=settings, embedder=embedder) as store:  # type: ignore[arg-type]
        _sessions(store, SESSIONS)  # 4 users: 4 parts
        assert store.import_messages(_messages(48), batch_size=12, workers=4).inserted == 48
    assert embedder.peak == 2  # two at a time, as many as the pool has connections


async def test_async_parts_never_outnumber_the_pool(database_dsn: str, hashing_embedder: object) -> None:
    from ltst_memory import ConversationSession

    embedder = PeakEmbedder(hashing_embedder)
    settings = Settings.from_env(dsn=database_dsn, pool_max_size=2)
    async with AsyncConversationStorage(settings=settings, embedder=embedder) as astore:  # type: ignore[arg-type]
        for session_id, user_id in SESSIONS.items():
            await astore.create_session(ConversationSession(session_id=session_id, user_id=user_id))
        assert (await astore.import_messages(_messages(48), batch_size=12, workers=4)).inserted == 48
    assert embedder.peak == 2
