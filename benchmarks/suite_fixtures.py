"""What the test suite's database fixture costs per test: the old way (``CREATE DATABASE ... STRATEGY
FILE_COPY`` before the test, ``DROP DATABASE`` after it, durable server) against tests/conftest.py's
(a copy made ahead with ``WAL_LOG`` by a background thread, dropped in the background, server
without fsync). Each "test" opens a store, creates a session and reads it.

    python benchmarks/suite_fixtures.py [N]     # N tests each way (default 40); prints the medians
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest
from _helpers import DatabaseSupply

from ltst_memory import ConversationSession, ConversationStorage, HashingEmbedder
from ltst_memory._connection import acquire_embedded, release_embedded
from ltst_memory.migrate import migrate

EMBEDDER = HashingEmbedder(384)


def small_test(dsn: str) -> None:
    with ConversationStorage(dsn, embedder=EMBEDDER) as store:
        store.create_session(ConversationSession(session_id="x", user_id="u"))
        store.get_session("x")


def old_way(admin: str, n: int) -> list[float]:
    times = []
    for i in range(n):
        name = sql.Identifier(f"old_{i}")
        began = time.perf_counter()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE tmpl STRATEGY FILE_COPY").format(name))
        small_test(make_conninfo(admin, dbname=f"old_{i}"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
        times.append(time.perf_counter() - began)
    return times


def new_way(admin: str, n: int) -> list[float]:
    conftest._without_durability(admin)
    supply = DatabaseSupply(admin, "tmpl")
    time.sleep(1.0)  # as at the start of a run: the first copies are being made while pytest collects
    times = []
    try:
        for _ in range(n):
            began = time.perf_counter()
            name = supply.take()
            small_test(supply.dsn(name))
            supply.give_back(name)
            times.append(time.perf_counter() - began)
    finally:
        supply.close()
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    data_dir = Path(tempfile.mkdtemp(prefix="ltst-suite-fixtures-"))
    admin = make_conninfo(acquire_embedded(data_dir), dbname="postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE tmpl")
        with psycopg.connect(make_conninfo(admin, dbname="tmpl")) as conn:
            migrate(conn)
        old = statistics.median(old_way(admin, n))
        new = statistics.median(new_way(admin, n))
        print(f"database fixture + a small test, median of {n}: old {old:.3f} s, new {new:.3f} s")
    finally:
        release_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
