"""Hybrid retrieval: the past turns that answer a question, best first.

:func:`recall` (``storage.recall(...)``) ranks a user's messages by a *fusion* of two signals computed
in one SQL statement:

* **Okapi BM25** over the words of the turn and its speaker's name (``metadata["speaker"]``), with
  exact per-user term statistics kept by triggers (schema ``0002_retrieval.sql``) — questions name
  people and things, and word matches find them;
* **cosine similarity** of the question's embedding with the turn's embedding — which is the
  embedding of ``"speaker: content"`` (see :func:`embedding_text`) — for paraphrases.

Each signal is normalised over the candidate pool (BM25 divided by its best score, cosine rescaled
between the pool's lowest and highest) and combined with ``lexical_weight``; a turn next to a strong
hit inherits part of its neighbour's score (``neighbor_weight``: answers often sit in the turn after
the one that matches the question's words); a long turn (an assistant's essay) is damped
(``long_turn_penalty``), and so is a short one when the question names a speaker, whose name is then
most of what both signals see of it (``short_turn_penalty``); every turn adds a share of the best
score in its session (``session_weight``: the session that answers a question tends to hold several
good hits).
The question's wording is read without a model (:mod:`ltst_memory._query_hints`): a question in the
first person prefers the user's turns, one about an earlier answer the assistant's (``role_weight``);
a speaker it names (``metadata["speaker"]``) prefers that person's own turns over the turns of
others that address or mention them (``speaker_weight``); a date it names prefers turns of that
time (``date_weight``); "now"/"current" can prefer the newest
of several statements (``latest_weight``, off by default), and "how many"/"both" can spread the
top over sessions (``spread_weight``, off by default).
Options cover scope (one session, a user's sessions, related sessions, everything), metadata
filters, a time range, recency weighting, returning the neighbouring turns of each hit, and MMR
de-duplication. See ``docs/retrieval.md`` for the
measurements behind the defaults.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np

from . import _queries as q
from . import _recall_queries as rq
from . import lexical_index
from ._kernel import SEARCH, operation
from ._ops import (
    Core,
    Embed,
    Op,
    Query,
    owned,
    require_session,
    scope_is_small,
    scoped_user,
    vector_index,
    vector_search_settings,
)
from ._query_hints import (
    Period,
    asks_for_latest,
    asks_for_several,
    names_a_speaker,
    question_periods,
    question_roles,
    question_speakers,
)
from .embeddings import embedding_text
from .errors import AccessDeniedError, ValidationError
from .models import (
    ConversationMessage,
    check_datetime,
    check_id,
    check_json,
    check_limit,
    check_text,
    normalize_role,
    short_repr,
)

__all__ = ["Candidate", "RecallScope", "ScoreParts", "embedding_text", "explain_scores", "fuse", "recall"]

logger = logging.getLogger(__name__)

RecallScope = Literal["auto", "session", "user", "related", "all"]
_SCOPES = ("auto", "session", "user", "related", "all")
# How many messages each scope holds (none for "all": it is never read directly).
_SCOPE_SIZE = {"user": q.SCOPE_SIZE_OF_USER, "session": q.SCOPE_SIZE_OF_SESSION, "related": q.SCOPE_SIZE_OF_SESSIONS}

#: Defaults measured on LoCoMo (docs/retrieval.md).
DEFAULT_LEXICAL_WEIGHT = 0.5
DEFAULT_NEIGHBOR_WEIGHT = 0.35
DEFAULT_CANDIDATES = 40
#: Measured on LoCoMo and on the long-chat development set together (docs/retrieval.md).
DEFAULT_SESSION_WEIGHT = 0.15
DEFAULT_LONG_TURN_PENALTY = 0.5
#: A turn of more words than this (whitespace-separated) is "long" for ``long_turn_penalty``.
LONG_TURN_WORDS = 150
#: A turn of fewer words than this is "short" for ``short_turn_penalty``.
SHORT_TURN_WORDS = 40
#: Measured on LoCoMo; inert on the long-chat set (no speaker names) by construction (docs/retrieval.md).
DEFAULT_SHORT_TURN_PENALTY = 0.2
#: Query analysis (:mod:`ltst_memory._query_hints`): the role a question asks about, the dates it names.
DEFAULT_ROLE_WEIGHT = 0.3
DEFAULT_DATE_WEIGHT = 0.3
#: The speaker a question names (``metadata["speaker"]``): their own turns, not those addressing them.
DEFAULT_SPEAKER_WEIGHT = 0.5
#: Off by default: neutral on both development sets (docs/retrieval.md).
DEFAULT_LATEST_WEIGHT = 0.0
DEFAULT_SPREAD_WEIGHT = 0.0
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass
class Candidate:
    """One row of the candidate pool with its raw signals and fused score."""

    message: ConversationMessage
    bm25: float
    cosine: float
    score: float = 0.0
    embedding: np.ndarray | None = None
    parts: ScoreParts | None = None


@dataclass(frozen=True)
class ScoreParts:
    """How one recall hit's score is made (read-only; see :func:`explain_scores`).

    ``words + meaning + neighbour + recency == score``: ``words`` is the BM25 share
    (``lexical_weight * bm25 / max bm25``), ``meaning`` the cosine share, ``neighbour`` what the turn
    inherits from an adjacent turn and from the best turn of its session (``session_weight``),
    ``recency`` the freshness share (the first three already divided by ``1 + long_turn_penalty`` for a
    long turn and scaled by ``1 - recency_weight``). ``bm25`` and ``cosine`` are the raw signals.
    """

    words: float
    meaning: float
    neighbour: float
    recency: float
    bm25: float
    cosine: float


_EXPLAIN: ContextVar[dict[int, ScoreParts] | None] = ContextVar("ltst_recall_explain", default=None)


@contextlib.contextmanager
def explain_scores() -> Iterator[dict[int, ScoreParts]]:
    """Collect the :class:`ScoreParts` of every ``recall`` run inside the block, by ``message_id``.

    Read-only and opt-in (nothing is collected outside the block)::

        with explain_scores() as parts:
            hits = store.recall("where do we eat?", user_id="u1")
        parts[hits[0][0].message_id].words

    Turns added by ``expand_neighbors`` carry no parts of their own.
    """
    parts: dict[int, ScoreParts] = {}
    token = _EXPLAIN.set(parts)
    try:
        yield parts
    finally:
        _EXPLAIN.reset(token)


# --------------------------------------------------------------------------- pure scoring


def fuse(
    candidates: Sequence[Candidate],
    *,
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    neighbor_weight: float = DEFAULT_NEIGHBOR_WEIGHT,
    recency_weight: float = 0.0,
    recency_half_life_days: float = 30.0,
    now: datetime | None = None,
    session_weight: float = 0.0,
    long_turn_penalty: float = 0.0,
    short_turn_penalty: float = 0.0,
    roles: Sequence[str] = (),
    role_weight: float = 0.0,
    speakers: Sequence[str] = (),
    speaker_weight: float = 0.0,
    periods: Sequence[Period] = (),
    date_weight: float = 0.0,
    latest_weight: float = 0.0,
    spread_weight: float = 0.0,
    explain: bool = True,
) -> None:
    """Set ``score`` of every candidate in place (pure logic, no I/O), and with ``explain`` its ``parts``
    (:class:`ScoreParts`; else ``parts`` is ``None``: the scores are the same, computed ~3x faster).

    ``score = lexical_weight * bm25 / max(bm25) + (1 - lexical_weight) * (cos - min) / (max - min)``,
    (``lexical_weight`` counts as 0 when no candidate matches any query word), then
    ``+ neighbor_weight * (best adjacent turn's score)``, then ``/ (1 + long_turn_penalty)`` for a
    turn of more than :data:`LONG_TURN_WORDS` words and ``* (words / SHORT_TURN_WORDS) ** short_turn_penalty``
    for one of fewer than :data:`SHORT_TURN_WORDS`, then ``* (1 + role_weight)`` for a turn whose
    role is in ``roles``, ``* (1 + speaker_weight)`` for a turn whose ``metadata["speaker"]`` is in
    ``speakers`` (case-insensitive), ``* (1 + date_weight)`` for a turn dated in one of ``periods`` and
    ``* (1 + latest_weight * t)`` with ``t`` the turn's time between the pool's oldest (0) and newest
    (1) turn (the question's hints, :mod:`ltst_memory._query_hints`), then ``+ session_weight * (best score in the
    turn's session)``, then ``* (1 - spread_weight) ** k`` for a turn with ``k`` better turns in
    its session, then, with ``recency_weight`` > 0,
    ``score * (1 - recency_weight) + recency_weight * 0.5 ** (age / half_life)``.
    The defaults of :func:`fuse` leave the last three steps out; :func:`recall`'s turn them on.
    """
    if not candidates:
        return
    top_bm25 = max(c.bm25 for c in candidates)
    cos = [c.cosine for c in candidates]
    lo, hi = min(cos), max(cos)
    span = hi - lo
    if top_bm25 <= 0:  # no word of the query occurs anywhere: meaning is the only signal
        lexical_weight = 0.0
    meaning_weight = 1.0 - lexical_weight
    flat = 1.0 if hi > 0 else 0.0
    for c in candidates:
        lexical = c.bm25 / top_bm25 if top_bm25 > 0 else 0.0
        semantic = (c.cosine - lo) / span if span > 1e-9 else flat
        c.score = lexical_weight * lexical + meaning_weight * semantic
        c.parts = (
            ScoreParts(lexical_weight * lexical, meaning_weight * semantic, 0.0, 0.0, c.bm25, c.cosine)
            if explain
            else None
        )
    if neighbor_weight:
        base = {(c.message.session_id, c.message.message_index): c.score for c in candidates}
        for c in candidates:
            session, index = c.message.session_id, c.message.message_index or 0
            neighbour = max(base.get((session, index - 1), 0.0), base.get((session, index + 1), 0.0))
            c.score += neighbor_weight * neighbour
            if c.parts is not None:
                p = c.parts
                c.parts = ScoreParts(p.words, p.meaning, neighbor_weight * neighbour, p.recency, p.bm25, p.cosine)
    if long_turn_penalty or short_turn_penalty:
        long_factor = 1.0 / (1.0 + long_turn_penalty)
        for c in candidates:
            words = len(c.message.content.split())
            if long_turn_penalty and words > LONG_TURN_WORDS:
                _scale(c, long_factor)
            elif short_turn_penalty and words < SHORT_TURN_WORDS:
                _scale(c, (max(words, 1) / SHORT_TURN_WORDS) ** short_turn_penalty)
    dated = [c.message.timestamp for c in candidates if c.message.timestamp is not None] if latest_weight else []
    oldest, newest = (min(dated), max(dated)) if latest_weight and dated else (None, None)
    named = {s.casefold() for s in speakers} if speaker_weight else set()
    if (roles and role_weight) or (periods and date_weight) or oldest is not None or named:
        for c in candidates:
            factor = 1.0
            if oldest is not None and newest is not None and newest > oldest and c.message.timestamp is not None:
                factor *= 1.0 + latest_weight * (c.message.timestamp - oldest) / (newest - oldest)
            if roles and c.message.role in roles:
                factor *= 1.0 + role_weight
            speaker = c.message.metadata.get("speaker") if named else None
            if isinstance(speaker, str) and speaker.strip().casefold() in named:
                factor *= 1.0 + speaker_weight
            ts = c.message.timestamp
            if periods and ts is not None and any(p.holds(ts) for p in periods):
                factor *= 1.0 + date_weight
            if factor != 1.0:
                _scale(c, factor)
    if session_weight:
        best: dict[str, float] = {}
        for c in candidates:
            best[c.message.session_id] = max(best.get(c.message.session_id, 0.0), c.score)
        for c in candidates:
            inherited = session_weight * best[c.message.session_id]
            c.score += inherited
            if c.parts is not None:
                p = c.parts
                c.parts = ScoreParts(p.words, p.meaning, p.neighbour + inherited, p.recency, p.bm25, p.cosine)
    if spread_weight:
        seen: dict[str, int] = {}
        for c in sorted(candidates, key=lambda c: -c.score):
            earlier = seen.get(c.message.session_id, 0)
            seen[c.message.session_id] = earlier + 1
            if earlier:
                _scale(c, (1.0 - spread_weight) ** earlier)
    if recency_weight:
        reference = now or datetime.now(timezone.utc)
        half_life = max(recency_half_life_days, 1e-6) * 86_400.0
        for c in candidates:
            ts = c.message.timestamp
            age = max((reference - ts).total_seconds(), 0.0) if ts is not None else math.inf
            fresh = 0.0 if math.isinf(age) else 0.5 ** (age / half_life)
            c.score = c.score * (1.0 - recency_weight) + recency_weight * fresh
            if c.parts is not None:
                keep = 1.0 - recency_weight
                p = c.parts
                c.parts = ScoreParts(
                    p.words * keep, p.meaning * keep, p.neighbour * keep, recency_weight * fresh, p.bm25, p.cosine
                )


def _scale(c: Candidate, factor: float) -> None:
    """Multiply ``c``'s fused score, and each part of it, by ``factor`` (the parts keep adding up)."""
    c.score *= factor
    if c.parts is not None:
        p = c.parts
        c.parts = ScoreParts(p.words * factor, p.meaning * factor, p.neighbour * factor, p.recency, p.bm25, p.cosine)


def relevant_only(candidates: Sequence[Candidate], min_similarity: float, *, neighbours: bool) -> list[Candidate]:
    """The candidates that pass the absolute floor of :func:`recall`'s ``min_similarity`` (pure logic)."""

    def passes(c: Candidate) -> bool:
        return c.cosine >= min_similarity or c.bm25 > 0

    kept = {(c.message.session_id, c.message.message_index) for c in candidates if passes(c)}

    def next_to_kept(c: Candidate) -> bool:
        index = c.message.message_index or 0
        return (c.message.session_id, index - 1) in kept or (c.message.session_id, index + 1) in kept

    return [c for c in candidates if passes(c) or (neighbours and next_to_kept(c))]


def mmr_select(candidates: Sequence[Candidate], k: int, lambda_: float) -> list[Candidate]:
    """Maximal marginal relevance: pick ``k`` candidates trading score against similarity to those
    already picked (``lambda_`` = 1 is pure score). Candidates need ``embedding``."""
    pool = sorted(candidates, key=lambda c: -c.score)
    if not pool:
        return []
    vectors = np.stack([_unit(c.embedding) for c in pool])
    scores = np.array([c.score for c in pool])
    chosen: list[int] = []
    max_sim = np.full(len(pool), -np.inf)
    while len(chosen) < min(k, len(pool)):
        penalty = np.where(np.isinf(max_sim), 0.0, max_sim)
        value = lambda_ * scores - (1.0 - lambda_) * penalty
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return [pool[i] for i in chosen]


def _unit(vector: Any) -> np.ndarray:
    array = np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


# --------------------------------------------------------------------------- the operation


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _check_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or not 0 <= value <= 1:
        raise ValidationError(f"{name} must be a number between 0 and 1, got {short_repr(value)}")
    return float(value)


@operation(group=SEARCH, read_only=True)
def recall(
    core: Core,
    query: str,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    limit: int = 10,
    scope: RecallScope = "auto",
    metadata: Mapping[str, Any] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    roles: Sequence[str] | None = None,
    exclude_message_ids: Sequence[int] | None = None,
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    neighbor_weight: float = DEFAULT_NEIGHBOR_WEIGHT,
    session_weight: float = DEFAULT_SESSION_WEIGHT,
    long_turn_penalty: float = DEFAULT_LONG_TURN_PENALTY,
    short_turn_penalty: float = DEFAULT_SHORT_TURN_PENALTY,
    role_weight: float = DEFAULT_ROLE_WEIGHT,
    speaker_weight: float = DEFAULT_SPEAKER_WEIGHT,
    date_weight: float = DEFAULT_DATE_WEIGHT,
    latest_weight: float = DEFAULT_LATEST_WEIGHT,
    spread_weight: float = DEFAULT_SPREAD_WEIGHT,
    recency_weight: float = 0.0,
    recency_half_life_days: float = 30.0,
    expand_neighbors: int = 0,
    mmr: float | None = None,
    min_score: float = 0.0,
    candidates: int = DEFAULT_CANDIDATES,
    min_similarity: float | None = None,
) -> Op[list[tuple[ConversationMessage, float]]]:
    """Messages that best answer ``query``, as ``(message, score)`` pairs best first (hybrid search).

    Scope (``scope="auto"``): all of ``user_id``'s sessions when ``user_id`` is given (``session_id``,
    if also given, must belong to that user, else :class:`AccessDeniedError`); else the one session
    ``session_id``; else every stored message. Explicit scopes: ``"session"`` (only ``session_id``),
    ``"user"`` (all sessions of ``user_id``, or of ``session_id``'s owner), ``"related"``
    (``session_id`` and the sessions linked to it), ``"all"``.

    Filters: ``metadata`` (JSON containment, e.g. ``{"speaker": "Caroline"}``), ``since`` /
    ``until`` (timestamp range, ``until`` exclusive), ``roles``, ``exclude_message_ids``.

    Ranking: ``lexical_weight`` (0 = vectors only, 1 = BM25 only), ``neighbor_weight`` (share of an
    adjacent turn's score a turn inherits), ``long_turn_penalty`` (a turn of more than
    :data:`LONG_TURN_WORDS` words has its score divided by ``1 + long_turn_penalty``: a user's short
    statement is not buried under long assistant answers that repeat the topic's words),
    ``short_turn_penalty`` (when the question names a speaker stored in ``metadata["speaker"]``, a turn
    of fewer than :data:`SHORT_TURN_WORDS` words has its score multiplied by
    ``(words / SHORT_TURN_WORDS) ** short_turn_penalty``: the name, embedded and indexed with every turn
    of its speaker, is most of what both signals see of a short one, so "Thanks, Caroline!" no longer
    outranks what Caroline told), ``session_weight`` (share of the best score in its session a
    turn adds), and five weights driven by the question's wording
    (:mod:`ltst_memory._query_hints`): ``role_weight`` (a question in the first person multiplies
    the user's turns by ``1 + role_weight``, one about what the assistant said earlier — "did you
    recommend…" — the assistant's turns; a question in the third
    person changes nothing), ``speaker_weight`` (a question naming a speaker stored in
    ``metadata["speaker"]`` of the candidates — "what did Caroline paint?" — multiplies that
    speaker's turns by ``1 + speaker_weight``; naming none, or all of them, changes nothing),
    ``date_weight`` (turns dated in a period the question names — "on
    October 13, 2023", "in July 2023", "in June" — or up to a week after it, ``× (1 + date_weight)``)
    and ``latest_weight`` (off by default; a question asking for the present value — "now",
    "current", "latest" — multiplies each turn by ``1 + latest_weight × t``, ``t`` its time between
    the oldest (0) and newest (1) candidate), and ``spread_weight`` (off by default; a question that
    gathers several facts — "how many …", "what activities has …", "both" — multiplies the n-th best
    turn of a session by ``(1 - spread_weight) ** (n - 1)``, so the top reaches more sessions). Then
    ``recency_weight``
    with ``recency_half_life_days``,
    ``mmr`` (λ of maximal marginal relevance, e.g. 0.7; ``None`` = off), ``min_score``, and
    ``candidates`` (rows taken from each of the BM25 and vector searches before fusion).
    ``min_similarity`` is an absolute relevance floor (fused scores are relative to the pool, so an
    unrelated pool still has a best hit): a turn is kept only if its cosine similarity with the query
    reaches it, it shares a word with the query (BM25 > 0), or, with ``neighbor_weight`` > 0, the
    turn next to it does. ``None`` (default) keeps every candidate.
    ``expand_neighbors=n`` adds the ``n`` turns before and after each hit (score slightly below
    the hit's) so an answer comes with its context; they count towards ``limit``.

    Scores are in [0, (1 + neighbor_weight) * (1 + role_weight) * (1 + speaker_weight) * (1 + date_weight)
    * (1 + latest_weight) * (1 + session_weight)] and comparable within one call only.
    """
    check_text("query", query, max_chars=core.settings.max_content_chars)
    limit = check_limit("limit", limit, minimum=1, maximum=1_000)
    candidates = check_limit("candidates", candidates, minimum=1, maximum=10_000)
    expand_neighbors = check_limit("expand_neighbors", expand_neighbors, maximum=20)
    lexical_weight = _check_weight("lexical_weight", lexical_weight)
    neighbor_weight = _check_weight("neighbor_weight", neighbor_weight)
    session_weight = _check_weight("session_weight", session_weight)
    long_turn_penalty = _check_weight("long_turn_penalty", long_turn_penalty)
    short_turn_penalty = _check_weight("short_turn_penalty", short_turn_penalty)
    role_weight = _check_weight("role_weight", role_weight)
    speaker_weight = _check_weight("speaker_weight", speaker_weight)
    date_weight = _check_weight("date_weight", date_weight)
    latest_weight = _check_weight("latest_weight", latest_weight)
    spread_weight = _check_weight("spread_weight", spread_weight)
    recency_weight = _check_weight("recency_weight", recency_weight)
    if mmr is not None:
        mmr = _check_weight("mmr", mmr)
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not _finite(min_score):
        raise ValidationError(f"min_score must be a finite number, got {short_repr(min_score)}")
    if (
        isinstance(recency_half_life_days, bool)
        or not isinstance(recency_half_life_days, (int, float))
        or not _finite(recency_half_life_days)
    ):
        raise ValidationError("recency_half_life_days must be a finite number")
    if min_similarity is not None and (
        isinstance(min_similarity, bool)
        or not isinstance(min_similarity, (int, float))
        or not -1.0 <= float(min_similarity) <= 1.0
    ):
        raise ValidationError(f"min_similarity must be None or a number between -1 and 1, got {min_similarity!r}")
    if recency_half_life_days <= 0:
        raise ValidationError("recency_half_life_days must be positive")
    if scope not in _SCOPES:
        raise ValidationError(f"scope must be one of {', '.join(_SCOPES)}, got {short_repr(scope)}")
    params: dict[str, Any] = {"query": query, "k1": BM25_K1, "b": BM25_B, "candidates": max(candidates, limit)}
    fragments: list[str] = []  # the filters, as rq.FILTER_* fragments
    if metadata is not None:
        params["metadata"] = check_json("metadata", metadata)
        fragments.append(rq.FILTER_METADATA)
    if since is not None:
        params["since"] = check_datetime("since", since)
        fragments.append(rq.FILTER_SINCE)
    if until is not None:
        params["until"] = check_datetime("until", until)
        fragments.append(rq.FILTER_UNTIL)
    if roles is not None:
        if isinstance(roles, str) or not isinstance(roles, Sequence) or not roles:
            raise ValidationError("roles must be a non-empty list of roles")
        params["roles"] = [normalize_role(r) for r in roles]
        fragments.append(rq.FILTER_ROLES)
    if exclude_message_ids:
        ids = list(exclude_message_ids)
        if any(isinstance(i, bool) or not isinstance(i, int) or not -(2**63) <= i < 2**63 for i in ids):
            raise ValidationError("exclude_message_ids must be integers (message ids, 64-bit)")
        params["exclude_ids"] = ids
        fragments.append(rq.FILTER_EXCLUDE)
    user_id = scoped_user(core, user_id)
    if user_id is not None:
        params["user_id"] = user_id
    if session_id is not None:
        params["session_id"] = check_id("session_id", session_id)
    if core.scope_user is not None:
        # a scoped store: every scope is limited to the user inside the SQL ("all" is the user's rows)
        fragments.append(rq.FILTER_USER)
        if scope == "all":
            scope = "user"

    filters = "".join(fragments)
    if scope == "auto":
        scope = "user" if user_id is not None else "session" if session_id is not None else "all"
    if scope in ("session", "related") and session_id is None:
        raise ValidationError(f"scope={scope!r} needs a session_id")
    if scope == "user" and user_id is None and session_id is None:
        raise ValidationError("scope='user' needs a user_id (or a session_id whose owner is used)")

    # The question is embedded (in a worker thread) while the reads and the lexical leg, which needs no
    # vector, run.
    embedding = yield Embed((query,), ahead=True)

    owner: str | None = None
    if session_id is not None:
        owner = yield from require_session(core, session_id)
        if user_id is not None and owner != user_id:
            raise AccessDeniedError(f"session {session_id!r} does not belong to user {user_id!r}")
    if scope == "user":
        params["user_id"] = params.get("user_id") or owner
        scope_sql = rq.SCOPE_USER
    elif scope == "session":
        scope_sql = rq.SCOPE_SESSION
    elif scope == "related":
        rows = yield owned(core, Query(rq.SELECT_RELATED_SESSION_IDS, {"session_id": session_id}), owner)
        params["session_ids"] = [session_id, *(r["session_id"] for r in rows)]
        scope_sql = rq.SCOPE_SESSIONS
    else:
        scope_sql = rq.SCOPE_ALL
    stats_user = params.get("user_id") or owner
    if stats_user is not None:
        params["stats_user"] = stats_user

    # A small scope is read directly (exact, no index posting lists); a large one goes through the
    # GIN and vector indexes. The size comes from trigger-maintained rows (_queries.SCOPE_SIZE_OF_*).
    size_sql = _SCOPE_SIZE.get(scope)
    scan = size_sql is not None and (yield from scope_is_small(core, size_sql, params, owner))
    # A large scope: the vector index it walks (a large user's own, else the main one), up to its watermark.
    index = None if scan else (yield from vector_index(core, params["user_id"] if scope == "user" else None))
    # The lexical leg needs no vector: it runs while the question is still being embedded. A user with a
    # term index of their own (ltst_memory/lexical_index.py) is scored from it when it can evaluate the
    # filters (excluded ids: rehydrate's recent turns); other filters take the leg of every user.
    term_index: tuple[str, ...] | None = None
    if scope == "user" and all(f in rq.POSTINGS_FILTERS for f in fragments):
        params["lexical_watermark"] = yield from lexical_index.watermark(core, params["user_id"])
        if params["lexical_watermark"] is not None:
            term_index = tuple(fragments)
            yield Query(lexical_index.CUSTOM_PLAN, {}, fetch="none", local=True)
    # The candidate pool in two statements (ltst_memory/_recall_queries.py): the lexical leg's rows and
    # their neighbours now, the nearest rows, their neighbours and every row's cosine once the vector is in.
    lexical_sql = rq.lexical_pool_sql(
        scope=scope_sql,
        filters=filters,
        all_users=stats_user is None,
        with_neighbors=neighbor_weight > 0,
        scan=scan,
        term_index=term_index,
    )
    known: list[Candidate] = yield owned(core, Query(lexical_sql, params, row=_lexical_candidate), owner)
    params["known_ids"] = [c.message.message_id for c in known]
    vectors = yield embedding
    params["embedding"] = vectors[0]
    if index is not None and index.watermark is not None:
        params["watermark"] = index.watermark
    sql = rq.vector_sql(
        scope=scope_sql,
        filters=filters,
        all_users=stats_user is None,
        with_embedding=mmr is not None,
        with_neighbors=neighbor_weight > 0,
        scan=scan,
        order="" if index is None else index.order(core.embedder.dimension, column="m.embedding", param="embedding"),
        watermark=index is not None and index.watermark is not None,
    )
    if not scan:
        yield vector_search_settings(core, params["candidates"])
    nearest: list[Candidate | tuple[int, float, Any]] = yield owned(
        core, Query(sql, params, row=_vector_candidate if mmr is None else _vector_candidate_with_embedding), owner
    )
    pool = _pool(known, nearest)
    names = _pool_speakers(pool) if speaker_weight or short_turn_penalty else ()
    fuse(
        pool,
        lexical_weight=lexical_weight,
        neighbor_weight=neighbor_weight,
        recency_weight=recency_weight,
        recency_half_life_days=float(recency_half_life_days),
        session_weight=session_weight,
        long_turn_penalty=long_turn_penalty,
        short_turn_penalty=short_turn_penalty if names_a_speaker(query, names) else 0.0,
        roles=question_roles(query) if role_weight else (),
        role_weight=role_weight,
        speakers=question_speakers(query, names) if speaker_weight else (),
        speaker_weight=speaker_weight,
        periods=question_periods(query) if date_weight else (),
        date_weight=date_weight,
        latest_weight=latest_weight if asks_for_latest(query) else 0.0,
        spread_weight=spread_weight if asks_for_several(query) else 0.0,
        explain=_EXPLAIN.get() is not None,
    )
    if min_similarity is not None:
        pool = relevant_only(pool, float(min_similarity), neighbours=neighbor_weight > 0)
    pool = [c for c in pool if c.score >= min_score]
    pool.sort(key=lambda c: (-c.score, c.message.message_id or 0))
    if mmr is not None and pool:
        pool = mmr_select(pool[: max(limit * 4, 20)], limit, mmr)
    hits = [(c.message, c.score) for c in pool[:limit]]
    explained = _EXPLAIN.get()
    if explained is not None:
        explained.update(
            {c.message.message_id: c.parts for c in pool[:limit] if c.parts is not None and c.message.message_id}
        )
    if expand_neighbors and hits:
        hits = yield from _expand(core, hits, expand_neighbors, limit, stats_user if scope != "all" else None)
    logger.debug("recall %r: %d candidates, %d returned", query[:60], len(pool), len(hits))
    return hits


# --------------------------------------------------------------------------- candidate rows


def _lexical_candidate(cursor: Any) -> Callable[[Sequence[Any]], Candidate]:
    """Row factory of :func:`~ltst_memory._recall_queries.lexical_pool_sql`'s rows: a candidate with its
    BM25 (its cosine comes with the vector statement)."""
    scored = q.scored_message_row(cursor)

    def build(values: Sequence[Any]) -> Candidate:
        message, bm25 = scored(values)
        return Candidate(message, float(bm25), 0.0)

    return build


def _vector_candidate(cursor: Any) -> Callable[[Sequence[Any]], Candidate | tuple[int, float, Any]]:
    """Row factory of :func:`~ltst_memory._recall_queries.vector_sql`'s rows: a candidate, or for a row
    the lexical statement returned (``bm25`` NULL) ``(message_id, cosine, None)``."""
    return _vector_row


def _vector_row(values: Sequence[Any]) -> Candidate | tuple[int, float, Any]:
    bm25, cosine = values[-2], values[-1]
    if bm25 is None:
        return values[0], float(cosine), None
    return Candidate(q.message_of(values), float(bm25), float(cosine))


def _vector_candidate_with_embedding(cursor: Any) -> Callable[[Sequence[Any]], Candidate | tuple[int, float, Any]]:
    """:func:`_vector_candidate` for rows that end with the embedding (``mmr``): the candidate's, and its
    message's (as a list of floats)."""
    return _vector_row_with_embedding


def _vector_row_with_embedding(values: Sequence[Any]) -> Candidate | tuple[int, float, Any]:
    bm25, cosine, embedding = values[-3], values[-2], values[-1]
    if bm25 is None:
        return values[0], float(cosine), embedding
    message = q.message_of(values)
    message.embedding = q.to_vector(embedding)
    return Candidate(message, float(bm25), float(cosine), embedding=embedding)


def _pool(known: list[Candidate], rows: Sequence[Candidate | tuple[int, float, Any]]) -> list[Candidate]:
    """The candidate pool: the vector statement's new candidates, and the lexical statement's ones with
    the cosine (and embedding) the vector statement gave them (a row that left the scope since is left out)."""
    by_id = {c.message.message_id: c for c in known}
    pool: list[Candidate] = []
    for row in rows:
        if isinstance(row, Candidate):
            pool.append(row)
            continue
        message_id, cosine, embedding = row
        candidate = by_id[message_id]
        candidate.cosine = cosine
        if embedding is not None:
            candidate.embedding = embedding
            candidate.message.embedding = q.to_vector(embedding)
        pool.append(candidate)
    return pool


def _pool_speakers(pool: Sequence[Candidate]) -> tuple[str, ...]:
    """The distinct speakers of the pool (``metadata["speaker"]``, stripped)."""
    names = {c.message.metadata.get("speaker") for c in pool}
    return tuple(sorted({n.strip() for n in names if isinstance(n, str) and n.strip()}))


def _expand(
    core: Core, hits: list[tuple[ConversationMessage, float]], n: int, limit: int, owner: str | None
) -> Op[list[tuple[ConversationMessage, float]]]:
    """Interleave each hit with its ``n`` neighbours on either side (once each), up to ``limit``
    (``owner``: the user every hit belongs to, when the scope was one user's)."""
    wanted: list[tuple[str, int]] = []
    for message, _ in hits:
        for delta in range(-n, n + 1):
            if delta:
                wanted.append((message.session_id, (message.message_index or 0) + delta))
    rows = yield owned(
        core,
        Query(
            rq.SELECT_MESSAGES_AT,
            {"session_ids": [s for s, _ in wanted], "indexes": [i for _, i in wanted]},
            row=q.message_row,
        ),
        owner,
    )
    at = {(m.session_id, m.message_index): m for m in rows}
    out: list[tuple[ConversationMessage, float]] = []
    seen: set[int | None] = set()
    for message, score in hits:
        group = []
        for delta in range(-n, n + 1):
            neighbour = message if delta == 0 else at.get((message.session_id, (message.message_index or 0) + delta))
            if neighbour is not None:
                group.append((neighbour, score if delta == 0 else score * (1.0 - 0.01 * abs(delta))))
        for item in group:
            if item[0].message_id not in seen:
                seen.add(item[0].message_id)
                out.append(item)
    # a hit already added as another hit's neighbour keeps its first place
    return out[:limit]
