"""SQL of hybrid retrieval (:mod:`ltst_memory.recall`) and rehydration. No I/O here.

The candidate statements are assembled from constant fragments chosen by code (scope, filters);
values are always bound parameters. Two statements compute, inside PostgreSQL:

* the lexical leg (:func:`lexical_sql`, no vector: it runs while the question is embedded): Okapi
  BM25 over ``search_tsv`` with the per-user term statistics of migration 0002
  (``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, ``tf`` = occurrences of the lexeme, document length
  = number of distinct lexemes), keeping the best ``candidates``;
* the vector leg (:func:`candidates_sql`): the ``candidates`` nearest embeddings (exact for a small
  scope; else the vector index, iterative scan so a filter never starves the result), the lexical
  leg's rows, the turns adjacent to those (optional: ``with_neighbors``), and for the union of all
  every candidate's BM25 score *and* cosine similarity, so fusion in Python sees both signals for
  every row.
"""

from __future__ import annotations

from ._queries import (
    M_MESSAGE_COLUMNS,
    M_MESSAGE_ROW_COLUMNS,
    MESSAGE_ROW_COLUMNS,
    nearest_sql,
    owner,
)

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

# Term statistics of one user (the usual case) or summed over every user (an unscoped search): the counted
# ones (ltst_user_stats, ltst_term_stats) plus the messages still pending (ltst_term_pending: stored by
# store_message, not counted yet; schema/0018_append_one.sql). A fold moves messages from one to the other
# in one transaction, so in one snapshot the sums are exact (and the same floats either way).
_PENDING_DOCS = """
pending_docs AS MATERIALIZED (
    SELECT pm.search_tsv FROM ltst_term_pending AS p
    JOIN conversation_messages AS pm ON pm.message_id = p.message_id AND pm.user_id = p.user_id{where}
),"""

STATS_OF_USER = (
    _PENDING_DOCS.format(where="\n    WHERE p.user_id = %(stats_user)s")
    + """
totals AS (
    SELECT t.n::float8 AS n, greatest(t.len::float8 / greatest(t.n, 1), 1.0) AS avgdl
    FROM (
        SELECT coalesce(u.doc_count, 0) + d.n AS n, coalesce(u.total_length, 0) + d.len AS len
        FROM (SELECT count(*) AS n, coalesce(sum(length(search_tsv)), 0) AS len FROM pending_docs) AS d
        LEFT JOIN ltst_user_stats AS u ON u.user_id = %(stats_user)s
    ) AS t
    WHERE t.n > 0
),
idf AS (
    SELECT s.term, ln(1.0 + (tt.n - s.df + 0.5) / (s.df + 0.5)) AS idf
    FROM (
        SELECT term, sum(df)::float8 AS df FROM (
            SELECT s.term, s.doc_count AS df FROM ltst_term_stats AS s
            WHERE s.user_id = %(stats_user)s AND s.term = ANY(ARRAY(SELECT term FROM terms))
            UNION ALL
            SELECT t.term, 1 FROM pending_docs AS pd
            CROSS JOIN LATERAL unnest(tsvector_to_array(pd.search_tsv)) AS t(term)
            WHERE t.term = ANY(ARRAY(SELECT term FROM terms))
        ) AS d GROUP BY term
    ) AS s CROSS JOIN totals AS tt
)"""
)

STATS_OF_ALL = (
    _PENDING_DOCS.format(where="")
    + """
totals AS (
    SELECT t.n::float8 AS n, greatest(t.len::float8 / greatest(t.n, 1), 1.0) AS avgdl
    FROM (
        SELECT coalesce((SELECT sum(doc_count) FROM ltst_user_stats), 0) + d.n AS n,
               coalesce((SELECT sum(total_length) FROM ltst_user_stats), 0) + d.len AS len
        FROM (SELECT count(*) AS n, coalesce(sum(length(search_tsv)), 0) AS len FROM pending_docs) AS d
    ) AS t
),
idf AS (
    SELECT s.term, ln(1.0 + (tt.n - s.df + 0.5) / (s.df + 0.5)) AS idf
    FROM (
        SELECT term, sum(df)::float8 AS df FROM (
            SELECT term, doc_count AS df FROM ltst_term_stats JOIN terms USING (term)
            UNION ALL
            SELECT t.term, 1 FROM pending_docs AS pd
            CROSS JOIN LATERAL unnest(tsvector_to_array(pd.search_tsv)) AS t(term)
            JOIN terms USING (term)
        ) AS d GROUP BY term
    ) AS s
    CROSS JOIN totals AS tt
)"""
)

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

