"""The vector index for searches of large scopes: IVFFlat, built in bulk, off the per-message write path.

Where each search gets its answer:

* a session's or a user's search over at most ``exact_search_max_rows`` messages reads the scope's
  rows through the btree on ``session_id`` / ``(user_id, timestamp)`` and computes every distance:
  exact, and its cost grows with the scope, not with the table;
* a larger user with an index of their own (below) is searched through it and the gap since;
* other large scopes and unscoped searches use the main index ``idx_messages_embedding_ivfflat``
  and the gap since it was built, with pgvector's iterative scans (``ivfflat.iterative_scan =
  relaxed_order``), so a filtered search still returns ``limit`` rows when that many exist; without
  the index they are exact scans of the table.

There is no vector index on the per-message write path. The main index is partial, ``WHERE
message_id <= W``, ``W`` (its *watermark*) being the largest message id when it was built: message
ids only grow, so a new message falls outside the predicate and its insert touches no vector index
(an HNSW graph over every user's messages was 85-90 % of an append's server time; an IVFFlat insert
over every message ~0.15 ms of a 0.9 ms append). A search reads the index's nearest rows up to ``W``
and every message stored since (the *gap*, ``message_id > W``, through the primary key) exactly, and
ranks them together by their true distance (``_queries.nearest_sql``): a message is found the moment
``store_message`` returns. The gap costs each search through the index ~1 µs per message in it, until
``ltst vector-index`` (:func:`refresh_index`) rebuilds the index, once the gap has passed
:func:`index_gap_to_rebuild`. The centroids are computed from the rows present at build time, which
is also why it is built in bulk, by the operator, once the table holds data (docs/scaling.md, "The
vector index"). A main index built before watermarks (or by migration 0012) covers every message and
is kept on each insert, as before, until ``ltst vector-index`` replaces it. On a Citus cluster each
shard keeps an index over all of its messages, on each insert (no watermark).

**The largest users** get an index of their own (:func:`build_user_index`, ``ltst vector-index --user``;
``ltst vector-index`` builds one for every user over ``exact_search_max_rows`` messages), kept off the
write path by its predicate: a partial index ``WHERE user_id = '...' AND message_id <= W`` over the
user's rows present at build time (``W``, the *watermark*: the largest of their message ids then;
message ids only grow, so a new message falls outside the predicate and its insert touches no vector
index), and beside it a small btree ``(message_id) WHERE user_id = '...' AND message_id > W`` over the
user's messages since (the *gap*). A search of the user reads the index's nearest rows up to ``W``
and the gap's rows exactly, and ranks them together by their true distance
(``_queries.nearest_sql``, the main index's statement with the user's predicate): a message is found
the moment it is stored, and the gap costs each search ~0.5 µs per message in it until ``ltst
vector-index`` rebuilds the index (it does once the gap has grown past :func:`gap_to_rebuild`).
The planner takes the user's index because the search repeats its predicate (``user_id = ... AND
message_id <= W``, with the watermark the store reads from the index definition); the searches are
planned for their parameters every time (``plan_cache_mode = force_custom_plan``, set with their
transaction-local settings), since a generic plan of a prepared statement cannot use a partial
index. The user id is in both predicates: ``delete_user`` drops both indexes with the user's rows
(schema/0015_user_index_gap.sql).

``halfvec`` storage (``ltst vector-index --storage halfvec``) indexes float16 copies of the vectors
(an expression index over ``embedding::halfvec(d)``): half the index size. The store re-ranks what the
index returns with the float32 distance, and the similarities it reports are the float32 ones.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql

from ._queries import LARGE_USERS, LARGEST_MESSAGE_ID, LOCK_MESSAGES, MIGRATION_LOCK_KEY
from .errors import ValidationError

__all__ = [
    "INDEX_NAME",
    "METHODS",
    "STORAGES",
    "HnswStorage",
    "IndexBuild",
    "MainIndex",
    "OwnIndex",
    "UserIndexMethod",
    "build_index",
    "build_user_index",
    "build_user_indexes",
    "drop_user_index",
    "gap_index_name",
    "gap_to_rebuild",
    "index_ddl",
    "index_gap_to_rebuild",
    "index_storage",
    "lists_for",
    "main_index",
    "order_by",
    "own_indexes",
    "refresh_index",
    "set_index_storage",
    "user_index_name",
    "watermark_now",
    "watermark_of",
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
#: ... and those of the btrees over their messages stored since (:func:`gap_index_name`) with this.
GAP_INDEX_PREFIX = "idx_messages_gap_user_"
UserIndexMethod = Literal["ivfflat", "hnsw"]
METHODS: tuple[UserIndexMethod, ...] = ("ivfflat", "hnsw")
#: The index method of a user's own index unless told otherwise (docs/benchmarks.md, section 3).
USER_INDEX_METHOD: UserIndexMethod = "hnsw"
#: How long a store trusts the watermark (or the absence) of a user's own index it looked up, in seconds.
#: A stale one never changes a search's answer, only its plan: until then the user's searches may read
#: a rebuilt index's newer rows exactly, or go through the main index.
WATERMARK_TTL = 30.0

#: The definition of the index in use (NULL without one), resolved through the search_path.
INDEX_DEFINITION = f"SELECT pg_get_indexdef(to_regclass('{INDEX_NAME}')) AS definition"
_EMBEDDED_ROWS = "SELECT count(*) FROM conversation_messages WHERE embedding IS NOT NULL"
#: The main index's entries (as of its build, or the last VACUUM / ANALYZE).
_INDEX_ROWS = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%(name)s)"
#: The messages stored since the main index was built (read through the primary key).
_MAIN_GAP_ROWS = "SELECT count(*) FROM conversation_messages WHERE message_id > %(watermark)s::bigint"
#: The users' own vector indexes: name and the user of the predicate.
USER_INDEXES = f"""
SELECT c.relname AS name, pg_get_expr(i.indpred, i.indrelid) AS predicate
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass('conversation_messages') AND c.relname LIKE '{USER_INDEX_PREFIX}%'
"""
#: The predicate and definition of one index by name (no row without it): the store reads a user's
#: watermark and the index's storage from them.
INDEX_PREDICATE = """
SELECT pg_get_expr(i.indpred, i.indrelid) AS predicate, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index AS i WHERE i.indexrelid = to_regclass(%(name)s)
"""
#: The user's messages (the embedded ones) and the largest message id: an own index's rows and watermark.
_USER_ROWS = """
SELECT count(*) FILTER (WHERE embedding IS NOT NULL) AS rows, coalesce(max(message_id), 0) AS watermark
FROM conversation_messages WHERE user_id = %(user_id)s
"""
#: The user's messages stored since their own index was built (read through the gap's btree).
_GAP_ROWS = (
    "SELECT count(*) FROM conversation_messages WHERE user_id = %(user_id)s AND message_id > %(watermark)s::bigint"
)
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


def gap_index_name(user_id: str) -> str:
    """The name of the btree over ``user_id``'s messages stored since their own index was built."""
    return GAP_INDEX_PREFIX + hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()[:24]


