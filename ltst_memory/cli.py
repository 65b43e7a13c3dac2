"""The ``ltst`` command line: ``ltst demo``, ``ltst migrate``, ``ltst doctor`` and friends."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import LTSTError

app = typer.Typer(
    name="ltst",
    help="ltst-memory: conversation memory on PostgreSQL + pgvector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DsnOption = Annotated[
    str | None, typer.Option("--dsn", help="PostgreSQL DSN (default: LTST_DATABASE_URL, DATABASE_URL, embedded).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory of the embedded server (default: LTST_DATA_DIR).")
]

DEMO_USER = "demo-user"
DEMO_PAST = [
    ("human", "I'm planning a trip to Lisbon in March with my sister Ana."),
    ("ai", "Lovely! March is mild in Lisbon. Do you want help with the itinerary?"),
    ("human", "Yes. Ana is vegetarian, so restaurant tips need to work for her."),
    ("ai", "Noted: vegetarian-friendly places. I'll keep that in mind for the food list."),
]
DEMO_NOW = [
    ("human", "My laptop keeps overheating when I train models."),
    ("ai", "Check the fans and try limiting the batch size; a cooling pad helps too."),
    ("human", "Thanks. Also, where should we eat on our trip?"),
]


def _open_store(dsn: str | None, data_dir: Path | None):  # type: ignore[no-untyped-def]
    from .storage import ConversationStorage

    return ConversationStorage(dsn, data_dir=data_dir)


def _fail(exc: BaseException) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=1)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def demo(dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Store a short conversation, search it by meaning and print what memory brings back.

    Example: ltst demo
    """
    from .models import ConversationContext, ConversationMessage, ConversationSession, UserPreference

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        started = time.perf_counter()
        with _open_store(dsn, data_dir) as store:
            console.print(
                f"[bold]Database[/] {store.dsn}  (PostgreSQL {store.versions()['postgres']}, "
                f"pgvector {store.versions()['pgvector']}) opened in {time.perf_counter() - started:.2f}s"
            )
            for old in store.get_user_sessions(DEMO_USER, limit=1000):
                store.delete_session(old.session_id)
            run = uuid.uuid4().hex[:8]
            past = store.create_session(ConversationSession(f"demo-trip-{run}", DEMO_USER, "Trip planning"))
            now = store.create_session(ConversationSession(f"demo-today-{run}", DEMO_USER, "Laptop help"))
            t0 = time.perf_counter()
            store.store_messages([ConversationMessage(past.session_id, r, c) for r, c in DEMO_PAST])
            store.store_messages([ConversationMessage(now.session_id, r, c) for r, c in DEMO_NOW])
            console.print(
                f"[bold]Stored[/] {len(DEMO_PAST) + len(DEMO_NOW)} messages in 2 sessions "
                f"({time.perf_counter() - t0:.2f}s, model {store.embedder.model_name})"
            )
            store.store_context(
                ConversationContext(
                    now.session_id, "project", "current_task", "Choosing restaurants for the Lisbon trip", 0.9
                )
            )
            store.store_preference(UserPreference(DEMO_USER, "tone", "concise", "style"))

            query = "Which dietary needs should restaurant suggestions respect?"
            t0 = time.perf_counter()
            hits = store.search_messages(query, user_id=DEMO_USER, limit=3)
            table = Table(
                title=f"search_messages({query!r}, user_id={DEMO_USER!r})  {(time.perf_counter() - t0) * 1000:.0f} ms"
            )
            table.add_column("similarity", justify="right")
            table.add_column("session")
            table.add_column("role")
            table.add_column("content")
            for message, similarity in hits:
                table.add_row(f"{similarity:.3f}", message.session_id, message.role, message.content)
            console.print(table)

            summary = store.get_session_summary(now.session_id)
            console.print(
                f"[bold]Session summary[/] {now.session_id}: {summary.total_messages} messages "
                f"({summary.human_messages} human, {summary.ai_messages} ai), "
                f"~{summary.total_tokens_estimate} tokens"
            )
            _print_rehydration(store, now.session_id, "Where should we eat on our trip?")
    except LTSTError as exc:
        _fail(exc)


def _print_rehydration(store: object, session_id: str, query: str) -> None:
    rehydrate = getattr(store, "rehydrate", None)
    if rehydrate is None:
        return
    t0 = time.perf_counter()
    result = rehydrate(session_id, query, token_budget=400)
    elapsed = (time.perf_counter() - t0) * 1000
    console.rule(f"rehydrate({session_id!r}, {query!r}, token_budget=400)  {elapsed:.0f} ms")
    console.print(result.to_prompt(), markup=False, highlight=False)


@app.command()
def migrate(dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Apply pending schema migrations (the store also does this when it opens).

    Example: ltst migrate --dsn postgresql://localhost/app
    """
    import psycopg

    from ._connection import acquire_embedded, release_embedded, unavailable
    from .config import Settings
    from .migrate import migrate as run_migrations

    settings = Settings.from_env(dsn=dsn, data_dir=data_dir)
    conninfo = settings.dsn or acquire_embedded(settings.data_dir)
    try:
        try:
            conn = psycopg.connect(conninfo)
        except psycopg.OperationalError as exc:
            raise unavailable(conninfo, exc) from None
        with conn:
            applied = run_migrations(conn)
        console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    except LTSTError as exc:
        _fail(exc)
    finally:
        if settings.dsn is None:
            release_embedded(settings.data_dir)


@app.command()
def doctor(dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Check the database, the pgvector extension and the embedding model; say what to fix.

    Example: ltst doctor
    """
    from .config import Settings

    settings = Settings.from_env(dsn=dsn, data_dir=data_dir)
    table = Table(title="ltst doctor", show_header=False)
    table.add_row("python", sys.version.split()[0])
    table.add_row("database", "from DSN" if settings.dsn else f"embedded in {settings.data_dir}")
    ok = True
    try:
        with _open_store(dsn, data_dir) as store:
            versions = store.versions()
            table.add_row("dsn", store.dsn)
            table.add_row("PostgreSQL", versions["postgres"])
            table.add_row("pgvector", versions["pgvector"])
            table.add_row("embedding model", f"{store.embedder.model_name} ({store.embedder.dimension} dims)")
            store.embedder.embed(["doctor check"])
            table.add_row("model loads", "yes")
    except Exception as exc:
        ok = False
        table.add_row("[red]problem[/]", str(exc))
    console.print(table)
    if not ok:
        raise typer.Exit(code=1)


def main() -> None:
    """Entry point of the ``ltst`` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
