"""Every SQL statement of the store and the mapping of rows to data classes. No I/O here.

Statements are plain strings with ``%(name)s`` / ``%s`` placeholders bound by psycopg; identifiers
never come from user input. Variants (e.g. the scope of a search) are separate constants rather than
``(%s IS NULL OR ...)`` tricks, so each one gets a plan that uses its index.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .models import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    SessionRelationship,
    SessionSummary,
    UserPreference,
)

# --------------------------------------------------------------------------- the owner of a session

#: The parameter an owner slot names the session's owner by (:func:`routed`).
OWNER_PARAM = "session_owner"
_OWNER_SLOT = re.compile(r"/\*owner *(\w+\.)?\*/")


def owner(alias: str = "") -> str:
    """The *owner slot* of a statement that names a session by id, written right after that predicate
    (``WHERE session_id = %(session_id)s {owner()}``; ``alias``: ``"m."`` for a table aliased ``m``).

    As written the slot is an SQL comment: on one server, or when the session's owner is not known, the
    statement runs as it reads. Filled (:func:`routed`) it is ``AND <alias>user_id = %(session_owner)s``,
    and a Citus cluster answers the statement from the owner's shard: its router planner needs
    ``user_id = <a parameter>`` (a ``(%(owner)s IS NULL OR user_id = ...)`` form is not routable), so
    one declaration gives the two forms. ``tests/test_owner_slots.py`` checks that every statement
    naming a session has its slot (or names its user already, or asks every shard by design)."""
    return f"/*owner {alias}*/" if alias else "/*owner*/"


def has_owner(sql: str) -> bool:
    """Whether ``sql`` has an owner slot left to fill."""
    return "/*owner" in sql


@functools.lru_cache(maxsize=512)
def routed(sql: str) -> str:
    """``sql`` with its owner slots filled: ``AND <alias>user_id = %(session_owner)s`` (bind the owner
    as :data:`OWNER_PARAM`)."""
    return _OWNER_SLOT.sub(lambda m: f"AND {m.group(1) or ''}user_id = %({OWNER_PARAM})s", sql)


# --------------------------------------------------------------------------- column lists

SESSION_COLUMNS = (
    "session_id, user_id, session_name, session_type, status, metadata, context_summary, "
    "relevance_score, created_at, last_activity"
)
MESSAGE_COLUMNS = (
    "message_id, message_uuid, session_id, user_id, role, content, message_type, message_index, "
    'parent_message_id, metadata, relevance_score, is_context_message, "timestamp"'
)
#: MESSAGE_COLUMNS of a message table aliased ``m`` (joins).
M_MESSAGE_COLUMNS = ", ".join("m." + c.strip() for c in MESSAGE_COLUMNS.split(","))
#: MESSAGE_COLUMNS for reads whose rows only become ConversationMessage objects (message_from_row): the
#: uuid comes as text, which spares psycopg's UUID loader and str() (0.08 of 0.42 ms for 50 messages).
READ_MESSAGE_COLUMNS = MESSAGE_COLUMNS.replace("message_uuid,", "message_uuid::text AS message_uuid,", 1)
M_READ_MESSAGE_COLUMNS = M_MESSAGE_COLUMNS.replace("m.message_uuid,", "m.message_uuid::text AS message_uuid,", 1)
#: MESSAGE_COLUMNS for reads whose rows become ConversationMessage objects through :func:`message_row`
#: (no embedding): the uuid and the metadata come as text, decoded there rather than by psycopg's UUID and
#: JSON loaders.
MESSAGE_ROW_COLUMNS = READ_MESSAGE_COLUMNS.replace("metadata,", "metadata::text AS metadata,", 1)
#: MESSAGE_ROW_COLUMNS of a message table aliased ``m``.
M_MESSAGE_ROW_COLUMNS = ", ".join("m." + c.strip() for c in MESSAGE_ROW_COLUMNS.split(","))
_MESSAGE_ROW_WIDTH = MESSAGE_ROW_COLUMNS.count(",") + 1
CONTEXT_COLUMNS = (
    "context_id, session_id, user_id, context_type, context_key, context_value, relevance_score, "
    "metadata, expires_at, created_at, updated_at"
)
PREFERENCE_COLUMNS = (
    "user_id, preference_key, preference_value, preference_type, confidence_score, metadata, "
    "is_sensitive, created_at, updated_at"
)
RELATIONSHIP_COLUMNS = (
    "source_session_id, target_session_id, relationship_type, relationship_strength, metadata, created_at"
)
SUMMARY_COLUMNS = (
    "session_id, total_messages, human_messages, ai_messages, system_messages, tool_messages, "
    "first_message_at, last_message_at, total_tokens_estimate, summary, updated_at"
)

# --------------------------------------------------------------------------- per-transaction settings

# The vector index is IVFFlat (ltst_memory/hnsw.py); the HNSW settings serve an HNSW index a deployment
# keeps of its own. Iterative scans keep probing lists until ``limit`` rows pass a filter. With
# ``enable_sort`` off a large user's search scans the vector index instead of sorting every row of the
# user's that the (user_id, timestamp) btree returns (the planner's pick, 10x slower at 100k rows).
# plan_cache_mode: a search of the vector index is planned for its parameters every time, so that a
# user's own index (a partial index WHERE user_id = '...', ltst_memory/hnsw.py) is used: the generic plan
# a prepared statement switches to after five executions cannot use a partial index.
SET_SEARCH_SETTINGS = """
SELECT set_config('ivfflat.iterative_scan', 'relaxed_order', true), set_config('ivfflat.probes', %(probes)s, true),
       set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', %(ef_search)s, true),
       set_config('enable_sort', %(enable_sort)s, true), set_config('plan_cache_mode', 'force_custom_plan', true)
