-- ltst-memory: make a database migrated to 0007 distributable with Citus, distribution column user_id.
--
-- Opt-in, and NOT a numbered migration: `ltst migrate` never applies it, and a single-node database
-- keeps the keys of 0001-0007 (session ids unique across all users, and so on). See docs/citus.md.
--
--   psql -d DB -v ON_ERROR_STOP=1 -f schema/citus/distribute.sql      or      ltst citus-prepare --dsn DB
--
-- Plain SQL, idempotent (a second run changes nothing). Two steps:
--   1. one transaction rewrites the schema so that it satisfies Citus's co-location rules:
--        * session_summary and session_relationships get a user_id column (backfilled from
--          conversation_sessions), so that every per-user table carries the distribution column;
--        * every PRIMARY KEY / UNIQUE constraint of a per-user table includes user_id. It is appended
--          to the existing columns, so each index still leads with the column the library looks rows up
--          by (session_id, message_id, ...) and no lookup loses its index. Constraint names are kept.
--        * every foreign key between per-user tables pairs user_id with user_id, at the same position
--          on both sides. Citus refuses ON UPDATE CASCADE and ON DELETE SET NULL on such keys: the
--          session keys lose ON UPDATE CASCADE (the library never changes a session's id or owner), and
--          the parent_message_id key becomes ON DELETE NO ACTION, DEFERRABLE INITIALLY DEFERRED, with a
--          trigger that clears parent_message_id of the replies when their parent is deleted (what
--          ON DELETE SET NULL did);
--        * the trigger functions that name a changed key (session summaries: ON CONFLICT targets and
--          joins), ltst_delete_user and the Row Level Security policies of the two tables are rewritten
--          to work by user_id;
--        * ltst_citus_tables() lists, table by table, what Citus is to do with it (in order).
--   2. only where the citus extension is installed, one DO block creates the reference tables and the
--      distributed tables, in the order of ltst_citus_tables() (skipping the tables already done).
--
-- Run it again after applying a newer ltst-memory migration, and after re-running a numbered migration
-- by hand with psql (0001, 0002 and 0005 re-create the trigger functions this file rewrites).

BEGIN;

DO $$
BEGIN
    IF to_regclass('ltst_migrations') IS NULL THEN
        RAISE EXCEPTION 'distribute.sql needs a database migrated by ltst-memory: run `ltst migrate` first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ltst_migrations WHERE name = '0007_inline_vectors.sql') THEN
        RAISE EXCEPTION 'distribute.sql needs a database migrated to 0007 at least: run `ltst migrate` first';
    END IF;
END
$$;

-- The first time, writers wait until the conversion is committed (then their triggers run the new
-- functions). A converted database (marked at the end of this transaction) is not locked again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ltst_metadata WHERE key = 'citus_distribution_column') THEN
        LOCK TABLE conversation_sessions, conversation_messages, conversation_context, session_summary,
            session_relationships IN SHARE ROW EXCLUSIVE MODE;
    END IF;
END
$$;

-- 1. user_id on every per-user table ------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'session_summary'::regclass AND attname = 'user_id' AND NOT attisdropped) THEN
        ALTER TABLE session_summary ADD COLUMN user_id text;
        UPDATE session_summary AS m SET user_id = s.user_id
          FROM conversation_sessions AS s WHERE s.session_id = m.session_id;
        ALTER TABLE session_summary ALTER COLUMN user_id SET NOT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'session_relationships'::regclass AND attname = 'user_id' AND NOT attisdropped) THEN
        -- both ends of a relationship belong to one user (the library checks it; the new keys enforce it)
        ALTER TABLE session_relationships ADD COLUMN user_id text;
        UPDATE session_relationships AS r SET user_id = s.user_id
          FROM conversation_sessions AS s WHERE s.session_id = r.source_session_id;
        ALTER TABLE session_relationships ALTER COLUMN user_id SET NOT NULL;
    END IF;
END
$$;

-- 2. Keys and foreign keys -------------------------------------------------------------------------------
-- The foreign keys wanted at the end. Those that differ are dropped first (they depend on the keys being
-- rewritten), then the keys are rewritten, then the missing foreign keys are added.

CREATE TEMPORARY TABLE ltst_citus_fkeys (
    tbl        text,
    con        text,
    cols       text[],
    ref        text,
    ref_cols   text[],
    on_delete  "char",     -- 'c' CASCADE, 'a' NO ACTION
    deferred   boolean     -- DEFERRABLE INITIALLY DEFERRED
) ON COMMIT DROP;