# Two statements: the lexical leg needs no vector, so it runs while the question is embedded
# (``Embed(ahead=True)``, ltst_memory/_kernel.py); the vector leg then takes its ids.
#
# The lexical leg's matches. A large scope: from the GIN index on search_tsv. A small scope (a few
# thousand rows, known from the trigger-kept statistics): the scope's rows read through its btree
# (user_id / session_id) and matched one by one (OFFSET 0 keeps the match out of the scan, hence off
# the GIN index), so no posting list of a common word is read across every user's messages.
_LEXICAL_BY_INDEX = """
matches AS MATERIALIZED (
    SELECT m.message_id, m.search_tsv FROM conversation_messages AS m
    WHERE {scope}{filters} AND m.search_tsv @@ (SELECT q FROM tsq)
),"""

_LEXICAL_BY_SCAN = """
matches AS MATERIALIZED (
    SELECT s.message_id, s.search_tsv FROM (
        SELECT m.message_id, m.search_tsv FROM conversation_messages AS m
        WHERE {scope}{filters}
        OFFSET 0
    ) AS s
    WHERE s.search_tsv @@ (SELECT q FROM tsq)
),"""

# The best matches: by score to 9 decimals, then by id. Two messages of equal score (the same counts of
# the same words) get sums that may differ in their last bit with the order in which a plan adds their
# terms: rounded, they tie, and the older message comes first whatever the plan (or the term index).
#
# A match's score reads only the query's lexemes of its tsvector: setweight marks them with weight B
# (ltst_search_tsv writes A and D only) on all their positions, ts_filter keeps them, so unnest returns
# the 2-3 lexemes that count with every position (tf) instead of all of them (~13 for a chat turn;
# search_tsv always has positions). The same scores, ~1.4x faster when every message matches.
_BM25_OF = """sum(i.idf * ({tf} * (%(k1)s + 1.0))
               / ({tf} + %(k1)s * (1.0 - %(b)s + %(b)s * {dl} / tt.avgdl)))"""
_QUERY_LEXEMES_OF = """unnest(ts_filter(setweight({tsv}, 'B', (SELECT array_agg(term) FROM idf)), '{{b}}'))
        AS u(lexeme, positions, weights)"""

_LEXICAL_SCORES = f"""
bm25 AS MATERIALIZED (
    SELECT x.message_id, {_BM25_OF.format(tf="f.tf", dl="length(x.search_tsv)")} AS score
    FROM matches AS x
    CROSS JOIN LATERAL {_QUERY_LEXEMES_OF.format(tsv="x.search_tsv")}
    JOIN idf AS i ON i.term = u.lexeme
    CROSS JOIN totals AS tt
    CROSS JOIN LATERAL (SELECT coalesce(array_length(u.positions, 1), 1)::float8 AS tf) AS f
    GROUP BY x.message_id
)"""
_LEXICAL_BEST = "SELECT message_id, score FROM bm25 ORDER BY round(score * 1e9) DESC, message_id LIMIT %(candidates)s"

# The vector leg's nearest rows. A large scope: through the vector index (its ``hnsw.order_by``
# order, iterative scan so a filter never starves it). A small scope: every row's distance computed
# in one pass over the scope's rows (exact; the subquery's OFFSET 0 keeps it off the vector index, as a
# materialized CTE would, without storing the scope's distances first: ~1 ms less for 10,000 rows).
_SEMANTIC_BY_INDEX = """
semantic AS (
    SELECT m.message_id FROM conversation_messages AS m
    WHERE {scope}{filters} AND m.embedding IS NOT NULL
    ORDER BY {order}
    LIMIT %(candidates)s
),"""

# An index up to a watermark (the main index, or a large user's own: ltst_memory/hnsw.py): its nearest
# rows and, exactly, the messages stored since (the statement shared with search_messages,
# _queries.nearest_sql).
_SEMANTIC_BY_WATERMARK = """{nearest},
semantic AS (
    SELECT message_id FROM nearest
),"""

_SEMANTIC_BY_SCAN = """
semantic AS (
    SELECT message_id FROM (
        SELECT m.message_id, m.embedding <=> %(embedding)s AS distance
        FROM conversation_messages AS m
        WHERE {scope}{filters}
        OFFSET 0
    ) AS scoped WHERE distance IS NOT NULL
    ORDER BY distance, message_id
    LIMIT %(candidates)s
),"""

