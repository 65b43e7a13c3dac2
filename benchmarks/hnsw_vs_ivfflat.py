"""What a vector index costs the write path, and which user-search plans are fast and exact.

    HF_HUB_OFFLINE=1 python benchmarks/hnsw_vs_ivfflat.py [TOTAL [OUT.json]]     # default 200,000 messages

One private embedded server; TOTAL messages in sessions of 100, loaded in an interleaved order (so a
user's rows are spread over the heap, as in a live store): user "big" owns 100,000, "mid" 10,000,
every other user 1,000 (vectors clustered around random centroids; no model). Then, with recall@10
against brute force in numpy:

1. a user's top-10 read through the user's btree and sorted exactly (the store's exact path), with and
   without parallel workers;
2. quantised alternatives: a covering btree ``(user_id) INCLUDE (message_id, bit(384))`` scanned by
   Hamming distance and re-ranked exactly (100 / 400 / 1,000 candidates), and the same with a
   ``halfvec(384)`` column;
3. an IVFFlat index (lists = √TOTAL): unscoped and user searches (sorts disabled, iterative scan) by
   probes; ``store_message`` and ``store_messages`` (50) with no vector index, with IVFFlat, and
   with the HNSW index of schema versions before 0012 (m=16, ef_construction=64), and searches
   through it.

Set SKIP_USER=1 to run step 3 only. The appended messages use vectors around other centroids than
the queries', so they do not enter the queries' top 10 and recall is measured against the loaded rows.
"""

# ruff: noqa: E501  (SQL variants kept on one line each)

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, "/work/wt/writepath/benchmarks")
from _common import PrecomputedEmbedder, clustered_vectors, fresh_database, percentiles, server, texts, timed

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
BIG, MID = 100_000, 10_000
PER_S = 100
K = 10
rng = np.random.default_rng(0)
vec = clustered_vectors(TOTAL + 300, seed=5)
probe, vec = vec[TOTAL:], vec[:TOTAL]
extra = clustered_vectors(300, seed=6)  # the appends' vectors (not copies of the probes)
corpus = texts(TOTAL)
# users: big (sessions 0..999), mid (1000..1099), others 1k each
nsess = TOTAL // PER_S


def user_of(s):
    if s < BIG // PER_S:
        return "big"
    if s < (BIG + MID) // PER_S:
        return "mid"
    return f"u{s // 10}"


# interleave: blocks of 10 messages of random sessions
blocks = [(s, j) for s in range(nsess) for j in range(0, PER_S, 10)]
order = rng.permutation(len(blocks))
# sort so that within a session blocks keep order: assign message ids by a stream where each session's blocks are in order
seqs = {}
stream = []
for b in order:
    s, _ = blocks[b]
    j = seqs.get(s, 0)
    seqs[s] = j + 10
    stream.extend(range(s * PER_S + j, s * PER_S + j + 10))
emb = PrecomputedEmbedder()
out = {}


def T(fn, n, warm=3):
    return {k: round(v, 3) for k, v in timed(fn, n, warmup=warm).items()}


