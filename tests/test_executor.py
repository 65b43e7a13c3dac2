"""The executors' rule: no embedding and no callback of the user's while an operation holds a pool
connection or has a transaction open (ltst_memory/_ops.py)."""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    Settings,
)
from ltst_memory._ops import Call, Embed, Query
from ltst_memory.errors import EmbeddingError
from ltst_memory.io import import_jsonl


def _checked_out(pool: Any) -> int:
    stats = pool.get_stats()
    return int(stats["pool_size"]) - int(stats["pool_available"])


class WatchingEmbedder(HashingEmbedder):
    """Records how many connections of ``pool`` were checked out during each embedding call."""

    def __init__(self) -> None:
        super().__init__(384)
        self.pool: Any = None
        self.held: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.pool is not None:
            self.held.append(_checked_out(self.pool))
        return super().embed(texts)


@pytest.fixture
def one_connection_store(database_dsn: str) -> Iterator[ConversationStorage]:
    """A store whose pool holds ONE connection (a callback that needs it would wait for pool_timeout)."""
    settings = Settings.from_env(dsn=database_dsn, pool_max_size=1, pool_timeout=2.0)
    with ConversationStorage(settings=settings, embedder=WatchingEmbedder()) as s:
        s.embedder.pool = s.pool  # type: ignore[attr-defined]
        s.create_session(ConversationSession(session_id="s", user_id="u"))
        s.store_messages(
            [ConversationMessage(session_id="s", role="human", content=f"we talked about topic {i}") for i in range(6)]
        )
        s.embedder.held.clear()  # type: ignore[attr-defined]
        yield s


def test_summarizer_runs_with_no_connection_held(one_connection_store: ConversationStorage) -> None:
    store = one_connection_store
    seen: list[Any] = []

    def summarizer(prompt: str) -> str:
        seen.append(_checked_out(store.pool))
        seen.append(store.get_session("s"))  # the store is usable from the callback: its one connection is free
        return "A talk about topics."

    assert store.summarize_session("s", summarizer=summarizer) == "A talk about topics."
    assert seen[0] == 0 and seen[1] is not None and seen[1].session_id == "s"
    assert store.get_session_summary("s").summary == "A talk about topics."


def test_rehydrate_embeds_its_question_once_beside_its_reads(one_connection_store: ConversationStorage) -> None:
    """rehydrate announces its question's embedding before its first read and recall gets that one: one
    embedder call, while the reads run on the one connection of this pool."""
    store = one_connection_store
    result = store.rehydrate("s", "what about topic 3?")
    assert "topic 3" in result.to_prompt()
    assert len(store.embedder.held) == 1  # type: ignore[attr-defined]


def test_import_embeds_with_no_connection_held(one_connection_store: ConversationStorage, tmp_path: Path) -> None:
    store = one_connection_store
    path = tmp_path / "chat.jsonl"
    lines = [{"role": "user", "content": f"imported line {i}"} for i in range(4)]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    assert import_jsonl(store, path, "u", session_id="imported").messages_added == 4
    assert store.embedder.held == [0]  # type: ignore[attr-defined]
    assert [m.content for m in store.get_messages("imported")] == [f"imported line {i}" for i in range(4)]


def test_an_operation_that_embeds_inside_its_transaction_is_refused(store: ConversationStorage) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u"))

    def careless() -> Any:
        yield Query("UPDATE conversation_sessions SET status = 'x' WHERE session_id = 's'", fetch="none")
        yield Embed(("too late",))

    def calls_back_too_late() -> Any:
        yield Query("UPDATE conversation_sessions SET status = 'y' WHERE session_id = 's'", fetch="none")
        yield Call(print, ("never",))

    def starts_too_late() -> Any:
        yield Query("UPDATE conversation_sessions SET status = 'z' WHERE session_id = 's'", fetch="none")
        yield Embed(("too late",), ahead=True)

    for op in (careless(), calls_back_too_late(), starts_too_late()):
        with pytest.raises(RuntimeError, match="inside its transaction"):
            store._run(op, readonly=False)
    session = store.get_session("s")
    assert session is not None and session.status == "active"  # rolled back


async def test_async_summarizer_runs_in_a_thread_or_is_awaited(database_dsn: str) -> None:
    settings = Settings.from_env(dsn=database_dsn, pool_max_size=1, pool_timeout=2.0)
    async with AsyncConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as astore:
        await astore.create_session(ConversationSession(session_id="a", user_id="u"))
        await astore.store_message(ConversationMessage(session_id="a", role="human", content="we planned a trip"))

        async def llm(prompt: str) -> str:
            session = await astore.get_session("a")  # the one connection is free meanwhile
            return f"Trip planning ({session.session_id if session else '?'})."

        assert await astore.summarize_session("a", summarizer=llm) == "Trip planning (a)."
        assert await astore.summarize_session("a", summarizer=lambda prompt: "Plain.") == "Plain."


