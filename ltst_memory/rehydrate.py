"""Rehydration: merge what the store knows into one prompt that fits a token budget.

:func:`rehydrate` (``storage.rehydrate(session_id, query)``) gathers, for the session's user:

==================  ==============================================================================
section             what
==================  ==============================================================================
``preferences``     the user's preferences, most confident first (sensitive ones only on request)
``summary``         the session's summary (``session_summary.summary`` or ``context_summary``)
``context``         unexpired context entries of the session, by relevance to the query
``related``         summaries of sessions linked to this one (``store_relationship``)
``memories``        older turns of this and the user's other sessions that answer the query
                    (hybrid :func:`~ltst_memory.recall.recall`), best first
``recent``          the latest turns of the session, in order
==================  ==============================================================================

and :func:`merge` — pure logic over rows, no I/O — fits them into ``token_budget``. Items are taken
in this priority order, so **what is dropped first is the last line**:

1. the newest ``min_recent_turns`` turns (the conversation must go on);
2. the session summary;
3. preferences;
4. context entries;
5. memories, best first;
6. the older of the ``recent_turns`` latest turns (newest first; they stay contiguous);
7. related sessions' summaries.

No turn appears twice (a memory that is also a recent turn is kept as a recent turn; equal texts
are kept once). The rendered prompt, section headers included, never exceeds the budget by the
configured ``count_tokens`` (checked on the final text).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _ops as ops
from . import _queries as q
from . import _recall_queries as rq
from ._kernel import SEARCH, Pending, R, operation
from ._ops import Core, Embed, Op, Query
from .errors import SessionNotFoundError, ValidationError
from .models import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    UserPreference,
    check_id,
    check_limit,
    check_text,
)
from .recall import recall
from .tokens import TokenCounter, resolve_counter

__all__ = ["ContextItem", "RehydrationResult", "merge", "rehydrate"]

logger = logging.getLogger(__name__)

SECTIONS = ("preferences", "summary", "context", "related", "memories", "recent")
HEADERS = {
    "preferences": "## User preferences",
    "summary": "## Session summary",
    "context": "## Session context",
    "related": "## Related sessions",
    "memories": "## Relevant memories",
    "recent": "## Recent conversation",
}
#: Default relevance floor of rehydrated memories: cosine similarity with the query (all-MiniLM-L6-v2),
#: unless the turn shares a word with the query or sits next to one that passes (docs/retrieval.md).
DEFAULT_MEMORY_MIN_SIMILARITY = 0.2
_CHAT_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class ContextItem:
    """One piece of rehydrated context.

    ``source`` names where it came from (``message:<id>``, ``context:<type>/<key>``,
    ``preference:<key>``, ``summary:<session>``, ``session:<id>``); ``text`` is the line rendered in
    the prompt and ``tokens`` its token count; ``score`` its relevance (1.0 where not ranked).
    """

    section: str
    source: str
    text: str
    score: float
    tokens: int
    role: str | None = None
    content: str | None = None
    message: ConversationMessage | None = field(default=None, compare=False, repr=False)


@dataclass
class RehydrationResult:
    """The merged context of a session, section by section, within ``token_budget``."""

    session_id: str
    user_id: str
    query: str | None
    token_budget: int
    preferences: list[ContextItem] = field(default_factory=list)
    summary: list[ContextItem] = field(default_factory=list)
    context: list[ContextItem] = field(default_factory=list)
    related: list[ContextItem] = field(default_factory=list)
    memories: list[ContextItem] = field(default_factory=list)
    recent: list[ContextItem] = field(default_factory=list)
    #: Number of candidate items left out per section (budget or duplicates).
    dropped: dict[str, int] = field(default_factory=dict)
    #: Tokens of :meth:`to_prompt` by the counter used.
    tokens_used: int = 0

    def sections(self) -> dict[str, list[ContextItem]]:
        """The non-empty sections in prompt order."""
        return {name: getattr(self, name) for name in SECTIONS if getattr(self, name)}

    def items(self) -> list[ContextItem]:
        """Every item in prompt order."""
        return [item for items in self.sections().values() for item in items]

    def to_prompt(self) -> str:
        """Markdown-ish text: one ``## header`` per non-empty section, one line per item."""
        return _render(self.sections())

    def to_messages(self) -> list[dict[str, str]]:
        """Chat messages: one ``system`` message with the memory sections, then the recent turns
        as ``user``/``assistant`` messages (OpenAI-style ``{"role", "content"}`` dicts)."""
        memory = {k: v for k, v in self.sections().items() if k != "recent"}
        out: list[dict[str, str]] = []
        if memory:
            out.append({"role": "system", "content": _render(memory)})
        for item in self.recent:
            out.append({"role": _CHAT_ROLES.get(item.role or "human", "user"), "content": item.content or item.text})
        return out


