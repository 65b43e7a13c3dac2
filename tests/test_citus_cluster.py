"""On a real Citus cluster (``LTST_TEST_CITUS_DSN``, see ``tests/_citus.py``; skipped without one, so the
suite on one server is unchanged): which shards answer, migrations after the conversion, concurrent
writers.

* Every operation given a ``user_id`` is answered by one shard: each statement it runs, EXPLAINed with
  its own parameters on the cluster, shows a Citus plan of one task (a router plan), subplans included.
* Work across users (unscoped search, the retention sweep, the analytics export) asks every shard and
  is correct: it finds the rows of users on different shards.
* A converted database takes the next numbered migration with no manual step (``migrate`` applies
  ``distribute.sql`` again), even one that re-creates a trigger function as on one server.
* ``message_index`` stays gapless under concurrent writers, and no acknowledged message is lost.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import _citus
import psycopg
import pytest
from pgvector.psycopg import register_vector

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder, UserPreference
from ltst_memory import migrate as migrate_module
from ltst_memory._kernel import Query
from ltst_memory.migrate import migrate

pytestmark = pytest.mark.skipif(not _citus.CITUS_DSN, reason="needs a Citus cluster: LTST_TEST_CITUS_DSN")

TASKS = re.compile(r"Task Count: (\d+)")


class Recorder:
    """The statements a store runs (SQL and parameters), recorded while ``active``."""

    def __init__(self) -> None:
        self.queries: list[Query] = []
        self.active = False

    def __call__(self, original: Any) -> Any:
        def execute(store: Any, conn: Any, query: Query, *args: Any) -> Any:
            if self.active:
                self.queries.append(query)
            return original(store, conn, query, *args)

        return execute

    def run(self, call: Any) -> list[Query]:
        self.queries, self.active = [], True
        try:
            call()
        finally:
            self.active = False
        return self.queries


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(ConversationStorage, "_execute", recorder(ConversationStorage._execute))
    return recorder


def task_counts(dsn: str, query: Query) -> list[int]:
    """The task count of every Citus node of the plan of ``query`` (empty: no distributed table)."""
    if query.sql.lstrip().upper().startswith("SET "):  # (a setting: no plan)
        return []
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        plan = conn.execute(("EXPLAIN " + query.sql).encode(), query.params).fetchall()
        conn.rollback()
    return [int(n) for line in plan for n in TASKS.findall(line[0])]


def assert_one_task_each(recorder: Recorder, calls: dict[str, Callable[[], object]], dsn: str) -> None:
    """Run each call, and assert that every statement it sent is answered by one task (one shard)."""
    spread: dict[str, dict[str, list[int]]] = {}
    for name, call in calls.items():
        queries = recorder.run(call)
        plans = {q.sql.strip()[:160]: task_counts(dsn, q) for q in queries}
        wide = {first: counts for first, counts in plans.items() if any(c != 1 for c in counts)}
        if wide:
            spread[name] = wide
    assert spread == {}, "\n".join(f"{n}: {w}" for n, w in spread.items())


def shard_of(dsn: str, user_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT get_shard_id_for_distribution_column('conversation_sessions', %s::text)", (user_id,))
        return int(row.fetchone()[0])  # type: ignore[index]


def two_users_on_two_shards(dsn: str) -> tuple[str, str]:
    users = [f"user-{i}" for i in range(20)]
    first = users[0]
    other = next(u for u in users[1:] if shard_of(dsn, u) != shard_of(dsn, first))
    return first, other


def fill(store: ConversationStorage, user: str, start: datetime | None = None) -> str:
    sid = f"{user}-s1"
    store.create_session(ConversationSession(session_id=sid, user_id=user, session_type="chat"))
    start = start or datetime.now(timezone.utc)
    store.store_messages(
        [
            ConversationMessage(session_id=sid, role="human", content=f"{user} likes green tea", timestamp=start),
            ConversationMessage(
                session_id=sid, role="ai", content="Noted: green tea.", timestamp=start + timedelta(seconds=1)
            ),
        ]
    )
    return sid


@pytest.fixture
def store(database_dsn: str) -> Iterator[ConversationStorage]:
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as s:
        yield s


def test_operations_given_a_user_are_answered_by_one_shard(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    a, b = two_users_on_two_shards(database_dsn)
    fill(store, a)
    fill(store, b)
    calls = {
        "search_messages(user_id=)": lambda: store.search_messages("green tea", user_id=a),
        "recall(user_id=)": lambda: store.recall("what does the user drink?", user_id=a),
        "get_user_sessions": lambda: store.get_user_sessions(a),
        "store_preference": lambda: store.store_preference(
            UserPreference(user_id=a, preference_key="drink", preference_value="tea")
        ),
        "get_preferences": lambda: store.get_preferences(a),
    }
    for name, call in calls.items():
        queries = recorder.run(call)
        plans = {q.sql.strip().splitlines()[0]: task_counts(database_dsn, q) for q in queries}
        distributed = {first: counts for first, counts in plans.items() if counts}
        assert distributed, f"{name} ran no statement on a distributed table"
        assert all(counts == [1] * len(counts) for counts in distributed.values()), f"{name}: {distributed}"
    # and they answered for the user only
    assert {m.user_id for m, _ in store.search_messages("green tea", user_id=a)} == {a}
    assert [s.user_id for s in store.get_user_sessions(a)] == [a]


def test_a_scoped_store_answers_operations_on_a_session_from_one_shard(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    """A store scoped to a user (``for_user``) names the user in every statement that names a session:
    each one, EXPLAINed with its parameters, is a router plan (one task)."""
    from ltst_memory import ConversationContext, SessionRelationship

    a, b = two_users_on_two_shards(database_dsn)
    fill(store, b)  # another user's data on another shard
    mine = store.for_user(a)
    sid = f"{a}-s1"
    mine.create_session(ConversationSession(session_id=sid, user_id=a))
    mine.create_session(ConversationSession(session_id=f"{a}-s2", user_id=a))
    message = ConversationMessage(session_id=sid, role="human", content=f"{a} likes green tea")
    calls = {
        "store_message": lambda: mine.store_message(message),
        "store_messages": lambda: mine.store_messages(
            [ConversationMessage(session_id=sid, role="ai", content="Noted: green tea.")] * 2
        ),
        "get_session": lambda: mine.get_session(sid),
        "get_session_summary": lambda: mine.get_session_summary(sid),
        "get_messages": lambda: mine.get_messages(sid),
        "get_recent_messages": lambda: mine.get_recent_messages(sid),
        "search_messages(session_id=)": lambda: mine.search_messages("green tea", session_id=sid),
        "update_session_activity": lambda: mine.update_session_activity(sid),
        "update_session": lambda: mine.update_session(ConversationSession(session_id=sid, user_id=a, status="open")),
        "store_context": lambda: mine.store_context(
            ConversationContext(session_id=sid, context_type="topic", context_key="k", context_value="tea")
        ),
        "get_context": lambda: mine.get_context(sid),
        "store_relationship": lambda: mine.store_relationship(
            SessionRelationship(source_session_id=sid, target_session_id=f"{a}-s2")
        ),
        "get_related_sessions": lambda: mine.get_related_sessions(sid),
        "recall(session_id=)": lambda: mine.recall("what does the user drink?", session_id=sid),
        "rehydrate": lambda: mine.rehydrate(sid, query="what does the user drink?"),
        "summarize_session": lambda: mine.summarize_session(sid),
        "delete_session": lambda: mine.delete_session(f"{a}-s2"),
    }
    assert_one_task_each(recorder, calls, database_dsn)
    # and the answers are the user's, as on one server
    assert [m.content for m in mine.get_messages(sid)] == [
        f"{a} likes green tea",
        "Noted: green tea.",
        "Noted: green tea.",
    ]
    assert mine.get_session_summary(sid).total_messages == 3
    from ltst_memory import AccessDeniedError

    with pytest.raises(AccessDeniedError):
        mine.get_messages(f"{b}-s1")  # another user's session: found among every user's (every shard)
    assert mine.get_session("no-such-session") is None


def test_work_across_users_asks_every_shard_and_is_correct(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    a, b = two_users_on_two_shards(database_dsn)
    old = datetime.now(timezone.utc) - timedelta(days=40)
    fill(store, a, old)
    fill(store, b, old)
    queries = recorder.run(lambda: store.search_messages("green tea"))
    counts = [c for q in queries for c in task_counts(database_dsn, q)]
    assert max(counts) == _citus.TEST_SHARD_COUNT  # every shard
    assert {m.user_id for m, _ in store.search_messages("green tea", limit=10)} == {a, b}

    exported = list(store.export_analytics())
    assert len(exported) == 4  # the messages of both users, from both shards
    store.set_retention_policy(message_days=30)  # every user: both users' messages are older
    removed = store.cleanup_expired_data()
    assert removed["messages"] == 4
    assert store.get_messages(f"{a}-s1") == [] and store.get_messages(f"{b}-s1") == []
    assert store.get_session_summary(f"{a}-s1").total_messages == 0  # the summary triggers ran on the shards


NEXT = (
    "0999_test_next.sql",
    """
