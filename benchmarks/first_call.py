"""The first ``store_message`` of a process, with and without ``ConversationStorage(warm=True)``.

    HF_HUB_OFFLINE=1 python benchmarks/first_call.py [--runs 5] [--dsn URL]

Each run is a fresh Python process (the model loads once per process): it opens a store, times the
first and the second ``store_message`` and deletes its session. Without ``--dsn``, a private embedded
server in a temporary directory. Prints the medians of ``--runs`` processes per setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time, uuid
from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

warm = sys.argv[1] == "1"
started = time.perf_counter()
store = ConversationStorage(warm=warm)
opened = time.perf_counter() - started
session = uuid.uuid4().hex
store.create_session(ConversationSession(session, "first-call-benchmark"))
t0 = time.perf_counter()
store.store_message(ConversationMessage(session, "human", "The first message of the process."))
first = time.perf_counter() - t0
t0 = time.perf_counter()
store.store_message(ConversationMessage(session, "ai", "The second message of the process."))
second = time.perf_counter() - t0
store.delete_session(session)
store.close()
print(opened * 1000, first * 1000, second * 1000)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: a private embedded server)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.dsn:
        env["LTST_DATABASE_URL"] = args.dsn
    else:
        env["LTST_DATA_DIR"] = tempfile.mkdtemp(prefix="ltst-first-call-")
    print("| setting | open ms | first store_message ms | second ms |")
    print("| --- | ---: | ---: | ---: |")
    for warm in ("0", "1"):
        rows = []
        for _ in range(args.runs):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, warm], capture_output=True, text=True, env=env, check=True
            )
            rows.append([float(x) for x in done.stdout.split()])
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        name = "`warm=True`" if warm == "1" else "default"
        print(f"| {name} | {medians[0]:.0f} | {medians[1]:.0f} | {medians[2]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