_WATERMARK = re.compile(r"\bmessage_id <= '?(\d+)")
_PREDICATE_USER = re.compile(r"\buser_id = '((?:[^']|'')*)'::text")


def watermark_of(predicate: str | None) -> int | None:
    """The watermark of an own index's predicate (``pg_get_expr`` of ``pg_index.indpred``): the largest
    message id it covers; ``None`` for no predicate, or one without a watermark."""
    found = _WATERMARK.search(predicate) if predicate else None
    return int(found.group(1)) if found else None


def gap_to_rebuild(rows: int) -> int:
    """How many messages a user may store after their own index was built (over ``rows``) before
    ``ltst vector-index`` rebuilds it: 5 % of it, at least 1,000 (each search reads the gap exactly,
    ~0.5 µs a message)."""
    return max(1_000, rows // 20)


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
    watermark: int | None = None,
    method: UserIndexMethod = "ivfflat",
    m: int = 16,
    ef_construction: int = 64,
) -> sql.Composed:
    """``CREATE INDEX`` of the vector index with ``storage`` for ``dimension``-d embeddings (``IF NOT
    EXISTS``, or ``CONCURRENTLY``): IVFFlat with ``lists`` lists, or (``method="hnsw"``) HNSW with ``m``
    and ``ef_construction``; with ``user_id``, over that user's rows alone; with ``watermark``, over
    the rows with a message id up to it."""
    check_storage(storage)
    # An own index up to a watermark indexes l2_normalize(embedding): the same cosine order, but an
    # expression no other index has, so the user's search can take its order from this index alone
    # (with the same expression, the planner weighs it against the main index by estimated cost, and
    # took the main one for an HNSW scan with a large ef_search).
    own = user_id is not None and watermark is not None
    column, dims = sql.SQL("l2_normalize(embedding)" if own else "embedding"), sql.Literal(int(dimension))
    target: sql.Composable
    if storage == "halfvec":
        target = sql.SQL("({}::halfvec({})) halfvec_cosine_ops").format(column, dims)
    elif own:
        target = sql.SQL("({}::vector({})) vector_cosine_ops").format(column, dims)
    else:
        target = sql.SQL("embedding vector_cosine_ops")
    if method == "hnsw":
        using = sql.SQL("hnsw ({}) WITH (m = {}, ef_construction = {})").format(
            target, sql.Literal(int(m)), sql.Literal(int(ef_construction))
        )
    else:
        using = sql.SQL("ivfflat ({}) WITH (lists = {})").format(target, sql.Literal(int(lists)))
    return sql.SQL("CREATE INDEX {} {} ON conversation_messages USING {}{}").format(
        sql.SQL("CONCURRENTLY" if concurrently else "IF NOT EXISTS"),
        sql.Identifier(name),
        using,
        _own_predicate(user_id, watermark, "<="),
    )


