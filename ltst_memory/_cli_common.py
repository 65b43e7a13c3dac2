"""What the ``ltst`` commands share: consoles, options, error handling, opening the store."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .errors import LTSTError

# Stored text is data, never markup: every string that comes from the database reaches these consoles
# as a rich.text.Text (or through the plain writers below), and no console highlights on its own.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# C0/C1 controls (ANSI escapes start with ESC or CSI), DEL, and the Unicode bidi overrides/isolates:
# shown as visible escapes in human output so stored text cannot drive the terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# what json.dumps leaves raw inside strings that a terminal would act on (it escapes C0 itself)
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters (and tabs/newlines unless ``keep_newlines``) as ``\\xNN``."""
    return (_UNSAFE if keep_newlines else _UNSAFE_ALL).sub(_escape_char, text)


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (tables and colours) or a pipe/file (plain text)."""
    return console.is_terminal


def out(*parts: str | tuple[str, str]) -> None:
    """Print one line to standard output: ``str`` parts are data (shown literally, controls made
    visible), ``(text, style)`` parts are our own labels. Never wrapped when not a terminal."""
    if not stdout_is_terminal():
        line = "".join(visible(p if isinstance(p, str) else p[0]) for p in parts)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    text = Text()
    for p in parts:
        if isinstance(p, str):
            text.append(visible(p))
        else:
            text.append(visible(p[0]), style=p[1])
    console.print(text)


def error_line(message: str, *, label: str = "error:", style: str = "bold red") -> None:
    """One line on standard error: ``error: message`` (the message is data, never markup)."""
    one = " ".join(visible(message, keep_newlines=False).split()) or "unknown error"
    err_console.print(Text.assemble((label, style), " ", one))


def show_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, right: Sequence[str] = ()) -> None:
    """A table: a rich table on a terminal; tab-separated lines under a header line otherwise (the
    title then goes nowhere: plain output is the rows)."""
    if not stdout_is_terminal():
        lines = ["\t".join(columns)]
        lines += ["\t".join(visible(str(v), keep_newlines=False) for v in row) for row in rows]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=Text(visible(title)))
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(visible(str(v))) for v in row))
    console.print(table)


def plural(n: int, word: str, plural_word: str | None = None) -> str:
    """``"1 result"``, ``"2 results"``."""
    return f"{n} {word if n == 1 else (plural_word or word + 's')}"


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
        except BrokenPipeError:
            raise  # the reader of a pipe left (`ltst ... | head`): cli.main() exits quietly
        except (LTSTError, OSError, UnicodeError, psycopg_errors()) as exc:
            error_line(str(exc).strip() or type(exc).__name__)
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


def _json_text(value: Any) -> str:
    """JSON that ``json.loads`` turns back into ``value`` exactly (strings byte for byte).

    Non-ASCII text stays readable when standard output is UTF-8; DEL, C1 controls and bidi
    overrides are always ``\\uXXXX`` escapes (valid JSON, and inert on a terminal)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    text = json.dumps(value, default=str, ensure_ascii=encoding != "utf8", indent=2 if stdout_is_terminal() else None)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _print_json(value: Any) -> None:
    """Write ``value`` as JSON to standard output (one document, plain, never wrapped)."""
    sys.stdout.write(_json_text(value) + "\n")
    sys.stdout.flush()


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
