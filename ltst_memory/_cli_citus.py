"""``ltst citus-prepare``: the opt-in conversion of a database for Citus (``schema/citus/distribute.sql``).

The numbered migrations keep single-node keys (a session id is unique across all users, ...). This file
rewrites them so that the schema satisfies Citus's co-location rules with ``user_id`` as the distribution
column and, where the ``citus`` extension is installed, distributes the tables. See docs/citus.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

import typer

from ._cli_common import DataDirOption, DsnOption, _command, _database, out, show_table

__all__ = [
    "CitusPlanEntry",
    "CitusPrepareResult",
    "distribute_sql",
    "prepare_for_citus",
    "register",
    "split_statements",
]

logger = logging.getLogger(__name__)


def distribute_sql() -> str:
    """The text of ``schema/citus/distribute.sql`` as installed with the package."""
    return (resources.files("ltst_memory.schema") / "citus" / "distribute.sql").read_text(encoding="utf-8")


# What a statement's text holds besides plain SQL: comments, quoted strings and identifiers, dollar quotes.
_LEXEME = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$(?:[A-Za-z_]\w*)?\$)|;", re.S)


def split_statements(script: str) -> list[str]:
    """The statements of an SQL ``script`` (the library's migration files), each with its ``;``.

    On a Citus cluster each statement of a migration runs on its own (in the migration's one
    transaction): Citus sends the text of some DDL (``DROP INDEX`` on a distributed table) to the
    workers as it was received, and a worker refuses a text of several statements."""
    statements: list[str] = []
    start = position = 0
    while match := _LEXEME.search(script, position):
        position = match.end()
        if match.group(1):  # a dollar quote: skip to its closing tag
            closing = script.find(match.group(1), position)
            position = len(script) if closing < 0 else closing + len(match.group(1))
        elif match.group(0) == ";":
            statements.append(script[start:position].strip())
            start = position
    rest = script[start:].strip()
    if _LEXEME.sub("", rest).strip():
        statements.append(rest)
    return [s for s in statements if _LEXEME.sub("", s).strip(" \n\t;")]


@dataclass(frozen=True)
class CitusPlanEntry:
    """What Citus is to do with one table (a row of ``ltst_citus_tables()``)."""

    step: int
    table_name: str
    method: str  # "reference" or "distributed"
    distribution_column: str | None
    colocate_with: str | None


@dataclass
class CitusPrepareResult:
    """The outcome of :func:`prepare_for_citus`."""

    citus_installed: bool
    plan: list[CitusPlanEntry] = field(default_factory=list)
    #: tables Citus knows after the run (empty without the extension)
    citus_tables: list[str] = field(default_factory=list)


def prepare_for_citus(conn: Any) -> CitusPrepareResult:
    """Apply ``distribute.sql`` on ``conn`` (a psycopg connection outside any transaction) under the
    migration lock, and return the plan and what Citus now distributes. Idempotent."""
    import psycopg

    from .errors import MigrationError
    from .migrate import MIGRATION_LOCK_KEY

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("prepare_for_citus() needs a connection outside any transaction")
    previous_autocommit = conn.autocommit
    conn.autocommit = True  # the file has its own BEGIN/COMMIT, then a DO block of its own
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            try:
                conn.execute(distribute_sql().encode("utf-8"))  # bytes: no parameter parsing of '%'
            except psycopg.Error as exc:
                raise MigrationError(f"schema/citus/distribute.sql failed: {exc}") from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        plan = [CitusPlanEntry(*row) for row in conn.execute("SELECT * FROM ltst_citus_tables() ORDER BY step")]
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").fetchone()
        installed = bool(row and row[0])
        done: list[str] = []
        if installed:
            done = [r[0] for r in conn.execute("SELECT logicalrelid::regclass::text FROM pg_dist_partition ORDER BY 1")]
    finally:
        conn.autocommit = previous_autocommit
    logger.info("schema prepared for Citus (citus extension %s)", "installed" if installed else "not installed")
    return CitusPrepareResult(citus_installed=installed, plan=plan, citus_tables=done)


def register(app: typer.Typer) -> None:
    """Add ``citus-prepare`` to ``app``."""

    @app.command("citus-prepare", hidden=True)
    @_command
    def citus_prepare(
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
        show_sql: Annotated[
            bool, typer.Option("--show-sql", help="Print distribute.sql (to run it with psql) and touch nothing.")
        ] = False,
    ) -> None:
        """Convert the schema for Citus (distribution column user_id) and, with the citus extension,
        distribute the tables. Opt-in and one-way: session ids become unique per user (docs/citus.md).

        Applies pending migrations first. Safe to run again.

        Example: ltst citus-prepare --dsn postgresql://coordinator/app
        """
        if show_sql:
            typer.echo(distribute_sql(), nl=False)
            return
        from ._connection import connect
        from .migrate import migrate

        with _database(dsn, data_dir) as (conninfo, _settings), connect(conninfo) as conn:
            migrate(conn)
            result = prepare_for_citus(conn)
        show_table(
            "Citus plan (ltst_citus_tables())",
            ("step", "table", "kind", "distribution column", "co-located with"),
            [
                (str(e.step), e.table_name, e.method, e.distribution_column or "", e.colocate_with or "")
                for e in result.plan
            ],
        )
        if result.citus_installed:
            out(f"citus: {len(result.citus_tables)} tables distributed or replicated")
        else:
            out("schema converted; the citus extension is not installed, so the tables stay local")
