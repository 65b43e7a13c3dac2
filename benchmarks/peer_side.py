"""One system's side of the peer benchmark (run by ``benchmarks/peers.py``, one process per system).

    python peer_side.py --system ours|lc_history|lc_vectorstore|langgraph --dsn DSN --data DIR --size N

Loads the first N messages of the shared data set (``DIR/texts.json``, ``DIR/vectors.npy``,
``DIR/probe.npy``) into its own database, times the operations and prints one JSON object. Peers run
under a separate virtualenv (langchain-postgres pins pgvector<0.4); ours runs under the project's
Python. Every system gets the same texts, vectors, sessions (100 messages each) and users (1,000
messages each), and the same query vectors; nothing is embedded during the timed operations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

PER_SESSION = 100
PER_USER = 1_000
K = 10


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50": statistics.median(ms),
        "p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "ops_per_s": len(ms) / (sum(ms) / 1000),
    }


def timed(fn: Callable[[int], Any], n: int, warmup: int = 3) -> dict[str, float]:
    for i in range(warmup):
        fn(n + i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t)
    return stats(samples)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def session_of(i: int) -> str:
    return f"s{i // PER_SESSION}"


def user_of_session(s: int) -> str:
    return f"u{s * PER_SESSION // PER_USER}"


def table_bytes(dsn: str, tables: list[str]) -> int:
    with psycopg.connect(dsn) as conn:
        return sum(
            int(conn.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)", (t,)).fetchone()[0])
            for t in tables
        )


# --------------------------------------------------------------------------- ours


def run_ours(dsn: str, texts: list[str], vectors: np.ndarray, probe: np.ndarray, n: int) -> dict[str, Any]:
    from _common import PrecomputedEmbedder

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

    embedder = PrecomputedEmbedder()
    size = len(texts)
    sessions = size // PER_SESSION
    out: dict[str, Any] = {}
    with ConversationStorage(dsn, embedder=embedder) as store:
        t = time.perf_counter()
        for s in range(sessions + 200):
            store.create_session(ConversationSession(session_id=f"s{s}", user_id=user_of_session(min(s, sessions - 1))))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS idx_messages_embedding_hnsw")
        result = store.import_messages(
            (
                ConversationMessage(
                    session_id=session_of(i),
                    role="human" if i % 2 == 0 else "ai",
                    content=texts[i],
                    embedding=vectors[i],
                )
                for i in range(size)
            ),
            batch_size=10_000,
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")
            tb = time.perf_counter()
            conn.execute(
                "CREATE INDEX idx_messages_embedding_hnsw ON conversation_messages "
                "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
            out["index_build_s"] = time.perf_counter() - tb
            conn.execute("VACUUM ANALYZE")
        out["load_s"] = time.perf_counter() - t
        out["copy_msgs_per_s"] = result.rate
        rng = np.random.default_rng(1)
        fresh = iter(range(sessions, sessions + 200))

        def append_one(i: int) -> None:
            store.store_message(
                ConversationMessage(
                    session_id=f"s{rng.integers(sessions)}",
                    role="human",
                    content=f"new {i}",
                    embedding=probe[i % len(probe)],
                )
            )

        def append_50(i: int) -> None:
            sid = f"s{next(fresh)}"
            store.store_messages(
                [
                    ConversationMessage(
                        session_id=sid, role="ai", content=f"b{i} {j}", embedding=probe[(i + j) % len(probe)]
                    )
                    for j in range(50)
                ]
            )

        out["append_one"] = timed(append_one, n)
        out["append_50"] = timed(append_50, min(n, 150), warmup=2)
        out["read_last_50"] = timed(lambda i: store.get_recent_messages(f"s{rng.integers(sessions)}", limit=50), n)
        users = max(1, size // PER_USER)
        short = 0
        queries = [f"query {i}" for i in range(len(probe))]
        for q, v in zip(queries, probe, strict=True):
            embedder.table[q] = v

        def search(i: int) -> None:
            nonlocal short
            hits = store.search_messages(queries[i % len(queries)], user_id=f"u{rng.integers(users)}", limit=K)
            short += len(hits) < K

        out["search_user_top10"] = timed(search, n)
        out["search_short_results"] = short
        out["search_variants"] = search_variants(dsn, probe[:100], users)
        out["recall_at_10"] = out["search_variants"]["store's exact path (EXACT_SEARCH_OF_USER)"]["recall_at_10"]
        if hasattr(store, "rehydrate"):
            out["rehydrate"] = timed(
                lambda i: store.rehydrate(f"s{rng.integers(sessions)}", queries[i % len(queries)]), n
            )  # type: ignore[attr-defined]
        else:
            out["rehydrate"] = None
        out["bytes"] = table_bytes(dsn, ["conversation_messages", "conversation_sessions", "session_summary"])
    return out


#: Settings tried for the user-scoped search (chosen by measurement; see docs/benchmarks.md).
SEARCH_VARIANTS = {
    "hnsw ef=40 relaxed": "SET LOCAL hnsw.ef_search = 40; SET LOCAL hnsw.iterative_scan = relaxed_order",
    "hnsw ef=100 relaxed": "SET LOCAL hnsw.ef_search = 100; SET LOCAL hnsw.iterative_scan = relaxed_order",
    "hnsw ef=200 relaxed": "SET LOCAL hnsw.ef_search = 200; SET LOCAL hnsw.iterative_scan = relaxed_order",
    "hnsw ef=100 strict": "SET LOCAL hnsw.ef_search = 100; SET LOCAL hnsw.iterative_scan = strict_order",
    "exact (user's rows via btree)": "SET LOCAL enable_indexscan = off",
    # what search_messages(user_id=...) runs for a user of <= exact_search_max_rows messages
    "store's exact path (EXACT_SEARCH_OF_USER)": "",
}


def search_variants(dsn: str, probe: np.ndarray, users: int) -> dict[str, dict[str, float]]:
    """Latency (database side, query vector given) and recall@10 against exact search, per setting.

    A result counts as a hit when its distance is within the exact top 10's (ties included: the timed
    appends stored copies of the probe vectors, so equal distances occur and either row is right)."""
    from pgvector.psycopg import register_vector

    from ltst_memory import _queries as q

    out: dict[str, dict[str, float]] = {}
    answers: dict[str, list[list[float]]] = {}
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        for name, settings in SEARCH_VARIANTS.items():
            samples, got = [], []
            for i, v in enumerate(probe):
                params = {"query": v, "user_id": f"u{i % users}", "limit": K, "threshold": -1.0}
                t = time.perf_counter()
                sql = q.EXACT_SEARCH_OF_USER if not settings else q.search_messages_sql("user")
                with conn.transaction():
                    for statement in filter(None, settings.split(";")):
                        conn.execute(statement)
                    cur = conn.execute(sql, params)
                    rows = cur.fetchall()
                samples.append(time.perf_counter() - t)
                column = [d.name for d in cur.description].index("distance")
                got.append(sorted(float(r[column]) for r in rows))
            answers[name] = got
            out[name] = {**stats(samples), "short_results": sum(len(d) < K for d in got)}
    exact = answers["exact (user's rows via btree)"]
    for name, got in answers.items():
        hits = sum(sum(d <= e[-1] + 1e-9 for d in g) for g, e in zip(got, exact, strict=True) if e)
        out[name]["recall_at_10"] = hits / max(1, sum(len(e) for e in exact))
    return out


# --------------------------------------------------------------------------- langchain-postgres


def run_lc_history(dsn: str, texts: list[str], vectors: np.ndarray, probe: np.ndarray, n: int) -> dict[str, Any]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    size = len(texts)
    sessions = size // PER_SESSION
    sid = {s: str(uuid.uuid5(uuid.NAMESPACE_URL, f"s{s}")) for s in range(sessions + 200)}
    out: dict[str, Any] = {}
    conn = psycopg.connect(dsn, autocommit=True)
    PostgresChatMessageHistory.create_tables(conn, "chat_history")
    t = time.perf_counter()
    for s in range(sessions):
        h = PostgresChatMessageHistory("chat_history", sid[s], sync_connection=conn)
        h.add_messages(
            [
                (HumanMessage if i % 2 == 0 else AIMessage)(content=texts[i])
                for i in range(s * PER_SESSION, (s + 1) * PER_SESSION)
            ]
        )
    conn.execute("VACUUM ANALYZE chat_history")
    out["load_s"] = time.perf_counter() - t
    rng = np.random.default_rng(1)
    fresh = iter(range(sessions, sessions + 200))
    out["append_one"] = timed(
        lambda i: PostgresChatMessageHistory(
            "chat_history", sid[int(rng.integers(sessions))], sync_connection=conn
        ).add_messages([HumanMessage(content=f"new {i}")]),
        n,
    )
    out["append_50"] = timed(
        lambda i: PostgresChatMessageHistory("chat_history", sid[next(fresh)], sync_connection=conn).add_messages(
            [AIMessage(content=f"b{i} {j}") for j in range(50)]
        ),
        min(n, 150),
        warmup=2,
    )
    out["read_last_50"] = timed(
        lambda i: PostgresChatMessageHistory(
            "chat_history", sid[int(rng.integers(sessions))], sync_connection=conn
        ).get_messages()[-50:],
        n,
    )
    out["bytes"] = table_bytes(dsn, ["chat_history"])
    conn.close()
    return out


def _sqlalchemy_url(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    host = p.get("host", "")
    return f"postgresql+psycopg://{p.get('user', 'postgres')}@/{p['dbname']}?host={host}" + (
        f"&port={p['port']}" if p.get("port") else ""
    )


def run_lc_vectorstore(dsn: str, texts: list[str], vectors: np.ndarray, probe: np.ndarray, n: int) -> dict[str, Any]:
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import Column, PGEngine, PGVectorStore
    from langchain_postgres.v2.indexes import HNSWIndex

    class Unused(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("nothing is embedded in this benchmark")

        def embed_query(self, text: str) -> list[float]:
            raise AssertionError("nothing is embedded in this benchmark")

    size = len(texts)
    sessions = size // PER_SESSION
    out: dict[str, Any] = {}
    engine = PGEngine.from_connection_string(_sqlalchemy_url(dsn))
    engine.init_vectorstore_table(
        "lc_vectors",
        384,
        metadata_columns=[Column("user_id", "TEXT"), Column("session_id", "TEXT")],
    )
    vs = PGVectorStore.create_sync(engine, Unused(), "lc_vectors", metadata_columns=["user_id", "session_id"])
    t = time.perf_counter()
    # bulk-load straight into PGVectorStore's table with binary COPY (add_embeddings is far too slow for
    # 100k rows); the timed operations below go through the public API.
    from pgvector.psycopg import register_vector

    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY lc_vectors (langchain_id, content, embedding, user_id, session_id, langchain_metadata) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["uuid", "text", "vector", "text", "text", "json"])
            for i in range(size):
                copy.write_row(
                    (uuid.uuid4(), texts[i], vectors[i], user_of_session(i // PER_SESSION), session_of(i), {})
                )
    tb = time.perf_counter()
    vs.apply_vector_index(HNSWIndex())  # defaults: m=16, ef_construction=64, cosine
    out["index_build_s"] = time.perf_counter() - tb
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE lc_vectors")
    out["load_s"] = time.perf_counter() - t
    rng = np.random.default_rng(1)
    out["append_one"] = timed(
        lambda i: vs.add_embeddings(
            [f"new {i}"],
            [probe[i % len(probe)].tolist()],
            metadatas=[{"user_id": "u0", "session_id": f"s{rng.integers(sessions)}"}],
        ),
        n,
    )
    out["append_50"] = timed(
        lambda i: vs.add_embeddings(
            [f"b{i} {j}" for j in range(50)],
            [probe[(i + j) % len(probe)].tolist() for j in range(50)],
            metadatas=[{"user_id": "u0", "session_id": f"x{i}"}] * 50,
        ),
        min(n, 150),
        warmup=2,
    )
    users = max(1, size // PER_USER)
    short = 0

    def search(i: int) -> None:
        nonlocal short
        docs = vs.similarity_search_by_vector(
            probe[i % len(probe)].tolist(), k=K, filter={"user_id": f"u{rng.integers(users)}"}
        )
        short += len(docs) < K

    out["search_user_top10"] = timed(search, n)
    out["search_short_results"] = short
    out["bytes"] = table_bytes(dsn, ["lc_vectors"])
    asyncio.run(engine.close()) if hasattr(engine, "close") else None
    return out


# --------------------------------------------------------------------------- langgraph


def run_langgraph(dsn: str, texts: list[str], vectors: np.ndarray, probe: np.ndarray, n: int) -> dict[str, Any]:
    from langgraph.store.base import PutOp
    from langgraph.store.postgres import PostgresStore

    table: dict[str, list[float]] = {}

    def embed(items: list[str]) -> list[list[float]]:
        return [table[t] for t in items]

    for t_, v in zip(texts, vectors, strict=True):
        table[t_] = v.tolist()
    queries = [f"query {i}" for i in range(len(probe))]
    for q, v in zip(queries, probe, strict=True):
        table[q] = v.tolist()
    size = len(texts)
    sessions = size // PER_SESSION
    out: dict[str, Any] = {}

    def ns(s: int) -> tuple[str, ...]:
        return ("user", user_of_session(min(s, sessions - 1)), "session", f"s{s}")

    with PostgresStore.from_conn_string(dsn, index={"dims": 384, "embed": embed, "fields": ["text"]}) as store:
        store.setup()
        with psycopg.connect(dsn, autocommit=True) as conn:
            indexes = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = 'store_vectors' AND indexdef ILIKE '%hnsw%'"
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
        t = time.perf_counter()
        step = 1_000
        for start in range(0, size, step):
            store.batch(
                [
                    PutOp(
                        ns(i // PER_SESSION), f"m{i:08d}", {"text": texts[i], "role": "human" if i % 2 == 0 else "ai"}
                    )
                    for i in range(start, min(size, start + step))
                ]
            )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")
            tb = time.perf_counter()
            for _, definition in indexes:
                conn.execute(definition)
            out["index_build_s"] = time.perf_counter() - tb
            conn.execute("VACUUM ANALYZE")
        out["load_s"] = time.perf_counter() - t
        rng = np.random.default_rng(1)
        fresh = iter(range(sessions, sessions + 200))

        def append_one(i: int) -> None:
            q = f"new {i}"
            table[q] = probe[i % len(probe)].tolist()
            store.put(ns(int(rng.integers(sessions))), f"n{i}-{uuid.uuid4().hex}", {"text": q, "role": "human"})

        def append_50(i: int) -> None:
            s = next(fresh)
            ops = []
            for j in range(50):
                q = f"b{i} {j}"
                table[q] = probe[(i + j) % len(probe)].tolist()
                ops.append(PutOp(ns(s), f"b{i}-{j}", {"text": q, "role": "ai"}))
            store.batch(ops)

        out["append_one"] = timed(append_one, n)
        out["append_50"] = timed(append_50, min(n, 150), warmup=2)
        out["read_last_50"] = timed(lambda i: store.search(ns(int(rng.integers(sessions))), limit=50), n)
        users = max(1, size // PER_USER)
        short = 0

        def search(i: int) -> None:
            nonlocal short
            hits = store.search(("user", f"u{rng.integers(users)}"), query=queries[i % len(queries)], limit=K)
            short += len(hits) < K

        out["search_user_top10"] = timed(search, n)
        out["search_short_results"] = short
        out["bytes"] = table_bytes(dsn, ["store", "store_vectors"])
    return out


SYSTEMS = {
    "ours": run_ours,
    "lc_history": run_lc_history,
    "lc_vectorstore": run_lc_vectorstore,
    "langgraph": run_langgraph,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    texts = json.loads((args.data / "texts.json").read_text())[: args.size]
    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")[: args.size]
    probe = np.load(args.data / "probe.npy")
    t = time.perf_counter()
    result = SYSTEMS[args.system](args.dsn, texts, np.asarray(vectors), probe, args.n)
    result.update(
        system=args.system,
        size=args.size,
        total_s=time.perf_counter() - t,
        peak_rss_mb=peak_rss_mb(),
        python=sys.version.split()[0],
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
