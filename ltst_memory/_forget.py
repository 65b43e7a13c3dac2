"""Forgetting one message: the operation behind the MCP ``forget`` tool and the inspector's delete button.

Sessions and users are erased by ``delete_session`` / ``delete_user``; this module adds the one
missing grain, a single message. The delete is one statement (its triggers keep the session summary
and the retrieval statistics current), filtered by the scoped user in SQL, so a scoped store can never
remove another user's message: the message then simply is not found.
"""

from __future__ import annotations

from typing import Any

from ._ops import Core, Op, Query, scoped_user
from .errors import NotFoundError, ValidationError

__all__ = ["DELETE_MESSAGE", "delete_message"]

#: Delete one message, of ``user_id`` only when ``user_id`` is not NULL; returns the deleted row's keys.
DELETE_MESSAGE = """
DELETE FROM conversation_messages
WHERE message_id = %(message_id)s AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s::text)
RETURNING message_id, session_id, user_id
"""


def delete_message(core: Core, message_id: int, user_id: str | None = None) -> Op[dict[str, Any]]:
    """Delete message ``message_id`` (of ``user_id`` when given); return ``{"message_id", "session_id"}``.

    Raises :class:`~ltst_memory.errors.NotFoundError` when there is no such message (for a scoped
    store: no such message of its user), :class:`~ltst_memory.errors.ValidationError` for a bad id.
    """
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id < 2**63:
        raise ValidationError(f"message_id must be a positive 64-bit integer, got {message_id!r}")
    params = {"message_id": message_id, "user_id": scoped_user(core, user_id)}
    row = yield Query(DELETE_MESSAGE, params, fetch="one", atomic=True)
    if row is None:
        raise NotFoundError(f"no message {message_id}")
    return {"message_id": int(row["message_id"]), "session_id": str(row["session_id"])}
