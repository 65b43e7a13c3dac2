"""Boundaries that hold (issue 14): no oracle through ``for_user``, only the library's own tables, a
complete erase, and the RLS application role refused where it would silently do nothing.

Everything runs on the real server; RLS checks connect as a real non-owner LOGIN role.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ltst_memory import (
    AccessDeniedError,
    AsyncConversationStorage,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionRelationship,
    UserPreference,
)

_roles = itertools.count()
QUERY = "bob email address diagnosis"
SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- helpers


def _as_role(dsn: str, role: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo("", **params)


@pytest.fixture
def app_role(database_dsn: str) -> Iterator[str]:
    """A DSN for a LOGIN role that does not own the tables, with the grants docs/security.md lists."""
    role = f"ltst_bnd_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for statement in (
            "GRANT USAGE ON SCHEMA public TO {}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}",
        ):
            conn.execute(sql.SQL(statement).format(sql.Identifier(role)))
    try:
        yield _as_role(database_dsn, role)
    finally:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                (role,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _seed_alice(store: ConversationStorage) -> None:
    for n in (1, 2):
        store.create_session(ConversationSession(session_id=f"alice-{n}", user_id="alice"))
        store.store_messages(
            [
                ConversationMessage(
                    session_id=f"alice-{n}",
                    role="human",
                    content=f"my email address is alice{n}@example.org",
                    metadata={"kind": "secret"},
                ),
                ConversationMessage(session_id=f"alice-{n}", role="ai", content=f"noted, alice {n}"),
            ]
        )
        store.store_context(
            ConversationContext(session_id=f"alice-{n}", context_type="p", context_key="k", context_value="alice")
        )
    store.store_preference(UserPreference(user_id="alice", preference_key="tone", preference_value="warm"))
    store.store_relationship(SessionRelationship(source_session_id="alice-1", target_session_id="alice-2"))


def _seed_bob_secrets(store: ConversationStorage) -> None:
    """Rows of bob that match the probes better than any of alice's (and a cross-user link, as a
    damaged archive import could leave one)."""
    store.create_session(ConversationSession(session_id="bob-1", user_id="bob"))
    store.store_messages(
        [
            ConversationMessage(
                session_id="bob-1",
                role="human",
                content=f"{QUERY}: bob@example.org, diagnosis confidential",
                metadata={"kind": "secret"},
            )
            for _ in range(30)
        ]
    )
    with store.pool.connection() as conn:
        conn.execute(
            "INSERT INTO session_relationships (source_session_id, target_session_id, relationship_type) "
            "VALUES ('alice-1', 'bob-1', 'continues')"
        )


# Every read method of a scoped store, with arguments that would let bob's rows rank if they could.
READ_PROBES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("recall", (QUERY,), {"scope": "all", "metadata": {"kind": "secret"}, "since": SINCE}),
    ("recall", (QUERY,), {"scope": "all"}),
    ("recall", (QUERY,), {}),
    ("recall", (QUERY,), {"scope": "user", "expand_neighbors": 1, "mmr": 0.7}),
    ("recall", (QUERY,), {"session_id": "alice-1", "scope": "related"}),
    ("recall", (QUERY,), {"session_id": "alice-1", "scope": "session"}),
    ("search_messages", (QUERY,), {}),
    ("search_messages", (QUERY,), {"threshold": -1.0, "limit": 50}),
    ("search_messages", (QUERY,), {"session_id": "alice-1"}),
    ("search_unembedded", (QUERY,), {}),
    ("rehydrate", ("alice-1", QUERY), {}),
    ("rehydrate", ("alice-1", QUERY), {"include_other_sessions": False}),
    ("get_user_sessions", (), {}),
    ("get_preferences", (), {}),
    ("get_session", ("alice-1",), {}),
    ("get_session_summary", ("alice-1",), {}),
    ("get_messages", ("alice-1",), {}),
    ("get_recent_messages", ("alice-1",), {}),
    ("get_context", ("alice-1",), {}),
    ("get_related_sessions", ("alice-1",), {}),
]


def _outcome(call: Any) -> str:
    try:
        return repr(call())
    except Exception as exc:  # the probe records errors as outcomes: they must not differ either
        return f"raised {type(exc).__name__}: {exc}"


async def _aoutcome(call: Any) -> str:
    try:
        return repr(await call())
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- finding 2: no oracle


def test_read_methods_cover_every_scoped_read(store: ConversationStorage) -> None:
    """The probe list names every read method a scoped store has (a new one must be probed too)."""
    from ltst_memory._executor import is_read_only
    from ltst_memory.scoped import scoped_methods

    reads = {name for name, (_, op) in scoped_methods(ConversationStorage).items() if is_read_only(op)}
    assert reads <= {name for name, _, _ in READ_PROBES}


def test_scoped_reads_are_no_oracle(store: ConversationStorage) -> None:
    """alice's scoped store answers every read the same, with no error, whether or not bob's secret rows
    exist and would rank first: the user filter is inside the SQL, results are not judged afterwards."""
    _seed_alice(store)
    alice = store.for_user("alice")
    before = [_outcome(lambda n=n, a=a, k=k: getattr(alice, n)(*a, **k)) for n, a, k in READ_PROBES]
    assert not [o for o in before if o.startswith("raised")]
    _seed_bob_secrets(store)
    # bob's rows do rank for an unscoped caller
    top, _ = store.recall(QUERY, scope="all", metadata={"kind": "secret"}, since=SINCE)[0]
    assert top.user_id == "bob"
    after = [_outcome(lambda n=n, a=a, k=k: getattr(alice, n)(*a, **k)) for n, a, k in READ_PROBES]
    for (name, args, kwargs), old, new in zip(READ_PROBES, before, after, strict=True):
        assert new == old, f"{name}{args}{kwargs} changed when bob's rows were added"
    assert "bob@example.org" not in "".join(after) and "bob-1" not in "".join(after)


async def test_async_scoped_reads_are_no_oracle(database_dsn: str, hashing_embedder: Any) -> None:
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as sync_store:
        _seed_alice(sync_store)
        async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as astore:
            alice = astore.for_user("alice")
            before = [await _aoutcome(lambda n=n, a=a, k=k: getattr(alice, n)(*a, **k)) for n, a, k in READ_PROBES]
            assert not [o for o in before if o.startswith("raised")]
            _seed_bob_secrets(sync_store)
            after = [await _aoutcome(lambda n=n, a=a, k=k: getattr(alice, n)(*a, **k)) for n, a, k in READ_PROBES]
    for (name, args, kwargs), old, new in zip(READ_PROBES, before, after, strict=True):
        assert new == old, f"{name}{args}{kwargs} changed when bob's rows were added"


def test_explicit_other_user_is_refused_before_any_query(store: ConversationStorage) -> None:
    """Naming bob is refused whatever the data: the same error with or without bob's rows."""
    _seed_alice(store)
    alice = store.for_user("alice")
    calls = [
        lambda: alice.recall(QUERY, user_id="bob", scope="all"),
        lambda: alice.search_messages(QUERY, user_id="bob"),
        lambda: alice.get_preferences("bob"),
        lambda: alice.get_user_sessions("bob"),
    ]
    before = [_outcome(c) for c in calls]
    _seed_bob_secrets(store)
    assert [_outcome(c) for c in calls] == before
    for call in calls:
        with pytest.raises(AccessDeniedError):
            call()