"""

# --------------------------------------------------------------------------- sessions

INSERT_SESSION = f"""
INSERT INTO conversation_sessions
    (session_id, user_id, session_name, session_type, status, metadata, context_summary, relevance_score)
VALUES (%(session_id)s, %(user_id)s, %(session_name)s, %(session_type)s, %(status)s, %(metadata)s::jsonb,
        %(context_summary)s, %(relevance_score)s)
ON CONFLICT DO NOTHING
RETURNING {SESSION_COLUMNS}
"""

SELECT_SESSION = f"SELECT {SESSION_COLUMNS} FROM conversation_sessions WHERE session_id = %(session_id)s {owner()}"

#: Key of the advisory lock held while migrating or building the vector index ("ltst" in ASCII).
MIGRATION_LOCK_KEY = 0x6C747374

# Building an index up to a watermark (the main and users' own vector indexes, ltst_memory/hnsw.py; the
# users' term indexes, ltst_memory/lexical_index.py). A SHARE lock waits for the writes in flight and
# holds new ones back: the largest message id read under it is a watermark no uncommitted message is below.
LOCK_MESSAGES = "LOCK TABLE conversation_messages IN SHARE MODE"
LARGEST_MESSAGE_ID = "SELECT coalesce(max(message_id), 0) FROM conversation_messages"
#: The users with more than ``min_rows`` messages (the trigger-kept statistics of migration 0002).
LARGE_USERS = """
SELECT user_id, sum(n)::bigint AS doc_count FROM (
    SELECT user_id, doc_count AS n FROM ltst_user_stats
    UNION ALL
    SELECT user_id, count(*) FROM ltst_term_pending GROUP BY user_id
) AS counted GROUP BY user_id HAVING sum(n) > %(min_rows)s ORDER BY user_id
"""

#: The owner of a session (no row: no such session).
SESSION_OWNER = f"SELECT user_id FROM conversation_sessions WHERE session_id = %(session_id)s {owner()}"
#: The owner of a session asked of every shard (on a Citus cluster): what a remembered owner is checked
#: against (``_ops.session_read``).
SESSION_OWNER_ANYWHERE = "SELECT user_id FROM conversation_sessions WHERE session_id = %(session_id)s"

SELECT_USER_SESSIONS = f"""
SELECT {SESSION_COLUMNS} FROM conversation_sessions
WHERE user_id = %(user_id)s
ORDER BY last_activity DESC, session_id
LIMIT %(limit)s
"""

TOUCH_SESSION = f"""
UPDATE conversation_sessions SET last_activity = GREATEST(last_activity, now())
WHERE session_id = %(session_id)s {owner()}
RETURNING last_activity
"""

UPDATE_SESSION_FIELDS = f"""
UPDATE conversation_sessions SET
    session_name = %(session_name)s, session_type = %(session_type)s, status = %(status)s,
    metadata = %(metadata)s::jsonb, context_summary = %(context_summary)s,
    relevance_score = %(relevance_score)s, last_activity = GREATEST(last_activity, now())
WHERE session_id = %(session_id)s {owner()}
RETURNING {SESSION_COLUMNS}
"""

LOCK_SESSIONS = f"""
SELECT session_id, user_id, next_message_index FROM conversation_sessions
WHERE session_id = ANY(%(session_ids)s) {owner()}
ORDER BY session_id
FOR UPDATE
"""

# On a Citus cluster a row lock needs a statement answered by one shard: the sessions of one user.
LOCK_SESSIONS_OF_USER = """
SELECT session_id, user_id, next_message_index FROM conversation_sessions
WHERE user_id = %(user_id)s AND session_id = ANY(%(session_ids)s)
ORDER BY session_id
FOR UPDATE
"""

# On a Citus cluster: creators of one session id queue here (a transaction lock on the coordinator).
LOCK_SESSION_ID = "SELECT pg_advisory_xact_lock(hashtextextended('ltst.session:' || %(session_id)s, 0))"

# Whether conversation_sessions is a Citus table: the extension first (its catalog exists only then).
CITUS_INSTALLED = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS installed"
IS_DISTRIBUTED = """
SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'conversation_sessions'::regclass)
       AS distributed
