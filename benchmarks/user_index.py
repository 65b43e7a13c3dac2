"""A large user's top-10 through their own index and its gap (issue 18), on real MiniLM vectors.

    HF_HUB_OFFLINE=1 nice -n 19 python benchmarks/user_index.py load       # once: ~10 min, kept
    HF_HUB_OFFLINE=1 python benchmarks/user_index.py measure [--configs ...] [--out results.json]

One embedded server in ``--data-dir`` (kept between runs: /tmp/userindex/pg). ``load`` fills it with
the 1M messages of the peer data set (``--peers``, made by ``benchmarks/peers.py``: users "big"
100,000 and "mid" 10,000 synthetic messages, every other user 1,000) and adds users of real
all-MiniLM-L6-v2 vectors (``_user_index_data.py``; embedded once, cached in ``--cache``):

* ``templated``: 100,000 messages, the 5,882 LoCoMo turns among 94,118 synthetic 12-word chat lines;
* ``turns``: real conversational turns only: LoCoMo's and the long-chat development set's (18,673);

then builds the shared IVFFlat index (``ltst vector-index --no-users``). ``measure`` builds, for each
user and each configuration, the user's own index (``hnsw.build_user_index``: ``ivfflat:LISTS`` or
``hnsw:M:EF_CONSTRUCTION``), runs each query through ``store.search_messages(user_id=...)`` at each
``probes`` / ``ef_search``, and reports recall@10 against brute force over the user's vectors (per
kind of query: LoCoMo questions, chat lines), p50/p95 of the call (precomputed query vectors: no model
in the timing), and the build time; then ``store_message`` for the indexed user and for a user of
1,000 messages, alternating, with the load average. A user's vectors are read back from the database,
so the truth covers exactly what is stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import PrecomputedEmbedder, percentiles  # noqa: E402
from _user_index_data import vectors as real_vectors  # noqa: E402

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, Settings  # noqa: E402
from ltst_memory._connection import acquire_embedded, release_embedded  # noqa: E402
from ltst_memory.hnsw import build_index, build_user_index, drop_user_index, index_ddl  # noqa: E402

PER_SESSION = 100
K = 10
REAL_USERS = {"templated": "real-templated", "turns": "real-turns"}


class Embedder(PrecomputedEmbedder):
    model_name = "all-MiniLM-L6-v2"


def _import(store: ConversationStorage, user: str, prefix: str, vecs: np.ndarray, texts: list[str] | None) -> None:
    sessions = -(-len(vecs) // PER_SESSION)
    for s in range(sessions):
        store.create_session(ConversationSession(session_id=f"{prefix}{s}", user_id=user))
    store.import_messages(
        (
            ConversationMessage(
                session_id=f"{prefix}{i // PER_SESSION}",
                role="human" if i % 2 == 0 else "ai",
                content=texts[i] if texts is not None else f"{user} {i}",
                embedding=vecs[i],
            )
            for i in range(len(vecs))
        ),
        batch_size=10_000,
    )


def load(dsn: str, args: argparse.Namespace) -> None:
    with ConversationStorage(dsn, embedder=Embedder()) as store:
        with store.pool.connection() as conn:
            users = {r[0] for r in conn.execute("SELECT user_id FROM ltst_user_stats")}
        if "big" not in users:
            vectors = np.load(args.peers / "vectors.npy", mmap_mode="r")
            texts = json.loads((args.peers / "texts.json").read_text())
            size = len(vectors)
            sessions = size // PER_SESSION
            big, mid = 100_000 // PER_SESSION, 110_000 // PER_SESSION
            started = time.perf_counter()
            for s in range(sessions):
                user = "big" if s < big else "mid" if s < mid else f"u{s // 10}"
                store.create_session(ConversationSession(session_id=f"s{s}", user_id=user))
            store.import_messages(
                (
                    ConversationMessage(
                        session_id=f"s{i // PER_SESSION}",
                        role="human" if i % 2 == 0 else "ai",
                        content=texts[i],
                        embedding=np.asarray(vectors[i]),
                    )
                    for i in range(size)
                ),
                batch_size=10_000,
                workers=2,
            )
            print(f"loaded {size:,} peer messages in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for mix, user in REAL_USERS.items():
            if user in users or not (args.cache / f"{mix}-vectors.npy").exists():
                continue
            vecs, _, _ = real_vectors(mix, args.cache)
            _import(store, user, f"{user}/", vecs, None)
            print(f"loaded {user}: {len(vecs):,}", file=sys.stderr)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('idx_messages_embedding_ivfflat')").fetchone() == (None,):
            conn.execute("SET maintenance_work_mem = '1GB'")
            print(build_index(conn), file=sys.stderr)
        conn.execute("VACUUM ANALYZE conversation_messages")


def user_vectors(dsn: str, user: str) -> tuple[np.ndarray, np.ndarray]:
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT message_id, embedding FROM conversation_messages WHERE user_id = %s AND embedding IS NOT NULL",
            (user,),
        ).fetchall()
    ids = np.array([r[0] for r in rows])
    vecs = np.stack([np.asarray(getattr(r[1], "to_numpy", lambda v=r[1]: v)(), dtype=np.float32) for r in rows])
    return ids, vecs


def queries_of(user: str, args: argparse.Namespace) -> tuple[np.ndarray, list[str]]:
    """The query vectors for ``user`` (up to ``--queries``: half LoCoMo questions, half chat lines) and
    the kind of each."""
    for mix, name in REAL_USERS.items():
        if user == name:
            _, q, n_locomo = real_vectors(mix, args.cache)
            half = args.queries // 2
            chat = q[n_locomo : n_locomo + half]
            return np.concatenate([q[:half], chat]), ["locomo"] * half + ["chat"] * len(chat)
    probe = np.load(args.peers / "probe.npy")[: args.queries]
    return probe, ["probe"] * len(probe)


def build(dsn: str, user: str, config: str) -> dict[str, Any]:
    parts = config.split(":")
    with psycopg.connect(dsn, autocommit=True) as conn:
        nice_backend(conn)
        if parts[0] in ("none", "exact"):
            drop_user_index(conn, user)
            return {"config": config, "build_s": 0.0}
        if parts[0] == "hnsw-all":  # the own index of before: every message of the user, on their write path
            drop_user_index(conn, user)
            started = time.perf_counter()
            m, efc = (int(parts[1]), int(parts[2])) if len(parts) > 2 else (16, 64)
            name = f"idx_messages_embedding_user_{_md5(user)}"
            conn.execute(
                index_ddl("vector", 384, lists=0, name=name, user_id=user, method="hnsw", m=m, ef_construction=efc)
            )
            return {"config": config, "build_s": round(time.perf_counter() - started, 1)}
        if parts[0] == "ivfflat":
            b = build_user_index(conn, user, method="ivfflat", lists=int(parts[1]) if len(parts) > 1 else None)
        else:
            m, efc = (int(parts[1]), int(parts[2])) if len(parts) > 2 else (16, 64)
            b = build_user_index(conn, user, method="hnsw", m=m, ef_construction=efc)
        size = conn.execute(
            "SELECT pg_relation_size(to_regclass(%s))", (f"idx_messages_embedding_user_{_md5(user)}",)
        ).fetchone()
    return {
        "config": config,
        "build_s": round(b.seconds, 1),
        "rows": b.rows,
        "lists": b.lists,
        "index_mb": round((size[0] if size else 0) / 2**20, 1),
    }


def nice_backend(conn: psycopg.Connection[Any]) -> None:
    """Run this connection's server process at the lowest CPU priority, on its own (no parallel
    workers), with memory for a graph: index builds stay out of the way of other work."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, int(pid), 19)
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 0")


