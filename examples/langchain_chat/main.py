"""A LangChain chat loop whose history persists in ltst-memory, with a retriever over project notes.

The chat history is an ``LTSTChatMessageHistory`` (every message type kept exactly, any session id);
the notes live in an ``LTSTVectorStore`` and reach the model through ``as_retriever()``. Halfway the
script closes the database and opens it again: the conversation continues from what was stored.

    python examples/langchain_chat/main.py                 # offline: a scripted chat model
    python examples/langchain_chat/main.py --interactive   # type your own messages (empty line ends)
    LTST_LM=openai/gpt-4o-mini python examples/langchain_chat/main.py   # a real model via LiteLLM

The database is LTST_DATABASE_URL / DATABASE_URL, else the embedded PostgreSQL in LTST_DATA_DIR.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from ltst_memory.adapters.langchain import LTSTChatMessageHistory, LTSTVectorStore

from ltst_memory import ConversationStorage, HashingEmbedder

USER = "example-langchain-user"
NOTES = [
    "The compiler project targets RISC-V and is written in Rust.",
    "Code review happens on Tuesdays; the release branch freezes on the 20th.",
    "The team's CI runs on self-hosted runners in the Lisbon office.",
]


class ScriptedChat(BaseChatModel):
    """An offline stand-in for an LLM: answers from the messages it is given (history and notes)."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply(messages)))])

    @staticmethod
    def reply(messages: list[BaseMessage]) -> str:
        said = " ".join(m.text for m in messages if isinstance(m, HumanMessage))
        question = messages[-1].text.lower()
        name = re.search(r"my name is (\w+)", said, re.I)
        work = re.search(r"I work on (an? [\w ]+?)[.,]", said, re.I)
        if "my name" in question and "what" in question:
            known = f"You are {name.group(1) if name else 'someone I have not met'}"
            return known + (f", and you work on {work.group(1)}." if work else ".")
        if "language" in question or "written" in question:
            notes = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
            found = re.search(r"written in (\w+)", notes)
            return f"According to the project notes it is written in {found.group(1)}." if found else "I don't know."
        introduced = re.search(r"my name is (\w+)", messages[-1].text, re.I)
        return f"Nice to meet you, {introduced.group(1)}!" if introduced else "Noted, I'll keep that in mind."


class LiteLLMChat(BaseChatModel):
    """Any model LiteLLM knows (``LTST_LM``, e.g. ``openai/gpt-4o-mini``); litellm comes with dspy."""

    model: str

    @property
    def _llm_type(self) -> str:
        return "litellm"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        import litellm

        roles = {"human": "user", "ai": "assistant", "system": "system"}
        payload = [{"role": roles.get(m.type, "user"), "content": m.text} for m in messages]
        response = litellm.completion(model=self.model, messages=payload, stop=stop)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=response.choices[0].message.content))])


def chat_turn(model: BaseChatModel, history: LTSTChatMessageHistory, notes: Any, text: str) -> str:
    context = "\n".join(d.page_content for d in notes.invoke(text))
    system = SystemMessage(content=f"You are a helpful assistant. Project notes:\n{context}")
    question = HumanMessage(content=text)
    answer = model.invoke([system, *history.messages, question])
    history.add_messages([question, answer])  # one transaction
    return str(answer.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactive", action="store_true", help="read your messages from stdin")
    parser.add_argument("--hashing-embedder", action="store_true", help="fast test embedder instead of MiniLM")
    args = parser.parse_args()

    model_name = os.environ.get("LTST_LM")
    model: BaseChatModel = LiteLLMChat(model=model_name) if model_name else ScriptedChat()
    print(f"LM: {model_name or 'scripted offline chat model (set LTST_LM to use a real model)'}")
    embedder = HashingEmbedder(384) if args.hashing_embedder else None
    # The test embedder's vectors do not compare with MiniLM's (`ltst demo`'s): without a configured
    # database, keep them in an embedded database of their own.
    data_dir = Path(tempfile.gettempdir(), "ltst-examples-hashing-bow") if args.hashing_embedder else None
    session = f"langchain-chat-{uuid.uuid4().hex[:8]}"  # any string works as a session id

    with ConversationStorage(embedder=embedder, data_dir=data_dir) as storage:
        notes = LTSTVectorStore(storage, user_id=USER, collection_name=f"notes-{session}")
        notes.add_texts(NOTES, [{"source": "wiki"} for _ in NOTES])
        history = LTSTChatMessageHistory(storage, session, user_id=USER)
        if args.interactive:
            while text := input("you> ").strip():
                print(f"bot> {chat_turn(model, history, notes.as_retriever(k=2), text)}")
            return
        for text in ("Hi, my name is Priya and I work on a compiler.", "I prefer short answers."):
            print(f"you> {text}\nbot> {chat_turn(model, history, notes.as_retriever(k=2), text)}")

    print("\n-- the process keeps nothing: close the database, open it again --\n")
    with ConversationStorage(embedder=embedder, data_dir=data_dir) as storage:
        history = LTSTChatMessageHistory(storage, session, user_id=USER)  # the stored session is found
        notes = LTSTVectorStore(storage, user_id=USER, collection_name=f"notes-{session}")
        print(f"restored {len(history.messages)} messages of {session!r} (user {history.user_id})")
        for text in ("What's my name, and what do I work on?", "Which language is the project written in?"):
            print(f"you> {text}\nbot> {chat_turn(model, history, notes.as_retriever(k=2), text)}")
        hits = storage.search_messages("compiler", session_id=session, limit=1)
        print(f"\nsearch 'compiler' in this chat: {hits[0][0].content!r}")


if __name__ == "__main__":
    main()
