"""The in-process session cache: hits, TTL, invalidation on writes, counters."""

from __future__ import annotations

import psycopg
import pytest

from ltst_memory import AsyncConversationStorage, ConversationMessage, ConversationSession, ConversationStorage
from ltst_memory.cache import DEFAULT_TTL, SessionCache, cache_of


def _rename_behind_the_store(dsn: str, session_id: str, name: str) -> None:
    """Change a session with plain SQL, so only the cache can explain the old value."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE conversation_sessions SET session_name = %s WHERE session_id = %s", (name, session_id))


@pytest.fixture(autouse=True)
def _cache_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is off by default; these tests turn it on (one hour) unless they test the default."""
    if request.node.name != "test_cache_is_off_by_default":
        monkeypatch.setenv("LTST_CACHE_TTL", "3600")


def test_cache_is_off_by_default(store: ConversationStorage, database_dsn: str) -> None:
    assert DEFAULT_TTL == 0
    assert store.cache_stats()["ttl"] == 0
    store.create_session(ConversationSession(session_id="s", user_id="u", session_name="first"))
    assert store.get_session("s").session_name == "first"
    _rename_behind_the_store(database_dsn, "s", "changed in SQL")
    assert store.get_session("s").session_name == "changed in SQL"


def test_second_read_is_a_hit_and_served_from_memory(store: ConversationStorage, database_dsn: str) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u", session_name="first"))
    assert store.get_session("s").session_name == "first"
    _rename_behind_the_store(database_dsn, "s", "changed in SQL")
    assert store.get_session("s").session_name == "first"  # cached
    stats = store.cache_stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5
    store.clear_cache()
    assert store.get_session("s").session_name == "changed in SQL"


def test_cached_value_is_a_copy(store: ConversationStorage) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u", metadata={"a": 1}))
    first = store.get_session("s")
    first.metadata["a"] = 999
    assert store.get_session("s").metadata == {"a": 1}


@pytest.mark.parametrize("write", ["update_session", "update_session_activity", "store_message", "delete_session"])
def test_writes_invalidate(store: ConversationStorage, database_dsn: str, write: str) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u", session_name="v1"))
    store.create_session(ConversationSession(session_id="other", user_id="u", session_name="o1"))
    before = store.get_session("s")
    store.get_session("other")
    store.get_session_summary("s")
    _rename_behind_the_store(database_dsn, "other", "o2")
    if write == "update_session":
        before.session_name = "v2"
        store.update_session(before)
    elif write == "update_session_activity":
        store.update_session_activity("s")
    elif write == "store_message":
        store.store_message(ConversationMessage(session_id="s", role="human", content="hello"))
    else:
        store.delete_session("s")
    after = store.get_session("s")
    if write == "delete_session":
        assert after is None
    else:
        assert after is not None and after.last_activity >= before.last_activity
        if write == "update_session":
            assert after.session_name == "v2"
        if write == "store_message":
            assert store.get_session_summary("s").total_messages == 1
    assert store.get_session("other").session_name == "o1"  # other sessions stay cached
    assert store.cache_stats()["invalidations"] >= 1


def test_failed_write_still_invalidates(store: ConversationStorage) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.get_session("s")
    with pytest.raises(Exception):  # noqa: B017 - any error; the entry must be gone either way
        store.store_message(ConversationMessage(session_id="s", role="robot", content="x"))
    assert store.cache_stats()["size"] == 0


def test_import_clears_everything(store: ConversationStorage) -> None:
    before = store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.get_session("s")
    store.import_messages(iter([ConversationMessage(session_id="s", role="human", content="bulk")]))
    assert store.cache_stats()["size"] == 0
    assert store.get_session("s").last_activity > before.last_activity  # the trigger's update is seen


def test_summary_is_never_stale(store: ConversationStorage) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.store_message(ConversationMessage(session_id="s", role="human", content="one"))
    assert store.get_session_summary("s").total_messages == 1
    with store.pool.connection() as conn:  # a write the store does not see
        conn.execute("DELETE FROM conversation_messages WHERE session_id = 's'")
    assert store.get_session_summary("s").total_messages == 0


def test_missing_sessions_are_not_cached(store: ConversationStorage) -> None:
    assert store.get_session("ghost") is None
    store.create_session(ConversationSession(session_id="ghost", user_id="u"))
    assert store.get_session("ghost") is not None


def test_ttl_expiry_and_zero_ttl(store: ConversationStorage, database_dsn: str) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u", session_name="a"))
    cache_of(store).ttl = 0  # disabled: every read goes to the database
    store.get_session("s")
    _rename_behind_the_store(database_dsn, "s", "b")
    assert store.get_session("s").session_name == "b"
    assert store.cache_stats()["hits"] == 0


def test_lru_bound_and_stale_put_guard() -> None:
    cache = SessionCache(ttl=60, max_entries=2)
    for sid in ("a", "b", "c"):
        cache.put("session", sid, sid.upper(), cache.generation(sid))
    assert cache.stats()["size"] == 2 and cache.stats()["evictions"] == 1
    assert cache.get("session", "a") == (False, None)
    generation = cache.generation("b")
    cache.invalidate(["b"])  # a write committed while a read of "b" was running
    cache.put("session", "b", "OLD", generation)
    assert cache.get("session", "b") == (False, None)
    generation = cache.generation("z")
    cache.invalidate(None)  # a write of unknown sessions
    cache.put("session", "z", "OLD", generation)
    assert cache.get("session", "z") == (False, None)


def test_a_write_with_the_cache_off_still_guards_a_read_that_overlapped_it() -> None:
    cache = SessionCache(ttl=0)
    asked: list[object] = []

    def sessions_changed(args: tuple[object, ...], kwargs: object) -> list[str]:
        asked.append(args)
        return ["b"]

    generation = cache.generation("b")  # a read of "b" starts
    cache.invalidate_after_write(sessions_changed, ("b",), {})  # a write commits: the cache is off and empty
    assert asked == []  # (no session worked out)
    cache.ttl = 60  # turned on before the read ends: its answer, older than the write, is not kept
    cache.put("session", "b", "OLD", generation)
    assert cache.get("session", "b") == (False, None)
    cache.put("session", "b", "NEW", cache.generation("b"))
    cache.invalidate_after_write(sessions_changed, ("b",), {})  # on, with entries: the sessions' entries go
    assert asked == [("b",)] and cache.get("session", "b") == (False, None)


async def test_async_store_caches_too(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession(session_id="s", user_id="u"))
    await astore.get_session("s")
    await astore.get_session("s")
    assert astore.cache_stats()["hits"] == 1
    await astore.store_message(ConversationMessage(session_id="s", role="human", content="hi"))
    assert (await astore.get_session_summary("s")).total_messages == 1
