"""recall's lexical (BM25) leg with and without a user's term index (ltst_memory/lexical_index.py).

    python benchmarks/lexical_index.py [--sizes 1000 2000 5000 10000 20000] [--queries 30] [--rounds 3]

One private embedded server (or ``--dsn``, a superuser DSN: a throw-away database is made on it). One
user per size in ``--sizes``, each holding that many of the peer benchmark's synthetic chat lines (12
words drawn from 54: every message of the user matches a question of those words, the worst case of
the leg). Every user's term index is built (``build_lexical_indexes``, what ``ltst lexical-index``
runs), with its build time and size. Then, per user, the leg as a store runs it without an index (a
user up to ``exact_search_max_rows`` read through their btree and matched row by row, a larger one
through the full-text index) and with it (the index up to the watermark, the gap since matched as
before), alternating question by question (``--rounds`` passes over ``--queries`` questions, the
peers' "what did we say about ...?"), on one connection, with the load average. Every answer of the
index is checked against the one without it (same ids in the same order, same scores but for the
last bits of their sums, whose order depends on the plan). Then the same with a gap of
``--gap`` messages stored after the build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import fresh_database, machine, server, texts  # noqa: E402

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage  # noqa: E402
from ltst_memory import _recall_queries as rq  # noqa: E402
from ltst_memory.embeddings import HashingEmbedder  # noqa: E402
from ltst_memory.lexical_index import CUSTOM_PLAN, build_lexical_indexes  # noqa: E402
from ltst_memory.recall import BM25_B, BM25_K1, DEFAULT_CANDIDATES  # noqa: E402

PER_SESSION = 100


def _load(store: ConversationStorage, user: str, n: int, seed: int) -> None:
    for s in range(-(-n // PER_SESSION)):
        store.create_session(ConversationSession(session_id=f"{user}-s{s}", user_id=user))
    lines = texts(n, seed=seed)
    store.import_messages(
        (
            ConversationMessage(
                session_id=f"{user}-s{i // PER_SESSION}", role="human" if i % 2 == 0 else "ai", content=lines[i]
            )
            for i in range(n)
        ),
        batch_size=10_000,
    )


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2),
    }


def _compare(
    conn: psycopg.Connection[Any], user: str, scan: bool, watermark: int, questions: list[str], rounds: int
) -> dict[str, Any]:
    old = rq.lexical_sql(scope=rq.SCOPE_USER, filters="", all_users=False, scan=scan)
    new = rq.lexical_sql(scope=rq.SCOPE_USER, filters="", all_users=False, term_index=())
    base = {"stats_user": user, "user_id": user, "k1": BM25_K1, "b": BM25_B, "candidates": DEFAULT_CANDIDATES}
    times: dict[str, list[float]] = {"without": [], "with": []}
    same = 0
    for _ in range(rounds):
        for q in questions:
            params = {**base, "query": q, "lexical_watermark": watermark}
            t = time.perf_counter()
            expected = conn.execute(old, params, prepare=True).fetchall()
            times["without"].append(time.perf_counter() - t)
            with conn.transaction():
                conn.execute(CUSTOM_PLAN)
                t = time.perf_counter()
                got = conn.execute(new, params, prepare=True).fetchall()
                times["with"].append(time.perf_counter() - t)
            same += [r[0] for r in got] == [r[0] for r in expected] and all(
                abs(a[1] - b[1]) <= 1e-12 * abs(a[1]) for a, b in zip(got, expected, strict=True)
            )
    return {
        "without_index_ms": _ms(times["without"]),
        "with_index_ms": _ms(times["with"]),
        "identical_answers": f"{same}/{rounds * len(questions)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 2_000, 5_000, 10_000, 20_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=int, default=500, help="messages stored after the build, second pass")
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    questions = [f"what did we say about {line.split(':', 1)[1].strip()}?" for line in texts(args.queries, seed=99)]
    results: dict[str, Any] = {"machine": machine(), "users": {}}
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_lexical_index_bench")
        with ConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
            for i, n in enumerate(args.sizes):
                _load(store, f"user{n}", n, seed=i)
            exact_max = store.settings.exact_search_max_rows
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                t = time.perf_counter()
                built = {b.user_id: b for b in build_lexical_indexes(conn, min_rows=0)}
                results["build_all_s"] = round(time.perf_counter() - t, 2)
                size_row = conn.execute("SELECT pg_total_relation_size('ltst_lexical_postings')").fetchone()
                total_bytes = int(size_row[0]) if size_row else 0
                total_postings = sum(b.postings for b in built.values())
                for n in args.sizes:
                    user = f"user{n}"
                    b = built[user]
                    entry: dict[str, Any] = {
                        "build_s": round(b.seconds, 3),
                        "postings": b.postings,
                        "index_mb": round(total_bytes * b.postings / max(total_postings, 1) / 2**20, 1),
                        "without_index": "btree scan" if n <= exact_max else "full-text index",
                    }
                    load = os.getloadavg()[0]
                    entry.update(_compare(conn, user, n <= exact_max, b.watermark, questions, args.rounds))
                    entry["load_avg"] = round(load, 2)
                    results["users"][user] = entry
                    print(json.dumps({user: entry}), flush=True)
            # a gap: messages stored after the build, matched and scored one by one by each question
            for n in args.sizes:
                user = f"user{n}"
                gap_lines = texts(args.gap, seed=1_000 + n)
                store.store_messages(
                    [ConversationMessage(session_id=f"{user}-s0", role="human", content=line) for line in gap_lines]
                )
            with psycopg.connect(dsn, autocommit=True) as conn:
                for n in args.sizes:
                    user = f"user{n}"
                    entry = _compare(conn, user, n <= exact_max, built[user].watermark, questions, args.rounds)
                    entry["load_avg"] = round(os.getloadavg()[0], 2)
                    results["users"][user][f"gap_{args.gap}"] = entry
                    print(json.dumps({user: {f"gap_{args.gap}": entry}}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
