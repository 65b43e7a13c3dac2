"""A user's search cost as the table grows: one user's 1,000 messages among 10k, 100k, 1M.

    HF_HUB_OFFLINE=1 python benchmarks/user_search_growth.py [--sizes 10000 100000 1000000] [--n 200]

One table grows in steps (bulk ``import_messages`` with precomputed, clustered vectors; every user
has 1,000 messages in 10 sessions, as in the peer benchmark). At each size it times the user-scoped
top-10 search twice: the database side alone (the statement ``search_messages(user_id=...)`` runs for
a user of at most ``exact_search_max_rows`` messages, query vector given) and the whole
``store.search_messages`` call with a precomputed query vector (no model), and checks recall@10
against brute force over the user's rows in numpy. The HNSW index is dropped for the loads and not
rebuilt (the user path does not use it; building it for 1M rows on 2 cores takes longer than the rest
of this run); on-disk size per million messages is reported from the table and its indexes.
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
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrecomputedEmbedder, clustered_vectors, fresh_database, machine, server, texts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PER_USER = 1_000
PER_SESSION = 100
K = 10


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": 1000 * s[len(s) // 2], "p95": 1000 * s[min(len(s) - 1, int(len(s) * 0.95))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
    from ltst_memory import _queries as q

    top = max(args.sizes)
    vectors = clustered_vectors(top + args.n, seed=3)
    probe, vectors = vectors[top:], vectors[:top]
    corpus = texts(top)
    embedder = PrecomputedEmbedder()
    queries = [f"query {i}" for i in range(args.n)]
    embedder.table.update(zip(queries, probe, strict=True))
    report: dict[str, Any] = {"machine": machine(), "steps": []}
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_bench_growth")
        with ConversationStorage(dsn, embedder=embedder) as store, psycopg.connect(dsn, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("DROP INDEX IF EXISTS idx_messages_embedding_hnsw")
            loaded = 0
            for size in sorted(args.sizes):
                sessions = range(loaded // PER_SESSION, size // PER_SESSION)
                for s in sessions:
                    store.create_session(ConversationSession(session_id=f"s{s}", user_id=f"u{s // 10}"))
                t = time.perf_counter()
                result = store.import_messages(
                    (
                        ConversationMessage(
                            session_id=f"s{i // PER_SESSION}",
                            role="human" if i % 2 == 0 else "ai",
                            content=corpus[i],
                            embedding=vectors[i],
                        )
                        for i in range(loaded, size)
                    ),
                    batch_size=10_000,
                )
                load_s = time.perf_counter() - t
                loaded = size
                conn.execute("VACUUM ANALYZE conversation_messages")
                users = size // PER_USER
                rng = np.random.default_rng(size)
                picks = [int(u) for u in rng.integers(users, size=args.n)]
                db_side, whole, hits, short = [], [], 0, 0
                for i, u in enumerate(picks):  # warm-up pass then timed pass
                    warm = {"query": probe[i], "user_id": f"u{u}", "limit": K, "threshold": -1.0}
                    conn.execute(q.EXACT_SEARCH_OF_USER, warm)
                for i, u in enumerate(picks):
                    params = {"query": probe[i], "user_id": f"u{u}", "limit": K, "threshold": -1.0}
                    t = time.perf_counter()
                    rows = conn.execute(q.EXACT_SEARCH_OF_USER, params).fetchall()
                    db_side.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    found = store.search_messages(queries[i], user_id=f"u{u}", limit=K)
                    whole.append(time.perf_counter() - t)
                    short += len(found) < K
                    lo = u * PER_USER  # brute force over the user's rows (ids follow insertion order)
                    truth = set(np.argsort(-(vectors[lo : lo + PER_USER] @ probe[i]))[:K] + lo)
                    got = {int(m.content.split(":")[0].split()[1]) for m, _ in found}
                    hits += len(truth & got)
                    assert len(rows) == K
                size_bytes = conn.execute("SELECT pg_total_relation_size('conversation_messages')").fetchone()[0]  # type: ignore[index]
                step = {
                    "messages": size,
                    "import_msgs_per_s": result.rate,
                    "import_s": load_s,
                    "db_side_ms": pct(db_side),
                    "search_messages_ms": pct(whole),
                    "recall_at_10": hits / (K * args.n),
                    "short_results": short,
                    "gb_per_million_messages_without_hnsw": size_bytes / size * 1e6 / 1e9,
                }
                report["steps"].append(step)
                print(json.dumps(step), flush=True)
    print("\n| messages | import msg/s | DB side p50 / p95 ms | search_messages p50 / p95 ms | recall@10 |")
    print("|---|---|---|---|---|")
    for s in report["steps"]:
        print(
            f"| {s['messages']:,} | {s['import_msgs_per_s']:,.0f} | {s['db_side_ms']['p50']:.2f} / "
            f"{s['db_side_ms']['p95']:.2f} | {s['search_messages_ms']['p50']:.2f} / "
            f"{s['search_messages_ms']['p95']:.2f} | {s['recall_at_10']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