# The candidate pool is the lexical leg's rows and the nearest rows, with the turns just before and after
# each (``with_neighbors``), each with its BM25 score and its cosine similarity. Recall reads it in its two
# statements: the first (:func:`lexical_pool_sql`) takes the lexical leg's best matches and their
# neighbours, whole rows with BM25, while the question is still being embedded; the second
# (:func:`vector_sql`) the nearest rows and their neighbours that the first did not return, with BM25 and
# cosine, and the cosine of the first one's rows (``known_ids``). The union is the pool of one statement.
#
# A row's BM25 is computed from its own tsvector (the lexical leg's formula: the same scores; a row with
# none of the question's lexemes gets no score, hence 0). The scores are a CTE over the rows (each read
# once, by primary key, with the scope and filters; no full-text condition, which would invite a plan
# through the GIN index over every match): not a LATERAL subquery per row, which refers to the statement's
# CTEs from a correlated subquery (Citus cannot plan that across shards).
_POOL_SCORES = f"""
pool_rows AS MATERIALIZED (
    SELECT {{columns}}, m.search_tsv{{embedding}} FROM {{rows}} AS p
    JOIN conversation_messages AS m ON m.message_id = p.message_id
    WHERE {{scope}}{{filters}}
),
pool_bm25 AS MATERIALIZED (
    SELECT x.message_id, {_BM25_OF.format(tf="f.tf", dl="length(x.search_tsv)")} AS score
    FROM pool_rows AS x
    CROSS JOIN LATERAL {_QUERY_LEXEMES_OF.format(tsv="x.search_tsv").replace("{", "{{").replace("}", "}}")}
    JOIN idf AS i ON i.term = u.lexeme
    CROSS JOIN totals AS tt
    CROSS JOIN LATERAL (SELECT coalesce(array_length(u.positions, 1), 1)::float8 AS tf) AS f
    GROUP BY x.message_id
)"""

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

# The lexical leg's best matches (``lexical``) and, with_neighbors, their neighbours: whole candidate rows,
# each with its BM25 score.
_LEXICAL_POOL_TAIL = """,
lexical AS MATERIALIZED (
    {best}
),
seed AS (
    SELECT message_id FROM lexical
),
pool AS ({pool}
),{scores}
SELECT {row_columns}, coalesce(b.score, 0.0) AS bm25
FROM pool_rows AS m
LEFT JOIN pool_bm25 AS b ON b.message_id = m.message_id
"""

# The nearest rows and their neighbours that the lexical statement did not return (``known_ids``): whole
# candidate rows with BM25 and cosine; then the known rows (still in scope): their id and cosine only, the
# other columns NULL (bm25 NULL marks them).
_VECTOR_TAIL = """
known AS (
    SELECT message_id FROM unnest(%(known_ids)s::bigint[]) AS k(message_id)
),
seed AS (
    SELECT message_id FROM semantic
),
pool AS ({pool}
),
fresh AS (
    SELECT message_id FROM pool EXCEPT SELECT message_id FROM known
),{scores},
known_rows AS MATERIALIZED (
    SELECT m.message_id, m.embedding FROM known AS k
    JOIN conversation_messages AS m ON m.message_id = k.message_id
    WHERE {scope}{filters}
)
SELECT {row_columns}, coalesce(b.score, 0.0) AS bm25,
       coalesce(1.0 - (m.embedding <=> %(embedding)s), 0.0) AS cosine{extra}
FROM pool_rows AS m
LEFT JOIN pool_bm25 AS b ON b.message_id = m.message_id
UNION ALL
SELECT k.message_id, {nulls}, NULL, coalesce(1.0 - (k.embedding <=> %(embedding)s), 0.0){known_extra}
FROM known_rows AS k
"""


