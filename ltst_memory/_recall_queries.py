"""SQL of hybrid retrieval (:mod:`ltst_memory.recall`) and rehydration. No I/O here.

The candidate query is assembled from constant fragments chosen by code (scope, filters); values are
always bound parameters. One statement computes, inside PostgreSQL:

* Okapi BM25 over ``search_tsv`` with the per-user term statistics of migration 0002
  (``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, ``tf`` = occurrences of the lexeme, document length
  = number of distinct lexemes), keeping the best ``candidates``;
* the ``candidates`` nearest embeddings (HNSW, iterative scan so a filter never starves the result);
* the turns adjacent to those (optional: ``with_neighbors``);
* for the union of all, every candidate's BM25 score *and* cosine similarity, so fusion in Python
  sees both signals for every row.
"""

from __future__ import annotations

from ._queries import M_MESSAGE_COLUMNS, MESSAGE_COLUMNS, owner

# --------------------------------------------------------------------------- fragments

SCOPE_USER = "m.user_id = %(user_id)s"
SCOPE_SESSION = f"m.session_id = %(session_id)s {owner('m.')}"
SCOPE_SESSIONS = f"m.session_id = ANY(%(session_ids)s::text[]) {owner('m.')}"
SCOPE_ALL = "TRUE"

FILTER_METADATA = " AND m.metadata @> %(metadata)s::jsonb"
FILTER_SINCE = ' AND m."timestamp" >= %(since)s'
FILTER_UNTIL = ' AND m."timestamp" < %(until)s'
FILTER_ROLES = " AND m.role = ANY(%(roles)s::text[])"
FILTER_EXCLUDE = " AND m.message_id <> ALL(%(exclude_ids)s::bigint[])"
FILTER_USER = " AND m.user_id = %(user_id)s"

# Term statistics of one user (the usual case) or summed over every user (an unscoped search).
STATS_OF_USER = """
totals AS (
    SELECT doc_count::float8 AS n, greatest(total_length::float8 / greatest(doc_count, 1), 1.0) AS avgdl
    FROM ltst_user_stats WHERE user_id = %(stats_user)s
),
idf AS (
    SELECT s.term, ln(1.0 + (tt.n - s.doc_count + 0.5) / (s.doc_count + 0.5)) AS idf
    FROM ltst_term_stats AS s CROSS JOIN totals AS tt
    WHERE s.user_id = %(stats_user)s AND s.term = ANY(ARRAY(SELECT term FROM terms))
)"""

STATS_OF_ALL = """
totals AS (
    SELECT sum(doc_count)::float8 AS n,
           greatest(sum(total_length)::float8 / greatest(sum(doc_count), 1), 1.0) AS avgdl
    FROM ltst_user_stats
),
idf AS (
    SELECT s.term, ln(1.0 + (tt.n - s.df + 0.5) / (s.df + 0.5)) AS idf
    FROM (SELECT term, sum(doc_count)::float8 AS df FROM ltst_term_stats JOIN terms USING (term) GROUP BY term) AS s
    CROSS JOIN totals AS tt
)"""

# The query's lexemes and, from the term statistics, their idf; "tsq" ORs the lexemes the user has
# ever used (a lexeme absent from the statistics matches nothing in scope).
_HEAD = """
WITH terms AS (
    SELECT DISTINCT t.lexeme AS term FROM unnest(to_tsvector('english', %(query)s)) AS t
),
{stats},
tsq AS (
    SELECT string_agg(quote_literal(term), ' | ')::tsquery AS q FROM idf
),"""

# A large scope: BM25 matches come from the GIN index on search_tsv, the nearest rows from HNSW.
_MATCH_BY_INDEX = """
matches AS MATERIALIZED (
    SELECT m.message_id, m.search_tsv FROM conversation_messages AS m
    WHERE {scope}{filters} AND m.search_tsv @@ (SELECT q FROM tsq)
),
semantic AS (
    SELECT m.message_id FROM conversation_messages AS m
    WHERE {scope}{filters} AND m.embedding IS NOT NULL
    ORDER BY {order}
    LIMIT %(candidates)s
),"""

# A small scope (a few thousand rows, known from session_summary): one pass over the scope's rows
# (btree on user_id / session_id) computes each row's distance and keeps the tsvector of the rows
# that match. Exact, and no posting list of a common word is read across every user's messages.
_MATCH_BY_SCAN = """
scoped AS MATERIALIZED (
    SELECT m.message_id,
           CASE WHEN m.search_tsv @@ (SELECT q FROM tsq) THEN m.search_tsv END AS search_tsv,
           m.embedding <=> %(embedding)s AS distance
    FROM conversation_messages AS m
    WHERE {scope}{filters}
),
matches AS (
    SELECT message_id, search_tsv FROM scoped WHERE search_tsv IS NOT NULL
),
semantic AS (
    SELECT message_id FROM scoped WHERE distance IS NOT NULL
    ORDER BY distance, message_id
    LIMIT %(candidates)s
),"""

