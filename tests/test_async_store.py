"""The async store runs the same operations as the sync one."""

from __future__ import annotations

import asyncio

import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    SessionExistsError,
    SessionNotFoundError,
    ValidationError,
)


async def test_async_round_trip(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession("s1", "u1"))
    with pytest.raises(SessionExistsError):
        await astore.create_session(ConversationSession("s1", "u1"))
    stored = await astore.store_messages([ConversationMessage("s1", "user", f"async {i}") for i in range(3)])
    assert [m.message_index for m in stored] == [0, 1, 2]
    assert [m.content for m in await astore.get_messages("s1")] == ["async 0", "async 1", "async 2"]
    hits = await astore.search_messages("async 1", session_id="s1", limit=1)
    assert hits[0][0].content == "async 1"
    await astore.store_context(ConversationContext("s1", "project", "k", "v"))
    assert [c.context_value for c in await astore.get_context("s1")] == ["v"]
    assert (await astore.get_session_summary("s1")).total_messages == 3
    assert (await astore.delete_session("s1"))["messages"] == 3
    with pytest.raises(SessionNotFoundError):
        await astore.get_messages("s1")
    with pytest.raises(ValidationError):
        await astore.store_message(ConversationMessage("s1", "human", ""))


async def test_async_concurrent_writers_keep_indexes_gapless(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession("busy", "u1"))

    async def writer(t: int) -> None:
        for i in range(10):
            await astore.store_message(ConversationMessage("busy", "human", f"{t}-{i}"))

    await asyncio.gather(*(writer(t) for t in range(6)))
    messages = await astore.get_messages("busy", limit=100)
    assert [m.message_index for m in messages] == list(range(60))
