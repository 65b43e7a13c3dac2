"""The single append's BM25 statistics (schema/0018_append_one.sql): store_message records its message in
ltst_term_pending and ltst_fold_term_pending() adds the pending words to ltst_term_stats later. Whatever
is pending or folded, readers see exactly what a recount of the messages gives, a search's scores do not
change with a fold, and the insert triggers still keep every other INSERT current (the same transaction's
too)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from _helpers import TERM_STATS_KEPT, USER_STATS_KEPT, login_role
from pgvector.psycopg import register_vector
from test_append_path import TERMS_RECOUNT, USERS_RECOUNT, _summary_matches

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
from ltst_memory import _queries as q
from ltst_memory import _recall_queries as rq
from ltst_memory.recall import BM25_B, BM25_K1

WORDS = ["lake", "sunrise", "paint", "budget", "meeting", "friday", "gallery", "hiking", "fog", "sister"]


def _text(i: int) -> str:
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7)) + f" note{i % 5}"


def _exact(conn: psycopg.Connection[Any]) -> None:
    """Folded + pending document frequencies, and the users' totals, equal a recount of the messages."""
    assert conn.execute(TERM_STATS_KEPT).fetchall() == conn.execute(TERMS_RECOUNT).fetchall()
    users = conn.execute(USER_STATS_KEPT).fetchall()
    assert users == conn.execute(USERS_RECOUNT).fetchall()


