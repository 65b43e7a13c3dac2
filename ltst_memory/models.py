"""Data classes of the LTST store and the checks every stored value passes.

The classes are plain mutable dataclasses, as in the reference documentation:
build one, hand it to :class:`~ltst_memory.ConversationStorage`, and get back a
new instance with the server-side fields (ids, timestamps, indexes) filled in.
Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ValidationError

__all__ = [
    "CONTEXT_TYPES",
    "ROLES",
    "ConversationContext",
    "ConversationMessage",
    "ConversationSession",
    "SessionRelationship",
    "SessionSummary",
    "UserPreference",
    "normalize_role",
    "short_repr",
]

#: Stored roles. ``user``/``assistant`` (OpenAI names) are accepted and stored as ``human``/``ai``.
ROLES: tuple[str, ...] = ("human", "ai", "system", "tool")
_ROLE_ALIASES = {"user": "human", "assistant": "ai", "function": "tool"}
#: Context types named by the reference documentation; others are accepted too.
CONTEXT_TYPES: tuple[str, ...] = ("conversation", "preference", "project", "user_info")
MAX_ID_CHARS = 255
#: UTF-8 bytes of an identifier: 255 characters of up to three bytes (every character of the Basic
#: Multilingual Plane). Three identifiers form one key of a unique index (context, relationships),
#: and a btree key holds at most 2,704 bytes: 255 four-byte characters each would not fit.
MAX_ID_BYTES = 765
#: Nesting depth of a JSON value (metadata, preference values): deeper documents are refused before
#: the query. Reading a document back decodes it with Python's json, which recurses once per level
#: against the interpreter's recursion limit (1,000 by default) counted from the caller's own stack:
#: a fixed limit well under it (orjson's, 254) keeps every stored document readable from a deep call
#: stack (a web framework, an agent's graph), where a limit set by json.dumps's recursion would accept
#: a document that a deeper caller could not read.
MAX_JSON_DEPTH = 254
#: A message's speaker (``metadata["speaker"]``) and content are indexed as one tsvector, which
#: PostgreSQL limits to 1 MB of words.
MAX_INDEXED_BYTES = 1_048_575


@dataclass
class ConversationSession:
    """A conversation session: one thread of messages belonging to one user."""

    session_id: str
    user_id: str
    session_name: str | None = None
    session_type: str = "conversation"
    status: str = "active"
    metadata: dict[str, Any] = field(default_factory=dict)
    context_summary: str | None = None
    relevance_score: float = 0.0
    created_at: datetime | None = None
    last_activity: datetime | None = None


@dataclass
class ConversationMessage:
    """One message of a session.

    ``message_index``, ``timestamp``, ``embedding``, ``message_id`` and ``user_id`` are filled in by
    the store when left ``None``. ``message_uuid`` is a client-generated idempotency key: storing a
    message whose uuid is already stored returns the stored row instead of adding a second one. Left
    ``None``, it is assigned by the store: a time-ordered UUIDv7 (RFC 9562), as a string.
    """

    session_id: str
    role: str
    content: str
    message_type: str = "message"
    message_index: int | None = None
    parent_message_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: Sequence[float] | None = field(default=None, repr=False)
    relevance_score: float = 0.0
    is_context_message: bool = False
    timestamp: datetime | None = None
    message_id: int | None = None
    user_id: str | None = None
    message_uuid: str | None = None


@dataclass
class ConversationContext:
    """A piece of context attached to a session (a project, a fact about the user, ...).

    Unique per ``(session_id, context_type, context_key)``: storing the same key again updates it.
    Entries whose ``expires_at`` has passed are never returned.
    """

    session_id: str
    context_type: str
    context_key: str
    context_value: str
    relevance_score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    context_id: int | None = None
    user_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class UserPreference:
    """A user-level preference; ``preference_value`` is any JSON value. Unique per user and key."""

    user_id: str
    preference_key: str
    preference_value: Any
    preference_type: str = "general"
    confidence_score: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    is_sensitive: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class SessionRelationship:
    """A directed link between two sessions of the same user."""

    source_session_id: str
    target_session_id: str
    relationship_type: str = "related"
    relationship_strength: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass
class SessionSummary:
    """Statistics of a session, kept current by database triggers."""

    session_id: str
    total_messages: int = 0
    human_messages: int = 0
    ai_messages: int = 0
    system_messages: int = 0
    tool_messages: int = 0
    first_message_at: datetime | None = None
    last_message_at: datetime | None = None
    total_tokens_estimate: int = 0
    summary: str | None = None
    updated_at: datetime | None = None


# --------------------------------------------------------------------------- checks


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 40


def short_repr(value: object) -> str:
    """``repr(value)`` cut short (and safe on values nested too deeply for ``repr``), for error messages."""
    return _SHORT_REPR.repr(value)


def normalize_role(role: object) -> str:
    """Return the stored form of ``role`` or raise :class:`ValidationError`."""
    if not isinstance(role, str):
        raise ValidationError(f"role must be a string, got {type(role).__name__}")
    value = role.strip().lower()
    value = _ROLE_ALIASES.get(value, value)
    if value not in ROLES:
        raise ValidationError(f"unknown role {short_repr(role)}; use one of {', '.join(ROLES)} (or user/assistant)")
    return value


def check_text(name: str, value: object, *, max_chars: int | None = None, allow_empty: bool = False) -> str:
    """A string PostgreSQL can store: no NUL byte, valid UTF-8, non-blank unless allowed."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL byte (\\x00), which PostgreSQL text cannot store")
    if not value.isascii():  # (a flag of the string: no scan) a lone surrogate is not ASCII
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{name} is not valid Unicode (it contains a lone surrogate)") from None
    if max_chars is not None and len(value) > max_chars:
        raise ValidationError(f"{name} has {len(value)} characters; the limit is {max_chars}")
    return value


