-- ltst-memory schema, version 0001: the six LTST tables, triggers and indexes.
--
-- Idempotent: every statement is IF NOT EXISTS / OR REPLACE / DROP IF EXISTS + CREATE, so the file can
-- be applied twice, by `ltst migrate` or by hand with `psql -d DB -v ON_ERROR_STOP=1 -f 0001_ltst_schema.sql`.
-- The embedding column is vector(384) (all-MiniLM-L6-v2); a store opened on an empty database with a
-- model of another dimension resizes it (see ltst_memory/migrate.py).

CREATE EXTENSION IF NOT EXISTS vector;

-- Bookkeeping ---------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ltst_migrations (
    name        text PRIMARY KEY,
    checksum    text,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ltst_metadata (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO ltst_metadata (key, value) VALUES
    ('embedding_model', 'all-MiniLM-L6-v2'),
    ('embedding_dimension', '384')
ON CONFLICT (key) DO NOTHING;

-- Sessions ------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS conversation_sessions (
    session_id          text PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 255),
    user_id             text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    session_name        text,
    session_type        text NOT NULL DEFAULT 'conversation',
    status              text NOT NULL DEFAULT 'active',
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    context_summary     text,
    relevance_score     double precision NOT NULL DEFAULT 0.0,
    next_message_index  integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_activity       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_sessions_session_user_key UNIQUE (session_id, user_id)
);

CREATE INDEX IF NOT EXISTS idx_sessions_user_activity
    ON conversation_sessions (user_id, last_activity DESC);
CREATE INDEX IF NOT EXISTS idx_sessions_metadata
    ON conversation_sessions USING gin (metadata jsonb_path_ops);

-- Messages ------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS conversation_messages (
    message_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_uuid        uuid NOT NULL DEFAULT gen_random_uuid(),
    session_id          text NOT NULL,
    user_id             text NOT NULL,
    role                text NOT NULL CHECK (role IN ('human', 'ai', 'system', 'tool')),
    content             text NOT NULL,
    message_type        text NOT NULL DEFAULT 'message',
    message_index       integer NOT NULL CHECK (message_index >= 0),
    parent_message_id   bigint REFERENCES conversation_messages (message_id) ON DELETE SET NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding           vector(384),
    relevance_score     double precision NOT NULL DEFAULT 0.0,
    is_context_message  boolean NOT NULL DEFAULT false,
    "timestamp"         timestamptz NOT NULL DEFAULT now(),
    content_tsv         tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', coalesce(metadata ->> 'speaker', '')), 'A')
        || to_tsvector('english', content)
    ) STORED,
    CONSTRAINT conversation_messages_session_fkey FOREIGN KEY (session_id, user_id)
        REFERENCES conversation_sessions (session_id, user_id) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT conversation_messages_session_index_key UNIQUE (session_id, message_index),
    CONSTRAINT conversation_messages_uuid_key UNIQUE (message_uuid)
);