"""

ADVANCE_MESSAGE_INDEX = f"""
UPDATE conversation_sessions AS s SET next_message_index = x.next_index
FROM unnest(%(session_ids)s::text[], %(next_indexes)s::int[]) AS x(session_id, next_index)
WHERE s.session_id = x.session_id {owner("s.")}
"""

COUNT_SESSION_ROWS = f"""
SELECT
    (SELECT count(*) FROM conversation_messages WHERE session_id = %(session_id)s {owner()}) AS messages,
    (SELECT count(*) FROM conversation_context WHERE session_id = %(session_id)s {owner()}) AS context,
    (SELECT count(*) FROM session_relationships
      WHERE (source_session_id = %(session_id)s OR target_session_id = %(session_id)s) {owner()}) AS relationships
"""

DELETE_SESSION = f"DELETE FROM conversation_sessions WHERE session_id = %(session_id)s {owner()}"

# --------------------------------------------------------------------------- messages

SELECT_MESSAGES_BY_UUID = f"""
SELECT {MESSAGE_COLUMNS}, embedding FROM conversation_messages WHERE message_uuid = ANY(%(uuids)s::uuid[])
"""

# One statement for a whole batch (rows as parallel arrays): the statement-level triggers (summary,
# activity, BM25 term statistics) fire once per batch, and the sessions' next_message_index advances
# in the same statement. Callers hold the session rows locked (LOCK_SESSIONS) and assign the indexes.
INSERT_MESSAGES = f"""
WITH inserted AS (
    INSERT INTO conversation_messages
        (message_uuid, session_id, user_id, role, content, message_type, message_index, parent_message_id,
         metadata, embedding, relevance_score, is_context_message, "timestamp")
    SELECT x.message_uuid, x.session_id, x.user_id, x.role, x.content, x.message_type, x.message_index,
           x.parent_message_id, x.metadata, x.embedding, x.relevance_score, x.is_context_message,
           coalesce(x.ts, now())
    FROM unnest(%(message_uuid)s::uuid[], %(session_id)s::text[], %(user_id)s::text[], %(role)s::text[],
                %(content)s::text[], %(message_type)s::text[], %(message_index)s::int[],
                %(parent_message_id)s::bigint[], %(metadata)s::jsonb[], %(embedding)b::vector[],
                %(relevance_score)s::float8[], %(is_context_message)s::bool[], %(timestamp)s::timestamptz[])
         AS x(message_uuid, session_id, user_id, role, content, message_type, message_index,
              parent_message_id, metadata, embedding, relevance_score, is_context_message, ts)
    RETURNING {MESSAGE_COLUMNS}
),
advanced AS ({ADVANCE_MESSAGE_INDEX})
SELECT * FROM inserted
"""

# The common case in one statement: messages of ONE session, ids and parents left to the store.
# The UPDATE both locks the session row (concurrent writers queue on it) and reserves the indexes
# [first_index, first_index + n); no session row means no insert (the caller reports the session
# as unknown). It also sets last_activity, as the summary trigger would (schema/0017): one new
# version of the session row instead of two. (One server only: Citus refuses now() over a column.)
INSERT_MESSAGES_ONE_SESSION = f"""
WITH session AS (
    UPDATE conversation_sessions
    SET next_message_index = next_message_index + cardinality(%(content)s::text[]),
        last_activity = GREATEST(last_activity, now())
    WHERE session_id = %(session_id)s {owner()}
    RETURNING user_id, next_message_index - cardinality(%(content)s::text[]) AS first_index
)
INSERT INTO conversation_messages
    (message_uuid, session_id, user_id, role, content, message_type, message_index, metadata, embedding,
     relevance_score, is_context_message, "timestamp")
SELECT x.message_uuid, %(session_id)s, s.user_id, x.role, x.content, x.message_type,
       s.first_index + x.n::int - 1, x.metadata, x.embedding, x.relevance_score, x.is_context_message,
       coalesce(x.ts, now())
FROM session AS s,
     unnest(%(message_uuid)s::uuid[], %(role)s::text[], %(content)s::text[], %(message_type)s::text[],
            %(metadata)s::jsonb[], %(embedding)b::vector[], %(relevance_score)s::float8[],
            %(is_context_message)s::bool[], %(timestamp)s::timestamptz[])
         WITH ORDINALITY AS x(message_uuid, role, content, message_type, metadata, embedding, relevance_score,
                              is_context_message, ts, n)