def _md5(user: str) -> str:
    import hashlib

    return hashlib.md5(user.encode(), usedforsecurity=False).hexdigest()[:24]


def search_run(dsn: str, user: str, q: np.ndarray, kinds: list[str], truth: list[set[int]], **settings: int) -> dict:
    embedder = Embedder()
    names = [f"q{i}" for i in range(len(q))]
    for name, v in zip(names, q, strict=True):
        embedder.table[name] = v
    with ConversationStorage(settings=Settings.from_env(dsn=dsn, **settings), embedder=embedder) as store:
        for name in names[:5]:  # warm the plan cache and the buffers
            store.search_messages(name, user_id=user, limit=K)
        times, hits, short = [], {k: [0, 0] for k in dict.fromkeys(kinds)}, 0
        for i, name in enumerate(names):
            t = time.perf_counter()
            found = store.search_messages(name, user_id=user, limit=K)
            times.append(time.perf_counter() - t)
            got = {m.message_id for m, _ in found}
            short += len(found) < K
            hits[kinds[i]][0] += len(got & truth[i])
            hits[kinds[i]][1] += K
    p, db = percentiles(times), statement_times(dsn, user, q, settings)
    return {
        **settings,
        "recall": {k: round(a / b, 3) for k, (a, b) in hits.items()},
        "p50": round(p["p50"], 2),
        "p95": round(p["p95"], 2),
        "db_p50": round(db["p50"], 2),
        "db_p95": round(db["p95"], 2),
        "short": short,
        "load": round(os.getloadavg()[0], 1),
    }


