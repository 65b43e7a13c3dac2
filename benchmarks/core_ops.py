"""Core-operation latencies (issue 2's speed targets) on a store of 100,000 messages in 1,000 sessions.

    HF_HUB_OFFLINE=1 python benchmarks/core_ops.py [--messages 100000] [--sessions 1000] [--n 200] [--dsn ...]

Starts a private embedded PostgreSQL (or uses ``--dsn``, a superuser DSN), creates a fresh database,
bulk-loads the messages with precomputed vectors (``import_messages``, binary COPY; the HNSW index is
dropped for the load and rebuilt after, both timed), then times each operation ``--n`` times and
prints a JSON report plus a Markdown table. Real all-MiniLM-L6-v2 for everything that embeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clustered_vectors, fresh_database, machine, server, texts, timed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGETS_MS = {
    "create_session": 5,
    "store_message (precomputed)": 5,
    "store_message (MiniLM)": 30,
    "get_messages(50)": 5,
    "search_messages (session, incl. embedding)": 40,
    "search_messages (user, incl. embedding)": 40,
}


def import_time(runs: int = 5) -> float:
    code = "import time; t=time.perf_counter(); import ltst_memory; print(time.perf_counter()-t)"
    samples = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(runs)]
    return sorted(samples)[len(samples) // 2] * 1000


def load(  # type: ignore[no-untyped-def]
    store, dsn: str, n_messages: int, n_sessions: int, users: int, embedder, import_workers: int = 2
) -> dict[str, float]:
    from ltst_memory import ConversationMessage, ConversationSession

    corpus = texts(n_messages)
    base = embedder.embed(corpus[:2_000])  # real MiniLM vectors as topic centres
    vectors = clustered_vectors(n_messages, base=base)
    t = time.perf_counter()
    for s in range(n_sessions):
        store.create_session(ConversationSession(session_id=f"s{s}", user_id=f"u{s % users}"))
    sessions_s = time.perf_counter() - t
    messages = (
        ConversationMessage(
            session_id=f"s{i % n_sessions}",
            role="human" if i % 2 == 0 else "ai",
            content=corpus[i],
            embedding=vectors[i],
        )
        for i in range(n_messages)
    )
    result = store.import_messages(messages, batch_size=10_000, workers=import_workers)
    from ltst_memory.hnsw import build_index

    with psycopg.connect(dsn, autocommit=True) as conn:
        t = time.perf_counter()
        build_index(conn)  # the IVFFlat index of large-scope searches (`ltst vector-index`)
        index_s = time.perf_counter() - t
        conn.execute("VACUUM ANALYZE")
    return {
        "create_sessions_s": sessions_s,
        "import_msgs_per_s": result.rate,
        "import_s": result.seconds,
        "vector_index_build_s": index_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--import-workers", type=int, default=2, help="import_messages(workers=...) for the load")
    parser.add_argument("--n", type=int, default=200, help="timed calls per operation")
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--batch-rounds", type=int, default=5, help="rounds of 8 alternating raw-embedder / store_messages pairs"
    )
    args = parser.parse_args()

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
    from ltst_memory.embeddings import SentenceTransformerEmbedder

    report: dict[str, object] = {"machine": machine(), "messages": args.messages, "sessions": args.sessions}
    report["import_workers"] = args.import_workers
    report["import ltst_memory (ms)"] = import_time()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"])
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_bench_core")
        with ConversationStorage(dsn, embedder=embedder) as store:
            report["load"] = load(store, dsn, args.messages, args.sessions, args.users, embedder, args.import_workers)
            rng = np.random.default_rng(7)
            probe = texts(args.n + 10, seed=99)
            vectors = embedder.embed(probe)
            ops: dict[str, dict[str, float]] = {}
            ops["create_session"] = timed(
                lambda i: store.create_session(ConversationSession(session_id=f"new{i}", user_id="u-new")), args.n
            )
            ops["store_message (precomputed)"] = timed(
                lambda i: store.store_message(
                    ConversationMessage(
                        session_id=f"s{rng.integers(args.sessions)}",
                        role="human",
                        content=probe[i],
                        embedding=vectors[i],
                    )
                ),
                args.n,
            )
            ops["store_message (MiniLM)"] = timed(
                lambda i: store.store_message(
                    ConversationMessage(session_id=f"s{rng.integers(args.sessions)}", role="ai", content=probe[i])
                ),
                args.n,
            )
            ops["get_messages(50)"] = timed(
                lambda i: store.get_messages(f"s{rng.integers(args.sessions)}", limit=50), args.n
            )
            ops["get_recent_messages(50)"] = timed(
                lambda i: store.get_recent_messages(f"s{rng.integers(args.sessions)}", limit=50), args.n
            )
            ops["search_messages (session, incl. embedding)"] = timed(
                lambda i: store.search_messages(probe[i], session_id=f"s{rng.integers(args.sessions)}", limit=10),
                args.n,
            )
            ops["search_messages (user, incl. embedding)"] = timed(
                lambda i: store.search_messages(probe[i], user_id=f"u{rng.integers(args.users)}", limit=10), args.n
            )
            t = time.perf_counter()
            for i in range(args.n):
                embedder.embed([probe[i]])
            ops["MiniLM embed one text (reference)"] = {"p50": (time.perf_counter() - t) / args.n * 1000}
            report["ops_ms"] = ops

            # batch throughput: store_messages(64 texts, embedded in one call) vs the embedder alone. Each
            # round is 8 pairs of one raw embedding and one store_messages call of 64 texts of the same
            # kind, their order alternating, so both halves of a pair see the same machine (rounds that
            # timed 8 raw calls, then 8 stores, swung 0.5-1.2 with the load of other processes)
            rounds = []
            for r in range(args.batch_rounds):
                raw_texts, store_texts = texts(64 * 8, seed=5 + r), texts(64 * 8, seed=500 + r)
                raw_s = stored_s = 0.0
                for b in range(8):
                    for which in ("raw", "store") if b % 2 == 0 else ("store", "raw"):
                        t = time.perf_counter()
                        if which == "raw":
                            embedder.embed(raw_texts[b * 64 : (b + 1) * 64])
                            raw_s += time.perf_counter() - t
                        else:
                            store.store_messages(
                                [
                                    ConversationMessage(session_id=f"s{b}", role="human", content=x)
                                    for x in store_texts[b * 64 : (b + 1) * 64]
                                ]
                            )
                            stored_s += time.perf_counter() - t
                raw, stored = 64 * 8 / raw_s, 64 * 8 / stored_s
                rounds.append(
                    {"embedder_raw_msgs_per_s": raw, "store_messages_msgs_per_s": stored, "ratio": stored / raw}
                )
            report["batch"] = {**sorted(rounds, key=lambda x: x["ratio"])[len(rounds) // 2], "rounds": rounds}

    print(json.dumps(report, indent=2))
    print("\n| operation | p50 ms | p95 ms | target p95 |\n|---|---|---|---|")
    for name, r in report["ops_ms"].items():  # type: ignore[union-attr]
        target = TARGETS_MS.get(name)
        p95 = r.get("p95")
        verdict = "" if target is None else f"<= {target} {'ok' if p95 is not None and p95 <= target else 'MISSED'}"
        print(f"| {name} | {r['p50']:.2f} | {'' if p95 is None else f'{p95:.2f}'} | {verdict} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
