"""A store opened with ``for_user`` reads and writes one user's data only (issue 6)."""

from __future__ import annotations

import inspect

import pytest

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionNotFoundError,
    SessionRelationship,
    UserPreference,
)
from ltst_memory.scoped import AsyncUserScopedStorage, UserScopedStorage, scoped_methods


@pytest.fixture
def two_users(store: ConversationStorage) -> ConversationStorage:
    for user in ("alice", "bob"):
        for n in (1, 2):
            store.create_session(ConversationSession(session_id=f"{user}-s{n}", user_id=user))
            store.store_messages(
                [
                    ConversationMessage(session_id=f"{user}-s{n}", role="human", content=f"{user} secret {n} pizza"),
                    ConversationMessage(session_id=f"{user}-s{n}", role="ai", content=f"reply to {user} {n}"),
                ]
            )
            store.store_context(
                ConversationContext(
                    session_id=f"{user}-s{n}", context_type="project", context_key="k", context_value=f"{user} ctx"
                )
            )
        store.store_preference(UserPreference(user_id=user, preference_key="tone", preference_value=f"{user}-tone"))
        store.store_relationship(SessionRelationship(source_session_id=f"{user}-s1", target_session_id=f"{user}-s2"))
    return store


def test_own_data_is_readable_and_writable(two_users: ConversationStorage) -> None:
    alice = two_users.for_user("alice")
    assert isinstance(alice, UserScopedStorage)
    assert alice.user_id == "alice"
    assert {s.session_id for s in alice.get_user_sessions()} == {"alice-s1", "alice-s2"}
    assert [m.content for m in alice.get_messages("alice-s1")] == ["alice secret 1 pizza", "reply to alice 1"]
    stored = alice.store_message(ConversationMessage(session_id="alice-s1", role="human", content="more"))
    assert stored.message_index == 2 and stored.user_id == "alice"
    hits = alice.search_messages("pizza", limit=10)
    assert hits and {m.user_id for m, _ in hits} == {"alice"}
    assert [p.preference_value for p in alice.get_preferences()] == ["alice-tone"]
    assert [c.context_value for c in alice.get_context("alice-s2")] == ["alice ctx"]
    assert [s.session_id for s, _ in alice.get_related_sessions("alice-s1")] == ["alice-s2"]
    assert alice.get_session_summary("alice-s1").total_messages == 3
    created = alice.create_session(ConversationSession(session_id="alice-s3", user_id="alice"))
    assert created.user_id == "alice"
    assert alice.delete_session("alice-s3")["sessions"] == 1


def test_global_search_is_limited_to_the_user(two_users: ConversationStorage) -> None:
    """search_messages without user_id searches everything on the plain store, only alice's when scoped."""
    everyone = {m.user_id for m, _ in two_users.search_messages("secret pizza", limit=50)}
    assert everyone == {"alice", "bob"}
    assert {m.user_id for m, _ in two_users.for_user("alice").search_messages("secret pizza", limit=50)} == {"alice"}
    assert {m.user_id for m, _ in two_users.for_user("alice").search_unembedded("secret")} <= {"alice"}


# every call that names bob's data, made through alice's store
FOREIGN_CALLS = [
    ("get_session", ("bob-s1",), {}),
    ("get_messages", ("bob-s1",), {}),
    ("get_recent_messages", ("bob-s1",), {}),
    ("get_session_summary", ("bob-s1",), {}),
    ("get_context", ("bob-s1",), {}),
    ("get_related_sessions", ("bob-s1",), {}),
    ("update_session_activity", ("bob-s1",), {}),
    ("delete_session", ("bob-s1",), {}),
    ("search_messages", ("pizza",), {"session_id": "bob-s1"}),
    ("search_messages", ("pizza",), {"user_id": "bob"}),
    ("search_unembedded", ("pizza",), {"session_id": "bob-s1"}),
    ("get_user_sessions", ("bob",), {}),
    ("get_preferences", ("bob",), {}),
    ("store_message", (ConversationMessage(session_id="bob-s1", role="human", content="injected"),), {}),
    (
        "store_messages",
        (
            [
                ConversationMessage(session_id="alice-s1", role="human", content="ok"),
                ConversationMessage(session_id="bob-s1", role="human", content="injected"),
            ],
        ),
        {},
    ),
    (
        "store_context",
        (ConversationContext(session_id="bob-s1", context_type="x", context_key="k", context_value="injected"),),
        {},
    ),
    ("store_preference", (UserPreference(user_id="bob", preference_key="tone", preference_value="injected"),), {}),
    ("store_relationship", (SessionRelationship(source_session_id="alice-s1", target_session_id="bob-s1"),), {}),
    ("create_session", (ConversationSession(session_id="bob-s1", user_id="alice"),), {}),
    ("create_session", (ConversationSession(session_id="new", user_id="bob"),), {}),
    ("update_session", (ConversationSession(session_id="bob-s1", user_id="alice", session_name="hijack"),), {}),
    ("import_messages", ((m for m in [ConversationMessage(session_id="bob-s1", role="human", content="bulk")]),), {}),
]


