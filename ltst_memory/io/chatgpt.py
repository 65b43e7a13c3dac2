"""Import a ChatGPT data export (``conversations.json``).

The file is a list of conversations, each with a ``mapping`` of nodes ``{id: {message, parent,
children}}``; a message has ``author.role``, ``content.parts`` (or ``content.text``),
``create_time`` (epoch seconds) and ``metadata``. Edited prompts and regenerated answers make the
mapping a tree. The branch the user kept (the path from ``current_node`` to the root) is the
conversation; the abandoned branches are stored too (searchable, each message pointing to its parent
through ``parent_message_id``) and marked ``metadata["off_branch"] = True`` (and
``metadata.chatgpt.on_current_branch = False``), which keeps them out of the recent turns that
:func:`~ltst_memory.rehydrate.rehydrate` puts in a prompt.
Each conversation becomes one session ``chatgpt-<conversation id>``; message uuids are uuid5 of the
conversation and node ids, so importing the same export again adds nothing.
"""

from __future__ import annotations

import heapq
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..models import ConversationMessage, ConversationSession
from ._common import ImportResult, MessageRecord, Progress, SessionRecord, parse_time, run_records, stable_uuid

__all__ = ["import_chatgpt", "parse_chatgpt"]

logger = logging.getLogger(__name__)

_ROLES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}


def _text(content: Any) -> str:
    """The text of a ChatGPT ``content`` object (parts joined; images and files become placeholders)."""
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if isinstance(parts, list):
        pieces = []
        for part in parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif part.get("content_type") in ("image_asset_pointer", "audio_asset_pointer", "file_asset_pointer"):
                    pieces.append(f"[{part['content_type'].split('_')[0]}]")
        return "\n".join(p for p in pieces if p)
    for key in ("text", "result"):
        if isinstance(content.get(key), str):
            return str(content[key])
    return ""


def _conversation_id(conversation: dict[str, Any], position: int) -> str:
    for key in ("conversation_id", "id"):
        if isinstance(conversation.get(key), str) and conversation[key].strip():
            return str(conversation[key]).strip()
    return stable_uuid("chatgpt-untitled", conversation.get("title"), conversation.get("create_time"), position)


def parse_chatgpt(data: Any, user_id: str) -> list[SessionRecord]:
    """Turn a parsed ``conversations.json`` into session records (no I/O)."""
    if isinstance(data, dict) and isinstance(data.get("conversations"), list):
        data = data["conversations"]
    if not isinstance(data, list):
        raise ValidationError("a ChatGPT export is a JSON list of conversations (conversations.json)")
    records = []
    for position, conversation in enumerate(data):
        if not isinstance(conversation, dict) or not isinstance(conversation.get("mapping"), dict):
            raise ValidationError(f"conversation #{position} has no 'mapping'; is this a ChatGPT conversations.json?")
        records.append(_parse_conversation(conversation, position, user_id))
    return records


def _parse_conversation(conversation: dict[str, Any], position: int, user_id: str) -> SessionRecord:
    conv_id = _conversation_id(conversation, position)
    session_id = f"chatgpt-{conv_id}"
    mapping: dict[str, dict[str, Any]] = conversation["mapping"]

    current: set[str] = set()
    node_id = conversation.get("current_node")
    while isinstance(node_id, str) and node_id in mapping and node_id not in current:
        current.add(node_id)
        node_id = mapping[node_id].get("parent")

    def keep(node: dict[str, Any]) -> bool:
        message = node.get("message")
        if not isinstance(message, dict):
            return False
        role = (message.get("author") or {}).get("role")
        if role not in _ROLES or not _text(message.get("content")).strip():
            return False
        return not (message.get("metadata") or {}).get("is_visually_hidden_from_conversation")

    def kept_parent(nid: str) -> str | None:
        seen = set()
        parent = mapping[nid].get("parent")
        while isinstance(parent, str) and parent in mapping and parent not in seen:
            if keep(mapping[parent]):
                return parent
            seen.add(parent)
            parent = mapping[parent].get("parent")
        return None

    kept = [nid for nid, node in mapping.items() if isinstance(node, dict) and keep(node)]
    parents = {nid: kept_parent(nid) for nid in kept}
    # topological order, oldest first among the ready nodes: parents always precede children
    children: dict[str | None, list[str]] = {}
    for nid in kept:
        children.setdefault(parents[nid], []).append(nid)

    def key(nid: str) -> tuple[float, str]:
        created = mapping[nid]["message"].get("create_time")
        return (float(created) if isinstance(created, (int, float)) else float("inf"), nid)

    heap = [(key(n), n) for n in children.get(None, [])]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, nid = heapq.heappop(heap)
        order.append(nid)
        for child in children.get(nid, []):
            heapq.heappush(heap, (key(child), child))

    messages = []
    for nid in order:
        message = mapping[nid]["message"]
        author = message.get("author") or {}
        on_branch = nid in current if current else True
        meta: dict[str, Any] = {"node_id": nid, "on_current_branch": on_branch}
        source_meta = message.get("metadata") or {}
        for name in ("model_slug", "finish_details"):
            if source_meta.get(name) is not None:
                meta[name] = source_meta[name]
        if author.get("name"):
            meta["author_name"] = author["name"]
        content = message.get("content") or {}
        if content.get("content_type") not in (None, "text"):
            meta["content_type"] = content.get("content_type")
        parent = parents[nid]
        messages.append(
            MessageRecord(
                ConversationMessage(
                    session_id=session_id,
                    role=_ROLES[author["role"]],
                    content=_text(content),
                    metadata={"source": "chatgpt", "chatgpt": meta, **({} if on_branch else {"off_branch": True})},
                    timestamp=parse_time(message.get("create_time")),
                    message_uuid=stable_uuid("chatgpt", conv_id, nid),
                ),
                parent_uuid=stable_uuid("chatgpt", conv_id, parent) if parent else None,
            )
        )
    title = conversation.get("title")
    return SessionRecord(
        session=ConversationSession(
            session_id=session_id,
            user_id=user_id,
            session_name=str(title)[:1000] if title else None,
            metadata={"source": "chatgpt", "conversation_id": conv_id},
        ),
        messages=messages,
        created_at=parse_time(conversation.get("create_time")),
        last_activity=parse_time(conversation.get("update_time")),
    )


def import_chatgpt(store: Any, path: str | Path, user_id: str, *, progress: Progress | None = None) -> ImportResult:
    """Import a ChatGPT ``conversations.json`` into ``store`` for ``user_id``; one session per conversation.

    Re-importing the same file (or a newer export holding the same conversations) adds only what is new.
    """
    with open(path, encoding="utf-8-sig") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{path} is not valid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise ValidationError(f"{path} is not UTF-8 text; a ChatGPT export is UTF-8 JSON") from None
    return run_records(store, parse_chatgpt(data, user_id), progress=progress)
