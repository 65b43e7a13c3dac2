-- ltst-memory schema, version 0008: cheaper BM25 term statistics for batch writes (bulk import, issue 5).
--
-- 0002 keeps ltst_term_stats / ltst_user_stats exact with statement-level triggers that pack the
-- transition table into two arrays (array_agg of every user_id and every search_tsv) and unnest them
-- again, twice, expanding each tsvector with its positions and weights. For a batch of 10,000 messages
-- that was ~45 % of the time of the whole COPY. The same statistics are now computed straight from the
-- transition tables, one pass each, with tsvector_to_array (lexemes only). Same results, same lock
-- order (user_id, term), so writers still cannot deadlock on the statistics rows.
--
-- Idempotent (CREATE OR REPLACE); `ltst migrate` or `psql -v ON_ERROR_STOP=1 -f 0008_bulk.sql`.

-- Add (sign = 1) or remove (sign = -1) the terms of a set of messages, given as two arrays (kept for
-- the update trigger and for callers of 0002's function; same signature and behaviour).
CREATE OR REPLACE FUNCTION ltst_apply_term_stats(rows_user text[], rows_tsv tsvector[], sign integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ltst_user_stats AS s (user_id, doc_count, total_length)
    SELECT r.user_id, sign * count(*), sign * coalesce(sum(length(r.tsv)), 0)
      FROM unnest(rows_user, rows_tsv) AS r(user_id, tsv)
     GROUP BY r.user_id
     ORDER BY r.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        doc_count = s.doc_count + EXCLUDED.doc_count,
        total_length = s.total_length + EXCLUDED.total_length;

    INSERT INTO ltst_term_stats AS s (user_id, term, doc_count)
    SELECT r.user_id, t.term, sign * count(*)
      FROM unnest(rows_user, rows_tsv) AS r(user_id, tsv)
     CROSS JOIN LATERAL unnest(tsvector_to_array(r.tsv)) AS t(term)
     GROUP BY r.user_id, t.term
     ORDER BY r.user_id, t.term
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;

    IF sign < 0 THEN
        DELETE FROM ltst_term_stats AS s
         USING (SELECT DISTINCT r.user_id, t.term
                  FROM unnest(rows_user, rows_tsv) AS r(user_id, tsv)
                 CROSS JOIN LATERAL unnest(tsvector_to_array(r.tsv)) AS t(term)) AS d
         WHERE s.user_id = d.user_id AND s.term = d.term AND s.doc_count <= 0;
        DELETE FROM ltst_user_stats AS s
         WHERE s.user_id = ANY(rows_user) AND s.doc_count <= 0;
    END IF;
END;
$$;

-- Inserts: read the transition table directly (no arrays).
CREATE OR REPLACE FUNCTION ltst_term_stats_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ltst_user_stats AS s (user_id, doc_count, total_length)
    SELECT n.user_id, count(*), coalesce(sum(length(n.search_tsv)), 0)
      FROM new_messages AS n
     GROUP BY n.user_id
     ORDER BY n.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        doc_count = s.doc_count + EXCLUDED.doc_count,
        total_length = s.total_length + EXCLUDED.total_length;

    INSERT INTO ltst_term_stats AS s (user_id, term, doc_count)
    SELECT n.user_id, t.term, count(*)
      FROM new_messages AS n
     CROSS JOIN LATERAL unnest(tsvector_to_array(n.search_tsv)) AS t(term)
     GROUP BY n.user_id, t.term
     ORDER BY n.user_id, t.term
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;
    RETURN NULL;
END;
$$;

-- Deletes: the same, subtracting; terms and users whose count falls to zero are removed.
CREATE OR REPLACE FUNCTION ltst_term_stats_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ltst_user_stats AS s (user_id, doc_count, total_length)
    SELECT o.user_id, -count(*), -coalesce(sum(length(o.search_tsv)), 0)
      FROM old_messages AS o
     GROUP BY o.user_id
     ORDER BY o.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        doc_count = s.doc_count + EXCLUDED.doc_count,
        total_length = s.total_length + EXCLUDED.total_length;

    INSERT INTO ltst_term_stats AS s (user_id, term, doc_count)
    SELECT o.user_id, t.term, -count(*)
      FROM old_messages AS o
     CROSS JOIN LATERAL unnest(tsvector_to_array(o.search_tsv)) AS t(term)
     GROUP BY o.user_id, t.term
     ORDER BY o.user_id, t.term
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;

    DELETE FROM ltst_term_stats AS s
     USING (SELECT DISTINCT o.user_id, t.term
              FROM old_messages AS o
             CROSS JOIN LATERAL unnest(tsvector_to_array(o.search_tsv)) AS t(term)) AS d
     WHERE s.user_id = d.user_id AND s.term = d.term AND s.doc_count <= 0;
    DELETE FROM ltst_user_stats AS s
     USING (SELECT DISTINCT o.user_id FROM old_messages AS o) AS d
     WHERE s.user_id = d.user_id AND s.doc_count <= 0;
    RETURN NULL;
END;
$$;
