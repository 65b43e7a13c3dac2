"""Speed of recall() and rehydrate() on a large store (default 100,000 messages).

    python benchmarks/rehydrate_speed.py [--messages 100000] [--users 100] [--dsn URL | --data-dir DIR]
    python benchmarks/rehydrate_speed.py --data-dir DIR --timeline 30 --timeline-only   # a store as it is

The store is filled with synthetic chat turns (``--data locomo10.json`` uses LoCoMo's turns as text
instead): ``--users`` users with ``--sessions`` sessions each, spread evenly. Stored messages get
deterministic bag-of-words vectors (HashingEmbedder) and are bulk-loaded with COPY (the IVFFlat index
is built afterwards, as ``ltst vector-index`` does, and the term indexes of users over
``lexical_index_min_rows`` messages, as ``ltst lexical-index`` does: none at the default 1,000 per
user); the query side uses the real all-MiniLM-L6-v2
model, so every timed call includes a real query embedding (no vector is cached between calls). Measured:
``recall`` (user scope), ``rehydrate`` with a 2,000-token budget, the pure merge step alone and, with
``--pieces N``, recall's parts: the embedding and its lexical and vector statements, each alone.

``--timeline N`` shows where ``rehydrate``'s time goes: N calls on sessions of the store's largest user
(questions made of words of that user's messages), every statement and the question's embedding timed on
one clock from the call's start; printed per step, the median start and duration, then the call's
critical path: until the embedding ends, the vector statement after it, and the Python after the last
statement (fusion, merge). ``--timeline-only`` runs just that, on the store as it is (e.g. a data dir
``benchmarks/peers.py`` loaded). Timings on a shared 2-core machine are noisy: report them with the load
average printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psycopg
from pgvector.psycopg import register_vector

from ltst_memory import (
    ConversationContext,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    UserPreference,
)
from ltst_memory.embeddings import SentenceTransformerEmbedder
from ltst_memory.hnsw import build_index
from ltst_memory.lexical_index import build_lexical_indexes
from ltst_memory.rehydrate import merge

_WORDS_TEXT = (
    "project deadline meeting garden painting dog cat beach mountain coffee tea book novel guitar piano "
    "school university exam job interview promotion salary budget travel flight hotel museum concert "
    "recipe dinner birthday wedding family sister brother parents kids doctor health running yoga "
    "python database server bug release design review weekend holiday camping photo camera movie "
    "series music band festival market shop car bike train city village river lake forest snow rain"
)
_FILLER_TEXT = "I think we should maybe talk about the and it was really nice that you said so"
WORDS = _WORDS_TEXT.split()
FILLER = _FILLER_TEXT.split()


def synthetic_text(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 8)) + rng.choices(FILLER, k=rng.randint(3, 10))
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": 1000 * values[len(values) // 2],
        "p95_ms": 1000 * values[min(len(values) - 1, int(len(values) * 0.95))],
        "mean_ms": 1000 * statistics.fmean(values),
    }


def load(store: ConversationStorage, conninfo: str, args: argparse.Namespace, texts: list[str] | None) -> float:
    rng = random.Random(7)
    hashing = HashingEmbedder(store.embedder.dimension)
    per_session = max(1, args.messages // (args.users * args.sessions))
    start = time.perf_counter()
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for u in range(args.users):
        user = f"user{u}"
        store.store_preference(UserPreference(user_id=user, preference_key="tone", preference_value="concise"))
        for s in range(args.sessions):
            sid = f"{user}/s{s}"
            store.create_session(ConversationSession(session_id=sid, user_id=user, context_summary=synthetic_text(rng)))
            store.store_context(
                ConversationContext(
                    session_id=sid, context_type="project", context_key="topic", context_value=synthetic_text(rng)
                )
            )
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        rows = []
        for u in range(args.users):
            for s in range(args.sessions):
                sid = f"user{u}/s{s}"
                for i in range(per_session):
                    text = rng.choice(texts) if texts else synthetic_text(rng)
                    rows.append(
                        (sid, f"user{u}", "human" if i % 2 == 0 else "ai", text, i, t0 + timedelta(days=s, minutes=i))
                    )
        batch = 5_000
        for lo in range(0, len(rows), batch):
            chunk = rows[lo : lo + batch]
            vectors = hashing.embed([r[3] for r in chunk])
            with conn.cursor().copy(
                'COPY conversation_messages (session_id, user_id, role, content, message_index, "timestamp", '
                "embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "text", "text", "int4", "timestamptz", "vector"])
                for r, v in zip(chunk, vectors, strict=True):
                    copy.write_row((*r, v))
            print(f"  copied {lo + len(chunk)} messages", file=sys.stderr, flush=True)
        conn.execute("UPDATE conversation_sessions SET next_message_index = %s", (per_session,))
        conn.commit()
        print("  building the IVFFlat index", file=sys.stderr, flush=True)
        conn.autocommit = True
        build_index(conn)  # what `ltst vector-index` runs
        build_lexical_indexes(conn, min_rows=store.settings.lexical_index_min_rows)  # and `ltst lexical-index`
        conn.execute("ANALYZE")
    return time.perf_counter() - start


def pieces(store: ConversationStorage, embedder: Any, plan: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Recall's parts, per question of ``plan`` (user scope, on one pool connection), each alone: the
    question's embedding, the lexical statement (the lexical leg's rows and their neighbours) and the
    vector statement (the nearest rows, their neighbours, every row's cosine)."""
    captured: list[Any] = []
    execute = store._execute

    def spy(conn: Any, query: Any, *rest: Any) -> Any:
        if query.sql.lstrip().startswith("WITH terms"):
            captured.append(query)
        return execute(conn, query, *rest)

    store._execute = spy  # type: ignore[method-assign]
    times: dict[str, list[float]] = {"embed": [], "lexical": [], "vector": []}
    try:
        with store.pool.connection() as conn:
            conn.autocommit = True
            for n, (user, _sid, query) in enumerate(plan):
                captured.clear()
                store.recall(query, user_id=user, limit=10)
                lexical, vector = captured[-2:]
                text = f"{query} ({n})"  # not a text embedded before
                t = time.perf_counter()
                embedder.embed([text])
                times["embed"].append(time.perf_counter() - t)
                for name, statement in (("lexical", lexical), ("vector", vector)):
                    t = time.perf_counter()
                    conn.execute(statement.sql, statement.params).fetchall()
                    times[name].append(time.perf_counter() - t)
    finally:
        del store._execute
    return {name: percentiles(values) for name, values in times.items()}