# --------------------------------------------------------------------------- embedding ahead

MARKER = "ltst-beside-marker"


class SpyingEmbedder(HashingEmbedder):
    """Looks, from a connection of its own, for a statement of the store that the server is running
    while it embeds; can be told to fail."""

    def __init__(self, dsn: str) -> None:
        super().__init__(384)
        # connected now, not when it embeds: a connection made while the statement runs could take
        # longer than the statement on a busy machine (the test then saw nothing running)
        self.conn = psycopg.connect(dsn, autocommit=True)
        weakref.finalize(self, self.conn.close)
        self.running: list[int] = []
        self.fail = False
        self.wait = 0.0  # seconds to keep looking for the statement (0: look once)

    def embed(self, texts: list[str]) -> np.ndarray:
        # looked for during most of the statement's 1 s: the statement sent just before may not have
        # reached the server yet; one that ran before the embedding (no overlap) is never seen
        deadline = time.monotonic() + self.wait
        while True:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                "AND pid <> pg_backend_pid()",
                [f"%{MARKER}%"],
            ).fetchone()
            seen = int(row[0]) if row else 0
            if seen or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self.running.append(seen)
        if self.fail:
            raise RuntimeError("model exploded")
        return super().embed(texts)


def _embeds_beside_a_statement() -> Any:
    embedding = yield Embed(("what is the weather?",), ahead=True)
    again = yield Embed(("what is the weather?",), ahead=True)  # the same texts: the same embedding
    sql = f"SELECT count(*) AS n, pg_sleep(1) FROM conversation_sessions /* {MARKER} */"
    row = yield Query(sql, fetch="one")
    vectors = yield embedding
    return row["n"], vectors, again is embedding


def _handles_the_failure() -> Any:
    embedding = yield Embed(("q",), ahead=True)
    yield Query(f"SELECT 1 AS one /* {MARKER} */", fetch="one")
    try:
        yield embedding
    except EmbeddingError as exc:
        row = yield Query("SELECT 2 AS two", fetch="one")  # the operation goes on after handling it
        return f"{row['two']}: {exc}"
    return "no error"


def test_an_embedding_ahead_is_computed_while_the_server_runs_a_statement(database_dsn: str) -> None:
    embedder = SpyingEmbedder(database_dsn)
    with ConversationStorage(database_dsn, embedder=embedder) as store:
        store.create_session(ConversationSession(session_id="s", user_id="u"))
        embedder.wait = 0.8
        n, vectors, same = store._run(_embeds_beside_a_statement(), readonly=True)
        embedder.wait = 0.0
        assert n == 1 and same
        assert embedder.running == [1]  # one embedder call, made while the statement ran on the server
        assert np.allclose(vectors, HashingEmbedder(384).embed(["what is the weather?"]))

        embedder.fail = True
        assert store._run(_handles_the_failure(), readonly=True).startswith("2: embedder")
        with pytest.raises(EmbeddingError, match="model exploded"):  # typed, from recall and rehydrate
            store.recall("anything", user_id="u")
        with pytest.raises(EmbeddingError, match="model exploded"):
            store.rehydrate("s", "anything")
        embedder.fail = False
        assert store.rehydrate("s", "anything").session_id == "s"  # the store is fine afterwards


async def test_an_embedding_ahead_is_computed_while_the_server_runs_an_async_statement(database_dsn: str) -> None:
    embedder = SpyingEmbedder(database_dsn)
    async with AsyncConversationStorage(database_dsn, embedder=embedder) as astore:
        await astore.create_session(ConversationSession(session_id="s", user_id="u"))
        embedder.wait = 0.8
        n, vectors, same = await astore._arun(_embeds_beside_a_statement(), readonly=True)
        embedder.wait = 0.0
        assert n == 1 and same
        assert embedder.running == [1]
        assert np.allclose(vectors, HashingEmbedder(384).embed(["what is the weather?"]))

        embedder.fail = True
        assert (await astore._arun(_handles_the_failure(), readonly=True)).startswith("2: embedder")
        with pytest.raises(EmbeddingError, match="model exploded"):
            await astore.recall("anything", user_id="u")
        with pytest.raises(EmbeddingError, match="model exploded"):
            await astore.rehydrate("s", "anything")


class SlowEmbedder(HashingEmbedder):
    """Takes ``delay`` seconds per call, notes when each call ended; can be told to fail."""

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__(384)
        self.delay = delay
        self.fail = False
        self.ended: list[float] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.delay)
        self.ended.append(time.monotonic())
        if self.fail:
            raise RuntimeError("model exploded")
        return super().embed(texts)


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ltst-worker"]