def check_id(name: str, value: object) -> str:
    """An identifier: a non-blank string of at most 255 characters and 765 UTF-8 bytes."""
    text = check_text(name, value, max_chars=MAX_ID_CHARS)
    if len(text) > MAX_ID_BYTES // 4 and len(text.encode("utf-8")) > MAX_ID_BYTES:
        raise ValidationError(
            f"{name} has {len(text.encode('utf-8'))} bytes of UTF-8; the limit is {MAX_ID_BYTES} (255 characters "
            "of at most three bytes), so that the keys it is part of fit PostgreSQL's index rows"
        )
    return text


def check_optional_text(name: str, value: object, *, max_chars: int | None = None) -> str | None:
    return None if value is None else check_text(name, value, max_chars=max_chars, allow_empty=True)


def check_score(name: str, value: object, *, low: float = 0.0, high: float = 1.0) -> float:
    """A finite number within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range (10**400)
        bits = value.bit_length() if isinstance(value, int) else 0
        raise ValidationError(f"{name} must be between {low} and {high}, got an integer of {bits} bits") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, got {short_repr(value)}")
    return number


def check_json(name: str, value: object, *, require_object: bool = True) -> str:
    """Serialise ``value`` to JSON text that ``jsonb`` accepts, or raise ValidationError."""
    if require_object and not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a dict, got {type(value).__name__}")
    if value.__class__ is dict and not value:  # most messages' metadata
        return "{}"
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:  # Python's recursion limit stops it (a deep caller): measure only then
        _check_depth(name, value, recursion=True)
        raise AssertionError("unreachable") from None  # pragma: no cover (_check_depth raised)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} is not JSON-serialisable: {exc}") from None
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:  # an upper bound of the depth: measure only then
        _check_depth(name, value)
    if "\\u0000" in text and _JSON_NUL.search(text):  # a real NUL, not the six characters \\u0000
        raise ValidationError(f"{name} contains a NUL character, which jsonb cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{name} contains a lone surrogate (invalid Unicode)") from None
    return text


#: ``\\u0000`` as json.dumps writes a NUL: preceded by an even number of backslashes (an escaped
#: backslash followed by the text ``u0000`` is not a NUL).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _check_depth(name: str, value: object, *, recursion: bool = False) -> None:
    """Raise ValidationError if ``value`` nests deeper than MAX_JSON_DEPTH (always, with ``recursion``:
    json.dumps met the interpreter's recursion limit)."""
    depth = _json_depth(value)
    if depth > MAX_JSON_DEPTH or recursion:
        shown = f"{depth} levels" if depth > MAX_JSON_DEPTH else "too"
        raise ValidationError(f"{name} is JSON nested {shown} deep; the limit is {MAX_JSON_DEPTH} levels")


def _json_depth(value: object) -> int:
    """Nesting depth of lists/tuples/dicts in ``value`` (iterative: no recursion limit)."""
    if not isinstance(value, (Mapping, list, tuple)):
        return 0
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (Mapping, list, tuple)))  # type: ignore[attr-defined]
    return deepest


def check_indexed_text(content: str, metadata: object) -> None:
    """Refuse a message whose speaker and content, indexed as one tsvector, would exceed 1 MB.

    ``content`` and ``metadata`` have passed :func:`check_text` / :func:`check_json`.
    """
    speaker = metadata.get("speaker") if isinstance(metadata, Mapping) else None
    if speaker is None and len(content) * 4 <= MAX_INDEXED_BYTES:
        return
    speaker_text = speaker if isinstance(speaker, str) else "" if speaker is None else json.dumps(speaker)
    if len(speaker_text) * 4 + len(content) * 4 <= MAX_INDEXED_BYTES:
        return
    size = len(speaker_text.encode("utf-8", "surrogatepass")) + len(content.encode("utf-8", "surrogatepass"))
    if size > MAX_INDEXED_BYTES:
        raise ValidationError(
            f"metadata['speaker'] and content together have {size} bytes; PostgreSQL indexes them as one tsvector "
            f"of at most {MAX_INDEXED_BYTES} bytes (shorten the speaker name or split the content)"
        )


def check_uuid(name: str, value: object) -> uuid.UUID:
    """A UUID, given as :class:`uuid.UUID` or as its text."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"{name} {short_repr(value)} is not a UUID")


def check_datetime(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValidationError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value


def check_limit(name: str, value: object, *, minimum: int = 0, maximum: int = 10_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value