RETURNING {MESSAGE_COLUMNS}
"""

#: A message whose user_id, content and speaker hold at most this many bytes together waits in
#: ltst_term_pending: none of its (user_id, word) keys can reach the btree limit of ltst_term_stats (2,704
#: bytes; a word's lexeme is at most 1.5 times its bytes). A longer one is counted by its append, so a
#: key over the limit fails that append (a ValidationError), never a later fold.
PENDING_MAX_BYTES = 1800

# INSERT_MESSAGES_ONE_SESSION for a single message, its values bound one by one rather than as arrays
# (store_message: 60 µs less to bind, and no unnest on the server); it returns what the server chose (id,
# index, owner, timestamp: ``appended_message`` adds the rest from the values). It keeps session_summary
# (its row made with the session's) current itself, records the message in ltst_term_pending (its BM25
# statistics are counted later: FOLD_TERM_PENDING; a long message's at once: PENDING_MAX_BYTES), and
# marks itself so that the two statement-level insert triggers skip it (schema/0018_append_one.sql): no
# plpgsql, no transition table, no per-word upsert while the caller waits. (One server only, as
# INSERT_MESSAGES_ONE_SESSION.)
INSERT_MESSAGE = f"""
WITH session AS (
    UPDATE conversation_sessions
    SET next_message_index = next_message_index + 1, last_activity = GREATEST(last_activity, now())
    WHERE session_id = %(session_id)s {owner()}
    RETURNING user_id, next_message_index - 1 AS message_index,
              set_config('ltst.append_statement', statement_timestamp()::text, true) AS marked
),
inserted AS (
    INSERT INTO conversation_messages
        (message_uuid, session_id, user_id, role, content, message_type, message_index, metadata, embedding,
         relevance_score, is_context_message, "timestamp")
    SELECT %(message_uuid)s, %(session_id)s, s.user_id, %(role)s, %(content)s, %(message_type)s, s.message_index,
           %(metadata)s::jsonb, %(embedding)b::vector, %(relevance_score)s, %(is_context_message)s,
           coalesce(%(timestamp)s::timestamptz, now())
    FROM session AS s
    RETURNING message_id, message_index, user_id, "timestamp", session_id, role, content, search_tsv,
              octet_length(user_id) + octet_length(content)
              + coalesce(octet_length(metadata ->> 'speaker'), 0) <= {PENDING_MAX_BYTES} AS deferred
),
summary AS (
    UPDATE session_summary AS s SET
        total_messages        = s.total_messages + 1,
        human_messages        = s.human_messages + (i.role = 'human')::int,
        ai_messages           = s.ai_messages + (i.role = 'ai')::int,
        system_messages       = s.system_messages + (i.role = 'system')::int,
        tool_messages         = s.tool_messages + (i.role = 'tool')::int,
        first_message_at      = LEAST(s.first_message_at, i."timestamp"),
        last_message_at       = GREATEST(s.last_message_at, i."timestamp"),
        total_tokens_estimate = s.total_tokens_estimate + ltst_token_estimate(i.content),
        updated_at            = now()
    FROM inserted AS i
    WHERE s.session_id = i.session_id
),
pending AS (
    INSERT INTO ltst_term_pending (user_id, message_id)
    SELECT user_id, message_id FROM inserted
    WHERE CASE WHEN deferred THEN true ELSE ltst_count_message_now(user_id, search_tsv) END
)
SELECT message_id, message_index, user_id, "timestamp" FROM inserted
"""

#: Count the pending messages into ltst_user_stats / ltst_term_stats (schema/0018_append_one.sql): the
#: store runs it after every FOLD_EVERY-th single append (by message id), so a few dozen messages wait.
FOLD_TERM_PENDING = "SELECT ltst_fold_term_pending() AS folded"
FOLD_EVERY = 64

#: The columns of INSERT_MESSAGES, each bound as one array.
INSERT_MESSAGES_COLUMNS = (
    "message_uuid",
    "session_id",
    "user_id",
    "role",
    "content",
    "message_type",
    "message_index",
    "parent_message_id",
    "metadata",
    "embedding",
    "relevance_score",
    "is_context_message",
    "timestamp",
)

SELECT_MESSAGES = f"""
SELECT {MESSAGE_ROW_COLUMNS} FROM conversation_messages
WHERE session_id = %(session_id)s {owner()}
ORDER BY message_index
LIMIT %(limit)s OFFSET %(offset)s
"""

SELECT_RECENT_MESSAGES = f"""
SELECT * FROM (
    SELECT {MESSAGE_ROW_COLUMNS} FROM conversation_messages
    WHERE session_id = %(session_id)s {owner()}
    ORDER BY message_index DESC
    LIMIT %(limit)s
) AS recent ORDER BY message_index
"""

SELECT_PARENT_OWNERS = """
SELECT message_id, user_id FROM conversation_messages WHERE message_id = ANY(%(ids)s)
"""

# Search through a vector index over every message (a Citus cluster's; one built before watermarks), or
# an exact scan of the table without one: ``{order}`` is the distance the index orders by
# (ltst_memory/hnsw.py: float32, or float16 for a halfvec index); the candidates are re-ranked by the
# float32 distance.
_SEARCH_TEMPLATE = """
WITH candidates AS MATERIALIZED (
    SELECT {columns}, embedding <=> %(query)s AS distance
    FROM conversation_messages
    WHERE embedding IS NOT NULL {scope}
    ORDER BY {order}
    LIMIT %(limit)s
)
SELECT *, 1 - distance AS similarity FROM candidates
WHERE 1 - distance >= %(threshold)s
ORDER BY distance, message_id
"""


def _search_scopes(t: str) -> dict[str, str]:
    """The scopes of search_messages, by name, on the message table aliased ``t`` (``""`` or ``"m."``)."""
    return {
        "session": f"AND {t}session_id = %(session_id)s {owner(t)}",
        "user": f"AND {t}user_id = %(user_id)s",
        "user_session": f"AND {t}user_id = %(user_id)s AND {t}session_id = %(session_id)s",
        "all": "",
    }


#: The scopes of search_messages, by name.
SEARCH_SCOPES = _search_scopes("")


@functools.lru_cache(maxsize=64)
def search_messages_sql(scope: str, order: str = "embedding <=> %(query)s") -> str:
    """The vector-index search of ``scope`` (a key of SEARCH_SCOPES) ordered by ``order`` (hnsw.order_by)."""
    return _SEARCH_TEMPLATE.format(columns=MESSAGE_ROW_COLUMNS, scope=SEARCH_SCOPES[scope], order=order)


# The nearest rows through a vector index that covers the messages up to a watermark W (ltst_memory/hnsw.py):
# the main index (``WHERE message_id <= W``) or a large user's own (``user_id = ... AND message_id <= W``,
# its user in ``{scope}``). The statement repeats the predicate so that the planner takes the index
# (``{order}``: the distance it orders by, ``hnsw.order_by``); the messages stored since (the gap,
# ``message_id > W``) are read exactly, through the primary key or the user's gap btree. The index's
# nearest ``{limit}`` and every row of the gap are ranked together by the float32 distance. Should the
# index come back with fewer than ``{limit}`` rows (a scan stops at its limits under a selective
# filter), the rows up to W are read exactly instead: a one-time filter, not run otherwise. Two CTEs,
# ``indexed`` and ``nearest`` (message_id, distance), for search_messages and recall's vector leg alike;
# ``{scope}`` is ``AND`` conditions on ``m``.
_NEAREST_BY_WATERMARK = """
indexed AS MATERIALIZED (
    SELECT m.message_id, m.embedding <=> %({query})s AS distance FROM conversation_messages AS m
    WHERE m.embedding IS NOT NULL {scope} AND m.message_id <= %(watermark)s::bigint
    ORDER BY {order}
    LIMIT %({limit})s
),
nearest AS MATERIALIZED (
    SELECT message_id, distance FROM (
        SELECT message_id, distance FROM indexed
        UNION ALL
        SELECT m.message_id, m.embedding <=> %({query})s AS distance FROM conversation_messages AS m
        WHERE (SELECT count(*) FROM indexed) < %({limit})s
          AND m.embedding IS NOT NULL {scope} AND m.message_id <= %(watermark)s::bigint
          AND m.message_id <> ALL(ARRAY(SELECT message_id FROM indexed))
        UNION ALL
        SELECT m.message_id, m.embedding <=> %({query})s AS distance FROM conversation_messages AS m
        WHERE m.embedding IS NOT NULL {scope} AND m.message_id > %(watermark)s::bigint
    ) AS parts
    ORDER BY distance, message_id
    LIMIT %({limit})s
)"""


def nearest_sql(scope: str, order: str, *, query: str = "query", limit: str = "limit") -> str:
    """The CTEs ``indexed`` and ``nearest`` of a search through an index up to a watermark (parameter
    ``watermark``) and its gap: ``scope``, conditions on ``m`` (each starting with ``AND``); ``order``,
    the index's distance for ``m.embedding`` (``hnsw.order_by``); ``query`` and ``limit``, the names of
    the query vector's and the row count's parameters."""
    return _NEAREST_BY_WATERMARK.format(scope=scope, order=order, query=query, limit=limit)


_WATERMARK_SEARCH_TEMPLATE = """
WITH {nearest}
SELECT {columns}, best.distance, 1 - best.distance AS similarity
FROM nearest AS best JOIN conversation_messages AS m USING (message_id)
WHERE 1 - best.distance >= %(threshold)s {scope}
ORDER BY best.distance, m.message_id
"""

#: The scopes of search_messages on ``m``, by name.
_M_SEARCH_SCOPES = _search_scopes("m.")


@functools.lru_cache(maxsize=64)
def search_by_watermark_sql(scope: str, order: str) -> str:
    """The search of ``scope`` (a key of SEARCH_SCOPES) through an index up to a watermark and its gap
    (:func:`nearest_sql`): the main index, or (scope ``user`` / ``user_session``, ``order`` over
    ``l2_normalize``) a large user's own."""
    where = _M_SEARCH_SCOPES[scope]
    return _WATERMARK_SEARCH_TEMPLATE.format(
        nearest=nearest_sql(where, order), columns=M_MESSAGE_ROW_COLUMNS, scope=where
    )