def timeline(store: ConversationStorage, embedder: Any, calls: int, seed: int = 3) -> dict[str, Any]:
    """Where ``rehydrate``'s time goes for the store's largest user: ``calls`` calls on random sessions
    of that user, each statement and the question's embedding timed from the call's start (ms, medians
    over the calls). ``critical_path``: the embedding's end, the vector statement (the last one that
    waits for it) and what follows the last statement (fusion, merge, the commit)."""
    with psycopg.connect(store.pool.conninfo) as conn:
        user, sessions, texts = conn.execute(
            "SELECT user_id, array_agg(DISTINCT session_id), (array_agg(content))[1:500] FROM conversation_messages "
            "WHERE user_id = (SELECT user_id FROM ltst_user_stats ORDER BY doc_count DESC, user_id LIMIT 1) "
            "GROUP BY user_id"
        ).fetchone()
    rng = random.Random(seed)
    words = [w for t in texts for w in t.split() if w.isalpha() and len(w) > 3]
    questions = [f"what did we say about {' '.join(rng.sample(words, 6))}?" for _ in range(calls + 3)]
    events: list[tuple[str, float, float]] = []
    started = [0.0]
    execute, embed = store._execute, embedder.embed

    def spy(conn: Any, query: Any, *rest: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(conn, query, *rest)
        finally:
            events.append((" ".join(query.sql.split()[:3])[:32], t - started[0], time.perf_counter() - t))

    def spy_embed(texts: Any) -> Any:
        t = time.perf_counter()
        try:
            return embed(texts)
        finally:
            events.append(("(the question's embedding)", t - started[0], time.perf_counter() - t))

    store._execute = spy  # type: ignore[method-assign]
    embedder.embed = spy_embed
    steps: dict[tuple[int, str], list[tuple[float, float]]] = {}
    paths: dict[str, list[float]] = {
        "embedding ends": [],
        "vector statement": [],
        "after the last statement": [],
        "call": [],
    }
    try:
        for i, question in enumerate(questions):
            events.clear()
            started[0] = time.perf_counter()
            store.rehydrate(rng.choice(sessions), question)
            total = time.perf_counter() - started[0]
            if i < 3:  # warm-up
                continue
            statements = [e for e in events if not e[0].startswith("(")]
            embedding = next(e for e in events if e[0].startswith("("))
            vector = [e for e in statements if e[0].startswith("WITH terms")][-1]  # recall's second statement
            last_end = max(start + took for _, start, took in statements)
            paths["embedding ends"].append(embedding[1] + embedding[2])
            paths["vector statement"].append(vector[2])
            paths["after the last statement"].append(total - last_end)
            paths["call"].append(total)
            for k, (name, start, took) in enumerate(sorted(events, key=lambda e: e[1])):
                steps.setdefault((k, name), []).append((start, took))
    finally:
        del store._execute
        embedder.embed = embed
    ms = 1000.0
    return {
        "user": user,
        "calls": calls,
        "steps": [
            {
                "step": name,
                "start_ms": round(ms * statistics.median(s for s, _ in v), 2),
                "ms": round(ms * statistics.median(d for _, d in v), 2),
                "seen": len(v),
            }
            for (k, name), v in sorted(steps.items())
            if len(v) >= calls // 2
        ],
        "critical_path": {k: percentiles(v) for k, v in paths.items()},
    }


def print_timeline(report: dict[str, Any]) -> None:
    print(f"rehydrate of {report['user']!r}'s sessions, {report['calls']} calls (median ms from the call's start):")
    for step in report["steps"]:
        print(f"  {step['start_ms']:7.2f} +{step['ms']:6.2f}  {step['step']}")
    for name, p in report["critical_path"].items():
        print(f"  {name}: p50 {p['p50_ms']:.2f} p95 {p['p95_ms']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10, help="sessions per user")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--budget", type=int, default=2_000)
    parser.add_argument("--data", type=Path, help="LoCoMo json: use its turns as message texts")
    parser.add_argument("--dsn")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pieces", type=int, default=0, help="time recall's parts (embedding, statements) alone")
    parser.add_argument("--timeline", type=int, default=0, help="time rehydrate's steps for N calls (largest user)")
    parser.add_argument("--timeline-only", action="store_true", help="only --timeline, on the store as it is")
    args = parser.parse_args(argv)

    texts = None
    if args.data:
        raw = json.loads(args.data.read_text(encoding="utf-8"))
        texts = [
            t["text"]
            for sample in raw
            for k, v in sample["conversation"].items()
            if k.startswith("session_") and isinstance(v, list)
            for t in v
        ]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ltst-speed-"))
    kwargs: dict[str, Any] = {"dsn": args.dsn} if args.dsn else {"data_dir": data_dir}
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up"])
    out: dict[str, Any] = {"messages": args.messages, "users": args.users, "sessions_per_user": args.sessions}
    with ConversationStorage(**kwargs, embedder=embedder) as store:
        if args.timeline_only:
            report = timeline(store, embedder, args.timeline or 30)
            report["load_average"] = os.getloadavg()
            print_timeline(report)
            print(f"load average {report['load_average']}")
            if args.out:
                args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
            return 0
        conninfo = store.pool.conninfo
        if not store.get_user_sessions(f"user{args.users - 1}", limit=1):
            out["load_seconds"] = load(store, conninfo, args, texts)
        with psycopg.connect(conninfo) as conn:
            out["stored_messages"] = conn.execute("SELECT count(*) FROM conversation_messages").fetchone()[0]
        rng = random.Random(11)
        plan = []
        for _ in range(args.queries):
            u = rng.randrange(args.users)
            plan.append((f"user{u}", f"user{u}/s{rng.randrange(args.sessions)}", synthetic_text(rng)))
        for _user, sid, query in plan[:5]:  # warm the pool and the plan cache
            store.rehydrate(sid, query, token_budget=args.budget)
        recall_t, rehydrate_t, merge_t = [], [], []
        tokens = []
        for user, sid, query in plan:
            t = time.perf_counter()
            store.recall(query, user_id=user, limit=10)
            recall_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = store.rehydrate(sid, query, token_budget=args.budget)
            rehydrate_t.append(time.perf_counter() - t)
            tokens.append(result.tokens_used)
        for user, sid, query in plan[:50]:
            inputs = {
                "preferences": store.get_preferences(user),
                "context": store.get_context(sid),
                "recent": store.get_recent_messages(sid, 10),
                "memories": store.recall(query, user_id=user, limit=20),
                "summary": store.get_session(sid).context_summary,
            }
            t = time.perf_counter()
            merge(session_id=sid, user_id=user, query=query, token_budget=args.budget, **inputs)
            merge_t.append(time.perf_counter() - t)
        out["recall"] = percentiles(recall_t)
        out["rehydrate"] = percentiles(rehydrate_t)
        out["merge"] = percentiles(merge_t)
        out["mean_tokens"] = statistics.fmean(tokens)
        if args.pieces:
            out["pieces"] = pieces(store, embedder, plan[: args.pieces])
        if args.timeline:
            out["timeline"] = timeline(store, embedder, args.timeline)
            print_timeline(out["timeline"])
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