# A user with a term index of their own (ltst_memory/lexical_index.py, schema/0016_lexical_index.sql):
# their messages up to the watermark W the store read (``lexical_watermark``) are scored from the
# index's rows of the question's terms (tf and length stored; the same formula, hence the same scores),
# those stored since (the gap, ``message_id > W``) are matched and scored as above, read through a btree
# (the plan is made for the parameters: ``plan_cache_mode = force_custom_plan``). A watermark read
# before a rebuild is still right (the index covers up to its own, larger W; message ids only grow); one
# read before the index was dropped is caught inside the statement: without the index's row, the user's
# messages up to W are matched and scored as above (the one-time filters run one branch or the other).
# ``postings_filters``: the filters the index's rows can evaluate (their user; excluded message ids).
_LEXICAL_BY_TERM_INDEX = """
term_index AS (
    SELECT EXISTS (SELECT FROM ltst_lexical_indexes WHERE user_id = %(user_id)s) AS present
),
indexed AS (
    SELECT p.message_id, {bm25} AS score
    FROM ltst_lexical_postings AS p
    JOIN idf AS i ON i.term = p.term
    CROSS JOIN totals AS tt
    WHERE p.user_id = %(user_id)s AND p.message_id <= %(lexical_watermark)s::bigint{postings_filters}
      AND (SELECT present FROM term_index)
    GROUP BY p.message_id
),
matches AS MATERIALIZED (
    SELECT s.message_id, s.search_tsv FROM (
        SELECT m.message_id, m.search_tsv FROM conversation_messages AS m
        WHERE {scope}{filters} AND m.message_id > %(lexical_watermark)s::bigint
        OFFSET 0
    ) AS s
    WHERE s.search_tsv @@ (SELECT q FROM tsq)
    UNION ALL
    SELECT s.message_id, s.search_tsv FROM (
        SELECT m.message_id, m.search_tsv FROM conversation_messages AS m
        WHERE {scope}{filters} AND m.message_id <= %(lexical_watermark)s::bigint
          AND NOT (SELECT present FROM term_index)
        OFFSET 0
    ) AS s
    WHERE s.search_tsv @@ (SELECT q FROM tsq)
),"""

_LEXICAL_TERM_INDEX_BEST = _LEXICAL_BEST.replace(
    "SELECT message_id, score FROM bm25 ORDER BY",
    "SELECT message_id, score FROM (\n"
    "    SELECT message_id, score FROM bm25 UNION ALL SELECT message_id, score FROM indexed\n"
    ") AS scored ORDER BY",
)

#: The filters the rows of a term index can evaluate (``p``: a row of ``ltst_lexical_postings``).
POSTINGS_FILTERS = {
    FILTER_EXCLUDE: " AND p.message_id <> ALL(%(exclude_ids)s::bigint[])",
    FILTER_USER: "",  # the index's rows are the scope user's (p.user_id = %(user_id)s)
}


def _lexical_scored(
    *, scope: str, filters: str, all_users: bool, scan: bool, term_index: tuple[str, ...] | None
) -> tuple[str, str]:
    """The lexical leg (:func:`lexical_sql`, the same arguments) as its CTEs up to the scores (``bm25``)
    and its final SELECT of the best rows."""
    head = _HEAD.format(stats=STATS_OF_ALL if all_users else STATS_OF_USER)
    if term_index is not None:
        bm25 = _BM25_OF.format(tf="p.tf", dl="p.dl")  # tf and length as the index stores them
        postings_filters = "".join(POSTINGS_FILTERS[f] for f in term_index)
        body = _LEXICAL_BY_TERM_INDEX.format(
            scope=scope, filters=filters, bm25=bm25, postings_filters=postings_filters
        )
        return head + body + _LEXICAL_SCORES, _LEXICAL_TERM_INDEX_BEST
    body = (_LEXICAL_BY_SCAN if scan else _LEXICAL_BY_INDEX).format(scope=scope, filters=filters)
    return head + body + _LEXICAL_SCORES, _LEXICAL_BEST


def lexical_sql(
    *, scope: str, filters: str, all_users: bool, scan: bool = False, term_index: tuple[str, ...] | None = None
) -> str:
    """The lexical leg: ``message_id`` and BM25 ``score`` of the best ``candidates`` matches of the
    question's words, best first (ties by id). Needs no vector: it runs while the question is embedded.

    ``scan`` reads the scope's rows directly (right for a small scope) instead of the full-text index.
    ``term_index``: the scope is one user (``user_id``) with a term index of their own, whose watermark
    is the ``lexical_watermark`` parameter, and these are the filter fragments (``FILTER_*``, each a key
    of :data:`POSTINGS_FILTERS`) in ``filters``.
    """
    scored, best = _lexical_scored(scope=scope, filters=filters, all_users=all_users, scan=scan, term_index=term_index)
    return f"{scored}\n{best}\n"


