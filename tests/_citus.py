"""The test suite on a Citus cluster: ``LTST_TEST_CITUS_DSN`` names the coordinator (a superuser DSN of
a database with the ``citus`` extension and its workers added); unset, nothing here is used.

With it, the fixtures of ``conftest.py`` use that one database instead of a fresh clone per test (Citus
keeps its metadata per database, on every node: a database cannot be cloned). The session migrates it
and converts it with :func:`ltst_memory._cli_citus.prepare_for_citus`; before each test every table of
user data is truncated and the bookkeeping rows are put back as they were. Tests that cannot apply to a
cluster are skipped by name, with the reason, from :data:`SKIPS` (the one list).

    dsn=$(PYTHON=python ../shared/tools/citus/cluster start "$(mktemp -d)" 2 55430)
    LTST_TEST_CITUS_DSN="$dsn" python -m pytest -q tests/...
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ltst_memory._cli_citus import prepare_for_citus
from ltst_memory.hnsw import INDEX_NAME
from ltst_memory.migrate import migrate

#: The coordinator's DSN, or "" (the suite runs on one server as usual).
CITUS_DSN = os.environ.get("LTST_TEST_CITUS_DSN", "")

#: Shards per distributed table in the test database (Citus's default is 32; a test truncates every
#: shard, so fewer shards keep the run short). The plans are the same: one shard or all of them.
TEST_SHARD_COUNT = 4

#: Tests that cannot apply to a cluster, by name (``module::test`` or ``module`` for a whole file),
#: with the reason. The one list.
SKIPS: dict[str, str] = {
    "test_migrations.py": "creates and clones databases of its own (a Citus database cannot be cloned)",
    "test_embedded_server.py": "about the embedded server, not the database behind the store",
    "test_embedded_tuning.py": "about the embedded server, not the database behind the store",
    "test_faults.py": "crashes and restarts embedded servers of its own",
    "test_public_api.py": "needs the embedded server",
    "test_citus_colocation.py": "converts a single-node database with psql; the cluster is converted already",
    "test_read_replica.py": "replicas are tested on one server (a role, a copy): routing does not depend on Citus",
    "test_replica_streaming.py": "streams a standby of the embedded server",
    "test_pooled.py::test_quiet_check_sees_a_connection_the_server_ended": (
        "calls pg_terminate_backend(smallint), which Citus overloads (ambiguous)"
    ),
    "test_hostile_errors.py::test_sqlstate_classification_of_real_server_errors": (
        "provokes server errors by statements Citus plans differently (its own SQLSTATEs)"
    ),
    "test_bulk_rows.py::test_server_error_during_copy_writes_nothing_of_the_batch": (
        "creates a function of its own without OR REPLACE (the cluster's one database keeps it)"
    ),
    "test_hnsw_storage.py": "reads single-node plans and index definitions (shards have their own index names)",
    "test_crypto.py::test_ciphertext_moved_to_another_user_is_refused": (
        "moves a ciphertext between users by raw SQL with a subquery over two users' rows (not one shard)"
    ),
    "test_vector_index.py::test_a_users_own_index_is_what_their_searches_read": (
        "per-user (partial) vector indexes are not built on a Citus cluster (hnsw.build_user_indexes builds "
        "nothing there)"
    ),
    **{
        f"test_vector_index.py::{name}": (
            "per-user vector indexes (and their gap btrees) are not built on a Citus cluster "
            "(hnsw.build_user_index refuses)"
        )
        for name in (
            "test_a_large_users_search_equals_brute_force_with_filters_and_new_messages",
            "test_a_large_users_search_returns_k_rows_when_the_index_scan_stops_early",
            "test_erasure_drops_the_users_own_index_and_gap",
            "test_vector_index_rebuilds_an_own_index_once_its_gap_has_grown",
        )
    },
    "test_rls.py::test_erasure_on_the_application_role_drops_the_users_own_vector_index": (
        "per-user vector indexes are not built on a Citus cluster (hnsw.build_user_index refuses)"
    ),
    "test_term_pending.py": (
        "store_message's pending statistics are single-server (on a cluster it appends through the triggers "
        "and ltst_term_pending stays empty: tests/test_append_path.py covers the cluster's appends)"
    ),
    "test_lexical_index.py": (
        "term indexes are not built on a Citus cluster (lexical_index refuses; recall there scores every "
        "match, tests/test_bm25.py)"
    ),
    **{
        f"test_vector_index.py::{name}": (
            "the main vector index has no watermark on a Citus cluster (each shard's index covers every "
            "message; ltst vector-index rebuilds it every run)"
        )
        for name in (
            "test_cli_builds_and_shows_the_index",
            "test_the_main_index_covers_messages_up_to_its_watermark_and_searches_read_the_gap",
            "test_refresh_rebuilds_the_main_index_once_its_gap_has_grown",
            "test_an_index_over_every_message_serves_until_refresh_replaces_it",
        )
    },
    "test_rls.py::test_security_migration_is_idempotent": (
        "runs a migration's text as one multi-statement command; on a cluster migrate() runs migrations one "
        "statement at a time (tested by test_citus_cluster's next-migration test)"
    ),
}

#: Tables whose rows are bookkeeping (kept and restored), not user data (truncated before each test).
KEEP = ("ltst_migrations", "ltst_metadata", "ltst_owned_tables")

_state: dict[str, Any] = {}


def skip_reason(nodeid: str) -> str | None:
    """Why the test ``nodeid`` (``tests/test_x.py::test_y[param]``) is skipped on a cluster, if it is."""
    path, _, name = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1]
    return SKIPS.get(f"{module}::{name.split('[')[0]}") or SKIPS.get(module)


def prepare() -> str:
    """Once per run: migrate and convert the cluster's database, remember its bookkeeping rows."""
    if "dsn" not in _state:
        with psycopg.connect(CITUS_DSN, autocommit=True, options=f"-c citus.shard_count={TEST_SHARD_COUNT}") as conn:
            migrate(conn)
            prepare_for_citus(conn)
            _state["metadata"] = conn.execute("SELECT key, value FROM ltst_metadata").fetchall()
            _state["owned"] = conn.execute("SELECT * FROM ltst_owned_tables").fetchall()
            _state["tables"] = [
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_class AS c WHERE c.relkind IN ('r', 'p') AND c.relnamespace = "
                    "(SELECT relnamespace FROM pg_class WHERE oid = 'conversation_sessions'::regclass) "
                    "AND (c.relname LIKE 'ltst\\_%%' OR c.relname LIKE 'conversation\\_%%' "
                    "OR c.relname IN ('session_summary', 'session_relationships', 'user_preferences')) "
                    "AND c.oid IN (SELECT logicalrelid FROM pg_dist_partition) ORDER BY 1"
                )
                if r[0] not in KEEP
            ]
            _state["dimension"] = _dimension(conn)
        _state["dsn"] = CITUS_DSN
    return str(_state["dsn"])


