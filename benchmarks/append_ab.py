"""The single append's statement, old and new, alternating in one process on one loaded database.

    python benchmarks/append_ab.py --data-dir /tmp/copy-of-peers100k --rounds 4 [--lists 100]

``--data-dir``: an embedded data directory holding a loaded store (``peers.py``'s data set, say); work
on a copy, it appends and rebuilds the main vector index each round. Each round runs, in turn:

* ``old``: the IVFFlat index over every message (kept on each insert), schema/0001's summary trigger
  (two statements, a new version of the session row from each), and the one-session statement with
  its values bound as arrays (INSERT_MESSAGES_ONE_SESSION without ``last_activity``);
* ``new``: the index up to a watermark (no insert into it), schema/0017's trigger, and
  ``_queries.INSERT_MESSAGE`` (values bound one by one, ``last_activity`` set in its UPDATE);

``--n`` prepared executions each (autocommit, ``synchronous_commit`` as the server has it), printing
p50 / p95 per round and the median of the rounds' p50; then 200 ``EXPLAIN ANALYZE`` of each for the
server's execution time and each trigger's (medians). The BM25 statistics trigger is the same in both.
"""

from __future__ import annotations

import argparse
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from ltst_memory import ConversationStorage
from ltst_memory import _queries as q
from ltst_memory.embeddings import HashingEmbedder

SCHEMA = Path(__file__).parents[1] / "schema"
_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION ltst_messages_after_insert\(\).*?\n\$\$;", re.S)
OLD_STATEMENT = q.INSERT_MESSAGES_ONE_SESSION.replace(",\n        last_activity = GREATEST(last_activity, now())", "")
INDEX = (
    "CREATE INDEX idx_messages_embedding_ivfflat ON conversation_messages"
    " USING ivfflat (embedding vector_cosine_ops) WITH (lists = {lists})"
)


class Embedder(HashingEmbedder):
    model_name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        super().__init__(384)


def variants(lists: int) -> dict[str, tuple[str, str, bool]]:
    """name -> (set-up SQL, statement, values as scalars)."""
    old_trigger = _FUNCTION.search((SCHEMA / "0001_ltst_schema.sql").read_text())
    new_trigger = _FUNCTION.search((SCHEMA / "0017_append_path.sql").read_text())
    assert old_trigger and new_trigger and OLD_STATEMENT != q.INSERT_MESSAGES_ONE_SESSION
    drop = "DROP INDEX IF EXISTS idx_messages_embedding_ivfflat;\n"
    partial = (
        "DO $d$ BEGIN EXECUTE format('" + INDEX.format(lists=lists) + " WHERE message_id <= %s::bigint', "
        "(SELECT max(message_id) FROM conversation_messages)); END $d$;\n"
    )
    return {
        "old": (drop + INDEX.format(lists=lists) + ";\n" + old_trigger.group(0), OLD_STATEMENT, False),
        "new": (drop + partial + new_trigger.group(0), q.INSERT_MESSAGE, True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--lists", type=int, default=100, help="the IVFFlat lists (messages / 1000)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chosen = variants(args.lists)
    with (
        ConversationStorage(data_dir=args.data_dir, embedder=Embedder()) as store,
        psycopg.connect(store.pool.conninfo, autocommit=True) as conn,
    ):
        register_vector(conn)
        count = conn.execute("SELECT count(*) FROM conversation_sessions").fetchone()
        sessions = int(count[0]) - 200 if count else 1

        def values(i: int, scalar: bool) -> dict[str, Any]:
            one: dict[str, Any] = {
                "message_uuid": uuid.uuid4(),
                "role": "human",
                "content": f"new words about the weather and a dog {i}",
                "message_type": "message",
                "metadata": "{}",
                "embedding": vectors[i % len(vectors)],
                "relevance_score": 0.0,
                "is_context_message": False,
                "timestamp": None,
            }
            if not scalar:
                one = {k: [v] for k, v in one.items()}
            return {**one, "session_id": f"s{rng.integers(sessions)}"}

        p50s: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, (setup, statement, scalar) in chosen.items():
                conn.execute(setup)
                sql = statement.replace("/*owner*/", "")
                samples = []
                for i in range(args.n):
                    t = time.perf_counter()
                    conn.execute(sql, values(i, scalar), prepare=True).fetchall()
                    samples.append(time.perf_counter() - t)
                ms = np.array(samples[20:]) * 1000
                p50s.setdefault(name, []).append(float(np.percentile(ms, 50)))
                print(
                    f"round {r} {name}: p50 {np.percentile(ms, 50):.3f} p95 {np.percentile(ms, 95):.3f} ms"
                    f" (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        for name, (setup, statement, scalar) in chosen.items():
            conn.execute(setup)
            sql = statement.replace("/*owner*/", "")
            times: dict[str, list[float]] = {}
            for i in range(200):
                with conn.transaction():
                    explained = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, values(i, scalar)).fetchone()
                plan = explained[0][0] if explained else {}
                times.setdefault("execution", []).append(plan["Execution Time"])
                for trigger in plan.get("Triggers", []):
                    if trigger["Trigger Name"].startswith("trg_"):
                        times.setdefault(trigger["Trigger Name"], []).append(trigger["Time"])
            print(name, "server ms (medians):", {k: round(float(np.median(v)), 3) for k, v in times.items()})
        print("p50 ms, median of the rounds:", {k: round(float(np.median(v)), 3) for k, v in p50s.items()})


if __name__ == "__main__":
    main()