def _render(sections: Mapping[str, list[ContextItem]]) -> str:
    blocks = [HEADERS[name] + "\n" + "\n".join(item.text for item in items) for name, items in sections.items()]
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- pure merging


def _one_line(text: str) -> str:
    return " ".join(text.split())


def message_line(message: ConversationMessage, *, with_date: bool) -> str:
    """How a turn is shown: ``[date] Speaker: text`` (speaker from metadata, else the role)."""
    speaker = message.metadata.get("speaker") if isinstance(message.metadata, Mapping) else None
    who = speaker if isinstance(speaker, str) and speaker.strip() else message.role
    prefix = f"[{message.timestamp:%Y-%m-%d}] " if with_date and message.timestamp is not None else ""
    return f"{prefix}{who}: {_one_line(message.content)}"


def _overlap(query_words: set[str], text: str) -> float:
    if not query_words:
        return 0.0
    words = {w.lower() for w in _WORD.findall(text)}
    return len(query_words & words) / len(query_words)


def merge(
    *,
    session_id: str,
    user_id: str,
    query: str | None,
    token_budget: int,
    preferences: Sequence[UserPreference] = (),
    summary: str | None = None,
    context: Sequence[ConversationContext] = (),
    related: Sequence[tuple[ConversationSession, float, str]] = (),
    memories: Sequence[tuple[ConversationMessage, float]] = (),
    recent: Sequence[ConversationMessage] = (),
    min_recent_turns: int = 4,
    count_tokens: TokenCounter | None = None,
) -> RehydrationResult:
    """Fit the given rows into ``token_budget`` (see the module docstring for the priority order).

    ``related`` holds ``(session, relationship strength, summary text)``; ``recent`` is in
    conversation order. Pure: no I/O, deterministic for equal inputs.
    """
    count = resolve_counter(count_tokens)
    result = RehydrationResult(session_id=session_id, user_id=user_id, query=query, token_budget=token_budget)
    dropped = dict.fromkeys(SECTIONS, 0)
    query_words = {w.lower() for w in _WORD.findall(query or "") if len(w) > 2}

    def item(section: str, source: str, text: str, score: float, **extra: Any) -> ContextItem:
        return ContextItem(section, source, text, float(score), count(text), **extra)

    # ---- candidates per section, each list in the order it should be taken
    seen_text: set[str] = set()
    seen_messages: set[int] = set()

    recent_items: list[ContextItem] = []
    for m in recent:
        if m.message_id is not None:
            seen_messages.add(m.message_id)
        seen_text.add(_one_line(m.content).lower())
        recent_items.append(
            item(
                "recent",
                f"message:{m.message_id}",
                message_line(m, with_date=False),
                1.0,
                role=m.role,
                content=m.content,
                message=m,
            )
        )
    summary_items: list[ContextItem] = []
    if summary and summary.strip():
        summary_items.append(item("summary", f"summary:{session_id}", _one_line(summary), 1.0))
        seen_text.add(_one_line(summary).lower())
    pref_items = [
        item(
            "preferences",
            f"preference:{p.preference_key}",
            f"- {p.preference_key}: {json.dumps(p.preference_value, ensure_ascii=False)}",
            p.confidence_score,
        )
        for p in preferences
    ]
    ctx_scored = []
    for c in context:
        text = f"- [{c.context_type}] {c.context_key}: {_one_line(c.context_value)}"
        score = 0.5 * c.relevance_score + 0.5 * _overlap(query_words, f"{c.context_key} {c.context_value}")
        ctx_scored.append((score, c, text))
    ctx_scored.sort(key=lambda t: (-t[0], t[1].context_id or 0))
    ctx_items = []
    for score, c, text in ctx_scored:
        key = _one_line(c.context_value).lower()
        if key in seen_text:
            dropped["context"] += 1
            continue
        seen_text.add(key)
        ctx_items.append(item("context", f"context:{c.context_type}/{c.context_key}", text, score))
    mem_items = []
    for m, score in memories:
        key = _one_line(m.content).lower()
        if (m.message_id is not None and m.message_id in seen_messages) or key in seen_text:
            dropped["memories"] += 1
            continue
        if m.message_id is not None:
            seen_messages.add(m.message_id)
        seen_text.add(key)
        mem_items.append(
            item(
                "memories",
                f"message:{m.message_id}",
                "- " + message_line(m, with_date=True),
                score,
                role=m.role,
                content=m.content,
                message=m,
            )
        )
    rel_items = []
    for session, strength, text in related:
        key = _one_line(text).lower()
        if not text.strip() or key in seen_text:
            dropped["related"] += 1
            continue
        seen_text.add(key)
        name = f"{session.session_name} " if session.session_name else ""
        rel_items.append(
            item(
                "related",
                f"session:{session.session_id}",
                f"- {name}({session.session_id}): {_one_line(text)}",
                strength,
            )
        )

    # ---- fill by priority
    header_tokens = {name: count(HEADERS[name]) for name in SECTIONS}
    chosen: dict[str, list[ContextItem]] = {name: [] for name in SECTIONS}
    order: list[ContextItem] = []  # fill order, for trimming from the end
    used = 0

    def take(it: ContextItem) -> bool:
        nonlocal used
        cost = it.tokens + (0 if chosen[it.section] else header_tokens[it.section])
        if used + cost > token_budget:
            return False
        used += cost
        chosen[it.section].append(it)
        order.append(it)
        return True

    newest_first = list(reversed(recent_items))
    n_min = min(min_recent_turns, len(newest_first))
    recent_taken = 0
    for it in newest_first[:n_min]:
        if not take(it):
            break
        recent_taken += 1
    for it in summary_items + pref_items + ctx_items + mem_items:
        if not take(it):
            dropped[it.section] += 1
    if recent_taken == n_min:
        for it in newest_first[n_min:]:
            if not take(it):
                break
            recent_taken += 1
    dropped["recent"] += len(newest_first) - recent_taken
    for it in rel_items:
        if not take(it):
            dropped["related"] += 1

    # ---- order inside sections, then enforce the budget on the rendered text itself
    chosen["recent"].sort(key=lambda it: (it.message.message_index or 0) if it.message else 0)
    for name in SECTIONS:
        setattr(result, name, chosen[name])
    tokens = count(result.to_prompt()) if order else 0
    while tokens > token_budget and order:
        last = order.pop()
        getattr(result, last.section).remove(last)
        dropped[last.section] += 1
        tokens = count(result.to_prompt()) if order else 0
    result.tokens_used = tokens
    result.dropped = {k: v for k, v in dropped.items() if v}
    return result


