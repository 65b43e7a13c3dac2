"""A term index of their own for the largest users: recall's BM25 leg without reading every match.

recall's lexical leg (:func:`ltst_memory._recall_queries.lexical_sql`) finds the user's messages that
hold a word of the question and scores each one from its ``search_tsv``: ~4-5 µs a match, so ~45 ms
for a user of 10,000 chat turns whose messages all share the question's common words. A *term index*
(schema/0016_lexical_index.sql) holds, for each message of the user up to a watermark ``W``, one row
per lexeme with what Okapi BM25 needs of it (``tf``, the lexeme's occurrences; ``dl``, the message's
distinct lexemes), in ``ltst_lexical_postings`` under a btree ``(user_id, term)``: the leg reads the
rows of the question's terms and sums them (~5 ms), with the idf and average length of the trigger-kept
statistics as before, hence the same scores.

Off the write path, like a user's own vector index (:mod:`ltst_memory.hnsw`): a new message has an id
above ``W`` (message ids only grow) and is not indexed; the leg matches and scores the user's messages
since ``W`` (the *gap*) the way it scores every message without an index, and ranks both together, so
a message is found the moment ``store_message`` returns. ``ltst lexical-index`` (or
:func:`build_lexical_indexes`) builds the index of every user over ``lexical_index_min_rows`` messages
and rebuilds one whose gap has grown past :func:`gap_to_rebuild`. A deleted message's rows go with it and
an edited message's are rewritten (triggers of migration 0016); ``delete_user`` erases the index.

A store reads a user's watermark (``ltst_lexical_indexes``) once per :data:`WATERMARK_TTL` seconds. A
stale one changes the plan, never the answer: a rebuild only raises ``W`` (the index still holds
every message up to the old one), and the statement itself checks that the index is still there (when
it was dropped, it matches the messages up to the old ``W`` too).

Not built on a Citus cluster (like the users' own vector indexes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ._kernel import Core, Op, Query
from ._queries import LARGE_USERS, LARGEST_MESSAGE_ID, LOCK_MESSAGES
from .errors import DatabaseError, ValidationError

__all__ = [
    "WATERMARK_TTL",
    "LexicalIndex",
    "LexicalIndexBuild",
    "build_lexical_index",
    "build_lexical_indexes",
    "drop_lexical_index",
    "gap_to_rebuild",
    "lexical_indexes",
    "watermark",
]

logger = logging.getLogger(__name__)

#: How long a store trusts the watermark (or the absence) of a user's term index, in seconds.
WATERMARK_TTL = 30.0
#: The first key of the transaction advisory lock that serialises a build of a user's term index
#: with the triggers that rewrite it (schema/0016_lexical_index.sql); the second is ``hashtext(user)``.
LOCK_KEY = 16016

#: A user's watermark (the store's lookup; NULL without an index, or for a role not granted the tables).
WATERMARK_OF_USER = "SELECT ltst_lexical_watermark(%(user_id)s) AS watermark"
_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '100ms'"
#: How often a build asks for the lock that settles its watermark, and the pause between two attempts.
LOCK_ATTEMPTS = 60
LOCK_PAUSE = 0.5
_LOCK_USER = "SELECT pg_advisory_xact_lock(%(key)s, ltst_lexical_lock_key(%(user_id)s))"
_DELETE_USER_POSTINGS = "DELETE FROM ltst_lexical_postings WHERE user_id = %(user_id)s"
_INSERT_USER_POSTINGS = """
INSERT INTO ltst_lexical_postings (user_id, term, message_id, tf, dl)
SELECT m.user_id, t.lexeme, m.message_id, coalesce(array_length(t.positions, 1), 1), length(m.search_tsv)
FROM conversation_messages AS m
CROSS JOIN LATERAL unnest(m.search_tsv) AS t(lexeme, positions, weights)
WHERE m.user_id = %(user_id)s AND m.message_id <= %(watermark)s
"""
_USER_MESSAGES = (
    "SELECT count(*) FROM conversation_messages WHERE user_id = %(user_id)s AND message_id <= %(watermark)s"
)
_REGISTER = """
INSERT INTO ltst_lexical_indexes (user_id, watermark) VALUES (%(user_id)s, %(watermark)s)
ON CONFLICT (user_id) DO UPDATE SET watermark = EXCLUDED.watermark, built_at = now()
"""
_UNREGISTER = "DELETE FROM ltst_lexical_indexes WHERE user_id = %(user_id)s"
_VACUUM = "VACUUM (ANALYZE) ltst_lexical_postings"
#: The term indexes, with the messages each covers... (``rows``) and those stored since (``gap``).
_INDEXES = """
SELECT i.user_id, i.watermark,
       count(m.message_id) FILTER (WHERE m.message_id <= i.watermark) AS rows,
       count(m.message_id) FILTER (WHERE m.message_id > i.watermark) AS gap
