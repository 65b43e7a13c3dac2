"""The store's operations, written once for the sync and the async API.

Each operation is a generator: it validates its arguments, then *yields* instructions — a
:class:`Query` to run or an :class:`Embed` request — and receives their results, and finally
returns its value. :class:`~ltst_memory.ConversationStorage` and
:class:`~ltst_memory.AsyncConversationStorage` are two small executors of these generators (the same
idea as psycopg's generators shared by its sync and async connections). The instructions, ``Core``
and the declaration of operations are in :mod:`ltst_memory._kernel` (re-exported here), with the
executors' rule: no embedding and no callback of the user's inside a transaction; the reads a write
operation makes before those are ``Query(..., alone=True)`` (or wrapped in :func:`reading`).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from psycopg.rows import tuple_row

from . import _queries as q
from . import crypto, hnsw
from ._kernel import (
    CONTEXT,
    EVERY_SESSION,
    MAINTENANCE,
    MESSAGES,
    PREFERENCES,
    RELATIONSHIPS,
    SEARCH,
    SESSIONS,
    Call,
    Core,
    Embed,
    Fetch,
    Instruction,
    Op,
    Query,
    R,
    operation,
    session_argument,
    session_of,
)
from ._uuid7 import uuid7
from .embeddings import embedding_text
from .errors import (
    AccessDeniedError,
    EmbeddingDimensionError,
    NotFoundError,
    SessionExistsError,
    SessionNotFoundError,
    ValidationError,
)
from .models import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    SessionRelationship,
    SessionSummary,
    UserPreference,
    check_datetime,
    check_id,
    check_indexed_text,
    check_json,
    check_limit,
    check_optional_text,
    check_score,
    check_text,
    check_uuid,
    normalize_role,
)

#: The instructions and ``Core``, re-exported from ltst_memory._kernel (operations import them from here).
__all__ = ["Call", "Core", "Embed", "Fetch", "Instruction", "Op", "Query", "R"]

logger = logging.getLogger(__name__)


def reading(op: Op[R]) -> Op[R]:
    """Run ``op`` (an operation that only reads) inside a write operation with each of its queries on
    its own (``alone``), before the caller's transaction."""
    result: Any = None
    while True:
        try:
            instruction = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(instruction, Query):
            instruction = replace(instruction, alone=True)
        result = yield instruction


# --------------------------------------------------------------------------- helpers


_FLOAT32 = np.dtype(np.float32)


def _vector(core: Core, value: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    if value.__class__ is np.ndarray and value.dtype is _FLOAT32 and value.shape == (core.embedder.dimension,):
        # the common case (an embedder's float32 row) in one pass: finite and not all zeros exactly when the
        # sum of squares is (in float64, which neither overflows nor underflows for float32 values)
        wide = value.astype(np.float64)
        if 0.0 < float(wide @ wide) < math.inf:
            return value
    if isinstance(value, (str, bytes)):
        raise ValidationError(f"{what} must be a sequence of numbers, got {type(value).__name__}")
    try:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: refused below
            array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} must be a sequence of numbers: {exc}") from None
    if array.ndim != 1 or array.shape[0] != core.embedder.dimension:
        raise EmbeddingDimensionError(
            f"{what} has {array.shape[-1] if array.ndim else 0} dimensions; "
            f"this store uses {core.embedder.dimension} ({core.embedder.model_name})"
        )
    if not np.isfinite(array).all():
        raise ValidationError(f"{what} contains NaN or infinite values")
    if not array.any():
        raise ValidationError(f"{what} is all zeros: a zero vector has no direction (cosine similarity undefined)")
    return array


def scoped_user(core: Core, user_id: str | None) -> str | None:
    """The user filter of an operation: ``user_id`` (checked) on an unscoped store; on a scoped store
    (``core.scope_user`` set) always the scoped user, and another user's id raises AccessDeniedError
    before any query runs."""
    if user_id is not None:
        user_id = check_id("user_id", user_id)
    if core.scope_user is None:
        return user_id
    if user_id is not None and user_id != core.scope_user:
        raise AccessDeniedError(
            f"this store is scoped to user {core.scope_user!r}; user_id {user_id!r} belongs to another user"
        )
    return core.scope_user


def require_session(core: Core, session_id: str) -> Op[str]:
    """Return the owner of ``session_id`` or raise SessionNotFoundError."""
    if core.scope_user is None and (yield from is_distributed(core)) and session_id not in core.session_owners:
        owner = yield from _owner_anywhere(core, session_id)  # (Citus: every shard, once; then remembered)
    else:
        query = Query(q.SESSION_OWNER, {"session_id": session_id}, fetch="one")
        row = yield from session_read(core, session_id, query)
        owner = None if row is None else str(row["user_id"])
    if owner is None:
        raise SessionNotFoundError(session_id)
    return owner


# --------------------------------------------------------------------------- the owner of a session (Citus)


def with_owner(query: Query, owner: str) -> Query:
    """``query`` with the owner slots of its statement (``_queries.owner``) filled with ``owner``: on a
    Citus cluster one shard, the owner's, answers it. Only for a distributed database (on one server
    ``session_summary`` and ``session_relationships`` have no ``user_id``)."""
    if not q.has_owner(query.sql):
        return query
    sql = q.routed(query.sql)
    if query.many is not None:
        return replace(query, sql=sql, many=[{**item, q.OWNER_PARAM: owner} for item in query.many])
    return replace(query, sql=sql, params={**(query.params or {}), q.OWNER_PARAM: owner})


