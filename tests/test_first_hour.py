"""What a new user meets in the first hour (issue 17): get-or-create sessions, warm-up, imported
ChatGPT branches in rehydration, the relevance floor of rehydrated memories, model mismatch errors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
)
from ltst_memory.errors import EmbeddingDimensionError, SessionExistsError
from ltst_memory.io import import_chatgpt

DATA = Path(__file__).parent / "data"
LISBON = "chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000001"


class CountingEmbedder(HashingEmbedder):
    """A hashing embedder that counts its calls."""

    def __init__(self) -> None:
        super().__init__(384)
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return super().embed(texts)


def test_get_or_create_session_twice_and_for_another_user(store: ConversationStorage) -> None:
    first = store.get_or_create_session(ConversationSession("s1", "u1", "Dev"))
    again = store.get_or_create_session(ConversationSession("s1", "u1", "another name"))
    assert first.session_name == again.session_name == "Dev" and again.created_at == first.created_at
    assert [s.session_id for s in store.get_user_sessions("u1")] == ["s1"]
    with pytest.raises(SessionExistsError):
        store.get_or_create_session(ConversationSession("s1", "u2"))
    assert store.get_session("s1").user_id == "u1"


async def test_get_or_create_session_async(astore: AsyncConversationStorage) -> None:
    first = await astore.get_or_create_session(ConversationSession("a1", "u1", "Dev"))
    again = await astore.get_or_create_session(ConversationSession("a1", "u1"))
    assert again.session_name == "Dev" and again.created_at == first.created_at
    with pytest.raises(SessionExistsError):
        await astore.get_or_create_session(ConversationSession("a1", "u2"))


def test_the_readme_five_lines_run_twice(database_dsn: str, hashing_embedder: HashingEmbedder) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("## Five lines", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("ConversationStorage()", "ConversationStorage(DSN, embedder=EMBEDDER)")
    for _ in range(2):
        exec(code, {"DSN": database_dsn, "EMBEDDER": hashing_embedder, "print": lambda *a: None})
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as storage:
        assert len(storage.get_messages("s1")) == 2


def test_warm_loads_the_model_when_the_store_opens(database_dsn: str) -> None:
    cold = CountingEmbedder()
    with ConversationStorage(database_dsn, embedder=cold):
        assert cold.calls == 0
    warm = CountingEmbedder()
    with ConversationStorage(database_dsn, embedder=warm, warm=True):
        assert warm.calls == 1


async def test_warm_async(database_dsn: str) -> None:
    warm = CountingEmbedder()
    async with AsyncConversationStorage(database_dsn, embedder=warm, warm=True):
        assert warm.calls == 1


def test_chatgpt_abandoned_branches_stay_searchable_but_out_of_recent_turns(store: ConversationStorage) -> None:
    import_chatgpt(store, DATA / "chatgpt_conversations.json", "alice")
    messages = store.get_messages(LISBON)
    off = [m for m in messages if m.metadata.get("off_branch")]
    kept = [m for m in messages if not m.metadata.get("off_branch")]
    assert off and kept and all(m.metadata["chatgpt"]["on_current_branch"] is False for m in off)
    result = store.rehydrate(LISBON, "What about restaurants?", recent_turns=20)
    recent_ids = [item.message.message_id for item in result.recent]
    assert recent_ids == [m.message_id for m in kept][-len(recent_ids) :]
    assert not {m.message_id for m in off} & set(recent_ids)
    roles = [item.role for item in result.recent]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles  # no two AI replies in a row
    hits = store.search_messages(off[0].content, session_id=LISBON, limit=20)
    assert off[0].message_id in {m.message_id for m, _ in hits}  # still searchable


def test_recent_turns_skip_branches_marked_by_older_chatgpt_imports(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("old", "alice"))
    store.store_messages(
        [
            ConversationMessage("old", "human", "Tell me a joke."),
            ConversationMessage("old", "ai", "Abandoned.", metadata={"chatgpt": {"on_current_branch": False}}),
            ConversationMessage("old", "ai", "The answer the user kept."),
        ]
    )
    recent = store.rehydrate("old", "joke").recent
    assert [item.content for item in recent] == ["Tell me a joke.", "The answer the user kept."]


def test_rehydrate_leaves_spare_budget_empty_instead_of_unrelated_memories(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("trip", "alice", "Kyoto"))
    store.create_session(ConversationSession("code", "alice", "Python"))
    store.store_messages(
        [
            ConversationMessage("trip", "human", "We visited the Kinkaku-ji temple in Kyoto."),
            ConversationMessage("trip", "ai", "The golden pavilion is lovely in autumn."),
            ConversationMessage("code", "human", "How do I cancel an asyncio task?"),
            ConversationMessage("code", "ai", "Call task.cancel() and await it, catching CancelledError."),
        ]
    )
    store.create_session(ConversationSession("now", "alice"))
    result = store.rehydrate("now", "Which temple did we see?", token_budget=2000)
    sources = {item.message.session_id for item in result.memories if item.message}
    assert sources == {"trip"}
    unfloored = store.rehydrate("now", "Which temple did we see?", token_budget=2000, memory_min_similarity=None)
    assert {item.message.session_id for item in unfloored.memories if item.message} == {"trip", "code"}


def test_a_model_mismatch_of_equal_dimension_says_so(database_dsn: str) -> None:
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384, model_name="model-a")) as store:
        store.create_session(ConversationSession("s1", "u1"))
        store.store_message(ConversationMessage("s1", "human", "hello"))
    with pytest.raises(EmbeddingDimensionError) as caught:
        ConversationStorage(database_dsn, embedder=HashingEmbedder(384, model_name="model-b"))
    message = str(caught.value)
    assert "'model-a'" in message and "'model-b'" in message and "both have 384 dimensions" in message
