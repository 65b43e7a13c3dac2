"""DSPy adapters: a real DSPy program with ``dspy.utils.DummyLM`` (no network) on a real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import dspy
import pytest
from _helpers import scratch_database
from dspy.utils import DummyLM
from ltst_memory.adapters.dspy import LTSTMemory, LTSTRetriever

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
)


@pytest.fixture(scope="module")
async def module_stores(pg_admin_dsn, template_db, hashing_embedder) -> AsyncIterator[tuple[Any, Any]]:
    """A sync and an async store on one fresh database for this module (tests use unique ids)."""
    with (
        scratch_database(pg_admin_dsn, template_db) as dsn,
        ConversationStorage(dsn, embedder=hashing_embedder) as sync,
    ):
        async with AsyncConversationStorage(dsn, embedder=hashing_embedder) as astore:
            yield sync, astore


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def seed(store: ConversationStorage, user: str, session: str, turns: list[tuple[str, str]]) -> None:
    store.create_session(ConversationSession(session_id=session, user_id=user))
    store.store_messages([ConversationMessage(session_id=session, role=r, content=c) for r, c in turns])


class QA(dspy.Signature):
    """Answer the question using the memory context and the conversation history."""

    question: str = dspy.InputField()
    context: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


def prompt_text(lm: DummyLM) -> str:
    return "\n".join(m["content"] for m in lm.history[-1]["messages"])


# --------------------------------------------------------------------------- retriever


def test_retriever_is_scoped_and_returns_passages_scores_messages(module_stores):
    store, _ = module_stores
    alice, bob = uid("alice"), uid("bob")
    seed(store, alice, uid("s"), [("human", "My favourite database is PostgreSQL"), ("ai", "Noted.")])
    seed(store, alice, uid("s"), [("human", "I walk my dog Rex every morning"), ("ai", "Nice.")])
    seed(store, bob, uid("s"), [("human", "My favourite database is SQLite"), ("ai", "Ok.")])
    retriever = LTSTRetriever(store, user_id=alice, k=3)
    prediction = retriever(query="favourite database")
    assert prediction.passages[0] == "My favourite database is PostgreSQL"
    assert len(prediction.passages) == len(prediction.scores) == len(prediction.messages) == 3
    assert all(m.user_id == alice for m in prediction.messages)
    assert "SQLite" not in " ".join(prediction.passages)
    assert prediction.scores == sorted(prediction.scores, reverse=True)
    assert len(retriever(query="dog", k=1).passages) == 1


def test_retriever_scoped_to_a_session(module_stores):
    store, _ = module_stores
    user, one, two = uid("u"), uid("s"), uid("s")
    seed(store, user, one, [("human", "the launch code word is tangerine")])
    seed(store, user, two, [("human", "the launch code word is mango")])
    passages = LTSTRetriever(store, user_id=user, session_id=two, k=5)(query="launch code word").passages
    assert passages == ["the launch code word is mango"]


async def test_retriever_async_paths(module_stores):
    store, astore = module_stores
    user, session = uid("u"), uid("s")
    seed(store, user, session, [("human", "I play the cello on Sundays"), ("ai", "Lovely.")])
    for retriever in (LTSTRetriever(astore, user_id=user), LTSTRetriever(store, user_id=user)):
        prediction = await retriever.acall(query="cello Sundays", k=1)
        assert prediction.passages == ["I play the cello on Sundays"]


def test_retriever_as_dspy_rm_and_retrieve(module_stores):
    store, _ = module_stores
    user = uid("u")
    seed(store, user, uid("s"), [("human", "My sister lives in Lisbon"), ("human", "I like green tea")])
    retriever = LTSTRetriever(store, user_id=user)
    with dspy.context(rm=retriever.as_rm()):
        passages = dspy.Retrieve(k=1)("where does my sister live").passages
    assert passages == ["My sister lives in Lisbon"]


def test_retriever_as_react_tool(module_stores):
    store, _ = module_stores
    user = uid("u")
    seed(store, user, uid("s"), [("human", "My car is a red Volvo")])
    tool = LTSTRetriever(store, user_id=user, k=1).as_tool()
    lm = DummyLM(
        [
            {"next_thought": "Look it up.", "next_tool_name": "search_memory", "next_tool_args": {"query": "car"}},
            {"next_thought": "Found it.", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "Memory says a red Volvo.", "answer": "A red Volvo"},
        ]
    )
    with dspy.context(lm=lm):
        result = dspy.ReAct("question -> answer", tools=[tool])(question="What car do I drive?")
    assert result.answer == "A red Volvo"
    assert "My car is a red Volvo" in str(result.trajectory["observation_0"])


def test_retriever_finds_a_paraphrase_with_the_real_model(semantic_store):
    seed(
        semantic_store,
        "u1",
        "old",
        [
            ("human", "Last summer I adopted a golden retriever puppy named Biscuit."),
            ("human", "I'm learning to cook Thai food."),
            ("human", "My office moved to the ninth floor."),
        ],
    )
    passages = LTSTRetriever(semantic_store, user_id="u1", k=1)(query="What is the name of my dog?").passages
    assert passages == ["Last summer I adopted a golden retriever puppy named Biscuit."]


# --------------------------------------------------------------------------- memory wrapper


def test_memory_fills_history_and_context_and_stores_turns(module_stores):
    store, _ = module_stores
    user, old, session = uid("u"), uid("old"), uid("chat")
    seed(store, user, old, [("human", "My allergy: I am allergic to peanuts"), ("ai", "I will remember.")])
    lm = DummyLM([{"answer": "Hello Ann!"}, {"answer": "No, you are allergic to peanuts."}])
    program = LTSTMemory(dspy.Predict(QA), store, session_id=session, user_id=user)
    assert (program.input_field, program.output_field) == ("question", "answer")
    assert (program.context_field, program.history_field) == ("context", "history")
    with dspy.context(lm=lm):
        assert program(question="Hi, I am Ann.").answer == "Hello Ann!"
        assert program(question="Can I eat peanut allergy snacks?").answer == "No, you are allergic to peanuts."
    prompt = prompt_text(lm)
    # the previous turn comes back as a signature-keyed History turn (user/assistant messages) ...
    messages = lm.history[-1]["messages"]
    assert any(m["role"] == "user" and "Hi, I am Ann." in m["content"] for m in messages[1:-1])
    assert any(m["role"] == "assistant" and "Hello Ann!" in m["content"] for m in messages[1:-1])
    # ... and the memory of the older session is rehydrated into the context field
    assert "allergic to peanuts" in prompt
    stored = store.get_messages(session)
    assert [(m.role, m.content) for m in stored] == [
        ("human", "Hi, I am Ann."),
        ("ai", "Hello Ann!"),
        ("human", "Can I eat peanut allergy snacks?"),
        ("ai", "No, you are allergic to peanuts."),
    ]
    assert store.get_session(session).user_id == user


def test_memory_with_chain_of_thought_and_no_context_field(module_stores):
    store, _ = module_stores
    session = uid("cot")
    program = LTSTMemory(dspy.ChainOfThought("question -> answer"), store, session_id=session, unscoped=True)
    assert (program.input_field, program.output_field, program.context_field) == ("question", "answer", None)
    with dspy.context(lm=DummyLM([{"reasoning": "2+2", "answer": "4"}])):
        assert program(question="2+2?").answer == "4"
    assert [m.content for m in store.get_messages(session)] == ["2+2?", "4"]
    assert store.get_session(session).user_id == "default"


def test_memory_refuses_another_users_session(module_stores):
    store, _ = module_stores
    session = uid("s")
    seed(store, "owner", session, [("human", "private")])
    with pytest.raises(AccessDeniedError):
        LTSTMemory(dspy.Predict(QA), store, session_id=session, user_id="intruder")


async def test_memory_async_with_an_async_store(module_stores):
    store, astore = module_stores
    session = uid("async")
    program = LTSTMemory(dspy.Predict(QA), astore, session_id=session, user_id="u-async")
    lm = DummyLM([{"answer": "first"}, {"answer": "second"}])
    with dspy.context(lm=lm):
        assert (await program.acall(question="one")).answer == "first"
        assert (await program.acall(question="two")).answer == "second"
    assert any(m["role"] == "assistant" and "first" in m["content"] for m in lm.history[-1]["messages"])
    assert [m.content for m in store.get_messages(session)] == ["one", "first", "two", "second"]


def test_modules_deepcopy_share_the_store(module_stores):
    store, _ = module_stores
    program = LTSTMemory(dspy.Predict(QA), store, session_id=uid("copy"), unscoped=True)
    clone = program.deepcopy()
    assert clone._stores.sync is store and clone.program is not program.program
