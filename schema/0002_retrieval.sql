-- ltst-memory schema, version 0002: what hybrid retrieval (ltst_memory.recall) needs.
--
--   * conversation_messages.search_tsv: the words a question can name, for Okapi BM25 — the speaker's
--     name (metadata->>'speaker', weight A) and the content, both with the 'english' configuration so
--     that a name in a question ("Caroline" -> 'carolin') matches the speaker and the content alike.
--   * ltst_term_stats / ltst_user_stats: BM25 term statistics per user (document frequency of every
--     term, number of messages and their total length), kept exact by statement-level triggers on
--     insert, update and delete. A query reads a handful of rows instead of counting documents.
--
-- Idempotent (IF NOT EXISTS / OR REPLACE / DROP IF EXISTS, and the statistics are recomputed from the
-- messages at the end), so it can be applied twice or by hand with `psql -v ON_ERROR_STOP=1 -f`.

CREATE OR REPLACE FUNCTION ltst_search_tsv(speaker text, content text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT setweight(to_tsvector('english'::regconfig, coalesce(speaker, '')), 'A')
                 || to_tsvector('english'::regconfig, content) $$;

ALTER TABLE conversation_messages
    ADD COLUMN IF NOT EXISTS search_tsv tsvector
    GENERATED ALWAYS AS (ltst_search_tsv(metadata ->> 'speaker', content)) STORED;

CREATE INDEX IF NOT EXISTS idx_messages_search_tsv
    ON conversation_messages USING gin (search_tsv);
CREATE INDEX IF NOT EXISTS idx_messages_session_time
    ON conversation_messages (session_id, "timestamp");

-- Term statistics ------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ltst_term_stats (
    user_id    text NOT NULL,
    term       text NOT NULL,
    doc_count  bigint NOT NULL,
    PRIMARY KEY (user_id, term)
);
CREATE INDEX IF NOT EXISTS idx_term_stats_term ON ltst_term_stats (term);

CREATE TABLE IF NOT EXISTS ltst_user_stats (
    user_id       text PRIMARY KEY,
    doc_count     bigint NOT NULL,
    total_length  bigint NOT NULL
);

-- Add (sign = 1) or remove (sign = -1) the terms of a set of messages. Rows are touched in key order
-- so concurrent writers never deadlock; a term whose count falls to zero is deleted.
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
    SELECT r.user_id, t.lexeme, sign * count(*)
      FROM unnest(rows_user, rows_tsv) AS r(user_id, tsv)
     CROSS JOIN LATERAL unnest(r.tsv) AS t(lexeme, positions, weights)
     GROUP BY r.user_id, t.lexeme
     ORDER BY r.user_id, t.lexeme
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;

    IF sign < 0 THEN
        DELETE FROM ltst_term_stats AS s
         USING (SELECT DISTINCT r.user_id, t.lexeme
                  FROM unnest(rows_user, rows_tsv) AS r(user_id, tsv)
                 CROSS JOIN LATERAL unnest(r.tsv) AS t(lexeme, positions, weights)) AS d
         WHERE s.user_id = d.user_id AND s.term = d.lexeme AND s.doc_count <= 0;
        DELETE FROM ltst_user_stats AS s
         WHERE s.user_id = ANY(rows_user) AND s.doc_count <= 0;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ltst_apply_term_stats(
        (SELECT coalesce(array_agg(user_id), '{}') FROM new_messages),
        (SELECT coalesce(array_agg(search_tsv), '{}') FROM new_messages), 1);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ltst_apply_term_stats(
        (SELECT coalesce(array_agg(user_id), '{}') FROM old_messages),
        (SELECT coalesce(array_agg(search_tsv), '{}') FROM old_messages), -1);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_users text[];
    old_tsvs tsvector[];
    new_users text[];
    new_tsvs tsvector[];
BEGIN
    -- Only rows whose words or owner changed (an update of the embedding alone costs nothing here).
    SELECT coalesce(array_agg(o.user_id), '{}'), coalesce(array_agg(o.search_tsv), '{}'),
           coalesce(array_agg(n.user_id), '{}'), coalesce(array_agg(n.search_tsv), '{}')
      INTO old_users, old_tsvs, new_users, new_tsvs
      FROM old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id
     WHERE o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id;
    IF cardinality(old_users) > 0 THEN
        PERFORM ltst_apply_term_stats(old_users, old_tsvs, -1);
        PERFORM ltst_apply_term_stats(new_users, new_tsvs, 1);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS trg_messages_term_stats_insert ON conversation_messages;
CREATE TRIGGER trg_messages_term_stats_insert
    AFTER INSERT ON conversation_messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_term_stats_after_insert();

DROP TRIGGER IF EXISTS trg_messages_term_stats_delete ON conversation_messages;
CREATE TRIGGER trg_messages_term_stats_delete
    AFTER DELETE ON conversation_messages
    REFERENCING OLD TABLE AS old_messages
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_term_stats_after_delete();

DROP TRIGGER IF EXISTS trg_messages_term_stats_update ON conversation_messages;
CREATE TRIGGER trg_messages_term_stats_update
    AFTER UPDATE ON conversation_messages
    REFERENCING OLD TABLE AS old_messages NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_term_stats_after_update();

-- Recompute the statistics from the stored messages (a no-op on a new database; exact on an old one).
-- One DO block: atomic, and the lock holds for its duration even under `psql -f` (autocommit).
DO $$
BEGIN
    LOCK TABLE conversation_messages IN SHARE MODE;
    DELETE FROM ltst_term_stats;
    DELETE FROM ltst_user_stats;
    PERFORM ltst_apply_term_stats(
        (SELECT coalesce(array_agg(user_id), '{}') FROM conversation_messages),
        (SELECT coalesce(array_agg(search_tsv), '{}') FROM conversation_messages), 1);
END;
$$;