# Exact search over a small scope: the rows come from the btree on session_id / user_id and every
# distance is computed, so the answer is complete and exact (an index scan with a selective filter
# may stop at its scan limits before it has seen every row of the scope). Only the ids and distances of
# the scope are sorted; the full rows are read for the ``limit`` best alone (−35 % server time for a
# user of 3,000 messages, docs/benchmarks.md). The ``OFFSET 0`` subquery (never flattened) computes
# each distance once and keeps the planner off the vector index's order (sorting by the expression
# itself computed it twice for every row of the scope: −20 % for a user of 10,000 messages).
_EXACT_SEARCH_TEMPLATE = """
WITH best AS MATERIALIZED (
    SELECT message_id, distance FROM (
        SELECT message_id, embedding <=> %(query)s AS distance
        FROM conversation_messages
        WHERE embedding IS NOT NULL {scope}
        OFFSET 0
    ) AS scoped
    ORDER BY distance, message_id
    LIMIT %(limit)s
)
SELECT {columns}, best.distance, 1 - best.distance AS similarity
FROM best JOIN conversation_messages AS m USING (message_id)
WHERE 1 - best.distance >= %(threshold)s {outer_scope}
ORDER BY best.distance, m.message_id
"""
_IN_SESSION = "AND {t}session_id = %(session_id)s /*owner {t}*/"
_OF_USER = "AND {t}user_id = %(user_id)s"  # also lets Citus route the join to the user's shard