INSERT INTO ltst_citus_fkeys VALUES
    ('conversation_messages', 'conversation_messages_session_fkey',
     '{session_id,user_id}', 'conversation_sessions', '{session_id,user_id}', 'c', false),
    ('conversation_messages', 'conversation_messages_parent_message_id_fkey',
     '{parent_message_id,user_id}', 'conversation_messages', '{message_id,user_id}', 'a', true),
    ('conversation_context', 'conversation_context_session_fkey',
     '{session_id,user_id}', 'conversation_sessions', '{session_id,user_id}', 'c', false),
    ('session_summary', 'session_summary_session_id_fkey',
     '{session_id,user_id}', 'conversation_sessions', '{session_id,user_id}', 'c', false),
    ('session_relationships', 'session_relationships_source_session_id_fkey',
     '{source_session_id,user_id}', 'conversation_sessions', '{session_id,user_id}', 'c', false),
    ('session_relationships', 'session_relationships_target_session_id_fkey',
     '{target_session_id,user_id}', 'conversation_sessions', '{session_id,user_id}', 'c', false);

-- Columns of a constraint, in order.
CREATE TEMPORARY VIEW ltst_citus_constraints AS
SELECT c.conrelid::regclass::text AS tbl, c.conname::text AS con, c.contype, c.confrelid,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, pos)
               JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.pos) AS cols,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, pos)
               JOIN pg_attribute AS a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.pos) AS ref_cols,
       c.confdeltype, c.confupdtype, c.condeferrable, c.condeferred
FROM pg_constraint AS c
WHERE c.connamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'conversation_sessions'::regclass);

DO $$
DECLARE
    f record;
    k record;
BEGIN
    -- (a) drop the foreign keys that are not yet what they should be
    FOR f IN
        SELECT w.* FROM ltst_citus_fkeys AS w
        WHERE EXISTS (SELECT 1 FROM ltst_citus_constraints AS c WHERE c.tbl = w.tbl AND c.con = w.con)
          AND NOT EXISTS (
              SELECT 1 FROM ltst_citus_constraints AS c
              WHERE c.tbl = w.tbl AND c.con = w.con AND c.contype = 'f' AND c.cols = w.cols
                AND c.confrelid = w.ref::regclass AND c.ref_cols = w.ref_cols AND c.confdeltype = w.on_delete
                AND c.confupdtype = 'a' AND c.condeferrable = w.deferred AND c.condeferred = w.deferred)
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', f.tbl, f.con);
    END LOOP;

    -- (b) every primary key and unique constraint of a per-user table includes user_id
    FOR k IN
        SELECT w.* FROM (VALUES
            ('conversation_sessions', 'conversation_sessions_pkey', 'PRIMARY KEY', '{session_id,user_id}'::text[]),
            ('conversation_messages', 'conversation_messages_pkey', 'PRIMARY KEY', '{message_id,user_id}'),
            ('conversation_messages', 'conversation_messages_session_index_key', 'UNIQUE',
             '{session_id,message_index,user_id}'),
            ('conversation_messages', 'conversation_messages_uuid_key', 'UNIQUE', '{message_uuid,user_id}'),
            ('conversation_context', 'conversation_context_pkey', 'PRIMARY KEY', '{context_id,user_id}'),
            ('conversation_context', 'conversation_context_key', 'UNIQUE',
             '{session_id,context_type,context_key,user_id}'),
            ('session_summary', 'session_summary_pkey', 'PRIMARY KEY', '{session_id,user_id}'),
            ('session_relationships', 'session_relationships_pkey', 'PRIMARY KEY', '{relationship_id,user_id}'),
            ('session_relationships', 'session_relationships_key', 'UNIQUE',
             '{source_session_id,target_session_id,relationship_type,user_id}')
        ) AS w(tbl, con, kind, cols)
        WHERE NOT EXISTS (
            SELECT 1 FROM ltst_citus_constraints AS c
            WHERE c.tbl = w.tbl AND c.con = w.con AND c.cols = w.cols
              AND c.contype = CASE w.kind WHEN 'PRIMARY KEY' THEN 'p' ELSE 'u' END)
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I, ADD CONSTRAINT %I %s (%s)',
                       k.tbl, k.con, k.con, k.kind,
                       (SELECT string_agg(quote_ident(col), ', ') FROM unnest(k.cols) AS col));
    END LOOP;
    -- the primary key (session_id, user_id) makes 0001's UNIQUE (session_id, user_id) redundant
    IF EXISTS (SELECT 1 FROM ltst_citus_constraints
                WHERE tbl = 'conversation_sessions' AND con = 'conversation_sessions_session_user_key') THEN
        ALTER TABLE conversation_sessions DROP CONSTRAINT conversation_sessions_session_user_key;
    END IF;

    -- (c) add the foreign keys that are missing
    FOR f IN
        SELECT w.* FROM ltst_citus_fkeys AS w
        WHERE NOT EXISTS (SELECT 1 FROM ltst_citus_constraints AS c WHERE c.tbl = w.tbl AND c.con = w.con)
    LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%s) REFERENCES %I (%s) ON DELETE %s%s',
                       f.tbl, f.con,
                       (SELECT string_agg(quote_ident(col), ', ') FROM unnest(f.cols) AS col),
                       f.ref,
                       (SELECT string_agg(quote_ident(col), ', ') FROM unnest(f.ref_cols) AS col),
                       CASE f.on_delete WHEN 'c' THEN 'CASCADE' ELSE 'NO ACTION' END,
                       CASE WHEN f.deferred THEN ' DEFERRABLE INITIALLY DEFERRED' ELSE '' END);
    END LOOP;
