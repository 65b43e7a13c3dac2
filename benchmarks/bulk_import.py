"""Bulk-import throughput (issue 5): ``import_messages`` with precomputed vectors into a non-empty store.

    nice -n 5 python benchmarks/bulk_import.py [--messages 100000] [--existing 100000] [--sessions 1000]
        [--users 100] [--batch-size 10000] [--workers 2] [--metadata] [--uuids] [--keep-vector-index] [--no-rebuild]
        [--no-reference] [--without term-stats|secondary-indexes] [--profile FILE] [--dsn ...] [--json FILE]

Starts a private embedded PostgreSQL (or uses ``--dsn``, a superuser DSN), creates a fresh database
with ``track_functions = 'all'``, creates ``--sessions`` sessions of ``--users`` users and loads
``--existing`` messages (untimed), then times ``import_messages`` of ``--messages`` more, all with
precomputed unit vectors (no model is loaded). As in a real bulk load, the IVFFlat vector index is
built after it (``ltst vector-index``: ``ltst_memory.hnsw.build_index``), timed and reported
separately (``--keep-vector-index`` builds it over the preloaded messages before the timed import,
which then maintains it; ``--no-rebuild`` skips the build after).

The report (JSON, then a short table) gives the rate and where the time went:

* ``python_s``: validation and row encoding in Python (``BulkResult.encode_seconds``);
* ``copy_s``: inside ``COPY ... FROM STDIN (FORMAT BINARY)``, which includes the statement-level
  triggers since they fire at the end of the statement (``BulkResult.copy_seconds``);
* ``other_db_s``: the other statements of each batch (session locks, uuid lookup, index advance,
  commit);
* ``trigger_functions``: self/total time of the trigger functions during the timed import, from
  ``pg_stat_user_functions``;
* ``explain_one_batch``: ``EXPLAIN ANALYZE`` of an ``INSERT ... SELECT`` of one batch's worth of rows
  (rolled back), which attributes time to each trigger, the foreign-key check included.

``--without term-stats`` / ``--without secondary-indexes`` (what-if runs, NOT a supported mode: the
statistics are left wrong) disable the BM25 term-statistics trigger, or drop the five non-unique
secondary indexes of ``conversation_messages`` (rebuilt and timed after), during the timed import.

``--profile FILE`` writes a cProfile of the timed import (Python side) to FILE and prints its top 25.
Data: the 12-word texts of ``_common.texts``; vectors clustered around random centres; roles
alternate human/ai; ``--metadata`` gives each message ``{"speaker": ..., "turn": i}``, ``--uuids`` a
client ``message_uuid`` (the idempotency path).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clustered_vectors, fresh_database, machine, server, texts

DATABASE = "ltst_bench_bulk"
#: The non-unique secondary indexes of conversation_messages (besides the vector index), for the what-if runs.
SECONDARY_INDEXES = (
    "idx_messages_user_time",
    "idx_messages_session_time",
    "idx_messages_content_hash",
    "idx_messages_metadata",
    "idx_messages_search_tsv",
)


def messages(start: int, n: int, args: argparse.Namespace, corpus: list[str], vectors: Any) -> Any:
    from ltst_memory import ConversationMessage

    for i in range(start, start + n):
        yield ConversationMessage(
            session_id=f"s{i % args.sessions}",
            role="human" if i % 2 == 0 else "ai",
            content=corpus[i],
            embedding=vectors[i],
            metadata={"speaker": "Caroline" if i % 2 == 0 else "Melanie", "turn": i} if args.metadata else {},
            message_uuid=str(uuid.UUID(int=i + 1)) if args.uuids else None,
        )


def server_cpu(dsn: str) -> float | None:
    """CPU seconds used so far by the server's processes (backends and background workers) that are
    alive now; ``None`` when the server is not on this machine (``/proc`` not readable)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")]
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
    except OSError:
        return None
    return total


def function_stats(dsn: str) -> dict[str, dict[str, float]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions ORDER BY funcname"
        ).fetchall()
    return {r[0]: {"calls": r[1], "total_ms": r[2], "self_ms": r[3]} for r in rows}


def function_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, a in after.items():
        b = before.get(name, {"calls": 0, "total_ms": 0.0, "self_ms": 0.0})
        calls = a["calls"] - b["calls"]
        if calls:
            out[name] = {
                "calls": calls,
                "total_s": round((a["total_ms"] - b["total_ms"]) / 1000, 3),
                "self_s": round((a["self_ms"] - b["self_ms"]) / 1000, 3),
            }
    return out