with server() as admin:
    dsn = fresh_database(admin, "wp")
    with ConversationStorage(dsn, embedder=emb) as store, psycopg.connect(dsn, autocommit=True) as c:
        register_vector(c)
        for s in range(nsess + 1000):
            store.create_session(ConversationSession(session_id=f"s{s}", user_id=user_of(min(s, nsess - 1))))
        c.execute("DROP INDEX IF EXISTS idx_messages_embedding_hnsw")
        t = time.perf_counter()
        store.import_messages(
            (
                ConversationMessage(session_id=f"s{i // PER_S}", role="human", content=corpus[i], embedding=vec[i])
                for i in stream
            ),
            batch_size=10_000,
            workers=2,
        )
        c.execute("VACUUM ANALYZE conversation_messages")
        print("load", time.perf_counter() - t, flush=True)
        ids = {
            r[1]: r[0]
            for r in c.execute(
                "SELECT message_id, split_part(split_part(content, ':', 1), ' ', 2)::int FROM conversation_messages"
            )
        }
        users_rows = {"big": np.arange(0, BIG), "mid": np.arange(BIG, BIG + MID)}
        truth = {}
        for u, rows in users_rows.items():
            sims = vec[rows] @ probe[:100].T
            truth[u] = [set(ids[int(rows[j])] for j in np.argsort(-sims[:, i])[:K]) for i in range(100)]
        sims = vec @ probe[:100].T
        truth["all"] = [set(ids[int(j)] for j in np.argsort(-sims[:, i])[:K]) for i in range(100)]

        def search(name, sql, user, prep=(), n=100):
            lat, hits = [], 0
            for rep in range(2):
                for i in range(n):
                    p = {"q": probe[i], "u": user}
                    t = time.perf_counter()
                    with c.transaction():
                        for st in prep:
                            c.execute(st)
                        rows = c.execute(sql, p).fetchall()
                    if rep:
                        lat.append(time.perf_counter() - t)
                        hits += len(truth[user][i] & {r[0] for r in rows})
            r = {**{k: round(v, 2) for k, v in percentiles(lat).items()}, "recall": hits / (K * n)}
            out[f"{name} [{user}]"] = r
            print(name, user, r, flush=True)

        EXACT = "SELECT message_id FROM conversation_messages WHERE user_id=%(u)s AND embedding IS NOT NULL ORDER BY (embedding <=> %(q)s) + 0 LIMIT 10"
        for u in () if os.environ.get("SKIP_USER") else ("mid", "big"):
            search("exact heap", EXACT, u)
            search("exact heap, no parallel", EXACT, u, ["SET LOCAL max_parallel_workers_per_gather = 0"])
        if not os.environ.get("SKIP_USER"):
            # stored columns
            t = time.perf_counter()
            c.execute(
                "ALTER TABLE conversation_messages ADD COLUMN emb_bq bit(384) GENERATED ALWAYS AS (binary_quantize(embedding)::bit(384)) STORED"
            )
            c.execute(
                "ALTER TABLE conversation_messages ADD COLUMN emb_h halfvec(384) GENERATED ALWAYS AS (embedding::halfvec(384)) STORED"
            )
            print("add columns", time.perf_counter() - t, flush=True)
            t = time.perf_counter()
            c.execute("CREATE INDEX ix_bq ON conversation_messages (user_id) INCLUDE (message_id, emb_bq)")
            print("bq index", time.perf_counter() - t, flush=True)
            t = time.perf_counter()
            c.execute("CREATE INDEX ix_h ON conversation_messages (user_id) INCLUDE (message_id, emb_h)")
            print("h index", time.perf_counter() - t, flush=True)
            c.execute("VACUUM ANALYZE conversation_messages")
            for (name,) in [("ix_bq",), ("ix_h",)]:
                print(name, c.execute("select pg_size_pretty(pg_relation_size(%s))", (name,)).fetchone()[0])
            for u in ("mid", "big"):
                for cand in (100, 400, 1000):
                    BQ = f"""WITH cand AS MATERIALIZED (SELECT message_id FROM conversation_messages WHERE user_id=%(u)s AND emb_bq IS NOT NULL
                        ORDER BY emb_bq <~> binary_quantize(%(q)s)::bit(384) LIMIT {cand})
                        SELECT m.message_id FROM conversation_messages m JOIN cand USING (message_id) WHERE m.user_id=%(u)s ORDER BY m.embedding <=> %(q)s LIMIT 10"""
                    search(
                        f"bq+rerank {cand}",
                        BQ,
                        u,
                        ["SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off"],
                    )
                H = """WITH cand AS MATERIALIZED (SELECT message_id FROM conversation_messages WHERE user_id=%(u)s AND emb_h IS NOT NULL
                        ORDER BY (emb_h <=> %(q)s::halfvec(384)) + 0 LIMIT 40)
                        SELECT m.message_id FROM conversation_messages m JOIN cand USING (message_id) WHERE m.user_id=%(u)s ORDER BY m.embedding <=> %(q)s LIMIT 10"""
                search(
                    "halfvec covering + rerank 40",
                    H,
                    u,
                    ["SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off"],
                )
                search(
                    "halfvec covering + rerank 40 no par",
                    H,
                    u,
                    [
                        "SET LOCAL enable_seqscan = off",
                        "SET LOCAL enable_bitmapscan = off",
                        "SET LOCAL max_parallel_workers_per_gather = 0",
                    ],
                )
            c.execute("DROP INDEX ix_bq")
            c.execute("DROP INDEX ix_h")
            c.execute("ALTER TABLE conversation_messages DROP COLUMN emb_bq, DROP COLUMN emb_h")
            c.execute("VACUUM conversation_messages")
        # appends per index config
        rng2 = np.random.default_rng(1)
        fresh = iter(range(nsess, nsess + 1000))

        def a1(i):
            store.store_message(
                ConversationMessage(
                    session_id=f"s{rng2.integers(nsess)}", role="human", content=f"new {i}", embedding=extra[i % 300]
                )
            )

        def a50(i):
            sid = f"s{next(fresh)}"
            store.store_messages(
                [
                    ConversationMessage(session_id=sid, role="ai", content=f"b{i} {j}", embedding=extra[(i + j) % 300])
                    for j in range(50)
                ]
            )

        def appends(label):
            out[f"append_one [{label}]"] = T(a1, 200)
            out[f"append_50 [{label}]"] = T(a50, 60, warm=2)
            print(label, out[f"append_one [{label}]"], out[f"append_50 [{label}]"], flush=True)

        appends("no vector index")
        t = time.perf_counter()
        c.execute("SET maintenance_work_mem='1GB'")
        c.execute(
            f"CREATE INDEX ix_ivf ON conversation_messages USING ivfflat (embedding vector_cosine_ops) WITH (lists = {max(100, int(TOTAL**0.5))})"
        )
        out["ivf build s"] = time.perf_counter() - t
        print("ivf build", out["ivf build s"], flush=True)
        ALL = "SELECT message_id FROM conversation_messages ORDER BY embedding <=> %(q)s LIMIT 10"
        U = "SELECT message_id FROM conversation_messages WHERE embedding IS NOT NULL AND user_id=%(u)s ORDER BY embedding <=> %(q)s LIMIT 10"
        for probes in (5, 10, 20, 40):
            search(f"unscoped ivf probes={probes}", ALL, "all", [f"SET LOCAL ivfflat.probes = {probes}"])
            for u in ("mid", "big"):  # sorts disabled: the planner would sort the user's rows instead
                search(
                    f"user ivf probes={probes} relaxed, enable_sort off",
                    U,
                    u,
                    [
                        f"SET LOCAL ivfflat.probes = {probes}",
                        "SET LOCAL ivfflat.iterative_scan = relaxed_order",
                        "SET LOCAL enable_sort = off",
                    ],
                )
        appends("ivfflat")
        c.execute("DROP INDEX ix_ivf")
        t = time.perf_counter()
        c.execute(
            "CREATE INDEX ix_hnsw ON conversation_messages USING hnsw (embedding vector_cosine_ops) WITH (m=16, ef_construction=64)"
        )
        out["hnsw build s"] = time.perf_counter() - t
        print("hnsw build", out["hnsw build s"], flush=True)
        appends("global hnsw")
        ALL = "SELECT message_id FROM conversation_messages ORDER BY embedding <=> %(q)s LIMIT 10"
        search("unscoped hnsw ef400", ALL, "all", ["SET LOCAL hnsw.ef_search = 400"])
        U = "SELECT message_id FROM conversation_messages WHERE user_id=%(u)s ORDER BY embedding <=> %(q)s LIMIT 10"
        for u in ("mid", "big"):
            search(
                "hnsw iterative relaxed ef400",
                U,
                u,
                ["SET LOCAL hnsw.ef_search = 400", "SET LOCAL hnsw.iterative_scan = relaxed_order"],
            )
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