def owned(core: Core, query: Query, owner: str | None) -> Query:
    """``query``, which names sessions of ``owner``, answered by ``owner``'s shard on a Citus cluster
    (:func:`with_owner`). On one server, with no owner known, or on a user-scoped store (whose driver
    fills every slot with its user: ``ltst_memory/scoped.py``), ``query`` as it is."""
    if owner is None or not core.distributed or core.scope_user is not None:
        return query
    return with_owner(query, owner)


def remember_owners(core: Core, owners: Iterable[tuple[str, str]]) -> None:
    """Remember ``(session_id, user_id)`` pairs (on a Citus cluster; up to ``SESSION_OWNERS_KEPT``)."""
    if not core.distributed:
        return
    known = core.session_owners
    for session_id, user_id in owners:
        if len(known) >= SESSION_OWNERS_KEPT:
            known.clear()
        known[session_id] = user_id


def session_read(core: Core, session_id: str, query: Query, *, required: bool = False) -> Op[Any]:
    """Run ``query``, a statement on the rows of session ``session_id``, and return its result.

    On a Citus cluster it is answered by the shard of the session's owner: a user-scoped store's user
    (its driver fills the statement's owner slot), or on an unscoped store the owner it remembers
    (sessions it created or wrote to or read before), else the owner asked of every shard once and
    remembered. Sessions never change owner (Citus refuses an update of the distribution column,
    ``update_session`` another ``user_id``), but an id can be reused after a delete: after an empty
    answer under a remembered owner the session is looked for under that owner (one shard) and, when
    it is not there, on every shard; the statement then runs again under the actual owner.
    ``required``: an empty answer for a session that does not exist raises SessionNotFoundError. On one
    server: ``query``, then (``required``, empty) the owner check."""
    remembered = core.scope_user is None and session_id in core.session_owners  # (filled on a cluster only)
    owner = yield from routing_owner(core, session_id)
    if owner is None and required and core.scope_user is None and core.distributed:  # asked of every shard
        raise SessionNotFoundError(session_id)
    result = yield owned(core, query, owner)
    if result:
        return result
    if remembered:  # is the session still the owner's? (one shard; ids are unique across users)
        still = yield owned(core, Query(q.SESSION_OWNER, {"session_id": session_id}, fetch="one"), owner)
        if still is None:  # no longer true (the session deleted, its id reused): every shard is asked
            actual = yield from _owner_anywhere(core, session_id)
            if actual is None and required:
                raise SessionNotFoundError(session_id)
            if actual is not None:
                result = yield owned(core, query, actual)
    elif required and owner is None:  # one server, or a user-scoped store
        yield from require_session(core, session_id)
    return result


def _owner_anywhere(core: Core, session_id: str) -> Op[str | None]:
    """The owner of ``session_id`` asked of every shard (no row: no such session), remembered."""
    row = yield Query(q.SESSION_OWNER_ANYWHERE, {"session_id": session_id}, fetch="one")
    if row is None:
        core.session_owners.pop(session_id, None)
        return None
    owner = str(row["user_id"])
    remember_owners(core, [(session_id, owner)])
    return owner


def routing_owner(core: Core, session_id: str) -> Op[str | None]:
    """The owner to route statements on ``session_id`` by, on an unscoped store on a Citus cluster:
    remembered, or asked of every shard once (``None`` elsewhere, and for a session that does not
    exist). A remembered owner may be no longer true: read through :func:`session_read`."""
    if core.scope_user is not None or not (yield from is_distributed(core)):
        return None
    owner = core.session_owners.get(session_id)
    if owner is None:
        owner = yield from _owner_anywhere(core, session_id)
    return owner


def _session_params(session: ConversationSession) -> dict[str, Any]:
    return {
        "session_id": check_id("session_id", session.session_id),
        "user_id": check_id("user_id", session.user_id),
        "session_name": check_optional_text("session_name", session.session_name, max_chars=1_000),
        "session_type": check_id("session_type", session.session_type),
        "status": check_id("status", session.status),
        "metadata": check_json("metadata", session.metadata),
        "context_summary": check_optional_text("context_summary", session.context_summary),
        "relevance_score": check_score("relevance_score", session.relevance_score),
    }


def _message_params(core: Core, message: ConversationMessage) -> dict[str, Any]:
    if not isinstance(message, ConversationMessage):
        raise ValidationError(f"expected a ConversationMessage, got {type(message).__name__}")
    if message.parent_message_id is not None and (
        isinstance(message.parent_message_id, bool) or not isinstance(message.parent_message_id, int)
    ):
        raise ValidationError("parent_message_id must be an int (a message_id) or None")
    given_uuid = message.message_uuid
    message_uuid = uuid7() if given_uuid is None else check_uuid("message_uuid", given_uuid)
    if not isinstance(message.is_context_message, bool):
        raise ValidationError("is_context_message must be a bool")
    params: dict[str, Any] = {
        "message_uuid": message_uuid,
        "session_id": check_id("session_id", message.session_id),
        "role": normalize_role(message.role),
        "content": check_text("content", message.content, max_chars=core.settings.max_content_chars),
        "message_type": check_id("message_type", message.message_type),
        "parent_message_id": message.parent_message_id,
        "metadata": check_json("metadata", message.metadata),
        "embedding": None if message.embedding is None else _vector(core, message.embedding, "message embedding"),
        "relevance_score": check_score("relevance_score", message.relevance_score),
        "is_context_message": message.is_context_message,
        "timestamp": check_datetime("timestamp", message.timestamp),
    }
    check_indexed_text(params["content"], message.metadata)  # speaker + content: one tsvector of <= 1 MB
    return params


