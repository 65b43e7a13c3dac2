"""A/B of the store's per-call latency against another version of ltst-memory, on one server.

    git archive main | tar -x -C /tmp/base && ln -s ../schema /tmp/base/ltst_memory/schema \\
        && ln -s ../adapters /tmp/base/ltst_memory/adapters
    python benchmarks/ab_latency.py /tmp/base [--rounds 8] [--n 300]

Starts a private embedded PostgreSQL with one database (a session of 200 messages), then runs,
alternately ``--rounds`` times, a child process with the baseline's code and one with this checkout's:
each opens a store and times ``--n`` calls of create_session, store_message (precomputed vector),
get_messages(50) and get_session. Prints, per operation, the median over the rounds of each round's
p50 (alternating rounds spread the load of a shared machine over both versions). Hashing embedder:
no model is loaded.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CHILD = """
import statistics, sys, time, uuid
root, dsn, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if root:
    sys.path.insert(0, root)
import numpy as np
from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
tag = uuid.uuid4().hex[:8]
out = {}
with ConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
    store.create_session(ConversationSession(session_id=f"w-{tag}", user_id="u"))
    calls = {
        "create_session": lambda i: store.create_session(ConversationSession(session_id=f"{tag}-{i}", user_id="u")),
        "store_message": lambda i: store.store_message(
            ConversationMessage(session_id=f"w-{tag}", role="human", content=f"m {i}", embedding=vector)
        ),
        "get_messages(50)": lambda i: store.get_messages("s0", limit=50),
        "get_session": lambda i: store.get_session("s0"),
    }
    for name, call in calls.items():
        times = []
        for i in range(n):
            began = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - began)
        out[name] = statistics.median(times) * 1000
print(repr(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="a source tree of ltst-memory to compare with")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    import numpy as np
    import psycopg
    from psycopg.conninfo import make_conninfo

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
    from ltst_memory._connection import acquire_embedded, release_embedded

    data_dir = Path(tempfile.mkdtemp(prefix="ltst-ab-"))
    admin = make_conninfo(acquire_embedded(data_dir), dbname="postgres")
    try:
        name = f"ab_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        dsn = make_conninfo(admin, dbname=name)
        with ConversationStorage(dsn, embedder=HashingEmbedder(384)) as store:
            store.create_session(ConversationSession(session_id="s0", user_id="u"))
            vectors = np.random.default_rng(1).standard_normal((200, 384)).astype(np.float32)
            store.import_messages(
                [
                    ConversationMessage(session_id="s0", role="human", content=f"x {i}", embedding=vectors[i])
                    for i in range(200)
                ]
            )
        results: dict[str, list[dict[str, float]]] = {"baseline": [], "this checkout": []}
        started = time.perf_counter()
        for _ in range(args.rounds):
            for label, root in (("baseline", str(args.baseline.resolve())), ("this checkout", "")):
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, root, dsn, str(args.n)],
                    capture_output=True, text=True, check=True, cwd=tempfile.gettempdir(),
                )  # fmt: skip
                results[label].append(eval(done.stdout.strip().splitlines()[-1]))
        print(f"{args.rounds} rounds x {args.n} calls, {time.perf_counter() - started:.0f} s\n")
        print("| operation | baseline p50 ms | this checkout p50 ms | change |\n|---|---|---|---|")
        for op in results["baseline"][0]:
            a = statistics.median(r[op] for r in results["baseline"])
            b = statistics.median(r[op] for r in results["this checkout"])
            print(f"| {op} | {a:.3f} | {b:.3f} | {100 * (b / a - 1):+.1f} % |")
    finally:
        release_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
