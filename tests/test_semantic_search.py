"""Semantic search with the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import pytest

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, ValidationError

FACTS = [
    ("human", "I adopted a golden retriever puppy named Biscuit last spring."),
    ("ai", "Congratulations! Golden retrievers are wonderful family dogs."),
    ("human", "My favourite programming language is Rust because of its borrow checker."),
    ("human", "We are flying to Tokyo in October for our anniversary."),
    ("ai", "October is a great time to visit Japan; the autumn leaves are beautiful."),
    ("human", "I can't eat peanuts, I'm severely allergic."),
]


@pytest.fixture
def memory(semantic_store: ConversationStorage) -> ConversationStorage:
    semantic_store.create_session(ConversationSession("old", "alice"))
    semantic_store.create_session(ConversationSession("new", "alice"))
    semantic_store.create_session(ConversationSession("bob-s", "bob"))
    semantic_store.store_messages([ConversationMessage("old", r, c) for r, c in FACTS])
    semantic_store.store_messages([ConversationMessage("new", "human", "Can you suggest a snack for the trip?")])
    semantic_store.store_messages([ConversationMessage("bob-s", "human", "My dog is a poodle called Max.")])
    return semantic_store


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What kind of pet do I have?", "golden retriever puppy"),
        ("Which food allergies do I have?", "allergic"),
        ("When is our vacation to Japan?", "Tokyo in October"),
        ("Which coding language do I like best?", "Rust"),
    ],
)
def test_paraphrased_question_finds_the_fact(memory: ConversationStorage, question: str, expected: str) -> None:
    results = memory.search_messages(question, session_id="old", limit=3)
    assert expected in results[0][0].content
    sims = [s for _, s in results]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)


def test_user_scope_spans_sessions_and_excludes_other_users(memory: ConversationStorage) -> None:
    results = memory.search_messages("tell me about the dog", user_id="alice", limit=10)
    assert results[0][0].session_id == "old" and "golden retriever" in results[0][0].content.lower()
    assert {m.user_id for m, _ in results} == {"alice"}
    assert {m.session_id for m, _ in results} == {"old", "new"}
    assert all("poodle" not in m.content for m, _ in results)


def test_threshold_filters_weak_matches(memory: ConversationStorage) -> None:
    loose = memory.search_messages("golden retriever dog", session_id="old", limit=10)
    strict = memory.search_messages("golden retriever dog", session_id="old", limit=10, threshold=0.5)
    assert len(loose) == len(FACTS)  # no threshold: the `limit` nearest, however weak
    assert 0 < len(strict) < len(loose)
    assert all(s >= 0.5 for _, s in strict)


def test_scoped_search_returns_every_row_when_fewer_than_limit_exist(memory: ConversationStorage) -> None:
    # many other rows in the table must not hide the few of this session (iterative index scans)
    memory.create_session(ConversationSession("bulk", "carol"))
    memory.store_messages([ConversationMessage("bulk", "human", f"filler message number {i}") for i in range(300)])
    assert len(memory.search_messages("anything", session_id="new", limit=10)) == 1
    assert len(memory.search_messages("anything", session_id="old", limit=10)) == len(FACTS)


def test_search_needs_a_query(memory: ConversationStorage) -> None:
    with pytest.raises(ValidationError):
        memory.search_messages("   ", user_id="alice")


def test_exact_and_index_paths_agree(memory: ConversationStorage, database_dsn: str) -> None:
    from ltst_memory import Settings

    settings = Settings.from_env(dsn=database_dsn, exact_search_max_rows=0)  # every scope via HNSW
    with ConversationStorage(settings=settings, embedder=memory.embedder) as ann:
        for kwargs in ({"session_id": "old"}, {"user_id": "alice"}, {"user_id": "alice", "session_id": "old"}):
            exact = memory.search_messages("pets and travel plans", limit=5, **kwargs)  # type: ignore[arg-type]
            approx = ann.search_messages("pets and travel plans", limit=5, **kwargs)  # type: ignore[arg-type]
            assert [m.message_id for m, _ in exact] == [m.message_id for m, _ in approx]
            assert [round(s, 5) for _, s in exact] == [round(s, 5) for _, s in approx]


def test_user_scope_size_is_the_user_message_count(store: ConversationStorage) -> None:
    """search_messages and recall pick the exact or the index path by the user's message count, read
    from one trigger-maintained row; it stays equal to a count of the rows through writes and deletes."""
    from ltst_memory._queries import SCOPE_SIZE_OF_USER

    def sizes() -> tuple[int, int]:
        with store.pool.connection() as conn:
            kept = conn.execute(SCOPE_SIZE_OF_USER, {"user_id": "dana"}).fetchone()
            counted = conn.execute("SELECT count(*) FROM conversation_messages WHERE user_id = 'dana'").fetchone()
        assert kept is not None and counted is not None
        return int(kept[0]), int(counted[0])

    assert sizes() == (0, 0)
    for s in ("a", "b"):
        store.create_session(ConversationSession(s, "dana"))
        store.store_messages([ConversationMessage(s, "human", f"{s} message {i}") for i in range(7)])
    store.store_message(ConversationMessage("a", "ai", "🙂"))  # no words: still a message
    assert sizes() == (15, 15)
    store.delete_session("a")
    assert sizes() == (7, 7)
