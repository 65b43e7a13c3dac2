"""Row Level Security (schema/0005_security.sql): the database itself keeps users apart.

These tests connect as a separate, non-owner application role — the deployment docs/security.md
recommends — and check that raw SQL through it sees and writes one user's rows only.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from _helpers import login_role
from ltst_memory.schema import migration_files
from psycopg import sql

from ltst_memory import (
    AccessDeniedError,
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionRelationship,
    UserPreference,
)

TABLES = (
    "conversation_sessions",
    "conversation_messages",
    "conversation_context",
    "user_preferences",
    "session_relationships",
    "session_summary",
    "ltst_retention_policies",
)


@pytest.fixture
def seeded(store: ConversationStorage) -> ConversationStorage:
    for user in ("alice", "bob"):
        store.create_session(ConversationSession(session_id=f"{user}-1", user_id=user))
        store.create_session(ConversationSession(session_id=f"{user}-2", user_id=user))
        store.store_message(ConversationMessage(session_id=f"{user}-1", role="human", content=f"{user} private note"))
        store.store_context(
            ConversationContext(session_id=f"{user}-1", context_type="project", context_key="k", context_value=user)
        )
        store.store_preference(UserPreference(user_id=user, preference_key="lang", preference_value=user))
        store.store_relationship(SessionRelationship(source_session_id=f"{user}-1", target_session_id=f"{user}-2"))
        store.set_retention_policy(user_id=user, message_days=30)
    return store


@pytest.fixture
def app_dsn(database_dsn: str, seeded: ConversationStorage) -> Iterator[str]:
    """A DSN for a LOGIN role that is not the tables' owner, with ordinary read/write grants."""
    with login_role(database_dsn, "ltst_app") as dsn:
        yield dsn


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in TABLES}


def test_owner_sees_everything(seeded: ConversationStorage) -> None:
    with seeded.pool.connection() as conn:
        counts = _counts(conn)
    assert counts["conversation_sessions"] == 4 and counts["conversation_messages"] == 2
    assert counts["ltst_retention_policies"] == 2


def test_raw_sql_without_a_user_sees_and_writes_nothing(app_dsn: str) -> None:
    with psycopg.connect(app_dsn) as conn:
        assert set(_counts(conn).values()) == {0}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO conversation_sessions (session_id, user_id) VALUES ('x', 'mallory')")
        conn.rollback()
        assert conn.execute("UPDATE user_preferences SET preference_value = '1'").rowcount == 0
        assert conn.execute("DELETE FROM conversation_messages").rowcount == 0


