"""Many writers on one session: message_index stays 0..N-1 with no gap and no duplicate."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage


def test_eight_threads_on_one_session_get_gapless_indexes(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("busy", "u1"))
    per_thread = 25
    barrier = threading.Barrier(8)

    def writer(t: int) -> list[int]:
        barrier.wait()
        out = []
        for i in range(per_thread):
            m = store.store_message(ConversationMessage("busy", "human", f"thread {t} message {i}"))
            out.append(m.message_index)
        return out

    with ThreadPoolExecutor(8) as pool:
        returned = [i for chunk in pool.map(writer, range(8)) for i in chunk]

    total = 8 * per_thread
    assert sorted(returned) == list(range(total))
    stored = store.get_messages("busy", limit=1000)
    assert [m.message_index for m in stored] == list(range(total))
    assert len({m.content for m in stored}) == total
    assert store.get_session_summary("busy").total_messages == total
    # each thread's own messages keep their order
    for t in range(8):
        mine = [m for m in stored if m.content.startswith(f"thread {t} ")]
        assert [m.content for m in mine] == [f"thread {t} message {i}" for i in range(per_thread)]


def test_concurrent_batches_over_overlapping_sessions_do_not_deadlock(store: ConversationStorage) -> None:
    for sid in ("a", "b", "c"):
        store.create_session(ConversationSession(sid, "u1"))
    orders = [("a", "b", "c"), ("c", "b", "a"), ("b", "a", "c"), ("c", "a", "b")]

    def writer(k: int) -> None:
        for round_ in range(10):
            store.store_messages(
                [ConversationMessage(sid, "human", f"w{k} r{round_} {sid}") for sid in orders[k % len(orders)]]
            )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    for sid in ("a", "b", "c"):
        assert [m.message_index for m in store.get_messages(sid, limit=1000)] == list(range(40))