ALTER TABLE conversation_messages ADD COLUMN IF NOT EXISTS ltst_test_note text;
-- re-created as on one server (0001's text): the cluster's version must come back
CREATE OR REPLACE FUNCTION ltst_sessions_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_summary (session_id)
    SELECT session_id FROM new_sessions
    ON CONFLICT (session_id) DO NOTHING;
    RETURN NULL;
END;
$$;
""",
)


def test_a_converted_database_takes_the_next_migration(database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrate_module.migration_files()
    monkeypatch.setattr(migrate_module, "migration_files", lambda: [*shipped, NEXT])
    try:
        with psycopg.connect(database_dsn) as conn:
            assert migrate(conn) == [NEXT[0]]
        with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as store:
            sid = fill(store, "user-0")  # the summary trigger works on the shards again
            assert store.get_session_summary(sid).total_messages == 2
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("UPDATE conversation_messages SET ltst_test_note = 'n' WHERE user_id = 'user-0'")
            row = conn.execute("SELECT count(ltst_test_note) FROM conversation_messages").fetchone()
            assert row is not None and row[0] == 2  # the new column, on every shard
    finally:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE conversation_messages DROP COLUMN IF EXISTS ltst_test_note")
            conn.execute("DELETE FROM ltst_migrations WHERE name = %s", (NEXT[0],))


def test_concurrent_writers_get_gapless_indexes_and_lose_nothing(database_dsn: str) -> None:
    writers, each = 6, 15
    acknowledged: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384), pool_max_size=writers) as store:
        for user in ("user-0", "user-1"):
            store.create_session(ConversationSession(session_id=f"{user}-shared", user_id=user))

        def write(w: int) -> None:
            try:
                for i in range(each):
                    user = f"user-{(w + i) % 2}"
                    if i % 3 == 0:  # the batch path too: two messages with client-given ids
                        stored = store.store_messages(
                            [
                                ConversationMessage(
                                    session_id=f"{user}-shared",
                                    role="human",
                                    content=f"w{w} m{i}{k}",
                                    message_uuid=f"00000000-0000-4000-8000-{w:04d}{i:04d}{k:04d}",
                                )
                                for k in range(2)
                            ]
                        )
                    else:
                        stored = [
                            store.store_message(
                                ConversationMessage(session_id=f"{user}-shared", role="human", content=f"w{w} m{i}")
                            )
                        ]
                    with lock:
                        acknowledged.extend((m.session_id, int(m.message_index or 0)) for m in stored)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for user in ("user-0", "user-1"):
            sid = f"{user}-shared"
            indexes = [m.message_index for m in store.get_messages(sid, limit=1000)]
            assert indexes == list(range(len(indexes)))  # gapless, no duplicates
            assert sorted(i for s, i in acknowledged if s == sid) == indexes  # every acknowledged one stored
            assert store.get_session_summary(sid).total_messages == len(indexes)


def test_opening_with_another_embedder_resizes_an_empty_store_and_refuses_a_filled_one(database_dsn: str) -> None:
    from ltst_memory import EmbeddingDimensionError

    # the model check upserts into ltst_metadata, a reference table (no function in DO UPDATE SET)
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(256)) as store:
        fill(store, "user-0")
        hits = store.search_messages("green tea", user_id="user-0")
        assert {m.content for m, _ in hits} == {"user-0 likes green tea", "Noted: green tea."}
    with psycopg.connect(database_dsn) as conn:
        row = conn.execute("SELECT vector_dims(embedding) FROM conversation_messages LIMIT 1").fetchone()
        assert row is not None and row[0] == 256  # the column was resized on every shard
    with pytest.raises(EmbeddingDimensionError, match="256 dimensions"):
        ConversationStorage(database_dsn, embedder=HashingEmbedder(384))


def shard_indexes(conn: psycopg.Connection[Any], kind: str) -> list[int]:
    """For every shard of the messages: how many of its indexes are of ``kind`` (``ivfflat``, ``hnsw``)."""
    rows = conn.execute(
        "SELECT result FROM run_command_on_shards('conversation_messages', "
        "$$SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_am AS a ON a.oid = c.relam WHERE i.indrelid = '%s'::regclass AND a.amname = "
        + "'"
        + kind
        + "'$$) ORDER BY shardid"
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_the_vector_index_is_built_on_every_shard_and_used_by_unscoped_searches(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    from ltst_memory.hnsw import build_index

    a, b = two_users_on_two_shards(database_dsn)
    fill(store, a)
    fill(store, b)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        built = build_index(conn)
        assert (built.rows, built.lists) == (4, 10)
        assert shard_indexes(conn, "ivfflat") == [1] * _citus.TEST_SHARD_COUNT
        build_index(conn, storage="halfvec", concurrently=True)  # rebuilt beside the old one, renamed
        assert shard_indexes(conn, "ivfflat") == [1] * _citus.TEST_SHARD_COUNT
        row = conn.execute("SELECT pg_get_indexdef('idx_messages_embedding_ivfflat'::regclass)").fetchone()
        assert row is not None and "halfvec_cosine_ops" in row[0]
    queries = recorder.run(lambda: store.search_messages("green tea", limit=10))
    with psycopg.connect(database_dsn) as conn:  # a few rows: the planner would scan them; SET LOCAL reaches
        register_vector(conn)  # the workers (citus.propagate_set_commands = local, set by citus-prepare)
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for q in queries for r in conn.execute(("EXPLAIN " + q.sql).encode(), q.params))
    assert "idx_messages_embedding_ivfflat" in plan
    hits = store.search_messages("green tea", limit=10)
    assert {m.user_id for m, _ in hits} == {a, b}


def test_migration_0012_applies_after_the_conversion(database_dsn: str) -> None:
    """A cluster converted before 0012 (an HNSW index on every shard) takes it: the index is dropped
    everywhere and the store works."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX IF NOT EXISTS idx_messages_embedding_hnsw ON conversation_messages "
            "USING hnsw (embedding vector_cosine_ops)"
        )
        assert shard_indexes(conn, "hnsw") == [1] * _citus.TEST_SHARD_COUNT
        conn.execute("DELETE FROM ltst_migrations WHERE name = '0012_vector_index.sql'")
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        assert migrate(conn) == ["0012_vector_index.sql"]
        assert shard_indexes(conn, "hnsw") == [0] * _citus.TEST_SHARD_COUNT
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as store:
        sid = fill(store, "user-0")
        hits = store.search_messages("green tea", session_id=sid)
        assert {m.content for m, _ in hits} == {"user-0 likes green tea", "Noted: green tea."}


