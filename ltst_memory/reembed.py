"""Switch a database to another embedding model: re-embed every message, resumably.

The store keeps serving searches with the old model while this runs: new vectors go to a side
column ``embedding_next`` in batches ordered by ``message_id``, and after each batch the last id
done is saved in ``ltst_metadata`` (``reembed_*`` keys) in the same transaction, so an interrupted
run continues where it stopped. The final step, in one transaction with writers blocked, embeds the
messages added meanwhile, swaps the columns, rebuilds the indexes on the embedding column (for a
new dimension too) and records the new model. Stores opened with the old model are then refused
(``EmbeddingDimensionError``), stores opened with the new one work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from . import _queries as q
from .embeddings import Embedder, embed_checked, embedding_text
from .errors import LTSTError, MigrationError
from .migrate import MIGRATION_LOCK_KEY, migrate

__all__ = ["ReembedResult", "embedding_text", "reembed", "reembed_status"]

logger = logging.getLogger(__name__)


KEY_MODEL = "reembed_model"
KEY_DIMENSION = "reembed_dimension"
KEY_LAST_ID = "reembed_last_message_id"
SIDE_COLUMN = "embedding_next"

NEXT_BATCH = """
SELECT message_id, content, metadata FROM conversation_messages WHERE message_id > %s ORDER BY message_id LIMIT %s
"""
COUNT_AFTER = "SELECT count(*) FROM conversation_messages WHERE message_id > %s"
SET_NEXT = f"UPDATE conversation_messages SET {SIDE_COLUMN} = %s WHERE message_id = %s"
EMBEDDING_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = current_schema() AND tablename = 'conversation_messages'
  AND indexdef ~ '\\membedding\\M'
ORDER BY indexname
"""


@dataclass
class ReembedResult:
    """What :func:`reembed` did."""

    model: str
    dimension: int
    previous_model: str | None
    previous_dimension: int | None
    messages: int = 0
    resumed_from: int = 0
    done: bool = False


def _meta(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM ltst_metadata").fetchall())


def reembed_status(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The re-embedding in progress in this database (``{"model", "dimension", "last_message_id"}``) or ``None``."""
    meta = _meta(conn)
    if KEY_MODEL not in meta:
        return None
    return {"model": meta[KEY_MODEL], "dimension": int(meta[KEY_DIMENSION]), "last_message_id": int(meta[KEY_LAST_ID])}


def _clear(conn: psycopg.Connection[Any]) -> None:
    drop = sql.SQL("ALTER TABLE conversation_messages DROP COLUMN IF EXISTS {}").format(sql.Identifier(SIDE_COLUMN))
    conn.execute(drop)
    conn.execute("DELETE FROM ltst_metadata WHERE key = ANY(%s)", ([KEY_MODEL, KEY_DIMENSION, KEY_LAST_ID],))


def reembed(
    conninfo: str,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    restart: bool = False,
    force: bool = False,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReembedResult:
    """Re-embed every message of the database at ``conninfo`` with ``embedder`` and adopt its model.

    ``on_start(n)`` is called with the number of messages left to do, ``progress(k)`` after each
    batch of ``k``. Interrupted runs resume from their checkpoint; ``restart=True`` discards it.
    With the database already on this model nothing is done unless ``force=True``.
    """
    from pgvector.psycopg import register_vector

    if batch_size < 1:
        raise LTSTError("batch_size must be at least 1")
    target, dimension = embedder.model_name, int(embedder.dimension)
    with psycopg.connect(conninfo) as conn:
        migrate(conn)
        register_vector(conn)
        meta = _meta(conn)
        old_model = meta.get("embedding_model")
        old_dim = int(meta["embedding_dimension"]) if meta.get("embedding_dimension") else None
        result = ReembedResult(target, dimension, old_model, old_dim)
        status = reembed_status(conn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            if status is not None and (restart or (status["model"], status["dimension"]) != (target, dimension)):
                if not restart:
                    raise LTSTError(
                        f"a re-embedding to {status['model']!r} ({status['dimension']} dims) is in progress; "
                        f"finish it with `ltst reembed --model {status['model']}` or start over with --restart"
                    )
                _clear(conn)
                status = None
            if status is None:
                if (old_model, old_dim) == (target, dimension) and not force:
                    result.done = True
                    return result
                conn.execute(
                    sql.SQL("ALTER TABLE conversation_messages ADD COLUMN IF NOT EXISTS {} vector({})").format(
                        sql.Identifier(SIDE_COLUMN), sql.Literal(dimension)
                    )
                )
                for key, value in ((KEY_MODEL, target), (KEY_DIMENSION, str(dimension)), (KEY_LAST_ID, "0")):
                    conn.execute(q.UPSERT_METADATA, {"key": key, "value": value})
                last = 0
            else:
                last = int(status["last_message_id"])
        result.resumed_from = last
        counted = conn.execute(COUNT_AFTER, (last,)).fetchone()
        remaining = counted[0] if counted else 0
        conn.commit()
        if on_start is not None:
            on_start(int(remaining))
        while True:
            with conn.transaction():
                rows = conn.execute(NEXT_BATCH, (last, batch_size)).fetchall()
                if not rows:
                    break
                last = _embed_rows(conn, embedder, rows)
                conn.execute(q.UPSERT_METADATA, {"key": KEY_LAST_ID, "value": str(last)})
            result.messages += len(rows)
            if progress is not None:
                progress(len(rows))
        with conn.transaction():
            conn.execute("LOCK TABLE conversation_messages IN SHARE ROW EXCLUSIVE MODE")
            while rows := conn.execute(NEXT_BATCH, (last, batch_size)).fetchall():  # written meanwhile
                last = _embed_rows(conn, embedder, rows)
                result.messages += len(rows)
            _swap(conn, dimension)
            conn.execute(q.UPSERT_METADATA, {"key": "embedding_model", "value": target})
            conn.execute(q.UPSERT_METADATA, {"key": "embedding_dimension", "value": str(dimension)})
            conn.execute("DELETE FROM ltst_metadata WHERE key = ANY(%s)", ([KEY_MODEL, KEY_DIMENSION, KEY_LAST_ID],))
        result.done = True
        logger.info("re-embedded %d messages with %s (%d dims)", result.messages, target, dimension)
        return result


def _embed_rows(conn: psycopg.Connection[Any], embedder: Embedder, rows: list[Any]) -> int:
    vectors = embed_checked(embedder, [embedding_text(content, metadata) for _, content, metadata in rows])
    with conn.cursor() as cur:
        cur.executemany(SET_NEXT, [(vector, row[0]) for row, vector in zip(rows, vectors, strict=True)])
    return int(rows[-1][0])


def _swap(conn: psycopg.Connection[Any], dimension: int) -> None:
    """Replace ``embedding`` by the side column and rebuild the indexes that used it."""
    indexes = [(name, d) for name, d in conn.execute(EMBEDDING_INDEXES).fetchall() if SIDE_COLUMN not in d]
    try:
        conn.execute("ALTER TABLE conversation_messages DROP COLUMN embedding")
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise MigrationError(f"cannot replace the embedding column: {exc}".strip()) from exc
    conn.execute(
        sql.SQL("ALTER TABLE conversation_messages RENAME COLUMN {} TO embedding").format(sql.Identifier(SIDE_COLUMN))
    )
    for name, definition in indexes:
        definition = re.sub(r"\b(vector|halfvec|sparsevec)\(\d+\)", rf"\g<1>({dimension})", definition)
        logger.info("rebuilding index %s", name)
        conn.execute(definition.encode("utf-8"))