def server_versions(core: Core) -> Op[dict[str, str]]:
    """``{"postgres": ..., "pgvector": ...}`` versions of the server."""
    row = yield Query(q.SERVER_VERSIONS, fetch="one")
    return {"postgres": str(row["postgres"]), "pgvector": str(row["pgvector"])}


# --------------------------------------------------------------------------- sessions


def insert_session(core: Core, params: dict[str, Any]) -> Op[dict[str, Any] | None]:
    """Insert the session of ``params``; its row, or ``None`` when its id is taken (by any user).

    On a Citus cluster the key is ``(session_id, user_id)`` and each shard checks only its own rows, so
    the id is checked first under a transaction lock on it (taken on the coordinator, which every
    writer goes through): a session id stays unique across users, as on one server."""
    if not (yield from is_distributed(core)):
        row: dict[str, Any] | None = yield Query(q.INSERT_SESSION, params, fetch="one", atomic=True)
        return row
    yield Query(q.LOCK_SESSION_ID, {"session_id": params["session_id"]}, fetch="none")
    taken = yield Query(q.SESSION_ID_TAKEN, {"session_id": params["session_id"]}, fetch="one")
    if taken:
        return None
    row = yield Query(q.INSERT_SESSION, params, fetch="one")
    if row is not None:  # its reads and writes go to its owner's shard
        remember_owners(core, [(params["session_id"], params["user_id"])])
    return row


@operation(group=SESSIONS)
def create_session(core: Core, session: ConversationSession) -> Op[ConversationSession]:
    """Create ``session``; raise SessionExistsError if its id is taken."""
    if not isinstance(session, ConversationSession):
        raise ValidationError(f"expected a ConversationSession, got {type(session).__name__}")
    row = yield from insert_session(core, _session_params(session))
    if row is None:
        raise SessionExistsError(session.session_id)
    return q.session_from_row(row)


@operation(group=SESSIONS)
def get_or_create_session(core: Core, session: ConversationSession) -> Op[ConversationSession]:
    """The stored session with ``session.session_id``, created from ``session`` when there is none.

    An existing session is returned as stored (its fields are left alone; use ``update_session`` to
    change them), so running the same set-up code twice is harmless. Raises SessionExistsError if the
    id belongs to another user's session.
    """
    if not isinstance(session, ConversationSession):
        raise ValidationError(f"expected a ConversationSession, got {type(session).__name__}")
    params = _session_params(session)
    row = yield from insert_session(core, params)
    if row is None:
        row = yield Query(q.SELECT_SESSION, {"session_id": params["session_id"]}, fetch="one")
        if row is None:  # deleted between the two statements: create it after all
            row = yield from insert_session(core, params)
        if row is None or row["user_id"] != params["user_id"]:
            raise SessionExistsError(session.session_id)
    return q.session_from_row(row)


@operation(group=SESSIONS, read_only=True, cached=True)
def get_session(core: Core, session_id: str) -> Op[ConversationSession | None]:
    """The session with ``session_id``, or ``None``."""
    session_id = check_id("session_id", session_id)
    query = Query(q.SELECT_SESSION, {"session_id": session_id}, fetch="one", row=q.session_row)
    session: ConversationSession | None = yield from session_read(core, session_id, query)
    return session


@operation(group=SESSIONS, invalidates=session_of("session"))
def update_session(core: Core, session: ConversationSession) -> Op[ConversationSession]:
    """Write the mutable fields of ``session`` (name, type, status, metadata, summary, score)."""
    params = _session_params(session)
    owner = yield from require_session(core, params["session_id"])
    if owner != params["user_id"]:
        raise ValidationError("a session's user_id cannot be changed")
    row = yield owned(core, Query(q.UPDATE_SESSION_FIELDS, params, fetch="one"), owner)
    return q.session_from_row(row)


@operation(group=SESSIONS, invalidates=session_argument())
def update_session_activity(core: Core, session_id: str) -> Op[datetime]:
    """Set the session's ``last_activity`` to now and return it."""
    session_id = check_id("session_id", session_id)
    row = yield from session_read(core, session_id, Query(q.TOUCH_SESSION, {"session_id": session_id}, fetch="one"))
    if row is None:
        raise SessionNotFoundError(session_id)
    return row["last_activity"]  # type: ignore[no-any-return]


@operation(group=SESSIONS, read_only=True)
def get_user_sessions(core: Core, user_id: str, limit: int = 50) -> Op[list[ConversationSession]]:
    """The user's sessions, most recently active first."""
    params = {"user_id": scoped_user(core, check_id("user_id", user_id)), "limit": check_limit("limit", limit)}
    sessions: list[ConversationSession] = yield Query(q.SELECT_USER_SESSIONS, params, row=q.session_row)
    return sessions


