"""The sync and async stores expose the same operations with the same signatures and behaviour."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionNotFoundError,
    StoreClosedError,
    ValidationError,
)

#: Methods that do no I/O (cache counters, user-scoped views): plain methods on both classes.
LOCAL = {"cache_stats", "clear_cache", "for_user"}
#: Members that exist on both classes but differ by nature (lifecycle, context-manager protocol).
LIFECYCLE = {
    "close",
    "connect",
    "open",
    "migrate",
    "pool",
    "closed",
    "__enter__",
    "__exit__",
    "__aenter__",
    "__aexit__",
}


def _public(cls: type) -> dict[str, object]:
    return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in _public(cls).items()
        if callable(member) and not isinstance(member, type) and name not in LIFECYCLE
    }


def test_same_operation_names() -> None:
    sync_ops = set(_operations(ConversationStorage))
    async_ops = set(_operations(AsyncConversationStorage))
    assert sync_ops == async_ops, f"only sync: {sync_ops - async_ops}; only async: {async_ops - sync_ops}"
    # the spec's core operations are all there
    for name in ("create_session", "store_message", "store_messages", "get_messages", "search_messages"):
        assert name in sync_ops


def test_same_properties() -> None:
    def props(cls: type) -> set[str]:
        return {n for n, m in _public(cls).items() if isinstance(m, property)}

    assert props(ConversationStorage) - {"pool"} == props(AsyncConversationStorage) - {"pool"}


@pytest.mark.parametrize("name", sorted(_operations(ConversationStorage)))
def test_same_signature(name: str) -> None:
    sync_sig = _operations(ConversationStorage)[name]
    async_sig = _operations(AsyncConversationStorage)[name]
    assert list(sync_sig.parameters.values()) == list(async_sig.parameters.values()), name
    assert sync_sig.return_annotation == async_sig.return_annotation, name


@pytest.mark.parametrize("name", sorted(set(_operations(AsyncConversationStorage)) - LOCAL))
def test_async_operations_are_coroutines(name: str) -> None:
    member = getattr(AsyncConversationStorage, name)
    assert inspect.iscoroutinefunction(member), f"AsyncConversationStorage.{name} is not a coroutine function"
    assert not inspect.iscoroutinefunction(getattr(ConversationStorage, name))


def test_local_methods_are_plain_on_both() -> None:
    for name in LOCAL:
        assert not inspect.iscoroutinefunction(getattr(AsyncConversationStorage, name))
        assert getattr(AsyncConversationStorage, name) is getattr(ConversationStorage, name)


def test_docstrings_shared() -> None:
    for name in _operations(ConversationStorage):
        sync_doc = getattr(ConversationStorage, name).__doc__
        assert sync_doc, f"ConversationStorage.{name} has no docstring"
        assert sync_doc == getattr(AsyncConversationStorage, name).__doc__, name


# --------------------------------------------------------------------------- behaviour


async def test_async_round_trip_matches_sync(astore: AsyncConversationStorage, database_dsn: str) -> None:
    await astore.create_session(ConversationSession(session_id="s-async", user_id="u1"))
    stored = await astore.store_messages(
        [ConversationMessage(session_id="s-async", role="human", content=f"async message {i}") for i in range(5)]
    )
    assert [m.message_index for m in stored] == [0, 1, 2, 3, 4]
    with ConversationStorage(database_dsn, embedder=astore.embedder) as sync_store:
        via_sync = sync_store.get_messages("s-async")
        hits_sync = sync_store.search_messages("async message 3", session_id="s-async", limit=2)
    via_async = await astore.get_messages("s-async")
    hits_async = await astore.search_messages("async message 3", session_id="s-async", limit=2)
    assert [(m.message_id, m.content) for m in via_sync] == [(m.message_id, m.content) for m in via_async]
    assert [(m.message_id, round(s, 6)) for m, s in hits_sync] == [(m.message_id, round(s, 6)) for m, s in hits_async]
    assert hits_async[0][0].content == "async message 3"


async def test_async_errors_are_the_same_types(astore: AsyncConversationStorage) -> None:
    with pytest.raises(SessionNotFoundError):
        await astore.get_messages("nope")
    with pytest.raises(ValidationError):
        await astore.get_messages("nope", limit=-1)
    with pytest.raises(SessionNotFoundError):
        await astore.store_message(ConversationMessage(session_id="nope", role="human", content="x"))


async def test_concurrent_async_writers_keep_indexes_dense(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession(session_id="busy", user_id="u1"))

    async def writer(w: int) -> None:
        for i in range(5):
            await astore.store_message(ConversationMessage(session_id="busy", role="human", content=f"w{w} m{i}"))

    await asyncio.gather(*(writer(w) for w in range(4)))
    messages = await astore.get_messages("busy")
    assert sorted(m.message_index for m in messages) == list(range(20))
    summary = await astore.get_session_summary("busy")
    assert summary.total_messages == 20


async def test_async_closed_store_refuses(database_dsn: str, hashing_embedder: object) -> None:
    store = await AsyncConversationStorage.open(database_dsn, embedder=hashing_embedder)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.get_session("x")