def _own_predicate(user_id: str | None, watermark: int | None, op: str) -> sql.Composable:
    parts: list[sql.Composable] = []
    if user_id is not None:
        parts.append(sql.SQL("user_id = {}").format(sql.Literal(user_id)))
    if watermark is not None:
        parts.append(sql.SQL("message_id {} {}::bigint").format(sql.SQL(op), sql.Literal(str(int(watermark)))))
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(parts)) if parts else sql.SQL("")


def gap_index_ddl(user_id: str, watermark: int, *, name: str | None = None, concurrently: bool = False) -> sql.Composed:
    """``CREATE INDEX`` of the btree over ``user_id``'s messages with an id above ``watermark``."""
    return sql.SQL("CREATE INDEX {} {} ON conversation_messages (message_id){}").format(
        sql.SQL("CONCURRENTLY" if concurrently else "IF NOT EXISTS"),
        sql.Identifier(name or gap_index_name(user_id)),
        _own_predicate(user_id, watermark, ">"),
    )


def storage_of(definition: str | None) -> HnswStorage:
    """The storage of an index definition (``pg_get_indexdef``); ``"vector"`` when there is no index."""
    return "halfvec" if definition and "halfvec_cosine_ops" in definition else "vector"


def order_by(
    storage: HnswStorage, dimension: int, *, column: str = "embedding", param: str = "query", own: bool = False
) -> str:
    """The distance expression the index orders by, for an ``ORDER BY ... LIMIT`` that scans it
    (``own``: a user's own index up to a watermark, over ``l2_normalize(embedding)``).

    ``column`` is a trusted SQL fragment (a column, maybe qualified); ``param`` a parameter name.
    """
    if own and storage == "halfvec":
        column = f"l2_normalize({column})"
    elif own:
        column = f"l2_normalize({column})::vector({int(dimension)})"
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
    """What :func:`build_index` (or :func:`build_user_index`: ``user_id`` set) built: its
    ``watermark`` (the largest message id it covers; ``None`` for an index over every message, as on
    a Citus cluster) and ``method``; ``lists`` is 0 for an HNSW index."""

    storage: HnswStorage
    lists: int
    rows: int
    seconds: float
    user_id: str | None = None
    watermark: int | None = None
    method: UserIndexMethod = "ivfflat"