def _dimension(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'conversation_messages'::regclass AND attname = 'embedding'"
    ).fetchone()
    return str(row[0]) if row else ""


def reset() -> str:
    """Before a test: no user data, the bookkeeping rows of the converted database. Returns its DSN."""
    dsn = prepare()
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, _state["tables"]))))
        conn.execute("DELETE FROM ltst_metadata")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ltst_metadata (key, value) VALUES (%s, %s)", _state["metadata"])
        if list(conn.execute("SELECT * FROM ltst_owned_tables")) != _state["owned"]:
            conn.execute("DELETE FROM ltst_owned_tables")
            with conn.cursor() as cur:
                columns = sql.SQL(", ").join(sql.Placeholder() * len(_state["owned"][0]))
                cur.executemany(sql.SQL("INSERT INTO ltst_owned_tables VALUES ({})").format(columns), _state["owned"])
        # no vector index (as after the migrations: `ltst vector-index` builds it), the first dimension
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(INDEX_NAME)))
        if _dimension(conn) != _state["dimension"]:  # a test opened a store of another dimension
            conn.execute(
                sql.SQL("ALTER TABLE conversation_messages ALTER COLUMN embedding TYPE {}").format(
                    sql.SQL(_state["dimension"])
                )
            )
    return make_conninfo(dsn)
