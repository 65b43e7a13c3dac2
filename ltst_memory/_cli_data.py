"""The ``ltst`` commands that move data: ``reembed``, ``import``, ``import-langchain-postgres``,
``export``, ``schema-sql``, and the documentation generators ``schema-docs`` and ``api-docs``.

No command here replaces an existing file unless given ``--force``; files are written to a
temporary file in the same directory and renamed into place, so a failed write leaves the old file
(or no file) behind, never a truncated one."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated

import typer

from ._cli_common import (
    DataDirOption,
    DsnOption,
    JsonOption,
    _command,
    _database,
    _print_json,
    _progress,
    _store,
    embedder_for,
    error_line,
    out,
    plural,
)
from .errors import LTSTError

ForceOption = Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")]


def _refuse_existing(path: Path, force: bool) -> None:
    if not force and (path.exists() or path.is_symlink()):
        raise LTSTError(f"{path} exists; pass --force to replace it")


def atomic_output(path: Path, *, force: bool) -> contextlib.AbstractContextManager[IO[str]]:
    """A text file that becomes ``path`` only when complete (see :func:`ltst_memory.io._common.atomic_text_file`)."""
    from .io._common import atomic_text_file

    _refuse_existing(path, force)
    return atomic_text_file(path, overwrite=force)


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""

    @app.command()
    @_command
    def reembed(
        model: Annotated[str, typer.Option("--model", help="The new embedding model (sentence-transformers name).")],
        batch_size: Annotated[int, typer.Option("--batch-size", help="Messages per embedding call.")] = 256,
        restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted run and start over.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Re-embed even if the model is unchanged.")] = False,
        as_json: JsonOption = False,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Switch the database to another embedding model, re-embedding every message (resumable).

        The store keeps working with the old model until the switch at the end; an interrupted run
        continues where it stopped when started again.

        Example: ltst reembed --model all-mpnet-base-v2
        """
        from .reembed import reembed as run_reembed

        embedder = embedder_for(model)
        with _database(dsn, data_dir) as (conninfo, _settings), _progress() as bar:
            task = bar.add_task(f"re-embedding with {model}", total=None)
            result = run_reembed(
                conninfo,
                embedder,
                batch_size=batch_size,
                restart=restart,
                force=force,
                on_start=lambda n: bar.update(task, total=n),
                progress=lambda k: bar.advance(task, k),
            )
        if as_json:
            _print_json(dataclasses.asdict(result))
            return
        if result.messages == 0 and (result.previous_model, result.previous_dimension) == (model, result.dimension):
            out(f"already on {model} ({result.dimension} dims); nothing to do (use --force to redo)")
            return
        resumed = f", resumed after message {result.resumed_from}" if result.resumed_from else ""
        out(
            f"re-embedded {result.messages} messages: {result.previous_model} ({result.previous_dimension} dims) "
            f"-> {model} ({result.dimension} dims){resumed}"
        )

    # --------------------------------------------------------------------------- import / export

    @app.command("import")
    @_command
    def import_(
        path: Annotated[Path, typer.Argument(help="The file to import.", exists=True, dir_okay=False)],
        format: Annotated[
            str, typer.Option("--format", "-f", help="auto, ltst (an `ltst export` file), chatgpt, jsonl, langchain.")
        ] = "auto",
        user: Annotated[str | None, typer.Option("--user", "-u", help="Owner of the imported sessions.")] = None,
        session: Annotated[str | None, typer.Option("--session", "-s", help="Session for lines without one.")] = None,
        as_json: JsonOption = False,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Import conversations: ChatGPT conversations.json, JSONL messages, LangChain dumps, ltst exports.

        Importing the same file again adds nothing.

        Example: ltst import conversations.json --user alice
        """
        from .io import import_file

        with _store(dsn, data_dir) as store, _progress() as bar:
            task = bar.add_task(f"importing {path.name}", total=None)
            result = import_file(
                store, path, format=format, user_id=user, session_id=session, progress=lambda n: bar.advance(task, n)
            )
        for warning in result.warnings:
            error_line(warning, label="warning:", style="yellow")
        if as_json:
            _print_json(
                {
                    "sessions_seen": result.sessions_seen,
                    "sessions_created": result.sessions_created,
                    "messages_seen": result.messages_seen,
                    "messages_added": result.messages_added,
                    "other_rows_added": result.other_rows_added,
                    "warnings": list(result.warnings),
                }
            )
            return
        out(
            f"{plural(result.sessions_seen, 'session')} ({result.sessions_created} new), "
            f"{plural(result.messages_seen, 'message')} ({result.messages_added} new), "
            f"{plural(result.other_rows_added, 'other row')} added"
        )

    @app.command("import-langchain-postgres")
    @_command
    def import_langchain_postgres(
        source_dsn: Annotated[str, typer.Argument(help="DSN of the database holding the langchain-postgres tables.")],
        user: Annotated[
            str | None, typer.Option("--user", "-u", help="Owner of the imported chat sessions and documents.")
        ] = None,
        table: Annotated[
            str | None, typer.Option("--table", help="Chat history table (PostgresChatMessageHistory).")
        ] = None,
        collection: Annotated[str | None, typer.Option("--collection", help="PGVector collection name.")] = None,
        vector_table: Annotated[str | None, typer.Option("--vector-table", help="PGVectorStore table name.")] = None,
        as_json: JsonOption = False,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Copy langchain-postgres chat histories and/or vector stores into ltst-memory (repeatable).

        Example: ltst import-langchain-postgres postgresql://localhost/old --table message_store --user alice
        """
        from .io import import_langchain_postgres as import_chats
        from .io import import_langchain_vectorstore

        if not (table or collection or vector_table):
            raise LTSTError("name what to import: --table (chat history), --collection (PGVector) or --vector-table")
        if table and not user:
            raise LTSTError("importing a chat history table needs --user")
        report: dict[str, dict[str, int]] = {}
        with _store(dsn, data_dir) as store:
            if table:
                r = import_chats(store, source_dsn, str(user), table=table)
                report["chat_history"] = {"sessions_seen": r.sessions_seen, "messages_added": r.messages_added}
                if not as_json:
                    out(f"chat history {table}: {plural(r.sessions_seen, 'session')}, {r.messages_added} new messages")
            if collection or vector_table:
                v = import_langchain_vectorstore(
                    store, source_dsn, collection=collection, table=vector_table, user_id=user
                )
                report["vector_store"] = {"documents_added": v.other_rows_added}
                if not as_json:
                    out(f"vector store {collection or vector_table}: {v.other_rows_added} new documents")
        if as_json:
            _print_json(report)

    @app.command()
    @_command
    def export(
        output: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for standard output).")],
        user: Annotated[str | None, typer.Option("--user", "-u", help="Export all of this user's memory.")] = None,
        session: Annotated[str | None, typer.Option("--session", "-s", help="Export one session.")] = None,
        embeddings: Annotated[bool, typer.Option("--embeddings/--no-embeddings", help="Include vectors.")] = True,
        force: ForceOption = False,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Export a user's or a session's memory to JSONL (lossless; `ltst import` reads it back).

        Never replaces an existing file without --force; the file appears only when complete.

        Example: ltst export alice.jsonl --user alice
        """
        from .io import export_jsonl

        if (user is None) == (session is None):
            raise LTSTError("give exactly one of --user or --session")
        to_stdout = str(output) == "-"
        if not to_stdout:
            _refuse_existing(output, force)
        with _store(dsn, data_dir) as store:
            _check_export_source(store, user, session)
            with _progress() as bar:
                task = bar.add_task(f"exporting to {output}", total=None)
                counts = export_jsonl(
                    store,
                    sys.stdout if to_stdout else output,
                    user_id=user,
                    session_id=session,
                    embeddings=embeddings,
                    progress=lambda n: bar.advance(task, n),
                    overwrite=force,
                )
        summary = ", ".join(plural(n, kind) for kind, n in counts.items()) or "nothing"
        error_line(f"{summary}" + ("" if to_stdout else f" to {output}"), label="exported", style="")

    # --------------------------------------------------------------------------- docs

    @app.command("schema-sql")
    @_command
    def schema_sql(
        output: Annotated[
            Path, typer.Option("--output", "-o", help="File to write ('-', the default: standard output).")
        ] = Path("-"),
        force: ForceOption = False,
    ) -> None:
        """Print every migration as one SQL script for psql (idempotent: safe to run twice).

        Example: ltst schema-sql > ltst-schema.sql && psql -d app -v ON_ERROR_STOP=1 -f ltst-schema.sql
        """
        text = schema_script()
        if str(output) == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        with atomic_output(output, force=force) as handle:
            handle.write(text)
        error_line(str(output), label="wrote", style="")

    @app.command("schema-docs", hidden=True)
    @_command
    def schema_docs(
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("docs/schema.md"),
        check: Annotated[bool, typer.Option("--check", help="Fail if the file is not current.")] = False,
        force: ForceOption = False,
    ) -> None:
        """(Developers) Generate the schema reference (docs/schema.md) from the migrations, using a
        scratch database.

        Example: ltst schema-docs --check
        """
        from ._docgen import render_schema

        _write_or_check(output, render_schema, check, force)

    @app.command("api-docs", hidden=True)
    @_command
    def api_docs(
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("docs/api.md"),
        check: Annotated[bool, typer.Option("--check", help="Fail if the file is not current.")] = False,
        force: ForceOption = False,
    ) -> None:
        """(Developers) Generate the API reference (docs/api.md) from the code's signatures and docstrings.

        Example: ltst api-docs --force
        """
        from ._docgen import render_api

        _write_or_check(output, render_api, check, force)


def schema_script() -> str:
    """Every numbered migration of ``schema/`` in order, as one script ``psql -f`` can run (each
    migration is idempotent, so the script is too). Records nothing in ``ltst_migrations``: stores
    opened later apply the migrations again, which changes nothing."""
    from . import __version__
    from .schema import migration_files

    parts = [
        f"-- ltst-memory {__version__}: the complete schema, generated by `ltst schema-sql`.\n"
        "-- Idempotent: safe to run twice. Run with: psql -v ON_ERROR_STOP=1 -d DATABASE -f THIS_FILE\n"
    ]
    for name, sql in migration_files():
        parts.append(f"\n-- ===== {name}\n{sql.rstrip()}\n")
    return "".join(parts)


def _check_export_source(store: object, user: str | None, session: str | None) -> None:
    """Refuse to export a session or user that has nothing stored (a typo), before any file is made."""
    from .errors import SessionNotFoundError

    if session is not None and store.get_session(session) is None:  # type: ignore[attr-defined]
        raise SessionNotFoundError(session)
    if (
        user is not None
        and not store.get_user_sessions(user, limit=1)  # type: ignore[attr-defined]
        and not store.get_preferences(user)  # type: ignore[attr-defined]
    ):
        raise LTSTError(f"user {user!r} has no sessions or preferences to export")


def _write_or_check(output: Path, render: Callable[[], str], check: bool, force: bool) -> None:
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != render():
            raise LTSTError(f"{output} is out of date; regenerate it with --force")
        out(f"{output} is current")
        return
    text = render()
    if output.exists() and output.read_text(encoding="utf-8") == text:
        out(f"{output} is current")
        return
    with atomic_output(output, force=force) as handle:
        handle.write(text)
    out(f"wrote {output}")