def _exact_search(*scopes: str) -> str:
    return _EXACT_SEARCH_TEMPLATE.format(
        columns=M_MESSAGE_ROW_COLUMNS,
        scope=" ".join(s.format(t="") for s in scopes),
        outer_scope=" ".join(s.format(t="m.") for s in scopes),
    )


EXACT_SEARCH_IN_SESSION = _exact_search(_IN_SESSION)
EXACT_SEARCH_OF_USER = _exact_search(_OF_USER)
EXACT_SEARCH_IN_USER_SESSION = _exact_search(_OF_USER, _IN_SESSION)

# How many messages a scope holds, from rows the triggers keep current (no scan of messages).
SCOPE_SIZE_OF_SESSION = (
    f"SELECT coalesce(max(total_messages), 0) AS n FROM session_summary WHERE session_id = %(session_id)s {owner()}"
)
#: The user's message count: counted by the BM25 statistics (schema/0002, 0008), plus the user's messages
#: not counted yet (schema/0018_append_one.sql).
SCOPE_SIZE_OF_USER = """
SELECT coalesce((SELECT doc_count FROM ltst_user_stats WHERE user_id = %(user_id)s), 0)
       + (SELECT count(*) FROM ltst_term_pending WHERE user_id = %(user_id)s) AS n
"""
SCOPE_SIZE_OF_SESSIONS = f"""
SELECT coalesce(sum(total_messages), 0) AS n FROM session_summary
WHERE session_id = ANY(%(session_ids)s::text[]) {owner()}
"""

# --------------------------------------------------------------------------- context

UPSERT_CONTEXT = f"""
INSERT INTO conversation_context AS c
    (session_id, user_id, context_type, context_key, context_value, relevance_score, metadata, expires_at,
     updated_at)
VALUES (%(session_id)s, %(user_id)s, %(context_type)s, %(context_key)s, %(context_value)s,
        %(relevance_score)s, %(metadata)s::jsonb, %(expires_at)s, now())
ON CONFLICT ON CONSTRAINT conversation_context_key DO UPDATE SET
    context_value = EXCLUDED.context_value,
    relevance_score = EXCLUDED.relevance_score,
    metadata = EXCLUDED.metadata,
    expires_at = EXCLUDED.expires_at,
    updated_at = EXCLUDED.updated_at
RETURNING {CONTEXT_COLUMNS}
"""

_SELECT_CONTEXT = f"""
SELECT {CONTEXT_COLUMNS} FROM conversation_context
WHERE session_id = %(session_id)s {owner()} AND (expires_at IS NULL OR expires_at > now()) {{type_filter}}
ORDER BY relevance_score DESC, updated_at DESC, context_id
"""
SELECT_CONTEXT = _SELECT_CONTEXT.format(type_filter="")
SELECT_CONTEXT_OF_TYPE = _SELECT_CONTEXT.format(type_filter="AND context_type = %(context_type)s")

DELETE_EXPIRED_CONTEXT = """
DELETE FROM conversation_context WHERE expires_at IS NOT NULL AND expires_at <= now()
"""

# --------------------------------------------------------------------------- preferences

UPSERT_PREFERENCE = f"""
INSERT INTO user_preferences AS p
    (user_id, preference_key, preference_value, preference_type, confidence_score, metadata, is_sensitive,
     updated_at)
VALUES (%(user_id)s, %(preference_key)s, %(preference_value)s::jsonb, %(preference_type)s,
        %(confidence_score)s, %(metadata)s::jsonb, %(is_sensitive)s, now())
ON CONFLICT (user_id, preference_key) DO UPDATE SET
    preference_value = EXCLUDED.preference_value,
    preference_type = EXCLUDED.preference_type,
    confidence_score = EXCLUDED.confidence_score,
    metadata = EXCLUDED.metadata,
    is_sensitive = EXCLUDED.is_sensitive,
    updated_at = EXCLUDED.updated_at
RETURNING {PREFERENCE_COLUMNS}
"""

_SELECT_PREFERENCES = f"""
SELECT {PREFERENCE_COLUMNS} FROM user_preferences WHERE user_id = %(user_id)s {{type_filter}}
ORDER BY confidence_score DESC, preference_key
"""
SELECT_PREFERENCES = _SELECT_PREFERENCES.format(type_filter="")
SELECT_PREFERENCES_OF_TYPE = _SELECT_PREFERENCES.format(type_filter="AND preference_type = %(preference_type)s")

