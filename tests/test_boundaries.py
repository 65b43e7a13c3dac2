"""Boundaries that hold (issue 14): no oracle through ``for_user``, only the library's own tables, a
complete erase, and the RLS application role refused where it would silently do nothing.

Everything runs on the real server; RLS checks connect as a real non-owner LOGIN role.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import _citus
import psycopg
import pytest
from _helpers import login_role
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

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

QUERY = "bob email address diagnosis"
SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def app_role(database_dsn: str) -> Iterator[str]:
    """A DSN for a LOGIN role that does not own the tables, with the grants docs/security.md lists."""
    with login_role(database_dsn, "ltst_bnd") as dsn:
        yield dsn


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
        if not _citus.CITUS_DSN:
            conn.execute(
                "INSERT INTO session_relationships (source_session_id, target_session_id, relationship_type) "
                "VALUES ('alice-1', 'bob-1', 'continues')"
            )
            return
        # On a Citus cluster a link names its user (the distribution column), and its foreign keys pair
        # it with both sessions: a link across users cannot be stored at all.
        for user in ("alice", "bob"):
            with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO session_relationships "
                    "(source_session_id, target_session_id, relationship_type, user_id) "
                    "VALUES ('alice-1', 'bob-1', 'continues', %s)",
                    (user,),
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


# --------------------------------------------------------------------------- finding 4: tables we do not own

APP_TABLES = ("app_orders", "app_invoices")


def _create_app_tables(dsn: str) -> None:
    """An application's own tables with user_id columns, in the same schema, created before ltst-memory."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE app_orders (id serial PRIMARY KEY, user_id text NOT NULL, total numeric)")
        conn.execute("CREATE TABLE app_invoices (id serial PRIMARY KEY, user_id text NOT NULL, note text)")
        conn.execute("INSERT INTO app_orders (user_id, total) VALUES ('bob', 10), ('alice', 20), ('bob', 30)")
        conn.execute("INSERT INTO app_invoices (user_id, note) VALUES ('bob', 'paid'), ('carol', 'due')")
        # the application's own RLS on one of them, and its own grants
        conn.execute("ALTER TABLE app_invoices ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY app_own ON app_invoices USING (note <> 'hidden')")
        conn.execute("GRANT SELECT ON app_orders TO PUBLIC")


def _app_fingerprint(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return {
            table: {
                "rows": conn.execute(
                    sql.SQL("SELECT to_jsonb(t)::text FROM {} AS t ORDER BY 1").format(sql.Identifier(table))
                ).fetchall(),
                "class": conn.execute(
                    "SELECT relrowsecurity, relforcerowsecurity, relacl::text FROM pg_class WHERE oid = %s::regclass",
                    (table,),
                ).fetchone(),
                "policies": conn.execute(
                    "SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = %s::regclass "
                    "ORDER BY 1",
                    (table,),
                ).fetchall(),
            }
            for table in APP_TABLES
        }


def test_tables_the_library_does_not_own_are_untouched(empty_database_dsn: str, hashing_embedder: Any) -> None:
    """Application tables with user_id columns beside the store: migrate, RLS app role, delete_user and
    retention leave their rows, policies, grants and RLS flags as they were."""
    from ltst_memory._tables import owned_table_names

    _create_app_tables(empty_database_dsn)
    before = _app_fingerprint(empty_database_dsn)
    with ConversationStorage(empty_database_dsn, embedder=hashing_embedder) as store:  # migrates
        store.create_session(ConversationSession(session_id="bob-1", user_id="bob"))
        store.store_message(ConversationMessage(session_id="bob-1", role="human", content="hello"))
        store.set_retention_policy(message_days=0)
        assert _app_fingerprint(empty_database_dsn) == before
        grants = (
            "GRANT USAGE ON SCHEMA public TO {}",
            *(  # the library's tables only (docs/security.md)
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO {{}}'
                for table in sorted(owned_table_names() - {"ltst_owned_tables"})
            ),
        )
        with (
            login_role(empty_database_dsn, "ltst_bnd", grants) as app_dsn,
            ConversationStorage(app_dsn, embedder=hashing_embedder, auto_migrate=False) as app,
        ):
            app.for_user("bob").get_user_sessions()
            app.delete_user("alice")
            app.cleanup_expired_data()
        removed = store.delete_user("bob")
        assert removed["sessions"] == 1 and removed["messages"] == 0  # retention took the message
        store.cleanup_expired_data()
        store.migrate()
    after = _app_fingerprint(empty_database_dsn)
    assert after == before


def test_0009_repairs_a_database_that_0005_gave_to_rls(empty_database_dsn: str, hashing_embedder: Any) -> None:
    """A database migrated by an earlier version (0005 put its policy on app tables): 0009 removes it."""
    _create_app_tables(empty_database_dsn)
    before = _app_fingerprint(empty_database_dsn)
    with ConversationStorage(empty_database_dsn, embedder=hashing_embedder):
        pass
    from ltst_memory.schema import migration_files

    (repair,) = [text for name, text in migration_files() if name.startswith("0009_")]
    with psycopg.connect(empty_database_dsn, autocommit=True) as conn:
        for table in APP_TABLES:  # what 0005 did before it named its tables
            conn.execute(sql.SQL("SELECT ltst_enable_rls({}::regclass)").format(sql.Literal(table)))
        assert _app_fingerprint(empty_database_dsn) != before
        conn.execute(repair.encode())
        conn.execute(repair.encode())
    assert _app_fingerprint(empty_database_dsn) == before


def test_the_owned_table_list_is_the_databases(store: ConversationStorage) -> None:
    """ltst_memory/_tables.py and the database's ltst_owned_tables (read by the SQL functions) agree, and
    every table the migrations created is in the list."""
    from ltst_memory._tables import OWNED_TABLES

    with store.pool.connection() as conn:
        listed = {
            r[0]: (r[1], tuple(r[2]), r[3])
            for r in conn.execute(
                "SELECT table_name, user_column, session_columns, erase_order FROM ltst_owned_tables"
            ).fetchall()
        }
        created = {
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace"
            ).fetchall()
        }
    assert listed == {t.name: (t.user_column, t.session_columns, t.erase_order) for t in OWNED_TABLES}
    assert created <= set(listed)


