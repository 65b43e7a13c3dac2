"""Rehydration: sections, budget, de-duplication, expiry and scope, with the real model where it matters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from _helpers import speaker_turns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    SessionNotFoundError,
    SessionRelationship,
    UserPreference,
    ValidationError,
)
from ltst_memory.rehydrate import SECTIONS, merge
from ltst_memory.tokens import estimate_tokens

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)

OLD = [
    ("Caroline", "Last spring I adopted a beagle puppy and named him Biscuit."),
    ("Melanie", "How lovely! My kids have been begging for a pet."),
    ("Caroline", "I'm thinking about studying psychology next year."),
    ("Melanie", "I painted a lake sunrise last year, it's special to me."),
]
NEW = [
    ("Caroline", "Morning! The weather is finally warm."),
    ("Melanie", "Finally! We're heading to the beach this weekend."),
    ("Caroline", "Nice. I still need to buy a new leash."),
    ("Melanie", "The pet shop on Main Street has good ones."),
    ("Caroline", "Thanks, I'll go there after work."),
]


def _load(store, user_id: str = "u1", prefix: str = "") -> None:
    store.create_session(ConversationSession(session_id=f"{prefix}old", user_id=user_id, session_name="Spring chat"))
    store.create_session(ConversationSession(session_id=f"{prefix}new", user_id=user_id))
    store.store_messages(speaker_turns(f"{prefix}old", OLD, T0))
    store.store_messages(speaker_turns(f"{prefix}new", NEW, T0 + timedelta(days=60)))
    store.store_preference(UserPreference(user_id=user_id, preference_key="tone", preference_value="friendly"))
    store.store_context(
        ConversationContext(
            session_id=f"{prefix}new",
            context_type="project",
            context_key="errand",
            context_value="buying a leash for Biscuit",
            relevance_score=0.9,
        )
    )
    store.store_context(
        ConversationContext(
            session_id=f"{prefix}new",
            context_type="user_info",
            context_key="expired_secret",
            context_value="the old door code is 4711",
            relevance_score=1.0,
            expires_at=datetime.now(timezone.utc) - timedelta(minutes=1),
        )
    )


def test_old_fact_comes_back_for_a_paraphrased_question(semantic_store):
    _load(semantic_store)
    result = semantic_store.rehydrate("new", "What breed is Caroline's dog?", token_budget=600)
    assert any("beagle" in item.text for item in result.memories)
    assert all(item.source.startswith("message:") for item in result.memories)
    prompt = result.to_prompt()
    assert "beagle" in prompt and "## Recent conversation" in prompt
    assert "Thanks, I'll go there after work." in prompt


def test_sections_sources_scores_and_rendering(store):
    _load(store)
    store.create_session(
        ConversationSession(session_id="rel", user_id="u1", context_summary="Planned a dog-friendly trip")
    )
    store.store_relationship(
        SessionRelationship(source_session_id="new", target_session_id="rel", relationship_strength=0.8)
    )
    store.summarize_session("new", summary="Caroline and Melanie talk about the weekend and a leash.")
    result = store.rehydrate("new", "beagle Biscuit", token_budget=2_000)
    assert [i.source for i in result.preferences] == ["preference:tone"]
    assert [i.source for i in result.summary] == ["summary:new"]
    assert [i.source for i in result.context] == ["context:project/errand"]
    assert [i.source for i in result.related] == ["session:rel"]
    assert [i.message.message_index for i in result.recent] == [0, 1, 2, 3, 4]
    assert result.memories and result.memories[0].message.session_id == "old"
    for item in result.items():
        assert item.tokens == estimate_tokens(item.text) and isinstance(item.score, float)
    assert result.tokens_used == estimate_tokens(result.to_prompt()) <= 2_000
    messages = result.to_messages()
    assert messages[0]["role"] == "system" and "## Relevant memories" in messages[0]["content"]
    assert "## Recent conversation" not in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[-1]["content"] == NEW[-1][1]


def test_expired_context_never_appears(store):
    _load(store)
    result = store.rehydrate("new", "What is the door code?", token_budget=5_000)
    assert "4711" not in result.to_prompt()
    assert all("expired_secret" not in item.source for item in result.items())
    assert "4711" not in str(result.to_messages())


def test_no_turn_is_repeated_between_sections(store):
    _load(store)
    # the query matches recent turns best: they must stay recent turns, not repeat as memories
    result = store.rehydrate("new", "leash pet shop Main Street", token_budget=5_000, recent_turns=3)
    ids = [item.message.message_id for item in result.memories + result.recent]
    assert len(ids) == len(set(ids))
    sources = [item.source for item in result.items()]
    assert len(sources) == len(set(sources))
    texts = [item.content for item in result.memories + result.recent]
    assert len(texts) == len(set(texts))


def test_one_users_memory_never_appears_in_anothers_rehydration(store):
    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    store.store_preference(UserPreference(user_id="u2", preference_key="only_u2", preference_value=True))
    store.store_messages(speaker_turns("b-old", [("Zed", "Biscuit beagle leash psychology sunrise secret of u2")], T0))
    for query in ("beagle Biscuit", "psychology", "secret of u2", None):
        result = store.rehydrate("a-new", query, token_budget=5_000, memory_limit=100)
        assert all(item.message.user_id == "u1" for item in result.memories + result.recent)
        assert "u2" not in result.to_prompt() and "only_u2" not in result.to_prompt()


@pytest.mark.parametrize("budget", [1, 5, 20, 40, 80, 150, 300, 1_000])
def test_budget_is_never_exceeded(store, budget):
    _load(store)
    result = store.rehydrate("new", "beagle Biscuit leash", token_budget=budget)
    assert estimate_tokens(result.to_prompt()) <= budget
    assert result.tokens_used <= budget
    words = lambda text: len(text.split())  # noqa: E731 - a user-supplied counter
    result = store.rehydrate("new", "beagle Biscuit leash", token_budget=budget, count_tokens=words)
    assert words(result.to_prompt()) <= budget


def test_drop_order_follows_the_documented_priorities(store):
    _load(store)
    store.create_session(ConversationSession(session_id="rel", user_id="u1", context_summary="A related chat " * 5))
    store.store_relationship(SessionRelationship(source_session_id="new", target_session_id="rel"))
    full = store.rehydrate("new", "beagle Biscuit", token_budget=5_000)
    assert full.related and full.memories and len(full.recent) == 5
    budget = full.tokens_used - full.related[0].tokens - 2  # no room left for the related summary
    tight = store.rehydrate("new", "beagle Biscuit", token_budget=budget)
    assert not tight.related and tight.dropped.get("related") == 1
    assert len(tight.recent) == 5
    tighter = store.rehydrate("new", "beagle Biscuit", token_budget=60, min_recent_turns=2)
    # newest turns first, then preferences/context/memories, older recent turns only if room is left
    assert [i.message.message_index for i in tighter.recent][-2:] == [3, 4]
    assert not tighter.related


def test_query_defaults_to_the_latest_human_turn(store):
    _load(store)
    store.store_message(ConversationMessage(session_id="new", role="human", content="Where is Biscuit the beagle?"))
    result = store.rehydrate("new", token_budget=2_000)
    assert result.query == "Where is Biscuit the beagle?"
    assert any("beagle" in item.text for item in result.memories)


def test_single_session_and_errors(store):
    _load(store)
    result = store.rehydrate("new", "beagle", include_other_sessions=False, token_budget=2_000)
    assert all(item.message.session_id == "new" for item in result.memories)
    with pytest.raises(SessionNotFoundError):
        store.rehydrate("missing", "x")
    with pytest.raises(ValidationError):
        store.rehydrate("new", "x", token_budget=0)
    with pytest.raises(ValidationError):
        store.rehydrate("new", "x", recall_options={"user_id": "u2"})
    with pytest.raises(ValidationError):
        store.rehydrate("new", "x", count_tokens=42)


async def test_async_rehydrate(astore):
    await astore.create_session(ConversationSession(session_id="s", user_id="u"))
    await astore.store_messages(speaker_turns("s", OLD + NEW, T0))
    result = await astore.rehydrate("s", "beagle Biscuit", token_budget=300, recent_turns=2)
    assert result.recent and result.memories
    assert estimate_tokens(result.to_prompt()) <= 300


def _one_step_at_a_time(store, session_id: str, query: str):
    """What rehydrate gathers, read with the store's public calls one after the other, then merged."""
    session = store.get_session(session_id)
    recent = store.get_recent_messages(session_id, limit=10)
    memories = store.recall(
        query,
        user_id=session.user_id,
        session_id=session_id,
        scope="user",
        limit=20,
        exclude_message_ids=[m.message_id for m in recent],
        min_similarity=0.2,
    )
    summary = store.get_session_summary(session_id)
    related = []
    for other, link in store.get_related_sessions(session_id):
        text = store.get_session_summary(other.session_id).summary or other.context_summary
        if text:
            related.append((other, link.relationship_strength, text))
    return merge(
        session_id=session_id,
        user_id=session.user_id,
        query=query,
        token_budget=2000,
        preferences=[p for p in store.get_preferences(session.user_id) if not p.is_sensitive],
        summary=(summary.summary if summary else None) or session.context_summary,
        context=store.get_context(session_id),
        related=related,
        memories=memories,
        recent=recent,
    )


