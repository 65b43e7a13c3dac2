-- ltst-memory schema, version 0009: act on the library's own tables only; paths that work under RLS.
--
-- Idempotent: can be applied twice, by `ltst migrate` or with `psql -v ON_ERROR_STOP=1 -f`. See
-- docs/security.md.
--
--   * ltst_owned_tables: the tables ltst-memory owns and the column naming each row's user (the same
--     list as ltst_memory/_tables.py). Row Level Security, ltst_delete_user and retention act on these
--     tables only. A later migration registers its tables with ltst_own_table(...).
--   * 0005 gave its policy to EVERY table of the schema with a user_id column, an application's own
--     tables included. Here the policy is dropped from every table not in the list, and RLS is
--     disabled again on such a table when no other policy is left on it.
--   * ltst_delete_user names the listed tables (it scanned the catalog) and reports a listed table that
--     holds rows but has no owner column yet (removed = NULL: not reached).
--   * ltst_pinned_roles / ltst_pin_role(role, user): a login role pinned to one user; the policies
--     (re-created here, keyed by ltst_policy_user()) then ignore ltst.user_id on its connections.
--   * SECURITY DEFINER functions, owned by the schema owner, with a fixed search_path, for the
--     things a role under RLS must be able to do and cannot see enough for:
--       ltst_embeddings_exist()          the embedding-model check (RLS would hide the stored vectors);
--       ltst_cleanup_expired_data()      retention over every user (it runs the owner's policies only);
--       ltst_analyze_owned_tables(text[]) refresh planner statistics after an erase;
--       ltst_policy_user()               the user of the policies (reads ltst_pinned_roles).

-- The list ----------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ltst_owned_tables (
    table_name       text PRIMARY KEY,
    user_column      text,              -- NULL: the table holds no user data
    session_columns  text[] NOT NULL DEFAULT '{}',
    erase_order      integer NOT NULL
);

-- Not secret, and read by ltst_delete_user with the caller's rights: readable by every role, so an
-- application role granted its tables before this migration can still erase.
GRANT SELECT ON ltst_owned_tables TO PUBLIC;

-- Register (or update) one table of the library.
CREATE OR REPLACE FUNCTION ltst_own_table(p_table text, p_user_column text, p_session_columns text[],
                                          p_erase_order integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ltst_owned_tables (table_name, user_column, session_columns, erase_order)
    VALUES (p_table, p_user_column, coalesce(p_session_columns, '{}'), p_erase_order)
    ON CONFLICT (table_name) DO UPDATE SET user_column = EXCLUDED.user_column,
        session_columns = EXCLUDED.session_columns, erase_order = EXCLUDED.erase_order;
$$;

SELECT ltst_own_table('conversation_messages', 'user_id', '{session_id}', 10);
SELECT ltst_own_table('conversation_context', 'user_id', '{session_id}', 20);
SELECT ltst_own_table('user_preferences', 'user_id', '{}', 30);
SELECT ltst_own_table('ltst_retention_policies', 'user_id', '{}', 40);
SELECT ltst_own_table('ltst_term_stats', 'user_id', '{}', 50);
SELECT ltst_own_table('ltst_user_stats', 'user_id', '{}', 51);
-- adapter tables: their user_id owner column comes with migration 0010
SELECT ltst_own_table('ltst_store_vectors', 'user_id', '{}', 60);
SELECT ltst_own_table('ltst_store_items', 'user_id', '{}', 61);
SELECT ltst_own_table('ltst_documents', 'user_id', '{}', 62);
SELECT ltst_own_table('ltst_collections', 'user_id', '{}', 63);
-- keyed by session (user_id exists only on databases converted for Citus)
SELECT ltst_own_table('session_relationships', 'user_id', '{source_session_id,target_session_id}', 80);
SELECT ltst_own_table('session_summary', 'user_id', '{session_id}', 81);
SELECT ltst_own_table('conversation_sessions', 'user_id', '{session_id}', 100);
-- no user data
SELECT ltst_own_table('ltst_metadata', NULL, '{}', 200);
SELECT ltst_own_table('ltst_migrations', NULL, '{}', 201);
SELECT ltst_own_table('ltst_owned_tables', NULL, '{}', 202);

-- Whether listed table p_table exists and has its owner column.
CREATE OR REPLACE FUNCTION ltst_has_owner_column(p_table text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM ltst_owned_tables AS o
          JOIN pg_attribute AS a ON a.attrelid = to_regclass(o.table_name) AND a.attname = o.user_column
         WHERE o.table_name = p_table AND NOT a.attisdropped);
$$;

-- Row Level Security on the listed tables only ----------------------------------------------------------

-- Login roles pinned to one user (docs/security.md, "A role per tenant"): on a connection of such a role
-- the policies use the pinned user and ignore ltst.user_id, which any client can set. Managed by the
-- schema owner (ltst_pin_role); RLS without policies keeps every other role out of the table itself.
CREATE TABLE IF NOT EXISTS ltst_pinned_roles (
    role_name  text PRIMARY KEY,
    user_id    text NOT NULL CHECK (user_id <> '')
);
ALTER TABLE ltst_pinned_roles ENABLE ROW LEVEL SECURITY;
SELECT ltst_own_table('ltst_pinned_roles', NULL, '{}', 203);

CREATE OR REPLACE FUNCTION ltst_pin_role(p_role text, p_user_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ltst_pinned_roles (role_name, user_id) VALUES (p_role, p_user_id)
    ON CONFLICT (role_name) DO UPDATE SET user_id = EXCLUDED.user_id;
$$;

-- The user the policies let the current connection see: its login role's pinned user, else the
-- transaction's ltst.user_id (NULL when unset or empty: no row). Policies call it as a scalar
-- subquery, so it runs once per statement.
CREATE OR REPLACE FUNCTION ltst_policy_user() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT coalesce((SELECT p.user_id FROM ltst_pinned_roles AS p WHERE p.role_name = session_user),
                    nullif(current_setting('ltst.user_id', true), ''));
$$;

-- Give table `tbl` (which has a text column user_id) the user-isolation policy.
CREATE OR REPLACE FUNCTION ltst_enable_rls(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS ltst_user_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY ltst_user_isolation ON %s '
        'USING (user_id = (SELECT ltst_policy_user())) '
        'WITH CHECK (user_id = (SELECT ltst_policy_user()))', tbl);
END;
$$;

-- The policy on every listed table that has its owner column (session-keyed tables without one keep
-- the session-based policies of 0005).
CREATE OR REPLACE FUNCTION ltst_enable_rls_on_owned_tables() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT o.table_name FROM ltst_owned_tables AS o
              WHERE o.user_column = 'user_id' AND ltst_has_owner_column(o.table_name) ORDER BY o.table_name
    LOOP
        PERFORM ltst_enable_rls(t::regclass);
    END LOOP;
END;
$$;

-- Undo 0005 on tables the library does not own.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl
          FROM pg_class AS c
          JOIN pg_policy AS p ON p.polrelid = c.oid AND p.polname = 'ltst_user_isolation'
         WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'conversation_sessions'::regclass)
           AND c.relname NOT IN (SELECT table_name FROM ltst_owned_tables)
    LOOP
        EXECUTE format('DROP POLICY ltst_user_isolation ON %s', t.tbl);
        IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = t.tbl) THEN
            EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', t.tbl);
        END IF;
    END LOOP;
END;
$$;

SELECT ltst_enable_rls_on_owned_tables();

-- Tables keyed by session (where they have no user_id column): visible when their session is.
DO $$
BEGIN
    IF NOT ltst_has_owner_column('session_summary') THEN
        ALTER TABLE session_summary ENABLE ROW LEVEL SECURITY;
        DROP POLICY IF EXISTS ltst_user_isolation ON session_summary;
        CREATE POLICY ltst_user_isolation ON session_summary
            USING (EXISTS (SELECT 1 FROM conversation_sessions AS s
                            WHERE s.session_id = session_summary.session_id
                              AND s.user_id = (SELECT ltst_policy_user())))
            WITH CHECK (EXISTS (SELECT 1 FROM conversation_sessions AS s
                                 WHERE s.session_id = session_summary.session_id
                                   AND s.user_id = (SELECT ltst_policy_user())));
    END IF;
    IF NOT ltst_has_owner_column('session_relationships') THEN
        ALTER TABLE session_relationships ENABLE ROW LEVEL SECURITY;
        DROP POLICY IF EXISTS ltst_user_isolation ON session_relationships;
        CREATE POLICY ltst_user_isolation ON session_relationships
            USING (EXISTS (SELECT 1 FROM conversation_sessions AS s
                            WHERE s.session_id = session_relationships.source_session_id
                              AND s.user_id = (SELECT ltst_policy_user())))
            WITH CHECK (
                EXISTS (SELECT 1 FROM conversation_sessions AS s
                         WHERE s.session_id = session_relationships.source_session_id
                           AND s.user_id = (SELECT ltst_policy_user()))
                AND EXISTS (SELECT 1 FROM conversation_sessions AS s
                             WHERE s.session_id = session_relationships.target_session_id
                               AND s.user_id = (SELECT ltst_policy_user())));
    END IF;
END;
$$;

-- Erasure of a user ---------------------------------------------------------------------------------
-- Deletes every row of p_user_id from the listed tables, in their erase order: by the owner column
-- where the table has it, else through the user's sessions. Returns the rows removed per table; a
-- listed table that holds rows but has neither (an adapter table before 0010) is returned with
-- removed = NULL: not reached. Runs with the caller's rights: under RLS the caller names the user
-- (ltst.user_id) first, and then can reach only that user's rows.

CREATE OR REPLACE FUNCTION ltst_delete_user(p_user_id text)
RETURNS TABLE (kind text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
    cond text;
BEGIN
    -- lock the user's sessions first: writers to them wait, then find them gone
    PERFORM 1 FROM conversation_sessions AS s WHERE s.user_id = p_user_id ORDER BY s.session_id FOR UPDATE;

    FOR t IN
        SELECT o.table_name, o.user_column, o.session_columns, to_regclass(o.table_name) AS tbl
          FROM ltst_owned_tables AS o
         WHERE o.user_column IS NOT NULL
         ORDER BY o.erase_order, o.table_name
    LOOP
        CONTINUE WHEN t.tbl IS NULL;
        kind := t.table_name;
        IF ltst_has_owner_column(t.table_name) THEN
            EXECUTE format('DELETE FROM %s WHERE %I = $1', t.tbl, t.user_column) USING p_user_id;
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := n;
        ELSIF cardinality(t.session_columns) > 0 THEN
            SELECT string_agg(format('%I IN (SELECT s.session_id FROM conversation_sessions AS s '
                                     'WHERE s.user_id = $1)', c), ' OR ')
              INTO cond FROM unnest(t.session_columns) AS c;
            EXECUTE format('DELETE FROM %s WHERE %s', t.tbl, cond) USING p_user_id;
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := n;
        ELSE
            EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %s) THEN NULL ELSE 0 END', t.tbl) INTO removed;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- SECURITY DEFINER entry points -----------------------------------------------------------------------

-- Whether any message has an embedding, whatever the caller's RLS visibility.
CREATE OR REPLACE FUNCTION ltst_embeddings_exist() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT EXISTS (SELECT 1 FROM conversation_messages WHERE embedding IS NOT NULL);
$$;

-- Retention over every user: expired context, then what the retention policies no longer keep.
CREATE OR REPLACE FUNCTION ltst_cleanup_expired_data(OUT context bigint, OUT messages bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM conversation_context WHERE expires_at IS NOT NULL AND expires_at <= now();
    GET DIAGNOSTICS context = ROW_COUNT;
    DELETE FROM conversation_context AS c
     USING conversation_sessions AS s,
           LATERAL (SELECT p.context_days AS days FROM ltst_retention_policies AS p
                     WHERE p.user_id IN (s.user_id, '') AND p.session_type IN (s.session_type, '')
                     ORDER BY (p.user_id <> '') DESC, (p.session_type <> '') DESC LIMIT 1) AS policy
     WHERE c.session_id = s.session_id AND policy.days IS NOT NULL
       AND c.updated_at < now() - make_interval(days => policy.days);
    GET DIAGNOSTICS n = ROW_COUNT;
    context := context + n;
    DELETE FROM conversation_messages AS m
     USING conversation_sessions AS s,
           LATERAL (SELECT p.message_days AS days FROM ltst_retention_policies AS p
                     WHERE p.user_id IN (s.user_id, '') AND p.session_type IN (s.session_type, '')
                     ORDER BY (p.user_id <> '') DESC, (p.session_type <> '') DESC LIMIT 1) AS policy
     WHERE m.session_id = s.session_id AND policy.days IS NOT NULL
       AND m."timestamp" < now() - make_interval(days => policy.days);
    GET DIAGNOSTICS messages = ROW_COUNT;
END;
$$;

-- ANALYZE the listed tables among p_tables (planner statistics hold sampled values of the rows).
CREATE OR REPLACE FUNCTION ltst_analyze_owned_tables(p_tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT o.table_name FROM ltst_owned_tables AS o
              WHERE o.table_name = ANY(p_tables) AND to_regclass(o.table_name) IS NOT NULL
              ORDER BY o.table_name
    LOOP
        EXECUTE format('ANALYZE %s', t::regclass);
    END LOOP;
END;
$$;

-- A SECURITY DEFINER function resolves names in the schema of the library's tables only (and pg_temp
-- last), whatever the caller's search_path.
DO $$
DECLARE
    f text;
    schema_name text := (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                          WHERE c.oid = 'conversation_sessions'::regclass);
BEGIN
    FOREACH f IN ARRAY ARRAY['ltst_embeddings_exist()', 'ltst_cleanup_expired_data()',
                             'ltst_analyze_owned_tables(text[])', 'ltst_policy_user()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, schema_name);
    END LOOP;
END;
$$;