def test_an_embedding_ahead_that_is_not_needed_ends_before_the_call(database_dsn: str) -> None:
    """recall in a session that does not exist: its question's embedding started, the operation failed
    before needing it. The call still waits for it (no thread of it is left running), and an embedder
    that fails there does not hide the operation's own error."""
    from ltst_memory.errors import SessionNotFoundError

    embedder = SlowEmbedder()
    with ConversationStorage(database_dsn, embedder=embedder) as store:
        for fail in (False, True):
            embedder.fail = fail
            with pytest.raises(SessionNotFoundError):
                store.recall("anything", session_id="nope")
            returned = time.monotonic()
            assert embedder.ended and embedder.ended[-1] <= returned
            assert _worker_threads() == []
            with pytest.raises(SessionNotFoundError):
                store.rehydrate("nope", "anything")
            assert _worker_threads() == []
        embedder.fail = False
        store.create_session(ConversationSession(session_id="s", user_id="u"))
        assert store.recall("anything", session_id="s") == []
        assert _worker_threads() == []


async def test_an_async_embedding_ahead_that_is_not_needed_ends_before_the_call(database_dsn: str) -> None:
    from ltst_memory.errors import SessionNotFoundError

    embedder = SlowEmbedder()
    async with AsyncConversationStorage(database_dsn, embedder=embedder) as astore:
        for fail in (False, True):
            embedder.fail = fail
            calls = len(embedder.ended)
            with pytest.raises(SessionNotFoundError):
                await astore.rehydrate("nope", "anything")
            assert len(embedder.ended) == calls + 1 and embedder.ended[-1] <= time.monotonic()


def _reads_spy(store: Any, seen: list[str]) -> None:
    """Note the first words of every statement ``store`` runs, in order."""
    execute = store._execute

    def spy(conn: Any, query: Any, *rest: Any) -> Any:
        seen.append(" ".join(query.sql.split()[:4]))
        return execute(conn, query, *rest)

    store._execute = spy


def test_rehydrate_reads_while_its_question_is_embedded(database_dsn: str) -> None:
    """rehydrate starts its question's embedding before its first read: the session, its turns, summary,
    preferences, context and links, and recall's lexical leg all run while the model works; the vector
    leg waits for it."""
    embedder = SlowEmbedder(delay=0.0)
    with ConversationStorage(database_dsn, embedder=embedder) as store:
        store.create_session(ConversationSession(session_id="s", user_id="u"))
        store.store_messages([ConversationMessage("s", "human", f"we talked about topic {i}") for i in range(6)])
        embedder.delay = 1.0
        seen: list[str] = []
        at_end: list[int] = []
        sleep = embedder.embed

        def noting(texts: list[str]) -> np.ndarray:
            vectors = sleep(texts)
            at_end.append(len(seen))  # statements the store ran while the model worked
            return vectors

        embedder.embed = noting  # type: ignore[method-assign]
        _reads_spy(store, seen)
        result = store.rehydrate("s", "what about topic 3?")
        assert "topic 3" in result.to_prompt()
        assert len(at_end) == 1
        before = seen[: at_end[0]]
        assert any(s.startswith("SELECT session_id, summary") for s in before)  # the summary
        assert any(s.startswith("WITH terms") for s in before)  # the lexical leg
        assert [s for s in seen[at_end[0] :] if s.startswith("WITH terms")]  # the vector leg, after it
        lexical = next(i for i, s in enumerate(seen) if s.startswith("WITH terms"))
        summary = next(i for i, s in enumerate(seen) if s.startswith("SELECT session_id, summary"))
        assert lexical < summary  # the longest read first, the short ones while the server has done it
        assert _worker_threads() == []


async def test_async_rehydrate_reads_while_its_question_is_embedded(database_dsn: str) -> None:
    embedder = SlowEmbedder(delay=0.0)
    async with AsyncConversationStorage(database_dsn, embedder=embedder) as astore:
        await astore.create_session(ConversationSession(session_id="s", user_id="u"))
        await astore.store_messages([ConversationMessage("s", "human", f"we talked about topic {i}") for i in range(6)])
        embedder.delay = 1.0
        seen: list[str] = []
        at_end: list[int] = []
        sleep = embedder.embed

        def noting(texts: list[str]) -> np.ndarray:
            vectors = sleep(texts)
            at_end.append(len(seen))
            return vectors

        embedder.embed = noting  # type: ignore[method-assign]
        execute = astore._execute

        async def spy(conn: Any, query: Any, *rest: Any) -> Any:
            seen.append(" ".join(query.sql.split()[:4]))
            return await execute(conn, query, *rest)

        astore._execute = spy  # type: ignore[method-assign]
        result = await astore.rehydrate("s", "what about topic 3?")
        assert "topic 3" in result.to_prompt()
        assert len(at_end) == 1
        before = seen[: at_end[0]]
        assert any(s.startswith("SELECT session_id, summary") for s in before)
        assert any(s.startswith("WITH terms") for s in before)
        assert [s for s in seen[at_end[0] :] if s.startswith("WITH terms")]