@operation(group=MAINTENANCE, invalidates=session_argument())
def delete_session(core: Core, session_id: str) -> Op[dict[str, int]]:
    """Delete the session and everything attached to it; return the number of rows removed per kind."""
    params = {"session_id": check_id("session_id", session_id)}
    locked = yield from lock_sessions(core, [session_id])
    if not locked:
        raise SessionNotFoundError(session_id)
    owner = locked[0]["user_id"]
    counts = yield owned(core, Query(q.COUNT_SESSION_ROWS, params, fetch="one"), owner)
    yield owned(core, Query(q.DELETE_SESSION, params, fetch="none"), owner)
    return {"sessions": 1, **{k: int(v) for k, v in counts.items()}}


@operation(group=MESSAGES, invalidates=EVERY_SESSION)
def delete_message(core: Core, message_id: int, user_id: str | None = None) -> Op[dict[str, Any]]:
    """Delete one message (of ``user_id`` when given; a scoped store: of its user only) in one
    statement, its triggers keeping the session summary and the word statistics current; return
    ``{"message_id", "session_id"}``. No such message (of that user) is a
    :class:`~ltst_memory.NotFoundError`."""
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id < 2**63:
        raise ValidationError(f"message_id must be a positive 64-bit integer, got {message_id!r}")
    params = {"message_id": message_id, "user_id": scoped_user(core, user_id)}
    row = yield Query(q.DELETE_MESSAGE, params, fetch="one", atomic=True)
    if row is None:
        raise NotFoundError(f"no message {message_id}")
    return {"message_id": int(row["message_id"]), "session_id": str(row["session_id"])}


@operation(group=SESSIONS, read_only=True)
def get_session_summary(core: Core, session_id: str) -> Op[SessionSummary]:
    """Trigger-maintained statistics of the session."""
    session_id = check_id("session_id", session_id)
    row = yield from session_read(core, session_id, Query(q.SELECT_SUMMARY, {"session_id": session_id}, fetch="one"))
    if row is None:
        raise SessionNotFoundError(session_id)
    return q.summary_from_row(row)


# --------------------------------------------------------------------------- messages


def is_distributed(core: Core) -> Op[bool]:
    """Whether the store's tables are distributed by Citus (looked up once per store)."""
    if core.distributed is None:
        row = yield Query(q.CITUS_INSTALLED, {}, fetch="one")
        if row and row["installed"]:
            row = yield Query(q.IS_DISTRIBUTED, {}, fetch="one")
        core.distributed = bool(row and row.get("distributed"))
    return core.distributed


def lock_sessions(core: Core, session_ids: list[str]) -> Op[list[dict[str, Any]]]:
    """Lock the rows of ``session_ids`` (sorted) in id order and return them (the existing ones).

    On a Citus cluster, where a row lock needs a statement answered by one shard, the owners are
    looked up first and each user's sessions locked in turn (users in order, then ids): two writers
    still take the locks of any two sessions in the same order."""
    if not (yield from is_distributed(core)):
        rows: list[dict[str, Any]] = yield Query(q.LOCK_SESSIONS, {"session_ids": session_ids})
        return rows
    known = core.session_owners
    locked: list[dict[str, Any]] = []
    if all(s in known for s in session_ids):  # the owners this store saw: no question to every shard
        locked = yield from _lock_by_owner(core, [{"session_id": s, "user_id": known[s]} for s in session_ids])
    missing = sorted(set(session_ids) - {r["session_id"] for r in locked})
    if missing:  # (an owner not known, or no longer true: the session deleted, its id reused)
        owners = yield Query(q.SELECT_SESSION_OWNERS, {"session_ids": missing})
        locked += yield from _lock_by_owner(core, owners)
    return sorted(locked, key=lambda r: r["session_id"])


#: How many session owners a store remembers on a Citus cluster (forgotten all at once beyond).
SESSION_OWNERS_KEPT = 100_000


def _lock_by_owner(core: Core, owners: list[dict[str, Any]]) -> Op[list[dict[str, Any]]]:
    """Lock the sessions of ``owners`` (rows of session_id, user_id) one user at a time, users in order;
    remember the owners of the sessions locked and forget those not found."""
    locked: list[dict[str, Any]] = []
    for user in sorted({r["user_id"] for r in owners}):
        ids = sorted(r["session_id"] for r in owners if r["user_id"] == user)
        locked += yield Query(q.LOCK_SESSIONS_OF_USER, {"user_id": user, "session_ids": ids})
    for r in owners:
        core.session_owners.pop(r["session_id"], None)
    remember_owners(core, ((r["session_id"], r["user_id"]) for r in locked))
    return locked


