"""The embedded server as users' machines run it: real processes (tests/embedded_worker.py), real signals.

Every test uses its own data directory and stops whatever it started. The figures over many runs (races,
recovery time after a SIGKILL, time to stop after the last holder died) come from
benchmarks/embedded_races.py and are in docs/embedded.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ltst_memory import ConfigurationError, ConversationStorage, HashingEmbedder
from ltst_memory import _embedded as embedded
from ltst_memory._connection import acquire_embedded, release_embedded
from ltst_memory.cli import app

WORKER = Path(__file__).with_name("embedded_worker.py")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LTST_DATABASE_URL", "DATABASE_URL")}
    env.setdefault("LTST_EMBEDDED_TUNING", "0")  # a smaller, faster server unless a test wants the tuning
    env.update(extra)
    return env


def _wait(condition: Callable[[], Any], what: str, deadline: float = 90.0) -> Any:
    """Poll ``condition`` until it is truthy; fail (saying ``what``) if it never becomes so."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


class Workers:
    """Worker processes of one test; whatever is left is killed and the server stopped at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None, stdin: bool = False) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), args[0], str(self.data_dir), *args[1:]],
            env=env or _env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
        if (self.data_dir / "pgdata").is_dir():
            embedded.stop_server(self.data_dir, force=True)
            _wait(lambda: not embedded.supervisor_running(self.data_dir), "the supervisor exits", 30)


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory for data directories. Not under pytest's tmp_path: as root the server runs as another OS
    user, who must traverse the path, and a pytest session starting meanwhile makes /tmp/pytest-of-root
    private again."""
    path = Path(tempfile.mkdtemp(prefix="ltst-embedded-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workers(root: Path) -> Iterator[Workers]:
    group = Workers(root / "data")
    try:
        yield group
    finally:
        group.cleanup()


def _ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "ready", (
        f"the worker did not open its store: {line!r} {process.stderr.read() if process.stderr else ''}"
    )


def _postmaster(data_dir: Path) -> embedded.ServerState:
    return embedded.server_state(data_dir / "pgdata")


def _oks(log: Path) -> list[tuple[float, str]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(float(row[1]), row[2]) for row in rows if len(row) == 3 and row[0] == "ok"]


def test_processes_racing_to_open_a_fresh_data_directory_all_succeed(root: Path) -> None:
    """Three races of four processes that open one fresh data directory at the same moment (first start,
    tuning restart, CREATE DATABASE), each then writing and reading: no failure, no raw error."""
    for race in range(3):
        group = Workers(root / f"race-{race}")
        try:
            start_at = time.time() + 2.0
            env = _env(LTST_EMBEDDED_TUNING="1")  # the tuning restart is what killed the others' connections
            started = [group.start("race", f"p{i}", str(start_at), env=env) for i in range(4)]
            outcomes = [(p.wait(180), p.communicate()[1]) for p in started]
            assert [code for code, _ in outcomes] == [0, 0, 0, 0], [err for _, err in outcomes]
            assert not any("RAW" in err or "TYPED" in err for _, err in outcomes)
            # the last one to close stopped the server: nothing is left running
            assert not _postmaster(group.data_dir).running
        finally:
            group.cleanup()


def test_a_killed_postmaster_heals_every_running_store(workers: Workers, tmp_path: Path) -> None:
    """SIGKILL of the postmaster under two writer processes: the server is started again without anyone
    opening a new store, both stores write again, nothing acknowledged is lost."""
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    writers = [workers.start("writer", f"w{i}", str(log)) for i, log in enumerate(logs)]
    _wait(lambda: all(len(_oks(log)) >= 3 for log in logs), "both writers write")
    before = _postmaster(workers.data_dir)
    assert before.running and before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    killed_at = time.time()
    back = _wait(
        lambda: (s := _postmaster(workers.data_dir)).ready and s.pid != before.pid and s, "the server is started again"
    )
    assert back.started is not None and back.started >= int(killed_at)
    _wait(lambda: all(any(t > back.started for t, _ in _oks(log)) for log in logs), "both stores write again")
    for log in logs:
        Path(str(log) + ".stop").touch()
    assert [w.wait(60) for w in writers] == [0, 0]
    with ConversationStorage(data_dir=workers.data_dir, embedder=HashingEmbedder(64)) as store:
        for i, log in enumerate(logs):
            acknowledged = [u for _, u in _oks(log)]
            stored = [m.message_uuid for m in store.get_messages(f"w{i}", limit=100_000)]
            assert len(stored) == len(set(stored))  # nothing twice
            assert set(acknowledged) <= set(stored)  # nothing acknowledged lost


def test_a_new_store_in_a_process_that_holds_a_dead_server(workers: Workers, tmp_path: Path) -> None:
    """A process holds a store; the postmaster is SIGKILLed; the same process opens a second store: it
    gets a working store (the server is started again), not a raw OperationalError."""
    out = tmp_path / "reopen.txt"
    process = workers.start("reopen", str(out), stdin=True)
    _ready(process)
    state = _postmaster(workers.data_dir)
    assert state.pid is not None
    os.kill(state.pid, signal.SIGKILL)
    _wait(lambda: not _postmaster(workers.data_dir).running, "the postmaster is gone")
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.wait(120) == 0
    assert out.read_text() == "ok"


def test_the_server_stops_after_its_last_holder_is_killed_and_never_before(workers: Workers) -> None:
    env = _env(LTST_EMBEDDED_IDLE_SECONDS="1")
    first, second = workers.start("hold", env=env), workers.start("hold", env=env)
    _ready(first)
    _ready(second)
    assert sorted(h.pid for h in embedded.live_holders(workers.data_dir)) == sorted([first.pid, second.pid])
    first.kill()
    first.wait()
    assert [h.pid for h in embedded.live_holders(workers.data_dir)] == [second.pid]  # a dead holder is no holder
    time.sleep(3.0)  # three idle periods of the supervisor: it must not stop a server a live process holds
    assert _postmaster(workers.data_dir).ready
    second.kill()
    second.wait()
    _wait(lambda: not _postmaster(workers.data_dir).running, "the server stops once no process holds it", 60)
    _wait(lambda: not embedded.supervisor_running(workers.data_dir), "the supervisor exits", 30)
    assert embedded.live_holders(workers.data_dir) == []


def test_a_stale_postmaster_pid_naming_a_live_process(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a container restart the pid in postmaster.pid may belong to another process: the store opens
    anyway, and that process is left alone."""
    monkeypatch.setenv("LTST_EMBEDDED_TUNING", "0")
    data_dir = root / "data"
    acquire_embedded(data_dir)
    release_embedded(data_dir)
    pgdata = data_dir / "pgdata"
    assert not (pgdata / "postmaster.pid").exists()
    unrelated = subprocess.Popen(["sleep", "120"])
    try:
        lines = [str(unrelated.pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "  5432001    1", "ready"]
        (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        (pgdata / ".s.PGSQL.5432.lock").write_text(f"{unrelated.pid}\n")
        with ConversationStorage(data_dir=data_dir, embedder=HashingEmbedder(64)) as store:
            assert store.versions()["postgres"]
        assert unrelated.poll() is None  # not ours: not touched
    finally:
        unrelated.kill()
        unrelated.wait()
    assert not _postmaster(data_dir).running


def test_a_data_dir_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="is a file"):
        ConversationStorage(data_dir=a_file, embedder=HashingEmbedder(64))
    with pytest.raises(ConfigurationError, match="cannot use data_dir"):
        ConversationStorage(data_dir=a_file / "below", embedder=HashingEmbedder(64))


def test_ltst_server_status_stop_and_logs(workers: Workers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    holder = workers.start("hold")
    _ready(holder)
    where = ["--data-dir", str(workers.data_dir)]
    result = runner.invoke(app, ["server", "status", "--json", *where])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["running"] and status["pid"] == _postmaster(workers.data_dir).pid
    assert [h["pid"] for h in status["holders"]] == [holder.pid]
    assert status["socket_dir"] and status["size_bytes"] > 0 and status["uptime_seconds"] >= 0
    assert "holders" in runner.invoke(app, ["server", "status", *where]).output

    refused = runner.invoke(app, ["server", "stop", *where])
    assert refused.exit_code == 1 and str(holder.pid) in refused.output
    assert _postmaster(workers.data_dir).ready  # a live holder: left running

    holder.kill()
    holder.wait()
    stopped = runner.invoke(app, ["server", "stop", *where])
    assert stopped.exit_code == 0, stopped.output
    assert not _postmaster(workers.data_dir).running
    after = json.loads(runner.invoke(app, ["server", "status", "--json", *where]).output)
    assert after["running"] is False and after["holders"] == []
    logs = runner.invoke(app, ["server", "logs", "-n", "200", *where])
    assert logs.exit_code == 0 and "database system is ready to accept connections" in logs.output


def test_as_root_the_server_runs_as_its_own_os_user_and_says_so_once(root: Path) -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from ltst_memory._connection import acquire_embedded, release_embedded\n"
        f"for name in ('a', 'b'):\n"
        f"    acquire_embedded({str(root)!r} + '/' + name)\n"
        f"    release_embedded({str(root)!r} + '/' + name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    said = done.stderr.count("the embedded PostgreSQL runs as the OS user 'embedded_postgres'")
    owner = (root / "a" / "pgdata").stat().st_uid
    if os.geteuid() == 0:
        import pwd

        assert said == 1
        assert pwd.getpwuid(owner).pw_name == "embedded_postgres"
    else:
        assert said == 0 and owner == os.geteuid()
    for name in ("a", "b"):
        assert not _postmaster(root / name).running
