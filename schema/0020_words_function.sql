-- ltst-memory schema, version 0020: a message's words without re-parsing SQL on every insert.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0020_words_function.sql`.
--
-- conversation_messages.search_tsv is a stored generated column, GENERATED ALWAYS AS
-- (ltst_search_tsv(metadata ->> 'speaker', content)) (0002). PostgreSQL plans a generated column's
-- expression once per INSERT or UPDATE statement it runs (ExecInitGenerated), and planning inlines a
-- LANGUAGE sql function: it parses and analyses the function's body text again, every statement. That
-- was about a tenth of the server's time in store_message's statement (perf, 100k messages). The same
-- expression in PL/pgSQL is compiled once per connection and evaluated as a simple expression, and the
-- planner leaves the call alone. Same arguments, same result (the column's values, its GIN index and
-- the generated column's dependency on the function stay as they are; nothing is rewritten).

CREATE OR REPLACE FUNCTION ltst_search_tsv(speaker text, content text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN setweight(to_tsvector('english'::regconfig, coalesce(speaker, '')), 'A')
           || to_tsvector('english'::regconfig, content);
END;
$$;
