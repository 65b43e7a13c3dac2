"""Unscoped search through the main vector index while its gap grows (docs/scaling.md, "The vector index").

The main index covers the messages up to its watermark; every search through it also reads the
messages stored since (the gap) exactly. This loads nothing: it takes a data directory loaded by
``peers.py``'s loader (the peers' data set, ours, with ``ltst vector-index`` run), copies nothing
(work on a copy: it appends), and for each gap size appends messages until the gap has that size,
then times ``search_messages`` over every user (``n`` calls, precomputed query vectors) and its
recall@10 against brute force over every message (the gap's included).

    python benchmarks/vector_gap.py --data-dir /tmp/copy-of-peers1m --data /tmp/ltst-peers-data-1m \\
        --gaps 0 5000 10000 20000 40000 --n 100

The gap's messages are near the probes (a probe plus noise) for a tenth of them and copies of data
rows plus noise for the rest, so that some of them belong in the answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import PrecomputedEmbedder

from ltst_memory import ConversationMessage, ConversationStorage
from ltst_memory.hnsw import build_index, main_index

K = 10


class Embedder(PrecomputedEmbedder):
    model_name = "all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="an embedded data directory loaded with the peers' data")
    parser.add_argument("--data", type=Path, default=Path("/tmp/ltst-peers-data-1m"))
    parser.add_argument("--gaps", type=int, nargs="+", default=[0, 5_000, 10_000, 20_000])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the main index first (gap 0)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")
    probe = np.load(args.data / "probe.npy")
    embedder = Embedder()
    queries = [f"query {i}" for i in range(len(probe))]
    for q, v in zip(queries, probe, strict=True):
        embedder.table[q] = v
    rng = np.random.default_rng(5)
    results = []
    with ConversationStorage(data_dir=args.data_dir, embedder=embedder) as store:
        dsn = store.pool.conninfo
        with psycopg.connect(dsn, autocommit=True) as conn:
            if args.rebuild:
                built = build_index(conn)
                print(f"rebuilt: {built.lists} lists, {built.rows} rows up to {built.watermark}, {built.seconds:.0f} s")
            state = main_index(conn)
            loaded = int(conn.execute("SELECT count(*) FROM conversation_messages").fetchone()[0])  # type: ignore[index]
        print(f"main index up to {state.watermark}, gap {state.gap}, {loaded} messages", flush=True)
        if state.watermark is None:
            raise SystemExit("the main index has no watermark: run with --rebuild")
        every = np.asarray(vectors[:loaded], dtype=np.float32)
        extra: list[np.ndarray] = []
        gap = state.gap
        sessions = loaded // 100
        for target in args.gaps:
            while gap < target:
                n = min(500, target - gap)
                rows = rng.integers(0, loaded, size=n)
                base = np.where(
                    (rng.random(n) < 0.1)[:, None], probe[rng.integers(0, len(probe), size=n)], every[rows]
                )
                batch = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)
                batch /= np.linalg.norm(batch, axis=1, keepdims=True)
                store.store_messages(
                    [
                        ConversationMessage(f"s{rng.integers(sessions)}", "ai", f"gap {gap + j}", embedding=v)
                        for j, v in enumerate(batch)
                    ]
                )
                extra.append(batch.astype(np.float32))
                gap += n
            full = np.concatenate([every, *extra]) if extra else every
            samples, hits = [], 0
            for i in range(-3, args.n):
                q = i % len(probe)
                t = time.perf_counter()
                found = store.search_messages(queries[q], limit=K)
                if i < 0:
                    continue
                samples.append(time.perf_counter() - t)
                sims = full @ probe[q]
                truth = {int(r) for r in np.argpartition(-sims, K)[:K]}
                got = set()
                for m, _ in found:
                    if m.content.startswith("gap "):
                        got.add(loaded + int(m.content.split()[1]) - state.gap)
                    else:
                        got.add(int(m.content.split(":", 1)[0].split()[1]))
                hits += len(truth & got)
            ms = np.array(samples) * 1000
            row = {
                "gap": gap,
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p95_ms": round(float(np.percentile(ms, 95)), 2),
                "recall_at_10": hits / (K * args.n),
                "load": os.getloadavg()[0],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