# --------------------------------------------------------------------------- relationships

_UPSERT_RELATIONSHIP = f"""
INSERT INTO session_relationships AS r
    (source_session_id, target_session_id, relationship_type, relationship_strength, metadata{{user_column}})
VALUES (%(source_session_id)s, %(target_session_id)s, %(relationship_type)s, %(relationship_strength)s,
        %(metadata)s::jsonb{{user_value}})
ON CONFLICT ON CONSTRAINT session_relationships_key DO UPDATE SET
    relationship_strength = EXCLUDED.relationship_strength,
    metadata = EXCLUDED.metadata
RETURNING {RELATIONSHIP_COLUMNS}
"""
UPSERT_RELATIONSHIP = _UPSERT_RELATIONSHIP.format(user_column="", user_value="")
# On a Citus cluster (schema/citus/: the table has user_id, its distribution column, which an INSERT
# must name to be routed to a shard).
UPSERT_RELATIONSHIP_OF_USER = _UPSERT_RELATIONSHIP.format(user_column=", user_id", user_value=", %(user_id)s")

SELECT_SESSION_OWNERS = f"""
SELECT session_id, user_id FROM conversation_sessions WHERE session_id = ANY(%(session_ids)s) {owner()}
"""
#: Whether a session id is taken, by any user: a new session's id is checked among every user's (on a
#: Citus cluster every shard's: ids are unique across users).
SESSION_ID_TAKEN = "SELECT user_id FROM conversation_sessions WHERE session_id = %(session_id)s"

SELECT_RELATED_SESSIONS = f"""
SELECT {", ".join("s." + c.strip() for c in SESSION_COLUMNS.split(","))},
       r.source_session_id, r.target_session_id, r.relationship_type, r.relationship_strength,
       r.metadata AS relationship_metadata, r.created_at AS relationship_created_at
FROM (  -- materialized first: on Citus, a join of two distributed tables must pair user_id
    WITH r AS MATERIALIZED (
        SELECT * FROM session_relationships
        WHERE (source_session_id = %(session_id)s OR target_session_id = %(session_id)s) {owner()}
    )
    SELECT * FROM r
) AS r
JOIN conversation_sessions AS s
  ON s.session_id = CASE WHEN r.source_session_id = %(session_id)s
                         THEN r.target_session_id ELSE r.source_session_id END
WHERE s.user_id = (SELECT o.user_id FROM conversation_sessions AS o
                   WHERE o.session_id = %(session_id)s {owner("o.")}) {owner("s.")}
ORDER BY r.relationship_strength DESC, s.last_activity DESC
LIMIT %(limit)s
"""

# --------------------------------------------------------------------------- summary

SELECT_SUMMARY = f"SELECT {SUMMARY_COLUMNS} FROM session_summary WHERE session_id = %(session_id)s {owner()}"

# --------------------------------------------------------------------------- metadata

SELECT_METADATA = "SELECT key, value FROM ltst_metadata"
UPSERT_METADATA = """
INSERT INTO ltst_metadata (key, value, updated_at) VALUES (%(key)s, %(value)s, now())
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
"""
SERVER_VERSIONS = """
SELECT current_setting('server_version') AS postgres,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector
"""


# --------------------------------------------------------------------------- row mapping


def to_vector(value: Any) -> list[float] | None:
    """A stored vector as a list of floats, whatever pgvector-python returned (ndarray or Vector)."""
    if value is None:
        return None
    if hasattr(value, "to_list"):
        return [float(x) for x in value.to_list()]
    return [float(x) for x in np.asarray(value, dtype=np.float32)]


def session_from_row(row: dict[str, Any]) -> ConversationSession:
    return ConversationSession(
        session_id=row["session_id"],
        user_id=row["user_id"],
        session_name=row["session_name"],
        session_type=row["session_type"],
        status=row["status"],
        metadata=row["metadata"],
        context_summary=row["context_summary"],
        relevance_score=row["relevance_score"],
        created_at=row["created_at"],
        last_activity=row["last_activity"],
    )


def session_row(cursor: Any) -> Callable[[Sequence[Any]], ConversationSession]:
    """A psycopg row factory (``Query(..., row=session_row)``) for a statement that selects
    :data:`SESSION_COLUMNS`, the fields of ConversationSession in their order: each row becomes the
    session straight from its values, with no dict row in between."""
    result = cursor.pgresult
    if result is not None and result.nfields and result.nfields != _SESSION_ROW_WIDTH:
        raise RuntimeError(f"a session row needs the {_SESSION_ROW_WIDTH} SESSION_COLUMNS, got {result.nfields}")
    return _session_of


def _session_of(values: Sequence[Any]) -> ConversationSession:
    return ConversationSession(*values)


_SESSION_ROW_WIDTH = SESSION_COLUMNS.count(",") + 1