def lock_sessions_for_write(
    core: Core, params: list[dict[str, Any]], uuid_given: list[bool], existing_sql: str
) -> Op[tuple[dict[str, str], dict[str, int], dict[uuid.UUID, dict[str, Any]]]]:
    """Lock the sessions a write touches (in id order, so concurrent writers cannot deadlock) and check
    it: every session exists, a client-given ``message_uuid`` is not used in another session, and every
    ``parent_message_id`` names a message of the same user. Shared by ``store_messages`` and bulk import.

    Returns the owner and next free ``message_index`` of each session, and the already stored rows
    (fetched with ``existing_sql``) of the client-given uuids.
    """
    session_ids = sorted({p["session_id"] for p in params})
    locked = yield from lock_sessions(core, session_ids)
    owners = {r["session_id"]: r["user_id"] for r in locked}
    next_index = {r["session_id"]: r["next_message_index"] for r in locked}
    for sid in session_ids:
        if sid not in owners:
            raise SessionNotFoundError(sid)

    given = {p["message_uuid"]: p["session_id"] for p, was_given in zip(params, uuid_given, strict=True) if was_given}
    existing: dict[uuid.UUID, dict[str, Any]] = {}
    if given:
        rows = yield Query(existing_sql, {"uuids": list(given)})
        existing = {r["message_uuid"]: r for r in rows}
        for key, row in existing.items():
            if row["session_id"] != given[key]:
                raise ValidationError(f"message_uuid {key} is already used in another session")

    parent_ids = sorted({p["parent_message_id"] for p in params if p["parent_message_id"] is not None})
    if parent_ids:
        rows = yield Query(q.SELECT_PARENT_OWNERS, {"ids": parent_ids})
        parent_owner = {r["message_id"]: r["user_id"] for r in rows}
        for p in params:
            pid = p["parent_message_id"]
            if pid is not None and parent_owner.get(pid) != owners[p["session_id"]]:
                raise ValidationError(f"parent_message_id {pid} names no message of this user")
    return owners, next_index, existing


# The per-row arrays of INSERT_MESSAGES_ONE_SESSION (session, owner and indexes come from the session row).
_ONE_SESSION_ARRAYS = (
    "message_uuid",
    "role",
    "content",
    "message_type",
    "metadata",
    "embedding",
    "relevance_score",
    "is_context_message",
    "timestamp",
)
#: The parameters of INSERT_MESSAGE (one message of one session).
_ONE_SESSION_FIELDS = ("session_id", *_ONE_SESSION_ARRAYS)


@operation(group=MESSAGES, invalidates=session_of("messages"))
def store_messages(core: Core, messages: Sequence[ConversationMessage]) -> Op[list[ConversationMessage]]:
    """Store ``messages`` in one transaction with one embedding call; return them as stored, in order.

    ``message_index`` is assigned per session (0, 1, 2, ...) under a lock on the session rows, so
    concurrent writers never produce gaps or duplicates. A message whose ``message_uuid`` is already
    stored is not stored again: the stored row is returned in its place.
    """
    if isinstance(messages, (str, bytes, ConversationMessage)) or not isinstance(messages, Sequence):
        raise ValidationError("store_messages expects a list of ConversationMessage")
    params = [_message_params(core, m) for m in messages]
    if not params:
        return []
    missing = [i for i, p in enumerate(params) if p["embedding"] is None]
    if missing:
        vectors = yield Embed(tuple(embedding_text(messages[i].content, messages[i].metadata) for i in missing))
        for i, vector in zip(missing, vectors, strict=True):
            params[i]["embedding"] = vector

    session_ids = sorted({p["session_id"] for p in params})
    uuid_given = [m.message_uuid is not None for m in messages]
    no_parents = all(p["parent_message_id"] is None for p in params)
    one_statement = len(session_ids) == 1 and not any(uuid_given) and no_parents
    # (on a Citus cluster its UPDATE by session_id alone would ask every shard: the locking path instead)
    if one_statement and not (yield from is_distributed(core)):
        # the common case (one session, ids and parents left to the store): one statement
        if len(params) == 1:  # store_message: the values one by one, the message straight from its row
            values = {c: params[0][c] for c in _ONE_SESSION_FIELDS}
            row = yield Query(q.INSERT_MESSAGE, values, fetch="one", atomic=True, row=tuple_row)
            if row is None:
                raise SessionNotFoundError(session_ids[0])
            if row[0] % q.FOLD_EVERY == 0:  # (the statistics of a few dozen appends, counted at once)
                yield Query(q.FOLD_TERM_PENDING, {}, fetch="one", atomic=True)
            stored = q.appended_message(values, row)
            stored.embedding = np.asarray(params[0]["embedding"], dtype=np.float32).tolist()
            return [stored]
        columns: dict[str, Any] = {c: [p[c] for p in params] for c in _ONE_SESSION_ARRAYS}
        columns["session_id"] = session_ids[0]
        rows = yield Query(q.INSERT_MESSAGES_ONE_SESSION, columns, atomic=True)
        if not rows:
            raise SessionNotFoundError(session_ids[0])
        logger.debug("stored %d messages", len(rows))
        return _as_stored(params, {r["message_uuid"]: r for r in rows})

    owners, next_index, existing = yield from lock_sessions_for_write(
        core, params, uuid_given, q.SELECT_MESSAGES_BY_UUID
    )

    to_insert: list[dict[str, Any]] = []
    seen: set[uuid.UUID] = set()
    for p in params:
        if p["message_uuid"] in existing or p["message_uuid"] in seen:
            continue
        seen.add(p["message_uuid"])
        sid = p["session_id"]
        p["user_id"] = owners[sid]
        p["message_index"] = next_index[sid]
        next_index[sid] += 1
        to_insert.append(p)

    rows_by_uuid = dict(existing)
    if to_insert:
        batch: dict[str, Any] = {c: [p[c] for p in to_insert] for c in q.INSERT_MESSAGES_COLUMNS}
        batch["session_ids"] = session_ids
        batch["next_indexes"] = [next_index[s] for s in session_ids]
        users = set(owners.values())
        rows = yield owned(core, Query(q.INSERT_MESSAGES, batch), users.pop() if len(users) == 1 else None)
        rows_by_uuid.update((r["message_uuid"], r) for r in rows)
    logger.debug("stored %d messages (%d already present)", len(to_insert), len(params) - len(to_insert))
    return _as_stored(params, rows_by_uuid)


