"""The sync store's source from the async store's: ``storage.py`` is generated from ``storage_async.py``.

As psycopg generates its sync code from its async source (``tools/async_to_sync.py``), the async
store is the one written by hand and the sync store is derived by three explicit steps:

1. **Async-only blocks.** ``if True:  # ASYNC`` keeps its body in the async store; the sync store gets
   the ``else:`` body instead (dedented), or nothing when there is no ``else:``. Used where the two
   genuinely differ: opening in ``open()``/``connect()`` against opening in ``__init__``, ``migrate``
   (a thread and a connection of its own, against a pool connection), ``autocommit``.
2. **Keywords.** ``async`` and ``await`` are dropped.
3. **Names** (:data:`NAMES`), in code, strings and comments, and a few **phrases** (:data:`PHRASES`)
   in strings only: the docstrings and log messages that say which store this is.

The async source is written so that these steps suffice: what runs in a worker thread or concurrently
goes through the function pairs of :mod:`ltst_memory._acompat` (``ablocking``/``blocking``,
``agather``/``gather``, ``astart``/``start`` and ``afinish``/``finish``). ``python -m ltst_memory._codegen``
writes the result (normalised by ruff: unused imports dropped, imports sorted, formatted);
``tests/test_registry.py`` fails when it is not current.
"""

from __future__ import annotations

import io
import itertools
import re
import tokenize

__all__ = ["NAMES", "PHRASES", "unasync"]

#: async name -> sync name (whole identifiers).
NAMES = {
    "AsyncConversationStorage": "ConversationStorage",
    "AsyncLifoConnectionPool": "LifoConnectionPool",
    "ASYNC_STORE_POOL": "STORE_POOL",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncConnection": "Connection",
    "AsyncCursor": "Cursor",
    "AsyncPipeline": "Pipeline",
    "AsyncExitStack": "ExitStack",
    "AsyncIterator": "Iterator",
    "asynccontextmanager": "contextmanager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "enter_async_context": "enter_context",
    "push_async_callback": "callback",
    "ablocking": "blocking",
    "agather": "gather",
    "asleep": "sleep",
    "astart": "start",
    "afinish": "finish",
    "_acall": "_call",
    "_arun": "_run",
    "configure_async": "configure",
    "configure_replica_async": "configure_replica",
    "check_async": "check",
}

#: async text -> sync text, inside string literals (docstrings, log messages, pool names).
PHRASES = {
    "the asyncio store, same methods and semantics as the sync one": "the synchronous store",
    "``storage.py`` is generated from this file:": "Generated from ``storage_async.py`` (do not edit) by",
    "(asyncio API)": "(synchronous API)",
    "Open it with ``await AsyncConversationStorage.open(...)``\n    or ``async with AsyncConversationStorage(...) "
    "as store:``; every method is a coroutine.": "Use it as a context manager or call :meth:`close`.",
    "``True`` before ``connect``/``open`` and after :meth:`close`.": "``True`` once :meth:`close` was called.",
    "psycopg async connection pool": "psycopg connection pool",
    "ltst-memory async store": "ltst-memory store",
    "ltst-memory-async": "ltst-memory",
}

HEADER = (
    "# Generated from ltst_memory/storage_async.py by `python -m ltst_memory._codegen` (ltst_memory/_unasync.py).\n"
    "# Do not edit: change storage_async.py and regenerate.\n"
)

_ASYNC_IF = re.compile(r"^(?P<indent> *)if True:  # ASYNC\b.*$")
_NAME = re.compile(r"\b(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\b")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, indent: int) -> int:
    """The index after the block whose body starts at ``start`` (lines indented deeper than ``indent``;
    blank lines after its last line are not part of it)."""
    end = start
    for i in range(start, len(lines)):
        if lines[i].strip() and _indent(lines[i]) <= indent:
            break
        if lines[i].strip():
            end = i + 1
    return end


def drop_async_blocks(text: str) -> str:
    """Step 1: each ``if True:  # ASYNC`` block replaced by its ``else:`` body, dedented (or nothing)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _ASYNC_IF.match(lines[i].rstrip("\n"))
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match["indent"])
        i = _block(lines, i + 1, indent)
        following = next((j for j in range(i, len(lines)) if lines[j].strip()), len(lines))
        if following < len(lines) and lines[following].rstrip("\n") == " " * indent + "else:":
            end = _block(lines, following + 1, indent)
            out += [line[4:] if line.strip() else line for line in lines[following + 1 : end]]
            i = end
    return "".join(out)


def _rename(text: str) -> str:
    return _NAME.sub(lambda m: NAMES[m[1]], text)


def _string(text: str) -> str:
    for old, new in PHRASES.items():
        text = text.replace(old, new)
    return _rename(text)


def rewrite_tokens(text: str) -> str:
    """Steps 2 and 3, on the tokens (so layout and comments stay as written)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    edits: list[tuple[int, int, str]] = []
    for token, following in itertools.pairwise(tokens):
        start = starts[token.start[0] - 1] + token.start[1]
        end = starts[token.end[0] - 1] + token.end[1]
        if token.type == tokenize.NAME and token.string in ("async", "await"):
            edits.append((start, starts[following.start[0] - 1] + following.start[1], ""))  # with its space
        elif token.type == tokenize.NAME and token.string in NAMES:
            edits.append((start, end, NAMES[token.string]))
        elif token.type == tokenize.STRING:
            edits.append((start, end, _string(token.string)))
        elif token.type == tokenize.COMMENT:
            edits.append((start, end, _rename(token.string)))
    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]
    return text


def unasync(text: str) -> str:
    """The sync store's source for the async store's source ``text`` (before ruff's normalisation)."""
    return HEADER + rewrite_tokens(drop_async_blocks(text))