def explain_one_batch(dsn: str, n: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE an INSERT ... SELECT of ``n`` copies of stored rows (new uuids, new indexes),
    rolled back: execution time per trigger (FK check included) for one batch."""
    cols = (
        "session_id, user_id, role, content, message_type, message_index, parent_message_id, metadata, "
        'embedding, relevance_score, is_context_message, "timestamp"'
    )
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {cols} FROM conversation_messages "
            "ORDER BY message_id DESC LIMIT %s",
            (n,),
        )
        conn.execute("UPDATE stage SET message_index = message_index + 100000000")
        conn.execute("ANALYZE stage")
        plan = conn.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO conversation_messages ({cols}) SELECT {cols} FROM stage"
        ).fetchone()[0][0]
        conn.rollback()
    triggers = {t["Trigger Name"]: round(t["Time"] / 1000, 3) for t in plan.get("Triggers", [])}
    total = plan["Execution Time"] / 1000
    return {
        "rows": n,
        "execution_s": round(total, 3),
        "insert_node_s": round(plan["Plan"]["Actual Total Time"] / 1000, 3),
        "triggers_s": triggers,
    }


def bare_copy_rate(store: Any, dsn: str, batch: list[Any], batch_size: int) -> float:
    """Messages/s of the same binary COPY stream into a table with the same columns and nothing else (no
    index, constraint, trigger or generated column): the floor set by the machine, not by the schema."""
    from ltst_memory import _bulk_rows
    from ltst_memory.bulk import COPY_MESSAGES

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bare_messages")
        conn.execute(
            "CREATE TABLE bare_messages AS SELECT message_uuid, session_id, user_id, role, content, message_type, "
            'message_index, parent_message_id, metadata, embedding, relevance_score, is_context_message, "timestamp" '
            "FROM conversation_messages LIMIT 0"
        )
        conn.execute("ALTER TABLE bare_messages ALTER COLUMN embedding SET STORAGE MAIN")
    sql_text = COPY_MESSAGES.replace("conversation_messages", "bare_messages")
    elapsed = 0.0
    with psycopg.connect(dsn) as conn:
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            t = time.perf_counter()
            prepared = _bulk_rows.prepare(store._core, chunk)
            owners = {m.session_id: _bulk_rows.text_field("u") for m in chunk}
            stream = prepared.encode(list(range(len(chunk))), [0] * len(chunk), owners, 0)
            with conn.cursor() as cur, cur.copy(sql_text) as copy:
                for data in stream:
                    copy.write(data)
            conn.commit()
            elapsed += time.perf_counter() - t
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE bare_messages")
    return len(batch) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="messages imported in the timed run")
    parser.add_argument("--existing", type=int, default=100_000, help="messages stored before the timed run")
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="import_messages(workers=...): connections at once")
    parser.add_argument("--metadata", action="store_true", help="give every message a small metadata dict")
    parser.add_argument("--uuids", action="store_true", help="give every message a client message_uuid")
    parser.add_argument(
        "--keep-vector-index", action="store_true", help="build the vector index before the timed import"
    )
    parser.add_argument("--no-rebuild", action="store_true", help="do not build the vector index afterwards")
    parser.add_argument(
        "--without",
        action="append",
        choices=["term-stats", "secondary-indexes"],
        default=[],
        help="what-if: run the timed import without this (repeatable)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the bare-table COPY reference")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the timed import here")
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    from ltst_memory import ConversationSession, ConversationStorage, HashingEmbedder
    from ltst_memory.hnsw import build_index

    total = args.existing + args.messages
    corpus = texts(total)
    vectors = clustered_vectors(total)
    report: dict[str, Any] = {
        "machine": machine(),
        "existing": args.existing,
        "messages": args.messages,
        "sessions": args.sessions,
        "users": args.users,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "metadata": args.metadata,
        "uuids": args.uuids,
        "vector_index_during_import": args.keep_vector_index,
        "without": args.without,
    }
    embedder = HashingEmbedder(384)
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, DATABASE)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET track_functions = 'all'").format(sql.Identifier(DATABASE)))
        with ConversationStorage(dsn, embedder=embedder) as store:
            for s in range(args.sessions):
                store.create_session(ConversationSession(session_id=f"s{s}", user_id=f"u{s % args.users}"))
            t = time.perf_counter()
            if args.existing:
                store.import_messages(messages(0, args.existing, args, corpus, vectors), batch_size=args.batch_size)
            report["preload_s"] = round(time.perf_counter() - t, 2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE conversation_messages")
            if args.keep_vector_index:
                build_index(conn)
            if "term-stats" in args.without:
                conn.execute("ALTER TABLE conversation_messages DISABLE TRIGGER trg_messages_term_stats_insert")
            dropped: list[str] = []
            if "secondary-indexes" in args.without:
                for name in SECONDARY_INDEXES:
                    row = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()
                    dropped.append(row[0])
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            conn.execute("CHECKPOINT")
        before = function_stats(dsn)

        batch = list(messages(args.existing, args.messages, args, corpus, vectors))
        profiler = cProfile.Profile() if args.profile else None
        with ConversationStorage(dsn, embedder=embedder) as store:
            store.get_session("s0")  # open the pool before timing
            cpu_before = server_cpu(dsn)
            client_before = time.process_time()
            t = time.perf_counter()
            if profiler:
                profiler.enable()
            result = store.import_messages(batch, batch_size=args.batch_size, workers=args.workers)
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - t
            client_cpu = time.process_time() - client_before
            cpu_after = server_cpu(dsn)
            if not args.no_reference:
                report["bare_table_copy_msgs_per_s"] = round(bare_copy_rate(store, dsn, batch, args.batch_size))
        time.sleep(1.0)  # the store's backends flush their function statistics as they exit
        after = function_stats(dsn)

        assert result.inserted == args.messages, result
        python_s = getattr(result, "encode_seconds", None)
        copy_s = getattr(result, "copy_seconds", None)
        report["import"] = {
            "msgs_per_s": round(args.messages / wall),
            "wall_s": round(wall, 3),
            "python_s": None if python_s is None else round(python_s, 3),
            "copy_s": None if copy_s is None else round(copy_s, 3),
            # with several workers python_s and copy_s add up over them (more than the wall time)
            "other_db_s": None
            if python_s is None or copy_s is None or args.workers > 1
            else round(wall - python_s - copy_s, 3),
            "batches": result.batches,
            "client_cpu_s": round(client_cpu, 3),
            "server_cpu_s": None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 3),
        }
        report["trigger_functions"] = function_delta(before, after)
        report["explain_one_batch"] = explain_one_batch(dsn, min(args.batch_size, args.messages))

        with psycopg.connect(dsn, autocommit=True) as conn:
            if "term-stats" in args.without:
                conn.execute("ALTER TABLE conversation_messages ENABLE TRIGGER trg_messages_term_stats_insert")
            if "secondary-indexes" in args.without:
                conn.execute("SET maintenance_work_mem = '1GB'")
                t = time.perf_counter()
                for statement in dropped:
                    conn.execute(statement)
                report["secondary_indexes_rebuild_s"] = round(time.perf_counter() - t, 2)
            # BM25 statistics against a recount from the stored messages (exact: no row differs)
            differing = conn.execute(
                "WITH kept AS (SELECT user_id, term, doc_count FROM ltst_term_stats), "
                "truth AS (SELECT m.user_id, t.lexeme AS term, count(*) AS doc_count "
                "          FROM conversation_messages AS m, unnest(m.search_tsv) AS t GROUP BY 1, 2) "
                "SELECT count(*) FROM ((TABLE kept EXCEPT TABLE truth) UNION ALL (TABLE truth EXCEPT TABLE kept)) AS d"
            ).fetchone()[0]
            report["term_stats_exact"] = differing == 0
            if not args.no_rebuild:
                t = time.perf_counter()
                build_index(conn)  # what `ltst vector-index` runs after a bulk load
                report["vector_index_build_s"] = round(time.perf_counter() - t, 2)
                report["vector_index_rows"] = total
                report["msgs_per_s_including_index_build"] = round(
                    args.messages / (wall + report["vector_index_build_s"])
                )

    print(json.dumps(report, indent=2))
    imp = report["import"]
    print("\n| measurement | value |\n|---|---|")
    title = f"import_messages, {args.messages:,} onto {args.existing:,}, workers={args.workers}"
    print(f"| {title} | **{imp['msgs_per_s']:,} msg/s** ({imp['wall_s']} s) |")
    if imp["python_s"] is not None:
        print(f"| Python: validation + encoding | {imp['python_s']} s |")
        print(f"| inside COPY (rows, indexes, triggers) | {imp['copy_s']} s |")
        if imp["other_db_s"] is not None:
            print(f"| other statements + commits | {imp['other_db_s']} s |")
    print(f"| CPU: client process / server processes | {imp['client_cpu_s']} s / {imp['server_cpu_s']} s |")
    print(
        f"| BM25 term statistics equal a recount after the import | {'yes' if report['term_stats_exact'] else 'NO'} |"
    )
    if "bare_table_copy_msgs_per_s" in report:
        print(f"| reference: same COPY into a bare table | {report['bare_table_copy_msgs_per_s']:,} msg/s |")
    for name, fn in report["trigger_functions"].items():
        print(f"| function {name} ({fn['calls']} calls) | total {fn['total_s']} s, self {fn['self_s']} s |")
    ex = report["explain_one_batch"]
    explained = f"{ex['execution_s']} s, insert node {ex['insert_node_s']} s"
    print(f"| EXPLAIN ANALYZE INSERT of {ex['rows']:,} rows | {explained} |")
    for name, seconds in ex["triggers_s"].items():
        print(f"| &nbsp; trigger {name} | {seconds} s |")
    if "secondary_indexes_rebuild_s" in report:
        print(f"| what-if: rebuild of the 5 dropped secondary indexes | {report['secondary_indexes_rebuild_s']} s |")
    if "vector_index_build_s" in report:
        rows = report["vector_index_rows"]
        print(f"| IVFFlat index build over {rows:,} rows (separate) | {report['vector_index_build_s']} s |")
    if args.profile:
        profiler.dump_stats(args.profile)  # type: ignore[union-attr]
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