def _pending(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM ltst_term_pending").fetchone()[0])  # type: ignore[index]


def _fold(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute(q.FOLD_TERM_PENDING).fetchone()[0])  # type: ignore[index]


def _sessions(store: ConversationStorage) -> None:
    for user in ("alice", "bob"):
        for n in (1, 2):
            store.create_session(ConversationSession(f"{user}-{n}", user))


def test_appends_stay_pending_until_folded_and_the_statistics_are_exact_throughout(
    store: ConversationStorage, database_dsn: str
) -> None:
    _sessions(store)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        _fold(conn)  # (nothing to fold)
        stored = [store.store_message(ConversationMessage(f"alice-{1 + i % 2}", "human", _text(i))) for i in range(6)]
        stored.append(store.store_message(ConversationMessage("bob-1", "ai", _text(9))))
        pending = conn.execute("SELECT user_id, message_id FROM ltst_term_pending ORDER BY 2").fetchall()
        last_fold = max((m.message_id for m in stored if m.message_id % q.FOLD_EVERY == 0), default=0)
        assert pending == [(m.user_id, m.message_id) for m in stored if m.message_id > last_fold]
        assert {u for u, _ in pending} == {"alice", "bob"}
        _exact(conn)
        for session_id in ("alice-1", "alice-2", "bob-1"):
            _summary_matches(conn, session_id)
        assert _fold(conn) == len(pending)
        assert _pending(conn) == 0
        folded = conn.execute("SELECT user_id, term, doc_count FROM ltst_term_stats ORDER BY 1, 2").fetchall()
        assert folded == conn.execute(TERMS_RECOUNT).fetchall()  # all in ltst_term_stats now
        _exact(conn)
        assert _fold(conn) == 0  # exactly once


def test_the_store_folds_after_every_64th_message_id(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        stored = store.store_messages([ConversationMessage("bob-2", "human", f"filler {i}") for i in range(3)])
        start, folded_at = stored[-1].message_id + 1, 0
        for i in range(start, start + q.FOLD_EVERY + 1):
            message = store.store_message(ConversationMessage("alice-1", "human", _text(i)))
            if message.message_id % q.FOLD_EVERY == 0:
                assert _pending(conn) == 0  # that append folded everything before it, itself included
                folded_at = message.message_id
        assert folded_at and _pending(conn) == stored[-1].message_id + q.FOLD_EVERY + 1 - folded_at
        _exact(conn)


def test_a_long_message_is_counted_by_its_append(store: ConversationStorage, database_dsn: str) -> None:
    """Past PENDING_MAX_BYTES a word could be too long for the statistics' btree key: such a message is
    counted at once, so a key over the limit fails its own append, never a later fold."""
    _sessions(store)
    long = " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(q.PENDING_MAX_BYTES // 8))
    assert len(long.encode()) > q.PENDING_MAX_BYTES
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        store.store_message(ConversationMessage("alice-1", "human", long))
        store.store_message(ConversationMessage("alice-1", "human", _text(1)))
        assert _pending(conn) == 1
        _exact(conn)


def test_edits_and_deletes_of_pending_and_folded_messages(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        folded = [store.store_message(ConversationMessage("alice-1", "human", _text(i))) for i in range(3)]
        _fold(conn)
        pending = [store.store_message(ConversationMessage("alice-2", "ai", _text(i + 3))) for i in range(3)]
        assert _pending(conn) == 3
        edit = "UPDATE conversation_messages SET content = %s WHERE message_id = %s"
        conn.execute(edit, ("entirely new words about kayaks", pending[0].message_id))
        conn.execute(edit, ("kayaks and a folded message", folded[0].message_id))
        _exact(conn)
        assert _pending(conn) == 2  # an edited message is counted by its edit
        conn.execute(edit, ("an edit of an edited message", pending[0].message_id))
        store.delete_message(pending[1].message_id)
        conn.execute("DELETE FROM conversation_messages WHERE message_id = %s", (folded[1].message_id,))
        assert _pending(conn) == 1  # a deleted pending message's row goes with it
        _exact(conn)
        conn.execute(
            "UPDATE conversation_messages SET user_id = 'bob', session_id = 'bob-2', message_index = 99"
            " WHERE message_id = %s",
            (pending[2].message_id,),
        )
        assert _pending(conn) == 0  # (a change of owner too)
        _exact(conn)
        assert _fold(conn) == 0
        _exact(conn)
        store.delete_session("alice-2")
        _exact(conn)
        for session_id in ("alice-1", "bob-1"):
            _summary_matches(conn, session_id)


def _insert_message_values(store: ConversationStorage, session_id: str, content: str) -> dict[str, Any]:
    return {
        "message_uuid": uuid.uuid4(),
        "session_id": session_id,
        "role": "human",
        "content": content,
        "message_type": "message",
        "metadata": "{}",
        "embedding": store.embedder.embed([content])[0],
        "relevance_score": 0.0,
        "is_context_message": False,
        "timestamp": None,
    }


@pytest.mark.parametrize("pipeline", [False, True], ids=["statements", "pipeline"])
def test_a_plain_insert_after_the_append_in_the_same_transaction_is_still_kept(
    store: ConversationStorage, database_dsn: str, pipeline: bool
) -> None:
    """The insert triggers skip the store's append statement only: a plain INSERT after it, in the same
    transaction (sent one by one, or in one pipeline with no sync between them), fires them."""
    _sessions(store)
    plain = (
        "INSERT INTO conversation_messages (session_id, user_id, role, content, message_index)"
        " VALUES ('alice-1', 'alice', 'ai', 'a plain insert about kayaks', 100)"
    )
    with psycopg.connect(database_dsn) as conn:
        register_vector(conn)
        values = _insert_message_values(store, "alice-1", "the store's own append about lakes")
        if pipeline:
            with conn.pipeline():
                conn.execute(q.INSERT_MESSAGE, values)
                conn.execute(plain)
        else:
            conn.execute(q.INSERT_MESSAGE, values)
            conn.execute(plain)
        conn.commit()
        assert _pending(conn) == 1  # the store's message only: the plain one went through the triggers
        assert conn.execute("SELECT doc_count FROM ltst_term_stats WHERE term = 'kayak'").fetchone() == (1,)
        _summary_matches(conn, "alice-1")
        _exact(conn)


def test_two_writers_and_folds_at_once_keep_the_statistics_exact(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    errors: list[BaseException] = []

    def write(user: str) -> None:
        try:
            for i in range(40):
                store.store_message(ConversationMessage(f"{user}-{1 + i % 2}", "human", _text(i)))
                if i % 7 == 0:
                    with psycopg.connect(database_dsn, autocommit=True) as conn:
                        _fold(conn)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    writers = [threading.Thread(target=write, args=(user,)) for user in ("alice", "alice", "bob")]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert not errors
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        _exact(conn)
        _fold(conn)
        assert _pending(conn) == 0
        _exact(conn)
        for session_id in ("alice-1", "alice-2", "bob-1", "bob-2"):
            _summary_matches(conn, session_id)


def test_a_fold_races_appends_edits_and_deletes(store: ConversationStorage, database_dsn: str) -> None:
    """A fold does not wait for others: an append not committed yet is not its to see, a message whose
    delete has not committed is left to that delete (SKIP LOCKED), an edit waits for the fold and then
    counts against the words the fold counted, and statistics rows another transaction is writing make
    it give up at once (0, nothing counted). Exact at every step."""
    _sessions(store)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        kept = [store.store_message(ConversationMessage("alice-1", "human", _text(i))) for i in range(4)]
        with psycopg.connect(database_dsn) as other:
            register_vector(other)
            other.execute(q.INSERT_MESSAGE, _insert_message_values(store, "alice-2", "uncommitted words"))
            other.execute("SELECT FROM conversation_messages WHERE message_id = %s FOR UPDATE", (kept[0].message_id,))
            other.execute("DELETE FROM conversation_messages WHERE message_id = %s", (kept[1].message_id,))
            assert _fold(conn) == 3  # not kept[1], whose pending row the delete holds
            other.execute(
                "UPDATE conversation_messages SET content = 'edited' WHERE message_id = %s", (kept[0].message_id,)
            )
            _exact(conn)  # (the other transaction's work is not visible yet)
            assert _pending(conn) == 1  # kept[1]
            other.commit()
        assert _pending(conn) == 1  # the new message
        _exact(conn)
        with psycopg.connect(database_dsn) as other:
            other.execute(
                "UPDATE conversation_messages SET content = 'edited again' WHERE message_id = %s", (kept[2].message_id,)
            )
            assert _fold(conn) == 0  # the edit holds alice's statistics rows: the fold gives up
            other.commit()
        assert _pending(conn) == 1
        assert _fold(conn) == 1
        assert _pending(conn) == 0
        _exact(conn)


def test_an_edit_waits_for_the_fold_that_took_its_message(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    message = store.store_message(ConversationMessage("bob-1", "human", "kayaks on the lake"))
    edited = threading.Event()
    with psycopg.connect(database_dsn) as folding:
        assert _fold(folding) == 1  # (not committed yet)

        def edit() -> None:
            with psycopg.connect(database_dsn, autocommit=True) as conn:
                conn.execute(
                    "UPDATE conversation_messages SET content = 'hiking in fog' WHERE message_id = %s",
                    (message.message_id,),
                )
            edited.set()

        editor = threading.Thread(target=edit)
        editor.start()
        with psycopg.connect(database_dsn, autocommit=True) as watch:
            while not watch.execute(  # the edit's trigger waits for the pending row the fold took
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE conversation_messages%%')"
            ).fetchone()[0]:  # type: ignore[index]
                assert editor.is_alive()
        assert not edited.is_set()
        folding.commit()
        editor.join()
    assert edited.is_set()
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert _pending(conn) == 0
        _exact(conn)


def test_another_fold_running_means_nothing_to_do(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    store.store_message(ConversationMessage("alice-1", "human", _text(1)))
    with psycopg.connect(database_dsn) as first, psycopg.connect(database_dsn, autocommit=True) as second:
        assert _fold(first) == 1  # its transaction still open
        store.store_message(ConversationMessage("alice-1", "human", _text(2)))
        assert _fold(second) == 0
        first.commit()
        assert _fold(second) == 1
        _exact(second)


def test_a_failing_fold_leaves_the_messages_pending_and_the_appends_stored(
    store: ConversationStorage, database_dsn: str
) -> None:
    """A fold that fails (here: the counting function raises) reports a warning and returns 0; the
    messages stay pending and exact for readers, and store_message, which calls it, still returns."""
    _sessions(store)
    store.store_message(ConversationMessage("alice-1", "human", _text(1)))
    warnings: list[str] = []
    with psycopg.connect(database_dsn) as conn:
        conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary or ""))
        conn.execute(  # only in this transaction, rolled back below
            "CREATE OR REPLACE FUNCTION ltst_apply_term_stats(rows_user text[], rows_tsv tsvector[], sign integer)"
            " RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'counting failed'; END; $$"
        )
        assert _fold(conn) == 0
        assert _pending(conn) == 1
        assert any("counting failed" in w for w in warnings)
        conn.rollback()
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert _pending(conn) == 1
        _exact(conn)
        assert _fold(conn) == 1
        _exact(conn)


def _lexical(conn: psycopg.Connection[Any], user: str | None) -> list[tuple[int, float]]:
    params = {"query": "paint the lake at sunrise", "k1": BM25_K1, "b": BM25_B, "candidates": 20}
    if user is None:
        sql = rq.lexical_sql(scope=rq.SCOPE_ALL, filters="", all_users=True, scan=False)
    else:
        sql = rq.lexical_sql(scope=rq.SCOPE_USER, filters="", all_users=False, scan=True)
        params |= {"user_id": user, "stats_user": user}
    return [(int(m), float(s)) for m, s in conn.execute(sql, params).fetchall()]


def test_search_scores_are_the_same_pending_or_folded(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    store.store_messages([ConversationMessage("alice-1", "human", _text(i)) for i in range(5)])  # (triggers)
    for i in range(12):
        store.store_message(ConversationMessage(f"{('alice', 'bob')[i % 2]}-2", "ai", _text(i + 5)))
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert _pending(conn) > 0
        before = {user: _lexical(conn, user) for user in ("alice", "bob", None)}
        recalled = [(m.message_id, s) for m, s in store.recall("paint the lake at sunrise", user_id="alice")]
        assert all(before.values())
        _fold(conn)
        assert _pending(conn) == 0
        assert {user: _lexical(conn, user) for user in ("alice", "bob", None)} == before  # to the last bit
        assert [(m.message_id, s) for m, s in store.recall("paint the lake at sunrise", user_id="alice")] == recalled


def test_delete_user_leaves_no_pending_row(store: ConversationStorage, database_dsn: str) -> None:
    _sessions(store)
    for user in ("alice", "bob"):
        store.store_message(ConversationMessage(f"{user}-1", "human", _text(3)))
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert _pending(conn) == 2
        result = store.delete_user("alice")
        assert result.complete and "term_pending" in result
        assert conn.execute("SELECT user_id FROM ltst_term_pending").fetchall() == [("bob",)]
        assert conn.execute("SELECT count(*) FROM ltst_term_stats WHERE user_id = 'alice'").fetchone() == (0,)
        _exact(conn)


def test_under_row_level_security_a_user_sees_and_writes_their_own_pending_rows(
    store: ConversationStorage, database_dsn: str, hashing_embedder: Any
) -> None:
    _sessions(store)
    store.store_message(ConversationMessage("bob-1", "human", _text(4)))
    with (
        login_role(database_dsn, "ltst_pending") as app_dsn,
        ConversationStorage(app_dsn, embedder=hashing_embedder, auto_migrate=False) as app,
    ):
        alice = app.for_user("alice")
        alice.store_message(ConversationMessage("alice-1", "human", _text(5)))
        assert alice.recall("paint the lake", limit=5)
        with psycopg.connect(app_dsn) as conn:
            assert _pending(conn) == 0  # no user: no row
            conn.execute("SELECT set_config('ltst.user_id', 'alice', true)")
            assert conn.execute("SELECT user_id FROM ltst_term_pending").fetchall() == [("alice",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO ltst_term_pending (user_id, message_id) VALUES ('bob', 1)")
            conn.rollback()
            assert _fold(conn) == 2  # the fold counts every user's, as the tables' owner
            conn.commit()
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert _pending(conn) == 0
        _exact(conn)
