"""The rows of a bulk import: validation of a batch of messages and its ``COPY ... (FORMAT BINARY)`` stream.

:func:`prepare` applies to every message the checks of ``store_messages`` (``_ops._message_params``:
same rules, same error types and messages) but column by column, so that a batch costs a few
microseconds per message: a distinct session id, role or message type is checked once per batch, an
empty metadata dict is not serialised, the embeddings are checked for size and finiteness as one
matrix, and generated ``message_uuid`` values (UUIDv7: ltst_memory/_uuid7.py) are made at once.

:meth:`Prepared.encode` then writes the rows in PostgreSQL's binary COPY format itself (no dumper call
per value): fixed-width fields with one ``struct`` call per row, the vectors in pgvector's binary
layout (``int16 dim, int16 0, dim x float32``, big-endian) sliced from one byte-swapped matrix.
No I/O here.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from . import _ops as ops
from ._uuid7 import uuid7_bytes
from .errors import ValidationError
from .models import (
    ConversationMessage,
    check_datetime,
    check_id,
    check_indexed_text,
    check_json,
    check_score,
    check_text,
    check_uuid,
    normalize_role,
)

__all__ = ["COPY_COLUMNS", "Prepared", "prepare", "text_field", "timestamp_micros"]

#: Columns of the COPY, fixed-width ones first (one ``struct`` call per row covers them).
COPY_COLUMNS = (
    "message_uuid",
    "message_index",
    "relevance_score",
    "is_context_message",
    '"timestamp"',
    "embedding",
    "parent_message_id",
    "session_id",
    "user_id",
    "role",
    "message_type",
    "metadata",
    "content",
)

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, no extension
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
# field count; uuid; message_index int4; relevance_score float8; is_context_message bool; timestamp int8
_HEAD = struct.Struct(">h i16s ii id i? iq")
_HEAD_SIZES = (len(COPY_COLUMNS), 16, 4, 8, 1, 8)
_LENGTH = struct.Struct(">i")
_PARENT = struct.Struct(">iq")
_EMPTY_JSONB = _LENGTH.pack(3) + b"\x01{}"  # jsonb binary: version 1, then the JSON text
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: Rows per chunk handed to COPY: the server inserts one chunk while the next is encoded.
CHUNK_ROWS = 1_000


def timestamp_micros(value: datetime) -> int:
    """A timezone-aware datetime as PostgreSQL's binary ``timestamptz``: microseconds since 2000-01-01 UTC."""
    return (value - _PG_EPOCH) // _MICROSECOND


def text_field(text: str) -> bytes:
    """A text value as a binary COPY field: its length, then its UTF-8 bytes."""
    data = text.encode("utf-8")
    return _LENGTH.pack(len(data)) + data


