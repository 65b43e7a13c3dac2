-- ltst-memory schema, version 0017: the session summary trigger of an append in one statement.
--
-- Idempotent: safe to apply twice, by `ltst migrate` or `psql -d DB -v ON_ERROR_STOP=1 -f 0017_append_path.sql`.
--
-- 0001's statement-level trigger kept session_summary and conversation_sessions.last_activity current
-- with two statements, and its UPDATE wrote a new version of every session row, even when last_activity
-- was already now(). last_activity is in idx_sessions_user_activity, so each such version is a non-HOT
-- update: a new entry in each of the sessions' four indexes. The trigger now runs one statement (the
-- activity UPDATE is a data-modifying CTE of the summary's upsert) and leaves a row whose last_activity
-- is already now() alone. The store's append statements (ltst_memory/_queries.py, INSERT_MESSAGE and
-- INSERT_MESSAGES_ONE_SESSION) set last_activity in the UPDATE that reserves the message indexes, so an
-- append writes one version of its session row instead of two. Same summaries, same last_activity
-- (GREATEST of the old value and now(), as before), for every insert, the store's or not.
-- A Citus cluster keeps its own version of the function (schema/citus/distribute.sql, applied again
-- after each migration).

CREATE OR REPLACE FUNCTION ltst_messages_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH activity AS (
        UPDATE conversation_sessions AS cs
           SET last_activity = now()
          FROM (SELECT DISTINCT session_id FROM new_messages) AS n
         WHERE cs.session_id = n.session_id AND cs.last_activity < now()
    )
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
    RETURN NULL;
END;
$$;
