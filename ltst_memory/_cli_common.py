"""What the ``ltst`` commands share: consoles, options, error handling, opening the store."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .errors import LTSTError

console = Console()
err_console = Console(stderr=True)

DsnOption = Annotated[
    str | None, typer.Option("--dsn", help="PostgreSQL DSN (default: LTST_DATABASE_URL, DATABASE_URL, embedded).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory of the embedded server (default: LTST_DATA_DIR).")
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Embedding model (default: the one recorded in the database). 'hashing-bow[:DIM]' is a fast test model.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _command(function: Callable[..., None]) -> Callable[..., None]:
    """Turn library and OS errors into one red line and exit code 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except (LTSTError, OSError, psycopg_errors()) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
            raise typer.Exit(code=1) from None

    return wrapper


def psycopg_errors() -> type[Exception]:
    import psycopg

    return psycopg.Error


def embedder_for(name: str) -> Any:
    """An embedder for ``name``: ``hashing-bow`` / ``hashing-bow:DIM`` (no model, for tests) or a
    sentence-transformers model name or path."""
    from .embeddings import HashingEmbedder, SentenceTransformerEmbedder

    if name == "hashing-bow" or name.startswith("hashing-bow:"):
        dim = int(name.split(":", 1)[1]) if ":" in name else 384
        return HashingEmbedder(dim, model_name=name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformerEmbedder(name)


@contextmanager
def _database(dsn: str | None, data_dir: Path | None) -> Iterator[tuple[str, Any]]:
    """``(conninfo, settings)``: the configured database, starting the embedded server if needed."""
    from ._connection import acquire_embedded, release_embedded
    from .config import Settings

    settings = Settings.from_env(dsn=dsn, data_dir=data_dir)
    conninfo = settings.dsn or acquire_embedded(settings.data_dir)
    try:
        yield conninfo, settings
    finally:
        if settings.dsn is None:
            release_embedded(settings.data_dir)


def _stored_model(conninfo: str) -> str | None:
    import psycopg

    from ._connection import unavailable

    try:
        with psycopg.connect(conninfo) as conn:
            if not conn.execute("SELECT to_regclass('ltst_metadata') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                return None
            row = conn.execute("SELECT value FROM ltst_metadata WHERE key = 'embedding_model'").fetchone()
    except psycopg.OperationalError as exc:
        raise unavailable(conninfo, exc) from None
    return None if row is None else str(row[0])


@contextmanager
def _store(dsn: str | None, data_dir: Path | None, model: str | None = None) -> Iterator[Any]:
    """A ConversationStorage on the configured database, with ``model`` or the database's own model."""
    from .storage import ConversationStorage

    with _database(dsn, data_dir) as (conninfo, settings):
        name = model or _stored_model(conninfo) or settings.embedding_model
        with ConversationStorage(conninfo, embedder=embedder_for(name)) as store:
            yield store


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str, ensure_ascii=False))


def _progress() -> Progress:
    """A progress bar on standard error (shown on a terminal, or always with LTST_PROGRESS=1)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal and os.environ.get("LTST_PROGRESS") != "1",
    )


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
