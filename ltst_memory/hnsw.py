"""The HNSW index on message embeddings, stored as ``vector`` (float32, the default) or ``halfvec``.

``halfvec`` keeps the embeddings in the table as float32 and indexes their float16 copies: an
expression index ``USING hnsw ((embedding::halfvec(d)) halfvec_cosine_ops)``. The graph is about half
the size, so twice as many messages fit in memory before searches start reading from disk. Only the
walk of the graph uses float16: the store re-ranks what the index returns with the float32 distance,
and the similarities it reports are the float32 ones. Measured in docs/benchmarks.md ("HNSW storage").

Switch with ``ltst hnsw-storage halfvec`` (or :func:`set_index_storage`): it rebuilds the index (minutes
for millions of rows; searches of large scopes fall back to exact scans meanwhile). A store finds out
which index exists on its first search of a large scope, so reopen long-lived stores after switching.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import psycopg
from psycopg import sql

from ._queries import MIGRATION_LOCK_KEY
from .errors import ValidationError

__all__ = ["INDEX_NAME", "STORAGES", "HnswStorage", "index_ddl", "index_storage", "order_by", "set_index_storage"]

logger = logging.getLogger(__name__)

HnswStorage = Literal["vector", "halfvec"]
STORAGES: tuple[HnswStorage, ...] = ("vector", "halfvec")
INDEX_NAME = "idx_messages_embedding_hnsw"
#: Graph parameters, chosen by measurement (docs/benchmarks.md, section 3).
M, EF_CONSTRUCTION = 16, 64

#: The definition of the index in use (NULL without one), resolved through the search_path.
INDEX_DEFINITION = f"SELECT pg_get_indexdef(to_regclass('{INDEX_NAME}')) AS definition"


def check_storage(storage: str) -> HnswStorage:
    if storage not in STORAGES:
        raise ValidationError(f"HNSW storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    return storage


def index_ddl(
    storage: HnswStorage, dimension: int, *, name: str = INDEX_NAME, concurrently: bool = False
) -> sql.Composed:
    """``CREATE INDEX`` of the HNSW index with ``storage`` for ``dimension``-d embeddings (``IF NOT
    EXISTS``, or ``CONCURRENTLY``)."""
    check_storage(storage)
    target = (
        sql.SQL("(embedding::halfvec({})) halfvec_cosine_ops").format(sql.Literal(int(dimension)))
        if storage == "halfvec"
        else sql.SQL("embedding vector_cosine_ops")
    )
    statement = "CREATE INDEX {} {} ON conversation_messages USING hnsw ({}) WITH (m = {}, ef_construction = {})"
    return sql.SQL(statement).format(
        sql.SQL("CONCURRENTLY" if concurrently else "IF NOT EXISTS"),
        sql.Identifier(name),
        target,
        sql.Literal(M),
        sql.Literal(EF_CONSTRUCTION),
    )


def storage_of(definition: str | None) -> HnswStorage:
    """The storage of an index definition (``pg_get_indexdef``); ``"vector"`` when there is no index."""
    return "halfvec" if definition and "halfvec_cosine_ops" in definition else "vector"


def order_by(storage: HnswStorage, dimension: int, *, column: str = "embedding", param: str = "query") -> str:
    """The distance expression the index orders by, for an ``ORDER BY ... LIMIT`` that walks the graph.

    ``column`` is a trusted SQL fragment (a column, maybe qualified); ``param`` a parameter name.
    """
    if storage == "halfvec":
        cast = f"::halfvec({int(dimension)})"
        return f"{column}{cast} <=> %({param})s{cast}"
    return f"{column} <=> %({param})s"


def index_storage(conn: psycopg.Connection[Any]) -> HnswStorage:
    """The storage of the HNSW index in the database of ``conn``."""
    row = conn.execute(INDEX_DEFINITION).fetchone()
    return storage_of(row[0] if row else None)


def set_index_storage(conn: psycopg.Connection[Any], storage: str, *, concurrently: bool = False) -> bool:
    """Rebuild the HNSW index with ``storage`` (``"vector"`` or ``"halfvec"``); False if it already is.

    ``conn`` must be outside a transaction. With ``concurrently`` the new index is built with ``CREATE
    INDEX CONCURRENTLY`` beside the old one (writes continue; takes longer), then replaces it.
    """
    wanted = check_storage(storage)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValidationError("set_index_storage() needs a connection outside any transaction")
    previous = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            row = conn.execute(INDEX_DEFINITION).fetchone()
            if row and row[0] and storage_of(row[0]) == wanted:
                return False
            dim_row = conn.execute("SELECT value FROM ltst_metadata WHERE key = 'embedding_dimension'").fetchone()
            if not dim_row or not dim_row[0]:
                raise ValidationError("the database has no embedding dimension yet; open a store on it first")
            dimension = int(dim_row[0])
            logger.info("rebuilding %s as %s (%d dimensions)", INDEX_NAME, wanted, dimension)
            if concurrently:
                temporary = sql.Identifier(INDEX_NAME + "_new")
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(temporary))
                conn.execute(index_ddl(wanted, dimension, name=INDEX_NAME + "_new", concurrently=True))
                with conn.transaction():
                    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(INDEX_NAME)))
                    conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(temporary, sql.Identifier(INDEX_NAME)))
            else:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(INDEX_NAME)))
                    conn.execute(index_ddl(wanted, dimension))
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    finally:
        conn.autocommit = previous