# --------------------------------------------------------------------------- the operation


@operation(group=SEARCH, read_only=True)
def rehydrate(
    core: Core,
    session_id: str,
    query: str | None = None,
    *,
    token_budget: int = 2000,
    recent_turns: int = 10,
    min_recent_turns: int = 4,
    memory_limit: int = 20,
    include_other_sessions: bool = True,
    include_related: bool = True,
    include_sensitive_preferences: bool = False,
    count_tokens: TokenCounter | None = None,
    recall_options: Mapping[str, Any] | None = None,
    memory_min_similarity: float | None = DEFAULT_MEMORY_MIN_SIMILARITY,
) -> Op[RehydrationResult]:
    """Merge the session's memory into a :class:`RehydrationResult` within ``token_budget`` tokens.

    ``query`` is what the next answer is about; with ``None`` the latest human turn of the session
    is used (no memories when there is none). ``include_other_sessions`` searches all of the user's
    sessions for memories (else only this one); ``include_related`` adds summaries of linked
    sessions. Sensitive preferences stay out unless ``include_sensitive_preferences``.
    ``count_tokens`` is any ``text -> int`` (default: the offline estimator of
    :mod:`ltst_memory.tokens`); ``recall_options`` are extra keyword arguments for
    :func:`~ltst_memory.recall.recall`. ``memory_min_similarity`` is the relevance floor of memories
    (recall's ``min_similarity``, default :data:`DEFAULT_MEMORY_MIN_SIMILARITY`): spare budget is left
    empty rather than filled with turns that neither resemble the query nor share a word with it;
    ``None`` turns it off. Only the session owner's data is ever read.
    """
    session_id = check_id("session_id", session_id)
    if query is not None:
        check_text("query", query, max_chars=core.settings.max_content_chars, allow_empty=True)
    token_budget = check_limit("token_budget", token_budget, minimum=1, maximum=10_000_000)
    recent_turns = check_limit("recent_turns", recent_turns, maximum=10_000)
    min_recent_turns = check_limit("min_recent_turns", min_recent_turns, maximum=10_000)
    memory_limit = check_limit("memory_limit", memory_limit, maximum=1_000)
    for name, flag in (
        ("include_other_sessions", include_other_sessions),
        ("include_related", include_related),
        ("include_sensitive_preferences", include_sensitive_preferences),
    ):
        if not isinstance(flag, bool):
            raise ValidationError(f"{name} must be a bool")
    counter: Callable[[str], int] = resolve_counter(count_tokens)
    if recall_options is not None and not isinstance(recall_options, Mapping):
        raise ValidationError(f"recall_options must be a dict of recall() options, got {type(recall_options).__name__}")
    options = dict(recall_options or {})
    for reserved in ("user_id", "session_id", "limit", "scope"):
        if reserved in options:
            raise ValidationError(f"recall_options cannot set {reserved!r}; rehydrate chooses it")
    unknown = sorted(str(k) for k in options if k not in recall_keywords())
    if unknown:
        raise ValidationError(
            f"recall_options has unknown option(s) {', '.join(map(repr, unknown))}; recall() accepts "
            f"{', '.join(sorted(recall_keywords()))}"
        )

    # The question's embedding starts now, in a worker thread: the reads below and recall's lexical
    # statement run meanwhile; recall announces the same text and gets this embedding.
    handle: Pending | None = None
    if query is not None and query.strip() and memory_limit:
        handle = yield Embed((query,), ahead=True)
    session = yield from ops.get_session(core, session_id)
    if session is None:
        raise SessionNotFoundError(session_id)
    user_id = session.user_id
    recent: list[ConversationMessage] = []
    if recent_turns:
        turns = Query(rq.SELECT_RECENT_TURNS, {"session_id": session_id, "limit": recent_turns}, row=q.message_row)
        recent = yield ops.owned(core, turns, user_id)
    if query is None:
        query = next((m.content for m in reversed(recent) if m.role == "human"), None)
        if query is not None and query.strip() and memory_limit:
            handle = yield Embed((query,), ahead=True)

    sections: dict[str, Any] = {}
    reads = _other_reads(core, session, include_related, include_sensitive_preferences, sections)
    memories: list[tuple[ConversationMessage, float]] = []
    if handle is not None and query:
        exclude = [m.message_id for m in recent if m.message_id is not None]
        steps = recall(
            core,
            query,
            user_id=user_id if include_other_sessions else None,
            session_id=session_id,
            scope="user" if include_other_sessions else "session",
            limit=memory_limit,
            exclude_message_ids=exclude,
            **{"min_similarity": memory_min_similarity, **options},
        )
        # the other reads run once recall's lexical statement is sent, before it waits for the vector
        memories = yield from _before_waiting(steps, handle, reads)
    if not sections:  # no recall, or one that returned before waiting for the vector
        yield from reads

    return merge(
        session_id=session_id,
        user_id=user_id,
        query=query,
        token_budget=token_budget,
        min_recent_turns=min_recent_turns,
        count_tokens=counter,
        memories=memories,
        recent=recent,
        **sections,
    )


