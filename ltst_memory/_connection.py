"""Where the database comes from: a DSN, or the embedded PostgreSQL server; and the pools on it."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as _conninfo
from psycopg.rows import dict_row

from . import _embedded as _server
from ._embedded import EMBEDDED_DATABASE
from .errors import DatabaseUnavailableError, LTSTError, MigrationError

__all__ = [
    "EMBEDDED_DATABASE",
    "acquire_embedded",
    "heal_embedded",
    "pool_timeout_error",
    "redact",
    "release_embedded",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded: dict[Path, tuple[_server.Holder, int]] = {}


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (safe for logs and error messages)."""
    try:
        params = _conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return _conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def unavailable(dsn: str, exc: BaseException, *, replica: bool = False) -> DatabaseUnavailableError:
    """A DatabaseUnavailableError for ``dsn`` (the primary, or the read replica) that never shows its
    password."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = _conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:  # an unparseable DSN: redact() says so
        password = None
    if password:
        detail = detail.replace(str(password), "***")
    if not replica and _embedded:
        heal_embedded()
    if replica:
        return DatabaseUnavailableError(
            f"cannot connect to the read replica at {redact(dsn)}: {detail}. Check that it runs and that "
            "read_dsn / LTST_READ_DATABASE_URL is right (or unset it to read from the primary)."
        )
    return DatabaseUnavailableError(
        f"cannot connect to PostgreSQL at {redact(dsn)}: {detail}. Check that the server runs and "
        "that LTST_DATABASE_URL / DATABASE_URL is right (or unset both to use the embedded server)."
    )


def connect(conninfo: str, *, replica: bool = False, connect_timeout: int | None = None) -> psycopg.Connection[Any]:
    """``psycopg.connect(conninfo)``, or a DatabaseUnavailableError that never shows the password."""
    options: dict[str, Any] = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    try:
        return psycopg.connect(conninfo, **options)
    except psycopg.OperationalError as exc:
        raise unavailable(conninfo, exc, replica=replica) from None


def acquire_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir`` and return a DSN for its ``ltst`` database.

    Processes and stores that share ``data_dir`` share one server (ltst_memory/_embedded.py: a lock file
    serialises its start, each process holds a locked holder file); each acquire is matched by a
    :func:`release_embedded`. A server found dead is started again.
    """
    data_dir = _server.check_data_dir(data_dir)
    with _lock:
        entry = _embedded.get(data_dir)
        try:
            if entry is None:
                holder, dsn = _server.open_server(data_dir)
                _embedded[data_dir] = (holder, 1)
            else:
                dsn = _server.ensure_running(data_dir)
                _embedded[data_dir] = (entry[0], entry[1] + 1)
        except LTSTError:
            raise
        except Exception as exc:  # an OS or driver error on the way: say where
            raise DatabaseUnavailableError(
                f"cannot start the embedded PostgreSQL in {data_dir}: {type(exc).__name__}: {exc}. Check that the "
                f"directory is writable; `ltst server status --data-dir {data_dir}` and `ltst server logs` tell more."
            ) from exc
    return dsn


def release_embedded(data_dir: Path) -> None:
    """Drop one reference to the embedded server of ``data_dir``; the last one of the process stops it
    unless another process still holds it (if this process dies instead, its supervisor stops it)."""
    data_dir = Path(data_dir).expanduser().resolve()
    with _lock:
        entry = _embedded.get(data_dir)
        if entry is None:
            return
        holder, count = entry
        if count > 1:
            _embedded[data_dir] = (holder, count - 1)
            return
        del _embedded[data_dir]
        logger.info("releasing embedded PostgreSQL in %s", data_dir)
        try:
            _server.stop_server(data_dir, holder=holder)
        except Exception as exc:  # the supervisor stops it later
            logger.warning("could not stop the embedded PostgreSQL in %s: %s", data_dir, exc)
        finally:
            holder.close()  # a no-op unless stop_server failed before it


def heal_embedded() -> None:
    """Start again any embedded server this process holds that is down (a no-op when all run). Called
    where a connection failed, so that the next call finds the server up."""
    for data_dir in list(_embedded):
        try:
            _server.ensure_running(data_dir)
        except Exception as exc:  # the caller reports its own error; the supervisor keeps trying
            logger.warning("could not start the embedded PostgreSQL in %s again: %s", data_dir, exc)


def _forget_after_fork() -> None:
    """In a forked child: the parent's holds are the parent's (the child must not release them)."""
    for holder, _count in _embedded.values():
        holder.forget()
    _embedded.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def pool_timeout_error(pool: Any, timeout: float, shown_dsn: str, *, replica: bool = False) -> DatabaseUnavailableError:
    """The error for a pool's ``PoolTimeout``: the pool is exhausted (the server answers), or the server
    is down (it does not; an embedded server is started again)."""
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    try:
        with psycopg.connect(conninfo, **{**kwargs, "connect_timeout": 3}):
            pass
    except psycopg.Error as exc:
        if not replica:
            heal_embedded()
        return unavailable(conninfo, exc, replica=replica)
    which = "read replica pool" if replica else "pool"
    stats = pool.get_stats()
    if stats.get("pool_size", pool.max_size) < pool.max_size:
        # not exhausted: connections were lost and psycopg_pool reconnects with a backoff (1 s, doubling)
        return DatabaseUnavailableError(
            f"no connection within {timeout:g}s: the server at {shown_dsn} answers again, but the store's {which} "
            f"is still opening connections (after losing some, psycopg_pool retries after 1 s, 2 s, 4 s, ...). "
            f"Retry the call, or keep pool_timeout / LTST_POOL_TIMEOUT (now {timeout:g}s) above that wait."
        )
    return DatabaseUnavailableError(
        f"no connection free within {timeout:g}s: all {pool.max_size} connections of the store's {which} are "
        f"in use (the server at {shown_dsn} is up). Raise pool_max_size / LTST_POOL_MAX_SIZE (now "
        f"{pool.max_size}) or pool_timeout, or make fewer calls at once."
    )


def check_vector_extension(conn: psycopg.Connection[Any]) -> None:
    """Raise MigrationError if the ``vector`` type is missing (schema not installed)."""
    row = conn.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise MigrationError(
            "the pgvector extension / ltst schema is not installed in this database; "
            "run `ltst migrate` or open the store with auto_migrate=True"
        )


ROW_FACTORY = dict_row
