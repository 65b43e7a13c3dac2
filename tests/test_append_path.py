"""What an append keeps current (schema/0017_append_path.sql, _queries.INSERT_MESSAGE): the session
summary, last_activity and the BM25 statistics, for one message and for a batch, through the store and
through plain SQL, after deletes (and, for the statistics, updates) too: always what a recount of the
messages gives."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from _helpers import TERM_STATS_KEPT, USER_STATS_KEPT

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

RECOUNT = """
SELECT count(*) AS total_messages,
       count(*) FILTER (WHERE role = 'human') AS human_messages,
       count(*) FILTER (WHERE role = 'ai') AS ai_messages,
       count(*) FILTER (WHERE role = 'system') AS system_messages,
       count(*) FILTER (WHERE role = 'tool') AS tool_messages,
       min("timestamp") AS first_message_at, max("timestamp") AS last_message_at,
       coalesce(sum(ceil(length(content) / 4.0)), 0)::bigint AS total_tokens_estimate
FROM conversation_messages WHERE session_id = %(session_id)s
"""
STORED = """
SELECT total_messages, human_messages, ai_messages, system_messages, tool_messages, first_message_at,
       last_message_at, total_tokens_estimate
FROM session_summary WHERE session_id = %(session_id)s
"""
TERMS_RECOUNT = """
SELECT user_id, t.term, count(*) FROM conversation_messages, unnest(tsvector_to_array(search_tsv)) AS t(term)
GROUP BY user_id, t.term ORDER BY 1, 2
"""
USERS_RECOUNT = """
SELECT user_id, count(*), sum(length(search_tsv)) FROM conversation_messages GROUP BY user_id ORDER BY 1
"""


def _summary_matches(conn: psycopg.Connection[Any], session_id: str) -> None:
    assert conn.execute(STORED, {"session_id": session_id}).fetchone() == conn.execute(
        RECOUNT, {"session_id": session_id}
    ).fetchone()


def _statistics_match(conn: psycopg.Connection[Any]) -> None:
    terms = conn.execute(TERM_STATS_KEPT).fetchall()
    assert terms == conn.execute(TERMS_RECOUNT).fetchall()
    users = conn.execute(USER_STATS_KEPT).fetchall()
    assert users == conn.execute(USERS_RECOUNT).fetchall()


def _activity(conn: psycopg.Connection[Any], session_id: str) -> datetime:
    row = conn.execute("SELECT last_activity FROM conversation_sessions WHERE session_id = %s", (session_id,))
    return row.fetchone()[0]  # type: ignore[index,no-any-return]


def _same_moment(activity: datetime, appended: datetime | None) -> bool:
    """The session's last_activity is the append's now(): the same instant on one server; on a Citus
    cluster the trigger runs in the worker's own transaction, whose now() is a little later."""
    assert appended is not None
    if os.environ.get("LTST_TEST_CITUS_DSN"):
        return appended <= activity < appended + timedelta(seconds=5)
    return activity == appended


def test_one_message_and_a_batch_keep_the_summary_activity_and_statistics_current(
    store: ConversationStorage, database_dsn: str
) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    store.create_session(ConversationSession("s2", "alice"))
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        created = _activity(conn, "s1")
        one = store.store_message(ConversationMessage("s1", "human", "the weather is fine today"))
        assert one.message_index == 0 and one.timestamp is not None
        _summary_matches(conn, "s1")
        assert _same_moment(_activity(conn, "s1"), one.timestamp) and one.timestamp > created  # the append's now()
        old = datetime(2020, 1, 1, tzinfo=timezone.utc)
        batch = store.store_messages(
            [
                ConversationMessage("s1", "ai", "a fine day for a walk with the dog"),
                ConversationMessage("s1", "tool", "{'temperature': 21}"),
                ConversationMessage("s1", "system", "be brief", timestamp=old),
            ]
        )
        assert [m.message_index for m in batch] == [1, 2, 3]
        _summary_matches(conn, "s1")
        summary = store.get_session_summary("s1")
        assert (summary.total_messages, summary.first_message_at) == (4, old)
        assert _same_moment(_activity(conn, "s1"), batch[0].timestamp)  # now(), not the message's own timestamp
        assert _activity(conn, "s2") < _activity(conn, "s1")  # untouched
        lone = store.store_message(ConversationMessage("s2", "human", "old", timestamp=old))
        assert lone.timestamp == old and _activity(conn, "s2") > old
        _summary_matches(conn, "s2")
        _statistics_match(conn)


