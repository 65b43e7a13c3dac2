-- ltst-memory schema, version 0007: embeddings stored in their row, one tsvector per message.
--
-- pgvector's vector type has EXTENDED storage. A 384-dimension vector is 1,540 bytes, which with the
-- rest of a chat turn pushed rows past PostgreSQL's ~2 kB TOAST threshold, so every embedding lived
-- out of line in the TOAST table: an exact scan of a user's 1,000 messages read ~3,800 buffers
-- instead of ~1,000, and search, recall and rehydrate paid it on every call.
--   * embedding: STORAGE MAIN keeps the vector in the row (it is only moved out as a last resort);
--   * toast_tuple_target = 4096: rows up to ~4 kB are left whole (vectors up to 768 dimensions with
--     a short turn), longer contents are still compressed or moved out first.
--   * content_tsv (from 0001) is read by nothing since 0006: on PostgreSQL 17+ its generation
--     expression becomes NULL, so inserts stop computing a second tsvector and rows shrink by ~190
--     bytes. (The column itself stays: 0001 must remain re-runnable with psql -f.) On PostgreSQL 13-16
--     the column is left as it is.
-- Storage settings apply to rows written from now on. Rows stored earlier keep their out-of-line
-- vectors until the table is rewritten: on 17+ the content_tsv change below rewrites it once; on
-- older servers run `VACUUM FULL conversation_messages` when convenient (docs/design.md, "Vectors stay in their row").
-- Idempotent: re-running changes nothing and does not rewrite the table again.

ALTER TABLE conversation_messages ALTER COLUMN embedding SET STORAGE MAIN;
ALTER TABLE conversation_messages SET (toast_tuple_target = 4096);
-- the same for the adapters' vectors (LangChain vector store, LangGraph store)
ALTER TABLE ltst_documents ALTER COLUMN embedding SET STORAGE MAIN;
ALTER TABLE ltst_documents SET (toast_tuple_target = 4096);
ALTER TABLE ltst_store_vectors ALTER COLUMN embedding SET STORAGE MAIN;
ALTER TABLE ltst_store_vectors SET (toast_tuple_target = 4096);

DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 AND EXISTS (
        SELECT 1
        FROM pg_attribute AS a
        JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = 'conversation_messages'::regclass
          AND a.attname = 'content_tsv'
          AND pg_get_expr(d.adbin, d.adrelid) <> 'NULL::tsvector'
    ) THEN
        EXECUTE 'ALTER TABLE conversation_messages ALTER COLUMN content_tsv SET EXPRESSION AS (NULL::tsvector)';
    END IF;
END
$$;