def _snapshot(store: ConversationStorage) -> list[tuple]:
    with store.pool.connection() as conn:
        return [
            tuple(r)
            for table in (
                "conversation_sessions",
                "conversation_messages",
                "conversation_context",
                "user_preferences",
                "session_relationships",
            )
            for r in conn.execute(f"SELECT '{table}', to_jsonb(t)::text FROM {table} t ORDER BY 2").fetchall()
        ]


def test_another_users_data_is_denied_and_untouched(two_users: ConversationStorage) -> None:
    """Every call naming bob's data through alice's store raises AccessDeniedError and changes nothing."""
    alice = two_users.for_user("alice")
    before = _snapshot(two_users)
    failures = []
    for name, args, kwargs in FOREIGN_CALLS:
        try:
            result = getattr(alice, name)(*args, **kwargs)
        except AccessDeniedError:
            pass
        else:
            failures.append(f"{name}{args!r}: returned {result!r}")
        if _snapshot(two_users) != before:
            failures.append(f"{name}{args!r}: changed the database")
            before = _snapshot(two_users)
    assert not failures, "\n".join(failures)


def test_every_per_user_method_is_scoped_and_admin_methods_are_absent(two_users: ConversationStorage) -> None:
    alice = two_users.for_user("alice")
    exposed = set(scoped_methods(ConversationStorage))
    assert {"store_message", "search_messages", "get_preferences", "get_context", "import_messages"} <= exposed
    for name in ("recall", "rehydrate", "delete_user"):  # other modules' per-user operations, once they exist
        if hasattr(ConversationStorage, name):
            assert name in exposed
    for name in exposed:
        assert inspect.signature(getattr(alice, name)).parameters.keys() == (
            inspect.signature(getattr(two_users, name)).parameters.keys()
        )
    with pytest.raises(AttributeError, match="not available on a user-scoped store"):
        alice.cleanup_expired_data()  # type: ignore[attr-defined]


def test_missing_session_is_not_found_not_denied(two_users: ConversationStorage) -> None:
    with pytest.raises(SessionNotFoundError):
        two_users.for_user("alice").get_messages("nobody-s1")
    assert two_users.for_user("alice").get_session("nobody-s1") is None


def test_for_user_validates_the_id(two_users: ConversationStorage) -> None:
    from ltst_memory import ValidationError

    with pytest.raises(ValidationError):
        two_users.for_user("")
    with pytest.raises(ValidationError):
        two_users.for_user(42)  # type: ignore[arg-type]


def test_scoped_transaction_sets_the_rls_user(two_users: ConversationStorage) -> None:
    """Each scoped transaction carries ltst.user_id (the key of the RLS policies); it does not leak."""
    from ltst_memory._ops import Query

    def probe(core):  # a tiny per-user operation, scoped by hand
        row = yield Query("SELECT current_setting('ltst.user_id', true) AS u", fetch="one")
        return row["u"]

    from ltst_memory.scoped import scoped_operation

    assert two_users._run(scoped_operation(probe, "alice")(two_users._core)) == "alice"
    assert two_users._run(probe(two_users._core)) in (None, "")


async def test_async_scoped_store(database_dsn: str, hashing_embedder) -> None:
    async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as astore:
        await astore.create_session(ConversationSession(session_id="a1", user_id="alice"))
        await astore.create_session(ConversationSession(session_id="b1", user_id="bob"))
        await astore.store_message(ConversationMessage(session_id="b1", role="human", content="bob secret"))
        alice = astore.for_user("alice")
        assert isinstance(alice, AsyncUserScopedStorage)
        await alice.store_message(ConversationMessage(session_id="a1", role="human", content="alice secret"))
        assert {m.user_id for m, _ in await alice.search_messages("secret")} == {"alice"}
        with pytest.raises(AccessDeniedError):
            await alice.get_messages("b1")
        with pytest.raises(AccessDeniedError):
            await alice.store_message(ConversationMessage(session_id="b1", role="human", content="x"))
        assert len(await astore.get_messages("b1")) == 1
        assert set(scoped_methods(AsyncConversationStorage)) == set(scoped_methods(ConversationStorage))


