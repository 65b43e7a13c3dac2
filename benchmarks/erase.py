"""The cost of erasing one user (``delete_user``) in a table of N messages, and of its ANALYZE.

    HF_HUB_OFFLINE=1 python benchmarks/erase.py [--size 100000] [--users 5]

Loads ``--size`` messages (1,000 per user, 10 sessions each; bulk import with precomputed vectors),
then erases ``--users`` users one by one and reports, per erase, the whole ``delete_user`` call and
the part spent refreshing planner statistics (``ltst_analyze_owned_tables``, timed alone right after
on the same tables), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrecomputedEmbedder, clustered_vectors, fresh_database, machine, server, texts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PER_USER = 1_000
PER_SESSION = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    args = parser.parse_args()

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

    vectors = clustered_vectors(args.size, seed=5)
    corpus = texts(args.size)
    embedder = PrecomputedEmbedder()
    users = args.size // PER_USER
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_bench_erase")
        with ConversationStorage(dsn, embedder=embedder) as store:
            for u in range(users):
                for s in range(PER_USER // PER_SESSION):
                    store.create_session(ConversationSession(session_id=f"u{u}-s{s}", user_id=f"u{u}"))

            def rows():
                for i in range(args.size):
                    u, k = divmod(i, PER_USER)
                    yield ConversationMessage(
                        session_id=f"u{u}-s{k // PER_SESSION}", role="human", content=corpus[i], embedding=vectors[i]
                    )

            store.import_messages(rows())
            with store.pool.connection() as conn:
                conn.execute("ANALYZE")
            erase_ms, analyze_ms = [], []
            for u in range(args.users):
                t = time.perf_counter()
                result = store.delete_user(f"u{u}")
                erase_ms.append(1000 * (time.perf_counter() - t))
                assert result.complete and result["messages"] == PER_USER
                with store.pool.connection() as conn:
                    t = time.perf_counter()
                    conn.execute("SELECT ltst_analyze_owned_tables(%s::text[])", (list(result.analyzed),))
                    analyze_ms.append(1000 * (time.perf_counter() - t))
    out = {
        "machine": machine(),
        "messages": args.size,
        "delete_user_ms": [round(x, 1) for x in erase_ms],
        "of_which_analyze_ms": [round(x, 1) for x in analyze_ms],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
