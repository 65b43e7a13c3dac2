"""The Model Context Protocol server of ltst-memory (``ltst mcp``): one user's memory for any MCP client.

Built on the official ``mcp`` SDK (``pip install 'ltst-memory[mcp]'``): :func:`build_server` returns an
``MCPServer`` whose tools and resources all run on ``storage.for_user(user_id)``, so the server can
never read or write another user's data (another user's session is refused with ``AccessDeniedError``,
another user's message is simply not found). Tools: ``remember_message``, ``remember_context``,
``remember_preference``, ``search``, ``recall``, ``rehydrate``, ``list_sessions``, ``forget_message``,
``forget_session``, ``forget_user``. Resources: ``ltst://sessions/{session_id}/transcript`` and
``ltst://sessions/{session_id}/summary``. Bad input returns a tool error naming the library's typed
error (``ValidationError: ...``) and changes nothing. See docs/inspector.md.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._present import jsonable, message_view, recall_view, rehydration_view
from .errors import LTSTError, ValidationError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["build_server"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

INSTRUCTIONS = (
    "Long-term conversation memory of one user (ltst-memory). remember_* stores, search/recall find past "
    "turns, rehydrate builds the context for a session and a question within a token budget, forget_* erases."
)


def _typed_errors(function: F) -> F:
    """Turn a library error into an MCP tool error that names its type (``ValidationError: ...``)."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LTSTError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def build_server(storage: Any, user_id: str, *, name: str = "ltst-memory") -> MCPServer:
    """An MCP server over ``storage`` scoped to ``user_id`` (a sync :class:`~ltst_memory.ConversationStorage`).

    The caller owns ``storage`` and closes it after the server stops.
    """
    from mcp.server.mcpserver import MCPServer

    from .models import ConversationContext, ConversationMessage, ConversationSession, UserPreference
    from .recall import explain_scores

    scoped = storage.for_user(user_id)  # checks user_id (ValidationError)
    user = scoped.user_id
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)

    def confirm(value: str, expected: str, what: str) -> None:
        if value != expected:
            raise ValidationError(f"to forget {what}, pass confirm={expected!r} (got {value!r}); nothing was deleted")

    @server.tool(description="Store a message in a session (created for this user if it does not exist).")
    @_typed_errors
    def remember_message(
        session_id: str, content: str, role: str = "human", metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        scoped.get_or_create_session(ConversationSession(session_id=session_id, user_id=user))
        stored = scoped.store_message(
            ConversationMessage(session_id=session_id, role=role, content=content, metadata=metadata or {})
        )
        return message_view(stored)

    @server.tool(description="Store (or update) a context entry of a session: a project, a fact, a task.")
    @_typed_errors
    def remember_context(
        session_id: str, context_type: str, context_key: str, context_value: str, relevance_score: float = 0.5
    ) -> dict[str, Any]:
        stored = scoped.store_context(
            ConversationContext(session_id=session_id, context_type=context_type, context_key=context_key,
                                context_value=context_value, relevance_score=relevance_score)
        )
        return jsonable(stored)  # type: ignore[no-any-return]

    @server.tool(description="Store (or update) a preference of this user; value is any JSON value.")
    @_typed_errors
    def remember_preference(
        key: str, value: Any, preference_type: str = "general", is_sensitive: bool = False
    ) -> dict[str, Any]:
        stored = scoped.store_preference(
            UserPreference(user_id=user, preference_key=key, preference_value=value,
                           preference_type=preference_type, is_sensitive=is_sensitive)
        )
        view = jsonable(stored)
        if stored.is_sensitive:
            view["preference_value"] = "(stored encrypted)"
        return view  # type: ignore[no-any-return]

    @server.tool(description="Messages of this user closest in meaning to query (cosine similarity).")
    @_typed_errors
    def search(query: str, session_id: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        hits = scoped.search_messages(query, session_id=session_id, limit=limit, user_id=user)
        return [{"message": message_view(m), "similarity": round(float(s), 6)} for m, s in hits]

    @server.tool(description="Hybrid recall (words + meaning + neighbouring turn): past turns that answer query.")
    @_typed_errors
    def recall(query: str, session_id: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        with explain_scores() as parts:
            hits = scoped.recall(query, user_id=user, session_id=session_id, limit=limit)
        return recall_view(hits, parts)

    @server.tool(description="The memory of a session for a question, section by section, within token_budget.")
    @_typed_errors
    def rehydrate(session_id: str, query: str | None = None, token_budget: int = 2000) -> dict[str, Any]:
        return rehydration_view(scoped.rehydrate(session_id, query, token_budget=token_budget))

    @server.tool(description="This user's sessions, most recently active first.")
    @_typed_errors
    def list_sessions(limit: int = 50) -> list[dict[str, Any]]:
        return [jsonable(s) for s in scoped.get_user_sessions(user, limit=limit)]

    @server.tool(description="Delete one message of this user by its message_id.")
    @_typed_errors
    def forget_message(message_id: int) -> dict[str, Any]:
        return scoped.delete_message(message_id)  # type: ignore[no-any-return]

    @server.tool(description="Delete a session and everything in it; confirm must repeat the session_id.")
    @_typed_errors
    def forget_session(session_id: str, confirm_session_id: str) -> dict[str, Any]:
        confirm(confirm_session_id, session_id, f"session {session_id!r}")
        return scoped.delete_session(session_id)  # type: ignore[no-any-return]

    @server.tool(description="Erase everything stored about this user; confirm must repeat the user id.")
    @_typed_errors
    def forget_user(confirm_user_id: str) -> dict[str, Any]:
        confirm(confirm_user_id, user, f"user {user!r}")
        result = scoped.delete_user(user)
        return {"removed": dict(result), "complete": result.complete}

    @server.resource("ltst://sessions/{session_id}/transcript", mime_type="application/json",
                     description="Every message of a session, oldest first.")  # fmt: skip
    def transcript(session_id: str) -> str:
        try:
            messages = scoped.get_messages(session_id, limit=100_000)
        except LTSTError as exc:
            from mcp.server.mcpserver.exceptions import ResourceError

            raise ResourceError(f"{type(exc).__name__}: {exc}") from exc
        return json.dumps([message_view(m) for m in messages], ensure_ascii=False)

    @server.resource("ltst://sessions/{session_id}/summary", mime_type="application/json",
                     description="A session's statistics and summary.")  # fmt: skip
    def summary(session_id: str) -> str:
        try:
            found = scoped.get_session_summary(session_id)
        except LTSTError as exc:
            from mcp.server.mcpserver.exceptions import ResourceError

            raise ResourceError(f"{type(exc).__name__}: {exc}") from exc
        return json.dumps(jsonable(found), ensure_ascii=False)

    return server
