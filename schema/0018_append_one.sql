-- ltst-memory schema, version 0018: the store's single append keeps the summary itself and counts its
-- words for BM25 later, in batches.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0018_append_one.sql`.
--
-- store_message's statement (ltst_memory/_queries.py, INSERT_MESSAGE) spent about half of its server time
-- in the two statement-level plpgsql triggers on insert (the session summary; the BM25 statistics: one
-- upsert into ltst_user_stats and about eight into ltst_term_stats per message). Now:
--
--   * that statement updates session_summary itself (a data-modifying CTE: no plpgsql, no transition
--     table) and marks itself: set_config('ltst.append_statement', statement_timestamp(), true). The two
--     insert triggers carry WHEN (the marker is not this statement's): they still fire for every other
--     INSERT (the store's batches, bulk import, anyone's plain SQL), and for a plain INSERT later in the
--     same transaction (another statement, another statement_timestamp()).
--   * the message's statistics (ltst_user_stats: one document and its length; ltst_term_stats: its
--     words) are not written then: the statement records the message in ltst_term_pending (one row:
--     user, message), and ltst_fold_term_pending() counts the pending messages in one batch (the store
--     calls it after every 64th append, by message id; any caller may). The pending rows are taken by
--     DELETE (the triggers of an edit or a delete take them too), so each message is counted exactly
--     once; rows another transaction holds are skipped (SKIP LOCKED). A long message (whose words might
--     not fit the btree key of ltst_term_stats) is counted by its append (ltst_count_message_now).
--   * readers add the user's pending messages to the counted statistics (ltst_memory/_recall_queries.py,
--     SCOPE_SIZE_OF_USER, LARGE_USERS), in the same snapshot: a fold deletes the pending rows and adds
--     their counts in one transaction, so the statistics a search sees are exact, and its scores the
--     same, folded or not.
--   * a deleted pending message loses its pending row and nothing is subtracted for it; an edited one is
--     counted first, with the words it had, and the edit then applies as to any message.
--   * ltst_term_pending is owned (ltst_owned_tables: Row Level Security, emptied by delete_user) and
--     granted what ltst_term_stats is granted. On a Citus cluster the store's single append takes the
--     locking path (the triggers keep everything current there): the table stays empty, distributed
--     like every per-user table (schema/citus/distribute.sql).
--   * 0001 and 0002 re-create the insert triggers (without WHEN), and 0002 recounts the statistics from
--     every message: to re-run either by hand, with no store appending, fold first (SELECT
--     ltst_fold_term_pending() until ltst_term_pending is empty), then run it, then run this file again.

CREATE TABLE IF NOT EXISTS ltst_term_pending (
    user_id     text NOT NULL,
    message_id  bigint NOT NULL,
    PRIMARY KEY (user_id, message_id)
);

SELECT ltst_own_table('ltst_term_pending', 'user_id', '{}', 54);
SELECT ltst_enable_rls_on_owned_tables();

-- Whoever may write the term statistics (the triggers run with the writer's rights) may write the pending
-- rows; whoever may read them may read these.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee, a.privilege_type
               FROM pg_class AS c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
              WHERE c.oid = 'ltst_term_stats'::regclass
                AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
                AND a.grantee <> c.relowner
              ORDER BY a.grantee, a.privilege_type
    LOOP
        EXECUTE format('GRANT %s ON ltst_term_pending TO %s', r.privilege_type,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
END;
$$;

-- The insert triggers: not for the store's single append, which does their work in its own statement.
DROP TRIGGER IF EXISTS trg_messages_after_insert ON conversation_messages;
CREATE TRIGGER trg_messages_after_insert
    AFTER INSERT ON conversation_messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT
    WHEN (current_setting('ltst.append_statement', true) IS DISTINCT FROM statement_timestamp()::text)
    EXECUTE FUNCTION ltst_messages_after_insert();

DROP TRIGGER IF EXISTS trg_messages_term_stats_insert ON conversation_messages;
CREATE TRIGGER trg_messages_term_stats_insert
    AFTER INSERT ON conversation_messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT
    WHEN (current_setting('ltst.append_statement', true) IS DISTINCT FROM statement_timestamp()::text)
    EXECUTE FUNCTION ltst_term_stats_after_insert();

-- Deletes (0008's function): a pending message's row goes, and nothing is subtracted for it (it was
-- never counted).
CREATE OR REPLACE FUNCTION ltst_term_stats_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was_pending bigint[];
BEGIN
    WITH gone AS (
        DELETE FROM ltst_term_pending AS p USING old_messages AS o
         WHERE p.user_id = o.user_id AND p.message_id = o.message_id
        RETURNING p.message_id
    )
    SELECT coalesce(array_agg(message_id), '{}') INTO was_pending FROM gone;

    INSERT INTO ltst_user_stats AS s (user_id, doc_count, total_length)
    SELECT o.user_id, -count(*), -coalesce(sum(length(o.search_tsv)), 0)
      FROM old_messages AS o
     WHERE o.message_id <> ALL(was_pending)
     GROUP BY o.user_id
     ORDER BY o.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        doc_count = s.doc_count + EXCLUDED.doc_count,
        total_length = s.total_length + EXCLUDED.total_length;

    INSERT INTO ltst_term_stats AS s (user_id, term, doc_count)
    SELECT o.user_id, t.term, -count(*)
      FROM old_messages AS o
     CROSS JOIN LATERAL unnest(tsvector_to_array(o.search_tsv)) AS t(term)
     WHERE o.message_id <> ALL(was_pending)
     GROUP BY o.user_id, t.term
     ORDER BY o.user_id, t.term
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;

    DELETE FROM ltst_term_stats AS s
     USING (SELECT DISTINCT o.user_id, t.term
              FROM old_messages AS o
             CROSS JOIN LATERAL unnest(tsvector_to_array(o.search_tsv)) AS t(term)
             WHERE o.message_id <> ALL(was_pending)) AS d
     WHERE s.user_id = d.user_id AND s.term = d.term AND s.doc_count <= 0;
    DELETE FROM ltst_user_stats AS s
     USING (SELECT DISTINCT o.user_id FROM old_messages AS o) AS d
     WHERE s.user_id = d.user_id AND s.doc_count <= 0;
    RETURN NULL;
END;
$$;

-- Updates (0002's function): a pending message whose words (or owner) change is counted first, with the
-- words it had (its pending row goes), and the update then applies to it as to any other message: so an
-- edit never leaves words for a fold to count, and a word over the btree key limit fails the edit itself.
CREATE OR REPLACE FUNCTION ltst_term_stats_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was_pending bigint[];
    old_users text[];
    old_tsvs tsvector[];
    new_users text[];
    new_tsvs tsvector[];
BEGIN
    WITH gone AS (
        DELETE FROM ltst_term_pending AS p
         USING old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id
         WHERE p.user_id = o.user_id AND p.message_id = o.message_id
           AND (o.search_tsv IS DISTINCT FROM n.search_tsv OR o.user_id IS DISTINCT FROM n.user_id)
        RETURNING p.message_id
    )
    SELECT coalesce(array_agg(message_id), '{}') INTO was_pending FROM gone;
    IF cardinality(was_pending) > 0 THEN
        PERFORM ltst_apply_term_stats(array_agg(o.user_id), array_agg(o.search_tsv), 1)
           FROM old_messages AS o WHERE o.message_id = ANY(was_pending);
    END IF;
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

-- Count the pending messages (ltst_user_stats and ltst_term_stats, in the triggers' order); returns how
-- many were counted. One fold at a time (another one running: 0 at once). Each pending row is taken by
-- DELETE, skipping the rows another transaction holds (SKIP LOCKED): the update and delete triggers take
-- a message's pending row before they count (or drop) it, so a message is counted by exactly one of
-- them, with the words a fold's snapshot shows it (an edit waits on the row the fold took, then counts
-- itself against those words). A lock wait over 100 ms (on a statistics row), or a deadlock, ends the
-- fold with nothing done (0): the rows stay pending, exact for readers, for the next fold (so would a
-- key over the btree limit, which never waits here: a long message is counted by its append, an edited
-- one by its edit). Runs as the tables' owner: every user's pending rows, whoever calls it (it returns
-- a count, nothing of the rows).
CREATE OR REPLACE FUNCTION ltst_fold_term_pending() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET lock_timeout = '100ms' AS $$
DECLARE
    ids bigint[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(16018, 0) THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM ltst_term_pending AS p
         WHERE (p.user_id, p.message_id) IN (SELECT t.user_id, t.message_id FROM ltst_term_pending AS t
                                              FOR UPDATE SKIP LOCKED)
        RETURNING p.message_id
    )
    SELECT coalesce(array_agg(message_id), '{}') INTO ids FROM gone;
    IF cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM ltst_apply_term_stats(array_agg(m.user_id), array_agg(m.search_tsv), 1)
       FROM conversation_messages AS m WHERE m.message_id = ANY(ids);
    RETURN cardinality(ids);
EXCEPTION WHEN lock_not_available OR deadlock_detected OR program_limit_exceeded THEN
    RETURN 0;
END;
$$;

-- The store's append counts a long message at once (ltst_memory/_queries.py, PENDING_MAX_BYTES), as the
-- insert trigger would, so that a word over the btree key limit fails that append; false: no pending row.
CREATE OR REPLACE FUNCTION ltst_count_message_now(p_user text, p_tsv tsvector) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ltst_apply_term_stats(ARRAY[p_user], ARRAY[p_tsv], 1);
    RETURN false;
END;
$$;

-- (as in 0009: a SECURITY DEFINER function resolves names in the schema of the library's tables only)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ltst_fold_term_pending() SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE c.oid = 'conversation_sessions'::regclass));
END;
$$;
