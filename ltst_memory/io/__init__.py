"""Importers and exporters: ChatGPT exports, JSONL, LangChain dumps and langchain-postgres tables in;
JSONL (lossless) out. All of them take a sync :class:`~ltst_memory.ConversationStorage`.

Every importer is idempotent: message uuids and session ids are derived from the source's own ids
(uuid5), so importing the same data twice adds nothing the second time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from . import archive, chatgpt, jsonl, langchain
from ._common import ImportResult, MessageRecord, SessionRecord, reads_file, stable_uuid
from .archive import export_jsonl, export_records
from .chatgpt import parse_chatgpt
from .langchain import import_langchain_postgres, import_langchain_vectorstore

# a file that cannot be read or understood is a ValidationError naming it (ltst_memory/io/_common.py)
import_export = reads_file(archive.import_export)
import_chatgpt = reads_file(chatgpt.import_chatgpt)
import_jsonl = reads_file(jsonl.import_jsonl)
import_langchain_messages = reads_file(langchain.import_langchain_messages)

__all__ = [
    "FORMATS",
    "ImportResult",
    "MessageRecord",
    "SessionRecord",
    "detect_format",
    "export_jsonl",
    "export_records",
    "import_chatgpt",
    "import_export",
    "import_file",
    "import_jsonl",
    "import_langchain_messages",
    "import_langchain_postgres",
    "import_langchain_vectorstore",
    "parse_chatgpt",
    "stable_uuid",
]

#: File formats :func:`import_file` understands.
FORMATS = ("ltst", "chatgpt", "jsonl", "langchain")


@reads_file
def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its first bytes: one of :data:`FORMATS`.

    A binary or non-UTF-8 file is a :class:`ValidationError`; an empty JSON list (``[]``, an export
    with no conversations) is a ChatGPT export with nothing in it."""
    with open(path, "rb") as raw:
        data = raw.read(1 << 16)
    if b"\x00" in data:
        raise ValidationError(f"{path} is a binary file, not a conversation export (JSON or JSONL text)")
    if not _utf8(data):
        raise ValidationError(f"{path} is not UTF-8 text; conversation exports are JSON or JSONL in UTF-8")
    head = data.decode("utf-8", errors="ignore")  # checked above; only a character cut at the end is dropped
    stripped = head.lstrip().lstrip("\ufeff").lstrip()
    if not stripped:
        raise ValidationError(f"{path} is empty")
    if stripped.rstrip() == "[]" or (stripped.startswith("[") and stripped[1:].lstrip().startswith("]")):
        return "chatgpt"
    first_line = stripped.splitlines()[0]
    try:
        first = json.loads(first_line)
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):
        if first.get("type") == "ltst-export":
            return "ltst"
        if "role" in first and "content" in first:
            return "jsonl"
        if "type" in first and isinstance(first.get("data"), dict):
            return "langchain"
    if stripped.startswith("["):
        if '"mapping"' in head:
            return "chatgpt"
        if '"data"' in head and '"type"' in head:
            return "langchain"
    raise ValidationError(f"cannot tell the format of {path}; pass one of: {', '.join(FORMATS)}")


def _utf8(data: bytes) -> bool:
    """Whether ``data`` (possibly cut inside a character at the end) is UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"
    return True


@reads_file
def import_file(
    store: Any,
    path: str | Path,
    *,
    format: str = "auto",
    user_id: str | None = None,
    session_id: str | None = None,
    progress: Any = None,
) -> ImportResult:
    """Import ``path`` in ``format`` (``"auto"`` guesses it). ``user_id`` is required except for ltst exports."""
    kind = detect_format(path) if format == "auto" else format
    if kind not in FORMATS:
        raise ValidationError(f"unknown format {format!r}; use one of: auto, {', '.join(FORMATS)}")
    if kind == "ltst":
        return import_export(store, path, user_id=user_id, progress=progress)
    if not user_id:
        raise ValidationError(f"importing a {kind} file needs a user id (--user)")
    if kind == "chatgpt":
        return import_chatgpt(store, path, user_id, progress=progress)
    if kind == "langchain":
        return import_langchain_messages(store, path, user_id, session_id=session_id, progress=progress)
    return import_jsonl(store, path, user_id, session_id=session_id, progress=progress)
