"""The ``ltst`` command line: ``ltst demo``, ``ltst migrate``, ``ltst doctor`` and friends."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import _cli_citus, _cli_data, _cli_server
from ._cli_common import (
    DataDirOption,
    DsnOption,
    JsonOption,
    ModelOption,
    _command,
    _database,
    _print_json,
    _short,
    _store,
    console,
    embedder_for,
    err_console,
)
from .errors import LTSTError

app = typer.Typer(
    name="ltst",
    help="ltst-memory: conversation memory on PostgreSQL + pgvector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


# --------------------------------------------------------------------------- database commands


@app.command()
@_command
def migrate(dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Apply pending schema migrations (the store also does this when it opens).

    Example: ltst migrate --dsn postgresql://localhost/app
    """
    from ._connection import connect
    from .migrate import migrate as run_migrations

    with _database(dsn, data_dir) as (conninfo, _settings), connect(conninfo) as conn:
        applied = run_migrations(conn)
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command("hnsw-storage")
@_command
def hnsw_storage(
    storage: Annotated[
        str | None, typer.Argument(help="vector (float32) or halfvec (float16, half the index); omit to show.")
    ] = None,
    concurrently: Annotated[
        bool, typer.Option("--concurrently", help="Build the new index beside the old one; writes go on.")
    ] = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show or change how the HNSW index stores vectors (docs/scaling.md, "HNSW storage").

    Example: ltst hnsw-storage halfvec --concurrently
    """
    from ._connection import connect
    from .hnsw import index_storage, set_index_storage

    with _database(dsn, data_dir) as (conninfo, _settings), connect(conninfo) as conn:
        if storage is None:
            console.print(f"HNSW index storage: {index_storage(conn)}")
            return
        changed = set_index_storage(conn, storage, concurrently=concurrently)
    console.print(f"HNSW index rebuilt as {storage}" if changed else f"HNSW index already uses {storage}")


@app.command()
def doctor(dsn: DsnOption = None, data_dir: DataDirOption = None, model: ModelOption = None) -> None:
    """Check the database, PostgreSQL, pgvector, the schema and the embedding model; say what to fix.

    Example: ltst doctor
    """
    from ._cli_ops import run_checks

    table = Table(title="ltst doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail / how to fix", overflow="fold")
    problems = 0
    for check in run_checks(dsn, data_dir, model, embedder_for):
        mark = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[check.status]
        problems += check.status == "fail"
        table.add_row(check.name, mark, check.detail if check.status == "ok" else f"{check.detail}\n→ {check.fix}")
    console.print(table)
    if problems:
        err_console.print(f"[bold red]error:[/] {problems} problem(s) found; see the fixes above")
        raise typer.Exit(code=1)


# --------------------------------------------------------------------------- sessions

sessions_app = typer.Typer(help="List and show sessions.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("list")
@_command
def sessions_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's sessions.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, most recently active first.")] = 20,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List sessions, most recently active first, with their message counts.

    Example: ltst sessions list --user alice --limit 10
    """
    from ._cli_ops import list_sessions

    with _store(dsn, data_dir) as store:
        rows = store._run(list_sessions(store._core, user, limit))
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"sessions{f' of {user}' if user else ''}")
    for column in ("session", "user", "name", "messages", "last activity"):
        table.add_column(column, justify="right" if column == "messages" else "left", overflow="fold")
    for r in rows:
        table.add_row(
            r["session_id"],
            r["user_id"],
            r["session_name"] or "",
            str(r["total_messages"]),
            f"{r['last_activity']:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@sessions_app.command("show")
@_command
def sessions_show(
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many last messages.")] = 50,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show a session: its fields, summary, context and last messages.

    Example: ltst sessions show chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000001
    """
    from .errors import SessionNotFoundError

    with _store(dsn, data_dir) as store:
        session = store.get_session(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        summary = store.get_session_summary(session_id)
        context = store.get_context(session_id)
        messages = store.get_recent_messages(session_id, limit=limit)
    if as_json:
        _print_json(
            {
                "session": dataclasses.asdict(session),
                "summary": dataclasses.asdict(summary),
                "context": [dataclasses.asdict(c) for c in context],
                "messages": [{**dataclasses.asdict(m), "embedding": None} for m in messages],
            }
        )
        return
    console.print(
        f"[bold]{session.session_id}[/] ({session.session_name or 'no name'}) of [bold]{session.user_id}[/], "
        f"{session.status}, created {session.created_at}, last active {session.last_activity}"
    )
    console.print(
        f"{summary.total_messages} messages ({summary.human_messages} human, {summary.ai_messages} ai), "
        f"~{summary.total_tokens_estimate} tokens"
    )
    for c in context:
        console.print(f"  context {c.context_type}/{c.context_key} = {_short(c.context_value)}", highlight=False)
    table = Table(title=f"last {len(messages)} messages")
    for column in ("#", "time", "role", "content"):
        table.add_column(column, overflow="fold")
    for m in messages:
        table.add_row(str(m.message_index), f"{m.timestamp:%Y-%m-%d %H:%M}", m.role, _short(m.content, 200))
    console.print(table)


# --------------------------------------------------------------------------- memory


@app.command()
@_command
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Search all sessions of this user.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Search this session only.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many results.")] = 10,
    threshold: Annotated[float, typer.Option("--threshold", help="Minimum cosine similarity.")] = 0.0,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Search stored messages by meaning (cosine similarity of embeddings).

    Example: ltst search "where did we plan to eat?" --user alice --limit 5
    """
    with _store(dsn, data_dir) as store:
        started = time.perf_counter()
        hits = store.search_messages(query, session_id=session, limit=limit, threshold=threshold, user_id=user)
        elapsed = (time.perf_counter() - started) * 1000
    if as_json:
        _print_json([{"similarity": s, **{**dataclasses.asdict(m), "embedding": None}} for m, s in hits])
        return
    table = Table(title=f"{len(hits)} results for {query!r}  ({elapsed:.0f} ms)")
    for column in ("similarity", "session", "role", "content"):
        table.add_column(column, justify="right" if column == "similarity" else "left", overflow="fold")
    for message, similarity in hits:
        table.add_row(f"{similarity:.3f}", message.session_id, message.role, _short(message.content, 200))
    console.print(table)


@app.command()
@_command
def rehydrate(
    session_id: Annotated[str, typer.Argument(help="The session the prompt is for.")],
    query: Annotated[str, typer.Argument(help="The user's new message.")],
    budget: Annotated[int, typer.Option("--budget", "-b", help="Token budget of the assembled context.")] = 1000,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the context memory would put in front of the next prompt of a session.

    Example: ltst rehydrate demo-today-1a2b3c4d "Where should we eat?" --budget 400
    """
    with _store(dsn, data_dir) as store:
        function = getattr(store, "rehydrate", None)
        if function is None:
            raise LTSTError("this version of ltst-memory has no storage.rehydrate(); upgrade to use `ltst rehydrate`")
        started = time.perf_counter()
        result = function(session_id, query, token_budget=budget)
        elapsed = (time.perf_counter() - started) * 1000
        console.rule(f"rehydrate({session_id!r}, {query!r}, token_budget={budget})  {elapsed:.0f} ms")
        text = result.to_prompt() if hasattr(result, "to_prompt") else str(result)
        console.print(text, markup=False, highlight=False)


@app.command()
@_command
def stats(
    as_json: JsonOption = False,
    days: Annotated[int, typer.Option("--days", help="Days of growth history.")] = 14,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show row counts, table and index sizes, index usage and storage growth (nothing leaves the machine).

    Example: ltst stats --json
    """
    from .stats import format_bytes

    with _store(dsn, data_dir) as store:
        report = store.stats(growth_days=days)
    if as_json:
        _print_json(report)
        return
    database = report["database"]
    console.print(
        f"[bold]{database['database']}[/]: {format_bytes(database['database_bytes'])}, PostgreSQL "
        f"{database['postgres']}, pgvector {database['pgvector']}, buffer cache hit ratio "
        f"{database['buffer_cache_hit_ratio']}, model {report['embedding']['model']} "
        f"({report['embedding']['dimension']} dims)"
    )
    console.print("rows: " + ", ".join(f"{k} {v}" for k, v in report["rows"].items()), highlight=False)
    if report.get("cache"):
        console.print("cache: " + ", ".join(f"{k} {v}" for k, v in report["cache"].items()), highlight=False)
    tables = Table(title="tables")
    for column in ("table", "total", "indexes", "seq scans", "index scans"):
        tables.add_column(column, justify="left" if column == "table" else "right")
    for t in report["tables"]:
        tables.add_row(
            t["table_name"],
            format_bytes(t["total_bytes"]),
            format_bytes(t["index_bytes"]),
            str(t["seq_scans"]),
            str(t["index_scans"]),
        )
    console.print(tables)
    indexes = Table(title="indexes (0 scans = unused since the statistics were reset)")
    for column in ("index", "table", "method", "size", "scans"):
        indexes.add_column(column, justify="right" if column in ("size", "scans") else "left")
    for i in report["indexes"]:
        indexes.add_row(i["index_name"], i["table_name"], i["method"], format_bytes(i["bytes"]), str(i["scans"]))
    console.print(indexes)
    growth = [g for g in report["growth"] if g["messages"] or g["sessions"]]
    console.print(
        "growth (day: messages/sessions): "
        + (", ".join(f"{g['day']}: {g['messages']}/{g['sessions']}" for g in growth) or f"none in {days} days"),
        highlight=False,
    )


@app.command()
@_command
def cleanup(dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Delete expired context entries (and whatever the retention policies no longer keep).

    Example: ltst cleanup
    """
    with _store(dsn, data_dir) as store:
        removed = store.cleanup_expired_data()
    console.print("removed: " + ", ".join(f"{v} {k}" for k, v in removed.items()), highlight=False)


_cli_data.register(app)
_cli_citus.register(app)
_cli_server.register(app)


def main() -> None:
    """Entry point of the ``ltst`` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
