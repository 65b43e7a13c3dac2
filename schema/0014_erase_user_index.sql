-- ltst-memory schema, version 0014: an erasure drops the user's own vector index.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0014_erase_user_index.sql`.
--
-- The largest users get a vector index of their own (`ltst vector-index`, ltst_memory/hnsw.py): a
-- partial index WHERE user_id = '<the user>', so the user id is in the catalog (pg_index.indpred) for
-- as long as the index exists. delete_user drops it in the erasure's transaction, after the rows, with
-- ltst_drop_user_vector_index. The function runs as the tables' owner (SECURITY DEFINER: a role under
-- Row Level Security erases too), for the user this transaction may reach (ltst_policy_user(), as the
-- policies), and only once that user has no message left. The index's name is derived from the user
-- id as hnsw.user_index_name derives it: 'idx_messages_embedding_user_' || the first 24 hex digits of
-- md5(user id).

CREATE OR REPLACE FUNCTION ltst_drop_user_vector_index(p_user_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    index_name text := 'idx_messages_embedding_user_' || left(md5(p_user_id), 24);
BEGIN
    IF ltst_policy_user() IS DISTINCT FROM p_user_id THEN
        RAISE EXCEPTION 'this transaction cannot reach user %', p_user_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF to_regclass(index_name) IS NULL
       OR EXISTS (SELECT FROM conversation_messages AS m WHERE m.user_id = p_user_id) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP INDEX %I', index_name);
    RETURN true;
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
