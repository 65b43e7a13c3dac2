"""How a message read builds its objects: straight from the row values (``_queries.message_row``, what
the store does) against dict rows mapped by ``message_from_row`` (what it did before), same statement
otherwise, the calls of both interleaved in one process.

    python benchmarks/read_rows.py [--messages 100000] [--sessions 1000] [--n 3000] [--metadata] [--dsn ...]

Starts a private embedded PostgreSQL (or uses ``--dsn``, a superuser DSN), creates a fresh database and
loads ``--messages`` messages in sessions of ``messages / sessions`` (``import_messages``, random unit
vectors; ``--metadata`` gives every message a small metadata dict, otherwise ``{}`` as in the peer
comparison). Then, for ``--n`` random sessions, each variant is called once per session, the order
alternating: ``get_recent_messages(50)`` and ``get_messages(50)`` through the store, each against the
same operation with dict rows. Prints a JSON report (with the load average) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrecomputedEmbedder, clustered_vectors, fresh_database, machine, percentiles, server, texts


def dict_row_read(statement: str) -> Callable[..., Any]:
    """``get_recent_messages`` / ``get_messages`` as they read before: dict rows, mapped one by one."""
    from ltst_memory import _ops, _queries
    from ltst_memory._kernel import Query

    sql = statement.replace(_queries.MESSAGE_ROW_COLUMNS, _queries.READ_MESSAGE_COLUMNS)
    assert sql != statement

    def read(core: Any, session_id: str, **params: Any) -> Any:
        rows = yield from _ops.session_read(core, session_id, Query(sql, {"session_id": session_id, **params}))
        return [_queries.message_from_row(r) for r in rows]

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--n", type=int, default=3_000, help="calls per variant")
    parser.add_argument("--metadata", action="store_true", help="a small metadata dict on every message")
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
    from ltst_memory import _queries as q

    embedder = PrecomputedEmbedder()
    report: dict[str, Any] = {"messages": args.messages, "sessions": args.sessions, "metadata": args.metadata}
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_bench_read_rows")
        with ConversationStorage(dsn, embedder=embedder) as store:
            corpus = texts(args.messages)
            vectors = clustered_vectors(args.messages)
            for s in range(args.sessions):
                store.create_session(ConversationSession(session_id=f"s{s}", user_id=f"u{s % 100}"))
            store.import_messages(
                (
                    ConversationMessage(
                        session_id=f"s{i // (args.messages // args.sessions)}",
                        role="human" if i % 2 == 0 else "ai",
                        content=corpus[i],
                        embedding=vectors[i],
                        metadata={"speaker": "Ann" if i % 2 == 0 else "Bot", "turn": i, "tags": ["a", "b"]}
                        if args.metadata
                        else {},
                    )
                    for i in range(args.messages)
                ),
                batch_size=10_000,
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            recent_dicts = dict_row_read(q.SELECT_RECENT_MESSAGES)
            page_dicts = dict_row_read(q.SELECT_MESSAGES)
            variants: dict[str, Callable[[str], Any]] = {
                "get_recent_messages(50), message rows": lambda s: store.get_recent_messages(s, limit=50),
                "get_recent_messages(50), dict rows": lambda s: store._run(
                    recent_dicts(store._core, s, limit=50), readonly=True
                ),
                "get_messages(50), message rows": lambda s: store.get_messages(s, limit=50),
                "get_messages(50), dict rows": lambda s: store._run(
                    page_dicts(store._core, s, limit=50, offset=0), readonly=True
                ),
            }
            names = list(variants)
            for pair in (names[:2], names[2:]):
                first, second = (variants[name]("s1") for name in pair)
                assert first == second and first, "both ways must read the same messages"
            for read in variants.values():  # warm up: psycopg prepares a statement on its 5th run
                for s in range(10):
                    read(f"s{s}")
            samples: dict[str, list[float]] = {name: [] for name in names}
            rng = np.random.default_rng(1)
            report["machine at start"] = machine()
            for i in range(args.n):
                session = f"s{rng.integers(args.sessions)}"
                for name in names if i % 2 == 0 else reversed(names):
                    t = time.perf_counter()
                    variants[name](session)
                    samples[name].append(time.perf_counter() - t)
            report["machine at end"] = machine()
            report["ops"] = {name: percentiles(s) for name, s in samples.items()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| read | p50 ms | p95 ms |\n|---|---|---|")
    for name, p in report["ops"].items():
        print(f"| {name} | {p['p50']:.3f} | {p['p95']:.3f} |")


if __name__ == "__main__":
    main()
