"""A typed use of both stores: ``mypy --strict`` must accept it (tests/test_registry.py runs it), so the
stores' generated methods carry their real parameter and return types."""

from __future__ import annotations

import asyncio
from typing import assert_type  # type-checked only (Python >= 3.11 to run it)

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    SessionSummary,
)
from ltst_memory.bulk import BulkResult
from ltst_memory.rehydrate import RehydrationResult


def sync_use(dsn: str) -> tuple[int, float, str]:
    with ConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
        session: ConversationSession = store.create_session(ConversationSession(session_id="s", user_id="u"))
        stored: ConversationMessage = store.store_message(
            ConversationMessage(session_id=session.session_id, role="human", content="hello there")
        )
        found = store.get_session("s")
        assert_type(found, ConversationSession | None)  # not Any: the real return types
        assert_type(store.get_messages("s", limit=10), list[ConversationMessage])
        hits: list[tuple[ConversationMessage, float]] = store.search_messages("hello", session_id="s", limit=5)
        summary: SessionSummary = store.get_session_summary("s")
        result: BulkResult = store.import_messages([], batch_size=100)
        context: RehydrationResult = store.rehydrate("s", "hello")
        index: int | None = stored.message_index
        return (
            (summary.total_messages + result.inserted + (index or 0), hits[0][1], context.to_prompt())
            if found
            else (
                0,
                0.0,
                "",
            )
        )


async def async_use(dsn: str) -> tuple[int, float]:
    async with AsyncConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
        await store.create_session(ConversationSession(session_id="a", user_id="u"))
        messages: list[ConversationMessage] = await store.store_messages(
            [ConversationMessage(session_id="a", role="human", content="hi")]
        )
        hits = await store.search_messages("hi", user_id="u")
        assert_type(hits, list[tuple[ConversationMessage, float]])
        assert_type(await store.get_session("a"), ConversationSession | None)
        first: float = hits[0][1]
        summary: SessionSummary = await store.get_session_summary("a")
        return len(messages) + summary.total_messages, first


if __name__ == "__main__":
    import sys

    print(sync_use(sys.argv[1]), asyncio.run(async_use(sys.argv[1])))