END
$$;

DROP VIEW ltst_citus_constraints;

-- 3. Triggers ---------------------------------------------------------------------------------------------
-- The session summary triggers of 0001, keyed by (session_id, user_id) instead of session_id, and written
-- so that they also run on the shards of a Citus cluster:
--   * a transition table (new_sessions, new_messages, old_messages) is read once, by a query that names
--     no other table, into arrays: Citus plans every statement that names a distributed table itself and
--     cannot see a transition table from there ("could not find named tuplestore");
--   * the statements that write other tables name the user (one shard, the trigger's own) and call no
--     function in ON CONFLICT ... DO UPDATE (Citus wants IMMUTABLE functions there).
-- They stay statement-level: a batch of N messages still costs one summary update per session.

CREATE OR REPLACE FUNCTION ltst_sessions_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids   text[];
    users text[];
BEGIN
    SELECT array_agg(session_id), array_agg(user_id) INTO ids, users FROM new_sessions;
    INSERT INTO session_summary (session_id, user_id)
    SELECT r.session_id, r.user_id FROM unnest(ids, users) AS r(session_id, user_id)
    ON CONFLICT (session_id, user_id) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_messages_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := now();
    g record;
BEGIN
    FOR g IN
        SELECT session_id, user_id,
               count(*)                                AS total_messages,
               count(*) FILTER (WHERE role = 'human')  AS human_messages,
               count(*) FILTER (WHERE role = 'ai')     AS ai_messages,
               count(*) FILTER (WHERE role = 'system') AS system_messages,
               count(*) FILTER (WHERE role = 'tool')   AS tool_messages,
               min("timestamp") AS first_message_at, max("timestamp") AS last_message_at,
               sum(ltst_token_estimate(content))       AS total_tokens_estimate
          FROM new_messages
         GROUP BY session_id, user_id
         ORDER BY user_id, session_id
    LOOP
        INSERT INTO session_summary AS s (
            session_id, user_id, total_messages, human_messages, ai_messages, system_messages, tool_messages,
            first_message_at, last_message_at, total_tokens_estimate, updated_at)
        VALUES (g.session_id, g.user_id, g.total_messages, g.human_messages, g.ai_messages, g.system_messages,
                g.tool_messages, g.first_message_at, g.last_message_at, g.total_tokens_estimate, started)
        ON CONFLICT (session_id, user_id) DO UPDATE SET
            total_messages        = s.total_messages + EXCLUDED.total_messages,
            human_messages        = s.human_messages + EXCLUDED.human_messages,
            ai_messages           = s.ai_messages + EXCLUDED.ai_messages,
            system_messages       = s.system_messages + EXCLUDED.system_messages,
            tool_messages         = s.tool_messages + EXCLUDED.tool_messages,
            first_message_at      = LEAST(s.first_message_at, EXCLUDED.first_message_at),
            last_message_at       = GREATEST(s.last_message_at, EXCLUDED.last_message_at),
            total_tokens_estimate = s.total_tokens_estimate + EXCLUDED.total_tokens_estimate,
            updated_at            = EXCLUDED.updated_at;

        UPDATE conversation_sessions AS cs
           SET last_activity = GREATEST(cs.last_activity, started)
         WHERE cs.session_id = g.session_id AND cs.user_id = g.user_id;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_messages_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := now();
    d record;
BEGIN
    FOR d IN SELECT DISTINCT session_id, user_id FROM old_messages ORDER BY user_id, session_id LOOP
        UPDATE session_summary AS s
           SET total_messages        = c.total_messages,
               human_messages        = c.human_messages,
               ai_messages           = c.ai_messages,
               system_messages       = c.system_messages,
               tool_messages         = c.tool_messages,
               first_message_at      = c.first_message_at,
               last_message_at       = c.last_message_at,
               total_tokens_estimate = c.total_tokens_estimate,
               updated_at            = started
          FROM (
            SELECT count(m.message_id)                                  AS total_messages,
                   count(m.message_id) FILTER (WHERE m.role = 'human')  AS human_messages,
                   count(m.message_id) FILTER (WHERE m.role = 'ai')     AS ai_messages,
                   count(m.message_id) FILTER (WHERE m.role = 'system') AS system_messages,
                   count(m.message_id) FILTER (WHERE m.role = 'tool')   AS tool_messages,
                   min(m."timestamp")                                   AS first_message_at,
                   max(m."timestamp")                                   AS last_message_at,
                   coalesce(sum(ltst_token_estimate(m.content)), 0)     AS total_tokens_estimate
              FROM conversation_messages AS m
             WHERE m.session_id = d.session_id AND m.user_id = d.user_id
          ) AS c
         WHERE s.session_id = d.session_id AND s.user_id = d.user_id;
    END LOOP;
    RETURN NULL;
END;
$$;

-- What ON DELETE SET NULL (parent_message_id) did: replies of a deleted message keep no dangling parent.
-- (The deferred foreign key then finds no reply pointing at the deleted row when it is checked.)
CREATE OR REPLACE FUNCTION ltst_messages_clear_parent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT user_id, array_agg(message_id) AS ids FROM old_messages GROUP BY user_id ORDER BY user_id LOOP
        UPDATE conversation_messages AS m
           SET parent_message_id = NULL
         WHERE m.user_id = o.user_id AND m.parent_message_id = ANY(o.ids);
    END LOOP;
    RETURN NULL;
END;
$$;

-- The BM25 statistics triggers of 0002/0008, in the same way: the transition table is read into one array
-- of search vectors per user, then each user's rows are written by statements that name the user.
CREATE OR REPLACE FUNCTION ltst_apply_user_term_stats(p_user text, tsvs tsvector[], sign integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    terms text[];
BEGIN
    SELECT coalesce(sum(length(v.tsv)), 0) INTO total FROM unnest(tsvs) AS v(tsv);
    INSERT INTO ltst_user_stats AS s (user_id, doc_count, total_length)
    VALUES (p_user, sign * cardinality(tsvs), sign * total)
    ON CONFLICT (user_id) DO UPDATE SET
        doc_count = s.doc_count + EXCLUDED.doc_count,
        total_length = s.total_length + EXCLUDED.total_length;

    INSERT INTO ltst_term_stats AS s (user_id, term, doc_count)
    SELECT p_user, t.term, sign * count(*)
      FROM unnest(tsvs) AS v(tsv)
     CROSS JOIN LATERAL unnest(tsvector_to_array(v.tsv)) AS t(term)
     GROUP BY t.term
     ORDER BY t.term
    ON CONFLICT (user_id, term) DO UPDATE SET doc_count = s.doc_count + EXCLUDED.doc_count;

    IF sign < 0 THEN
        SELECT array_agg(DISTINCT t.term) INTO terms
          FROM unnest(tsvs) AS v(tsv) CROSS JOIN LATERAL unnest(tsvector_to_array(v.tsv)) AS t(term);
        DELETE FROM ltst_term_stats AS s
         WHERE s.user_id = p_user AND s.term = ANY(terms) AND s.doc_count <= 0;
        DELETE FROM ltst_user_stats AS s WHERE s.user_id = p_user AND s.doc_count <= 0;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    u record;
BEGIN
    FOR u IN SELECT user_id, array_agg(search_tsv) AS tsvs FROM new_messages GROUP BY user_id ORDER BY user_id LOOP
        PERFORM ltst_apply_user_term_stats(u.user_id, u.tsvs, 1);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    u record;
BEGIN
    FOR u IN SELECT user_id, array_agg(search_tsv) AS tsvs FROM old_messages GROUP BY user_id ORDER BY user_id LOOP
        PERFORM ltst_apply_user_term_stats(u.user_id, u.tsvs, -1);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION ltst_term_stats_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    u record;
BEGIN
    -- Only rows whose words changed (an update of the embedding alone costs nothing here); on a
    -- converted schema user_id is part of the key, so a row never changes owner.
    FOR u IN
        SELECT o.user_id, array_agg(o.search_tsv) AS old_tsvs, array_agg(n.search_tsv) AS new_tsvs
          FROM old_messages AS o JOIN new_messages AS n ON n.message_id = o.message_id AND n.user_id = o.user_id
         WHERE o.search_tsv IS DISTINCT FROM n.search_tsv
         GROUP BY o.user_id ORDER BY o.user_id
    LOOP
        PERFORM ltst_apply_user_term_stats(u.user_id, u.old_tsvs, -1);
        PERFORM ltst_apply_user_term_stats(u.user_id, u.new_tsvs, 1);
    END LOOP;
    RETURN NULL;
END;
$$;

-- A relationship stored without user_id (the library of 0.1 names only the two sessions) gets the owner
-- of its source session. On a Citus cluster the coordinator needs user_id in the INSERT itself to route
-- the row, so there the writer must pass it (docs/citus.md); on one server this keeps old writers working.
CREATE OR REPLACE FUNCTION ltst_relationships_fill_user() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    owners text[];
BEGIN
    IF NEW.user_id IS NULL THEN
        SELECT array_agg(DISTINCT s.user_id) INTO owners
          FROM conversation_sessions AS s WHERE s.session_id = NEW.source_session_id;
        IF coalesce(cardinality(owners), 0) = 0 THEN
            RAISE EXCEPTION 'session % does not exist', NEW.source_session_id
                USING ERRCODE = 'foreign_key_violation';
        ELSIF cardinality(owners) > 1 THEN
            RAISE EXCEPTION 'session id % belongs to several users: store the relationship with its user_id',
                NEW.source_session_id USING ERRCODE = 'cardinality_violation';
        END IF;
        NEW.user_id := owners[1];
    END IF;
    RETURN NEW;
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'conversation_messages'::regclass
                                              AND tgname = 'trg_messages_clear_parent') THEN
        CREATE TRIGGER trg_messages_clear_parent
            AFTER DELETE ON conversation_messages
            REFERENCING OLD TABLE AS old_messages
            FOR EACH STATEMENT EXECUTE FUNCTION ltst_messages_clear_parent();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'session_relationships'::regclass
                                              AND tgname = 'trg_relationships_fill_user') THEN
        CREATE TRIGGER trg_relationships_fill_user
            BEFORE INSERT ON session_relationships
            FOR EACH ROW EXECUTE FUNCTION ltst_relationships_fill_user();
    END IF;