@dataclass
class Prepared:
    """A validated batch, column by column (row ``i`` of every list is message ``i`` of the batch)."""

    session_ids: list[str]
    given_uuids: list[uuid.UUID | None]  # the client's message_uuid, parsed; None: generated
    uuid_bytes: list[bytes]
    roles: list[bytes]  # encoded fields (length + UTF-8)
    types: list[bytes]
    contents: list[bytes]  # UTF-8
    metadata: list[bytes]  # encoded fields (length + jsonb)
    parents: list[int | None]
    scores: list[float]
    context: list[bool]
    timestamps: list[int | None]  # microseconds since 2000-01-01 UTC; None: the transaction's time
    vectors: np.ndarray  # (n, dim) big-endian float32; rows without an embedding are garbage
    has_vector: np.ndarray  # (n,) bool
    missing: list[int] = field(default_factory=list)  # rows that came without an embedding

    def __len__(self) -> int:
        return len(self.session_ids)

    def params(self) -> list[dict[str, Any]]:
        """What :func:`~ltst_memory._ops.lock_sessions_for_write` reads of each row."""
        return [
            {"session_id": s, "message_uuid": g if g is not None else b, "parent_message_id": p}
            for s, g, b, p in zip(self.session_ids, self.given_uuids, self.uuid_bytes, self.parents, strict=True)
        ]

    def set_vectors(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Store the embeddings computed for ``rows`` (already checked by ``embed_checked``)."""
        if rows:
            self.vectors[list(rows)] = vectors
            self.has_vector[list(rows)] = True

    def encode(
        self, rows: Sequence[int], message_indexes: Sequence[int], owner_fields: dict[str, bytes], now_micros: int,
        clock: Callable[[float], None] | None = None,
    ) -> Iterator[bytes]:  # fmt: skip
        """The binary COPY stream of ``rows`` (with their ``message_indexes``), in chunks of ``CHUNK_ROWS``.

        ``owner_fields`` maps a session id to its owner's encoded ``user_id`` field. ``clock`` (optional)
        receives the seconds spent encoding each chunk.
        """
        dim_bytes = self.vectors.shape[1] * 4
        vector_head = _LENGTH.pack(4 + dim_bytes) + struct.pack(">HH", self.vectors.shape[1], 0)
        matrix = np.ascontiguousarray(self.vectors).data.cast("B")
        has_vector = self.has_vector.tolist()
        session_fields: dict[str, bytes] = {}
        head = _HEAD.pack
        length = _LENGTH.pack
        n_fields, l_uuid, l_index, l_score, l_bool, l_time = _HEAD_SIZES
        first = True
        for start in range(0, len(rows), CHUNK_ROWS):
            began = time.perf_counter()
            parts: list[Any] = [_SIGNATURE] if first else []
            first = False
            for k in range(start, min(start + CHUNK_ROWS, len(rows))):
                i = rows[k]
                sid = self.session_ids[i]
                sfield = session_fields.get(sid)
                if sfield is None:
                    sfield = session_fields[sid] = text_field(sid) + owner_fields[sid]
                ts = self.timestamps[i]
                parent = self.parents[i]
                content = self.contents[i]
                parts.append(
                    head(
                        n_fields, l_uuid, self.uuid_bytes[i], l_index, message_indexes[k], l_score, self.scores[i],
                        l_bool, self.context[i], l_time, now_micros if ts is None else ts,
                    )
                )  # fmt: skip
                if has_vector[i]:
                    parts.append(vector_head)
                    parts.append(matrix[i * dim_bytes : (i + 1) * dim_bytes])
                else:
                    parts.append(_NULL)
                parts.append(_NULL if parent is None else _PARENT.pack(8, parent))
                parts.append(sfield)
                parts.append(self.roles[i])
                parts.append(self.types[i])
                parts.append(self.metadata[i])
                parts.append(length(len(content)))
                parts.append(content)
            if start + CHUNK_ROWS >= len(rows):
                parts.append(_TRAILER)
            chunk = b"".join(parts)
            if clock is not None:
                clock(time.perf_counter() - began)
            yield chunk
        if first:  # no rows at all
            yield _SIGNATURE + _TRAILER


def prepare(core: ops.Core, messages: Sequence[ConversationMessage]) -> Prepared:
    """Validate ``messages`` like ``store_messages`` does and return them as columns ready for COPY.

    Raises :class:`ValidationError` (or :class:`EmbeddingDimensionError`) naming the first bad value.
    """
    n = len(messages)
    dimension = core.embedder.dimension
    max_chars = core.settings.max_content_chars
    session_ids: list[str] = []
    given: list[uuid.UUID | None] = []
    roles: list[bytes] = []
    types: list[bytes] = []
    contents: list[bytes] = []
    metadata: list[bytes] = []
    parents: list[int | None] = []
    scores: list[float] = []
    context: list[bool] = []
    timestamps: list[int | None] = []
    vector_rows: list[int] = []
    vector_values: list[np.ndarray] = []
    missing: list[int] = []
    known_ids: set[str] = set()
    role_fields: dict[str, bytes] = {}
    type_fields: dict[str, bytes] = {}
    generated = 0
    for i, m in enumerate(messages):
        if m.__class__ is not ConversationMessage and not isinstance(m, ConversationMessage):
            raise ValidationError(f"expected a ConversationMessage, got {type(m).__name__}")
        parent = m.parent_message_id
        if parent is not None and (parent.__class__ is bool or not isinstance(parent, int)):
            raise ValidationError("parent_message_id must be an int (a message_id) or None")
        key: Any = m.message_uuid
        if key is None:
            generated += 1
        elif key.__class__ is not uuid.UUID:
            key = check_uuid("message_uuid", key)
        if m.is_context_message.__class__ is not bool:
            raise ValidationError("is_context_message must be a bool")
        sid = m.session_id
        if sid.__class__ is not str or sid not in known_ids:
            known_ids.add(check_id("session_id", sid))
        role = m.role
        role_field = role_fields.get(role) if role.__class__ is str else None
        if role_field is None:
            role_field = role_fields[role] = text_field(normalize_role(role))
        text = m.content
        if text.__class__ is not str:
            check_text("content", text, max_chars=max_chars)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            check_text("content", text, max_chars=max_chars)
            raise  # pragma: no cover - check_text raised
        if len(text) > max_chars or not text or text.isspace() or b"\x00" in data:
            check_text("content", text, max_chars=max_chars)
        kind = m.message_type
        type_field = type_fields.get(kind) if kind.__class__ is str else None
        if type_field is None:
            type_field = type_fields[kind] = text_field(check_id("message_type", kind))
        meta = m.metadata
        if meta.__class__ is dict and not meta:
            meta_field = _EMPTY_JSONB
        else:
            body = b"\x01" + check_json("metadata", meta).encode("utf-8")
            if "speaker" in meta:  # speaker + content: one tsvector of <= 1 MB (content alone: max_content_chars)
                check_indexed_text(text, meta)
            meta_field = _LENGTH.pack(len(body)) + body
        vector: Any = m.embedding
        if vector is None:
            missing.append(i)
        else:
            if not (vector.__class__ is np.ndarray and vector.shape == (dimension,) and vector.dtype.kind == "f"):
                vector = ops._vector(core, vector, "message embedding")
            vector_rows.append(i)
            vector_values.append(vector)
        score = m.relevance_score
        if score.__class__ is not float or not 0.0 <= score <= 1.0:
            score = check_score("relevance_score", score)
        stamp = check_datetime("timestamp", m.timestamp)
        session_ids.append(sid)
        given.append(key)
        roles.append(role_field)
        types.append(type_field)
        contents.append(data)
        metadata.append(meta_field)
        parents.append(parent)
        scores.append(score)
        context.append(m.is_context_message)
        timestamps.append(None if stamp is None else timestamp_micros(stamp))

    vectors = np.empty((n, dimension), dtype=">f4")
    has_vector = np.zeros(n, dtype=bool)
    if vector_rows:
        with np.errstate(over="ignore"):  # float64 values beyond float32 become inf, rejected just below
            stacked = np.asarray(np.stack(vector_values), dtype=np.float32)
        finite = np.isfinite(stacked).all(axis=1)
        if not finite.all():
            raise ValidationError("message embedding contains NaN or infinite values")
        vectors[vector_rows] = stacked
        has_vector[vector_rows] = True
    fresh = iter(uuid7_bytes(generated)) if generated else iter(())
    uuid_bytes = [next(fresh) if g is None else g.bytes for g in given]
    return Prepared(
        session_ids, given, uuid_bytes, roles, types, contents, metadata, parents, scores, context, timestamps,
        vectors, has_vector, missing,
    )  # fmt: skip