# A match's score reads only the query's lexemes of its tsvector: setweight marks them with weight B
# (ltst_search_tsv writes A and D only) on all their positions, ts_filter keeps them, so unnest returns
# the 2-3 lexemes that count with every position (tf) instead of all of them (~13 for a chat turn;
# search_tsv always has positions). The same scores, ~1.4x faster when every message matches.
_TAIL = """
bm25 AS MATERIALIZED (
    SELECT x.message_id,
           sum(i.idf * (f.tf * (%(k1)s + 1.0))
               / (f.tf + %(k1)s * (1.0 - %(b)s + %(b)s * length(x.search_tsv) / tt.avgdl))) AS score
    FROM matches AS x
    CROSS JOIN LATERAL unnest(ts_filter(setweight(x.search_tsv, 'B', (SELECT array_agg(term) FROM idf)), '{{b}}'))
        AS u(lexeme, positions, weights)
    JOIN idf AS i ON i.term = u.lexeme
    CROSS JOIN totals AS tt
    CROSS JOIN LATERAL (SELECT coalesce(array_length(u.positions, 1), 1)::float8 AS tf) AS f
    GROUP BY x.message_id
),
lexical AS (
    SELECT message_id FROM bm25 ORDER BY score DESC, message_id LIMIT %(candidates)s
),
seed AS (
    SELECT message_id FROM lexical UNION SELECT message_id FROM semantic
),
pool AS ({pool}
)
SELECT {columns}, coalesce(b.score, 0.0) AS bm25,
       coalesce(1.0 - (m.embedding <=> %(embedding)s), 0.0) AS cosine{extra}
FROM pool AS p
JOIN conversation_messages AS m ON m.message_id = p.message_id
LEFT JOIN bm25 AS b ON b.message_id = p.message_id
WHERE {scope}{filters}
"""


_POOL_SEED = """
    SELECT message_id FROM seed"""

# The seed plus the turns just before and after each seed row (same scope and filters), so that the
# turn answering a question gets scored even when only the question's turn matched. (The pool's rows
# pass the scope and filters already; the final WHERE repeats them so that a distributed database sees
# the user: on Citus, a user's recall is one shard's query, and the neighbours join pairs user_id.)
_POOL_WITH_NEIGHBOURS = """
    SELECT message_id FROM seed
    UNION
    SELECT m.message_id FROM seed AS s
    JOIN conversation_messages AS p ON p.message_id = s.message_id
    JOIN conversation_messages AS m
      ON m.session_id = p.session_id AND m.user_id = p.user_id
     AND m.message_index IN (p.message_index - 1, p.message_index + 1)
    WHERE {scope}{filters}"""


def candidates_sql(
    *,
    scope: str,
    filters: str,
    all_users: bool,
    with_embedding: bool,
    with_neighbors: bool,
    scan: bool = False,
    order: str = "m.embedding <=> %(embedding)s",
) -> str:
    """The candidate statement for one scope fragment and a concatenation of filter fragments.

    ``scan`` reads the scope's rows directly (right for a small scope) instead of going through the
    full-text and vector indexes (right for a large one), whose HNSW walk orders by ``order``
    (``hnsw.order_by`` for ``m.embedding`` and the ``embedding`` parameter).
    """
    pool = (_POOL_WITH_NEIGHBOURS if with_neighbors else _POOL_SEED).format(scope=scope, filters=filters)
    match = (_MATCH_BY_SCAN if scan else _MATCH_BY_INDEX).format(scope=scope, filters=filters, order=order)
    head = _HEAD.format(stats=STATS_OF_ALL if all_users else STATS_OF_USER)
    tail = _TAIL.format(
        pool=pool,
        columns=M_MESSAGE_COLUMNS,
        extra=", m.embedding" if with_embedding else "",
        scope=scope,
        filters=filters,
    )
    return head + match + tail


# Messages at given (session_id, message_index) positions, e.g. the neighbours of a hit.
SELECT_MESSAGES_AT = f"""
SELECT {M_MESSAGE_COLUMNS}
FROM unnest(%(session_ids)s::text[], %(indexes)s::int[]) AS n(session_id, message_index)
JOIN conversation_messages AS m ON m.session_id = n.session_id AND m.message_index = n.message_index {owner("m.")}
"""

SELECT_RELATED_SESSION_IDS = f"""
SELECT CASE WHEN source_session_id = %(session_id)s THEN target_session_id ELSE source_session_id END
       AS session_id
FROM session_relationships
WHERE (source_session_id = %(session_id)s OR target_session_id = %(session_id)s) {owner()}
"""


# --------------------------------------------------------------------------- rehydration / compaction

SELECT_SESSION_SUMMARY_TEXT = f"""
SELECT session_id, summary FROM session_summary WHERE session_id = ANY(%(session_ids)s::text[]) {owner()}
"""

WRITE_SESSION_SUMMARY = f"""
WITH s AS (
    UPDATE conversation_sessions SET context_summary = %(summary)s
    WHERE session_id = %(session_id)s {owner()}
    RETURNING session_id
)
UPDATE session_summary AS ss SET summary = %(summary)s, updated_at = now()
FROM s WHERE ss.session_id = s.session_id {owner("ss.")}
RETURNING ss.session_id
"""

# The latest turns of a session on the branch the conversation kept: messages of abandoned branches
# (an imported ChatGPT edit or regeneration: metadata off_branch; ChatGPT imports made before that
# mark carry only chatgpt.on_current_branch = false) stay searchable but are not turns.
SELECT_RECENT_TURNS = f"""
SELECT * FROM (
    SELECT {MESSAGE_COLUMNS} FROM conversation_messages
    WHERE session_id = %(session_id)s {owner()}
      AND NOT metadata @> '{{"off_branch": true}}'::jsonb
      AND NOT metadata @> '{{"chatgpt": {{"on_current_branch": false}}}}'::jsonb
    ORDER BY message_index DESC
    LIMIT %(limit)s
) AS recent ORDER BY message_index
"""