END
$$;

-- The term indexes of 0016 are not built on a cluster: their triggers (whose statements read the transition
-- table beside other tables, which a distributed table does not allow) go.
DROP TRIGGER IF EXISTS trg_messages_lexical_delete ON conversation_messages;
DROP TRIGGER IF EXISTS trg_messages_lexical_update ON conversation_messages;

-- 4. Erasure of a user and Row Level Security, by user_id ---------------------------------------------------
-- 0005's ltst_delete_user reached summaries and relationships through the user's sessions; now every
-- per-user table has user_id, so each DELETE names the user (one shard on Citus).

-- With migration 0009 applied, its ltst_delete_user (which names the library's tables, and erases by
-- user_id where a table has it) is kept; before 0009, this version.
DO $do$
BEGIN
    IF to_regclass('ltst_owned_tables') IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION ltst_delete_user(p_user_id text)
RETURNS TABLE (kind text, removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n bigint;
BEGIN
    -- lock the user's sessions first: writers to them wait, then find them gone
    PERFORM 1 FROM conversation_sessions AS s WHERE s.user_id = p_user_id ORDER BY s.session_id FOR UPDATE;

    FOR t IN
        SELECT c.oid::regclass AS tbl, c.relname::text AS name
          FROM pg_class AS c
          JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'p')
           AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'conversation_sessions'::regclass)
           AND c.relname <> 'conversation_sessions'
         ORDER BY CASE c.relname WHEN 'conversation_messages' THEN 0 WHEN 'conversation_context' THEN 1 ELSE 2 END,
                  c.relname
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
$sql$;
END
$do$;

