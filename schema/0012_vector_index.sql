-- ltst-memory schema, version 0012: no HNSW graph on the per-message write path.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0012_vector_index.sql`.
--
-- Inserting each message into one HNSW graph over every user's messages was 85-90 % of an append's
-- server time, paid on every write and used only by unscoped searches and the largest users (a scope
-- of up to exact_search_max_rows messages is searched exactly through its btree). The HNSW index is
-- replaced by an IVFFlat index, whose insert only picks the nearest of its centroids, so a message is
-- still in the index the moment it is stored. IVFFlat computes its centroids from the rows present at
-- build time, so it is built in bulk: here, for a database that already holds 10,000 embedded messages
-- or more (about a minute per million messages on 2 cores; writes wait meanwhile), with the storage
-- (vector or halfvec) of the HNSW index it replaces; otherwise later by the operator with
-- `ltst vector-index` (docs/scaling.md, "The vector index"). Until then large-scope searches are exact
-- scans. Re-running this file (or 0001 then this file) changes nothing more.

DO $$
DECLARE
    old_definition text := pg_get_indexdef(to_regclass('idx_messages_embedding_hnsw'));
    embedded bigint;
    n_lists integer;
    dimension integer;
    target text;
BEGIN
    IF old_definition IS NOT NULL AND to_regclass('idx_messages_embedding_ivfflat') IS NULL THEN
        SELECT count(*) INTO embedded FROM conversation_messages WHERE embedding IS NOT NULL;
        IF embedded >= 10000 THEN
            n_lists := CASE WHEN embedded <= 1000000 THEN greatest(10, embedded / 1000)
                            ELSE floor(sqrt(embedded))::integer END;
            SELECT coalesce((SELECT value::integer FROM ltst_metadata WHERE key = 'embedding_dimension'), 384)
                INTO dimension;
            target := CASE WHEN old_definition LIKE '%halfvec_cosine_ops%'
                           THEN format('(embedding::halfvec(%s)) halfvec_cosine_ops', dimension)
                           ELSE 'embedding vector_cosine_ops' END;
            EXECUTE format('CREATE INDEX IF NOT EXISTS idx_messages_embedding_ivfflat ON conversation_messages '
                           'USING ivfflat (%s) WITH (lists = %s)', target, n_lists);
        END IF;
    END IF;
END
$$;

DROP INDEX IF EXISTS idx_messages_embedding_hnsw;