def build_index(
    conn: psycopg.Connection[Any],
    *,
    storage: str | None = None,
    lists: int | None = None,
    concurrently: bool = False,
) -> IndexBuild:
    """Build (or rebuild) the IVFFlat index from the messages stored now; drop an HNSW index left
    from before migration 0012.

    On one server the index covers the messages up to the largest message id now (the watermark,
    its predicate ``WHERE message_id <= W``): a message stored later falls outside it, so its insert
    touches no vector index, and searches read those (the gap) exactly beside the index's nearest
    rows. :func:`refresh_index` rebuilds it once the gap has grown past :func:`index_gap_to_rebuild`.
    On a Citus cluster each shard gets an index over all of its messages, kept on every insert.

    ``storage`` defaults to the current index's (``"vector"`` without one); ``lists`` to
    :func:`lists_for` of the embedded rows (on a Citus cluster, of one shard's share). ``conn`` must
    be outside a transaction. Without ``concurrently`` writes to the messages wait for the build
    (about a minute per million messages on 2 cores); with it the new index is built beside the old
    one with ``CREATE INDEX CONCURRENTLY`` (writes go on; takes longer), then replaces it. Running it
    twice leaves one index.
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
) -> IndexBuild:
    started = time.perf_counter()
    wanted = check_storage(storage) if storage is not None else index_storage(conn)
    dimension = _dimension(conn)
    count_row = conn.execute(_EMBEDDED_ROWS).fetchone()
    rows = int(count_row[0]) if count_row else 0
    shards = _indexes(conn)
    n_lists = lists if lists is not None else lists_for(rows // shards)
    # One server: the index covers the messages up to the watermark (read once the old index is dropped,
    # with writes waiting, or just before a concurrent build); those stored since are the gap. A Citus
    # cluster keeps an index over every message, on each shard.
    distributed = shards > 1 or _distributed(conn)
    logger.info("building %s: %s, %d lists over %d messages", INDEX_NAME, wanted, n_lists, rows)
    name, temporary = sql.Identifier(INDEX_NAME), sql.Identifier(INDEX_NAME + "_new")
    legacy = sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(LEGACY_INDEX_NAME))
    watermark: int | None = None
    if concurrently:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(temporary))
        watermark = None if distributed else _largest_id(conn)
        ddl = index_ddl(
            wanted, dimension, lists=n_lists, name=INDEX_NAME + "_new", concurrently=True, watermark=watermark
        )
        conn.execute(ddl)
        with conn.transaction():
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(temporary, name))
            conn.execute(legacy)
    else:
        with conn.transaction():
            if not distributed:  # writes wait from here: the watermark is the largest id of them all
                conn.execute(LOCK_MESSAGES)
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
            watermark = None if distributed else _largest_id(conn)
            conn.execute(index_ddl(wanted, dimension, lists=n_lists, name=INDEX_NAME, watermark=watermark))
            conn.execute(legacy)
    return IndexBuild(
        storage=wanted, lists=n_lists, rows=rows, seconds=time.perf_counter() - started, watermark=watermark
    )


def _largest_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(LARGEST_MESSAGE_ID).fetchone()
    return int(row[0]) if row else 0


def watermark_now(conn: psycopg.Connection[Any]) -> int | None:
    """The watermark a main index built now would have: the largest message id (``None`` on a Citus
    cluster, whose indexes cover every message)."""
    return None if _distributed(conn) else _largest_id(conn)


def _dimension(conn: psycopg.Connection[Any]) -> int:
    dim_row = conn.execute(_DIMENSION).fetchone()
    if not dim_row or not dim_row[0]:
        raise ValidationError("the database has no embedding dimension yet; open a store on it first")
    return int(dim_row[0])


def _build_own(
    conn: psycopg.Connection[Any],
    user_id: str,
    method: UserIndexMethod,
    lists: int | None,
    m: int,
    ef_construction: int,
    concurrently: bool,
) -> IndexBuild:
    """(Re)build ``user_id``'s own vector index up to the watermark of now, and the gap's btree."""
    started = time.perf_counter()
    storage = index_storage(conn)
    dimension = _dimension(conn)
    row = conn.execute(_USER_ROWS, {"user_id": user_id}).fetchone()
    rows, watermark = (int(row[0]), int(row[1])) if row else (0, 0)
    n_lists = 0 if method == "hnsw" else lists if lists is not None else user_lists_for(rows)
    index_name, gap_name = user_index_name(user_id), gap_index_name(user_id)
    logger.info("building %s (%s) over %d messages up to message %d", index_name, method, rows, watermark)
    options = {"method": method, "m": m, "ef_construction": ef_construction, "lists": n_lists}
    drop = "DROP INDEX IF EXISTS {}"
    if concurrently:  # new indexes beside the old ones (writes go on), then swapped in one transaction
        for name in (index_name, gap_name):
            conn.execute(sql.SQL(drop).format(sql.Identifier(name + "_new")))
        conn.execute(gap_index_ddl(user_id, watermark, name=gap_name + "_new", concurrently=True))
        conn.execute(
            index_ddl(
                storage,
                dimension,
                name=index_name + "_new",
                concurrently=True,
                user_id=user_id,
                watermark=watermark,
                **options,  # type: ignore[arg-type]
            )
        )
        with conn.transaction():
            for name in (index_name, gap_name):
                conn.execute(sql.SQL(drop).format(sql.Identifier(name)))
                conn.execute(
                    sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(name + "_new"), sql.Identifier(name))
                )
    else:
        with conn.transaction():
            for name in (index_name, gap_name):
                conn.execute(sql.SQL(drop).format(sql.Identifier(name)))
            conn.execute(gap_index_ddl(user_id, watermark))
            conn.execute(
                index_ddl(
                    storage,
                    dimension,
                    name=index_name,
                    user_id=user_id,
                    watermark=watermark,
                    **options,  # type: ignore[arg-type]
                )
            )
    return IndexBuild(
        storage=storage,
        lists=n_lists,
        rows=rows,
        seconds=time.perf_counter() - started,
        user_id=user_id,
        watermark=watermark,
        method=method,
    )


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


def index_gap_to_rebuild(rows: int) -> int:
    """How many messages may be stored after the main index was built (over ``rows``) before
    :func:`refresh_index` (``ltst vector-index``) rebuilds it: 1 % of it, at least 2,000. Every search
    through the index reads the gap exactly, through the primary key, ~0.6 µs a message (docs/scaling.md,
    "The vector index")."""
    return max(2_000, rows // 100)


@dataclass(frozen=True)
class MainIndex:
    """The main vector index: its definition (``None`` without one), the largest message id it
    covers (``None`` for an index over every message), its rows, and how many messages were stored
    after it was built (the gap each search through it reads exactly)."""

    definition: str | None
    watermark: int | None
    rows: int
    gap: int


def main_index(conn: psycopg.Connection[Any]) -> MainIndex:
    """The main vector index, its watermark and gap."""
    row = conn.execute(INDEX_PREDICATE, {"name": INDEX_NAME}).fetchone()
    predicate, definition = (row[0], row[1]) if row else (None, None)
    watermark = watermark_of(predicate)
    rows, gap = 0, 0
    if definition is not None:
        found = conn.execute(_INDEX_ROWS, {"name": INDEX_NAME}).fetchone()
        rows = max(0, int(found[0])) if found else 0
    if watermark is not None:
        found = conn.execute(_MAIN_GAP_ROWS, {"watermark": watermark}).fetchone()
        gap = int(found[0]) if found else 0
    if not conn.autocommit:
        conn.rollback()
    return MainIndex(definition, watermark, rows, gap)


def refresh_index(conn: psycopg.Connection[Any], *, concurrently: bool = False) -> IndexBuild | None:
    """Build the main vector index (:func:`build_index`) if there is none, if it covers every message
    (built before watermarks and kept on every insert: replaced by one with a watermark), or once its
    gap has grown past :func:`index_gap_to_rebuild`; ``None`` when it was left as it is. On a Citus
    cluster, whose indexes cover every message (no gap to measure), it rebuilds, as ``ltst
    vector-index`` always did there."""
    state = main_index(conn)
    if state.watermark is not None and state.gap <= index_gap_to_rebuild(state.rows):
        return None
    return build_index(conn, concurrently=concurrently)


def build_user_index(
    conn: psycopg.Connection[Any],
    user_id: str,
    *,
    method: str | None = None,
    lists: int | None = None,
    m: int = 16,
    ef_construction: int = 64,
    concurrently: bool = False,
) -> IndexBuild:
    """Build (or rebuild) ``user_id``'s own vector index over their messages stored now, kept off
    their write path by its predicate ``WHERE user_id = ... AND message_id <= W`` (``W``: their
    largest message id now), and the btree over their messages stored after it (``message_id > W``,
    read exactly by each search). ``method``: ``"hnsw"`` (the default, :data:`USER_INDEX_METHOD`;
    ``m``, ``ef_construction``; searched with ``hnsw_ef_search``) or ``"ivfflat"`` (``lists``, by
    default :func:`user_lists_for`; searched with ``ivfflat_probes``); the storage is the main index's.
    Worth it for users well over ``exact_search_max_rows`` messages, whose searches go to the vector
    index: smaller ones are searched exactly anyway. ``concurrently`` as in :func:`build_index`. Not
    on a Citus cluster (each shard would get an index for one user)."""
    from .models import check_id

    user_id = check_id("user_id", user_id)
    chosen = USER_INDEX_METHOD if method is None else method
    if chosen not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if lists is not None and (isinstance(lists, bool) or not isinstance(lists, int) or not 1 <= lists <= 32_768):
        raise ValidationError(f"lists must be an integer from 1 to 32768; got {lists!r}")
    for what, value, low, high in (("m", m, 2, 100), ("ef_construction", ef_construction, 4, 1_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationError(f"{what} must be an integer from {low} to {high}; got {value!r}")

    def work() -> IndexBuild:
        if _distributed(conn):
            raise ValidationError("per-user vector indexes are not built on a Citus cluster")
        return _build_own(conn, user_id, chosen, lists, m, ef_construction, concurrently)

    return _locked(conn, work)


@dataclass(frozen=True)
class OwnIndex:
    """A user's own vector index: whose, the largest message id it covers (``None`` for an index built
    before watermarks, which covers every message of the user), and how many of the user's messages
    were stored after it (the gap each search reads exactly)."""

    user_id: str
    watermark: int | None
    gap: int


def own_indexes(conn: psycopg.Connection[Any]) -> list[OwnIndex]:
    """The users' own vector indexes, with their watermark and gap."""
    found = []
    for _name, predicate in user_indexes(conn):
        who = _PREDICATE_USER.search(predicate)
        if who is None:
            continue
        user_id = who.group(1).replace("''", "'")
        watermark = watermark_of(predicate)
        gap = 0
        if watermark is not None:
            row = conn.execute(_GAP_ROWS, {"user_id": user_id, "watermark": watermark}).fetchone()
            gap = int(row[0]) if row else 0
        found.append(OwnIndex(user_id, watermark, gap))
    if not conn.autocommit:
        conn.rollback()
    return found


