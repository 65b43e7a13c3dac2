"""Latency of each core operation on a Citus cluster against one PostgreSQL, and ingest throughput.

    dsn2=$(PYTHON=python ../shared/tools/citus/cluster start /tmp/c2 2 55430)   # coordinator + 2 workers
    dsn1=$(PYTHON=python ../shared/tools/citus/cluster start /tmp/c1 1 55440)   # coordinator + 1 worker
    python benchmarks/citus_latency.py --target "one node=" --target "citus 1 worker=$dsn1" \\
        --target "citus 2 workers=$dsn2"

A target with an empty DSN is a private embedded PostgreSQL (one node). A Citus target's database is
migrated and converted (``ltst citus-prepare``) if it is not yet; every run writes users of its own.
For each target: ingest (``store_messages``, batches of one session's messages, ``--writers`` threads),
then each operation ``--n`` times on users and sessions picked at random. The embedder is the hashing
one (384 dimensions, microseconds): the figures are the database's. Prints JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, machine, percentiles, server, texts

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
from ltst_memory._cli_citus import prepare_for_citus
from ltst_memory.migrate import migrate


def prepared(dsn: str) -> str:
    """The DSN, migrated and, on Citus, converted."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        citus = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").fetchone()
        if citus and citus[0]:
            prepare_for_citus(conn)
    return dsn


