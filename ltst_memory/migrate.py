"""Apply the SQL migrations of :mod:`ltst_memory.schema` and check the embedding model.

Each migration runs in its own transaction, all of them under one advisory lock, so several
processes opening the same database at once apply each file exactly once. Files are idempotent
by themselves (they can also be run with ``psql -f``); the ``ltst_migrations`` table records what
was applied, with a checksum.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg

from . import _queries as q
from ._queries import MIGRATION_LOCK_KEY
from .errors import EmbeddingDimensionError, MigrationError
from .hnsw import (
    INDEX_DEFINITION,
    INDEX_NAME,
    LEGACY_INDEX_NAME,
    index_ddl,
    index_storage,
    lists_for,
    watermark_now,
)
from .schema import migration_files

__all__ = ["MIGRATION_LOCK_KEY", "applied_migrations", "ensure_embedding_model", "migrate"]

logger = logging.getLogger(__name__)


#: Checksums of earlier texts of shipped migrations that were edited on purpose and stay valid where
#: applied: 0005 scanned the catalog for every table with a user_id column (an application's tables
#: included) and now names the library's tables; 0009 repairs databases that ran the earlier text.
SUPERSEDED_CHECKSUMS: dict[str, frozenset[str]] = {
    "0005_security.sql": frozenset({"e964861cd7fba1c5309edd07923baaef204320a19959d3ff17697ebab2f9c6c5"}),
}


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    """``{name: checksum}`` of the migrations recorded in the database (empty before the first)."""
    exists = conn.execute("SELECT to_regclass('ltst_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {name: checksum for name, checksum in conn.execute("SELECT name, checksum FROM ltst_migrations")}


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now.

    On a database converted with ``ltst citus-prepare`` (docs/citus.md), ``schema/citus/distribute.sql``
    runs again after any new migration. ``conn`` must not be inside a transaction; it is left in
    autocommit-off idle state.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("migrate() needs a connection outside any transaction: commit or roll back first")
    applied_now: list[str] = []
    previous_autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            done = applied_migrations(conn)
            citus = bool(done) and _converted_for_citus(conn)
            for name, sql in migration_files():
                checksum = _checksum(sql)
                if name in done:
                    if done[name] not in (None, checksum, *SUPERSEDED_CHECKSUMS.get(name, ())):
                        raise MigrationError(
                            f"migration {name} in the database differs from this version of ltst-memory "
                            "(checksum mismatch); do not edit applied migrations, add a new one"
                        )
                    continue
                logger.info("applying migration %s", name)
                try:
                    with conn.transaction():
                        if citus:  # DDL on distributed tables and functions in one transaction: Citus
                            conn.execute(CITUS_SEQUENTIAL)  # wants one connection per node for both
                            from ._cli_citus import split_statements  # and one statement at a time

                            for statement in split_statements(sql):
                                conn.execute(statement.encode("utf-8"))
                        else:
                            conn.execute(sql.encode("utf-8"))  # bytes: no parameter parsing of '%'
                        conn.execute(
                            "INSERT INTO ltst_migrations (name, checksum) VALUES (%s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum",
                            (name, checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {name} failed: {exc}") from exc
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        if applied_now and _converted_for_citus(conn):
            from ._cli_citus import prepare_for_citus

            logger.info("converted for Citus: applying schema/citus/distribute.sql again after %s", applied_now)
            prepare_for_citus(conn)
    finally:
        conn.autocommit = previous_autocommit
    return applied_now


CITUS_SEQUENTIAL = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"
CONVERTED_FOR_CITUS = "SELECT EXISTS (SELECT 1 FROM ltst_metadata WHERE key = 'citus_distribution_column')"


def _converted_for_citus(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``ltst citus-prepare`` converted this database (docs/citus.md): after a new migration its
    file runs again, so that the keys, trigger functions and distribution stay as a cluster needs them."""
    row = conn.execute(CONVERTED_FOR_CITUS).fetchone()
    return bool(row and row[0])


