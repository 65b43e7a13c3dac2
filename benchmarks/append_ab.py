"""The single append's statement, old and new, alternating in one process on one loaded database.

    python benchmarks/append_ab.py --data-dir /tmp/copy-of-peers100k --rounds 4 [--lists 100]

``--data-dir``: an embedded data directory holding a loaded store (``peers.py``'s data set, say); work
on a copy, it appends to it (and opening it applies this version's migrations). The main vector index is
rebuilt once, up to a watermark, as a store keeps it. Each round runs, in turn:

* ``old``: migration 0017's append: ``OLD_STATEMENT`` (``_queries.INSERT_MESSAGE`` before 0018) and the
  two statement-level insert triggers (the session summary; the BM25 statistics, ~8 upserts into
  ``ltst_term_stats``) firing on it;
* ``new``: migration 0018's: ``_queries.INSERT_MESSAGE`` (the summary and ``ltst_user_stats`` in the
  statement, the message recorded in ``ltst_term_pending``; the triggers skip it) and, as the store does,
  ``_queries.FOLD_TERM_PENDING`` after each message id divisible by ``FOLD_EVERY``, timed with it;

``--n`` prepared executions each (autocommit, ``synchronous_commit`` as the server has it), printing per
round p50 / p95 / mean and, at the end, the median of the rounds'; then 200 ``EXPLAIN ANALYZE`` of each
statement for the server's execution time and each trigger's (medians), the time of a fold of
``FOLD_EVERY`` pending appends (median of 15), and two rounds of two writers appending at once to two
sessions of one user (``--n`` each, own connections): appends per second and p50.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from _common import PeersModelEmbedder, unit_vectors
from pgvector.psycopg import register_vector

from ltst_memory import ConversationStorage
from ltst_memory import _queries as q

#: The store's single append before migration 0018 (the triggers keep the summary and the statistics).
OLD_STATEMENT = f"""
WITH session AS (
    UPDATE conversation_sessions
    SET next_message_index = next_message_index + 1, last_activity = GREATEST(last_activity, now())
    WHERE session_id = %(session_id)s
    RETURNING user_id, next_message_index - 1 AS message_index
)
INSERT INTO conversation_messages
    (message_uuid, session_id, user_id, role, content, message_type, message_index, metadata, embedding,
     relevance_score, is_context_message, "timestamp")
SELECT %(message_uuid)s, %(session_id)s, s.user_id, %(role)s, %(content)s, %(message_type)s, s.message_index,
       %(metadata)s::jsonb, %(embedding)b::vector, %(relevance_score)s, %(is_context_message)s,
       coalesce(%(timestamp)s::timestamptz, now())
