"""Store-assigned message uuids are time-ordered UUIDv7s (RFC 9562): ltst_memory/_uuid7.py.

The generator's bits, order and uniqueness (threads, a clock that goes back, a full counter), and the
uuids every write path stores when the client gives none; a client's own uuid is stored as given."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    _uuid7,
)

GENERATORS = [pytest.param(_uuid7._uuid7, id="ours"), pytest.param(_uuid7.uuid7, id="uuid7")]


def increasing(values: list[uuid.UUID]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def _ms_now() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize("make", GENERATORS)
def test_version_variant_and_timestamp(make: object) -> None:
    before = _ms_now()
    made = [make() for _ in range(1000)]  # type: ignore[operator]
    after = _ms_now()
    for u in made:
        assert isinstance(u, uuid.UUID)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert (u.int >> 76) & 0xF == 7 and (u.int >> 62) & 0b11 == 0b10
        assert before <= u.int >> 80 <= after + 1  # (+1: a full counter moves to the next millisecond)
        assert uuid.UUID(str(u)) == u  # a well-formed uuid: parses back to itself


@pytest.mark.parametrize("make", GENERATORS)
def test_increasing_across_calls(make: object) -> None:
    made = [make() for _ in range(20_000)]  # type: ignore[operator]
    assert increasing(made)  # as uuids, and as PostgreSQL sorts them (bytes)
    assert all(a.bytes < b.bytes for a, b in itertools.pairwise(made))


def test_bulk_bytes_are_v7_increasing_and_after_the_single_ones() -> None:
    first = _uuid7._uuid7()
    batch = [uuid.UUID(bytes=b) for b in _uuid7.uuid7_bytes(5_000)]
    last = _uuid7._uuid7()
    assert len(batch) == 5_000 and all(u.version == 7 and u.variant == uuid.RFC_4122 for u in batch)
    assert first < batch[0] and increasing(batch) and batch[-1] < last
    assert _uuid7.uuid7_bytes(0) == []


def test_unique_and_ordered_per_thread_under_threads() -> None:
    per_thread: list[list[uuid.UUID]] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        mine = [_uuid7._uuid7() for _ in range(5_000)]
        mine += [uuid.UUID(bytes=b) for b in _uuid7.uuid7_bytes(500)]
        per_thread.append(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [u for mine in per_thread for u in mine]
    assert len(every) == 8 * 5_500 == len(set(every))
    assert all(increasing(mine) for mine in per_thread)


def test_a_clock_gone_back_keeps_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _uuid7._uuid7()
    past = time.time_ns() - 5_000_000_000  # five seconds back
    monkeypatch.setattr(_uuid7.time, "time_ns", lambda: past)
    later = [_uuid7._uuid7() for _ in range(100)]
    assert first < later[0] and increasing(later)
    assert later[-1].int >> 80 == first.int >> 80  # the last timestamp is kept, the counter goes on


def test_a_full_counter_moves_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    monkeypatch.setattr(_uuid7.time, "time_ns", lambda: now)  # a frozen clock
    first = _uuid7._uuid7()
    monkeypatch.setattr(_uuid7, "_last_counter", _uuid7._COUNTER_MAX)  # 2**42 - 1 uuids in this millisecond
    nxt = _uuid7._uuid7()
    assert nxt > first and nxt.int >> 80 == (first.int >> 80) + 1 and nxt.version == 7


def _session(store: ConversationStorage, sid: str, user: str = "u7") -> None:
    store.create_session(ConversationSession(session_id=sid, user_id=user))


def _stored_uuids(store: ConversationStorage) -> dict[str, uuid.UUID]:
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT content, message_uuid FROM conversation_messages").fetchall()
    return {content: message_uuid for content, message_uuid in rows}


def test_every_write_path_stores_v7_uuids_and_keeps_a_given_one(store: ConversationStorage) -> None:
    _session(store, "a")
    _session(store, "b")
    given = uuid.uuid4()
    one = store.store_message(ConversationMessage(session_id="a", role="human", content="one"))
    batch = store.store_messages(
        [ConversationMessage(session_id="a", role="ai", content=f"batch {i}") for i in range(3)]
    )
    mixed = store.store_messages(  # two sessions and a client's uuid: the path that locks the sessions
        [
            ConversationMessage(session_id="a", role="human", content="mixed a"),
            ConversationMessage(session_id="b", role="human", content="given", message_uuid=str(given)),
        ]
    )
    result = store.import_messages(
        [ConversationMessage(session_id="b", role="human", content=f"bulk {i}") for i in range(4)]
    )
    assert result.inserted == 4

    stored = _stored_uuids(store)
    assert stored["given"] == given and mixed[1].message_uuid == str(given)
    generated = [c for c in stored if c != "given"]
    assert len(generated) == 9
    assert all(stored[c].version == 7 and stored[c].variant == uuid.RFC_4122 for c in generated)
    returned = [one, *batch, mixed[0]]
    assert all(uuid.UUID(m.message_uuid) == stored[m.content] for m in returned)  # as returned
    in_order = ["one", "batch 0", "batch 1", "batch 2", "mixed a", "bulk 0", "bulk 1", "bulk 2", "bulk 3"]
    assert [stored[c] for c in in_order] == sorted(stored[c] for c in in_order)  # made in this order


async def test_the_async_store_stores_v7_uuids(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession(session_id="s", user_id="u"))
    one = await astore.store_message(ConversationMessage(session_id="s", role="human", content="hi"))
    two = await astore.store_message(ConversationMessage(session_id="s", role="ai", content="hello"))
    assert uuid.UUID(one.message_uuid).version == 7 == uuid.UUID(two.message_uuid).version
    assert uuid.UUID(one.message_uuid) < uuid.UUID(two.message_uuid)
