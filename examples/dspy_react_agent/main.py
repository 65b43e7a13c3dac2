"""A DSPy ReAct agent with long-term memory tools (search_memory, remember) on ltst-memory.

Two sessions of one user: in the first the user states facts and the agent stores them; in the
second, a fresh conversation, the agent searches its memory to answer. The conversation itself is
kept too (every turn is a stored message), so it is searchable later.

    python examples/dspy_react_agent/main.py                  # offline: a scripted LM (dspy DummyLM)
    LTST_LM=openai/gpt-4o-mini python examples/dspy_react_agent/main.py   # any model LiteLLM knows

The database is LTST_DATABASE_URL / DATABASE_URL, else the embedded PostgreSQL in LTST_DATA_DIR.
``--hashing-embedder`` uses the fast word-hashing embedder instead of all-MiniLM-L6-v2 (tests).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

import dspy
from ltst_memory.adapters.dspy import LTSTRetriever

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder

USER = "example-dspy-user"


def scripted_lm() -> dspy.LM:
    """The answers a model would give in this demo, in order (ReAct steps, then the final extraction)."""
    from dspy.utils import DummyLM

    return DummyLM(
        [
            # session 1: "I'm allergic to peanuts and my sister Ana lives in Porto."
            {"next_thought": "Store both facts.", "next_tool_name": "remember",
             "next_tool_args": {"fact": "The user is allergic to peanuts."}},
            {"next_thought": "And the second.", "next_tool_name": "remember",
             "next_tool_args": {"fact": "The user's sister Ana lives in Porto."}},
            {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "Both facts are stored.", "answer": "Got it, I'll remember both."},
            # session 2: "Where could I visit my sister, and what snack should I avoid on the way?"
            {"next_thought": "Search memory for the sister.", "next_tool_name": "search_memory",
             "next_tool_args": {"query": "Where does my sister live?"}},
            {"next_thought": "Search memory for allergies.", "next_tool_name": "search_memory",
             "next_tool_args": {"query": "food allergy"}},
            {"next_thought": "I know enough.", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "Memory: Ana lives in Porto; the user is allergic to peanuts.",
             "answer": "Visit Ana in Porto, and skip anything with peanuts on the way."},
        ]
    )  # fmt: skip


def make_tools(storage: ConversationStorage, memory_session: str) -> list[dspy.Tool]:
    retriever = LTSTRetriever(storage, user_id=USER, k=3)

    def remember(fact: str) -> str:
        """Store a fact about the user in long-term memory."""
        storage.store_message(
            ConversationMessage(session_id=memory_session, role="system", content=fact, message_type="fact")
        )
        return f"stored: {fact}"

    return [retriever.as_tool("search_memory"), dspy.Tool(remember)]


def run_session(storage: ConversationStorage, agent: dspy.Module, session_id: str, question: str) -> str:
    storage.create_session(ConversationSession(session_id=session_id, user_id=USER))
    result = agent(question=question)
    storage.store_messages(
        [
            ConversationMessage(session_id=session_id, role="human", content=question),
            ConversationMessage(session_id=session_id, role="ai", content=result.answer),
        ]
    )
    for step in range(len([k for k in result.trajectory if k.startswith("tool_name_")])):
        tool, args = result.trajectory[f"tool_name_{step}"], result.trajectory[f"tool_args_{step}"]
        print(f"  tool {tool}({args}) -> {str(result.trajectory[f'observation_{step}'])[:120]}")
    return str(result.answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashing-embedder", action="store_true", help="fast test embedder instead of MiniLM")
    args = parser.parse_args()

    model = os.environ.get("LTST_LM")
    lm = dspy.LM(model) if model else scripted_lm()
    print(f"LM: {model or 'scripted offline LM (set LTST_LM to use a real model)'}")
    embedder = HashingEmbedder(384) if args.hashing_embedder else None
    # The test embedder's vectors do not compare with MiniLM's (`ltst demo`'s): without a configured
    # database, keep them in an embedded database of their own.
    data_dir = Path(tempfile.gettempdir(), "ltst-examples-hashing-bow") if args.hashing_embedder else None
    run = uuid.uuid4().hex[:8]
    with ConversationStorage(embedder=embedder, data_dir=data_dir) as storage, dspy.context(lm=lm):
        memory_session = f"facts-{run}"
        storage.create_session(ConversationSession(session_id=memory_session, user_id=USER, session_type="memory"))
        agent = dspy.ReAct("question -> answer", tools=make_tools(storage, memory_session), max_iters=5)

        question = "I'm allergic to peanuts and my sister Ana lives in Porto."
        print(f"\n[session 1] user: {question}")
        print(f"[session 1] agent: {run_session(storage, agent, f'chat-1-{run}', question)}")

        question = "Where could I visit my sister, and what snack should I avoid on the way?"
        print(f"\n[session 2] user: {question}")
        print(f"[session 2] agent: {run_session(storage, agent, f'chat-2-{run}', question)}")

        hits = LTSTRetriever(storage, user_id=USER, k=2)(query="peanuts").passages
        print(f"\nmemory search 'peanuts' across all sessions: {hits}")


if __name__ == "__main__":
    main()