def test_cached_reads_do_not_bypass_the_scope(two_users: ConversationStorage) -> None:
    """The store's in-process cache never answers a scoped read; scoped writes still invalidate it."""
    two_users.get_session("bob-s1")
    two_users.get_session_summary("bob-s1")  # both now cached by the unscoped store
    alice = two_users.for_user("alice")
    with pytest.raises(AccessDeniedError):
        alice.get_session("bob-s1")
    with pytest.raises(AccessDeniedError):
        alice.get_session_summary("bob-s1")
    before = two_users.get_session_summary("alice-s1").total_messages
    alice.store_message(ConversationMessage(session_id="alice-s1", role="human", content="one more"))
    assert two_users.get_session_summary("alice-s1").total_messages == before + 1


def test_recall_and_rehydrate_are_scoped(two_users: ConversationStorage) -> None:
    if not hasattr(ConversationStorage, "recall") or not hasattr(ConversationStorage, "rehydrate"):
        pytest.skip("recall/rehydrate not in this version")
    alice = two_users.for_user("alice")
    hits = alice.recall("secret pizza", limit=20)
    assert hits and {m.user_id for m, _ in hits} == {"alice"}
    for kwargs in ({"user_id": "bob"}, {"session_id": "bob-s1"}):
        with pytest.raises(AccessDeniedError):
            alice.recall("pizza", **kwargs)
    result = alice.rehydrate("alice-s1", "secret pizza")
    assert "bob" not in repr(result)
    with pytest.raises(AccessDeniedError):
        alice.rehydrate("bob-s1", "pizza")


def test_bulk_import_through_a_scoped_store(two_users: ConversationStorage) -> None:
    """Lazy input is checked batch by batch, before each batch is written: a foreign item stops the import
    at its batch, the earlier batches (already committed, as bulk import documents) are alice's own."""
    alice = two_users.for_user("alice")
    own = (ConversationMessage(session_id="alice-s2", role="human", content=f"bulk {i}") for i in range(10))
    assert alice.import_messages(own, batch_size=4).inserted == 10

    def mixed():
        yield from (ConversationMessage(session_id="alice-s2", role="human", content=f"more {i}") for i in range(4))
        yield ConversationMessage(session_id="bob-s2", role="human", content="sneaky")

    with pytest.raises(AccessDeniedError):
        alice.import_messages(mixed(), batch_size=4)
    assert [m.content for m in two_users.get_messages("bob-s2")] == ["bob secret 2 pizza", "reply to bob 2"]


def test_operations_run_the_adapter_way_are_scoped(two_users: ConversationStorage) -> None:
    """Adapters run operation generators with ``store._run(op(store._core, ...))``; on a scoped store the
    generator's own arguments are checked the same way."""
    from ltst_memory import _ops, retention

    alice = two_users.for_user("alice")
    assert alice._run(_ops.get_messages(alice._core, "alice-s1"))[0].content == "alice secret 1 pizza"
    for generator in (
        _ops.get_messages(alice._core, "bob-s1"),
        _ops.search_messages(alice._core, "pizza", user_id="bob"),
        _ops.search_messages(alice._core, "pizza"),  # user_id left None: would search everyone
        retention.cleanup_expired_data(alice._core),  # names no user: administrative
    ):
        with pytest.raises(AccessDeniedError):
            alice._run(generator)
    try:
        from ltst_memory.adapters import _langchain_ops as lc_ops
    except ImportError:
        return
    with pytest.raises(AccessDeniedError):
        alice._run(lc_ops.clear_messages(alice._core, "bob-s1"))
    assert len(two_users.get_messages("bob-s1")) == 2


def test_adapters_accept_a_user_scoped_store(store) -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from ltst_memory.adapters.dspy import LTSTRetriever
    from ltst_memory.adapters.langchain import LTSTChatMessageHistory

    from ltst_memory import AccessDeniedError, ConversationSession

    store.create_session(ConversationSession("bob-private", "bob"))
    alice = store.for_user("alice")
    history = LTSTChatMessageHistory(alice, "alice-chat", user_id="alice")
    history.add_messages([HumanMessage(content="my locker code is 4711"), AIMessage(content="noted")])
    assert [m.content for m in history.messages] == ["my locker code is 4711", "noted"]
    with pytest.raises(AccessDeniedError):
        LTSTChatMessageHistory(alice, "bob-private", user_id="alice").messages  # noqa: B018
    passages = LTSTRetriever(alice, user_id="alice", k=2)("locker code").passages
    assert any("4711" in p for p in passages)
