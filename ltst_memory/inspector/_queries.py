"""SQL of the inspector's administrative reads (the users list, sensitive preference keys) and their operations."""

from __future__ import annotations

from typing import Any

from .._ops import Core, Op, Query
from ..models import check_id, check_limit

__all__ = ["list_users", "sensitive_preferences"]

#: Every user with sessions or preferences: session and message counts, last activity.
SELECT_USERS = """
WITH users AS (
    SELECT user_id FROM conversation_sessions
    UNION
    SELECT user_id FROM user_preferences
)
SELECT u.user_id,
       count(s.session_id) AS sessions,
       COALESCE(sum(sm.total_messages), 0) AS messages,
       max(s.last_activity) AS last_activity
FROM users u
LEFT JOIN conversation_sessions s ON s.user_id = u.user_id
LEFT JOIN session_summary sm ON sm.session_id = s.session_id
GROUP BY u.user_id
ORDER BY max(s.last_activity) DESC NULLS LAST, u.user_id
LIMIT %(limit)s OFFSET %(offset)s
"""

#: The user's sensitive preferences without their values (shown masked).
SELECT_SENSITIVE_PREFERENCES = """
SELECT preference_key, preference_type, confidence_score, updated_at
FROM user_preferences WHERE user_id = %(user_id)s AND is_sensitive
ORDER BY preference_key
"""


def list_users(core: Core, limit: int = 50, offset: int = 0) -> Op[list[dict[str, Any]]]:
    """Users (most recently active first) with their number of sessions and messages."""
    params = {
        "limit": check_limit("limit", limit, minimum=1),
        "offset": check_limit("offset", offset, maximum=2**31 - 1),
    }
    rows = yield Query(SELECT_USERS, params)
    return [dict(r) for r in rows]


def sensitive_preferences(core: Core, user_id: str) -> Op[list[dict[str, Any]]]:
    """Keys of ``user_id``'s sensitive preferences, values left out."""
    rows = yield Query(SELECT_SENSITIVE_PREFERENCES, {"user_id": check_id("user_id", user_id)})
    return [dict(r) for r in rows]
