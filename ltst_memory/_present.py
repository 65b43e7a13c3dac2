"""Plain-JSON views of the library's results, shared by the MCP server and the web inspector."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from .errors import AccessDeniedError, LTSTError, NotFoundError, SessionExistsError, ValidationError

__all__ = ["MASK", "error_status", "jsonable", "message_view", "recall_view", "rehydration_view"]

#: What a sensitive preference's value is shown as when no encryption key is configured.
MASK = "••••••"


def jsonable(value: Any) -> Any:
    """``value`` with data classes, datetimes and numpy arrays turned into JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "embedding"}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def message_view(message: Any) -> dict[str, Any]:
    """A message without its embedding (``jsonable`` of the data class)."""
    return jsonable(message)  # type: ignore[no-any-return]


def recall_view(hits: list[tuple[Any, float]], parts: dict[int, Any]) -> list[dict[str, Any]]:
    """Recall hits with their score and, where known, its parts (``recall.explain_scores``)."""
    out = []
    for message, score in hits:
        part = parts.get(message.message_id)
        out.append({"message": message_view(message), "score": round(float(score), 6),
                    "parts": None if part is None else {k: round(float(v), 6) for k, v in jsonable(part).items()}})
    return out


def rehydration_view(result: Any) -> dict[str, Any]:
    """A :class:`~ltst_memory.rehydrate.RehydrationResult` section by section, with token counts."""
    sections = {
        name: [
            {"source": i.source, "text": i.text, "tokens": i.tokens, "score": round(float(i.score), 6)} for i in items
        ]
        for name, items in result.sections().items()
    }
    from .rehydrate import SECTIONS

    totals = {name: sum(i["tokens"] for i in items) for name, items in sections.items()}
    return {
        "session_id": result.session_id,
        "query": result.query,
        "token_budget": result.token_budget,
        "tokens_used": result.tokens_used,
        "dropped": dict(result.dropped),
        "sections": sections,
        "section_tokens": totals,
        "overview": [
            {"section": name, "items": len(sections.get(name, [])), "tokens": totals.get(name, 0),
             "dropped": int(result.dropped.get(name, 0))}
            for name in SECTIONS if name in sections or result.dropped.get(name)
        ],
        "prompt": result.to_prompt(),
    }


def error_status(exc: LTSTError) -> int:
    """The HTTP status of a library error: 400 bad input, 403 another user's data, 404 not found, else 500."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, AccessDeniedError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    return 409 if isinstance(exc, SessionExistsError) else 500
