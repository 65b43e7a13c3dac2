-- ltst-memory schema, version 0019: a fold of the pending BM25 statistics never fails its caller.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0019_fold_errors.sql`.
--
-- ltst_fold_term_pending() (0018) ended with nothing done on a lock wait over 100 ms, a deadlock or a key
-- over the btree limit, and raised any other error. store_message runs it after its append has
-- committed, so such an error made a stored append raise. Any error now ends the fold the same way: a
-- WARNING names it, the function returns 0, and the messages stay pending (exact for readers, counted by
-- a later fold). The rest of the function is 0018's.

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
EXCEPTION
    WHEN lock_not_available OR deadlock_detected OR program_limit_exceeded THEN
        RETURN 0;
    WHEN OTHERS THEN  -- the append that called it is stored: the rows stay pending (exact for readers)
        RAISE WARNING 'ltst_fold_term_pending: % (SQLSTATE %); the messages stay pending', SQLERRM, SQLSTATE;
        RETURN 0;
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