def lexical_pool_sql(
    *,
    scope: str,
    filters: str,
    all_users: bool,
    with_neighbors: bool,
    scan: bool = False,
    term_index: tuple[str, ...] | None = None,
) -> str:
    """Recall's first statement: the lexical leg's best matches (:func:`lexical_sql`, the same arguments)
    and, ``with_neighbors``, the turns just before and after each, as candidate rows
    (:data:`~ltst_memory._queries.MESSAGE_ROW_COLUMNS`, then ``bm25``), in no order. Needs no vector: it
    runs while the question is embedded."""
    scored, best = _lexical_scored(scope=scope, filters=filters, all_users=all_users, scan=scan, term_index=term_index)
    pool = (_POOL_WITH_NEIGHBOURS if with_neighbors else _POOL_SEED).format(scope=scope, filters=filters)
    scores = _POOL_SCORES.format(
        columns=M_MESSAGE_ROW_COLUMNS, embedding="", rows="pool", scope=scope, filters=filters
    )
    return scored + _LEXICAL_POOL_TAIL.format(best=best, pool=pool, scores=scores, row_columns=_POOL_ROW_COLUMNS)


def vector_sql(
    *,
    scope: str,
    filters: str,
    all_users: bool,
    with_embedding: bool,
    with_neighbors: bool,
    scan: bool = False,
    order: str = "m.embedding <=> %(embedding)s",
    watermark: bool = False,
) -> str:
    """Recall's second statement, for one scope fragment and a concatenation of filter fragments: the
    ``candidates`` nearest rows and, ``with_neighbors``, their neighbours, but for the rows of parameter
    ``known_ids`` (those :func:`lexical_pool_sql` returned), as candidate rows
    (:data:`~ltst_memory._queries.MESSAGE_ROW_COLUMNS`, then ``bm25`` and ``cosine``); then, for each
    known row still in scope, its id and ``cosine`` (the other columns and ``bm25`` NULL). With
    ``with_embedding`` every row ends with its ``embedding``.

    ``scan`` computes every distance of the scope's rows (right for a small scope) instead of walking
    the vector index, ordered by ``order`` (``hnsw.order_by`` for ``m.embedding`` and the ``embedding``
    parameter). ``watermark``: the index covers the messages up to the ``watermark`` parameter (the
    main index, or the scope's user's own), and those stored since are read exactly.
    """
    pool = (_POOL_WITH_NEIGHBOURS if with_neighbors else _POOL_SEED).format(scope=scope, filters=filters)
    if scan:
        semantic = _SEMANTIC_BY_SCAN.format(scope=scope, filters=filters)
    elif watermark:
        nearest = nearest_sql(f"AND {scope}{filters}", order, query="embedding", limit="candidates")
        semantic = _SEMANTIC_BY_WATERMARK.format(nearest=nearest)
    else:
        semantic = _SEMANTIC_BY_INDEX.format(scope=scope, filters=filters, order=order)
    head = _HEAD.format(stats=STATS_OF_ALL if all_users else STATS_OF_USER)
    scores = _POOL_SCORES.format(
        columns=M_MESSAGE_ROW_COLUMNS, embedding=", m.embedding", rows="fresh", scope=scope, filters=filters
    )
    tail = _VECTOR_TAIL.format(
        pool=pool,
        scores=scores,
        row_columns=_POOL_ROW_COLUMNS,
        extra=", m.embedding" if with_embedding else "",
        known_extra=", k.embedding" if with_embedding else "",
        nulls=", ".join(["NULL"] * _POOL_ROW_COLUMNS.count(",")),  # every column but message_id
        scope=scope,
        filters=filters,
    )
    return head + semantic + tail


#: The message columns of ``pool_rows`` (which selected MESSAGE_ROW_COLUMNS: uuid and metadata as text).
_POOL_ROW_COLUMNS = M_MESSAGE_COLUMNS


# Messages at given (session_id, message_index) positions, e.g. the neighbours of a hit.
SELECT_MESSAGES_AT = f"""
SELECT {M_MESSAGE_ROW_COLUMNS}
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
    SELECT {MESSAGE_ROW_COLUMNS} FROM conversation_messages
    WHERE session_id = %(session_id)s {owner()}
      AND NOT metadata @> '{{"off_branch": true}}'::jsonb
      AND NOT metadata @> '{{"chatgpt": {{"on_current_branch": false}}}}'::jsonb
    ORDER BY message_index DESC
    LIMIT %(limit)s
) AS recent ORDER BY message_index
"""