def _as_stored(params: list[dict[str, Any]], rows: dict[uuid.UUID, dict[str, Any]]) -> list[ConversationMessage]:
    """The messages of ``params`` as stored (their rows, keyed by ``message_uuid``), in order, each with
    the embedding it was stored with."""
    result = []
    for p in params:
        message = q.message_from_row(rows[p["message_uuid"]])
        if message.embedding is None:
            message.embedding = np.asarray(p["embedding"], dtype=np.float32).tolist()
        result.append(message)
    return result


@operation(group=MESSAGES, invalidates=session_of("message"))
def store_message(core: Core, message: ConversationMessage) -> Op[ConversationMessage]:
    """Store one message (see :func:`store_messages`) and return it with its id, index and timestamp."""
    stored = yield from store_messages(core, [message])
    return stored[0]


@operation(group=MESSAGES, read_only=True)
def get_messages(core: Core, session_id: str, limit: int = 100, offset: int = 0) -> Op[list[ConversationMessage]]:
    """Messages of the session in order (oldest first), ``limit`` of them from ``offset``."""
    params = {
        "session_id": check_id("session_id", session_id),
        "limit": check_limit("limit", limit, maximum=100_000),
        "offset": check_limit("offset", offset, maximum=2**31 - 1),
    }
    messages: list[ConversationMessage] = yield from session_read(
        core, session_id, Query(q.SELECT_MESSAGES, params, row=q.message_row), required=True
    )
    return messages


@operation(group=MESSAGES, read_only=True)
def get_recent_messages(core: Core, session_id: str, limit: int = 20) -> Op[list[ConversationMessage]]:
    """The last ``limit`` messages of the session, oldest first."""
    params = {"session_id": check_id("session_id", session_id), "limit": check_limit("limit", limit)}
    messages: list[ConversationMessage] = yield from session_read(
        core, session_id, Query(q.SELECT_RECENT_MESSAGES, params, row=q.message_row), required=True
    )
    return messages


@operation(group=SEARCH, read_only=True)
def search_messages(
    core: Core,
    query: str,
    session_id: str | None = None,
    limit: int = 10,
    threshold: float | None = None,
    *,
    user_id: str | None = None,
) -> Op[list[tuple[ConversationMessage, float]]]:
    """Messages most similar in meaning to ``query``, as ``(message, cosine similarity)`` best first.

    Scope: one session (``session_id``), all of a user's sessions (``user_id``), both, or — when
    neither is given — every stored message. With a ``threshold``, only messages with
    ``similarity >= threshold`` are returned (the spec's example uses 0.7; MiniLM scores clear
    paraphrases around 0.4-0.6); without one, the ``limit`` nearest messages. A scope of up to
    ``exact_search_max_rows`` messages is searched exactly; larger scopes and unscoped searches use
    the vector index (``ltst vector-index``) with iterative scans, so a scope never returns fewer
    rows than exist, and a message is found from the moment it is stored.
    """
    check_text("query", query, max_chars=core.settings.max_content_chars)
    params: dict[str, Any] = {
        "limit": check_limit("limit", limit, minimum=1, maximum=1_000),
        "threshold": float("-inf") if threshold is None else check_score("threshold", threshold, low=-1.0, high=1.0),
    }
    if session_id is not None:
        params["session_id"] = check_id("session_id", session_id)
    user_id = scoped_user(core, user_id)
    if user_id is not None:
        params["user_id"] = user_id
    vectors = yield Embed((query,))
    params["query"] = vectors[0]
    sql = yield from _search_statement(core, params)
    search = Query(sql, params, row=q.scored_message_row)  # rows: (message, similarity)
    if session_id is None:
        hits: list[tuple[ConversationMessage, float]] = yield search
    else:
        hits = yield from session_read(core, params["session_id"], search, required=True)
    return hits


def scope_is_small(core: Core, size_sql: str, params: Mapping[str, Any], owner: str | None = None) -> Op[bool]:
    """Whether the scope counted by ``size_sql`` (``session_summary`` / ``ltst_user_stats``, kept by triggers) holds
    at most ``exact_search_max_rows`` messages: small scopes are read directly, exactly; large ones
    through the vector (IVFFlat) / GIN indexes. Shared by ``search_messages`` and ``recall``.
    ``owner``: the user whose sessions the scope names, when known (:func:`owned`)."""
    size = yield owned(core, Query(size_sql, params, fetch="one"), owner)
    return int(size["n"]) <= core.settings.exact_search_max_rows


