"""Calls one at a time on a pool that a burst has filled: the store's stack of connections (the one handed
back last is handed out first) against psycopg_pool's queue (the one idle longest), alternating.

    python benchmarks/pool_order.py --data-dir /tmp/copy-of-peers100k [--pool 10] [--n 100] [--rounds 6]

``--data-dir``: an embedded data directory holding a loaded store (``peers.py``'s data set, say); work on
a copy: it appends to it. Two stores on its server, each with ``--pool`` connections open: one with the
pool a store opens itself (``_pooled.LifoConnectionPool``), one given a plain psycopg_pool
``ConnectionPool`` set up the same way. Each round, each store makes ``--n`` ``store_message`` calls
(a precomputed vector, a random session) one after the other; prints the p50 of each, per round.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import psycopg
from _common import PeersModelEmbedder, unit_vectors
from psycopg_pool import ConnectionPool

from ltst_memory import ConversationMessage, ConversationStorage, Settings, _pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 500)
    sizes = Settings(pool_min_size=args.pool, pool_max_size=args.pool)
    with ConversationStorage(data_dir=args.data_dir, embedder=PeersModelEmbedder(), settings=sizes) as stack:
        queue_pool: ConnectionPool[Any] = ConnectionPool(
            stack.pool.conninfo,
            min_size=args.pool,
            max_size=args.pool,
            configure=_pooled.configure,
            check=_pooled.check,
            open=True,
        )
        with queue_pool, ConversationStorage(pool=queue_pool, embedder=PeersModelEmbedder()) as queue:
            stack.pool.wait()
            queue_pool.wait()
            with psycopg.connect(stack.pool.conninfo) as conn:
                sessions = [r[0] for r in conn.execute("SELECT session_id FROM conversation_sessions")]
            p50: dict[str, list[float]] = {"stack (the store's pool)": [], "queue (psycopg_pool's)": []}
            for r in range(args.rounds):
                for values, store in zip(p50.values(), (stack, queue), strict=True):
                    samples = []
                    for i in range(args.n):
                        message = ConversationMessage(
                            session_id=sessions[int(rng.integers(len(sessions)))],
                            role="human",
                            content=f"new {i}",
                            embedding=vectors[i % 500],
                        )
                        t = time.perf_counter()
                        store.store_message(message)
                        samples.append(time.perf_counter() - t)
                    values.append(float(np.percentile(samples, 50)) * 1000)
                print(
                    f"round {r}: "
                    + ", ".join(f"{name} {v[-1]:.3f}" for name, v in p50.items())
                    + f"  (store_message p50 ms; load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
            for name, values in p50.items():
                print(f"{name}: median of the rounds {np.median(values):.3f} ms")


if __name__ == "__main__":
    main()
