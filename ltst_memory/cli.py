"""The ``ltst`` command line: ``ltst demo``, ``ltst migrate``, ``ltst doctor`` and friends."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from . import _cli_citus, _cli_data, _cli_ops, _cli_serve, _cli_server
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
    error_line,
    out,
    plural,
    show_table,
    stdout_is_terminal,
    visible,
)
from .errors import LTSTError


def _flags_without_type() -> None:
    """Typer 0.29 shows ``<bool>`` after every flag in help (``--json <bool>``), as if it took a
    value: show flags bare, as click does."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_ltst_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else original(self, ctx)

    display_type_rich._ltst_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()

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
    error_line(str(exc))
    raise typer.Exit(code=1)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out(f"ltst-memory {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
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
            out(
                ("Database", "bold"),
                f" {store.dsn}  (PostgreSQL {store.versions()['postgres']}, "
                f"pgvector {store.versions()['pgvector']}) opened in {time.perf_counter() - started:.2f}s",
            )
            for old in store.get_user_sessions(DEMO_USER, limit=1000):
                store.delete_session(old.session_id)
            run = uuid.uuid4().hex[:8]
            past = store.create_session(ConversationSession(f"demo-trip-{run}", DEMO_USER, "Trip planning"))
            now = store.create_session(ConversationSession(f"demo-today-{run}", DEMO_USER, "Laptop help"))
            t0 = time.perf_counter()
            store.store_messages([ConversationMessage(past.session_id, r, c) for r, c in DEMO_PAST])
            store.store_messages([ConversationMessage(now.session_id, r, c) for r, c in DEMO_NOW])
            out(
                ("Stored", "bold"),
                f" {len(DEMO_PAST) + len(DEMO_NOW)} messages in 2 sessions "
                f"({time.perf_counter() - t0:.2f}s, model {store.embedder.model_name})",
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
            show_table(
                f"search_messages({query!r}, user_id={DEMO_USER!r})  {(time.perf_counter() - t0) * 1000:.0f} ms",
                ("similarity", "session", "role", "content"),
                [(f"{similarity:.3f}", m.session_id, m.role, m.content) for m, similarity in hits],
                right=("similarity",),
            )

            summary = store.get_session_summary(now.session_id)
            out(
                ("Session summary", "bold"),
                f" {now.session_id}: {summary.total_messages} messages "
                f"({summary.human_messages} human, {summary.ai_messages} ai), "
                f"~{summary.total_tokens_estimate} tokens",
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
    _print_prompt(f"rehydrate({session_id!r}, {query!r}, token_budget=400)  {elapsed:.0f} ms", result.to_prompt())


def _print_prompt(header: str, prompt: str) -> None:
    """A rule and the prompt on a terminal; the prompt alone, exactly, into a pipe or file."""
    if not stdout_is_terminal():
        sys.stdout.write(prompt + "\n")
        sys.stdout.flush()
        return
    console.rule(Text(visible(header)))
    console.print(Text(visible(prompt)), soft_wrap=True)


# --------------------------------------------------------------------------- database commands


@app.command()
@_command
def migrate(as_json: JsonOption = False, dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Apply pending schema migrations (the store also does this when it opens).

    Example: ltst migrate --dsn postgresql://localhost/app
    """
    from ._connection import connect
    from .migrate import migrate as run_migrations

    with _database(dsn, data_dir) as (conninfo, _settings), connect(conninfo) as conn:
        applied = run_migrations(conn)
    if as_json:
        _print_json({"applied": applied})
        return
    out(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command("vector-index")
@_command
def vector_index(
    storage: Annotated[
        str | None, typer.Option("--storage", help="vector (float32) or halfvec (float16, half the index).")
    ] = None,
    lists: Annotated[int | None, typer.Option("--lists", help="IVFFlat lists (default: messages / 1000).")] = None,
    concurrently: Annotated[
        bool, typer.Option("--concurrently", help="Build the new index beside the old one; writes go on.")
    ] = False,
    user: Annotated[
        str | None, typer.Option("--user", help="Build (or rebuild) only this user's own index.")
    ] = None,
    users: Annotated[
        bool,
        typer.Option(
            "--users/--no-users", help="Also build the own index of every user over exact_search_max_rows messages."
        ),
    ] = True,
    users_over: Annotated[
        int | None,
        typer.Option(
            "--users-over", help="With --users: the message count over which (default exact_search_max_rows)."
        ),
    ] = None,
    user_method: Annotated[
        str | None, typer.Option("--user-method", help="The users' own indexes: hnsw (default) or ivfflat.")
    ] = None,
    drop_user: Annotated[str | None, typer.Option("--drop-user", help="Drop this user's own index.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Only show the index in use; build nothing.")] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Build or rebuild the vector index of unscoped and large-scope searches (docs/scaling.md, "The vector index").

    Build it once the store holds messages (10,000 or more), then run it from time to time: it
    rebuilds the index once the messages stored since it was built (its "gap", which every search
    through it reads exactly) pass 1 % of it, or when --storage or --lists asks for another index,
    and replaces an index that covers every message (kept on each insert; a Citus cluster's always
    does: rebuilt every time). It also builds an index of their own for the users with more than
    exact_search_max_rows messages (--no-users: not), rebuilds those with many messages stored since
    theirs was built (reported as "gaps"), and drops those of users who no longer have that many.
    Example: ltst vector-index --concurrently
    """
    from ._connection import connect
    from .hnsw import (
        IndexBuild,
        build_index,
        build_user_index,
        build_user_indexes,
        drop_user_index,
        main_index,
        own_indexes,
        refresh_index,
        user_indexes,
    )

    with _database(dsn, data_dir) as (conninfo, settings), connect(conninfo) as conn:
        if show:
            state = main_index(conn)
            definition = state.definition
            own = user_indexes(conn)
            gaps = {o.user_id: o.gap for o in own_indexes(conn)}
            if as_json:
                _print_json(
                    {
                        "index": definition,
                        "watermark": state.watermark,
                        "gap": state.gap,
                        "user_indexes": [p for _, p in own],
                        "gaps": gaps,
                    }
                )
            else:
                out(
                    definition
                    or "no vector index: searches of large scopes scan exactly (ltst vector-index builds one)"
                )
                if state.watermark is not None:
                    out(f"messages stored since it was built (up to message {state.watermark}): {state.gap}")
                for _, predicate in own:
                    out(f"own index: {predicate}")
                for user_id, gap in gaps.items():
                    out(f"messages of {user_id} stored since their own index: {gap}")
            return
        if drop_user is not None:
            dropped = drop_user_index(conn, drop_user)
            if as_json:
                _print_json({"dropped": dropped})
            else:
                out(f"dropped the own index of {drop_user}" if dropped else f"{drop_user} has no own index")
            return
        built: IndexBuild | None
        if user is not None:
            built = build_user_index(conn, user, method=user_method, lists=lists, concurrently=concurrently)
            own_built = []
        else:
            if storage is None and lists is None:
                built = refresh_index(conn, concurrently=concurrently)
            else:
                built = build_index(conn, storage=storage, lists=lists, concurrently=concurrently)
            own_built = (
                build_user_indexes(
                    conn,
                    min_rows=settings.exact_search_max_rows if users_over is None else users_over,
                    concurrently=concurrently,
                    method=user_method,
                )
                if users
                else []
            )
        gaps = {o.user_id: o.gap for o in own_indexes(conn)}
        state = main_index(conn)
    if as_json:
        kept = {"watermark": state.watermark, "rows": state.rows}
        _print_json(
            {
                **(dataclasses.asdict(built) if built is not None else kept),
                "built": built is not None,
                "gap": state.gap,
                "user_indexes": [dataclasses.asdict(b) for b in own_built],
                "gaps": gaps,
            }
        )
        return
    if built is None:
        out(f"vector index kept: up to message {state.watermark}, {state.gap} messages stored since")
    for b in [built, *own_built] if built is not None else own_built:
        whose = f" of user {b.user_id}" if b.user_id is not None else ""
        upto = f" up to message {b.watermark}" if b.watermark is not None else ""
        shape = f"{b.lists} lists" if b.method == "ivfflat" else b.method
        out(f"vector index{whose} built: {b.storage}, {shape} over {b.rows} messages{upto} in {b.seconds:.1f} s")
    for user_id, gap in gaps.items():
        out(f"messages of {user_id} stored since their own index: {gap}")


@app.command("hnsw-storage")
@_command
def hnsw_storage(
    storage: Annotated[
        str | None, typer.Argument(help="vector (float32) or halfvec (float16, half the index); omit to show.")
    ] = None,
    concurrently: Annotated[
        bool, typer.Option("--concurrently", help="Build the new index beside the old one; writes go on.")
    ] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show or change how the vector index stores vectors (the name predates the IVFFlat index).

    Example: ltst hnsw-storage halfvec --concurrently
    """
    from ._connection import connect
    from .hnsw import index_storage, set_index_storage

    with _database(dsn, data_dir) as (conninfo, _settings), connect(conninfo) as conn:
        if storage is None:
            current = index_storage(conn)
            if as_json:
                _print_json({"storage": current})
            else:
                out(f"vector index storage: {current}")
            return
        changed = set_index_storage(conn, storage, concurrently=concurrently)
    if as_json:
        _print_json({"storage": storage, "changed": changed})
        return
    out(f"vector index rebuilt as {storage}" if changed else f"vector index already uses {storage}")


@app.command()
def doctor(
    dsn: DsnOption = None, data_dir: DataDirOption = None, model: ModelOption = None, as_json: JsonOption = False
) -> None:
    """Check the database, PostgreSQL, pgvector, the schema and the embedding model; say what to fix.

    Example: ltst doctor
    """
    from ._cli_ops import run_checks

    checks = list(run_checks(dsn, data_dir, model, embedder_for))
    problems = sum(check.status == "fail" for check in checks)
    if as_json:
        _print_json([dataclasses.asdict(check) for check in checks])
    elif stdout_is_terminal():
        table = Table(title="ltst doctor")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail / how to fix", overflow="fold")
        styles = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}
        for check in checks:
            detail = check.detail if check.status == "ok" else f"{check.detail}\n→ {check.fix}"
            table.add_row(Text(check.name), Text(*styles[check.status]), Text(visible(detail)))
        console.print(table)
    else:
        show_table(
            "ltst doctor",
            ("check", "status", "detail", "how to fix"),
            [(c.name, c.status, c.detail, "" if c.status == "ok" else c.fix) for c in checks],
        )
    if problems:
        error_line(f"{plural(problems, 'problem')} found; see the fixes above")
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
    show_table(
        f"sessions{f' of {user}' if user else ''}",
        ("session", "user", "name", "messages", "last activity"),
        [
            (
                r["session_id"],
                r["user_id"],
                r["session_name"] or "",
                str(r["total_messages"]),
                f"{r['last_activity']:%Y-%m-%d %H:%M}",
            )
            for r in rows
        ],
        right=("messages",),
    )


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
    out(
        (session.session_id, "bold"),
        f" ({session.session_name or 'no name'}) of ",
        (session.user_id, "bold"),
        f", {session.status}, created {session.created_at}, last active {session.last_activity}",
    )
    out(
        f"{plural(summary.total_messages, 'message')} ({summary.human_messages} human, {summary.ai_messages} ai), "
        f"~{summary.total_tokens_estimate} tokens"
    )
    for c in context:
        out(f"  context {c.context_type}/{c.context_key} = {_short(c.context_value)}")
    show_table(
        f"last {plural(len(messages), 'message')}",
        ("#", "time", "role", "content"),
        [(str(m.message_index), f"{m.timestamp:%Y-%m-%d %H:%M}", m.role, _short(m.content, 200)) for m in messages],
    )


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
    show_table(
        f"{plural(len(hits), 'result')} for {query!r}  ({elapsed:.0f} ms)",
        ("similarity", "session", "role", "content"),
        [(f"{s:.3f}", m.session_id, m.role, _short(m.content, 200)) for m, s in hits],
        right=("similarity",),
    )


@app.command()
@_command
def rehydrate(
    session_id: Annotated[str, typer.Argument(help="The session the prompt is for.")],
    query: Annotated[str, typer.Argument(help="The user's new message.")],
    budget: Annotated[int, typer.Option("--budget", "-b", help="Token budget of the assembled context.")] = 2000,
    as_json: JsonOption = False,
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
    if as_json:
        _print_json(_rehydration_json(result))
        return
    _print_prompt(f"rehydrate({session_id!r}, {query!r}, token_budget={budget})  {elapsed:.0f} ms", result.to_prompt())


def _rehydration_json(result: object) -> dict[str, object]:
    """The JSON of ``ltst rehydrate --json``: the prompt, the chat messages and every item with its source."""
    return {
        "session_id": result.session_id,  # type: ignore[attr-defined]
        "user_id": result.user_id,  # type: ignore[attr-defined]
        "query": result.query,  # type: ignore[attr-defined]
        "token_budget": result.token_budget,  # type: ignore[attr-defined]
        "tokens_used": result.tokens_used,  # type: ignore[attr-defined]
        "prompt": result.to_prompt(),  # type: ignore[attr-defined]
        "messages": result.to_messages(),  # type: ignore[attr-defined]
        "items": [
            {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "message"}
            for item in result.items()  # type: ignore[attr-defined]
        ],
        "dropped": result.dropped,  # type: ignore[attr-defined]
    }


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
    # The query cache's counters belong to one process: the CLI's own store has served nothing yet,
    # so they would always read zero here (applications read them from their own store.stats()).
    report.pop("cache", None)
    if as_json:
        _print_json(report)
        return
    database = report["database"]
    out(
        (str(database["database"]), "bold"),
        f": {format_bytes(database['database_bytes'])}, PostgreSQL "
        f"{database['postgres']}, pgvector {database['pgvector']}, buffer cache hit ratio "
        f"{database['buffer_cache_hit_ratio']}, model {report['embedding']['model']} "
        f"({report['embedding']['dimension']} dims)",
    )
    out("rows: " + ", ".join(f"{k} {v}" for k, v in report["rows"].items()))
    show_table(
        "tables",
        ("table", "total", "indexes", "seq scans", "index scans"),
        [
            (
                t["table_name"],
                format_bytes(t["total_bytes"]),
                format_bytes(t["index_bytes"]),
                str(t["seq_scans"]),
                str(t["index_scans"]),
            )
            for t in report["tables"]
        ],
        right=("total", "indexes", "seq scans", "index scans"),
    )
    show_table(
        "indexes (0 scans = unused since the statistics were reset)",
        ("index", "table", "method", "size", "scans"),
        [
            (i["index_name"], i["table_name"], i["method"], format_bytes(i["bytes"]), str(i["scans"]))
            for i in report["indexes"]
        ],
        right=("size", "scans"),
    )
    growth = [g for g in report["growth"] if g["messages"] or g["sessions"]]
    out(
        "growth (day: messages/sessions): "
        + (", ".join(f"{g['day']}: {g['messages']}/{g['sessions']}" for g in growth) or f"none in {days} days")
    )


@app.command()
@_command
def cleanup(as_json: JsonOption = False, dsn: DsnOption = None, data_dir: DataDirOption = None) -> None:
    """Delete expired context entries (and whatever the retention policies no longer keep).

    Example: ltst cleanup
    """
    with _store(dsn, data_dir) as store:
        removed = store.cleanup_expired_data()
    if as_json:
        _print_json(removed)
        return
    out("removed: " + (", ".join(f"{v} {k}" for k, v in removed.items()) or "nothing"))


_cli_data.register(app)
_cli_ops.register(app)
_cli_citus.register(app)
_cli_server.register(app)
_cli_serve.register(app)


def main() -> None:
    """Entry point of the ``ltst`` script: usage errors, too, are one line on standard error."""
    try:
        code = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        ctx = getattr(exc, "ctx", None)
        if message.strip():  # empty: the help was shown (a group called without a command)
            error_line(message + (f" (see '{ctx.command_path} --help')" if ctx is not None else ""))
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(code if isinstance(code, int) else 0)


def _quiet_broken_pipe() -> None:
    """``ltst ... | head``: the reader left; exit without a traceback (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