# --------------------------------------------------------------------------- finding 9: no silent no-ops


def _seed_two_users(store: ConversationStorage) -> None:
    old = datetime.now(timezone.utc) - timedelta(days=10)
    for user in ("alice", "bob"):
        store.create_session(ConversationSession(session_id=f"{user}-1", user_id=user))
        store.store_messages(
            [
                ConversationMessage(session_id=f"{user}-1", role="human", content=f"{user} old", timestamp=old),
                ConversationMessage(session_id=f"{user}-1", role="ai", content=f"{user} new"),
            ]
        )
        store.store_context(
            ConversationContext(
                session_id=f"{user}-1", context_type="t", context_key="gone", context_value="x", expires_at=old
            )
        )
        store.store_preference(UserPreference(user_id=user, preference_key="k", preference_value=user))
    store.set_retention_policy(user_id="bob", message_days=5)


def _count(store: ConversationStorage, table: str, user: str) -> int:
    with store.pool.connection() as conn:
        query = sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier(table))
        return int(conn.execute(query, (user,)).fetchone()[0])


def test_erase_and_retention_work_on_the_rls_app_role(
    store: ConversationStorage, app_role: str, hashing_embedder: Any
) -> None:
    """Unscoped delete_user and cleanup_expired_data on the RLS app role do what they do on the owner."""
    _seed_two_users(store)
    with ConversationStorage(app_role, embedder=hashing_embedder, auto_migrate=False) as app:
        assert app.get_user_sessions("bob") == []  # the unscoped app role sees no row by itself
        cleaned = app.cleanup_expired_data()
        assert cleaned == {"context": 2, "messages": 1}
        assert _count(store, "conversation_messages", "bob") == 1
        erased = app.delete_user("bob")
        assert erased["sessions"] == 1 and erased["messages"] == 1 and erased["preferences"] == 1
        assert erased.complete
    for table in ("conversation_sessions", "conversation_messages", "user_preferences", "ltst_term_stats"):
        assert _count(store, table, "bob") == 0, table
    assert _count(store, "conversation_messages", "alice") == 2  # alice untouched


# --------------------------------------------------------------------------- finding 6: model check under RLS


