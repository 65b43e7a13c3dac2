"""A LangGraph agent with long-term memory in ltst-memory (``LTSTStore``) across conversation threads.

Short-term state (the messages of one thread) lives in LangGraph's checkpointer; long-term memory
(facts about the user) lives in the store, namespaced per user and searched by meaning, so a new
thread of the same user starts with what earlier threads learned, and another user sees none of it.

    python examples/langgraph_agent/main.py                  # offline: a scripted chat model
    LTST_LM=openai/gpt-4o-mini python examples/langgraph_agent/main.py   # a real model via LiteLLM

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
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.base import BaseStore
from ltst_memory.adapters.langgraph import LTSTStore

from ltst_memory import ConversationStorage, HashingEmbedder


class ScriptedChat(BaseChatModel):
    """An offline stand-in for an LLM that answers from the memories in its system prompt."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        memory = messages[0].text if isinstance(messages[0], SystemMessage) else ""
        question = messages[-1].text.lower()
        if question.startswith("remember"):
            reply = "Got it, I'll remember that."
        elif "dinner" in question:
            diet = "a vegetarian place" if "vegetarian" in memory else "a place"
            city = re.search(r"live in (\w+)", memory)
            reply = f"How about {diet} in {city.group(1)}?" if city else f"How about {diet} near you?"
        else:
            reply = "Tell me more."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


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


def build_graph(model: BaseChatModel, store: LTSTStore) -> Any:
    def agent(state: MessagesState, config: RunnableConfig, *, store: BaseStore) -> dict[str, Any]:
        namespace = ("memories", config["configurable"]["user_id"])
        text = state["messages"][-1].text
        if text.lower().startswith("remember"):  # the user asks to remember: a long-term memory
            store.put(namespace, str(uuid.uuid4()), {"text": re.sub(r"(?i)^remember( that)?\s*", "", text)})
        memories = [item.value["text"] for item in store.search(namespace, query=text, limit=3)]
        system = SystemMessage(
            content="You are a helpful assistant. What you know about the user:\n- " + "\n- ".join(memories)
        )
        return {"messages": [model.invoke([system, *state["messages"]])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    return builder.compile(checkpointer=InMemorySaver(), store=store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashing-embedder", action="store_true", help="fast test embedder instead of MiniLM")
    args = parser.parse_args()

    model_name = os.environ.get("LTST_LM")
    model: BaseChatModel = LiteLLMChat(model=model_name) if model_name else ScriptedChat()
    print(f"LM: {model_name or 'scripted offline chat model (set LTST_LM to use a real model)'}")
    embedder = HashingEmbedder(384) if args.hashing_embedder else None
    # The test embedder's vectors do not compare with MiniLM's (`ltst demo`'s): without a configured
    # database, keep them in an embedded database of their own.
    data_dir = Path(tempfile.gettempdir(), "ltst-examples-hashing-bow") if args.hashing_embedder else None
    run = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{run}", f"bob-{run}"

    with ConversationStorage(embedder=embedder, data_dir=data_dir) as storage:
        # one store per user (scoped: it sees only that user's items); semantic search over the "text"
        # field, embedded by the store's own model
        stores = {
            user: LTSTStore(storage, user_id=user, index={"fields": ["text"]}, ttl={"default_ttl": 60 * 24 * 365})
            for user in (alice, bob)
        }
        graphs = {user: build_graph(model, store) for user, store in stores.items()}

        def say(user: str, thread: str, text: str) -> None:
            config = {"configurable": {"thread_id": f"{thread}-{run}", "user_id": user}}
            reply = graphs[user].invoke({"messages": [{"role": "user", "content": text}]}, config)["messages"][-1]
            print(
                f"[{user.split('-')[0]} / {thread}] user: {text}\n[{user.split('-')[0]} / {thread}] agent: {reply.text}"
            )

        say(alice, "thread-1", "Remember that I am vegetarian and I live in Oslo.")
        say(alice, "thread-2", "Can you suggest a place for dinner tonight?")  # a new thread: memory carries over
        say(bob, "thread-3", "Can you suggest a place for dinner tonight?")  # another user: none of Alice's memory
        print(f"\nlong-term memory namespaces of alice: {stores[alice].list_namespaces(prefix=('memories',))}")


if __name__ == "__main__":
    main()
