"""A sweep of hostile inputs over every public surface (issue 14, "Done when").

Each input goes through the core (sync and async stores), the importers (crafted files), the CLI
and the adapters' public methods. Every one must end in a clean success or a typed error
(:class:`~ltst_memory.LTSTError`; ``ValueError`` where a framework's contract says so, e.g.
LangGraph's ``InvalidNamespaceError``) — never a raw driver or Python error — and a refused call
must leave every table of the database exactly as it was (every table's row count and newest row
version, taken before and after the call).

The tests share one store per group and collect every offence before failing, so one run lists
them all. Each group asserts how many inputs it tried; together they are well over 400.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    LTSTError,
    SessionRelationship,
    UserPreference,
)
from ltst_memory.io import import_chatgpt, import_export, import_file, import_jsonl, import_langchain_messages


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


#: The hostile values every parameter of the core API receives in turn.
HOSTILE: list[Any] = [
    None,
    "",
    "   ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x" * 256,
    "\U0001f600" * 255,  # 255 characters, 1,020 bytes
    "\u9fce" * 255,  # 255 characters, 765 bytes: allowed
    "'; DROP TABLE conversation_messages; --",
    "%(session_id)s",
    "\\u0000",  # six characters, not a NUL: allowed
    "x" * 100_001,
    10**400,
    -1,
    2**70,
    math.nan,
    math.inf,
    True,
    1.5,
    [],
    ["a"],
    {},
    {"speaker": "w " * 600_000},
    _nested(5_000),
    b"bytes",
    object(),
    {1, 2},
    datetime(2024, 1, 1),  # naive
]


def _label(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = "<deeply nested>"
    return text if len(text) <= 40 else f"{text[:37]}..."


# (name, call(store, value)) - the store has sessions "s" and "other" of user "u", one message each.
CORE_CALLS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("create_session.session_id", lambda s, v: s.create_session(ConversationSession(v, "u"))),
    ("create_session.user_id", lambda s, v: s.create_session(ConversationSession("new-1", v))),
    ("create_session.session_name", lambda s, v: s.create_session(ConversationSession("new-2", "u", v))),
    ("create_session.metadata", lambda s, v: s.create_session(ConversationSession("new-3", "u", metadata=v))),
    ("create_session.relevance", lambda s, v: s.create_session(ConversationSession("new-4", "u", relevance_score=v))),
    ("update_session.status", lambda s, v: s.update_session(ConversationSession("s", "u", status=v))),
    ("get_session", lambda s, v: s.get_session(v)),
    ("get_user_sessions", lambda s, v: s.get_user_sessions(v)),
    ("get_user_sessions.limit", lambda s, v: s.get_user_sessions("u", limit=v)),
    ("get_session_summary", lambda s, v: s.get_session_summary(v)),
    ("update_session_activity", lambda s, v: s.update_session_activity(v)),
    ("store_message.role", lambda s, v: s.store_message(ConversationMessage("s", v, "x"))),
    ("store_message.content", lambda s, v: s.store_message(ConversationMessage("s", "human", v))),
    ("store_message.session_id", lambda s, v: s.store_message(ConversationMessage(v, "human", "x"))),
    ("store_message.metadata", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", metadata=v))),
    ("store_message.embedding", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", embedding=v))),
    (
        "store_message.embedding[]",
        lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", embedding=[v] * 384)),
    ),
    ("store_message.relevance", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", relevance_score=v))),
    ("store_message.message_type", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", message_type=v))),
    ("store_message.message_uuid", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", message_uuid=v))),
    ("store_message.parent", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", parent_message_id=v))),
    ("store_message.timestamp", lambda s, v: s.store_message(ConversationMessage("s", "ai", "x", timestamp=v))),
    ("store_messages", lambda s, v: s.store_messages(v)),
    ("store_messages[ok, bad]", lambda s, v: s.store_messages([ConversationMessage("s", "ai", "ok"), v])),
    ("get_messages", lambda s, v: s.get_messages(v)),
    ("get_messages.limit", lambda s, v: s.get_messages("s", limit=v)),
    ("get_messages.offset", lambda s, v: s.get_messages("s", offset=v)),
    ("get_recent_messages.limit", lambda s, v: s.get_recent_messages("s", limit=v)),
    ("search_messages.query", lambda s, v: s.search_messages(v)),
    ("search_messages.session_id", lambda s, v: s.search_messages("hello", session_id=v)),
    ("search_messages.user_id", lambda s, v: s.search_messages("hello", user_id=v)),
    ("search_messages.limit", lambda s, v: s.search_messages("hello", limit=v)),
    ("search_messages.threshold", lambda s, v: s.search_messages("hello", threshold=v)),
    ("store_context.type", lambda s, v: s.store_context(ConversationContext("s", v, "k", "val"))),
    ("store_context.key", lambda s, v: s.store_context(ConversationContext("s", "note", v, "val"))),
    ("store_context.value", lambda s, v: s.store_context(ConversationContext("s", "note", "k", v))),
    ("store_context.session", lambda s, v: s.store_context(ConversationContext(v, "note", "k", "val"))),
    (
        "store_context.relevance",
        lambda s, v: s.store_context(ConversationContext("s", "n", "k", "v", relevance_score=v)),
    ),
    ("store_context.expires_at", lambda s, v: s.store_context(ConversationContext("s", "n", "k", "v", expires_at=v))),
    ("get_context", lambda s, v: s.get_context(v)),
    ("get_context.type", lambda s, v: s.get_context("s", context_type=v)),
    ("store_preference.user", lambda s, v: s.store_preference(UserPreference(v, "k", 1))),
    ("store_preference.key", lambda s, v: s.store_preference(UserPreference("u", v, 1))),
    ("store_preference.value", lambda s, v: s.store_preference(UserPreference("u", "k", v))),
    ("store_preference.confidence", lambda s, v: s.store_preference(UserPreference("u", "k", 1, confidence_score=v))),
    ("store_preference.sensitive", lambda s, v: s.store_preference(UserPreference("u", "k2", 1, is_sensitive=v))),
    ("get_preferences", lambda s, v: s.get_preferences(v)),
    ("store_relationship.type", lambda s, v: s.store_relationship(SessionRelationship("s", "other", v))),
    ("store_relationship.strength", lambda s, v: s.store_relationship(SessionRelationship("s", "other", "r", v))),
    ("store_relationship.target", lambda s, v: s.store_relationship(SessionRelationship("s", v))),
    ("get_related_sessions", lambda s, v: s.get_related_sessions(v)),
    ("recall.query", lambda s, v: s.recall(v, user_id="u")),
    ("recall.user_id", lambda s, v: s.recall("hello", user_id=v)),
    ("recall.min_score", lambda s, v: s.recall("hello", user_id="u", min_score=v)),
    ("recall.exclude", lambda s, v: s.recall("hello", user_id="u", exclude_message_ids=[v])),
    ("recall.metadata", lambda s, v: s.recall("hello", user_id="u", metadata=v)),
    ("recall.lexical_weight", lambda s, v: s.recall("hello", user_id="u", lexical_weight=v)),
    ("rehydrate.query", lambda s, v: s.rehydrate("s", v)),
    ("rehydrate.token_budget", lambda s, v: s.rehydrate("s", "hello", token_budget=v)),
    ("rehydrate.recall_options", lambda s, v: s.rehydrate("s", "hello", recall_options=v)),
    ("rehydrate.count_tokens", lambda s, v: s.rehydrate("s", "hello", count_tokens=lambda text: v)),
    ("delete_session", lambda s, v: s.delete_session(v)),
    ("import_messages", lambda s, v: s.import_messages(v)),
    ("import_messages[bad]", lambda s, v: s.import_messages([v])),
    ("set_retention_policy", lambda s, v: s.set_retention_policy(user_id="u", message_days=v)),
    ("for_user", lambda s, v: s.for_user(v).get_user_sessions()),
]


class Sweep:
    """Runs hostile calls, fingerprints every table around each, and collects offences."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            )
        ]
        # per table: row count and the newest row version's transaction id. A committed write adds,
        # deletes or rewrites a row, so it changes one of the two; reading no row text keeps it cheap
        # however large the rows that successful calls stored.
        parts = [
            f"SELECT '{t}:' || count(*) || ':' || coalesce(max(xmin::text::bigint), 0) AS h FROM {t}" for t in tables
        ]
        self.sql = f"SELECT md5(string_agg(h, '|' ORDER BY h)) FROM ({' UNION ALL '.join(parts)}) AS x"
        self.tables = tables
        self.tried = 0
        self.offences: list[str] = []

    def fingerprint(self) -> str:
        return str(self.conn.execute(self.sql).fetchone()[0])  # type: ignore[index]

    def _judge(self, label: str, exc: BaseException, before: str, allowed: tuple[type[BaseException], ...]) -> None:
        if not isinstance(exc, allowed):
            self.offences.append(f"{label}: raw {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:160]}")
        elif self.fingerprint() != before:
            self.offences.append(f"{label}: refused with {type(exc).__name__} but changed a table")

    def call(self, label: str, call: Callable[[], Any], allowed: tuple[type[BaseException], ...] = (LTSTError,)) -> Any:
        self.tried += 1
        before = self.fingerprint()
        try:
            return call()
        except Exception as exc:
            self._judge(label, exc, before, allowed)
            return exc

    async def acall(
        self, label: str, call: Callable[[], Awaitable[Any]], allowed: tuple[type[BaseException], ...] = (LTSTError,)
    ) -> Any:
        self.tried += 1
        before = self.fingerprint()
        try:
            return await call()
        except Exception as exc:
            self._judge(label, exc, before, allowed)
            return exc

    def close(self) -> None:
        self.conn.close()

    def check(self, minimum: int) -> None:
        assert self.tried >= minimum
        assert not self.offences, f"{len(self.offences)} of {self.tried} inputs misbehaved:\n" + "\n".join(
            self.offences
        )


