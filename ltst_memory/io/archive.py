"""Export a user's or a session's memory to JSONL, and import it back without loss.

The file starts with a header line ``{"type": "ltst-export", "version": 1, ...}`` naming the
embedding model, then for each session a ``session`` line, its ``message`` lines (in
``message_index`` order, parents named by ``parent_message_uuid``, embeddings included unless
asked otherwise) and its ``context`` lines; then ``relationship`` lines between exported sessions
and, for a user export, ``preference`` lines. Every row keeps its timestamps. Importing a file into
a database that already holds its rows adds nothing (uuids, session ids and unique keys are kept).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .. import _queries as q
from .. import crypto
from .._ops import Core, Op, Query, is_distributed, owned, session_read
from ..errors import SessionNotFoundError, ValidationError
from ..models import ConversationMessage, ConversationSession, check_id, check_json, check_score, check_text
from ._common import (
    ImportResult,
    MessageRecord,
    Progress,
    SessionRecord,
    _runner,
    atomic_text_file,
    check_record,
    check_session_owners,
    importer_runner,
    parse_time,
    write_conversation,
)
from .jsonl import iter_jsonl

__all__ = ["FORMAT_VERSION", "export_jsonl", "import_export"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER_TYPE = "ltst-export"

# --------------------------------------------------------------------------- SQL

# The sessions first (materialized), then their summaries: on a Citus cluster (docs/citus.md) a join of
# two distributed tables must pair user_id, which session_summary has only there.
_SESSION_SELECT = f"""
WITH s AS MATERIALIZED (SELECT {q.SESSION_COLUMNS} FROM conversation_sessions WHERE {{where}})
SELECT {", ".join("s." + c.strip() for c in q.SESSION_COLUMNS.split(","))}, sm.summary
FROM s LEFT JOIN session_summary AS sm ON sm.session_id = s.session_id
"""
EXPORT_USER_SESSIONS = _SESSION_SELECT.format(where="user_id = %(user_id)s") + "ORDER BY s.created_at, s.session_id"
EXPORT_ONE_SESSION = _SESSION_SELECT.format(where=f"session_id = %(session_id)s {q.owner()}")
EXPORT_MESSAGES = f"""
SELECT {", ".join("m." + c.strip() for c in q.MESSAGE_COLUMNS.split(","))}, {{embedding}},
       p.message_uuid::text AS parent_message_uuid
FROM conversation_messages AS m
LEFT JOIN conversation_messages AS p ON p.message_id = m.parent_message_id AND p.user_id = m.user_id
WHERE m.session_id = %(session_id)s {q.owner("m.")}
ORDER BY m.message_index
"""
EXPORT_MESSAGES_WITH_EMBEDDINGS = EXPORT_MESSAGES.format(embedding="m.embedding")
EXPORT_MESSAGES_WITHOUT_EMBEDDINGS = EXPORT_MESSAGES.format(embedding="NULL::vector AS embedding")
EXPORT_CONTEXT = f"""
SELECT context_type, context_key, context_value, relevance_score, metadata, expires_at, created_at, updated_at
FROM conversation_context WHERE session_id = %(session_id)s {q.owner()} ORDER BY context_id
"""
EXPORT_PREFERENCES = (
    f"SELECT {q.PREFERENCE_COLUMNS} FROM user_preferences WHERE user_id = %(user_id)s ORDER BY preference_key"
)
EXPORT_RELATIONSHIPS = f"""
SELECT {q.RELATIONSHIP_COLUMNS} FROM session_relationships
WHERE source_session_id = ANY(%(ids)s) AND target_session_id = ANY(%(ids)s) {q.owner()}
ORDER BY source_session_id, target_session_id, relationship_type
"""
EXPORT_METADATA = "SELECT key, value FROM ltst_metadata WHERE key IN ('embedding_model', 'embedding_dimension')"

IMPORT_CONTEXT = """
INSERT INTO conversation_context
    (session_id, user_id, context_type, context_key, context_value, relevance_score, metadata, expires_at,
     created_at, updated_at)
SELECT s.session_id, s.user_id, %(context_type)s, %(context_key)s, %(context_value)s, %(relevance_score)s,
       %(metadata)s::jsonb, %(expires_at)s, coalesce(%(created_at)s, now()), coalesce(%(updated_at)s, now())
