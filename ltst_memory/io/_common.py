"""What the importers and the exporter share: deterministic ids, time parsing, the write operation.

Every importer turns its source into :class:`SessionRecord` + :class:`MessageRecord` lists and hands
them to :func:`write_conversation`, an operation (a generator, like those of
:mod:`ltst_memory._ops`) that runs in one transaction per conversation. Message ids are uuid5 of
the source's own ids, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

from .. import _ops as ops
from .. import _queries as q
from .._ops import Core, Embed, Op, Query
from ..embeddings import embedding_text
from ..errors import LTSTError, ValidationError
from ..models import ConversationMessage, ConversationSession, check_id

logger = logging.getLogger(__name__)

#: Namespace of every uuid5 minted by the importers (fixed forever: changing it breaks idempotency).
LTST_NAMESPACE = uuid.UUID("6c747374-6d65-6d6f-7279-696d706f7274")


@contextlib.contextmanager
def atomic_text_file(path: str | Path, *, overwrite: bool) -> Iterator[IO[str]]:
    """A UTF-8 text file that becomes ``path`` only when the block succeeds.

    It is written in ``path``'s directory and then renamed over ``path`` (``overwrite``) or linked to
    it, which fails if a file appeared there meanwhile (never replaced without ``overwrite``). On any
    error the temporary file is removed and ``path`` is left as it was: never truncated, never half
    written. An existing ``path`` without ``overwrite`` is a ValidationError."""
    path = Path(path)

    def refuse() -> ValidationError:
        return ValidationError(f"{path} exists; it is replaced only with overwrite=True (ltst: --force)")

    if not overwrite and (path.exists() or path.is_symlink()):
        raise refuse()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise refuse() from None
            os.unlink(temp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def stable_uuid(*parts: object) -> str:
    """A deterministic UUID (uuid5) of ``parts``: the same inputs give the same id in every run."""
    return str(uuid.uuid5(LTST_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def parse_time(value: object, what: str = "timestamp") -> datetime | None:
    """A timezone-aware datetime from an ISO string, epoch seconds or a datetime (naive means UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            result = datetime.fromisoformat(text)
        except ValueError:
            try:
                return datetime.fromtimestamp(float(text), tz=timezone.utc)
            except ValueError:
                raise ValidationError(f"{what} {value!r} is neither an ISO date nor epoch seconds") from None
    else:
        raise ValidationError(f"{what} must be a string or a number, got {type(value).__name__}")
    return result if result.tzinfo is not None else result.replace(tzinfo=timezone.utc)


@dataclass
class MessageRecord:
    """A message to import, with its parent named by ``message_uuid`` (not by database id)."""

    message: ConversationMessage
    parent_uuid: str | None = None


@dataclass
class SessionRecord:
    """A session to import with the timestamps it had at the source (``None``: now)."""

    session: ConversationSession
    messages: list[MessageRecord] = field(default_factory=list)
    created_at: datetime | None = None
    last_activity: datetime | None = None
    summary: str | None = None


@dataclass
class ImportResult:
    """What an import did. Re-running the same import gives ``messages_added == 0``."""

    sessions_seen: int = 0
    sessions_created: int = 0
    messages_seen: int = 0
    messages_added: int = 0
    other_rows_added: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, other: ImportResult) -> None:
        for name in ("sessions_seen", "sessions_created", "messages_seen", "messages_added", "other_rows_added"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped += other.skipped
        self.warnings.extend(other.warnings)


Progress = Callable[[int], None]

# --------------------------------------------------------------------------- SQL

SELECT_EXISTING_UUIDS = """
SELECT message_uuid::text AS message_uuid, user_id FROM conversation_messages
WHERE message_uuid = ANY(%(uuids)s::uuid[])
"""
INSERT_SESSION_AT = """
INSERT INTO conversation_sessions
    (session_id, user_id, session_name, session_type, status, metadata, context_summary, relevance_score,
     created_at, last_activity)
VALUES (%(session_id)s, %(user_id)s, %(session_name)s, %(session_type)s, %(status)s, %(metadata)s::jsonb,
        %(context_summary)s, %(relevance_score)s, coalesce(%(created_at)s, now()), coalesce(%(last_activity)s, now()))
ON CONFLICT DO NOTHING
RETURNING session_id
"""
LINK_PARENTS = """
UPDATE conversation_messages AS m SET parent_message_id = p.message_id
FROM unnest(%(children)s::uuid[], %(parents)s::uuid[]) AS x(child, parent)
JOIN conversation_messages AS p ON p.message_uuid = x.parent
WHERE m.message_uuid = x.child AND m.user_id = %(user_id)s AND p.user_id = m.user_id AND p.message_id <> m.message_id
"""
# Each statement names the user as well as the session: on a Citus cluster (docs/citus.md) one shard
# answers it, and the subqueries below are allowed only in a statement answered by one shard.
RESTORE_SESSION_TIMES = """
UPDATE conversation_sessions SET
    created_at = coalesce(%(created_at)s, (SELECT min("timestamp") FROM conversation_messages
                                            WHERE session_id = %(session_id)s AND user_id = %(user_id)s),
                          created_at),
    last_activity = coalesce(%(last_activity)s, (SELECT max("timestamp") FROM conversation_messages
                                                  WHERE session_id = %(session_id)s AND user_id = %(user_id)s),
                             last_activity)
WHERE session_id = %(session_id)s AND user_id = %(user_id)s
"""
SET_SUMMARY_TEXT = f"UPDATE session_summary SET summary = %(summary)s WHERE session_id = %(session_id)s {q.owner()}"


def write_conversation(core: Core, record: SessionRecord, *, trust_embeddings: bool = True) -> Op[tuple[bool, int]]:
    """Create the session if missing and add the messages not yet stored; return ``(created, added)``.

    Reads first (each a statement of its own), then one embedding call for the new messages (no
    connection held), then the writes in one transaction.
    Parents are linked by uuid after the insert, so a message may name a parent anywhere in the
    batch (or one stored before, in any session of the same user). When the session is created here,
    its ``created_at``/``last_activity`` are restored from the record (or from its messages).
    """
    session = record.session
    params = ops._session_params(session)
    owner = yield Query(q.SESSION_OWNER, {"session_id": params["session_id"]}, fetch="one", alone=True)
    if owner is not None and owner["user_id"] != params["user_id"]:
        raise ValidationError(
            f"session {params['session_id']!r} already exists and belongs to another user; "
            "import with another --user or rename the session"
        )
    messages = [m.message for m in record.messages]
    for m in messages:
        if m.message_uuid is None:
            raise ValidationError("imported messages need a message_uuid (deterministic ids make re-import safe)")
        m.session_id = params["session_id"]
    uuids = [str(m.message_uuid) for m in messages]
    existing: set[str] = set()
    if uuids:
        rows = yield Query(SELECT_EXISTING_UUIDS, {"uuids": uuids}, alone=True)
        if any(r["user_id"] != params["user_id"] for r in rows):
            raise ValidationError(
                f"session {params['session_id']!r}: a message_uuid of the file is already used by a message "
                "that is not this user's; nothing was imported for this session"
            )
        existing = {r["message_uuid"] for r in rows}
    new = [m for m in messages if str(m.message_uuid) not in existing]
    if not trust_embeddings:
        for m in new:
            m.embedding = None
    missing = [m for m in new if m.embedding is None]
    if missing:
        vectors = yield Embed(tuple(embedding_text(m.content, m.metadata) for m in missing))
        for m, vector in zip(missing, vectors, strict=True):
            m.embedding = vector
    created = False
    if owner is None:
        row = yield Query(
            INSERT_SESSION_AT,
            {**params, "created_at": record.created_at, "last_activity": record.last_activity},
            fetch="one",
        )
        created = row is not None
    if new:
        yield from ops.store_messages(core, new)
        links = [
            (str(r.message.message_uuid), r.parent_uuid)
            for r in record.messages
            if r.parent_uuid and str(r.message.message_uuid) not in existing
        ]
        if links:
            yield Query(
                LINK_PARENTS,
                {"children": [c for c, _ in links], "parents": [p for _, p in links], "user_id": params["user_id"]},
                fetch="none",
            )
    if created:
        yield Query(
            RESTORE_SESSION_TIMES,
            {
                "session_id": params["session_id"],
                "user_id": params["user_id"],
                "created_at": record.created_at,
                "last_activity": record.last_activity,
            },
            fetch="none",
        )
        if record.summary is not None:
            summary = {"session_id": params["session_id"], "summary": record.summary}
            yield ops.owned(core, Query(SET_SUMMARY_TEXT, summary, fetch="none"), params["user_id"])
    return created, len({str(m.message_uuid) for m in new})


def check_record(core: Core, record: SessionRecord, *, trust_embeddings: bool = True) -> None:
    """Every check :func:`write_conversation` makes on ``record`` without the database (session and
    message fields), so that an import can refuse a file before it writes any of it."""
    session_id = ops._session_params(record.session)["session_id"]
    for r in record.messages:
        if r.message.message_uuid is None:
            raise ValidationError("imported messages need a message_uuid (deterministic ids make re-import safe)")
        embedding = r.message.embedding if trust_embeddings else None
        ops._message_params(core, dataclasses.replace(r.message, session_id=session_id, embedding=embedding))


def check_session_owners(core: Core, owners: dict[str, str]) -> Op[None]:
    """Refuse, before anything is written, an import that names a stored session of another user.

    ``owners`` maps each session id that the import touches to the user it is imported for. A session
    that exists and belongs to someone else raises :class:`ValidationError`; nothing is written.
    """
    if not owners:
        return
    rows = yield Query(q.SELECT_SESSION_OWNERS, {"session_ids": list(owners)})
    foreign = sorted(r["session_id"] for r in rows if r["user_id"] != owners[r["session_id"]])
    if foreign:
        raise ValidationError(
            f"session {foreign[0]!r} already exists and belongs to another user; nothing was imported "
            "(import with another --user or rename the session)"
        )


def run_records(
    store: Any,
    records: Sequence[SessionRecord] | Iterator[SessionRecord],
    *,
    progress: Progress | None = None,
    trust_embeddings: bool = True,
) -> ImportResult:
    """Write ``records`` with ``store`` (a :class:`~ltst_memory.ConversationStorage`), one transaction each."""
    result = ImportResult()
    run = importer_runner(store)
    records = list(records)
    for record in records:  # every record checked before the first is written
        check_record(store._core, record, trust_embeddings=trust_embeddings)
    owners = {check_id("session_id", r.session.session_id): check_id("user_id", r.session.user_id) for r in records}
    run(check_session_owners(store._core, owners))
    for record in records:
        created, added = run(write_conversation(store._core, record, trust_embeddings=trust_embeddings))
        result.sessions_seen += 1
        result.sessions_created += int(created)
        result.messages_seen += len(record.messages)
        result.messages_added += added
        if progress is not None:
            progress(len(record.messages))
    if result.messages_added or result.sessions_created:
        store.clear_cache()  # imported sessions changed outside the store's invalidating methods
    return result


def importer_runner(store: Any) -> Callable[[Op[Any]], Any]:
    """:func:`_runner` for an importer: a user-scoped store (``for_user``) is refused before anything is
    read or written, with a message that says what to do instead."""
    scoped_user = getattr(store, "user_id", None) if hasattr(store, "_storage") else None
    if scoped_user is not None:
        from ..errors import AccessDeniedError

        raise AccessDeniedError(
            f"importers write sessions for the user the file or user_id names, so they take the store itself, "
            f"not a store scoped to {scoped_user!r} by for_user(); call e.g. import_jsonl(store, path, {scoped_user!r})"
        )
    return _runner(store)


def _runner(store: Any) -> Callable[[Op[Any]], Any]:
    run = getattr(store, "_run", None)
    if run is None:
        raise ValidationError(
            "importers and exporters take a ConversationStorage (sync); "
            "with AsyncConversationStorage, run them in a thread on a sync store"
        )
    return run  # type: ignore[no-any-return]


F = TypeVar("F", bound=Callable[..., Any])


def reads_file(function: F) -> F:
    """Wrap an importer (``function(store_or_path, path, ...)``) so that a file it cannot read or
    understand raises :class:`ValidationError` naming the file, never a raw Python error: not UTF-8,
    a lone surrogate, JSON nested too deeply, a missing file or a directory, a value of the wrong
    type. Nothing is written before these are detected only when the importer parses first (all do)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        path = kwargs.get("path", args[1] if len(args) > 1 else args[0] if args else "?")
        try:
            return function(*args, **kwargs)
        except LTSTError:
            raise
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 first"
            ) from None
        except UnicodeEncodeError:
            raise ValidationError(
                f"{path} contains a lone surrogate (a \\ud800-\\udfff escape): not valid Unicode"
            ) from None
        except RecursionError:
            raise ValidationError(f"{path} holds JSON nested too deeply to read") from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValidationError(f"{path}: malformed input ({type(exc).__name__}: {exc})") from exc

    return wrapper  # type: ignore[return-value]
