"""The vector index for searches of large scopes: IVFFlat, built in bulk, off the per-message write path.

Where each search gets its answer:

* a session's or a user's search over at most ``exact_search_max_rows`` messages reads the scope's
  rows through the btree on ``session_id`` / ``(user_id, timestamp)`` and computes every distance:
  exact, and its cost grows with the scope, not with the table;
* larger scopes and unscoped searches use the IVFFlat index ``idx_messages_embedding_ivfflat`` with
  pgvector's iterative scans (``ivfflat.iterative_scan = relaxed_order``), so a filtered search still
  returns ``limit`` rows when that many exist; without the index they are exact scans of the table.

There is no HNSW graph on ``conversation_messages``: inserting into one graph over every user's
messages was 85-90 % of an append's server time. An IVFFlat insert only finds the nearest of the
index's ``lists`` centroids and appends the row to that list, so a message is in the index (and found
by every search) the moment ``store_message`` returns. The centroids are computed from the rows present
when the index is built, which is why it is built in bulk, by the operator, once the table holds data:
``ltst vector-index`` (or :func:`build_index`); rebuild it when the table has grown several times
since (docs/scaling.md, "The vector index"). Migration 0012 builds it in place of the old HNSW index
on databases that already hold 10,000 embedded messages or more.

**The largest users** get an index of their own (:func:`build_user_index`, ``ltst vector-index --user``;
``ltst vector-index`` builds one for every user over ``exact_search_max_rows`` messages): a partial
IVFFlat index ``WHERE user_id = '...'`` over that user's rows alone, so their search probes lists of
their own messages instead of everyone's filtered down to theirs. The planner takes it for the user's
searches by itself (the predicate is implied by the search's ``user_id = ...``); the searches that scan
the vector index are planned for their parameters every time (``plan_cache_mode =
force_custom_plan``, set with their transaction-local settings), since a generic plan of a prepared
statement cannot use a partial index. The user id is in the index's predicate: ``delete_user`` drops
the index with the user's rows (schema/0014_erase_user_index.sql).

``halfvec`` storage (``ltst vector-index --storage halfvec``) indexes float16 copies of the vectors
(an expression index over ``embedding::halfvec(d)``): half the index size. The store re-ranks what the
index returns with the float32 distance, and the similarities it reports are the float32 ones.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql

from ._queries import MIGRATION_LOCK_KEY
from .errors import ValidationError

__all__ = [
    "INDEX_NAME",
    "STORAGES",
    "HnswStorage",
    "IndexBuild",
    "build_index",
    "build_user_index",
    "build_user_indexes",
    "drop_user_index",
    "index_ddl",
    "index_storage",
    "lists_for",
    "order_by",
    "set_index_storage",
    "user_index_name",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

HnswStorage = Literal["vector", "halfvec"]
STORAGES: tuple[HnswStorage, ...] = ("vector", "halfvec")
INDEX_NAME = "idx_messages_embedding_ivfflat"
#: The HNSW index of schema versions before 0012 (migration 0012 replaces it).
LEGACY_INDEX_NAME = "idx_messages_embedding_hnsw"
#: The names of the users' own indexes (:func:`user_index_name`) start with this.
USER_INDEX_PREFIX = "idx_messages_embedding_user_"

#: The definition of the index in use (NULL without one), resolved through the search_path.
INDEX_DEFINITION = f"SELECT pg_get_indexdef(to_regclass('{INDEX_NAME}')) AS definition"
_EMBEDDED_ROWS = "SELECT count(*) FROM conversation_messages WHERE embedding IS NOT NULL"
_EMBEDDED_ROWS_OF_USER = (
    "SELECT count(*) FROM conversation_messages WHERE user_id = %(user_id)s AND embedding IS NOT NULL"
)
#: The users with more than ``min_rows`` messages (the trigger-kept statistics of migration 0002).
_LARGE_USERS = "SELECT user_id FROM ltst_user_stats WHERE doc_count > %(min_rows)s ORDER BY user_id"
#: The users' own vector indexes: name and the user of the predicate.
USER_INDEXES = f"""
SELECT c.relname AS name, pg_get_expr(i.indpred, i.indrelid) AS predicate
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass('conversation_messages') AND c.relname LIKE '{USER_INDEX_PREFIX}%'
"""
_DIMENSION = "SELECT value FROM ltst_metadata WHERE key = 'embedding_dimension'"
#: On a Citus cluster each shard of the messages has an index of its own (docs/citus.md).
_SHARDS = """
SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = to_regclass('conversation_messages')
"""


def check_storage(storage: str) -> HnswStorage:
    if storage not in STORAGES:
        raise ValidationError(f"vector index storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    return storage


def user_lists_for(rows: int) -> int:
    """The lists of a user's own index over ``rows`` vectors: √rows (at least 10), so that the
    ``ivfflat_probes`` lists a search reads hold a few thousand of the user's rows."""
    return max(10, int(math.sqrt(rows)))