FROM ltst_lexical_indexes AS i
LEFT JOIN conversation_messages AS m ON m.user_id = i.user_id
GROUP BY i.user_id, i.watermark
ORDER BY i.user_id
"""
_POSTINGS_OF = "SELECT count(*) FROM ltst_lexical_postings WHERE user_id = %(user_id)s"


#: The transaction-local setting of a leg that reads a term index: its plan is made for the watermark
#: (the gap's rows read through the primary key or the user's btree, whichever holds fewer).
CUSTOM_PLAN = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"


def watermark(core: Core, user_id: str) -> Op[int | None]:
    """The watermark of ``user_id``'s term index (the largest message id it covers), ``None`` without
    one (and on a Citus cluster, where none is built). Kept :data:`WATERMARK_TTL` seconds per store: an
    index rebuilt or dropped since changes the plan of the user's recall, not its answer."""
    from ._ops import is_distributed

    if (yield from is_distributed(core)):
        return None
    hit, known = core.lexical_indexes.get(user_id, WATERMARK_TTL)
    if hit:
        return known
    row = yield Query(WATERMARK_OF_USER, {"user_id": user_id}, fetch="one")
    found = None if row is None or row["watermark"] is None else int(row["watermark"])
    core.lexical_indexes.put(user_id, found)
    return found


