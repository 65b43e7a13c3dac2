"""A large user's term index (ltst_memory/lexical_index.py, schema/0016_lexical_index.sql): recall's BM25 leg
reads it up to the watermark and scores the messages stored since as before. The leg with the index
gives the leg without it, and Okapi BM25 computed here: right after the build, with a gap, after a
delete, after an edit, with a watermark the store read before a rebuild or a drop; delete_user leaves
nothing of the user in its tables; another user cannot read them; a rebuild changes nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _helpers import login_role
from test_bm25 import _okapi, _term_counts
from typer.testing import CliRunner

import ltst_memory.recall as recall_module
from ltst_memory import (
    AccessDeniedError,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseError,
    ValidationError,
)
from ltst_memory import _recall_queries as rq
from ltst_memory.cli import app
from ltst_memory.lexical_index import (
    CUSTOM_PLAN,
    build_lexical_index,
    build_lexical_indexes,
    drop_lexical_index,
    gap_to_rebuild,
    lexical_indexes,
)
from ltst_memory.recall import BM25_B, BM25_K1

WORDS = ["lake", "sunrise", "paint", "gallery", "budget", "fog", "skate", "sister", "friday", "hike", "tax", "garden"]
QUESTIONS = ["Did we paint the lake at sunrise?", "what about the budget on friday", "fog and tax"]
CANDIDATES = 8


def _line(i: int) -> str:
    """A chat line of 4 of the 12 words (some twice), different for each i."""
    picks = [WORDS[(i * k + k * k) % len(WORDS)] for k in (1, 2, 3, 5)]
    return " ".join(picks + picks[: i % 3])


def _store_lines(store: ConversationStorage, user: str, start: int, n: int) -> None:
    store.store_messages(
        [
            ConversationMessage(
                session_id=f"{user}-{'ab'[i % 2]}",
                role="human" if i % 2 == 0 else "ai",
                content=_line(i),
                metadata={"speaker": "Caroline" if i % 4 == 0 else "Melanie"},
            )
            for i in range(start, start + n)
        ]
    )


@pytest.fixture
def users(store: ConversationStorage) -> ConversationStorage:
    """alice: 60 messages; bob: 20 (whose words count for nothing in alice's scores)."""
    for user in ("alice", "bob"):
        for s in "ab":
            store.create_session(ConversationSession(session_id=f"{user}-{s}", user_id=user))
    _store_lines(store, "alice", 0, 60)
    _store_lines(store, "bob", 100, 20)
    return store


def _leg(conn: psycopg.Connection[Any], question: str, *, watermark: int | None, exclude: list[int] | None = None):
    """The lexical leg of alice's recall: with the term index (``watermark``) or without it (both plans)."""
    filters = rq.FILTER_EXCLUDE if exclude else ""
    params = {
        "query": question,
        "k1": BM25_K1,
        "b": BM25_B,
        "candidates": CANDIDATES,
        "user_id": "alice",
        "stats_user": "alice",
        "lexical_watermark": watermark,
        "exclude_ids": exclude or [],
    }
    if watermark is None:
        answers = [
            conn.execute(
                rq.lexical_sql(scope=rq.SCOPE_USER, filters=filters, all_users=False, scan=scan), params
            ).fetchall()
            for scan in (True, False)
        ]
        assert answers[0] == answers[1]
        return answers[0]
    with conn.transaction():
        conn.execute(CUSTOM_PLAN)
        fragments = (rq.FILTER_EXCLUDE,) if exclude else ()
        sql = rq.lexical_sql(scope=rq.SCOPE_USER, filters=filters, all_users=False, term_index=fragments)
        return conn.execute(sql, params).fetchall()


def _okapi_top(conn: psycopg.Connection[Any], question: str, exclude: list[int] | None = None) -> list[int]:
    rows = conn.execute("SELECT message_id, search_tsv::text FROM conversation_messages WHERE user_id = 'alice'")
    docs = {message_id: _term_counts(tsv) for message_id, tsv in rows.fetchall()}
    terms = {r[0] for r in conn.execute("SELECT unnest(tsvector_to_array(to_tsvector('english', %s)))", [question])}
    scores = {m: s for m, s in _okapi(docs, terms).items() if m not in (exclude or [])}
    return sorted(scores, key=lambda m: (-round(scores[m], 9), m))[:CANDIDATES]


def _same_leg(conn: psycopg.Connection[Any], watermark: int, exclude: list[int] | None = None) -> None:
    """The leg with the index = the leg without it = Okapi BM25, on every question."""
    for question in QUESTIONS:
        without = _leg(conn, question, watermark=None, exclude=exclude)
        with_index = _leg(conn, question, watermark=watermark, exclude=exclude)
        assert [m for m, _ in with_index] == [m for m, _ in without], question
        assert [s for _, s in with_index] == pytest.approx([s for _, s in without], rel=1e-12), question
        assert [m for m, _ in with_index] == _okapi_top(conn, question, exclude), question
        assert len(without) == CANDIDATES  # so the leg chooses


def _postings(conn: psycopg.Connection[Any], user: str) -> list[tuple[str, int, int, int]]:
    query = "SELECT term, message_id, tf, dl FROM ltst_lexical_postings WHERE user_id = %s ORDER BY message_id, term"
    return conn.execute(query, [user]).fetchall()


def _postings_from_messages(
    conn: psycopg.Connection[Any], user: str, watermark: int
) -> list[tuple[str, int, int, int]]:
    return conn.execute(
        "SELECT t.lexeme, m.message_id, coalesce(array_length(t.positions, 1), 1), length(m.search_tsv)"
        " FROM conversation_messages AS m CROSS JOIN LATERAL unnest(m.search_tsv) AS t"
        " WHERE m.user_id = %s AND m.message_id <= %s ORDER BY m.message_id, t.lexeme",
        [user, watermark],
    ).fetchall()


def test_the_leg_with_the_index_is_the_leg_without_it(users: ConversationStorage, database_dsn: str) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        built = build_lexical_index(conn, "alice")
        assert built.messages == 60 and built.postings == len(_postings(conn, "alice")) > 60
        assert _postings(conn, "bob") == []
        _same_leg(conn, built.watermark)
        excluded = [m for m, _ in _leg(conn, QUESTIONS[0], watermark=None)[:3]]  # rehydrate's recent turns
        _same_leg(conn, built.watermark, exclude=excluded)

        _store_lines(users, "alice", 60, 25)  # the gap: stored after the build, not indexed
        assert [(i.rows, i.gap) for i in lexical_indexes(conn)] == [(60, 25)]
        assert len(_postings(conn, "alice")) == built.postings
        _same_leg(conn, built.watermark)
        _same_leg(conn, built.watermark - 10)  # a watermark read before a rebuild: the index holds more

        best = _leg(conn, QUESTIONS[0], watermark=None)[0][0]
        conn.execute("DELETE FROM conversation_messages WHERE message_id = %s", [best])
        assert best not in {m for _, m, _, _ in _postings(conn, "alice")}
        _same_leg(conn, built.watermark)

        edited = _leg(conn, QUESTIONS[1], watermark=None)[0][0]  # rewritten with other words, twice each
        conn.execute(
            "UPDATE conversation_messages SET content = 'garden garden hike hike lake' WHERE message_id = %s",
            [edited],
        )
        assert edited <= built.watermark
        assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", built.watermark)
        assert edited not in [m for m, _ in _leg(conn, QUESTIONS[1], watermark=built.watermark)]
        _same_leg(conn, built.watermark)

        conn.execute("UPDATE conversation_messages SET embedding = NULL WHERE user_id = 'alice'")  # no word changed
        assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", built.watermark)


def test_a_watermark_read_before_the_index_was_dropped(users: ConversationStorage, database_dsn: str) -> None:
    """A store keeps the watermark it read for a while: the statement finds the index gone and matches
    the messages up to it as without an index."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        watermark = build_lexical_index(conn, "alice").watermark
        assert drop_lexical_index(conn, "alice") and not drop_lexical_index(conn, "alice")
        assert _postings(conn, "alice") == [] and lexical_indexes(conn) == []
        _same_leg(conn, watermark)


def test_recall_and_rehydrate_read_the_index(
    users: ConversationStorage, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recall of a user with an index gives what it gave without; rehydrate's filter (its recent turns)
    is one the index evaluates, other filters take the leg of every user."""
    legs: list[tuple[str, ...] | None] = []
    lexical_pool_sql = rq.lexical_pool_sql

    def spy(**kwargs: Any) -> str:
        legs.append(kwargs.get("term_index"))
        return lexical_pool_sql(**kwargs)

    monkeypatch.setattr(recall_module.rq, "lexical_pool_sql", spy)
    before = [(m.message_id, s) for m, s in users.recall(QUESTIONS[0], user_id="alice", limit=10)]
    context_before = users.rehydrate("alice-a", QUESTIONS[0])
    assert context_before.memories
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        build_lexical_index(conn, "alice")
    legs.clear()
    # (a new store: one that looked the user up before the build sees the index WATERMARK_TTL seconds later)
    with ConversationStorage(database_dsn, embedder=users.embedder) as store:
        after = [(m.message_id, s) for m, s in store.recall(QUESTIONS[0], user_id="alice", limit=10)]
        assert [m for m, _ in after] == [m for m, _ in before]
        assert [s for _, s in after] == pytest.approx([s for _, s in before], rel=1e-9)
        context_after = store.rehydrate("alice-a", QUESTIONS[0])
        assert [(m.source, m.text) for m in context_after.memories] == [
            (m.source, m.text) for m in context_before.memories
        ]
        store.recall(QUESTIONS[0], user_id="alice", roles=["human"])
        store.recall(QUESTIONS[0], session_id="alice-a", scope="session")
    assert legs == [(), (rq.FILTER_EXCLUDE,), None, None]


def test_delete_user_leaves_nothing_and_other_users_cannot_read_it(
    users: ConversationStorage, database_dsn: str
) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        build_lexical_index(conn, "alice")
        build_lexical_index(conn, "bob")
    with login_role(database_dsn, "ltst_lex") as app_dsn, psycopg.connect(app_dsn) as conn:
        conn.execute("SET LOCAL ltst.user_id = 'bob'")
        visible = conn.execute("SELECT DISTINCT user_id FROM ltst_lexical_postings WHERE user_id = 'alice' OR true")
        assert visible.fetchall() == [("bob",)]
        assert conn.execute("SELECT user_id FROM ltst_lexical_indexes").fetchall() == [("bob",)]
        assert conn.execute("SELECT ltst_lexical_watermark('alice')").fetchone() == (None,)
        assert conn.execute("DELETE FROM ltst_lexical_postings WHERE user_id = 'alice'").rowcount == 0
        conn.rollback()
    erased = users.delete_user("alice")
    assert erased.complete and erased["messages"] == 60
    with psycopg.connect(database_dsn) as conn:
        for table in ("ltst_lexical_postings", "ltst_lexical_indexes"):
            users_left = conn.execute(f"SELECT DISTINCT user_id FROM {table}").fetchall()
            assert users_left == [("bob",)], table


def test_build_over_a_threshold_rebuilds_past_the_gap_and_is_idempotent(
    users: ConversationStorage, database_dsn: str
) -> None:
    runner = CliRunner()
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert [b.user_id for b in build_lexical_indexes(conn, min_rows=30)] == ["alice"]  # bob: 20
        first = _postings(conn, "alice")
        assert build_lexical_indexes(conn, min_rows=30) == []  # nothing to do
        rebuilt = build_lexical_index(conn, "alice")  # a rebuild changes nothing but the time
        assert _postings(conn, "alice") == first
        _store_lines(users, "alice", 60, gap_to_rebuild(60))
        assert build_lexical_indexes(conn, min_rows=30) == []  # a gap up to gap_to_rebuild is kept
        _store_lines(users, "alice", 300, 1)
        again = build_lexical_indexes(conn, min_rows=30)
        assert [(b.user_id, b.messages) for b in again] == [("alice", 60 + gap_to_rebuild(60) + 1)]
        assert again[0].watermark > rebuilt.watermark
        assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", again[0].watermark)
        _same_leg(conn, again[0].watermark)
        shown = runner.invoke(app, ["lexical-index", "--json", "--users-over", "500", "--dsn", database_dsn])
        assert shown.exit_code == 0, shown.output
        report = json.loads(shown.output)
        assert report["built"] == [] and report["users"] == 0  # alice is no longer over 500: dropped
        assert _postings(conn, "alice") == []
    built = runner.invoke(app, ["lexical-index", "--json", "--users-over", "10", "--dsn", database_dsn])
    report = json.loads(built.output)
    assert sorted(b["user_id"] for b in report["built"]) == ["alice", "bob"]
    assert report["users"] == 2 and report["gap"] == 0 and report["rows"] == 60 + gap_to_rebuild(60) + 1 + 20
    bad = runner.invoke(app, ["lexical-index", "--user", "", "--dsn", database_dsn])
    assert bad.exit_code != 0 and "user_id" in bad.output
    with psycopg.connect(database_dsn) as conn, pytest.raises(ValidationError):
        conn.execute("SELECT 1")
        build_lexical_index(conn, "alice")  # inside a transaction


@pytest.fixture
def no_index_grants(database_dsn: str, users: ConversationStorage) -> Iterator[str]:
    """A role granted the tables of the versions before 0016 only (as docs/security.md listed them), and
    0018's pending term statistics (which every append and search uses)."""
    grants = (
        "GRANT USAGE ON SCHEMA public TO {}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON conversation_sessions, conversation_messages, conversation_context,"
        " user_preferences, session_relationships, session_summary, ltst_retention_policies, ltst_term_stats,"
        " ltst_user_stats, ltst_term_pending, ltst_collections, ltst_documents, ltst_store_items,"
        " ltst_store_vectors TO {}",
        "GRANT SELECT ON ltst_metadata, ltst_migrations TO {}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}",
    )
    with login_role(database_dsn, "ltst_old", grants) as dsn:
        yield dsn


def test_a_role_without_grants_on_the_index_keeps_the_leg_of_before(
    no_index_grants: str, database_dsn: str, hashing_embedder: Any
) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        build_lexical_index(conn, "alice")
    with ConversationStorage(no_index_grants, embedder=hashing_embedder, auto_migrate=False) as old:
        alice = old.for_user("alice")
        hits = alice.recall(QUESTIONS[0], limit=5)
        assert hits and {m.user_id for m, _ in hits} == {"alice"}
        victim = hits[0][0].message_id
        with psycopg.connect(no_index_grants) as conn:  # deletes and edits: the triggers act as the owner
            conn.execute("SET LOCAL ltst.user_id = 'alice'")
            conn.execute("UPDATE conversation_messages SET content = 'fog fog' WHERE message_id <> %s", [victim])
            assert conn.execute("DELETE FROM conversation_messages WHERE message_id = %s", [victim]).rowcount == 1
            conn.commit()
        with pytest.raises(AccessDeniedError, match="grant it the library's tables") as refused:
            old.delete_user("alice")  # (docs/security.md: grant the two tables)
        assert refused.value.sqlstate == "42501"  # type: ignore[attr-defined]
    with psycopg.connect(database_dsn) as conn:
        watermark = lexical_indexes(conn)[0].watermark
        assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", watermark)


def test_the_migration_grants_the_index_to_the_roles_granted_the_messages(
    no_index_grants: str, database_dsn: str, hashing_embedder: Any
) -> None:
    """Applied on a database whose application role was granted the tables of before, migration 0016
    grants it the term index too: its recall reads the index and its delete_user erases it."""
    from ltst_memory.migrate import migration_files

    (text,) = [sql_text for name, sql_text in migration_files() if name == "0016_lexical_index.sql"]
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(text)  # (again: idempotent)
        build_lexical_index(conn, "alice")
    with psycopg.connect(no_index_grants) as conn:
        conn.execute("SET LOCAL ltst.user_id = 'alice'")
        assert conn.execute("SELECT ltst_lexical_watermark('alice')").fetchone() != (None,)
        assert conn.execute("SELECT count(DISTINCT user_id) FROM ltst_lexical_postings").fetchone() == (1,)
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as owner:
        expected = [(m.message_id, s) for m, s in owner.recall(QUESTIONS[0], user_id="alice", limit=10)]
    with ConversationStorage(no_index_grants, embedder=hashing_embedder, auto_migrate=False) as old:
        got = [(m.message_id, s) for m, s in old.for_user("alice").recall(QUESTIONS[0], scope="all", limit=10)]
        assert [m for m, _ in got] == [m for m, _ in expected]
        erased = old.delete_user("alice")
        assert erased.complete and erased["messages"] == 60
    with psycopg.connect(database_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ltst_lexical_postings WHERE user_id = 'alice'").fetchone() == (0,)
        assert lexical_indexes(conn) == []


def test_a_build_waits_for_the_writes_in_flight(users: ConversationStorage, database_dsn: str) -> None:
    """A message whose insert is not committed when the build starts, while a later one is: the build
    waits for it, so it is in the index (under the watermark), not lost between the index and the gap."""
    with psycopg.connect(database_dsn) as writer:
        early = writer.execute(
            "INSERT INTO conversation_messages (session_id, user_id, role, content, message_index)"
            " VALUES ('alice-b', 'alice', 'human', 'lake lake sunrise', 10000) RETURNING message_id"
        ).fetchone()[0]
        _store_lines(users, "bob", 200, 1)  # committed, with a larger id (another user: alice's rows are locked)
        built: list[Any] = []
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            thread = threading.Thread(target=lambda: built.append(build_lexical_index(conn, "alice")))
            thread.start()
            thread.join(0.5)  # (the build is waiting for the writer: it cannot finish before the commit)
            assert not built
            writer.commit()
            thread.join()
            assert early < built[0].watermark
            assert early in {m for _, m, _, _ in _postings(conn, "alice")}
            assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", built[0].watermark)


def test_a_build_kept_waiting_gives_up_with_a_typed_error(
    users: ConversationStorage, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ltst_memory.lexical_index as lexical_index

    monkeypatch.setattr(lexical_index, "LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(lexical_index, "LOCK_PAUSE", 0.01)
    with psycopg.connect(database_dsn) as writer, psycopg.connect(database_dsn, autocommit=True) as conn:
        writer.execute("UPDATE conversation_messages SET relevance_score = 0.5 WHERE user_id = 'bob'")
        with pytest.raises(DatabaseError, match="kept the term index build waiting"):
            build_lexical_index(conn, "alice")
        assert lexical_indexes(conn) == []  # nothing half-built
        writer.rollback()
        assert build_lexical_index(conn, "alice").messages == 60


def test_deleting_a_session_or_a_message_through_the_store_removes_their_rows(
    users: ConversationStorage, database_dsn: str
) -> None:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        watermark = build_lexical_index(conn, "alice").watermark
        one = _leg(conn, QUESTIONS[0], watermark=None)[0][0]
        users.delete_message(one, user_id="alice")
        users.delete_session("alice-b")  # its messages go by the foreign key's cascade
        left = conn.execute("SELECT count(*) FROM conversation_messages WHERE user_id = 'alice'").fetchone()[0]
        assert 0 < left < 60
        assert _postings(conn, "alice") == _postings_from_messages(conn, "alice", watermark)
        _same_leg(conn, watermark)
        users.delete_session("alice-a")  # the last of alice's messages: nothing left to index
        assert _postings(conn, "alice") == [] and lexical_indexes(conn) == []
