"""The ``ltst`` commands that move data: ``reembed``, ``import``, ``import-langchain-postgres``,
``export``, and the documentation generators ``schema-docs`` and ``api-docs``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._cli_common import (
    DataDirOption,
    DsnOption,
    _command,
    _database,
    _progress,
    _store,
    console,
    embedder_for,
    err_console,
)
from .errors import LTSTError


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""

    @app.command()
    @_command
    def reembed(
        model: Annotated[str, typer.Option("--model", help="The new embedding model (sentence-transformers name).")],
        batch_size: Annotated[int, typer.Option("--batch-size", help="Messages per embedding call.")] = 256,
        restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted run and start over.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Re-embed even if the model is unchanged.")] = False,
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
        if result.messages == 0 and (result.previous_model, result.previous_dimension) == (model, result.dimension):
            console.print(f"already on {model} ({result.dimension} dims); nothing to do (use --force to redo)")
            return
        resumed = f", resumed after message {result.resumed_from}" if result.resumed_from else ""
        console.print(
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
            err_console.print(f"[yellow]warning:[/] {warning}")
        console.print(
            f"{result.sessions_seen} sessions ({result.sessions_created} new), "
            f"{result.messages_seen} messages ({result.messages_added} new), {result.other_rows_added} other rows added"
        )

    @app.command("import-langchain-postgres")
    @_command
    def import_langchain_postgres(
        source_dsn: Annotated[str, typer.Argument(help="DSN of the database holding the langchain-postgres tables.")],
        user: Annotated[str | None, typer.Option("--user", "-u", help="Owner of the imported chat sessions.")] = None,
        table: Annotated[
            str | None, typer.Option("--table", help="Chat history table (PostgresChatMessageHistory).")
        ] = None,
        collection: Annotated[str | None, typer.Option("--collection", help="PGVector collection name.")] = None,
        vector_table: Annotated[str | None, typer.Option("--vector-table", help="PGVectorStore table name.")] = None,
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
        with _store(dsn, data_dir) as store:
            if table:
                if not user:
                    raise LTSTError("importing a chat history table needs --user")
                r = import_chats(store, source_dsn, user, table=table)
                console.print(f"chat history {table}: {r.sessions_seen} sessions, {r.messages_added} new messages")
            if collection or vector_table:
                v = import_langchain_vectorstore(store, source_dsn, collection=collection, table=vector_table)
                console.print(f"vector store {collection or vector_table}: {v.other_rows_added} new documents")

    @app.command()
    @_command
    def export(
        output: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for standard output).")],
        user: Annotated[str | None, typer.Option("--user", "-u", help="Export all of this user's memory.")] = None,
        session: Annotated[str | None, typer.Option("--session", "-s", help="Export one session.")] = None,
        embeddings: Annotated[bool, typer.Option("--embeddings/--no-embeddings", help="Include vectors.")] = True,
        dsn: DsnOption = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Export a user's or a session's memory to JSONL (lossless; `ltst import` reads it back).

        Example: ltst export alice.jsonl --user alice
        """
        from .io import export_jsonl

        if (user is None) == (session is None):
            raise LTSTError("give exactly one of --user or --session")
        with _store(dsn, data_dir) as store, _progress() as bar:
            task = bar.add_task(f"exporting to {output}", total=None)
            counts = export_jsonl(
                store,
                str(output),
                user_id=user,
                session_id=session,
                embeddings=embeddings,
                progress=lambda n: bar.advance(task, n),
            )
        summary = ", ".join(f"{n} {kind}s" for kind, n in counts.items()) or "nothing"
        err_console.print(f"exported {summary}" + ("" if str(output) == "-" else f" to {output}"), highlight=False)

    # --------------------------------------------------------------------------- docs

    @app.command("schema-docs")
    @_command
    def schema_docs(
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("docs/schema.md"),
        check: Annotated[bool, typer.Option("--check", help="Fail if the file is not current.")] = False,
    ) -> None:
        """Generate the schema reference (docs/schema.md) from the migrations, using a scratch database.

        Example: ltst schema-docs --check
        """
        from ._docgen import render_schema

        _write_or_check(output, render_schema(), check)

    @app.command("api-docs")
    @_command
    def api_docs(
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path("docs/api.md"),
        check: Annotated[bool, typer.Option("--check", help="Fail if the file is not current.")] = False,
    ) -> None:
        """Generate the API reference (docs/api.md) from the code's signatures and docstrings.

        Example: ltst api-docs --check
        """
        from ._docgen import render_api

        _write_or_check(output, render_api(), check)


def _write_or_check(output: Path, text: str, check: bool) -> None:
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            raise LTSTError(f"{output} is out of date; regenerate it without --check")
        console.print(f"{output} is current")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")