FROM conversation_sessions AS s WHERE s.session_id = %(session_id)s AND s.user_id = %(user_id)s
ON CONFLICT DO NOTHING
"""
IMPORT_PREFERENCE = """
INSERT INTO user_preferences
    (user_id, preference_key, preference_value, preference_type, confidence_score, metadata, is_sensitive,
     created_at, updated_at)
VALUES (%(user_id)s, %(preference_key)s, %(preference_value)s::jsonb, %(preference_type)s, %(confidence_score)s,
        %(metadata)s::jsonb, %(is_sensitive)s, coalesce(%(created_at)s, now()), coalesce(%(updated_at)s, now()))
ON CONFLICT (user_id, preference_key) DO NOTHING
"""
_IMPORT_RELATIONSHIP = """
INSERT INTO session_relationships
    (source_session_id, target_session_id, relationship_type, relationship_strength, metadata, created_at{user_column})
SELECT %(source_session_id)s, %(target_session_id)s, %(relationship_type)s, %(relationship_strength)s,
       %(metadata)s::jsonb, coalesce(%(created_at)s, now()){user_value}
WHERE (SELECT count(*) FROM conversation_sessions
        WHERE session_id IN (%(source_session_id)s, %(target_session_id)s) AND user_id = %(user_id)s)
      = CASE WHEN %(source_session_id)s = %(target_session_id)s THEN 1 ELSE 2 END
ON CONFLICT DO NOTHING
"""
IMPORT_RELATIONSHIP = _IMPORT_RELATIONSHIP.format(user_column="", user_value="")
# On a Citus cluster the row names its user (the distribution column; docs/citus.md).
IMPORT_RELATIONSHIP_OF_USER = _IMPORT_RELATIONSHIP.format(user_column=", user_id", user_value=", %(user_id)s")

# --------------------------------------------------------------------------- export


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def export_sessions(core: Core, user_id: str | None, session_id: str | None) -> Op[list[dict[str, Any]]]:
    if (user_id is None) == (session_id is None):
        raise ValidationError("export needs exactly one of user_id or session_id")
    if user_id is not None:
        sessions: list[dict[str, Any]] = yield Query(EXPORT_USER_SESSIONS, {"user_id": check_id("user_id", user_id)})
        return sessions
    session_id = check_id("session_id", str(session_id))
    rows = yield from session_read(core, session_id, Query(EXPORT_ONE_SESSION, {"session_id": session_id}))
    if not rows:
        raise SessionNotFoundError(str(session_id))
    return rows  # type: ignore[no-any-return]


def export_session_rows(
    core: Core, session_id: str, owner: str, embeddings: bool
) -> Op[tuple[list[Any], list[Any]]]:
    sql = EXPORT_MESSAGES_WITH_EMBEDDINGS if embeddings else EXPORT_MESSAGES_WITHOUT_EMBEDDINGS
    yield from is_distributed(core)
    messages = yield owned(core, Query(sql, {"session_id": session_id}), owner)
    context = yield owned(core, Query(EXPORT_CONTEXT, {"session_id": session_id}), owner)
    return messages, context


def export_tail(
    core: Core, user_id: str | None, sessions: list[dict[str, Any]]
) -> Op[tuple[list[Any], list[Any], list[Any]]]:
    """The relationships between ``sessions`` (one user's: the export's), the user's preferences, the
    store's metadata."""
    owner = sessions[0]["user_id"] if sessions else None
    ids = [s["session_id"] for s in sessions]
    relationships = yield owned(core, Query(EXPORT_RELATIONSHIPS, {"ids": ids}), owner)
    preferences = [] if user_id is None else (yield Query(EXPORT_PREFERENCES, {"user_id": user_id}))
    metadata = yield Query(EXPORT_METADATA)
    return relationships, preferences, metadata


