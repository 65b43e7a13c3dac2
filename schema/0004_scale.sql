-- ltst-memory schema, version 0004: scale helpers (issue 5).
--
-- Idempotent (IF NOT EXISTS): safe to apply twice, by `ltst migrate` or
-- `psql -d DB -v ON_ERROR_STOP=1 -f 0004_scale.sql`.

-- Messages stored with deferred embedding (bulk import with defer_embedding=True) wait with a NULL
-- embedding until a worker claims them (`... WHERE embedding IS NULL ORDER BY message_id LIMIT n
-- FOR UPDATE SKIP LOCKED`). This partial index holds only those rows, so claiming stays an index
-- range scan however large the table is, and it costs nothing once every row is embedded.
CREATE INDEX IF NOT EXISTS idx_messages_pending_embedding
    ON conversation_messages (message_id) WHERE embedding IS NULL;