def test_plain_sql_inserts_deletes_and_updates_keep_them_current(
    store: ConversationStorage, database_dsn: str
) -> None:
    """The triggers, not the store's statements, are what keeps them: an INSERT written by hand (one
    row, several rows of two sessions), a DELETE and an UPDATE of the content."""
    store.create_session(ConversationSession("s1", "alice"))
    store.create_session(ConversationSession("s2", "bob"))
    store.store_messages([ConversationMessage("s1", "human", f"hello number {i}") for i in range(3)])
    insert = (
        "INSERT INTO conversation_messages (session_id, user_id, role, content, message_index) VALUES {}"
    )
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        before = _activity(conn, "s2")
        conn.execute(insert.format("('s2', 'bob', 'ai', 'a reply by hand', 0)"))
        assert _activity(conn, "s2") > before
        conn.execute(
            insert.format(
                "('s1', 'alice', 'ai', 'two rows by hand', 3), ('s2', 'bob', 'human', 'and the other session', 1)"
            )
        )
        for session_id in ("s1", "s2"):
            _summary_matches(conn, session_id)
        _statistics_match(conn)
        conn.execute("DELETE FROM conversation_messages WHERE session_id = 's1' AND message_index = 1")
        for session_id in ("s1", "s2"):
            _summary_matches(conn, session_id)
        conn.execute("UPDATE conversation_messages SET content = 'quite different words' WHERE session_id = 's2'")
        _statistics_match(conn)  # (the summary is kept on insert and delete: an edit keeps its token estimate)


def test_last_activity_never_goes_back(store: ConversationStorage, database_dsn: str) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    later = datetime.now(timezone.utc) + timedelta(days=1)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("UPDATE conversation_sessions SET last_activity = %s WHERE session_id = 's1'", (later,))
        store.store_message(ConversationMessage("s1", "human", "one"))
        store.store_messages([ConversationMessage("s1", "human", "two"), ConversationMessage("s1", "ai", "three")])
        assert _activity(conn, "s1") == later
        _summary_matches(conn, "s1")


@pytest.mark.parametrize("count", [1, 2])
def test_an_append_to_a_session_that_does_not_exist_stores_nothing(store: ConversationStorage, count: int) -> None:
    from ltst_memory import SessionNotFoundError

    with pytest.raises(SessionNotFoundError):
        store.store_messages([ConversationMessage("nope", "human", f"m {i}") for i in range(count)])
    assert store.get_user_sessions("alice") == []


def test_the_stored_words_are_the_speaker_weighted_a_and_the_content(
    store: ConversationStorage, database_dsn: str
) -> None:
    """search_tsv (ltst_search_tsv, PL/pgSQL since schema/0020) holds the speaker's words at weight A and the
    content's, for a single append, a batch, a plain SQL insert and an edit: what the built-in expression
    gives for the same text."""
    store.create_session(ConversationSession("s1", "alice"))
    store.store_message(
        ConversationMessage("s1", "human", "Running dogs were barking", metadata={"speaker": "Melanie"})
    )
    store.store_messages(
        [
            ConversationMessage("s1", "ai", "The cats sat quietly"),
            ConversationMessage("s1", "human", "the and of", metadata={"speaker": "Caroline Jones"}),
        ]
    )
    expected = """
    SELECT message_index, search_tsv::text,
           (setweight(to_tsvector('english', coalesce(metadata ->> 'speaker', '')), 'A')
            || to_tsvector('english', content))::text
    FROM conversation_messages WHERE session_id = 's1' ORDER BY message_index
    """
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO conversation_messages (session_id, user_id, role, content, message_index, metadata)"
            " VALUES ('s1', 'alice', 'ai', 'Jumped over fences', 3, '{\"speaker\": \"Bob\"}')"
        )
        conn.execute("UPDATE conversation_messages SET content = 'Singing loudly' WHERE message_index = 1")
        rows = conn.execute(expected).fetchall()
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    assert all(stored == built for _, stored, built in rows)
    assert rows[0][1] == "'bark':5 'dog':3 'melani':1A 'run':2"
    assert rows[1][1] == "'loud':2 'sing':1"
    assert rows[2][1] == "'carolin':1A 'jone':2A"