def export_records(
    store: Any, *, user_id: str | None = None, session_id: str | None = None, embeddings: bool = True
) -> Iterator[dict[str, Any]]:
    """The export as a stream of JSON-ready dicts (header first). Each session is read in one transaction."""
    run = _runner(store)
    sessions = run(export_sessions(store._core, user_id, session_id))
    relationships, preferences, metadata = run(export_tail(store._core, user_id, sessions))
    meta = {r["key"]: r["value"] for r in metadata}
    from .. import __version__

    yield {
        "type": HEADER_TYPE,
        "version": FORMAT_VERSION,
        "ltst_memory_version": __version__,
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "scope": {"user_id": user_id} if user_id is not None else {"session_id": session_id},
        "embedding_model": meta.get("embedding_model"),
        "embedding_dimension": int(meta["embedding_dimension"]) if meta.get("embedding_dimension") else None,
        "embeddings": embeddings,
        "sessions": len(sessions),
    }
    for s in sessions:
        yield {"type": "session", **{k: _iso(v) for k, v in s.items()}}
        messages, context = run(export_session_rows(store._core, s["session_id"], s["user_id"], embeddings))
        for m in messages:
            record = {k: _iso(v) for k, v in m.items() if k not in ("message_id", "parent_message_id", "embedding")}
            record["message_uuid"] = str(m["message_uuid"])
            vector = q.to_vector(m["embedding"]) if embeddings else None
            if vector is not None:
                record["embedding"] = vector
            yield {"type": "message", **record}
        for c in context:
            yield {"type": "context", "session_id": s["session_id"], **{k: _iso(v) for k, v in c.items()}}
    for r in relationships:
        yield {"type": "relationship", **{k: _iso(v) for k, v in r.items()}}
    for p in preferences:
        yield {"type": "preference", **{k: _iso(v) for k, v in p.items()}}


