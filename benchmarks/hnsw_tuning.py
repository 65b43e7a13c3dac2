"""HNSW settings by measurement: build time, single-row insert cost, size, filtered-search latency and
recall@10 for a few index variants on the same clustered 384-d vectors.

    HF_HUB_OFFLINE=1 python benchmarks/hnsw_tuning.py [--rows 20000] [--users 20] [--dsn ...]

Runs on a plain table shaped like ``conversation_messages`` (id, user_id, embedding) so that only
the index differs; the triggers and text indexes of the real table add a constant on top.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clustered_vectors, fresh_database, machine, percentiles, server, texts

VARIANTS = {
    "vector m=16 ef_c=64 (schema default)": (
        "CREATE INDEX hnsw ON t USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
        "embedding <=> %(q)s",
    ),
    "vector m=16 ef_c=32": (
        "CREATE INDEX hnsw ON t USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 32)",
        "embedding <=> %(q)s",
    ),
    "vector m=8 ef_c=64": (
        "CREATE INDEX hnsw ON t USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 64)",
        "embedding <=> %(q)s",
    ),
    "halfvec m=16 ef_c=64": (
        "CREATE INDEX hnsw ON t USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)",
        "embedding::halfvec(384) <=> %(q)s::halfvec(384)",
    ),
}
SEARCH = (
    "WITH c AS MATERIALIZED (SELECT id, {dist} AS d FROM t WHERE user_id = %(u)s ORDER BY {dist} LIMIT 10) "
    "SELECT id FROM c ORDER BY d"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--inserts", type=int, default=200)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    # topic centres: real all-MiniLM-L6-v2 vectors (random centres are all orthogonal, which makes every
    # row but the nearest cluster equidistant and HNSW recall meaningless)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ltst_memory.embeddings import SentenceTransformerEmbedder

    base = SentenceTransformerEmbedder("all-MiniLM-L6-v2").embed(texts(2_000))
    vectors = clustered_vectors(args.rows + args.inserts, base=base, seed=3)
    probes = clustered_vectors(args.queries, base=base, seed=4)
    report: dict[str, object] = {"machine": machine(), "rows": args.rows, "users": args.users}
    with server(args.dsn) as admin:
        dsn = fresh_database(admin, "ltst_hnsw_tuning")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, user_id text NOT NULL, embedding vector(384))")
            conn.execute("CREATE INDEX ON t (user_id)")
            with conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "vector"])
                for i in range(args.rows):
                    copy.write_row((i, f"u{i % args.users}", vectors[i]))
            conn.execute("VACUUM ANALYZE t")
            exact = []
            for i, p in enumerate(probes):
                with conn.transaction():
                    conn.execute("SET LOCAL enable_indexscan = off")
                    sql = SEARCH.format(dist="embedding <=> %(q)s")
                    exact.append({r[0] for r in conn.execute(sql, {"q": p, "u": f"u{i % args.users}"})})
            conn.execute("SET maintenance_work_mem = '1GB'")
            results: dict[str, dict[str, float]] = {}
            for name, (ddl, dist) in VARIANTS.items():
                conn.execute("DROP INDEX IF EXISTS hnsw")
                conn.execute(f"DELETE FROM t WHERE id >= {args.rows}")
                t = time.perf_counter()
                conn.execute(ddl)
                build = time.perf_counter() - t
                size = conn.execute("SELECT pg_relation_size('hnsw')").fetchone()[0]
                inserts = []
                for j in range(args.inserts):
                    t = time.perf_counter()
                    conn.execute(
                        "INSERT INTO t VALUES (%s, %s, %s)",
                        (args.rows + j, f"u{j % args.users}", vectors[args.rows + j]),
                    )
                    inserts.append(time.perf_counter() - t)
                conn.execute(f"DELETE FROM t WHERE id >= {args.rows}")
                for ef in (40, 100, 200):
                    samples, hits = [], 0
                    for i, p in enumerate(probes):
                        t = time.perf_counter()
                        with conn.transaction():
                            conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                            got = {
                                r[0]
                                for r in conn.execute(SEARCH.format(dist=dist), {"q": p, "u": f"u{i % args.users}"})
                            }
                        samples.append(time.perf_counter() - t)
                        hits += len(got & exact[i])
                    results[f"{name}, ef_search={ef}"] = {
                        "build_s": build,
                        "index_mb": size / 2**20,
                        "insert_p50_ms": percentiles(inserts)["p50"],
                        "search_p50_ms": percentiles(samples)["p50"],
                        "search_p95_ms": percentiles(samples)["p95"],
                        "recall_at_10": hits / sum(len(e) for e in exact),
                    }
                    print(name, ef, json.dumps(results[f"{name}, ef_search={ef}"]), file=sys.stderr)
            samples = []
            for i, p in enumerate(probes):
                t = time.perf_counter()
                with conn.transaction():
                    conn.execute("SET LOCAL enable_indexscan = off")
                    conn.execute(
                        SEARCH.format(dist="embedding <=> %(q)s"), {"q": p, "u": f"u{i % args.users}"}
                    ).fetchall()
                samples.append(time.perf_counter() - t)
            results["exact via user_id btree (no HNSW)"] = {
                "search_p50_ms": percentiles(samples)["p50"],
                "search_p95_ms": percentiles(samples)["p95"],
                "recall_at_10": 1.0,
            }
            report["results"] = results
    print(json.dumps(report, indent=2))
    print(
        "\n| variant | build s | index MB | insert p50 ms | search p50 / p95 ms | recall@10 |\n"
        "|---|---|---|---|---|---|"
    )
    for name, r in results.items():
        print(
            f"| {name} | {r.get('build_s', 0):.1f} | {r.get('index_mb', 0):.0f} | {r.get('insert_p50_ms', 0):.2f} | "
            f"{r['search_p50_ms']:.2f} / {r['search_p95_ms']:.2f} | {r['recall_at_10']:.3f} |"
        )


if __name__ == "__main__":
    main()
