"""Import generic JSONL: one message per line.

Each line is a JSON object with ``role`` and ``content`` and optionally ``session_id``,
``session_name``, ``timestamp`` (ISO 8601 or epoch seconds; also ``created_at``/``time``),
``metadata`` (an object), ``id`` (your id of the message) and ``parent_id`` (the ``id`` of its
parent), or ``message_uuid``. Lines without ``session_id`` go to the session given by the caller.
Message uuids are uuid5 of the session and ``id`` (or of the line's role, content, time and
position among identical lines), so importing the same file again adds nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..models import ConversationMessage, ConversationSession
from ._common import ImportResult, MessageRecord, Progress, SessionRecord, parse_time, run_records, stable_uuid

__all__ = ["import_jsonl", "iter_jsonl", "parse_message_lines"]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        lines = enumerate(handle, 1)
        while True:
            try:
                number, line = next(lines)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise ValidationError(f"{path}: not UTF-8 text; JSONL files are UTF-8") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise ValidationError(f"{path}:{number}: expected a JSON object per line")
            yield number, value


def default_session_id(user_id: str, name: str) -> str:
    """The session id used for lines without one: stable for the same user and file name."""
    return f"import-{stable_uuid('jsonl', user_id, name)[:13]}"


def parse_message_lines(
    lines: Iterable[tuple[int, dict[str, Any]]], user_id: str, session_id: str, session_name: str | None = None
) -> list[SessionRecord]:
    """Group message objects by session (in file order) into session records (no I/O)."""
    sessions: dict[str, SessionRecord] = {}
    occurrences: dict[tuple[Any, ...], int] = {}
    for number, obj in lines:
        sid = str(obj.get("session_id") or session_id)
        record = sessions.get(sid)
        if record is None:
            record = sessions[sid] = SessionRecord(
                ConversationSession(sid, user_id, obj.get("session_name") or session_name, metadata={"source": "jsonl"})
            )
        role, content = obj.get("role"), obj.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValidationError(f"line {number}: every line needs string 'role' and 'content'")
        stamp = obj.get("timestamp", obj.get("created_at", obj.get("time")))
        if obj.get("message_uuid"):
            try:
                message_uuid = str(uuid.UUID(str(obj["message_uuid"])))
            except ValueError:
                raise ValidationError(f"line {number}: message_uuid is not a UUID") from None
        elif obj.get("id") is not None:
            message_uuid = stable_uuid("jsonl", sid, "id", obj["id"])
        else:
            key = (sid, role, content, str(stamp))
            occurrences[key] = occurrences.get(key, 0) + 1
            message_uuid = stable_uuid("jsonl", *key, occurrences[key])
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValidationError(f"line {number}: metadata must be an object")
        parent = obj.get("parent_id")
        record.messages.append(
            MessageRecord(
                ConversationMessage(
                    session_id=sid,
                    role=role,
                    content=content,
                    message_type=str(obj.get("message_type") or "message"),
                    metadata=dict(metadata),
                    timestamp=parse_time(stamp, f"line {number}: timestamp"),
                    message_uuid=message_uuid,
                ),
                parent_uuid=stable_uuid("jsonl", sid, "id", parent) if parent is not None else None,
            )
        )
    return list(sessions.values())


def import_jsonl(
    store: Any,
    path: str | Path,
    user_id: str,
    *,
    session_id: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a JSONL file of messages for ``user_id``; lines without ``session_id`` go to ``session_id``
    (default: a session id derived from the user and the file name, named after the file)."""
    name = Path(path).stem
    records = parse_message_lines(iter_jsonl(path), user_id, session_id or default_session_id(user_id, name), name)
    return run_records(store, records, progress=progress)