def export_jsonl(
    store: Any,
    destination: str | Path | IO[str],
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    embeddings: bool = True,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> dict[str, int]:
    """Write the memory of ``user_id`` (all their sessions, preferences) or of one ``session_id`` to
    JSONL; ``destination`` is a path, ``"-"`` (stdout) or a text file. Return the count per record type.

    A path is written to a temporary file beside it and renamed into place when the export is
    complete, so a failed export never leaves a truncated file; ``overwrite=False`` refuses an
    existing file (ValidationError)."""
    if isinstance(destination, (str, Path)) and str(destination) != "-":
        with atomic_text_file(destination, overwrite=overwrite) as handle:
            return _write_export(store, handle, user_id, session_id, embeddings, progress)
    handle = sys.stdout if isinstance(destination, (str, Path)) else destination
    return _write_export(store, handle, user_id, session_id, embeddings, progress)


def _write_export(
    store: Any,
    handle: IO[str],
    user_id: str | None,
    session_id: str | None,
    embeddings: bool,
    progress: Progress | None,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in export_records(store, user_id=user_id, session_id=session_id, embeddings=embeddings):
        handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        counts[record["type"]] = counts.get(record["type"], 0) + 1
        if progress is not None and record["type"] == "message":
            progress(1)
    counts.pop(HEADER_TYPE, None)
    return counts


# --------------------------------------------------------------------------- import


def _message(record: dict[str, Any], where: str) -> MessageRecord:
    return MessageRecord(
        ConversationMessage(
            session_id=record["session_id"],
            role=record["role"],
            content=record["content"],
            message_type=record.get("message_type") or "message",
            metadata=record.get("metadata") or {},
            embedding=record.get("embedding"),
            relevance_score=record.get("relevance_score", 0.0),
            is_context_message=bool(record.get("is_context_message", False)),
            timestamp=parse_time(record.get("timestamp"), f"{where}: timestamp"),
            message_uuid=record["message_uuid"],
        ),
        parent_uuid=record.get("parent_message_uuid"),
    )


def other_row_params(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    """The checked parameters of one context, relationship or preference line (already checked by
    :func:`_check_references` and carrying the ``user_id`` it is imported for). Pure: the import runs
    it on every line before it writes anything, so a bad line refuses the whole file."""
    if kind == "context":
        return {
            "user_id": check_id("user_id", r["user_id"]),
            "session_id": check_id("session_id", r["session_id"]),
            "context_type": check_id("context_type", r["context_type"]),
            "context_key": check_id("context_key", r["context_key"]),
            "context_value": check_text("context_value", r["context_value"]),
            "relevance_score": check_score("relevance_score", r.get("relevance_score", 0.0)),
            "metadata": check_json("metadata", r.get("metadata") or {}),
            "expires_at": parse_time(r.get("expires_at")),
            "created_at": parse_time(r.get("created_at")),
            "updated_at": parse_time(r.get("updated_at")),
        }
    if kind == "preference":
        params: dict[str, Any] = {
            "user_id": check_id("user_id", r["user_id"]),
            "preference_key": check_id("preference_key", r["preference_key"]),
            "preference_value": check_json("preference_value", r["preference_value"], require_object=False),
            "preference_type": check_id("preference_type", r.get("preference_type") or "general"),
            "confidence_score": check_score("confidence_score", r.get("confidence_score", 1.0)),
            "metadata": check_json("metadata", r.get("metadata") or {}),
            "is_sensitive": bool(r.get("is_sensitive", False)),
            "created_at": parse_time(r.get("created_at")),
            "updated_at": parse_time(r.get("updated_at")),
        }
        if params["is_sensitive"]:  # encrypted for its new row, never stored plain nor a token copied
            params["preference_value"] = crypto.import_preference_value(
                r.get("source_user_id", params["user_id"]),
                params["user_id"],
                params["preference_key"],
                r["preference_value"],
            )
        return params
    return {
        "user_id": check_id("user_id", r["user_id"]),
        "source_session_id": check_id("source_session_id", r["source_session_id"]),
        "target_session_id": check_id("target_session_id", r["target_session_id"]),
        "relationship_type": check_id("relationship_type", r.get("relationship_type") or "related"),
        "relationship_strength": check_score("relationship_strength", r.get("relationship_strength", 0.5)),
        "metadata": check_json("metadata", r.get("metadata") or {}),
        "created_at": parse_time(r.get("created_at")),
    }


_OTHER_SQL = {"context": IMPORT_CONTEXT, "preference": IMPORT_PREFERENCE, "relationship": IMPORT_RELATIONSHIP}


def import_other_rows(core: Core, kind: str, rows: list[dict[str, Any]]) -> Op[int]:
    """Insert the context, relationship or preference lines ``rows`` (each already checked by
    :func:`_check_references` and carrying the ``user_id`` it is imported for)."""
    added = 0
    statement = _OTHER_SQL[kind]
    if kind == "relationship" and (yield from is_distributed(core)):
        statement = IMPORT_RELATIONSHIP_OF_USER
    for r in rows:
        added += yield Query(statement, other_row_params(kind, r), fetch="rowcount")
    return added


def _check_references(
    kind: str,
    obj: dict[str, Any],
    where: str,
    records: dict[str, SessionRecord],
    user_id: str | None,
    header: dict[str, Any],
) -> dict[str, Any]:
    """``obj`` (a context, relationship or preference line) with the user it is imported for, or a
    :class:`ValidationError` when it reaches outside the archive.

    A context or relationship line may only name sessions that the archive itself declares by a
    ``session`` line before it (and so that are created for, or already belong to, the importing
    user: :func:`check_session_owners` checks that before anything is written). A preference line
    belongs to ``user_id`` when the import is re-homed, otherwise to the user the header names (a
    user export) or to the owner of a session of the archive.
    """

    def declared(field: str) -> SessionRecord:
        session_id = obj.get(field)
        record = records.get(session_id) if isinstance(session_id, str) else None
        if record is None:
            raise ValidationError(
                f"{where}: {kind} line names session {session_id!r}, which this archive does not declare "
                "before it; an import only writes into the sessions it carries"
            )
        return record

    if kind == "context":
        return {**obj, "user_id": declared("session_id").session.user_id}
    if kind == "relationship":
        source, target = declared("source_session_id"), declared("target_session_id")
        if source.session.user_id != target.session.user_id:
            raise ValidationError(f"{where}: relationship line links sessions of two different users")
        return {**obj, "user_id": source.session.user_id}
    if user_id is not None:  # re-homed: a sensitive value is re-encrypted for user_id (crypto.py)
        return {**obj, "user_id": user_id, "source_user_id": obj.get("user_id")}
    owners = {r.session.user_id for r in records.values()}
    scope = header.get("scope")
    if isinstance(scope, dict) and isinstance(scope.get("user_id"), str):
        owners.add(scope["user_id"])
    if obj.get("user_id") not in owners:
        raise ValidationError(
            f"{where}: preference line of user {obj.get('user_id')!r}, who is neither the archive's user "
            "nor the owner of one of its sessions"
        )
    return obj


def _read_line(
    obj: dict[str, Any],
    where: str,
    records: dict[str, SessionRecord],
    others: dict[str, list[dict[str, Any]]],
    user_id: str | None,
    header: dict[str, Any],
) -> None:
    """Add one line of an archive to ``records`` (sessions and their messages) or ``others``."""
    kind = obj.get("type")
    if kind == "session":
        owner = user_id or obj.get("user_id")
        if obj.get("session_id") in records:
            raise ValidationError(f"{where}: session {obj.get('session_id')!r} is declared twice")
        session = ConversationSession(
            session_id=obj["session_id"],
            user_id=owner,  # type: ignore[arg-type] # None or not a string: the model's validator refuses it
            session_name=obj.get("session_name"),
            session_type=obj.get("session_type") or "conversation",
            status=obj.get("status") or "active",
            metadata=obj.get("metadata") or {},
            context_summary=obj.get("context_summary"),
            relevance_score=obj.get("relevance_score", 0.0),
        )
        records[session.session_id] = SessionRecord(
            session,
            created_at=parse_time(obj.get("created_at")),
            last_activity=parse_time(obj.get("last_activity")),
            summary=obj.get("summary"),
        )
    elif kind == "message":
        if obj.get("session_id") not in records:
            raise ValidationError(f"{where}: message of a session not declared before it")
        records[obj["session_id"]].messages.append(_message(obj, where))
    elif kind in others:
        others[kind].append(_check_references(kind, obj, where, records, user_id, header))
    else:
        raise ValidationError(f"{where}: unknown record type {kind!r}")


def import_export(
    store: Any, path: str | Path, *, user_id: str | None = None, progress: Progress | None = None
) -> ImportResult:
    """Import a file written by :func:`export_jsonl`. ``user_id`` re-homes every session to that user.

    Embeddings in the file are used when the file's model and dimension are the store's; otherwise
    messages are re-embedded with the store's model (a warning says so).

    An import only writes inside the sessions it carries: a ``context`` or ``relationship`` line must
    name sessions that the file declares, a ``preference`` line must belong to the importing user, and
    a declared session that already exists for another user refuses the whole file. These checks run
    before anything is written (:class:`~ltst_memory.ValidationError`, nothing stored).
    """
    run = importer_runner(store)
    lines = iter_jsonl(path)
    first = next(lines, None)
    if first is None or first[1].get("type") != HEADER_TYPE:
        raise ValidationError(f"{path} is not an ltst export (its first line must be the ltst-export header)")
    header = first[1]
    if int(header.get("version", 0)) > FORMAT_VERSION:
        raise ValidationError(f"{path} has export format {header['version']}; this ltst-memory reads up to 1")
    embedder = store.embedder
    trust = header.get("embedding_model") == embedder.model_name and header.get("embedding_dimension") == (
        embedder.dimension
    )
    result = ImportResult()
    if header.get("embeddings") and not trust:
        result.warnings.append(
            f"the file's embeddings are from {header.get('embedding_model')!r}; "
            f"re-embedding with {embedder.model_name!r}"
        )
    records: dict[str, SessionRecord] = {}
    others: dict[str, list[dict[str, Any]]] = {"context": [], "relationship": [], "preference": []}
    for number, obj in lines:
        where = f"{path}:{number}"
        try:
            _read_line(obj, where, records, others, user_id, header)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(
                f"{where}: malformed {obj.get('type')!r} line ({type(exc).__name__}: {exc})"
            ) from None
    for kind, rows in others.items():  # every line checked before anything is written
        try:
            for r in rows:
                other_row_params(kind, r)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(f"{path}: malformed {kind!r} line ({type(exc).__name__}: {exc})") from None
    for record in records.values():
        check_record(store._core, record, trust_embeddings=trust)
    run(check_session_owners(store._core, {sid: r.session.user_id for sid, r in records.items()}))
    for record in records.values():
        created, added = run(write_conversation(store._core, record, trust_embeddings=trust))
        result.sessions_seen += 1
        result.sessions_created += int(created)
        result.messages_seen += len(record.messages)
        result.messages_added += added
        if progress is not None:
            progress(len(record.messages))
    for kind in ("context", "relationship", "preference"):
        if others[kind]:
            result.other_rows_added += run(import_other_rows(store._core, kind, others[kind]))
    for warning in result.warnings:
        logger.warning("%s", warning)
    return result