def build_user_indexes(
    conn: psycopg.Connection[Any], *, min_rows: int, concurrently: bool = False, method: str | None = None
) -> list[IndexBuild]:
    """Build the own index (:func:`build_user_index`, with ``method``) of every user with more than
    ``min_rows`` messages (``ltst vector-index`` passes ``exact_search_max_rows``) who has none, rebuild
    those whose gap (messages stored since) has grown past :func:`gap_to_rebuild`, and drop the own
    indexes of users who no longer have that many. Returns what it built (nothing on a Citus cluster)."""
    if _distributed(conn):
        conn.rollback()
        return []
    rows = conn.execute(LARGE_USERS, {"min_rows": int(min_rows)}).fetchall()
    conn.rollback()
    large = {str(r[0]): int(r[1]) for r in rows}
    current = {o.user_id: o for o in own_indexes(conn)}
    for name, _predicate in user_indexes(conn):
        if name not in {user_index_name(u) for u in large}:
            _drop(conn, name)
    for user_id in set(current) - set(large):
        _drop(conn, gap_index_name(user_id))
    built = []
    for user_id, size in sorted(large.items()):
        own = current.get(user_id)
        if own is not None and own.watermark is not None and own.gap <= gap_to_rebuild(size - own.gap):
            continue
        built.append(build_user_index(conn, user_id, method=method, concurrently=concurrently))
    return built


def user_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """The users' own vector indexes: ``(index name, predicate)`` pairs."""
    rows = conn.execute(USER_INDEXES).fetchall()
    if not conn.autocommit:
        conn.rollback()
    return [(str(r[0]), str(r[1])) for r in rows]


def drop_user_index(conn: psycopg.Connection[Any], user_id: str) -> bool:
    """Drop ``user_id``'s own vector index (and the btree of their gap); False if there was none."""
    name = user_index_name(user_id)
    if name not in {n for n, _ in user_indexes(conn)}:
        return False
    _drop(conn, name)
    _drop(conn, gap_index_name(user_id))
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
