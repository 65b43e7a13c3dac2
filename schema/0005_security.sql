-- ltst-memory schema, version 0005: isolation between users, retention policies, erasure of a user.
--
-- Idempotent (IF NOT EXISTS / OR REPLACE / DROP IF EXISTS + CREATE): can be applied twice, by
-- `ltst migrate` or with `psql -v ON_ERROR_STOP=1 -f 0005_security.sql`. See docs/security.md.
--
-- Row Level Security, the second wall behind ConversationStorage.for_user():
--   * every LTST table holding user data (named; never another table) gets RLS ENABLED with one policy,
--     `ltst_user_isolation`:
--     a row is visible and writable only when it belongs to the user named by the transaction-local
--     setting `ltst.user_id` (set by every call of a user-scoped store with set_config(..., true)).
--   * an UNSET (NULL) or empty `ltst.user_id` matches no row: a role subject to RLS sees nothing and
--     can write nothing unless it names a user. Fail closed.
--   * the admin path is unchanged: the tables' OWNER (the role that ran the migrations; RLS is
--     enabled, not forced), superusers and BYPASSRLS roles are not subject to the policies, so the
--     unscoped store, migrations, retention sweeps and delete_user keep working for them.
--   * to make the wall effective, connect the application as a separate non-owner role (see
--     docs/security.md for the GRANTs) and use for_user(); tables created by later migrations call
--     ltst_enable_rls('<table>') to get the same policy.

-- Retention policies --------------------------------------------------------------------------------
-- '' in user_id / session_type means "any". The most specific matching policy wins:
-- (user, type) > (user, any) > (any, type) > (any, any). NULL days = keep forever.

CREATE TABLE IF NOT EXISTS ltst_retention_policies (
    user_id        text NOT NULL DEFAULT '',
    session_type   text NOT NULL DEFAULT '',
    message_days   integer CHECK (message_days IS NULL OR message_days >= 0),
    context_days   integer CHECK (context_days IS NULL OR context_days >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, session_type)
);

-- Row Level Security --------------------------------------------------------------------------------

-- Give table `tbl` (which has a text column user_id) the user-isolation policy.
CREATE OR REPLACE FUNCTION ltst_enable_rls(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS ltst_user_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY ltst_user_isolation ON %s '
        'USING (user_id = current_setting(''ltst.user_id'', true)) '
        'WITH CHECK (user_id = current_setting(''ltst.user_id'', true))', tbl);
END;
$$;

-- The library's tables with a user_id column, by name (never an application's table beside them; the
-- full list is ltst_owned_tables of 0009, which re-creates this function and ltst_delete_user: re-run
-- 0009 after re-running this file by hand).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['conversation_context', 'conversation_messages', 'conversation_sessions',
                             'ltst_retention_policies', 'ltst_term_stats', 'ltst_user_stats', 'user_preferences']
    LOOP
        PERFORM ltst_enable_rls(t::regclass);
    END LOOP;
END;
$$;

-- Tables keyed by session only: visible when the session is (the sessions table is itself filtered).
ALTER TABLE session_summary ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS ltst_user_isolation ON session_summary;
CREATE POLICY ltst_user_isolation ON session_summary
    USING (EXISTS (SELECT 1 FROM conversation_sessions AS s
                    WHERE s.session_id = session_summary.session_id
                      AND s.user_id = current_setting('ltst.user_id', true)))
    WITH CHECK (EXISTS (SELECT 1 FROM conversation_sessions AS s
                         WHERE s.session_id = session_summary.session_id
                           AND s.user_id = current_setting('ltst.user_id', true)));

ALTER TABLE session_relationships ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS ltst_user_isolation ON session_relationships;
CREATE POLICY ltst_user_isolation ON session_relationships
    USING (EXISTS (SELECT 1 FROM conversation_sessions AS s
                    WHERE s.session_id = session_relationships.source_session_id
                      AND s.user_id = current_setting('ltst.user_id', true)))
    WITH CHECK (
        EXISTS (SELECT 1 FROM conversation_sessions AS s
                 WHERE s.session_id = session_relationships.source_session_id
                   AND s.user_id = current_setting('ltst.user_id', true))
        AND EXISTS (SELECT 1 FROM conversation_sessions AS s
                     WHERE s.session_id = session_relationships.target_session_id
                       AND s.user_id = current_setting('ltst.user_id', true)));

-- Erasure of a user ---------------------------------------------------------------------------------
-- Deletes every row of p_user_id from the library's tables that have a user_id column, then the
-- user's sessions (cascading to summaries and relationships); returns the rows removed per table.
-- Runs with the caller's rights (not SECURITY DEFINER): under RLS it can only erase the scoped user.

CREATE OR REPLACE FUNCTION ltst_delete_user(p_user_id text)
RETURNS TABLE (kind text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    -- lock the user's sessions first: writers to them wait, then find them gone
    PERFORM 1 FROM conversation_sessions AS s WHERE s.user_id = p_user_id ORDER BY s.session_id FOR UPDATE;

    kind := 'session_relationships';
    SELECT count(*) INTO removed FROM session_relationships AS r
     WHERE r.source_session_id IN (SELECT s.session_id FROM conversation_sessions AS s WHERE s.user_id = p_user_id)
        OR r.target_session_id IN (SELECT s.session_id FROM conversation_sessions AS s WHERE s.user_id = p_user_id);
    RETURN NEXT;
    kind := 'session_summary';
    SELECT count(*) INTO removed FROM session_summary AS m
     WHERE m.session_id IN (SELECT s.session_id FROM conversation_sessions AS s WHERE s.user_id = p_user_id);
    RETURN NEXT;

    FOR t IN
        SELECT l.tname AS name, l.tname::regclass AS tbl
          FROM unnest(ARRAY['conversation_messages', 'conversation_context', 'ltst_retention_policies',
                            'ltst_term_stats', 'ltst_user_stats', 'user_preferences']) WITH ORDINALITY AS l(tname, i)
         ORDER BY l.i
    LOOP
        EXECUTE format('DELETE FROM %s WHERE user_id = $1', t.tbl) USING p_user_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        kind := t.name;
        removed := n;
        RETURN NEXT;
    END LOOP;

    DELETE FROM conversation_sessions AS s WHERE s.user_id = p_user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    kind := 'conversation_sessions';
    removed := n;
    RETURN NEXT;
END;
$$;
