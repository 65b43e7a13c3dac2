"""WAL written per ``store_message``: store-assigned UUIDv7s against random (version 4) uuids.

    cp -a <a loaded peers.py data dir> /tmp/copy      # appended to: work on a copy
    python benchmarks/uuid_wal.py --data-dir /tmp/copy [--n 500] [--rounds 3]

Each round runs two blocks in turn, each after a ``CHECKPOINT`` (so that the first change of each page
writes its full image, as in a running server between checkpoints) of ``--n`` calls of
``store_message`` (a precomputed vector, sessions taken in turn, ``message_uuid`` left to the store):
one with the store's generator swapped for ``uuid.uuid4`` (random uuids, what it assigned before;
same statement, same path), one with its UUIDv7s (``ltst_memory/_uuid7.py``). It prints the WAL bytes
per call (``pg_current_wal_lsn`` before and after) and the calls' p50. A v4 uuid goes into a random
leaf of the unique ``message_uuid`` index, a v7 one into its rightmost leaf.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from _common import PeersModelEmbedder

from ltst_memory import ConversationMessage, ConversationStorage
from ltst_memory import _ops as ops
from ltst_memory._uuid7 import uuid7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=500, help="calls per block")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((256, 384)).astype(np.float32)
    with (
        ConversationStorage(data_dir=args.data_dir, embedder=PeersModelEmbedder()) as store,
        psycopg.connect(store._conninfo, autocommit=True) as bare,
    ):
        sessions = [
            r[0] for r in bare.execute("SELECT session_id FROM conversation_sessions ORDER BY session_id LIMIT 1000")
        ]

        def block(make: Any, r: int) -> tuple[float, float]:
            ops.uuid7 = make  # the generator _ops._message_params calls
            bare.execute("CHECKPOINT")
            before = bare.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            walls = []
            for i in range(args.n):
                message = ConversationMessage(
                    session_id=sessions[(i * 7 + r) % len(sessions)],
                    role="human",
                    content=f"turn {i}",
                    embedding=vectors[i % 256],
                )
                t0 = time.perf_counter()
                store.store_message(message)
                walls.append(time.perf_counter() - t0)
            after = bare.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            wal = bare.execute("SELECT pg_wal_lsn_diff(%s, %s)", (after, before)).fetchone()[0]  # type: ignore[index]
            return float(wal) / args.n, statistics.median(walls) * 1000

        for r in range(args.rounds):
            v4_wal, v4_p50 = block(uuid.uuid4, r)
            v7_wal, v7_p50 = block(uuid7, r)
            print(
                f"round {r}: uuid4 {v4_wal:,.0f} B WAL/call, p50 {v4_p50:.3f} ms | "
                f"UUIDv7 by the store {v7_wal:,.0f} B, p50 {v7_p50:.3f} ms | load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
