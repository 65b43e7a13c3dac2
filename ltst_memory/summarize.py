"""Session compaction: a short summary of a long session, written where rehydration reads it.

:func:`summarize_session` (``storage.summarize_session(session_id)``) writes the summary to both
``conversation_sessions.context_summary`` and ``session_summary.summary``. With ``summarizer`` — any
callable ``prompt -> text`` such as an LLM client — the model writes it from a transcript; without
one, :func:`extractive_summary` picks the session's most informative sentences, offline and
deterministically.

The summarizer runs between reading the messages and writing the summary, with no database
connection held and no transaction open (an LLM may take seconds); the write is one statement. With
:class:`~ltst_memory.AsyncConversationStorage` it runs in a worker thread, and an ``async`` summarizer
is awaited.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from . import _ops as ops
from . import _recall_queries as rq
from ._kernel import MORE, operation, session_argument
from ._ops import Call, Core, Op, Query
from .errors import SessionNotFoundError, ValidationError
from .models import ConversationMessage, check_id, check_limit, check_text

__all__ = ["PROMPT", "extractive_summary", "summarize_session"]

logger = logging.getLogger(__name__)

#: The prompt given to an LLM ``summarizer``; ``{transcript}`` is replaced by the session's turns.
PROMPT = (
    "Summarise the following conversation in at most {max_words} words. Keep names, dates, decisions, "
    "facts about the people and open questions; leave out greetings and small talk.\n\n{transcript}\n\nSummary:"
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
# Words that say nothing about the content (a short list: English chat).
_STOP_WORDS = """
    a an the and or but if so of to in on at by for with from about as is are was were be been
    being am do does did have has had i you he she it we they me him her us them my your his its
    our their this that these those what which who whom when where why how not no yes just really
    very too also can could would should will shall may might must there here than then now oh ah
    hey hi hello thanks thank okay ok well like get got go going gonna know think good great nice
    sure yeah lot much more all any some one so that's it's i'm you're don't i've
"""
_STOP = frozenset(_STOP_WORDS.split())


def _speaker(message: ConversationMessage) -> str:
    speaker = message.metadata.get("speaker") if isinstance(message.metadata, Mapping) else None
    return speaker.strip() if isinstance(speaker, str) and speaker.strip() else message.role


def extractive_summary(
    messages: Sequence[ConversationMessage], *, max_sentences: int = 6, max_chars: int = 1200
) -> str:
    """The ``max_sentences`` most informative sentences of ``messages``, in conversation order,
    each prefixed by its speaker (``"Caroline: I went to a support group."``), within ``max_chars``.

    A sentence's weight is the mean over its content words of ``log(1 + frequency in the session)``,
    times a bonus for names and numbers, so sentences about the session's recurring subjects win
    and greetings or one-word replies lose.
    """
    sentences: list[tuple[int, str, str, list[str]]] = []
    for position, message in enumerate(messages):
        for part in _SENTENCE.split(" ".join(message.content.split())):
            words = [w.lower() for w in _WORD.findall(part)]
            content_words = [w for w in words if w not in _STOP and len(w) > 2]
            if len(content_words) >= 3:
                sentences.append((position, _speaker(message), part, content_words))
    if not sentences:
        return ""
    frequency = Counter(w for _, _, _, words in sentences for w in set(words))

    def weight(entry: tuple[int, str, str, list[str]]) -> float:
        _, _, text, words = entry
        base = sum(math.log1p(frequency[w]) for w in words) / math.sqrt(len(words))
        names = sum(1 for token in re.findall(r"\b[A-Z][a-z]+\b", text)[1:])  # capitalised, not the first word
        numbers = len(re.findall(r"\d", text)) > 0
        return base * (1.0 + 0.1 * min(names, 3) + (0.1 if numbers else 0.0))

    ranked = sorted(range(len(sentences)), key=lambda i: (-weight(sentences[i]), i))
    chosen: list[int] = []
    seen: set[frozenset[str]] = set()
    length = 0
    for i in ranked:
        if len(chosen) >= max_sentences:
            break
        key = frozenset(sentences[i][3])
        if key in seen:
            continue
        line = f"{sentences[i][1]}: {sentences[i][2]}"
        if length + len(line) + 1 > max_chars:
            continue
        seen.add(key)
        chosen.append(i)
        length += len(line) + 1
    return " ".join(f"{sentences[i][1]}: {sentences[i][2]}" for i in sorted(chosen))


def _transcript(messages: Sequence[ConversationMessage], max_chars: int) -> str:
    lines = [f"{_speaker(m)}: {' '.join(m.content.split())}" for m in messages]
    out: list[str] = []
    total = 0
    for line in reversed(lines):  # keep the end of very long sessions
        if total + len(line) + 1 > max_chars:
            break
        out.append(line)
        total += len(line) + 1
    return "\n".join(reversed(out))


@operation(group=MORE, invalidates=session_argument())
def summarize_session(
    core: Core,
    session_id: str,
    *,
    summarizer: Callable[[str], str] | None = None,
    summary: str | None = None,
    max_messages: int = 2_000,
    max_sentences: int = 6,
    max_words: int = 150,
    max_transcript_chars: int = 24_000,
) -> Op[str]:
    """Write and return a summary of the session (see the module docstring).

    ``summary`` stores the given text as is; else ``summarizer(prompt)`` (an LLM callable) writes it
    from the last ``max_messages`` turns (transcript cut to ``max_transcript_chars`` from the end);
    else the summary is extractive. An empty session gets an empty summary.
    """
    session_id = check_id("session_id", session_id)
    max_messages = check_limit("max_messages", max_messages, minimum=1, maximum=100_000)
    max_sentences = check_limit("max_sentences", max_sentences, minimum=1, maximum=100)
    max_words = check_limit("max_words", max_words, minimum=1, maximum=10_000)
    if summarizer is not None and not callable(summarizer):
        raise ValidationError("summarizer must be a callable prompt -> text")
    if summary is not None:
        summary = check_text("summary", summary, max_chars=core.settings.max_content_chars, allow_empty=True)
    else:
        messages = yield from ops.reading(ops.get_recent_messages(core, session_id, max_messages))
        if not messages:
            summary = ""
        elif summarizer is not None:
            prompt = PROMPT.format(max_words=max_words, transcript=_transcript(messages, max_transcript_chars))
            text = yield Call(summarizer, (prompt,))
            if not isinstance(text, str):
                raise ValidationError(f"summarizer returned {type(text).__name__}, expected str")
            summary = check_text("summary", text.strip(), max_chars=core.settings.max_content_chars, allow_empty=True)
        else:
            summary = extractive_summary(messages, max_sentences=max_sentences)
    write = {"session_id": session_id, "summary": summary}
    statement = Query(rq.WRITE_SESSION_SUMMARY, write, fetch="one", atomic=True)
    row = yield from ops.session_read(core, session_id, statement)
    if row is None:
        yield from ops.get_session_summary(core, session_id)  # raises SessionNotFoundError if missing
        raise SessionNotFoundError(session_id)
    logger.debug("summarised session %s (%d characters)", session_id, len(summary))
    return summary