FROM session AS s
RETURNING {q.MESSAGE_ROW_COLUMNS}
"""
NEW_STATEMENT = q.INSERT_MESSAGE.replace("/*owner*/", "")

_TRIGGERS = (
    ("trg_messages_after_insert", "ltst_messages_after_insert"),
    ("trg_messages_term_stats_insert", "ltst_term_stats_after_insert"),
)
_WHEN = "WHEN (current_setting('ltst.append_statement', true) IS DISTINCT FROM statement_timestamp()::text)"


def triggers(when: bool) -> str:
    """The two insert triggers as 0017 had them (``when=False``) or as 0018 has them."""
    return "".join(
        f"DROP TRIGGER IF EXISTS {name} ON conversation_messages;\n"
        f"CREATE TRIGGER {name} AFTER INSERT ON conversation_messages REFERENCING NEW TABLE AS new_messages"
        f" FOR EACH STATEMENT {_WHEN if when else ''} EXECUTE FUNCTION {function}();\n"
        for name, function in _TRIGGERS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--lists", type=int, default=100, help="the IVFFlat lists (messages / 1000)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 500)
    chosen = {"old": (triggers(False), OLD_STATEMENT, False), "new": (triggers(True), NEW_STATEMENT, True)}
    with (
        ConversationStorage(data_dir=args.data_dir, embedder=PeersModelEmbedder()) as store,
        psycopg.connect(store.pool.conninfo, autocommit=True) as conn,
    ):
        register_vector(conn)
        conn.execute(
            "DROP INDEX IF EXISTS idx_messages_embedding_ivfflat;"
            "DO $d$ BEGIN EXECUTE format('CREATE INDEX idx_messages_embedding_ivfflat ON conversation_messages"
            f" USING ivfflat (embedding vector_cosine_ops) WITH (lists = {args.lists})"
            " WHERE message_id <= %s::bigint', (SELECT max(message_id) FROM conversation_messages)); END $d$"
        )
        conn.execute(q.FOLD_TERM_PENDING)
        count = conn.execute("SELECT count(*) FROM conversation_sessions").fetchone()
        sessions = int(count[0]) - 200 if count else 1

        def values(i: int) -> dict[str, Any]:
            return {
                "message_uuid": uuid.uuid4(),
                "role": "human",
                "content": f"new words about the weather and a dog {i}",
                "message_type": "message",
                "metadata": "{}",
                "embedding": vectors[i % len(vectors)],
                "relevance_score": 0.0,
                "is_context_message": False,
                "timestamp": None,
                "session_id": f"s{rng.integers(sessions)}",
            }

        def append(statement: str, fold: bool, i: int) -> None:
            row = conn.execute(statement, values(i), prepare=True).fetchone()
            if fold and row and row[0] % q.FOLD_EVERY == 0:
                conn.execute(q.FOLD_TERM_PENDING, prepare=True).fetchone()

        summary: dict[str, list[tuple[float, float, float]]] = {}
        for r in range(args.rounds):
            for name, (setup, statement, fold) in chosen.items():
                conn.execute(setup)
                samples = []
                for i in range(args.n):
                    t = time.perf_counter()
                    append(statement, fold, i)
                    samples.append(time.perf_counter() - t)
                ms = np.array(samples[20:]) * 1000
                p50, p95, mean = float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean())
                summary.setdefault(name, []).append((p50, p95, mean))
                print(
                    f"round {r} {name}: p50 {p50:.3f} p95 {p95:.3f} mean {mean:.3f} ms (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        for name, (setup, statement, _) in chosen.items():
            conn.execute(setup)
            times: dict[str, list[float]] = {}
            for i in range(200):
                with conn.transaction():
                    explained = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, values(i)).fetchone()
                plan = explained[0][0] if explained else {}
                times.setdefault("execution", []).append(plan["Execution Time"])
                for trigger in plan.get("Triggers", []):
                    if trigger["Trigger Name"].startswith("trg_"):
                        times.setdefault(trigger["Trigger Name"], []).append(trigger["Time"])
            medians = {k: round(float(np.median(v)), 3) for k, v in times.items()}
            print(name, "server ms (medians):", medians)
        folds = []
        for _ in range(15):  # the fold alone: FOLD_EVERY pending appends, then one fold
            conn.execute(chosen["new"][0])
            for i in range(q.FOLD_EVERY):
                conn.execute(NEW_STATEMENT, values(i), prepare=True).fetchone()
            t = time.perf_counter()
            conn.execute(q.FOLD_TERM_PENDING, prepare=True).fetchone()
            folds.append(time.perf_counter() - t)
        fold_ms = float(np.median(folds)) * 1000
        print(
            f"fold of {q.FOLD_EVERY} pending appends: p50 {fold_ms:.2f} ms ({fold_ms / q.FOLD_EVERY:.3f} ms an append)"
        )
        # Two writers appending to two sessions of one user at once (each on its own connection)
        user = conn.execute(
            "SELECT user_id FROM conversation_sessions GROUP BY user_id HAVING count(*) >= 2 ORDER BY user_id LIMIT 1"
        ).fetchone()
        own = [
            r[0]
            for r in conn.execute(
                "SELECT session_id FROM conversation_sessions WHERE user_id = %s ORDER BY session_id LIMIT 2", user
            )
        ]

        def writer(statement: str, fold: bool, session_id: str, out: list[float], errors: list[BaseException]) -> None:
            try:
                with psycopg.connect(store.pool.conninfo, autocommit=True) as own_conn:
                    register_vector(own_conn)
                    for i in range(args.n):
                        t = time.perf_counter()
                        one = {**values(i), "session_id": session_id}
                        row = own_conn.execute(statement, one, prepare=True).fetchone()
                        if fold and row and row[0] % q.FOLD_EVERY == 0:
                            own_conn.execute(q.FOLD_TERM_PENDING, prepare=True).fetchone()
                        out.append(time.perf_counter() - t)
            except BaseException as error:  # reported below
                errors.append(error)

        for r in range(2):
            for name, (setup, statement, fold) in chosen.items():
                conn.execute(setup)
                errors: list[BaseException] = []
                samples: list[list[float]] = [[], []]
                threads = [
                    threading.Thread(target=writer, args=(statement, fold, sid, out, errors))
                    for sid, out in zip(own, samples, strict=True)
                ]
                t = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - t
                if errors:
                    raise errors[0]
                ms = np.array(samples[0][20:] + samples[1][20:]) * 1000
                print(
                    f"two writers, one user, round {r} {name}: {2 * args.n / wall:.0f} appends/s,"
                    f" p50 {np.percentile(ms, 50):.3f} ms (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        for name, rounds in summary.items():
            p50, p95, mean = (float(np.median([r[k] for r in rounds])) for k in range(3))
            print(f"{name}: median of the rounds: p50 {p50:.3f} p95 {p95:.3f} mean {mean:.3f} ms")
        conn.execute(chosen["new"][0])  # (as migration 0018 left it)
        conn.execute(q.FOLD_TERM_PENDING)


if __name__ == "__main__":
    main()