def _seed(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s", "u"))
    store.create_session(ConversationSession("other", "u"))
    store.store_message(ConversationMessage("s", "human", "hello there, remember the blue bicycle"))
    store.store_message(ConversationMessage("other", "human", "something else"))


@pytest.fixture
def sweep(database_dsn: str) -> Any:
    sweeper = Sweep(database_dsn)
    yield sweeper
    sweeper.close()


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTST_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("LTST_ENCRYPTION_KEY", raising=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_core_sync(store: ConversationStorage, sweep: Sweep, no_key: None) -> None:
    _seed(store)
    for name, call in CORE_CALLS:
        for value in HOSTILE:
            sweep.call(f"sync {name}({_label(value)})", lambda call=call, value=value: call(store, value))
    assert store.get_messages("s")[0].content.startswith("hello there")  # the seed survived
    sweep.check(minimum=len(CORE_CALLS) * len(HOSTILE))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
async def test_core_async(database_dsn: str, hashing_embedder: Any, sweep: Sweep, no_key: None) -> None:
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as sync_store:
        _seed(sync_store)
    async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as store:
        values = HOSTILE[::2]
        for name, call in CORE_CALLS:
            for value in values:

                async def run(call: Any = call, value: Any = value) -> Any:
                    result = call(store, value)
                    return await result if hasattr(result, "__await__") else result

                await sweep.acall(f"async {name}({_label(value)})", run)
        sweep.check(minimum=len(CORE_CALLS) * len(values))


# --------------------------------------------------------------------------- importers

HEADER = {"type": "ltst-export", "version": 1, "embeddings": False, "scope": {"user_id": "alice"}}
SESSION = {"type": "session", "session_id": "imp-1", "user_id": "alice"}
MESSAGE = {"type": "message", "session_id": "imp-1", "role": "human", "content": "hi", "message_uuid": None}


def _lines(*objs: Any) -> str:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n"


def _files(tmp: Path) -> dict[str, bytes | str]:
    """Name -> content of every hostile file."""
    long_word = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(2_040))
    return {
        "binary": os.urandom(64) + b"\xff\xfe\x00\x00",
        "latin1": "caf\xe9 \xfcber".encode("latin-1"),
        "utf16": json.dumps({"role": "human", "content": "hi"}).encode("utf-16"),
        "empty": b"",
        "blank": b"   \n\n  ",
        "truncated": '{"role": "human", "con',
        "truncated-array": '[{"mapping": {',
        "scalar": "42",
        "array-of-numbers": "[1, 2, 3]",
        "array-of-nulls": "[null, null]",
        "jsonl-wrong-types": _lines({"role": 5, "content": ["x"]}, {"role": "human", "content": {"a": 1}}),
        "jsonl-bad-timestamp": _lines({"role": "human", "content": "x", "timestamp": "yesterday at noon"}),
        "jsonl-session-object": _lines({"role": "human", "content": "x", "session_id": {"$ne": None}}),
        "jsonl-nul": _lines({"role": "human", "content": "a\u0000b"}),
        "jsonl-surrogate": '{"role": "human", "content": "\\ud800"}\n',
        "jsonl-huge": _lines({"role": "human", "content": "x" * 200_000}),
        "jsonl-deep": '{"role": "human", "content": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
        "jsonl-speaker": _lines({"role": "human", "content": "x", "metadata": {"speaker": "w " * 600_000}}),
        "jsonl-second-session-bad": _lines(
            {"role": "human", "content": "fine", "session_id": "j-1"},
            {"role": "human", "content": "bad\u0000", "session_id": "j-2"},
        ),
        "jsonl-ok-then-bad": _lines({"role": "human", "content": "fine"}, {"role": "robot", "content": "x"}),
        "jsonl-long-word": _lines({"role": "human", "content": long_word}),
        "chatgpt-wrong": json.dumps([{"mapping": "not a dict", "title": 5}]),
        "chatgpt-node": json.dumps([{"id": "c1", "mapping": {"n": {"message": {"author": 5, "content": None}}}}]),
        "chatgpt-parts": json.dumps(
            [{"id": "c2", "mapping": {"n": {"message": {"author": {"role": "user"}, "content": {"parts": [{}]}}}}}]
        ),
        "langchain-wrong": json.dumps([{"type": "human", "data": "not a dict"}]),
        "langchain-type": json.dumps([{"type": "martian", "data": {"content": "x"}}]),
        "langchain-content": json.dumps([{"type": "human", "data": {"content": 42}}]),
        "archive-header-only": _lines(HEADER),
        "archive-version": _lines({**HEADER, "version": "two"}),
        "archive-future": _lines({**HEADER, "version": 99}),
        "archive-no-header": _lines(SESSION, MESSAGE),
        "archive-session-no-id": _lines(HEADER, {"type": "session", "user_id": "alice"}),
        "archive-session-user-int": _lines(HEADER, {**SESSION, "user_id": 5}),
        "archive-undeclared-message": _lines(HEADER, MESSAGE),
        "archive-undeclared-context": _lines(
            HEADER, SESSION, MESSAGE, {"type": "context", "session_id": "s", "context_type": "n", "context_key": "k"}
        ),
        "archive-foreign-relationship": _lines(
            HEADER, SESSION, MESSAGE, {"type": "relationship", "source_session_id": "s", "target_session_id": "other"}
        ),
        "archive-foreign-preference": _lines(
            HEADER,
            SESSION,
            MESSAGE,
            {"type": "preference", "user_id": "u", "preference_key": "k", "preference_value": 1},
        ),
        "archive-sensitive-no-key": _lines(
            HEADER,
            SESSION,
            MESSAGE,
            {
                "type": "preference",
                "user_id": "alice",
                "preference_key": "pin",
                "preference_value": "1234",
                "is_sensitive": True,
            },
        ),
        "archive-duplicate-session": _lines(HEADER, SESSION, SESSION),
        "archive-bad-uuid": _lines(HEADER, SESSION, {**MESSAGE, "message_uuid": "not-a-uuid"}),
        "archive-bad-embedding": _lines(
            {**HEADER, "embeddings": True, "embedding_model": "hashing-bow", "embedding_dimension": 384},
            SESSION,
            {**MESSAGE, "embedding": ["a", "b"]},
        ),
        "archive-context-4byte": _lines(
            HEADER,
            SESSION,
            MESSAGE,
            {
                "type": "context",
                "session_id": "imp-1",
                "context_type": "\U0001f600" * 255,
                "context_key": "k",
                "context_value": "v",
            },
        ),
        "archive-context-missing-value": _lines(
            HEADER,
            SESSION,
            MESSAGE,
            {"type": "context", "session_id": "imp-1", "context_type": "n", "context_key": "k"},
        ),
        "archive-relationship-score": _lines(
            HEADER,
            SESSION,
            MESSAGE,
            {**SESSION, "session_id": "imp-2"},
            {
                "type": "relationship",
                "source_session_id": "imp-1",
                "target_session_id": "imp-2",
                "relationship_strength": 10**400,
            },
        ),
        "archive-line-not-object": _lines(HEADER, "[1, 2]"),
        "archive-unknown-type": _lines(HEADER, SESSION, {"type": "martian"}),
        "archive-other-users-session": _lines(HEADER, {**SESSION, "session_id": "s"}, {**MESSAGE, "session_id": "s"}),
    }


IMPORTERS: list[tuple[str, Callable[[Any, Path], Any]]] = [
    ("import_file", lambda s, p: import_file(s, p, user_id="alice")),
    ("import_jsonl", lambda s, p: import_jsonl(s, p, "alice")),
    ("import_chatgpt", lambda s, p: import_chatgpt(s, p, "alice")),
    ("import_langchain_messages", lambda s, p: import_langchain_messages(s, p, "alice")),
    ("import_export", lambda s, p: import_export(s, p)),
    ("import_export(user_id=)", lambda s, p: import_export(s, p, user_id="alice")),
]


def _write(tmp: Path) -> list[Path]:
    paths = []
    for name, content in _files(tmp).items():
        path = tmp / f"{name}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        paths.append(path)
    return paths


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_importers(store: ConversationStorage, sweep: Sweep, tmp_path: Path, no_key: None) -> None:
    _seed(store)
    paths = _write(tmp_path)
    paths += [tmp_path / "missing.json", tmp_path]  # no such file; a directory
    for path in paths:
        for name, importer in IMPORTERS:
            sweep.call(f"{name}({path.name})", lambda importer=importer, path=path: importer(store, path))
    scoped = store.for_user("alice")
    for name, importer in IMPORTERS:  # a user-scoped store: refused before writing, or works within the user
        sweep.call(f"{name} on for_user", lambda importer=importer: importer(scoped, paths[0]))
    assert store.get_session("s").user_id == "u"  # type: ignore[union-attr]
    sweep.check(minimum=len(IMPORTERS) * len(paths))


# --------------------------------------------------------------------------- CLI


def test_cli(database_dsn: str, store: ConversationStorage, sweep: Sweep, tmp_path: Path, no_key: None) -> None:
    from ltst_memory.cli import app

    _seed(store)
    paths = {p.stem: p for p in _write(tmp_path)}
    dsn = ["--dsn", database_dsn]
    invocations = [
        *(["import", str(paths[name]), "--user", "alice", *dsn] for name in list(paths)[::3]),
        ["import", str(paths["archive-undeclared-context"]), *dsn],
        ["import", str(paths["jsonl-nul"]), "--user", "\x01\x02", *dsn],
        ["import", str(paths["jsonl-wrong-types"]), "--format", "martian", "--user", "alice", *dsn],
        ["import", str(tmp_path / "missing.json"), "--user", "alice", *dsn],
        ["search", "hello", "--limit", "100000", *dsn],
        ["search", "a\x01b", "--user", "x" * 300, *dsn],
        ["search", "hello", "--dsn", "=== not a dsn"],
        ["rehydrate", "no-such-session", *dsn],
        ["rehydrate", "s", "--budget", "-5", *dsn],
        ["sessions", "list", "--user", "x" * 300, *dsn],
        ["sessions", "show", "no-such-session", *dsn],
        ["export", "--user", "\U0001f600" * 255, "--output", str(tmp_path / "out.jsonl"), *dsn],
        ["export", "--session", "no-such", "--output", str(tmp_path / "out2.jsonl"), *dsn],
        ["export", "--user", "u", "--output", str(tmp_path), *dsn],
        ["cleanup", "--dsn", "postgresql://[::1"],
        ["stats", "--dsn", "host=/nonexistent-dir port=5432"],
    ]
    runner = CliRunner()
    for args in invocations:
        label = "ltst " + " ".join(a if len(a) < 40 else a[:37] + "..." for a in args if a != database_dsn)

        def invoke(args: list[str] = args) -> Any:
            result = runner.invoke(app, args, catch_exceptions=True)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
            if result.exit_code not in (0, 1, 2):
                raise AssertionError(f"exit code {result.exit_code}")
            if result.exit_code == 1 and "Traceback" in result.output:
                raise AssertionError(f"a traceback was printed: {result.output[:300]}")
            return result

        sweep.call(label, invoke)
    sweep.check(minimum=len(invocations))


# --------------------------------------------------------------------------- adapters

ADAPTER_VALUES: list[Any] = [
    None,
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\\u0000",
    "x" * 6_000,
    10**400,
    math.nan,
    -1,
    "5",
    [],
    {"$in": [math.nan]},
    {"$gt": 10**400},
    {"$bogus": 1},
    {"k\x00": 1},
    _nested(400),
    object(),
]


def test_adapters(store: ConversationStorage, sweep: Sweep, no_key: None) -> None:
    from langchain_core.documents import Document
    from langchain_core.messages import HumanMessage
    from ltst_memory.adapters.dspy import LTSTRetriever
    from ltst_memory.adapters.langchain import LTSTChatMessageHistory, LTSTVectorStore
    from ltst_memory.adapters.langgraph import LTSTStore

    _seed(store)
    allowed = (LTSTError, ValueError)  # pydantic / LangGraph refuse bad arguments with ValueError subclasses
    user: Any = store.for_user("u")  # adapters on a user's store (docs/adapters.md) ...
    try:
        vectors = LTSTVectorStore(user, collection_name="sweep")
        vectors.add_texts(["a blue bicycle", "a red car"], metadatas=[{"n": 1}, {"n": 2}], ids=["d1", "d2"])
    except AccessDeniedError:  # ... or, with adapters that take no user-scoped store, on the store itself
        user = store
        vectors = LTSTVectorStore(user, collection_name="sweep")
        vectors.add_texts(["a blue bicycle", "a red car"], metadatas=[{"n": 1}, {"n": 2}], ids=["d1", "d2"])
    history = LTSTChatMessageHistory(user, "chat-1")
    graph = LTSTStore(user)
    graph.put(("memories", "u"), "m1", {"text": "likes tea"})
    retriever = LTSTRetriever(user)
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("VectorStore.add_texts", lambda v: vectors.add_texts([v])),
        ("VectorStore.add_texts.metadata", lambda v: vectors.add_texts(["t"], metadatas=[{"k": v}])),
        ("VectorStore.add_texts.ids", lambda v: vectors.add_texts(["t"], ids=[v])),
        ("VectorStore.add_documents", lambda v: vectors.add_documents([Document(page_content="t", metadata={"m": v})])),
        ("VectorStore.similarity_search", lambda v: vectors.similarity_search(v)),
        ("VectorStore.similarity_search.k", lambda v: vectors.similarity_search("bicycle", k=v)),
        ("VectorStore.similarity_search.filter", lambda v: vectors.similarity_search("bicycle", filter=v)),
        ("VectorStore.filter.value", lambda v: vectors.similarity_search("bicycle", filter={"n": v})),
        ("VectorStore.get_by_ids", lambda v: vectors.get_by_ids([v])),
        ("VectorStore.delete", lambda v: vectors.delete([v])),
        ("VectorStore(collection)", lambda v: LTSTVectorStore(user, collection_name=v).similarity_search("x")),
        ("ChatMessageHistory(session)", lambda v: LTSTChatMessageHistory(user, v).messages),
        ("ChatMessageHistory.add_messages", lambda v: history.add_messages([HumanMessage(content=v)])),
        ("ChatMessageHistory.add_messages.kwargs", lambda v: history.add_messages([HumanMessage("x", id=v)])),
        ("LTSTStore.put.key", lambda v: graph.put(("memories", "u"), v, {"text": "x"})),
        ("LTSTStore.put.value", lambda v: graph.put(("memories", "u"), "k", {"text": v})),
        ("LTSTStore.put.namespace", lambda v: graph.put(("memories", v), "k", {"text": "x"})),
        ("LTSTStore.get", lambda v: graph.get(("memories", "u"), v)),
        ("LTSTStore.search.filter", lambda v: graph.search(("memories",), filter={"text": v})),
        ("LTSTStore.search.limit", lambda v: graph.search(("memories",), limit=v)),
        ("LTSTStore.delete", lambda v: graph.delete(("memories", "u"), v)),
        ("LTSTStore.list_namespaces.limit", lambda v: graph.list_namespaces(limit=v)),
        ("dspy.LTSTRetriever", lambda v: retriever(v)),
        ("dspy.LTSTRetriever.k", lambda v: retriever("bicycle", k=v)),
    ]
    for name, call in calls:
        for value in ADAPTER_VALUES:
            sweep.call(f"{name}({_label(value)})", lambda call=call, value=value: call(value), allowed)
    sweep.check(minimum=len(calls) * len(ADAPTER_VALUES))