def _search_statement(core: Core, params: dict[str, Any]) -> Op[str]:
    """Pick exact search for small scopes; for other scopes the vector index (a large user's own, else
    the main one) up to its watermark and the gap since; an index over every message (a Citus
    cluster's) with iterative scans; an exact scan where no index was built."""
    scoped_to_session = "session_id" in params
    scoped_to_user = "user_id" in params
    if scoped_to_session or scoped_to_user:
        size_sql = q.SCOPE_SIZE_OF_SESSION if scoped_to_session else q.SCOPE_SIZE_OF_USER
        owner = params.get("user_id")
        if owner is None:
            owner = yield from routing_owner(core, params["session_id"])
        if (yield from scope_is_small(core, size_sql, params, owner)):
            if scoped_to_session and scoped_to_user:
                return q.EXACT_SEARCH_IN_USER_SESSION
            return q.EXACT_SEARCH_IN_SESSION if scoped_to_session else q.EXACT_SEARCH_OF_USER
    index = yield from vector_index(core, params.get("user_id"))
    yield vector_search_settings(core, params["limit"] * 2, index_order=True)
    if scoped_to_session:
        scope = "user_session" if scoped_to_user else "session"
    else:
        scope = "user" if scoped_to_user else "all"
    if index.watermark is not None:
        params["watermark"] = index.watermark
        return q.search_by_watermark_sql(scope, index.order(core.embedder.dimension, column="m.embedding"))
    return q.search_messages_sql(scope, index.order(core.embedder.dimension))


@dataclass(frozen=True)
class VectorIndex:
    """The vector index a large scope's search walks: its watermark (``None``: it covers every
    message, or there is none), storage, and whether it is the scope's user's own."""

    watermark: int | None
    storage: hnsw.HnswStorage
    own: bool = False

    def order(self, dimension: int, *, column: str = "embedding", param: str = "query") -> str:
        """The distance expression the index orders by (``hnsw.order_by``)."""
        return hnsw.order_by(self.storage, dimension, column=column, param=param, own=self.own)


def vector_index(core: Core, user_id: str | None) -> Op[VectorIndex]:
    """The index a search of a large scope walks: ``user_id``'s own index (:func:`own_index`) when
    the scope is one user who has one, else the main index (:func:`main_index`)."""
    own = None if user_id is None else (yield from own_index(core, user_id))
    if own is not None:
        return VectorIndex(own[0], own[1], own=True)
    return (yield from main_index(core))


def main_index(core: Core) -> Op[VectorIndex]:
    """The watermark (``None`` for an index over every message, or no index) and storage of the main
    vector index (``hnsw.build_index``), read from its definition and kept ``hnsw.WATERMARK_TTL``
    seconds per store: an index rebuilt since changes the plan of a search, not its answer (a stale
    watermark reads more rows exactly; the index still serves, as its predicate is implied)."""
    hit, known = core.main_index.get(None, hnsw.WATERMARK_TTL)
    if hit and known is not None:
        return known
    row = yield Query(hnsw.INDEX_PREDICATE, {"name": hnsw.INDEX_NAME}, fetch="one")
    found = VectorIndex(
        hnsw.watermark_of(row["predicate"] if row else None), hnsw.storage_of(row["definition"] if row else None)
    )
    core.main_index.put(None, found)
    return found


def own_index(core: Core, user_id: str) -> Op[tuple[int, hnsw.HnswStorage] | None]:
    """The watermark (the largest message id it covers) and storage of ``user_id``'s own vector index
    (``hnsw.py``), ``None`` without one. Read from the index's definition and kept
    ``hnsw.WATERMARK_TTL`` seconds per store: an index rebuilt or dropped since changes the plan of the
    user's searches, not their answer. On a Citus cluster, where own indexes are not built
    (``hnsw.build_user_index`` refuses), none is looked for."""
    if (yield from is_distributed(core)):
        return None
    hit, known = core.own_indexes.get(user_id, hnsw.WATERMARK_TTL)
    if hit:
        return known
    row = yield Query(hnsw.INDEX_PREDICATE, {"name": hnsw.user_index_name(user_id)}, fetch="one")
    watermark = hnsw.watermark_of(row["predicate"] if row else None)
    found = None if row is None or watermark is None else (watermark, hnsw.storage_of(row["definition"]))
    core.own_indexes.put(user_id, found)
    return found


def vector_search_settings(core: Core, candidates: int, *, index_order: bool = False) -> Query:
    """The transaction-local settings of a search that scans the vector index for ``candidates`` rows:
    ``ivfflat_probes`` lists first, more (iterative scan) until enough rows pass the scope's filter.
    ``index_order``: the statement is one ``ORDER BY distance LIMIT n`` that must take its order from
    the vector index (sorts disabled)."""
    ef_search = min(max(core.settings.hnsw_ef_search, candidates), 1_000)  # pgvector's maximum
    params = {
        "probes": str(core.settings.ivfflat_probes),
        "ef_search": str(ef_search),
        "enable_sort": "off" if index_order else "on",
    }
    return Query(q.SET_SEARCH_SETTINGS, params, fetch="none", local=True)


# --------------------------------------------------------------------------- context


@operation(group=CONTEXT)
def store_context(core: Core, context: ConversationContext) -> Op[ConversationContext]:
    """Insert or update the context entry for ``(session_id, context_type, context_key)``."""
    if not isinstance(context, ConversationContext):
        raise ValidationError(f"expected a ConversationContext, got {type(context).__name__}")
    params: dict[str, Any] = {
        "session_id": check_id("session_id", context.session_id),
        "context_type": check_id("context_type", context.context_type),
        "context_key": check_id("context_key", context.context_key),
        "context_value": check_text("context_value", context.context_value, max_chars=core.settings.max_content_chars),
        "relevance_score": check_score("relevance_score", context.relevance_score),
        "metadata": check_json("metadata", context.metadata),
        "expires_at": check_datetime("expires_at", context.expires_at),
    }
    params["user_id"] = yield from require_session(core, params["session_id"])
    row = yield Query(q.UPSERT_CONTEXT, params, fetch="one")
    return q.context_from_row(row)