def _other_reads(
    core: Core,
    session: ConversationSession,
    include_related: bool,
    include_sensitive_preferences: bool,
    into: dict[str, Any],
) -> Op[None]:
    """The session's summary, the user's preferences, the session's context and its related sessions'
    summaries, into ``into`` (merge's keyword arguments)."""
    session_id, user_id = session.session_id, session.user_id
    summary_row = yield ops.owned(core, Query(rq.SELECT_SESSION_SUMMARY_TEXT, {"session_ids": [session_id]}), user_id)
    summary = next((r["summary"] for r in summary_row if r["summary"]), None) or session.context_summary
    preferences = yield from ops.get_preferences(core, user_id)
    if not include_sensitive_preferences:
        preferences = [p for p in preferences if not p.is_sensitive]
    context = yield from ops.get_context(core, session_id)
    related: list[tuple[ConversationSession, float, str]] = []
    if include_related:
        links = yield from ops.get_related_sessions(core, session_id)
        links = [(s, r) for s, r in links if s.user_id == user_id]
        if links:
            ids = [s.session_id for s, _ in links]
            rows = yield ops.owned(core, Query(rq.SELECT_SESSION_SUMMARY_TEXT, {"session_ids": ids}), user_id)
            texts = {r["session_id"]: r["summary"] for r in rows if r["summary"]}
            for s, r in links:
                text = texts.get(s.session_id) or s.context_summary
                if text:
                    related.append((s, r.relationship_strength, text))
    into.update(summary=summary, preferences=preferences, context=context, related=related)


def _before_waiting(steps: Op[R], handle: Pending, meanwhile: Op[None]) -> Op[R]:
    """``yield from steps``, except that ``meanwhile`` runs first where ``steps`` yields ``handle`` (where
    it waits for the embedding); what the executor sends or throws goes to ``steps``."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            instruction = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        if instruction is handle:
            yield from meanwhile
        try:
            result = yield instruction
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # thrown by the executor (an EmbeddingError): recall's to handle
            error = exc


@functools.cache
def recall_keywords() -> frozenset[str]:
    """The options ``recall_options`` may set: recall()'s keyword arguments that rehydrate leaves open."""
    import inspect

    names = set(inspect.signature(recall).parameters) - {"core", "query"}
    return frozenset(names - {"user_id", "session_id", "limit", "scope"})