def _with_links(store) -> None:
    _load(store)
    store.update_session(ConversationSession(session_id="old", user_id="u1", context_summary="Spring: a new puppy."))
    store.store_relationship(SessionRelationship(source_session_id="new", target_session_id="old"))


def test_rehydrate_gives_what_its_reads_one_at_a_time_give(store):
    """The question embedded while the reads run, the reads in another order: the same prompt, memories
    and scores as the store's calls made one after the other and merged."""
    _with_links(store)
    for query in ("what is the puppy called?", "Where do I buy a leash for Biscuit?", "painting a sunrise"):
        result = store.rehydrate("new", query)
        expected = _one_step_at_a_time(store, "new", query)
        assert result.to_prompt() == expected.to_prompt()
        assert [(i.source, i.score) for i in result.items()] == [(i.source, i.score) for i in expected.items()]
        assert result.memories and result.related and result.context and result.preferences


async def test_async_rehydrate_gives_what_the_sync_store_gives(astore, database_dsn, hashing_embedder):
    from ltst_memory import ConversationStorage

    with ConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        _with_links(store)
        query = "Where do I buy a leash for Biscuit?"
        expected = _one_step_at_a_time(store, "new", query)
    result = await astore.rehydrate("new", query)
    assert result.to_prompt() == expected.to_prompt()
    assert [(i.source, i.score) for i in result.items()] == [(i.source, i.score) for i in expected.items()]


# --------------------------------------------------------------------------- pure merge


def _msg(i: int, text: str, session: str = "s") -> ConversationMessage:
    return ConversationMessage(session_id=session, role="human", content=text, message_index=i, message_id=i + 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.integers(min_value=1, max_value=400),
    texts=st.lists(st.text(min_size=1, max_size=120).filter(str.strip), min_size=0, max_size=12),
    n_recent=st.integers(min_value=0, max_value=6),
)
def test_merge_respects_any_budget_and_never_repeats(budget, texts, n_recent):
    messages = [_msg(i, t) for i, t in enumerate(texts)]
    recent = messages[len(messages) - min(n_recent, len(messages)) :]
    memories = [(m, 1.0 - i / 100) for i, m in enumerate(messages)]  # overlaps with recent on purpose
    result = merge(
        session_id="s",
        user_id="u",
        query="q",
        token_budget=budget,
        summary="summary text",
        memories=memories,
        recent=recent,
    )
    assert estimate_tokens(result.to_prompt()) <= budget
    ids = [i.message.message_id for i in result.memories + result.recent]
    assert len(ids) == len(set(ids))
    assert set(result.sections()) <= set(SECTIONS)