@operation(group=CONTEXT, read_only=True)
def get_context(core: Core, session_id: str, context_type: str | None = None) -> Op[list[ConversationContext]]:
    """Unexpired context of the session (optionally of one type), most relevant first."""
    params = {"session_id": check_id("session_id", session_id)}
    sql = q.SELECT_CONTEXT
    if context_type is not None:
        params["context_type"] = check_id("context_type", context_type)
        sql = q.SELECT_CONTEXT_OF_TYPE
    rows = yield from session_read(core, params["session_id"], Query(sql, params), required=True)
    return [q.context_from_row(r) for r in rows]


# --------------------------------------------------------------------------- preferences


@operation(group=PREFERENCES)
def store_preference(core: Core, preference: UserPreference) -> Op[UserPreference]:
    """Insert or update the user's preference ``preference_key``."""
    if not isinstance(preference, UserPreference):
        raise ValidationError(f"expected a UserPreference, got {type(preference).__name__}")
    if not isinstance(preference.is_sensitive, bool):
        raise ValidationError("is_sensitive must be a bool")
    params: dict[str, Any] = {
        "user_id": check_id("user_id", preference.user_id),
        "preference_key": check_id("preference_key", preference.preference_key),
        "preference_value": check_json("preference_value", preference.preference_value, require_object=False),
        "preference_type": check_id("preference_type", preference.preference_type),
        "confidence_score": check_score("confidence_score", preference.confidence_score),
        "metadata": check_json("metadata", preference.metadata),
        "is_sensitive": preference.is_sensitive,
    }
    if preference.is_sensitive:  # encrypted at rest (ltst_memory/crypto.py); no key -> EncryptionKeyError
        params["preference_value"] = crypto.seal_preference_value(
            params["user_id"], params["preference_key"], preference.preference_value
        )
    row = yield Query(q.UPSERT_PREFERENCE, params, fetch="one")
    stored: UserPreference = crypto.open_preference(q.preference_from_row(row))
    return stored


@operation(group=PREFERENCES, read_only=True)
def get_preferences(core: Core, user_id: str, preference_type: str | None = None) -> Op[list[UserPreference]]:
    """The user's preferences (optionally of one type), most confident first.

    Sensitive preferences are decrypted; with no encryption key set they are left out."""
    params = {"user_id": scoped_user(core, check_id("user_id", user_id))}
    sql = q.SELECT_PREFERENCES
    if preference_type is not None:
        params["preference_type"] = check_id("preference_type", preference_type)
        sql = q.SELECT_PREFERENCES_OF_TYPE
    rows = yield Query(sql, params)
    return crypto.open_preferences([q.preference_from_row(r) for r in rows])  # no key: sensitive ones left out


# --------------------------------------------------------------------------- relationships


@operation(group=RELATIONSHIPS)
def store_relationship(core: Core, relationship: SessionRelationship) -> Op[SessionRelationship]:
    """Link two sessions of the same user (insert or update the link of that type)."""
    if not isinstance(relationship, SessionRelationship):
        raise ValidationError(f"expected a SessionRelationship, got {type(relationship).__name__}")
    params: dict[str, Any] = {
        "source_session_id": check_id("source_session_id", relationship.source_session_id),
        "target_session_id": check_id("target_session_id", relationship.target_session_id),
        "relationship_type": check_id("relationship_type", relationship.relationship_type),
        "relationship_strength": check_score("relationship_strength", relationship.relationship_strength),
        "metadata": check_json("metadata", relationship.metadata),
    }
    if params["source_session_id"] == params["target_session_id"]:
        raise ValidationError("a session cannot be related to itself")
    ids = [params["source_session_id"], params["target_session_id"]]
    rows = yield Query(q.SELECT_SESSION_OWNERS, {"session_ids": ids})
    owners = {r["session_id"]: r["user_id"] for r in rows}
    for sid in ids:
        if sid not in owners:
            raise SessionNotFoundError(sid)
    if len(set(owners.values())) != 1:
        raise ValidationError("related sessions must belong to the same user")
    statement = q.UPSERT_RELATIONSHIP
    if (yield from is_distributed(core)):
        statement, params["user_id"] = q.UPSERT_RELATIONSHIP_OF_USER, owners[ids[0]]
    row = yield Query(statement, params, fetch="one")
    return q.relationship_from_row(row)


@operation(group=RELATIONSHIPS, read_only=True)
def get_related_sessions(
    core: Core, session_id: str, limit: int = 20
) -> Op[list[tuple[ConversationSession, SessionRelationship]]]:
    """Sessions linked to ``session_id`` in either direction, strongest link first."""
    params = {"session_id": check_id("session_id", session_id), "limit": check_limit("limit", limit)}
    rows = yield from session_read(core, session_id, Query(q.SELECT_RELATED_SESSIONS, params), required=True)
    return [q.related_from_row(r) for r in rows]
