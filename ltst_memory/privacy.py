"""Privacy operations: erasing a user (``delete_user``) and an anonymised export for analytics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import datetime
from typing import Any

from ._ops import Core, Op, Query
from .errors import ValidationError
from .models import check_datetime, check_id

__all__ = ["ANALYTICS_SALT_VARIABLE", "delete_user", "export_analytics"]

logger = logging.getLogger(__name__)

ANALYTICS_SALT_VARIABLE = "LTST_ANALYTICS_SALT"

DELETE_USER = "SELECT kind, removed FROM ltst_delete_user(%(user_id)s)"

#: Friendly names of the core tables in delete_user's result; other tables keep their own name.
_KINDS = {
    "conversation_sessions": "sessions",
    "conversation_messages": "messages",
    "conversation_context": "context",
    "user_preferences": "preferences",
    "session_relationships": "relationships",
    "session_summary": "summaries",
    "ltst_retention_policies": "retention_policies",
}

_EXPORT = """
SELECT m.message_uuid, m.session_id, m.user_id, s.session_type, m.role, m.message_type, m.message_index,
       m."timestamp", length(m.content) AS characters, ltst_token_estimate(m.content) AS tokens_estimate,
       m.embedding IS NOT NULL AS embedded{content}
FROM conversation_messages AS m JOIN conversation_sessions AS s ON s.session_id = m.session_id
WHERE m."timestamp" >= coalesce(%(since)s, '-infinity'::timestamptz)
  AND m."timestamp" < coalesce(%(until)s, 'infinity'::timestamptz)
ORDER BY m."timestamp", m.message_id
LIMIT %(limit)s
"""
EXPORT_ROWS = _EXPORT.format(content="")
EXPORT_ROWS_WITH_CONTENT = _EXPORT.format(content=", m.content")


def delete_user(core: Core, user_id: str) -> Op[dict[str, int]]:
    """Erase every row of ``user_id`` — sessions, messages, context, preferences, relationships,
    summaries, retention policies and the per-user rows of any other LTST table with a ``user_id``
    column — in one transaction. Returns the rows removed per kind (all zero for an unknown user)."""
    rows = yield Query(DELETE_USER, {"user_id": check_id("user_id", user_id)})
    counts = {_KINDS.get(r["kind"], r["kind"]): int(r["removed"]) for r in rows}
    logger.info("deleted user data: %s", ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "nothing")
    return counts


def _pseudonym(key: bytes, kind: str, value: str) -> str:
    return hmac.new(key, f"{kind}:{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def export_analytics(
    core: Core,
    *,
    include_content: bool = False,
    salt: str | bytes | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100_000,
) -> Op[list[dict[str, Any]]]:
    """One anonymised row per message, oldest first: pseudonymous ``user``/``session``/``message`` ids
    (keyed HMAC-SHA256), session type, role, type, index, timestamp, length, token estimate and —
    only with ``include_content=True`` — the content, verbatim (names inside it are NOT scrubbed).

    The key is ``salt``, else ``LTST_ANALYTICS_SALT``, else a random one for this export only (ids
    then match within one export but not across exports). Keep the salt secret: with it, anyone can
    test guesses of user ids. Administrative: not available on user-scoped stores.
    """
    if not isinstance(include_content, bool):
        raise ValidationError("include_content must be a bool")
    if salt is None:
        salt = os.environ.get(ANALYTICS_SALT_VARIABLE) or secrets.token_bytes(32)
    if isinstance(salt, str):
        salt = salt.encode("utf-8", "surrogatepass")
    if not isinstance(salt, bytes) or len(salt) < 16:
        raise ValidationError("salt must be at least 16 bytes (or characters) of secret material")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
        raise ValidationError("limit must be an integer between 1 and 10,000,000")
    params = {"since": check_datetime("since", since), "until": check_datetime("until", until), "limit": limit}
    rows = yield Query(EXPORT_ROWS_WITH_CONTENT if include_content else EXPORT_ROWS, params)
    out = []
    for r in rows:
        item = {
            "user": _pseudonym(salt, "user", r["user_id"]),
            "session": _pseudonym(salt, "session", r["session_id"]),
            "message": _pseudonym(salt, "message", str(r["message_uuid"])),
            "session_type": r["session_type"],
            "role": r["role"],
            "message_type": r["message_type"],
            "message_index": r["message_index"],
            "timestamp": r["timestamp"].isoformat(),
            "characters": int(r["characters"]),
            "tokens_estimate": int(r["tokens_estimate"]),
            "embedded": bool(r["embedded"]),
        }
        if include_content:
            item["content"] = r["content"]
        out.append(item)
    return out