def message_from_row(row: dict[str, Any]) -> ConversationMessage:
    return ConversationMessage(
        session_id=row["session_id"],
        role=row["role"],
        content=row["content"],
        message_type=row["message_type"],
        message_index=row["message_index"],
        parent_message_id=row["parent_message_id"],
        metadata=row["metadata"],
        embedding=to_vector(row.get("embedding")),
        relevance_score=row["relevance_score"],
        is_context_message=row["is_context_message"],
        timestamp=row["timestamp"],
        message_id=row["message_id"],
        user_id=row["user_id"],
        message_uuid=str(row["message_uuid"]),
    )


def message_row(cursor: Any) -> Callable[[Sequence[Any]], ConversationMessage]:
    """A psycopg row factory (``Query(..., row=message_row)``) for a statement that selects
    :data:`MESSAGE_ROW_COLUMNS`: each row becomes a ConversationMessage straight from its values, with
    no dict row in between (a quarter of ``get_recent_messages(50)``'s time: docs/benchmarks.md)."""
    _check_width(cursor, exact=True)
    return _message_of


def scored_message_row(cursor: Any) -> Callable[[Sequence[Any]], tuple[ConversationMessage, float]]:
    """:func:`message_row` for a statement that selects :data:`MESSAGE_ROW_COLUMNS` (or
    ``M_MESSAGE_ROW_COLUMNS``), then columns of its own, the last one a score: each row becomes
    ``(message, score)`` (a search's ``similarity``)."""
    _check_width(cursor, exact=False)
    return _scored_message_of


def _check_width(cursor: Any, exact: bool) -> None:
    result = cursor.pgresult
    if result is None or not result.nfields:  # (no result yet, or a statement without rows)
        return
    if result.nfields < _MESSAGE_ROW_WIDTH + (not exact) or (exact and result.nfields != _MESSAGE_ROW_WIDTH):
        raise RuntimeError(f"a message row needs the {_MESSAGE_ROW_WIDTH} MESSAGE_ROW_COLUMNS, got {result.nfields}")


def _message_of(values: Sequence[Any], loads: Callable[[str], Any] = json.loads) -> ConversationMessage:
    (mid, uuid, session_id, uid, role, content, message_type, index, parent, metadata, score, context, ts) = values
    return ConversationMessage(
        session_id,
        role,
        content,
        message_type,
        index,
        parent,
        {} if metadata == "{}" else loads(metadata),
        None,
        score,
        context,
        ts,
        mid,
        uid,
        uuid,
    )


def appended_message(values: dict[str, Any], row: Sequence[Any]) -> ConversationMessage:
    """The message ``INSERT_MESSAGE`` stored from ``values`` (its parameters), given the row it returned
    (id, index, owner, timestamp): the rest is what was bound, as the server keeps it (metadata decoded
    from the JSON text bound, equal to what ``jsonb`` gives back)."""
    mid, index, uid, ts = row
    metadata = values["metadata"]
    return ConversationMessage(
        values["session_id"],
        values["role"],
        values["content"],
        values["message_type"],
        index,
        None,
        {} if metadata == "{}" else json.loads(metadata),
        None,
        values["relevance_score"],
        values["is_context_message"],
        ts,
        mid,
        uid,
        str(values["message_uuid"]),
    )


def _scored_message_of(values: Sequence[Any]) -> tuple[ConversationMessage, float]:
    return _message_of(values[:_MESSAGE_ROW_WIDTH]), values[-1]


def message_of(values: Sequence[Any]) -> ConversationMessage:
    """The message of a row whose values start with :data:`MESSAGE_ROW_COLUMNS` (for a row factory of
    wider rows, such as recall's candidates)."""
    return _message_of(values[:_MESSAGE_ROW_WIDTH])


def context_from_row(row: dict[str, Any]) -> ConversationContext:
    return ConversationContext(**{k: row[k] for k in CONTEXT_COLUMNS.replace(" ", "").split(",")})


def preference_from_row(row: dict[str, Any]) -> UserPreference:
    return UserPreference(**{k: row[k] for k in PREFERENCE_COLUMNS.replace(" ", "").split(",")})


def relationship_from_row(row: dict[str, Any]) -> SessionRelationship:
    return SessionRelationship(**{k: row[k] for k in RELATIONSHIP_COLUMNS.replace(" ", "").split(",")})


def related_from_row(row: dict[str, Any]) -> tuple[ConversationSession, SessionRelationship]:
    relationship = SessionRelationship(
        source_session_id=row["source_session_id"],
        target_session_id=row["target_session_id"],
        relationship_type=row["relationship_type"],
        relationship_strength=row["relationship_strength"],
        metadata=row["relationship_metadata"],
        created_at=row["relationship_created_at"],
    )
    return session_from_row(row), relationship


def summary_from_row(row: dict[str, Any]) -> SessionSummary:
    return SessionSummary(**{k: row[k] for k in SUMMARY_COLUMNS.replace(" ", "").split(",")})


#: Delete one message, of ``user_id`` only when ``user_id`` is not NULL; returns the deleted row's keys.
DELETE_MESSAGE = """
DELETE FROM conversation_messages
WHERE message_id = %(message_id)s AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s::text)
RETURNING message_id, session_id, user_id
"""
