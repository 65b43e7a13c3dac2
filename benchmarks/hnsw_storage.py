"""The vector index (IVFFlat) stored as ``vector`` vs ``halfvec`` (ltst_memory/hnsw.py), through the store's API.

    HF_HUB_OFFLINE=1 python benchmarks/hnsw_storage.py [--messages 100000] [--n 200] [--ef-search 100 200]
        [--dsn ...] [--json FILE]

Loads ``--messages`` messages (1,000 sessions of 100 users; vectors clustered around real MiniLM
vectors) with ``import_messages(workers=2)``, builds the default ``vector`` index, then for each
storage (``set_index_storage`` rebuilds the index, timed): index size, ``store_message`` with a
precomputed vector, and ``search_messages`` over every message (no scope: the HNSW walk) with
precomputed query vectors — p50/p95 and recall@10 against brute force (numpy, float32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrecomputedEmbedder, clustered_vectors, fresh_database, machine, server, texts, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
K = 10


def message_ids(dsn: str, count: int) -> np.ndarray:
    """``ids[i]``: the message_id of corpus text i (texts start "message {i}:"; a parallel import
    stores them in no particular order)."""
    ids = np.zeros(count, dtype=np.int64)
    with psycopg.connect(dsn) as conn:
        for message_id, content in conn.execute("SELECT message_id, content FROM conversation_messages"):
            if content.startswith("message "):
                ids[int(content[8 : content.index(":")])] = message_id
    return ids


def index_mb(dsn: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE conversation_messages")
        size = conn.execute("SELECT pg_relation_size('idx_messages_embedding_ivfflat')").fetchone()
    return size[0] / 2**20 if size else 0.0


def exact_top(dsn: str, corpus_vectors: np.ndarray, probe: np.ndarray) -> list[set[int]]:
    """The brute-force top 10 message ids of each probe vector."""
    ids = message_ids(dsn, len(corpus_vectors))
    return [set(ids[np.argsort(-(corpus_vectors @ v), kind="stable")[:K]].tolist()) for v in probe]


def measure_search(store: Any, probe: np.ndarray, truth: list[set[int]], n: int) -> dict[str, Any]:
    """Unscoped search_messages (the HNSW walk): p50/p95 and recall@10 against ``truth``."""
    from _common import percentiles

    queries = [f"probe {i}" for i in range(len(probe))]
    for text, vector in zip(queries, probe, strict=True):
        store.embedder.table[text] = vector
    hits, short, samples = 0, 0, []
    for i in range(n):
        t = time.perf_counter()
        found = store.search_messages(queries[i % len(queries)], limit=K)
        samples.append(time.perf_counter() - t)
        hits += len(truth[i % len(truth)] & {m.message_id for m, _ in found})
        short += len(found) < K
    return {**percentiles(samples), "recall_at_10": hits / (K * n), "short_results": short}


def measure_writes(store: Any, probe: np.ndarray, n: int) -> dict[str, float]:
    from ltst_memory import ConversationMessage

    rng = np.random.default_rng(3)
    return timed(
        lambda i: store.store_message(
            ConversationMessage(
                session_id=f"s{rng.integers(1000)}", role="human", content=f"new {i}", embedding=probe[i % len(probe)]
            )
        ),
        n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[100], help="hnsw_ef_search values to time")
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, Settings
    from ltst_memory.embeddings import SentenceTransformerEmbedder
    from ltst_memory.hnsw import set_index_storage

    corpus = texts(args.messages)
    base = SentenceTransformerEmbedder("all-MiniLM-L6-v2").embed(corpus[:2_000])
    vectors = clustered_vectors(args.messages, base=base, seed=1)
    probe = clustered_vectors(args.n, base=base, seed=2)
    report: dict[str, Any] = {"machine": machine(), "messages": args.messages}
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_bench_hnsw_storage")
        embedder = PrecomputedEmbedder()
        with ConversationStorage(dsn, embedder=embedder) as store:
            for s in range(1_000):
                store.create_session(ConversationSession(session_id=f"s{s}", user_id=f"u{s % 100}"))
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP INDEX IF EXISTS idx_messages_embedding_ivfflat")
            store.import_messages(
                (
                    ConversationMessage(f"s{i % 1000}", "human", corpus[i], embedding=vectors[i])
                    for i in range(args.messages)
                ),
                batch_size=10_000,
                workers=2,
            )
            truth: list[set[int]] = []
            for storage in ("vector", "halfvec"):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("ALTER DATABASE ltst_bench_hnsw_storage SET maintenance_work_mem = '1GB'")
                    conn.execute("DROP INDEX IF EXISTS idx_messages_embedding_ivfflat")
                with psycopg.connect(dsn, autocommit=True) as conn:
                    t = time.perf_counter()
                    set_index_storage(conn, storage)
                    build_s = time.perf_counter() - t
                truth = truth or exact_top(dsn, vectors, probe)
                report[storage] = {"build_s": build_s, "index_mb": index_mb(dsn), "search_by_ef": {}}
                for ef in args.ef_search:
                    settings = Settings.from_env(dsn=dsn, hnsw_ef_search=ef)
                    with ConversationStorage(settings=settings, embedder=embedder) as fresh:  # learns the storage
                        report[storage]["search_by_ef"][ef] = measure_search(fresh, probe, truth, args.n)
                report[storage]["search_all"] = report[storage]["search_by_ef"][args.ef_search[0]]
                with ConversationStorage(dsn, embedder=embedder) as fresh:
                    report[storage]["store_message"] = measure_writes(fresh, probe, args.n)
                # the timed store_message calls added rows: keep the brute-force truth in step
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("DELETE FROM conversation_messages WHERE content LIKE 'new %'")
    print(json.dumps(report, indent=2))
    print("\n| index storage | build s | index MB | search, all messages, p50 / p95 ms | recall@10 | "
          "store_message p50 / p95 ms |\n|---|---|---|---|---|---|")  # fmt: skip
    for storage in ("vector", "halfvec"):
        r = report[storage]
        s, w = r["search_all"], r["store_message"]
        print(
            f"| {storage} | {r['build_s']:.1f} | {r['index_mb']:.0f} | {s['p50']:.2f} / {s['p95']:.2f} | "
            f"{s['recall_at_10']:.3f} | {w['p50']:.2f} / {w['p95']:.2f} |"
        )
    for storage in ("vector", "halfvec"):
        for ef, r in report[storage]["search_by_ef"].items():
            timing = f"p50 {r['p50']:.2f} / p95 {r['p95']:.2f} ms"
            print(f"{storage} ef_search={ef}: {timing}, recall@10 {r['recall_at_10']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