def test_an_unscoped_store_writes_to_a_reused_session_id_under_its_new_owner(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    """The owners an unscoped store remembers skip the question to every shard on the next write, and
    one that is no longer true (the session deleted, its id taken by another user) is looked up again."""
    a, b = two_users_on_two_shards(database_dsn)
    sid = fill(store, a)  # the store now knows the owner of sid
    queries = recorder.run(lambda: store.store_message(ConversationMessage(session_id=sid, role="human", content="x")))
    counts = [c for q in queries for c in task_counts(database_dsn, q)]
    assert counts and set(counts) == {1}  # no statement asked every shard
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as other:
        other.delete_session(sid)
        other.create_session(ConversationSession(session_id=sid, user_id=b))
    stored = store.store_message(ConversationMessage(session_id=sid, role="human", content=f"{b} writes here"))
    assert (stored.user_id, stored.message_index) == (b, 0)
    assert [(m.user_id, m.content) for m in store.get_messages(sid)] == [(b, f"{b} writes here")]


def test_an_unscoped_store_reads_a_session_from_its_owners_shard(
    store: ConversationStorage, database_dsn: str, recorder: Recorder
) -> None:
    """A store that does not know a session's owner asks every shard for it once (a one-row lookup),
    remembers it, and from then on reads the session from the owner's shard, as a scoped store does."""
    a, b = two_users_on_two_shards(database_dsn)
    sid = fill(store, a)
    fill(store, b)
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as fresh:  # knows no owner yet
        first = recorder.run(lambda: fresh.get_messages(sid))
        counts = [task_counts(database_dsn, q) for q in first]
        assert counts[-1] == [1]  # the messages, from one shard
        assert [c for c in counts if c != [1] and c] == [[_citus.TEST_SHARD_COUNT]]  # the one lookup
        calls = {
            "get_messages": lambda: fresh.get_messages(sid),
            "get_recent_messages": lambda: fresh.get_recent_messages(sid),
            "get_session": lambda: fresh.get_session(sid),
            "get_session_summary": lambda: fresh.get_session_summary(sid),
            "get_context": lambda: fresh.get_context(sid),
            "get_related_sessions": lambda: fresh.get_related_sessions(sid),
            "search_messages(session_id=)": lambda: fresh.search_messages("green tea", session_id=sid),
            "recall(session_id=)": lambda: fresh.recall("what does the user drink?", session_id=sid),
            "rehydrate": lambda: fresh.rehydrate(sid, query="what does the user drink?"),
            "update_session_activity": lambda: fresh.update_session_activity(sid),
        }
        assert_one_task_each(recorder, calls, database_dsn)
        assert [m.content for m in fresh.get_messages(sid)] == [f"{a} likes green tea", "Noted: green tea."]

        # the owner it remembers is no longer true: the session deleted, its id reused by another user
        store.delete_session(sid)
        store.create_session(ConversationSession(session_id=sid, user_id=b))
        store.store_message(ConversationMessage(session_id=sid, role="human", content=f"{b} writes here"))
        assert [(m.user_id, m.content) for m in fresh.get_messages(sid)] == [(b, f"{b} writes here")]
        session = fresh.get_session(sid)
        assert session is not None and session.user_id == b
        assert fresh.get_session_summary(sid).total_messages == 1
        store.delete_session(sid)
        assert fresh.get_session(sid) is None
        from ltst_memory import SessionNotFoundError

        with pytest.raises(SessionNotFoundError):
            fresh.get_messages(sid)


def test_a_session_never_changes_owner(store: ConversationStorage, database_dsn: str) -> None:
    """What the remembered owners rely on: neither the store nor raw SQL moves a session to another user
    (Citus refuses an update of the distribution column)."""
    a, b = two_users_on_two_shards(database_dsn)
    sid = fill(store, a)
    from ltst_memory import ValidationError

    with pytest.raises(ValidationError, match="cannot be changed"):
        store.update_session(ConversationSession(session_id=sid, user_id=b))
    with psycopg.connect(database_dsn) as conn, pytest.raises(psycopg.Error, match=r"partition|distribution"):
        conn.execute("UPDATE conversation_sessions SET user_id = %s WHERE session_id = %s", (b, sid))
    assert store.get_session(sid).user_id == a  # type: ignore[union-attr]
