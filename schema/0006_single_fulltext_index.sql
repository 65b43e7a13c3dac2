-- ltst-memory schema, version 0006: one full-text index instead of two.
--
-- 0001 created content_tsv ('simple' speaker + 'english' content) with a GIN index; 0002 added
-- search_tsv ('english' speaker + content), which recall's BM25 and every full-text path now use.
-- Keeping both GIN indexes cost every insert a second index update for nothing, so the first one is
-- dropped. The content_tsv column itself stays (0001 must remain re-runnable with psql -f, and its
-- CREATE INDEX names the column); nothing reads it. Idempotent.

DROP INDEX IF EXISTS idx_messages_content_tsv;