def statement_times(dsn: str, user: str, q: np.ndarray, settings: dict[str, int]) -> dict[str, float]:
    """The search statement alone, as the store runs it for ``user`` (its settings set before the clock
    starts, in the same transaction), for each query vector."""
    from ltst_memory import _queries as queries
    from ltst_memory.hnsw import INDEX_NAME, INDEX_PREDICATE, order_by, user_index_name, watermark_of

    full = Settings.from_env(dsn=dsn, **settings)
    knobs = {
        "probes": str(full.ivfflat_probes),
        "ef_search": str(min(max(full.hnsw_ef_search, 2 * K), 1_000)),
        "enable_sort": "off",
    }
    with psycopg.connect(dsn, prepare_threshold=0) as conn:
        register_vector(conn)
        row = conn.execute(INDEX_PREDICATE, {"name": user_index_name(user)}).fetchone()
        conn.rollback()
        watermark = watermark_of(row[0] if row else None)
        order = order_by("vector", 384, column="m.embedding", own=watermark is not None)
        if watermark is None:  # the main index, up to its own watermark (or over every message)
            row = conn.execute(INDEX_PREDICATE, {"name": INDEX_NAME}).fetchone()
            conn.rollback()
            watermark = watermark_of(row[0] if row else None)
        sql = (
            queries.search_messages_sql("user")
            if watermark is None
            else queries.search_by_watermark_sql("user", order)
        )
        size = conn.execute(queries.SCOPE_SIZE_OF_USER, {"user_id": user}).fetchone()[0]  # type: ignore[index]
        conn.rollback()
        if size <= full.exact_search_max_rows:  # what the store runs for a user of that size
            sql = queries.EXACT_SEARCH_OF_USER
        times = []
        for i, v in enumerate([*q[:5], *q]):
            params = {"query": v, "user_id": user, "limit": K, "threshold": -1.0, "watermark": watermark}
            with conn.transaction():
                conn.execute(queries.SET_SEARCH_SETTINGS, knobs)
                t = time.perf_counter()
                conn.execute(sql, params).fetchall()
                if i >= 5:
                    times.append(time.perf_counter() - t)
    return percentiles(times)


def appends(dsn: str, user: str, n: int) -> dict[str, Any]:
    """store_message for ``user`` and for a user of 1,000 messages, alternating (p50/p95 ms)."""
    rng = np.random.default_rng(3)
    with ConversationStorage(dsn, embedder=Embedder()) as store:
        with store.pool.connection() as conn:
            session = conn.execute(
                "SELECT session_id FROM conversation_sessions WHERE user_id = %s LIMIT 1", (user,)
            ).fetchone()[0]
        samples: dict[str, list[float]] = {user: [], "u500": []}
        for i in range(n + 5):
            for who, sid in ((user, session), ("u500", "s5000")):
                v = rng.standard_normal(384).astype(np.float32)
                t = time.perf_counter()
                store.store_message(ConversationMessage(sid, "human", f"append {i}", embedding=v / np.linalg.norm(v)))
                if i >= 5:
                    samples[who].append(time.perf_counter() - t)
    return {
        who: {k: round(v, 2) for k, v in percentiles(s).items() if k in ("p50", "p95")} for who, s in samples.items()
    } | {"load": round(os.getloadavg()[0], 1)}


def measure(dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for user in args.users:
        ids, vecs = user_vectors(dsn, user)
        q, kinds = queries_of(user, args)
        sims = q @ vecs.T
        truth = [set(ids[np.argpartition(-row, K)[:K]].tolist()) for row in sims]
        print(f"{user}: {len(ids):,} messages, {len(q)} queries", file=sys.stderr, flush=True)
        for config in args.configs:
            built = build(dsn, user, config)
            print(f"  built {built}", file=sys.stderr, flush=True)
            knobs = (
                [{"ivfflat_probes": p} for p in args.probes]
                if config.startswith("ivfflat")
                else [{"hnsw_ef_search": e} for e in args.ef_search]
                if config.startswith("hnsw")
                else [{"exact_search_max_rows": 10_000_000}]
                if config == "exact"
                else [{}]
            )
            for knob in knobs:
                row = {"user": user, "messages": len(ids), **built, **search_run(dsn, user, q, kinds, truth, **knob)}
                print("   ", json.dumps(row), file=sys.stderr, flush=True)
                results.append(row)
            if args.appends:
                row = {"user": user, **built, "appends": appends(dsn, user, args.appends)}
                print("   ", json.dumps(row), file=sys.stderr, flush=True)
                results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["load", "measure"])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/userindex/pg"))
    parser.add_argument("--peers", type=Path, default=Path("/tmp/ltst-peers-data-1m"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/userindex"))
    parser.add_argument("--users", nargs="+", default=["mid", "real-turns", "real-templated", "big"])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["exact", "ivfflat", "hnsw-all:16:64", "hnsw:16:64"],
        help="ivfflat[:LISTS], hnsw[:M:EF_CONSTRUCTION], none (the shared index), exact (no index), "
        "hnsw-all[:M:EF_CONSTRUCTION] (an own index over every message of the user, no watermark)",
    )
    parser.add_argument("--probes", nargs="+", type=int, default=[10, 20, 40])
    parser.add_argument("--ef-search", nargs="+", type=int, default=[40, 100, 400])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--appends", type=int, default=40, help="store_message pairs timed after each build")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dsn = acquire_embedded(args.data_dir)
    try:
        if args.stage == "load":
            load(dsn, args)
            return
        results = measure(dsn, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    finally:
        release_embedded(args.data_dir)


if __name__ == "__main__":
    main()