-- Retention over every user (0009's function, SECURITY DEFINER): the rows to delete are chosen by a
-- SELECT (materialized) and deleted by key, and joins pair user_id. On Citus an UPDATE or DELETE may not
-- call a STABLE function (timestamptz arithmetic is one) on column values; a SELECT may.
DO $do$
BEGIN
    IF to_regprocedure('ltst_cleanup_expired_data()') IS NULL THEN
        RETURN;  -- before 0009
    END IF;
    EXECUTE $sql$
CREATE OR REPLACE FUNCTION ltst_cleanup_expired_data(OUT context bigint, OUT messages bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    n bigint;
BEGIN
    WITH doomed AS MATERIALIZED (
        SELECT c.user_id, c.context_id FROM conversation_context AS c
         WHERE c.expires_at IS NOT NULL AND c.expires_at <= now()
    )
    DELETE FROM conversation_context AS c USING doomed AS d
     WHERE c.user_id = d.user_id AND c.context_id = d.context_id;
    GET DIAGNOSTICS context = ROW_COUNT;
    WITH doomed AS MATERIALIZED (
        SELECT c.user_id, c.context_id
          FROM conversation_context AS c
          JOIN conversation_sessions AS s ON s.session_id = c.session_id AND s.user_id = c.user_id
         CROSS JOIN LATERAL (SELECT p.context_days AS days FROM ltst_retention_policies AS p
                              WHERE p.user_id IN (s.user_id, '') AND p.session_type IN (s.session_type, '')
                              ORDER BY (p.user_id <> '') DESC, (p.session_type <> '') DESC LIMIT 1) AS policy
         WHERE policy.days IS NOT NULL AND c.updated_at < now() - make_interval(days => policy.days)
    )
    DELETE FROM conversation_context AS c USING doomed AS d
     WHERE c.user_id = d.user_id AND c.context_id = d.context_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    context := context + n;
    WITH doomed AS MATERIALIZED (
        SELECT m.user_id, m.message_id
          FROM conversation_messages AS m
          JOIN conversation_sessions AS s ON s.session_id = m.session_id AND s.user_id = m.user_id
         CROSS JOIN LATERAL (SELECT p.message_days AS days FROM ltst_retention_policies AS p
                              WHERE p.user_id IN (s.user_id, '') AND p.session_type IN (s.session_type, '')
                              ORDER BY (p.user_id <> '') DESC, (p.session_type <> '') DESC LIMIT 1) AS policy
         WHERE policy.days IS NOT NULL AND m."timestamp" < now() - make_interval(days => policy.days)
    )
    DELETE FROM conversation_messages AS m USING doomed AS d
     WHERE m.user_id = d.user_id AND m.message_id = d.message_id;
    GET DIAGNOSTICS messages = ROW_COUNT;
END;
$$;
$sql$;
    EXECUTE format('ALTER FUNCTION ltst_cleanup_expired_data() SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE c.oid = 'conversation_sessions'::regclass));
END
$do$;

-- 0005 gave these two tables policies that look the owner up in conversation_sessions; now they carry
-- user_id and get the same policy as every other per-user table (skipped when already so).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['session_summary', 'session_relationships'] LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_policy AS p, pg_policy AS model
             WHERE p.polrelid = t::regclass AND p.polname = 'ltst_user_isolation'
               AND model.polrelid = 'conversation_sessions'::regclass AND model.polname = 'ltst_user_isolation'
               AND pg_get_expr(p.polqual, p.polrelid) = pg_get_expr(model.polqual, model.polrelid)
               AND pg_get_expr(p.polwithcheck, p.polrelid) = pg_get_expr(model.polwithcheck, model.polrelid)) THEN
            PERFORM ltst_enable_rls(t::regclass);
        END IF;
    END LOOP;
END
$$;

-- 5. The distribution plan ----------------------------------------------------------------------------------
-- In the order Citus needs: reference tables first, then each co-location group's first table, then the
-- tables that reference it.
--   reference, small and global:
--     ltst_migrations          which migrations ran (read by every store that opens)
--     ltst_metadata            the embedding model and dimension (read by every store that opens)
--     ltst_retention_policies  a few rows per user at most, and the policies of "any user" ('') apply to
--                              every user's rows: replicated, the retention sweep joins them locally on
--                              every shard
--   distributed by user_id, co-located with conversation_sessions: every per-user table
--   distributed by collection: the LangChain vector store (a collection and its documents on one shard)
--   distributed by ns_path: the LangGraph store (a namespace and its vectors on one shard)
CREATE OR REPLACE FUNCTION ltst_citus_tables()
RETURNS TABLE (step integer, table_name text, method text, distribution_column text, colocate_with text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES
        (1,  'ltst_migrations',         'reference',   NULL,         NULL),
        (2,  'ltst_metadata',           'reference',   NULL,         NULL),
        (3,  'ltst_retention_policies', 'reference',   NULL,         NULL),
        (4,  'conversation_sessions',   'distributed', 'user_id',    'none'),
        (5,  'conversation_messages',   'distributed', 'user_id',    'conversation_sessions'),
        (6,  'conversation_context',    'distributed', 'user_id',    'conversation_sessions'),
        (7,  'session_summary',         'distributed', 'user_id',    'conversation_sessions'),
        (8,  'session_relationships',   'distributed', 'user_id',    'conversation_sessions'),
        (9,  'user_preferences',        'distributed', 'user_id',    'conversation_sessions'),
        (10, 'ltst_term_stats',         'distributed', 'user_id',    'conversation_sessions'),
        (11, 'ltst_user_stats',         'distributed', 'user_id',    'conversation_sessions'),
        (12, 'ltst_collections',        'distributed', 'collection', 'none'),
        (13, 'ltst_documents',          'distributed', 'collection', 'ltst_collections'),
        (14, 'ltst_store_items',        'distributed', 'ns_path',    'none'),
        (15, 'ltst_store_vectors',      'distributed', 'ns_path',    'ltst_store_items'),
        (16, 'ltst_owned_tables',       'reference',   NULL,         NULL),  -- 0009: the library's table list
        (17, 'ltst_pinned_roles',       'reference',   NULL,         NULL),  -- 0009: roles pinned to a user
        -- 0016: the users' term indexes (never built on a cluster: empty, distributed like every per-user table)
        (18, 'ltst_lexical_postings',   'distributed', 'user_id',    'conversation_sessions'),
        (19, 'ltst_lexical_indexes',    'distributed', 'user_id',    'conversation_sessions'),
        -- 0018: the single append's pending term statistics (a cluster's store appends through the
        -- triggers: empty, distributed like every per-user table)
        (20, 'ltst_term_pending',       'distributed', 'user_id',    'conversation_sessions')
$$;

INSERT INTO ltst_metadata (key, value) VALUES ('citus_distribution_column', 'user_id')
ON CONFLICT (key) DO NOTHING;

COMMIT;

-- 6. Distribute (only with the citus extension) ----------------------------------------------------------
-- One statement, so atomic. Tables already known to Citus are skipped, so a second run does nothing.
-- The summary and term-statistics triggers write co-located rows only (same user_id, so same shard);
-- Citus runs triggers on distributed tables only with citus.enable_unsafe_triggers, for this database.
DO $$
DECLARE
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE NOTICE 'ltst-memory: schema ready for Citus; the citus extension is not installed, tables stay local';
        RETURN;
    END IF;
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    EXECUTE format('ALTER DATABASE %I SET citus.enable_unsafe_triggers = on', current_database());
    -- A user-scoped store names its user with SET LOCAL ltst.user_id (the key of the RLS policies): Citus
    -- sends SET LOCAL on to the workers of the transaction with this setting (set_config it does not).
    EXECUTE format('ALTER DATABASE %I SET citus.propagate_set_commands = local', current_database());
    -- The search settings the library sets per transaction with set_config (ivfflat.probes 10, iterative
    -- scans) stay on the coordinator; the shards' scans run on the workers with the database's defaults:
    -- the library's defaults there too (Citus sends ALTER DATABASE ... SET on to every node).
    EXECUTE format('ALTER DATABASE %I SET ivfflat.iterative_scan = relaxed_order', current_database());
    EXECUTE format('ALTER DATABASE %I SET ivfflat.probes = 10', current_database());
    -- Citus refuses subqueries in the policies of distributed and reference tables: the policy calls
    -- ltst_policy_user() directly (once per row instead of once per statement; on a cluster the
    -- per-user statements are routed to one shard, so few rows pass the policy anyway).
    CREATE OR REPLACE FUNCTION ltst_enable_rls(tbl regclass) RETURNS void
    LANGUAGE plpgsql AS $f$
    BEGIN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('DROP POLICY IF EXISTS ltst_user_isolation ON %s', tbl);
        EXECUTE format(
            'CREATE POLICY ltst_user_isolation ON %s '
            'USING (user_id = ltst_policy_user()) WITH CHECK (user_id = ltst_policy_user())', tbl);
    END;
    $f$;
    FOR t IN SELECT p.polrelid::regclass AS tbl FROM pg_policy AS p
              WHERE p.polname = 'ltst_user_isolation'
                AND pg_get_expr(p.polqual, p.polrelid) <> '(user_id = ltst_policy_user())'
                AND NOT EXISTS (SELECT 1 FROM pg_dist_partition AS d WHERE d.logicalrelid = p.polrelid) LOOP
        PERFORM ltst_enable_rls(t.tbl);
    END LOOP;
    -- ltst_delete_user reads reference tables on the coordinator (local execution) and then deletes
    -- by user_id from tables distributed by another column (the adapters'), which Citus would run
    -- over parallel connections and refuses after a local execution: one connection per node instead.
    ALTER FUNCTION ltst_delete_user(text) SET citus.multi_shard_modify_mode = 'sequential';
    -- The policies' function reads the reference table ltst_pinned_roles from inside a shard's query on
    -- a worker: a read of the node's own placement, which Citus refuses as a nested distributed query
    -- unless the function allows it.
    ALTER FUNCTION ltst_policy_user() SET citus.allow_nested_distributed_execution = on;
    -- The ANALYZE after an erasure: only the distributed tables are analyzed (Citus sends it on to every
    -- shard); autovacuum refreshes the reference tables'. ANALYZE of a shard it finds empty keeps the
    -- shard's statistics, and an erasure often empties a user's shard: the column statistics of every
    -- empty shard of the table are cleared there first (pg_clear_attribute_stats, PostgreSQL 18), by a
    -- command Citus runs on the workers over connections of its own, as the function's owner: the
    -- erasure must have committed (delete_user commits before it analyzes), and the caller's
    -- transaction must hold no lock on the shards (the ANALYZE comes after).
    CREATE OR REPLACE FUNCTION ltst_analyze_owned_tables(p_tables text[]) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER AS $f$
    DECLARE
        t text;
        failed text;
    BEGIN
        FOR t IN SELECT o.table_name FROM ltst_owned_tables AS o
                  WHERE o.table_name = ANY(p_tables) AND to_regclass(o.table_name) IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM pg_dist_partition AS d
                                     WHERE d.logicalrelid = to_regclass(o.table_name) AND d.partmethod = 'n')
                  ORDER BY o.table_name
        LOOP
            IF to_regprocedure('pg_clear_attribute_stats(text,text,text,boolean)') IS NOT NULL
               AND EXISTS (SELECT 1 FROM pg_dist_partition AS d WHERE d.logicalrelid = t::regclass) THEN
                SELECT string_agg(r.shardid || ': ' || r.result, '; ') INTO failed
                FROM run_command_on_shards(t::regclass, $c$
                    DO $d$ BEGIN
                        IF NOT EXISTS (SELECT FROM %1$s) THEN
                            PERFORM pg_clear_attribute_stats(n.nspname::text, c.relname::text, a.attname::text, false)
                            FROM pg_class AS c
                            JOIN pg_namespace AS n ON n.oid = c.relnamespace
                            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            WHERE c.oid = %1$L::regclass;
                        END IF;
                    END $d$ $c$) AS r
                WHERE NOT r.success;
                IF failed IS NOT NULL THEN
                    RAISE WARNING 'ltst_analyze_owned_tables: statistics of empty shards of % not cleared: %', t, failed;
                END IF;
            END IF;
            EXECUTE format('ANALYZE %s', t::regclass);
        END LOOP;
    END;
    $f$;
    EXECUTE format('ALTER FUNCTION ltst_analyze_owned_tables(text[]) SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                     WHERE c.oid = 'conversation_sessions'::regclass));
    FOR t IN SELECT * FROM ltst_citus_tables() ORDER BY step LOOP
        CONTINUE WHEN to_regclass(t.table_name) IS NULL;  -- a table of a later migration not applied yet
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t.table_name::regclass);
        IF t.method = 'reference' THEN
            PERFORM create_reference_table(t.table_name::regclass);
        ELSE
            PERFORM create_distributed_table(t.table_name::regclass, t.distribution_column,
                                             colocate_with => t.colocate_with);
        END IF;
    END LOOP;
END
$$;
