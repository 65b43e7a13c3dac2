-- ltst-memory schema, version 0015: an erasure also drops the btree of the user's gap.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0015_user_index_gap.sql`.
--
-- A user's own vector index (`ltst vector-index`, ltst_memory/hnsw.py) covers their messages up to a
-- watermark (WHERE user_id = '<the user>' AND message_id <= W); a btree beside it covers those stored
-- since (WHERE user_id = '<the user>' AND message_id > W), which each search reads exactly. Both name
-- the user in the catalog, so delete_user drops both, as 0014 dropped the one: after the user's rows,
-- for the user this transaction may reach, and only once that user has no message left. Their names
-- come from the user id as hnsw.user_index_name / hnsw.gap_index_name derive them: the prefix and the
-- first 24 hex digits of md5(user id). Returns whether the user had an own index.

CREATE OR REPLACE FUNCTION ltst_drop_user_vector_index(p_user_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    index_name text := 'idx_messages_embedding_user_' || left(md5(p_user_id), 24);
    gap_name text := 'idx_messages_gap_user_' || left(md5(p_user_id), 24);
    had_index boolean;
BEGIN
    IF ltst_policy_user() IS DISTINCT FROM p_user_id THEN
        RAISE EXCEPTION 'this transaction cannot reach user %', p_user_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT FROM conversation_messages AS m WHERE m.user_id = p_user_id) THEN
        RETURN false;
    END IF;
    had_index := to_regclass(index_name) IS NOT NULL;
    IF had_index THEN
        EXECUTE format('DROP INDEX %I', index_name);
    END IF;
    IF to_regclass(gap_name) IS NOT NULL THEN
        EXECUTE format('DROP INDEX %I', gap_name);
    END IF;
    RETURN had_index;
END;
$$;

-- (as in 0009: a SECURITY DEFINER function resolves names in the schema of the library's tables only)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ltst_drop_user_vector_index(text) SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE c.oid = 'conversation_sessions'::regclass));
END;
$$;
