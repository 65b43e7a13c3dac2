"""Reading messages back: every field as it was stored, with its type, from both stores.

``get_messages`` and ``get_recent_messages`` build their ConversationMessage objects straight from the
row values (``_queries.message_row``); these tests hold them to what ``store_message`` returned.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

from ltst_memory import AsyncConversationStorage, ConversationMessage, ConversationSession, ConversationStorage

FIELDS = [f.name for f in dataclasses.fields(ConversationMessage)]
TYPES: dict[str, tuple[type, ...]] = {
    "session_id": (str,),
    "role": (str,),
    "content": (str,),
    "message_type": (str,),
    "message_index": (int,),
    "parent_message_id": (int, type(None)),
    "metadata": (dict,),
    "embedding": (type(None),),  # not read unless asked
    "relevance_score": (float,),
    "is_context_message": (bool,),
    "timestamp": (datetime,),
    "message_id": (int,),
    "user_id": (str,),
    "message_uuid": (str,),
}
NESTED = {
    "speaker": "Zoë",
    "nested": {"emoji": "🦊", "list": [1, 2.5, None, True, "日本語"], "deep": {"a": {"b": {"c": []}}}},
    "empty": {},
    "quote": 'say "hi"\\n',
}


def _messages(first_id: int | None = None) -> list[ConversationMessage]:
    india = timezone(timedelta(hours=5, minutes=30))
    return [
        ConversationMessage("s1", "human", "plain question"),
        ConversationMessage(
            "s1",
            "assistant",
            "an answer — with ünïcode",
            message_type="tool_result",
            parent_message_id=first_id,
            metadata=NESTED,
            relevance_score=0.25,
            is_context_message=True,
            timestamp=datetime(2023, 5, 8, 13, 56, 7, 123456, tzinfo=india),
            message_uuid="8F14E45F-CEEA-467A-9575-4E6B2B5C7A11",
        ),
        ConversationMessage("s1", "system", "be brief", metadata={"n": 0}),
    ]


def _assert_read_as_stored(read: list[ConversationMessage], stored: list[ConversationMessage]) -> None:
    """``read`` equals ``stored`` (what the store returned), field by field and type by type."""
    assert len(read) == len(stored)
    for got, want in zip(read, stored, strict=True):
        assert type(got) is ConversationMessage
        for name in FIELDS:
            value = getattr(got, name)
            assert type(value) in TYPES[name], (name, value)
            if name != "embedding":
                assert value == getattr(want, name), name
        assert got.timestamp is not None and got.timestamp.utcoffset() is not None  # timezone-aware
    by_content: dict[str, Any] = {m.content: m for m in read}
    if "an answer — with ünïcode" in by_content:
        answer = by_content["an answer — with ünïcode"]
        assert answer.metadata == NESTED and answer.message_uuid == "8f14e45f-ceea-467a-9575-4e6b2b5c7a11"
        assert answer.timestamp == datetime(2023, 5, 8, 8, 26, 7, 123456, tzinfo=timezone.utc)
        assert answer.role == "ai" and answer.parent_message_id is not None
    if "plain question" in by_content:
        assert by_content["plain question"].parent_message_id is None
        assert by_content["plain question"].metadata == {}


def _store_all(store: ConversationStorage) -> list[ConversationMessage]:
    store.create_session(ConversationSession("s1", "u1"))
    first = store.store_message(_messages()[0])
    return [first, *store.store_messages(_messages(first.message_id)[1:])]


def test_reads_return_every_field_as_stored(store: ConversationStorage) -> None:
    stored = _store_all(store)
    _assert_read_as_stored(store.get_messages("s1"), stored)
    _assert_read_as_stored(store.get_recent_messages("s1", limit=50), stored)
    _assert_read_as_stored(store.get_recent_messages("s1", limit=2), stored[1:])
    _assert_read_as_stored(store.get_messages("s1", limit=1, offset=1), stored[1:2])
    _assert_read_as_stored(store.for_user("u1").get_recent_messages("s1"), stored)  # (in a transaction)


def test_each_read_message_owns_its_metadata(store: ConversationStorage) -> None:
    _store_all(store)
    read = store.get_messages("s1")
    read[0].metadata["added"] = True  # metadata {}: a dict of its own, not one shared by every row
    read[1].metadata["nested"]["list"].append("x")
    again = store.get_messages("s1")
    assert again[0].metadata == {} and again[1].metadata == NESTED
    assert read[0].metadata is not again[0].metadata


def test_search_and_recall_return_messages_as_stored(store: ConversationStorage) -> None:
    stored = _store_all(store)
    by_id = {m.message_id: m for m in stored}
    for scope in ({"session_id": "s1"}, {"user_id": "u1"}, {}):
        hits = store.search_messages("an answer with unicode", limit=3, **scope)  # type: ignore[arg-type]
        assert len(hits) == 3 and all(type(similarity) is float for _, similarity in hits)
        _assert_read_as_stored([m for m, _ in hits], [by_id[m.message_id] for m, _ in hits])
    hits = store.recall("be brief", session_id="s1", scope="session", limit=3, expand_neighbors=1)
    assert {m.message_id for m, _ in hits} == set(by_id)  # the hit and its neighbours
    _assert_read_as_stored([m for m, _ in hits], [by_id[m.message_id] for m, _ in hits])


async def test_async_reads_return_every_field_as_stored(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession("s1", "u1"))
    first = await astore.store_message(_messages()[0])
    stored = [first, *await astore.store_messages(_messages(first.message_id)[1:])]
    _assert_read_as_stored(await astore.get_messages("s1"), stored)
    _assert_read_as_stored(await astore.get_recent_messages("s1", limit=50), stored)
    _assert_read_as_stored(await astore.get_recent_messages("s1", limit=1), stored[2:])
    _assert_read_as_stored(await astore.for_user("u1").get_messages("s1"), stored)