def test_model_check_sees_every_row_on_the_rls_app_role(store: ConversationStorage, app_role: str) -> None:
    from ltst_memory import EmbeddingDimensionError, HashingEmbedder

    _seed_two_users(store)
    other_model = HashingEmbedder(store.embedder.dimension, model_name="another-model")
    with pytest.raises(EmbeddingDimensionError):
        ConversationStorage(app_role, embedder=other_model, auto_migrate=False)
    with store.pool.connection() as conn:
        meta = dict(conn.execute("SELECT key, value FROM ltst_metadata").fetchall())
    assert meta["embedding_model"] == store.embedder.model_name
    with ConversationStorage(store.dsn, embedder=store.embedder) as owner:  # the owner still opens it
        assert owner.get_session("bob-1") is not None


# --------------------------------------------------------------------------- finding 8: a complete erase


def _on_data_nodes(conn: psycopg.Connection[Any], command: str) -> str:
    """Run ``command`` where the rows are, its text results joined: this server, or on a Citus cluster
    every worker (the shards' rows and statistics; the coordinator's tables hold no row)."""
    if not _citus.CITUS_DSN:
        cursor = conn.execute(command.encode())
        row = cursor.fetchone() if cursor.description else None
        return "" if row is None or row[0] is None else str(row[0])
    rows = conn.execute("SELECT success, result FROM run_command_on_workers(%s)", (command,)).fetchall()
    assert all(success for success, _ in rows), rows
    return " ".join(result for _, result in rows if result)


def test_erase_is_complete_rows_statistics_and_other_stores(store: ConversationStorage, hashing_embedder: Any) -> None:
    """After delete_user: no row of the user in any library table, no sampled value of theirs in
    pg_stats, and another store on the same database does not serve their session."""
    from ltst_memory._tables import OWNED_TABLES

    _seed_two_users(store)
    store.store_messages(
        [ConversationMessage(session_id="bob-1", role="human", content="bob-secret-token") for _ in range(200)]
    )
    if not _citus.CITUS_DSN:  # bob's term index (not built on a Citus cluster): erased with the rest
        from ltst_memory.lexical_index import build_lexical_index

        with psycopg.connect(store.dsn, autocommit=True) as conn:
            assert build_lexical_index(conn, "bob").postings > 0
    other = ConversationStorage(store.dsn, embedder=hashing_embedder)
    try:
        assert other.get_session("bob-1") is not None
        with store.pool.connection() as conn:
            _on_data_nodes(conn, "ANALYZE")
            stats = _on_data_nodes(conn, "SELECT string_agg(most_common_vals::text, ' ') FROM pg_stats")
        assert "bob-secret-token" in stats and "bob" in stats
        erased = store.delete_user("bob")
        assert erased.complete and erased["messages"] == 202
        with store.pool.connection() as conn:
            for table in OWNED_TABLES:
                columns = {
                    r[0]
                    for r in conn.execute(
                        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND NOT attisdropped",
                        (table.name,),
                    ).fetchall()
                }
                if table.user_column in columns:
                    assert _count(store, table.name, "bob") == 0, table.name
                for column in table.session_columns:
                    query = sql.SQL("SELECT count(*) FROM {} WHERE {} = 'bob-1'").format(
                        sql.Identifier(table.name), sql.Identifier(column)
                    )
                    assert conn.execute(query).fetchone() == (0,), table.name
            tables = sql.Literal([t.name for t in OWNED_TABLES]).as_string(conn)
            leftovers = _on_data_nodes(
                conn,
                "SELECT string_agg(tablename || '.' || attname, ', ') FROM pg_stats "
                f"WHERE regexp_replace(tablename, '_[0-9]+$', '') = ANY({tables}::text[]) AND "  # (shards: name_id)
                "(coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '')) ~ 'bob'",
            )
        assert leftovers == ""
        assert other.get_session("bob-1") is None  # the second store's cache (off by default) serves nothing
        assert other.get_user_sessions("bob") == []
    finally:
        other.close()


def test_erasing_the_only_user_of_a_table_leaves_no_statistics(store: ConversationStorage) -> None:
    """ANALYZE keeps the statistics of a table it finds empty: an erasure that empties a table (on a
    Citus cluster, a shard) clears them, so no sampled value of the erased user stays in pg_stats."""
    from ltst_memory._tables import OWNED_TABLES

    store.create_session(ConversationSession(session_id="bob-1", user_id="bob"))
    store.store_messages(
        [ConversationMessage(session_id="bob-1", role="human", content="bob-secret-token") for _ in range(100)]
    )
    with store.pool.connection() as conn:
        tables = sql.Literal([t.name for t in OWNED_TABLES]).as_string(conn)
        probe = (
            "SELECT string_agg(DISTINCT regexp_replace(tablename, '_[0-9]+$', ''), ', ') FROM pg_stats "
            f"WHERE regexp_replace(tablename, '_[0-9]+$', '') = ANY({tables}::text[]) AND "
            "(coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '')) ~ 'bob'"
        )
        _on_data_nodes(conn, "ANALYZE")
        assert "conversation_messages" in _on_data_nodes(conn, probe)
    erased = store.delete_user("bob")
    assert erased["messages"] == 100
    with store.pool.connection() as conn:
        assert _on_data_nodes(conn, probe) == ""