CREATE INDEX IF NOT EXISTS idx_messages_user_time
    ON conversation_messages (user_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS idx_messages_parent
    ON conversation_messages (parent_message_id) WHERE parent_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_messages_embedding_hnsw
    ON conversation_messages USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX IF NOT EXISTS idx_messages_content_tsv
    ON conversation_messages USING gin (content_tsv);
CREATE INDEX IF NOT EXISTS idx_messages_metadata
    ON conversation_messages USING gin (metadata jsonb_path_ops);
CREATE INDEX IF NOT EXISTS idx_messages_content_hash
    ON conversation_messages USING hash (content);

-- Context -------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS conversation_context (
    context_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id       text NOT NULL,
    user_id          text NOT NULL,
    context_type     text NOT NULL,
    context_key      text NOT NULL,
    context_value    text NOT NULL,
    relevance_score  double precision NOT NULL DEFAULT 0.0,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_context_session_fkey FOREIGN KEY (session_id, user_id)
        REFERENCES conversation_sessions (session_id, user_id) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT conversation_context_key UNIQUE (session_id, context_type, context_key)
);

CREATE INDEX IF NOT EXISTS idx_context_session_relevance
    ON conversation_context (session_id, context_type, relevance_score DESC);
CREATE INDEX IF NOT EXISTS idx_context_user
    ON conversation_context (user_id);
CREATE INDEX IF NOT EXISTS idx_context_expires
    ON conversation_context (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_context_metadata
    ON conversation_context USING gin (metadata jsonb_path_ops);

-- User preferences ----------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS user_preferences (
    user_id           text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    preference_key    text NOT NULL,
    preference_value  jsonb NOT NULL,
    preference_type   text NOT NULL DEFAULT 'general',
    confidence_score  double precision NOT NULL DEFAULT 1.0,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_sensitive      boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, preference_key)
);

CREATE INDEX IF NOT EXISTS idx_preferences_user_type
    ON user_preferences (user_id, preference_type);

-- Session relationships -----------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS session_relationships (
    relationship_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_session_id      text NOT NULL REFERENCES conversation_sessions (session_id) ON DELETE CASCADE,
    target_session_id      text NOT NULL REFERENCES conversation_sessions (session_id) ON DELETE CASCADE,
    relationship_type      text NOT NULL DEFAULT 'related',
    relationship_strength  double precision NOT NULL DEFAULT 0.5,
    metadata               jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT session_relationships_distinct CHECK (source_session_id <> target_session_id),
    CONSTRAINT session_relationships_key UNIQUE (source_session_id, target_session_id, relationship_type)
);

CREATE INDEX IF NOT EXISTS idx_relationships_target
    ON session_relationships (target_session_id);

-- Session summary -----------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS session_summary (
    session_id             text PRIMARY KEY REFERENCES conversation_sessions (session_id) ON DELETE CASCADE,
    total_messages         integer NOT NULL DEFAULT 0,
    human_messages         integer NOT NULL DEFAULT 0,
    ai_messages            integer NOT NULL DEFAULT 0,
    system_messages        integer NOT NULL DEFAULT 0,
    tool_messages          integer NOT NULL DEFAULT 0,
    first_message_at       timestamptz,
    last_message_at        timestamptz,
    total_tokens_estimate  bigint NOT NULL DEFAULT 0,
    summary                text,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- Triggers ------------------------------------------------------------------------------------------
-- Statement-level with transition tables: a batch of N messages costs one summary update, not N.

-- Rough token estimate used by the summary: about four characters per token.
CREATE OR REPLACE FUNCTION ltst_token_estimate(content text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ceil(length(content) / 4.0)::bigint $$;

CREATE OR REPLACE FUNCTION ltst_sessions_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_summary (session_id)
    SELECT session_id FROM new_sessions
    ON CONFLICT (session_id) DO NOTHING;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS trg_sessions_summary_row ON conversation_sessions;
CREATE TRIGGER trg_sessions_summary_row
    AFTER INSERT ON conversation_sessions
    REFERENCING NEW TABLE AS new_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_sessions_after_insert();

CREATE OR REPLACE FUNCTION ltst_messages_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_summary AS s (
        session_id, total_messages, human_messages, ai_messages, system_messages, tool_messages,
        first_message_at, last_message_at, total_tokens_estimate, updated_at)
    SELECT session_id,
           count(*),
           count(*) FILTER (WHERE role = 'human'),
           count(*) FILTER (WHERE role = 'ai'),
           count(*) FILTER (WHERE role = 'system'),
           count(*) FILTER (WHERE role = 'tool'),
           min("timestamp"), max("timestamp"),
           sum(ltst_token_estimate(content)),
           now()
    FROM new_messages
    GROUP BY session_id
    ON CONFLICT (session_id) DO UPDATE SET
        total_messages        = s.total_messages + EXCLUDED.total_messages,
        human_messages        = s.human_messages + EXCLUDED.human_messages,
        ai_messages           = s.ai_messages + EXCLUDED.ai_messages,
        system_messages       = s.system_messages + EXCLUDED.system_messages,
        tool_messages         = s.tool_messages + EXCLUDED.tool_messages,
        first_message_at      = LEAST(s.first_message_at, EXCLUDED.first_message_at),
        last_message_at       = GREATEST(s.last_message_at, EXCLUDED.last_message_at),
        total_tokens_estimate = s.total_tokens_estimate + EXCLUDED.total_tokens_estimate,
        updated_at            = now();

    UPDATE conversation_sessions AS cs
       SET last_activity = GREATEST(cs.last_activity, now())
      FROM (SELECT DISTINCT session_id FROM new_messages) AS n
     WHERE cs.session_id = n.session_id;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS trg_messages_after_insert ON conversation_messages;
CREATE TRIGGER trg_messages_after_insert
    AFTER INSERT ON conversation_messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_messages_after_insert();

-- After a delete, recount the sessions that still exist (a cascaded session delete has already
-- removed their summary row, so the UPDATE finds nothing to do for them).
CREATE OR REPLACE FUNCTION ltst_messages_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE session_summary AS s
       SET total_messages        = c.total_messages,
           human_messages        = c.human_messages,
           ai_messages           = c.ai_messages,
           system_messages       = c.system_messages,
           tool_messages         = c.tool_messages,
           first_message_at      = c.first_message_at,
           last_message_at       = c.last_message_at,
           total_tokens_estimate = c.total_tokens_estimate,
           updated_at            = now()
      FROM (
        SELECT d.session_id,
               count(m.message_id)                                  AS total_messages,
               count(m.message_id) FILTER (WHERE m.role = 'human')  AS human_messages,
               count(m.message_id) FILTER (WHERE m.role = 'ai')     AS ai_messages,
               count(m.message_id) FILTER (WHERE m.role = 'system') AS system_messages,
               count(m.message_id) FILTER (WHERE m.role = 'tool')   AS tool_messages,
               min(m."timestamp")                                   AS first_message_at,
               max(m."timestamp")                                   AS last_message_at,
               coalesce(sum(ltst_token_estimate(m.content)), 0)     AS total_tokens_estimate
          FROM (SELECT DISTINCT session_id FROM old_messages) AS d
          LEFT JOIN conversation_messages AS m ON m.session_id = d.session_id
         GROUP BY d.session_id
      ) AS c
     WHERE s.session_id = c.session_id;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS trg_messages_after_delete ON conversation_messages;
CREATE TRIGGER trg_messages_after_delete
    AFTER DELETE ON conversation_messages
    REFERENCING OLD TABLE AS old_messages
    FOR EACH STATEMENT EXECUTE FUNCTION ltst_messages_after_delete();