def test_raw_sql_scoped_to_alice_cannot_read_or_touch_bobs_rows(app_dsn: str, seeded: ConversationStorage) -> None:
    with psycopg.connect(app_dsn) as conn:
        conn.execute("SET LOCAL ltst.user_id = 'alice'")  # SET LOCAL: Citus sends it on to the workers
        counts = _counts(conn)
        assert counts == {
            "conversation_sessions": 2,
            "conversation_messages": 1,
            "conversation_context": 1,
            "user_preferences": 1,
            "session_relationships": 1,
            "session_summary": 2,
            "ltst_retention_policies": 1,
        }
        users = conn.execute(
            "SELECT DISTINCT user_id FROM conversation_messages UNION SELECT user_id FROM conversation_sessions"
        ).fetchall()
        assert users == [("alice",)]
        # an attacker-chosen predicate still cannot reach bob's rows
        assert conn.execute("SELECT count(*) FROM conversation_messages WHERE user_id = 'bob' OR true").fetchone() == (
            1,
        )
        assert conn.execute("DELETE FROM conversation_messages WHERE user_id = 'bob'").rowcount == 0
        assert conn.execute("UPDATE conversation_sessions SET session_name = 'x' WHERE user_id = 'bob'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # cannot write rows for bob
            conn.execute(
                "INSERT INTO user_preferences (user_id, preference_key, preference_value) VALUES ('bob','k','1')"
            )
        conn.rollback()
        # the setting is transaction-local: after the transaction the connection sees nothing again
        assert set(_counts(conn).values()) == {0}
    with seeded.pool.connection() as conn:  # bob's rows are intact
        assert conn.execute("SELECT count(*) FROM conversation_messages WHERE user_id = 'bob'").fetchone() == (1,)


def test_the_library_on_the_application_role(app_dsn: str, hashing_embedder) -> None:
    """for_user() works through RLS; the unscoped store on the app role sees nothing (fail closed)."""
    with ConversationStorage(app_dsn, embedder=hashing_embedder, auto_migrate=False) as app:
        alice = app.for_user("alice")
        alice.store_message(ConversationMessage(session_id="alice-1", role="ai", content="reply"))
        assert [m.content for m in alice.get_messages("alice-1")] == ["alice private note", "reply"]
        assert {m.user_id for m, _ in alice.search_messages("private note", limit=20)} == {"alice"}
        assert [p.preference_value for p in alice.get_preferences()] == ["alice"]
        assert alice.get_session_summary("alice-1").total_messages == 2
        alice.create_session(ConversationSession(session_id="alice-3", user_id="alice"))
        # RLS hides bob's session from alice: it looks missing rather than forbidden
        assert alice.get_session("bob-1") is None
        with pytest.raises((AccessDeniedError, LookupError)):
            alice.get_messages("bob-1")
        assert app.get_user_sessions("bob") == []
        assert app.search_messages("private note") == []
        removed = alice.delete_user("alice")
        assert removed["sessions"] == 3 and removed["messages"] == 2
    with psycopg.connect(app_dsn) as conn:
        conn.execute("SET LOCAL ltst.user_id = 'bob'")
        assert _counts(conn)["conversation_messages"] == 1


def test_security_migration_is_idempotent(database_dsn: str) -> None:
    (text,) = [sql_text for name, sql_text in migration_files() if name == "0005_security.sql"]
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(text.encode())
        conn.execute(text.encode())
        policies = conn.execute(
            "SELECT tablename FROM pg_policies WHERE policyname = 'ltst_user_isolation' ORDER BY 1"
        ).fetchall()
        forced = conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND NOT relrowsecurity", (list(TABLES),)
        ).fetchall()
    assert set(TABLES) <= {p[0] for p in policies}
    assert forced == []


def test_erasure_on_the_application_role_drops_the_users_own_vector_index(
    database_dsn: str, app_dsn: str, hashing_embedder
) -> None:
    """A user's own vector index (`ltst vector-index`) names them in its definition: erasing them on the
    application role, which does not own the index, drops it; another user's index stays."""
    from ltst_memory.hnsw import build_user_index, user_index_name

    with psycopg.connect(database_dsn, autocommit=True) as owner:
        for user in ("alice", "bob"):
            build_user_index(owner, user)
    with ConversationStorage(app_dsn, embedder=hashing_embedder, auto_migrate=False) as app:
        removed = app.for_user("alice").delete_user("alice")
        assert removed.dropped_index and removed["messages"] == 1
        with pytest.raises(AccessDeniedError):  # the role reaches alice only, in her erasure's transaction
            app.for_user("alice").delete_user("bob")
    with psycopg.connect(database_dsn, autocommit=True) as owner:
        names = {r[0] for r in owner.execute("SELECT indexrelid::regclass::text FROM pg_index")}
        assert user_index_name("bob") in names and user_index_name("alice") not in names
        definitions = " ".join(r[0] for r in owner.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index"))
        assert "'alice'" not in definitions
        # for a user other than the one the transaction may reach, it refuses
        with owner.transaction():
            owner.execute("SET LOCAL ltst.user_id = 'alice'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute("SELECT ltst_drop_user_vector_index('bob')")
        # called outside an erasure, for a user whose messages are still there, it drops nothing
        owner.execute("SET ltst.user_id = 'bob'")
        assert owner.execute("SELECT ltst_drop_user_vector_index('bob')").fetchone() == (False,)
        kept = {r[0] for r in owner.execute("SELECT indexrelid::regclass::text FROM pg_index")}
        assert user_index_name("bob") in kept