def test_erase_says_when_a_table_holds_rows_it_cannot_attribute(store: ConversationStorage) -> None:
    """An adapter table without its owner column (before migration 0010) cannot be erased by user:
    delete_user says so instead of claiming a complete erase."""
    with store.pool.connection() as conn:
        conn.execute("INSERT INTO ltst_collections (collection) VALUES ('bob-notes')")
        has_owner = conn.execute("SELECT ltst_has_owner_column('ltst_collections')").fetchone()[0]
    erased = store.delete_user("bob")
    if has_owner:  # migration 0010 gave adapter rows an owner: the ownerless row is no one's, and reached
        assert erased.complete
    else:
        assert not erased.complete and erased.not_reached == ("ltst_collections",)


def test_summarize_session_invalidates_the_cache(store: ConversationStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltst_memory.cache import cache_of

    cache_of(store).ttl = 3600  # turned on for this store
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.store_message(ConversationMessage(session_id="s", role="human", content="we talked about tea"))
    assert store.get_session("s").context_summary is None  # now cached
    store.summarize_session("s", summary="tea")
    assert store.get_session("s").context_summary == "tea"


def test_no_migration_touches_application_tables(empty_database_dsn: str) -> None:
    """Each migration file on its own (as with psql -f) leaves application tables alone, 0005 included."""
    from ltst_memory.schema import migration_files

    from ltst_memory.migrate import SUPERSEDED_CHECKSUMS, migrate

    _create_app_tables(empty_database_dsn)
    before = _app_fingerprint(empty_database_dsn)
    with psycopg.connect(empty_database_dsn, autocommit=True) as conn:
        for name, text in migration_files():
            conn.execute(text.encode())
            assert _app_fingerprint(empty_database_dsn) == before, name
        # a database that recorded 0005's earlier text (which scanned the catalog) still migrates
        migrate(conn)
        (old,) = SUPERSEDED_CHECKSUMS["0005_security.sql"]
        conn.execute("UPDATE ltst_migrations SET checksum = %s WHERE name = '0005_security.sql'", (old,))
        assert migrate(conn) == []


# --------------------------------------------------------------------------- finding 11: a role per tenant


def test_a_role_pinned_to_a_user_cannot_reach_another(
    store: ConversationStorage, app_role: str, hashing_embedder: Any
) -> None:
    """ltst.user_id is a setting any client can change; a login role pinned with ltst_pin_role() sees its
    user's rows only, whatever it sets, and cannot erase anyone else."""
    _seed_two_users(store)
    role = conninfo_to_dict(app_role)["user"]
    with store.pool.connection() as conn:
        conn.execute("SELECT ltst_pin_role(%s, 'alice')", (role,))
    with psycopg.connect(app_role) as conn:
        conn.execute("SELECT set_config('ltst.user_id', 'bob', false)")  # hostile code on the connection
        users = conn.execute("SELECT DISTINCT user_id FROM conversation_messages").fetchall()
        assert users == [("alice",)]
        assert conn.execute("SELECT count(*) FROM session_summary").fetchone() == (1,)
        assert conn.execute("DELETE FROM conversation_messages WHERE user_id = 'bob'").rowcount == 0
        assert conn.execute("UPDATE ltst_pinned_roles SET user_id = 'bob'").rowcount == 0  # nor unpin itself
        assert conn.execute("DELETE FROM ltst_pinned_roles").rowcount == 0
    with ConversationStorage(app_role, embedder=hashing_embedder, auto_migrate=False) as app:
        assert [s.session_id for s in app.get_user_sessions("alice")] == ["alice-1"]
        assert app.for_user("bob").get_user_sessions() == []
        with pytest.raises(AccessDeniedError):
            app.delete_user("bob")
        assert app.delete_user("alice")["sessions"] == 1
    assert _count(store, "conversation_messages", "bob") == 2