def user_index_name(user_id: str) -> str:
    """The name of ``user_id``'s own vector index (:func:`build_user_index`)."""
    return USER_INDEX_PREFIX + hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()[:24]


def lists_for(rows: int) -> int:
    """pgvector's advice for an IVFFlat index over ``rows`` vectors: rows / 1000 up to a million rows,
    √rows above (at least 10)."""
    if rows <= 1_000_000:
        return max(10, rows // 1_000)
    return int(math.sqrt(rows))


def index_ddl(
    storage: HnswStorage,
    dimension: int,
    *,
    lists: int,
    name: str = INDEX_NAME,
    concurrently: bool = False,
    user_id: str | None = None,
) -> sql.Composed:
    """``CREATE INDEX`` of the IVFFlat index with ``storage`` for ``dimension``-d embeddings and ``lists``
    lists (``IF NOT EXISTS``, or ``CONCURRENTLY``); with ``user_id``, over that user's rows alone."""
    check_storage(storage)
    target = (
        sql.SQL("(embedding::halfvec({})) halfvec_cosine_ops").format(sql.Literal(int(dimension)))
        if storage == "halfvec"
        else sql.SQL("embedding vector_cosine_ops")
    )
    statement = "CREATE INDEX {} {} ON conversation_messages USING ivfflat ({}) WITH (lists = {}){}"
    return sql.SQL(statement).format(
        sql.SQL("CONCURRENTLY" if concurrently else "IF NOT EXISTS"),
        sql.Identifier(name),
        target,
        sql.Literal(int(lists)),
        sql.SQL("") if user_id is None else sql.SQL(" WHERE user_id = {}").format(sql.Literal(user_id)),
    )


def storage_of(definition: str | None) -> HnswStorage:
    """The storage of an index definition (``pg_get_indexdef``); ``"vector"`` when there is no index."""
    return "halfvec" if definition and "halfvec_cosine_ops" in definition else "vector"


def order_by(storage: HnswStorage, dimension: int, *, column: str = "embedding", param: str = "query") -> str:
    """The distance expression the index orders by, for an ``ORDER BY ... LIMIT`` that scans it.

    ``column`` is a trusted SQL fragment (a column, maybe qualified); ``param`` a parameter name.
    """
    if storage == "halfvec":
        cast = f"::halfvec({int(dimension)})"
        return f"{column}{cast} <=> %({param})s{cast}"
    return f"{column} <=> %({param})s"


def index_storage(conn: psycopg.Connection[Any]) -> HnswStorage:
    """The storage of the vector index in the database of ``conn``."""
    row = conn.execute(INDEX_DEFINITION).fetchone()
    return storage_of(row[0] if row else None)


@dataclass(frozen=True)
class IndexBuild:
    """What :func:`build_index` (or :func:`build_user_index`: ``user_id`` set) built."""

    storage: HnswStorage
    lists: int
    rows: int
    seconds: float
    user_id: str | None = None


def build_index(
    conn: psycopg.Connection[Any],
    *,
    storage: str | None = None,
    lists: int | None = None,
    concurrently: bool = False,
) -> IndexBuild:
    """Build (or rebuild) the IVFFlat index from the messages stored now; drop an HNSW index left
    from before migration 0012.

    ``storage`` defaults to the current index's (``"vector"`` without one); ``lists`` to
    :func:`lists_for` of the embedded rows (on a Citus cluster, of one shard's share: each shard has
    an index of its own). ``conn`` must be outside a transaction. Without
    ``concurrently`` writes to the messages wait for the build (about a minute per million messages
    on 2 cores); with it the new index is built beside the old one with ``CREATE INDEX
    CONCURRENTLY`` (writes go on; takes longer), then replaces it. Running it twice leaves one index.
    """
    if lists is not None and (isinstance(lists, bool) or not isinstance(lists, int) or not 1 <= lists <= 32_768):
        raise ValidationError(f"lists must be an integer from 1 to 32768; got {lists!r}")
    if storage is not None:
        check_storage(storage)
    return _locked(conn, lambda: _build(conn, storage, lists, concurrently))


def _locked(conn: psycopg.Connection[Any], work: Callable[[], T]) -> T:
    """Run ``work`` in autocommit under the migration lock (one index build at a time)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValidationError("building the vector index needs a connection outside any transaction")
    previous = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            return work()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    finally:
        conn.autocommit = previous


def _build(
    conn: psycopg.Connection[Any],
    storage: str | None,
    lists: int | None,
    concurrently: bool,
    user_id: str | None = None,
) -> IndexBuild:
    started = time.perf_counter()
    wanted = check_storage(storage) if storage is not None else index_storage(conn)
    dim_row = conn.execute(_DIMENSION).fetchone()
    if not dim_row or not dim_row[0]:
        raise ValidationError("the database has no embedding dimension yet; open a store on it first")
    dimension = int(dim_row[0])
    if user_id is None:
        count_row = conn.execute(_EMBEDDED_ROWS).fetchone()
        rows = int(count_row[0]) if count_row else 0
        n_lists = lists if lists is not None else lists_for(rows // _indexes(conn))
        index_name = INDEX_NAME
    else:
        count_row = conn.execute(_EMBEDDED_ROWS_OF_USER, {"user_id": user_id}).fetchone()
        rows = int(count_row[0]) if count_row else 0
        n_lists = lists if lists is not None else user_lists_for(rows)
        index_name = user_index_name(user_id)
    logger.info("building %s: %s, %d lists over %d messages", index_name, wanted, n_lists, rows)
    name, temporary = sql.Identifier(index_name), sql.Identifier(index_name + "_new")
    legacy = sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(LEGACY_INDEX_NAME))
    if concurrently:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(temporary))
        conn.execute(
            index_ddl(wanted, dimension, lists=n_lists, name=index_name + "_new", concurrently=True, user_id=user_id)
        )
        with conn.transaction():
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(temporary, name))
            if user_id is None:
                conn.execute(legacy)
    else:
        with conn.transaction():
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
            conn.execute(index_ddl(wanted, dimension, lists=n_lists, name=index_name, user_id=user_id))
            if user_id is None:
                conn.execute(legacy)
    return IndexBuild(storage=wanted, lists=n_lists, rows=rows, seconds=time.perf_counter() - started, user_id=user_id)


def _indexes(conn: psycopg.Connection[Any]) -> int:
    """How many indexes share the rows: one per shard on a Citus cluster, else one."""
    row = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_shard') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return 1
    row = conn.execute(_SHARDS).fetchone()
    return max(1, int(row[0])) if row else 1


def set_index_storage(conn: psycopg.Connection[Any], storage: str, *, concurrently: bool = False) -> bool:
    """Rebuild the vector index with ``storage`` (``"vector"`` or ``"halfvec"``); False if it already is
    (or, for ``"vector"``, if there is no index: searches then scan exactly). See :func:`build_index`.
    """
    wanted = check_storage(storage)

    def work() -> bool:
        if index_storage(conn) == wanted:
            return False
        _build(conn, wanted, None, concurrently)
        return True

    return _locked(conn, work)


def build_user_index(
    conn: psycopg.Connection[Any], user_id: str, *, lists: int | None = None, concurrently: bool = False
) -> IndexBuild:
    """Build (or rebuild) ``user_id``'s own IVFFlat index: a partial index over that user's messages
    (``WHERE user_id = ...``), with the storage of the main index and :func:`user_lists_for` lists by
    default. The user's searches of the vector index read it instead of the main one (the planner
    picks it). Worth it for users well over ``exact_search_max_rows`` messages, whose searches go to
    the vector index: for smaller ones the exact scan is used anyway. ``concurrently`` as in
    :func:`build_index`. Not on a Citus cluster (each shard would get an index for one user).
    """
    from .models import check_id

    user_id = check_id("user_id", user_id)
    if lists is not None and (isinstance(lists, bool) or not isinstance(lists, int) or not 1 <= lists <= 32_768):
        raise ValidationError(f"lists must be an integer from 1 to 32768; got {lists!r}")

    def work() -> IndexBuild:
        if _distributed(conn):
            raise ValidationError("per-user vector indexes are not built on a Citus cluster")
        return _build(conn, None, lists, concurrently, user_id)

    return _locked(conn, work)


def build_user_indexes(conn: psycopg.Connection[Any], *, min_rows: int, concurrently: bool = False) -> list[IndexBuild]:
    """Build the own index (:func:`build_user_index`) of every user with more than ``min_rows``
    messages (``ltst vector-index`` passes ``exact_search_max_rows``), and drop the own indexes of users
    who no longer have that many. Returns what it built (nothing on a Citus cluster)."""
    if _distributed(conn):
        conn.rollback()
        return []
    rows = conn.execute(_LARGE_USERS, {"min_rows": int(min_rows)}).fetchall()
    conn.rollback()
    large = [str(r[0]) for r in rows]
    wanted = {user_index_name(u) for u in large}
    for name, _predicate in user_indexes(conn):
        if name not in wanted:
            _drop(conn, name)
    return [build_user_index(conn, user, concurrently=concurrently) for user in large]


def user_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """The users' own vector indexes: ``(index name, predicate)`` pairs."""
    rows = conn.execute(USER_INDEXES).fetchall()
    if not conn.autocommit:
        conn.rollback()
    return [(str(r[0]), str(r[1])) for r in rows]


def drop_user_index(conn: psycopg.Connection[Any], user_id: str) -> bool:
    """Drop ``user_id``'s own vector index; False if there was none."""
    name = user_index_name(user_id)
    if name not in {n for n, _ in user_indexes(conn)}:
        return False
    _drop(conn, name)
    return True


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    _locked(conn, lambda: conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name))))


def _distributed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the messages are a Citus distributed table."""
    row = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition"
        " WHERE logicalrelid = to_regclass('conversation_messages'))"
    ).fetchone()
    return bool(row and row[0])
