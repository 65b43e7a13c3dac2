"""The store's own cost per call: each operation against its bare statement, alternating in one process.

    cp -a <a loaded peers.py data dir> /tmp/copy      # appended to: work on a copy
    python benchmarks/call_overhead.py --data-dir /tmp/copy [--n 400] [--rounds 3]
    # against another version of the library, in the same process (loaded as package ``ltst_base``):
    git archive main | tar -x -C /tmp/base && ln -s ../schema /tmp/base/ltst_memory/schema \\
        && ln -s ../adapters /tmp/base/ltst_memory/adapters
    python benchmarks/call_overhead.py --data-dir /tmp/copy --baseline /tmp/base/ltst_memory

For ``store_message`` (a precomputed vector, a random existing session), ``get_recent_messages(50)``
and ``get_session`` it runs, call after call in turn, the store's method (this checkout's, and the
baseline's with ``--baseline``, a second store on the same server) and the operation's statement bare:
the same SQL prepared on a plain psycopg connection in autocommit with pgvector's types, tuple rows,
nothing built from them (``store_message``'s binds a UUIDv7, as the store does). Per round it prints
each arm's p50 wall time and its mean CPU time in the calling thread (``time.thread_time``, which a
shared machine's load barely moves), and the store's overhead over the bare statement in both. The
store's session cache is off (the default), so ``get_session`` reads the database.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from _common import PeersModelEmbedder, unit_vectors
from pgvector.psycopg import register_vector

from ltst_memory import ConversationMessage, ConversationStorage
from ltst_memory import _queries as q
from ltst_memory._uuid7 import uuid7


def load_baseline(path: Path) -> Any:
    """The package at ``path`` (a source tree's ``ltst_memory``) imported as ``ltst_base``."""
    spec = importlib.util.spec_from_file_location(
        "ltst_base", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ltst_base"] = module
    spec.loader.exec_module(module)
    return module


def separate_instruments(base: Any) -> None:
    """Each version with its own Prometheus histogram (the first one to register the metric's name would
    otherwise serve both): the baseline's is set up first and unregistered, then this checkout's."""
    import importlib

    base_stats = importlib.import_module(f"{base.__name__}.stats")
    histogram = base_stats._instrumentation()[1]
    if histogram is not None:
        import prometheus_client

        prometheus_client.REGISTRY.unregister(histogram)
    from ltst_memory import stats

    stats._instrumentation()


def read_call(store: Any, method: str, *args: Any) -> Callable[[int], Any]:
    bound = getattr(store, method)
    return lambda i: bound(*args)


def bare_statement(sql: str) -> str:
    return sql.replace("/*owner*/", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, help="another version's ltst_memory directory")
    parser.add_argument("--n", type=int, default=400, help="calls per arm and operation per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", default="store_message,get_recent_messages,get_session")
    args = parser.parse_args()

    store = ConversationStorage(data_dir=args.data_dir, embedder=PeersModelEmbedder())
    conninfo = store._conninfo
    stores: dict[str, Any] = {"new": store}
    if args.baseline is not None:
        base = load_baseline(args.baseline)
        separate_instruments(base)
        based = base.ConversationStorage(conninfo, embedder=PeersModelEmbedder(), auto_migrate=False)
        stores = {"base": based, "new": store}
        message_classes = {"base": base.ConversationMessage, "new": ConversationMessage}
    else:
        message_classes = {"new": ConversationMessage}
    bare = psycopg.connect(conninfo, autocommit=True)
    register_vector(bare)

    sessions = [
        r[0] for r in bare.execute("SELECT session_id FROM conversation_sessions ORDER BY session_id LIMIT 1000")
    ]
    busy = bare.execute(
        "SELECT session_id FROM conversation_sessions ORDER BY next_message_index DESC LIMIT 1"
    ).fetchone()[0]
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 256)

    def store_call(name: str) -> Callable[[int], Any]:
        st, cls = stores[name], message_classes[name]

        def call(i: int) -> Any:
            session = sessions[i % len(sessions)]
            return st.store_message(
                cls(session_id=session, role="human", content=f"turn {i}", embedding=vectors[i % 256])
            )

        return call

    insert = bare_statement(q.INSERT_MESSAGE)
    recent = bare_statement(q.SELECT_RECENT_MESSAGES)
    session_sql = bare_statement(q.SELECT_SESSION)

    def bare_store(i: int) -> Any:
        params = {
            "message_uuid": uuid7(),  # as the store makes them (a random uuid4 costs the server more)
            "session_id": sessions[i % len(sessions)],
            "role": "human",
            "content": f"turn {i}",
            "message_type": "message",
            "metadata": "{}",
            "embedding": vectors[i % 256],
            "relevance_score": 0.0,
            "is_context_message": False,
            "timestamp": None,
        }
        return bare.execute(insert, params, prepare=True).fetchall()

    arms: dict[str, dict[str, Callable[[int], Any]]] = {
        "store_message": {"bare": bare_store, **{name: store_call(name) for name in stores}},
        "get_recent_messages": {
            "bare": lambda i: bare.execute(recent, {"session_id": busy, "limit": 50}, prepare=True).fetchall(),
            **{name: read_call(st, "get_recent_messages", busy, 50) for name, st in stores.items()},
        },
        "get_session": {
            "bare": lambda i: bare.execute(session_sql, {"session_id": busy}, prepare=True).fetchone(),
            **{name: read_call(st, "get_session", busy) for name, st in stores.items()},
        },
    }
    wanted = args.ops.split(",")
    print(f"data {args.data_dir}  n {args.n}  rounds {args.rounds}  arms {['bare', *stores]}")
    try:
        for op_name in wanted:
            calls = arms[op_name]
            for call in calls.values():  # warm up: prepared statements, pool connections
                for i in range(30):
                    call(i)
            summary: dict[str, list[tuple[float, float]]] = {arm: [] for arm in calls}
            for r in range(args.rounds):
                walls: dict[str, list[float]] = {arm: [] for arm in calls}
                cpus: dict[str, float] = dict.fromkeys(calls, 0.0)
                order = list(calls)
                for i in range(args.n):
                    for arm in order:
                        cpu0 = time.thread_time()
                        t0 = time.perf_counter()
                        calls[arm](i + r * args.n)
                        walls[arm].append(time.perf_counter() - t0)
                        cpus[arm] += time.thread_time() - cpu0
                    order.append(order.pop(0))  # each arm takes each place in turn
                cells = []
                for arm in calls:
                    p50 = statistics.median(walls[arm]) * 1000
                    cpu = cpus[arm] / args.n * 1000
                    summary[arm].append((p50, cpu))
                    cells.append(f"{arm} {p50:.3f}/{cpu:.3f}")
                print(
                    f"{op_name:20s} round {r}: "
                    + "  ".join(cells)
                    + f"  (p50 wall/CPU ms; load {os.getloadavg()[0]:.2f})"
                )
            bare_p50 = statistics.median(s[0] for s in summary["bare"])
            bare_cpu = statistics.median(s[1] for s in summary["bare"])
            for arm in stores:
                p50 = statistics.median(s[0] for s in summary[arm])
                cpu = statistics.median(s[1] for s in summary[arm])
                print(
                    f"{op_name:20s} {arm:4s}: p50 {p50:.3f} ms (bare {bare_p50:.3f}, +{p50 - bare_p50:.3f}), "
                    f"CPU {cpu:.3f} ms (bare {bare_cpu:.3f}, +{cpu - bare_cpu:.3f})"
                )
    finally:
        bare.close()
        for st in stores.values():
            st.close()


if __name__ == "__main__":
    main()
