-- ltst-memory schema, version 0013: an erasure that empties a table leaves no statistics behind.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0013_erased_statistics.sql`.
--
-- delete_user refreshes the planner statistics of the tables it touched (ltst_analyze_owned_tables),
-- since pg_stats hold sampled values of the rows (ids, words). But ANALYZE of a table it finds empty
-- keeps the statistics the table had: erasing the only user of a table left their values in pg_stats.
-- Such a table's column statistics are now cleared (pg_clear_attribute_stats, PostgreSQL 18; on an
-- older server they stay until the table has rows again). A Citus cluster, where an erasure often
-- empties a user's shard, gets its own version of the function from schema/citus/distribute.sql.

CREATE OR REPLACE FUNCTION ltst_analyze_owned_tables(p_tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    t text;
    empty boolean;
BEGIN
    FOR t IN SELECT o.table_name FROM ltst_owned_tables AS o
              WHERE o.table_name = ANY(p_tables) AND to_regclass(o.table_name) IS NOT NULL
              ORDER BY o.table_name
    LOOP
        EXECUTE format('ANALYZE %s', t::regclass);
        EXECUTE format('SELECT NOT EXISTS (SELECT FROM %s)', t::regclass) INTO empty;
        IF empty AND to_regprocedure('pg_clear_attribute_stats(text,text,text,boolean)') IS NOT NULL THEN
            PERFORM pg_clear_attribute_stats(n.nspname::text, c.relname::text, a.attname::text, false)
            FROM pg_class AS c
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.oid = t::regclass;
        END IF;
    END LOOP;
END;
$$;

-- (as in 0009: a SECURITY DEFINER function resolves names in the schema of the library's tables only)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ltst_analyze_owned_tables(text[]) SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE c.oid = 'conversation_sessions'::regclass));
END;
$$;
