-- ltst-memory schema, version 0016: a term index of their own for the largest users (BM25 off the scan).
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0016_lexical_index.sql`.
--
-- recall's lexical leg scores every message of the user that holds one of the question's words: for a
-- user of 10,000 chat turns and a question of common words, ~9,500 tsvectors unnested one by one
-- (~45 ms). A user's term index (`ltst lexical-index`, ltst_memory/lexical_index.py) holds, for each of
-- their messages up to a watermark W, one row per lexeme with what BM25 needs of it (tf: occurrences;
-- dl: the message's distinct lexemes): the leg then reads the question's terms' rows through a btree and
-- sums (~5 ms), and scores the messages stored since W (the gap) as before. Same scores (the idf and the
-- average length still come from ltst_term_stats / ltst_user_stats, kept exact by triggers).
--
--   * ltst_lexical_indexes: the users with a term index, and their watermark;
--   * ltst_lexical_postings: the index (user, term, message, tf, dl);
--   * no trigger on insert (a new message is in the gap: the write path is unchanged); triggers on
--     delete (its rows go) and on an update of search_tsv (its rows are rewritten), run as the tables'
--     owner (a role under Row Level Security deletes and edits its messages as before), and serialised
--     with a build of the same user by a transaction advisory lock (shared here, exclusive in the build).
--   * both tables are owned (ltst_owned_tables: Row Level Security, emptied by delete_user), and granted
--     to the roles granted the messages.
-- Not built on a Citus cluster (like the users' own vector indexes): the tables stay local and empty
-- there, and the triggers are not created on a database converted for Citus.

CREATE TABLE IF NOT EXISTS ltst_lexical_indexes (
    user_id    text PRIMARY KEY,
    watermark  bigint NOT NULL,
    built_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ltst_lexical_postings (
    user_id     text NOT NULL,
    term        text NOT NULL,
    message_id  bigint NOT NULL,
    tf          integer NOT NULL,
    dl          integer NOT NULL
);
-- the leg's read: the question's terms of one user, covering (an index-only scan)
CREATE INDEX IF NOT EXISTS idx_lexical_postings_term
    ON ltst_lexical_postings (user_id, term) INCLUDE (message_id, tf, dl);
-- deletes and edits of a message
CREATE INDEX IF NOT EXISTS idx_lexical_postings_message ON ltst_lexical_postings (message_id);

SELECT ltst_own_table('ltst_lexical_postings', 'user_id', '{}', 52);
SELECT ltst_own_table('ltst_lexical_indexes', 'user_id', '{}', 53);
SELECT ltst_enable_rls_on_owned_tables();

-- Roles that may read (delete) the messages may read (delete) their term index: it holds nothing the
-- messages do not, under the same Row Level Security policy. (A role granted later gets both tables
-- granted with the others: docs/security.md.)
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee, a.privilege_type
               FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
              WHERE c.oid = 'conversation_messages'::regclass AND a.privilege_type IN ('SELECT', 'DELETE')
                AND a.grantee <> c.relowner
              ORDER BY a.grantee, a.privilege_type
    LOOP
        EXECUTE format('GRANT %s ON ltst_lexical_postings, ltst_lexical_indexes TO %s', r.privilege_type,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
END;
$$;

-- The watermark of p_user's term index, NULL without one (or when the caller may not read the index:
-- a role granted only the tables of earlier versions keeps the leg of before). Row Level Security
-- applies (the caller's rights).
CREATE OR REPLACE FUNCTION ltst_lexical_watermark(p_user text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT (has_table_privilege('ltst_lexical_indexes', 'SELECT')
            AND has_table_privilege('ltst_lexical_postings', 'SELECT')) THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT i.watermark FROM ltst_lexical_indexes AS i WHERE i.user_id = p_user);
END;
$$;

-- The advisory lock of a user's term index (first key: the library's; second: the user's).
CREATE OR REPLACE FUNCTION ltst_lexical_lock_key(p_user text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT hashtext(p_user) $$;

-- Deleted messages: their postings go (users in order, each under the shared lock of their index).
CREATE OR REPLACE FUNCTION ltst_lexical_postings_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    u record;
BEGIN
    FOR u IN SELECT o.user_id, array_agg(o.message_id) AS ids FROM old_messages AS o
              GROUP BY o.user_id ORDER BY o.user_id LOOP
        PERFORM pg_advisory_xact_lock_shared(16016, ltst_lexical_lock_key(u.user_id));
        DELETE FROM ltst_lexical_postings AS p WHERE p.message_id = ANY(u.ids) AND p.user_id = u.user_id;
        IF EXISTS (SELECT FROM ltst_lexical_indexes AS i WHERE i.user_id = u.user_id)
           AND NOT EXISTS (SELECT FROM conversation_messages AS m WHERE m.user_id = u.user_id) THEN
            DELETE FROM ltst_lexical_indexes AS i WHERE i.user_id = u.user_id;  -- nothing left to index
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Edited messages (their words changed): their postings are rewritten from the new words, when the
-- message is under its user's watermark (above it, the message is in the gap, read as it is).
CREATE OR REPLACE FUNCTION ltst_lexical_postings_after_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    u record;
BEGIN
    FOR u IN SELECT DISTINCT user_id FROM (
                 SELECT o.user_id FROM old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id
                  WHERE o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id
                 UNION
                 SELECT n.user_id FROM old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id
                  WHERE o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id
             ) AS changed ORDER BY user_id LOOP
        PERFORM pg_advisory_xact_lock_shared(16016, ltst_lexical_lock_key(u.user_id));
    END LOOP;
    DELETE FROM ltst_lexical_postings AS p
     USING old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id
     WHERE (o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id)
       AND p.message_id = o.message_id AND p.user_id = o.user_id;
    INSERT INTO ltst_lexical_postings (user_id, term, message_id, tf, dl)
    SELECT n.user_id, t.lexeme, n.message_id, coalesce(array_length(t.positions, 1), 1), length(n.search_tsv)
      FROM old_messages AS o
      JOIN new_messages AS n ON n.message_id = o.message_id
      JOIN ltst_lexical_indexes AS i ON i.user_id = n.user_id AND n.message_id <= i.watermark
     CROSS JOIN LATERAL unnest(n.search_tsv) AS t(lexeme, positions, weights)
     WHERE o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id;
    RETURN NULL;
END;
$$;

-- (as in 0009: a SECURITY DEFINER function resolves names in the schema of the library's tables only)
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['ltst_lexical_postings_after_delete()', 'ltst_lexical_postings_after_update()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f,
                       (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                         WHERE c.oid = 'conversation_sessions'::regclass));
    END LOOP;
END;
$$;

-- The triggers (not on a database converted for Citus, where no term index is built: transition tables
-- read by statements on other tables do not work on distributed tables).
DO $$
BEGIN
    IF EXISTS (SELECT FROM ltst_metadata WHERE key = 'citus_distribution_column') THEN
        DROP TRIGGER IF EXISTS trg_messages_lexical_delete ON conversation_messages;
        DROP TRIGGER IF EXISTS trg_messages_lexical_update ON conversation_messages;
        RETURN;
    END IF;
    DROP TRIGGER IF EXISTS trg_messages_lexical_delete ON conversation_messages;
    CREATE TRIGGER trg_messages_lexical_delete
        AFTER DELETE ON conversation_messages
        REFERENCING OLD TABLE AS old_messages
        FOR EACH STATEMENT EXECUTE FUNCTION ltst_lexical_postings_after_delete();
    DROP TRIGGER IF EXISTS trg_messages_lexical_update ON conversation_messages;
    CREATE TRIGGER trg_messages_lexical_update
        AFTER UPDATE ON conversation_messages
        REFERENCING OLD TABLE AS old_messages NEW TABLE AS new_messages
        FOR EACH STATEMENT EXECUTE FUNCTION ltst_lexical_postings_after_update();
END;
$$;