def test_the_sweep_sees_partial_writes_and_raw_errors(store: ConversationStorage, sweep: Sweep) -> None:
    """The judge itself: a refusal after a committed write, and a raw error, are both offences."""
    from ltst_memory import ValidationError

    _seed(store)

    def write_then_refuse() -> None:
        store.store_message(ConversationMessage("s", "human", "half of a call"))
        raise ValidationError("refused after writing")

    def update_then_refuse() -> None:
        store.update_session(ConversationSession("s", "u", session_name="renamed"))
        raise ValidationError("refused after an update")

    sweep.call("write then refuse", write_then_refuse)
    sweep.call("update then refuse", update_then_refuse)
    sweep.call("raw error", lambda: {}["missing"])
    sweep.call("clean refusal", lambda: store.get_session(["a"]))
    assert [o.split(":")[0] for o in sweep.offences] == ["write then refuse", "update then refuse", "raw error"]


def test_the_sweep_is_at_least_400_inputs() -> None:
    """The groups above, counted: core x2 stores, importers, CLI, adapters."""
    core = len(CORE_CALLS) * (len(HOSTILE) + len(HOSTILE[::2]))
    importers = len(IMPORTERS) * (len(_files(Path("."))) + 2)
    assert core + importers + 24 * len(ADAPTER_VALUES) >= 400