#: Whether any message has an embedding, seen by the schema owner (RLS would hide rows from other roles).
EMBEDDINGS_EXIST = "SELECT ltst_embeddings_exist()"
EMBEDDINGS_EXIST_DIRECT = "SELECT EXISTS (SELECT 1 FROM conversation_messages WHERE embedding IS NOT NULL)"
ROW_SECURITY_ACTIVE = "SELECT row_security_active('conversation_messages')"
HAS_EMBEDDINGS_EXIST = "SELECT to_regprocedure('ltst_embeddings_exist()') IS NOT NULL"


def _embeddings_exist(conn: psycopg.Connection[Any]) -> bool:
    """Whether the store holds any embedding, whatever rows the connection's role may see."""
    row = conn.execute(HAS_EMBEDDINGS_EXIST).fetchone()
    if row and row[0]:
        found = conn.execute(EMBEDDINGS_EXIST).fetchone()
        return bool(found and found[0])
    restricted = conn.execute(ROW_SECURITY_ACTIVE).fetchone()
    if restricted and restricted[0]:  # a schema before 0009 on a role under RLS: it cannot tell
        raise MigrationError(
            "this role is subject to Row Level Security and the database lacks migration 0009: the "
            "embedding-model check cannot see every row; run `ltst migrate` as the tables' owner"
        )
    found = conn.execute(EMBEDDINGS_EXIST_DIRECT).fetchone()
    return bool(found and found[0])


def ensure_embedding_model(conn: psycopg.Connection[Any], model_name: str, dimension: int) -> None:
    """Check that the database was set up for this embedding model, adopting it on an empty store.

    With no embedding stored yet, a different model or dimension is adopted: the column is resized
    and its vector index rebuilt. Otherwise a different dimension raises EmbeddingDimensionError and a
    different model of the same dimension raises it too (vectors of two models do not compare).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        meta = dict(conn.execute(q.SELECT_METADATA).fetchall())
        stored_model = meta.get("embedding_model")
        stored_dim = int(meta.get("embedding_dimension", "0") or 0)
        if stored_model == model_name and stored_dim == dimension:
            return
        if _embeddings_exist(conn):
            if stored_dim == dimension:
                raise EmbeddingDimensionError(
                    f"this database holds embeddings of the model {stored_model!r} but the store was opened "
                    f"with {model_name!r}: both have {dimension} dimensions, but vectors of two models do not "
                    "compare; open it with the same model, use another database (LTST_DATA_DIR, --dsn), or "
                    "re-embed every message with `ltst reembed`"
                )
            raise EmbeddingDimensionError(
                f"this database holds embeddings of {stored_model!r} ({stored_dim} dimensions) but the "
                f"store was opened with {model_name!r} ({dimension} dimensions); open it with the same "
                "model, or re-embed every message with `ltst reembed`"
            )
        if stored_dim != dimension:
            logger.info("resizing the embedding column from %s to %s dimensions", stored_dim, dimension)
            storage = index_storage(conn)  # the index is rebuilt as it was: vector or halfvec
            row = conn.execute(INDEX_DEFINITION).fetchone()
            had_index = bool(row and row[0])
            for name in (INDEX_NAME, LEGACY_INDEX_NAME):
                conn.execute(psycopg.sql.SQL("DROP INDEX IF EXISTS {}").format(psycopg.sql.Identifier(name)))
            conn.execute(
                psycopg.sql.SQL("ALTER TABLE conversation_messages ALTER COLUMN embedding TYPE vector({})").format(
                    psycopg.sql.Literal(int(dimension))
                )
            )
            if had_index:
                conn.execute(index_ddl(storage, dimension, lists=lists_for(0), watermark=watermark_now(conn)))
        for key, value in (("embedding_model", model_name), ("embedding_dimension", str(dimension))):
            conn.execute(q.UPSERT_METADATA, {"key": key, "value": value})