def ingest(
    store: ConversationStorage, run: str, users: int, sessions: int, messages: int, writers: int
) -> dict[str, Any]:
    """Create ``users`` x ``sessions`` sessions and store ``messages`` in each, one batch per session,
    from ``writers`` threads; return the sessions by user and the throughput."""
    words = texts(messages * 4)
    plan = [(f"{run}-u{u}", f"{run}-u{u}-s{s}") for u in range(users) for s in range(sessions)]
    for user, sid in plan:
        store.create_session(ConversationSession(session_id=sid, user_id=user))
    chunks = [plan[w::writers] for w in range(writers)]

    def write(chunk: list[tuple[str, str]]) -> None:
        for _, sid in chunk:
            store.store_messages(
                [
                    ConversationMessage(session_id=sid, role="human" if i % 2 == 0 else "ai", content=words[i])
                    for i in range(messages)
                ]
            )

    began = time.perf_counter()
    threads = [threading.Thread(target=write, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    by_user: dict[str, list[str]] = {}
    for user, sid in plan:
        by_user.setdefault(user, []).append(sid)
    total = len(plan) * messages
    return {"by_user": by_user, "messages": total, "seconds": seconds, "messages_per_s": total / seconds}


class StatementClock:
    """Time spent in each statement (by its first line) while ``on``: where the ingest time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.on = False
        self.lock = threading.Lock()
        original = ConversationStorage._execute

        def execute(store: Any, conn: Any, query: Any, replica: bool = False) -> Any:
            began = time.perf_counter()
            try:
                return original(store, conn, query, replica)
            finally:
                if self.on:
                    key = " ".join(query.sql.split())[:70]
                    with self.lock:
                        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - began

        ConversationStorage._execute = execute  # type: ignore[method-assign]

    def top(self, total: float, n: int = 6) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])[:n]]


CLOCK = StatementClock()


def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    rng = random.Random(0)
    with ConversationStorage(dsn, embedder=HashingEmbedder(384), pool_max_size=max(2, args.writers)) as store:
        loaded = ingest(store, run, args.users, args.sessions, args.messages, args.writers)
        CLOCK.seconds.clear()
        CLOCK.on = True
        one = ingest(store, run + "x", max(1, args.users // 4), args.sessions, args.messages, 1)
        CLOCK.on = False
        one["time_by_statement_percent"] = CLOCK.top(one["seconds"])
        users = list(loaded["by_user"])
        sessions = [s for ss in loaded["by_user"].values() for s in ss]
        owner = {s: u for u, ss in loaded["by_user"].items() for s in ss}

        def scoped(sid: str) -> Any:  # the user-scoped store of the session's owner: routed by user on Citus
            return store.for_user(owner[sid])

        ops: dict[str, Any] = {
            "create_session": lambda i: store.create_session(
                ConversationSession(session_id=f"{run}-new-{i}", user_id=rng.choice(users))
            ),
            "store_message": lambda i: store.store_message(
                ConversationMessage(session_id=rng.choice(sessions), role="human", content=f"one more {i}")
            ),
            "get_messages(50)": lambda i: store.get_messages(rng.choice(sessions), limit=50),
            "get_messages(50), owner not known yet": lambda i: store._core.session_owners.clear()
            or store.get_messages(rng.choice(sessions), limit=50),
            "get_user_sessions": lambda i: store.get_user_sessions(rng.choice(users)),
            "search_messages(user_id)": lambda i: store.search_messages("tea garden", user_id=rng.choice(users)),
            "search_messages(session_id)": lambda i: store.search_messages("tea", session_id=rng.choice(sessions)),
            "search_messages (every user)": lambda i: store.search_messages("tea garden"),
            "recall(user_id)": lambda i: store.recall("what about the garden?", user_id=rng.choice(users)),
            "rehydrate(session)": lambda i: store.rehydrate(rng.choice(sessions), query="garden"),
            "for_user: store_message": lambda i: (sid := rng.choice(sessions))
            and scoped(sid).store_message(ConversationMessage(session_id=sid, role="human", content=f"scoped {i}")),
            "for_user: get_messages(50)": lambda i: (sid := rng.choice(sessions))
            and scoped(sid).get_messages(sid, limit=50),
            "for_user: search_messages(session_id)": lambda i: (sid := rng.choice(sessions))
            and scoped(sid).search_messages("tea", session_id=sid),
            "for_user: rehydrate(session)": lambda i: (sid := rng.choice(sessions))
            and scoped(sid).rehydrate(sid, query="garden"),
        }
        results: dict[str, Any] = {
            "ingest": {k: v for k, v in loaded.items() if k != "by_user"} | {"writers": args.writers},
            "ingest_1_writer": {k: v for k, v in one.items() if k != "by_user"} | {"writers": 1},
        }
        for name, fn in ops.items():
            for i in range(5):
                fn(-1 - i)
            samples = []
            for i in range(args.n):
                t = time.perf_counter()
                fn(i)
                samples.append(time.perf_counter() - t)
            results[name] = percentiles(samples)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", default=[], help="NAME=DSN (empty DSN: embedded, one node)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=2, help="sessions per user")
    parser.add_argument("--messages", type=int, default=20, help="messages per session")
    parser.add_argument("--writers", type=int, default=2, help="ingest threads")
    parser.add_argument("--n", type=int, default=100, help="timed calls per operation")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "targets": {}}
    for target in args.target or ["one node="]:
        name, _, dsn = target.partition("=")
        if dsn:
            report["targets"][name] = measure(prepared(dsn), args)
        else:
            with server() as admin:
                report["targets"][name] = measure(prepared(fresh_database(admin, "ltst_bench_citus")), args)
        print(f"{name}: done", file=sys.stderr)
    print(json.dumps(report, indent=2))
    names = list(report["targets"])
    print("\n| operation (p50 ms / p95 ms) | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    ops = [k for k in report["targets"][names[0]] if not k.startswith("ingest")]
    for op in ops:
        cells = [f"{report['targets'][n][op]['p50']:.2f} / {report['targets'][n][op]['p95']:.2f}" for n in names]
        print(f"| {op} | " + " | ".join(cells) + " |")
    for key in ("ingest", "ingest_1_writer"):
        cells = [f"{report['targets'][n][key]['messages_per_s']:.0f} msg/s" for n in names]
        print(f"| {key} ({report['targets'][names[0]][key]['writers']} writer(s)) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