def gap_to_rebuild(rows: int) -> int:
    """How many messages a user may store after their term index was built (over ``rows``) before
    ``ltst lexical-index`` rebuilds it: 5 % of it, at least 200 (each question matches and scores the
    gap's messages one by one, ~4-5 µs each)."""
    return max(200, rows // 20)


@dataclass(frozen=True)
class LexicalIndexBuild:
    """What :func:`build_lexical_index` built: whose, over how many messages (``messages``, those up
    to ``watermark``), how many rows (``postings``: one per distinct lexeme of each message) and in
    how many ``seconds``."""

    user_id: str
    watermark: int
    messages: int
    postings: int
    seconds: float


@dataclass(frozen=True)
class LexicalIndex:
    """A user's term index: its ``watermark``, the messages it covers (``rows``) and those stored since
    (``gap``, matched and scored by each question as without an index)."""

    user_id: str
    watermark: int
    rows: int
    gap: int


def _check_user(user_id: Any) -> str:
    from .models import check_id

    return check_id("user_id", user_id)


def _autocommit(conn: psycopg.Connection[Any]) -> bool:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValidationError("building a term index needs a connection outside any transaction")
    previous = conn.autocommit
    conn.autocommit = True
    return previous


def _settled_watermark(conn: psycopg.Connection[Any]) -> int:
    """The largest message id once the writes in flight have ended. The SHARE lock is asked for with a
    short ``lock_timeout`` and asked again after a pause: while it waits for a long write transaction
    (a bulk import), new writes would queue behind it; they wait ~0.1 s at most per attempt."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(_LOCK_TIMEOUT)
                conn.execute(LOCK_MESSAGES)  # (let go at once: every message up to the id read is committed)
                row = conn.execute(LARGEST_MESSAGE_ID).fetchone()
            return int(row[0]) if row else 0
        except psycopg.errors.LockNotAvailable:
            logger.info("writes in flight: the term index build waits (attempt %d)", attempt + 1)
            time.sleep(LOCK_PAUSE)
    raise DatabaseError(
        f"writes to the messages kept the term index build waiting {LOCK_ATTEMPTS} times; try again later"
    )


def _build_one(conn: psycopg.Connection[Any], user_id: str, watermark: int) -> LexicalIndexBuild:
    started = time.perf_counter()
    params = {"user_id": user_id, "watermark": watermark, "key": LOCK_KEY}
    with conn.transaction():
        conn.execute(_LOCK_USER, params)  # edits and deletes of the user's messages wait (not inserts)
        conn.execute(_DELETE_USER_POSTINGS, params)
        postings = conn.execute(_INSERT_USER_POSTINGS, params).rowcount
        row = conn.execute(_USER_MESSAGES, params).fetchone()
        conn.execute(_REGISTER, params)
    messages = int(row[0]) if row else 0
    seconds = time.perf_counter() - started
    logger.info(
        "term index of %s: %d messages up to %d, %d rows, %.2f s", user_id, messages, watermark, postings, seconds
    )
    return LexicalIndexBuild(user_id, watermark, messages, max(postings, 0), seconds)


def _distributed(conn: psycopg.Connection[Any]) -> bool:
    from .hnsw import _distributed as distributed

    return distributed(conn)


def build_lexical_index(conn: psycopg.Connection[Any], user_id: str, *, vacuum: bool = True) -> LexicalIndexBuild:
    """Build (or rebuild) ``user_id``'s term index over their messages stored now (up to the largest
    message id once the writes in flight have ended: the watermark; :class:`DatabaseError` when writes
    keep it waiting ~30 s). New writes wait for those in flight (milliseconds), edits and deletes of
    the user's messages for the build (~0.4 s per 10,000 messages). ``vacuum``: then ``VACUUM
    (ANALYZE)`` the index's table (its reads are index-only scans). ``conn`` must be outside a
    transaction. Not on a Citus cluster."""
    user_id = _check_user(user_id)
    previous = _autocommit(conn)
    try:
        if _distributed(conn):
            raise ValidationError("term indexes are not built on a Citus cluster")
        built = _build_one(conn, user_id, _settled_watermark(conn))
        if vacuum:
            conn.execute(_VACUUM)
        return built
    finally:
        conn.autocommit = previous


def lexical_indexes(conn: psycopg.Connection[Any]) -> list[LexicalIndex]:
    """The users' term indexes, with their watermark, rows and gap."""
    rows = conn.execute(_INDEXES).fetchall()
    if not conn.autocommit:
        conn.rollback()
    return [LexicalIndex(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


def drop_lexical_index(conn: psycopg.Connection[Any], user_id: str) -> bool:
    """Drop ``user_id``'s term index (their recall matches every message again); False if there was none."""
    user_id = _check_user(user_id)
    previous = _autocommit(conn)
    try:
        params = {"user_id": user_id, "key": LOCK_KEY}
        with conn.transaction():
            conn.execute(_LOCK_USER, params)
            dropped = conn.execute(_UNREGISTER, params).rowcount > 0
            conn.execute(_DELETE_USER_POSTINGS, params)
        return dropped
    finally:
        conn.autocommit = previous


def build_lexical_indexes(conn: psycopg.Connection[Any], *, min_rows: int) -> list[LexicalIndexBuild]:
    """Build the term index of every user with more than ``min_rows`` messages (``ltst lexical-index``
    passes the ``lexical_index_min_rows`` setting) who has none, rebuild those whose gap has grown past
    :func:`gap_to_rebuild`, and drop those of users who no longer have that many. Returns what it built
    (nothing on a Citus cluster)."""
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise ValidationError(f"min_rows must be a non-negative integer; got {min_rows!r}")
    previous = _autocommit(conn)
    try:
        if _distributed(conn):
            return []
        large = {str(r[0]): int(r[1]) for r in conn.execute(LARGE_USERS, {"min_rows": min_rows}).fetchall()}
        current = {i.user_id: i for i in lexical_indexes(conn)}
        for user_id in sorted(set(current) - set(large)):
            drop_lexical_index(conn, user_id)
        wanted = [u for u in sorted(large) if u not in current or current[u].gap > gap_to_rebuild(current[u].rows)]
        if not wanted:
            return []
        watermark = _settled_watermark(conn)
        built = [_build_one(conn, user_id, watermark) for user_id in wanted]
        conn.execute(_VACUUM)
        return built
    finally:
        conn.autocommit = previous


def postings_of(conn: psycopg.Connection[Any], user_id: str) -> int:
    """How many rows ``user_id``'s term index holds."""
    row = conn.execute(_POSTINGS_OF, {"user_id": user_id}).fetchone()
    if not conn.autocommit:
        conn.rollback()
    return int(row[0]) if row else 0
