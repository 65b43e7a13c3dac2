"""One system's side of the peer benchmark (run by ``benchmarks/peers.py``, one process per system).

    python peer_side.py --system ours|lc_history|lc_vectorstore|langgraph --dsn DSN --data DIR --size N

Loads the first N messages of the shared data set (``DIR/texts.json``, ``DIR/vectors.npy``,
``DIR/probe.npy``) into its own database, times the operations and prints one JSON object. Peers run
under a separate virtualenv (langchain-postgres pins pgvector<0.4); ours runs under the project's
Python. Every system gets the same texts, vectors, sessions (100 messages each) and users (one of
10 % of the messages up to 100,000, one of 1 % up to 10,000, the others 1,000 each), and the same
query vectors; nothing is embedded during the timed operations except rehydrate's question (ours,
MiniLM). Searches run before the timed writes and are scored against brute force in numpy.
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
#: Untimed appends before ``append_one_warm``, which follows ``append_one`` (the first appends after the load).
WARM_APPENDS = 200


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


#: Sessions of the loaded data (set by main). Users: "big" owns the first 10 % of the sessions (at most
#: 100,000 messages), "mid" the next 1 % (at most 10,000), every other user 1,000 messages (10 sessions).
SESSIONS = 0


def _groups() -> tuple[int, int]:
    big = min(100_000 // PER_SESSION, SESSIONS // 10)
    return big, big + min(10_000 // PER_SESSION, SESSIONS // 100)


def user_of_session(s: int) -> str:
    big, mid = _groups()
    s = min(s, SESSIONS - 1)
    return "big" if s < big else "mid" if s < mid else f"u{s // 10}"


def rows_of_user(user: str) -> range:
    big, mid = _groups()
    if user == "big":
        return range(0, big * PER_SESSION)
    if user == "mid":
        return range(big * PER_SESSION, mid * PER_SESSION)
    first = max(int(user[1:]) * 10, mid)
    return range(first * PER_SESSION, min(SESSIONS, (int(user[1:]) + 1) * 10) * PER_SESSION)


def small_users(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random users of 1,000 messages."""
    _, mid = _groups()
    return [user_of_session(int(s)) for s in rng.integers(-(-mid // 10) * 10, SESSIONS, size=n)]


def row_of(text: str) -> int:
    """The data set's row of a loaded text ("message {i}: ...")."""
    return int(text.split(":", 1)[0].split()[1])


class Truth:
    """Brute-force top-10 of the loaded vectors, per scope, for recall@10."""

    def __init__(self, vectors: np.ndarray, probe: np.ndarray) -> None:
        self.vectors, self.probe = vectors, probe
        self.cache: dict[tuple[str, int], set[int]] = {}

    def top(self, user: str | None, q: int) -> set[int]:
        key = (user or "", q)
        if key not in self.cache:
            rows = rows_of_user(user) if user else range(len(self.vectors))
            sims = self.vectors[rows.start : rows.stop] @ self.probe[q]
            best = np.argpartition(-sims, K)[:K] if len(sims) > K else np.arange(len(sims))
            self.cache[key] = {rows.start + int(i) for i in best}
        return self.cache[key]


def search_ops(search: Callable[[np.ndarray, str | None, int], list[str]], truth: Truth, n: int) -> dict[str, Any]:
    """Time ``search(query vector, user or None, query index)`` (returns the texts found) for the users
    of 1,000 messages, "mid", "big" and every user (unscoped), with recall@10 against brute force and
    the count of calls that returned fewer than 10 rows. Runs before any timed write (the appends add
    copies of the query vectors)."""
    rng = np.random.default_rng(2)
    out: dict[str, Any] = {}
    plan: dict[str, list[str | None]] = {
        "search_user_top10": list(small_users(rng, n)),
        "search_mid_user": ["mid"] * n,
        "search_big_user": ["big"] * n,
        "search_unscoped": [None] * n,
    }
    for op, users in plan.items():
        if users[0] in ("mid", "big") and not rows_of_user(str(users[0])):
            continue
        hits, short = 0, 0
        samples = []
        for i in range(-3, n):
            q = i % len(truth.probe)
            t = time.perf_counter()
            found = search(truth.probe[q], users[i], q)
            if i >= 0:
                samples.append(time.perf_counter() - t)
                hits += len(truth.top(users[i], q) & {row_of(x) for x in found})
                short += len(found) < K
        out[op] = {**stats(samples), "recall_at_10": hits / (K * n), "short_results": short}
    out["search_short_results"] = out["search_user_top10"]["short_results"]
    return out


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
    from ltst_memory.embeddings import SentenceTransformerEmbedder
    from ltst_memory.hnsw import build_index, build_user_indexes
    from ltst_memory.lexical_index import build_lexical_indexes

    class Embedder(PrecomputedEmbedder):
        """Precomputed vectors for the data and the probes; MiniLM for rehydrate's questions."""

        model_name = "all-MiniLM-L6-v2"

        def __init__(self) -> None:
            super().__init__()
            self.model = SentenceTransformerEmbedder("all-MiniLM-L6-v2")

        def embed(self, items: Any) -> np.ndarray:
            if all(t in self.table for t in items):
                return super().embed(items)
            return self.model.embed(list(items))

    embedder = Embedder()
    embedder.model.embed(["warm up"])
    size = len(texts)
    sessions = size // PER_SESSION
    out: dict[str, Any] = {}
    with ConversationStorage(dsn, embedder=embedder) as store:
        t = time.perf_counter()
        for s in range(sessions + 200):
            store.create_session(ConversationSession(session_id=f"s{s}", user_id=user_of_session(s)))
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
            tb = time.perf_counter()
            built = build_index(conn)  # what `ltst vector-index` runs, once the data is there:
            own = build_user_indexes(conn, min_rows=store.settings.exact_search_max_rows)  # and users' own
            out["index_build_s"] = time.perf_counter() - tb
            tb = time.perf_counter()  # what `ltst lexical-index` runs: large users' term indexes
            terms = build_lexical_indexes(conn, min_rows=store.settings.lexical_index_min_rows)
            out["term_index_build_s"] = time.perf_counter() - tb
            out["term_indexes"] = [{"user": b.user_id, "rows": b.messages, "postings": b.postings} for b in terms]
            out["index_lists"] = built.lists
            out["user_indexes"] = [{"user": b.user_id, "rows": b.rows, "lists": b.lists} for b in own]
            conn.execute("VACUUM ANALYZE")
        out["load_s"] = time.perf_counter() - t
        out["copy_msgs_per_s"] = result.rate
        queries = [f"query {i}" for i in range(len(probe))]
        for q, v in zip(queries, probe, strict=True):
            embedder.table[q] = v

        def search(vector: np.ndarray, user: str | None, q: int) -> list[str]:
            return [m.content for m, _ in store.search_messages(queries[q], user_id=user, limit=K)]

        out.update(search_ops(search, Truth(vectors, probe), n))
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
        out["append_one_warm"] = timed(append_one, n, warmup=WARM_APPENDS)
        out["append_50"] = timed(append_50, min(n, 150), warmup=2)
        out["read_last_50"] = timed(lambda i: store.get_recent_messages(f"s{rng.integers(sessions)}", limit=50), n)
        # rehydrate with a question MiniLM embeds in the call (not in the precomputed table)
        questions = [f"what did we say about {texts[i].split(':', 1)[1].strip()}?" for i in range(n + 3)]
        out["rehydrate"] = timed(
            lambda i: store.rehydrate(f"s{rng.integers(sessions)}", questions[i]), n
        )  # includes the query embedding (MiniLM, numpy backend)
        out["bytes"] = table_bytes(
            dsn, ["conversation_messages", "conversation_sessions", "session_summary", "ltst_lexical_postings"]
        )
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

    def append_one(i: int) -> None:
        PostgresChatMessageHistory("chat_history", sid[int(rng.integers(sessions))], sync_connection=conn).add_messages(
            [HumanMessage(content=f"new {i}")]
        )

    out["append_one"] = timed(append_one, n)
    out["append_one_warm"] = timed(append_one, n, warmup=WARM_APPENDS)
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

    def search(vector: np.ndarray, user: str | None, q: int) -> list[str]:
        where = {"filter": {"user_id": user}} if user else {}
        return [d.page_content for d in vs.similarity_search_by_vector(vector.tolist(), k=K, **where)]

    out.update(search_ops(search, Truth(vectors, probe), n))
    rng = np.random.default_rng(1)

    def append_one(i: int) -> None:
        vs.add_embeddings(
            [f"new {i}"],
            [probe[i % len(probe)].tolist()],
            metadatas=[{"user_id": "u0", "session_id": f"s{rng.integers(sessions)}"}],
        )

    out["append_one"] = timed(append_one, n)
    out["append_one_warm"] = timed(append_one, n, warmup=WARM_APPENDS)
    out["append_50"] = timed(
        lambda i: vs.add_embeddings(
            [f"b{i} {j}" for j in range(50)],
            [probe[(i + j) % len(probe)].tolist() for j in range(50)],
            metadatas=[{"user_id": "u0", "session_id": f"x{i}"}] * 50,
        ),
        min(n, 150),
        warmup=2,
    )
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
        return ("user", user_of_session(s), "session", f"s{s}")

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

        def search(vector: np.ndarray, user: str | None, q: int) -> list[str]:
            prefix = ("user", user) if user else ("user",)
            return [item.value["text"] for item in store.search(prefix, query=queries[q], limit=K)]

        out.update(search_ops(search, Truth(vectors, probe), n))
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
        out["append_one_warm"] = timed(append_one, n, warmup=WARM_APPENDS)
        out["append_50"] = timed(append_50, min(n, 150), warmup=2)
        out["read_last_50"] = timed(lambda i: store.search(ns(int(rng.integers(sessions))), limit=50), n)
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
    global SESSIONS
    SESSIONS = args.size // PER_SESSION
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
