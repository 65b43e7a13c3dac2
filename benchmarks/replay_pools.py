"""Replay recall's ranking over stored candidate pools: variants that are not options of ``recall``.

    python benchmarks/replay_pools.py --set locomo --data /path/to/locomo10.json --data-dir DIR \\
        --embedding-cache E.npz --pools pools.pkl [--variants a,b] [--grid] [--learned]
    python benchmarks/replay_pools.py --set longchat --data-dir DIR2 --embedding-cache E2.npz --pools pools2.pkl
    python benchmarks/replay_pools.py ... --generation [--halves] [--deep-misses]

Reads, once per question, the BM25 score and cosine similarity of *every* turn of the question's user
(``storage.recall(question, user_id=..., candidates=10000)``, through the store that
``benchmarks/locomo.py`` or ``benchmarks/devset_longchat.py`` filled in ``--data-dir``; kept in
``--pools``), then replays in Python what ``recall`` does with them: the candidate pool (the best
``candidates`` of each signal and their neighbouring turns), ``ltst_memory.recall.fuse`` with the
question's hints, the order. The replayed default matches ``locomo.py --compare`` within about 0.003.
On top of that it measures what needs the whole user's turns or the vectors of the pool (docs/retrieval.md,
"What the misses are"): sessions as a first stage, Rocchio feedback on the query vector, session caps
for questions that gather several facts, the question's capitalised words, relative times, a grid of
the existing weights tuned on multi-hop (``--grid``) and a ranker trained on the pools and
cross-validated by user (``--learned``, needs scikit-learn). Metrics as in ``_retrieval_eval``.

``--generation`` measures candidate generation without a model: sub-queries read from the question
(each speaker of a question naming several, clauses at commas and conjunctions, names with their
neighbouring words, the content words, the thing asked for), each run through ``recall`` over every turn
of the user (kept in ``--pools`` too), their candidates added to the pool and their rankings fused
(max, sum, reciprocal rank); and a turn's cosine read from its best sentence (every sentence of a
turn of two or more, embedded as ``"speaker: sentence"`` and kept in ``--pools``). ``--halves``
also prints conversations 0-4 and 5-9 (LoCoMo) separately; ``--deep-misses`` classifies the multi-hop
evidence turns that neither signal ranks among the user's first 100 turns.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import pickle
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from ltst_memory import ConversationStorage
from ltst_memory import recall as R
from ltst_memory._query_hints import (
    asks_for_several,
    names_a_speaker,
    question_periods,
    question_roles,
    question_speakers,
)
from ltst_memory.embeddings import SentenceTransformerEmbedder, embedding_text

DEFAULTS: dict[str, float] = {
    "lexical_weight": R.DEFAULT_LEXICAL_WEIGHT,
    "neighbor_weight": R.DEFAULT_NEIGHBOR_WEIGHT,
    "session_weight": R.DEFAULT_SESSION_WEIGHT,
    "long_turn_penalty": R.DEFAULT_LONG_TURN_PENALTY,
    "short_turn_penalty": R.DEFAULT_SHORT_TURN_PENALTY,
    "role_weight": R.DEFAULT_ROLE_WEIGHT,
    "speaker_weight": R.DEFAULT_SPEAKER_WEIGHT,
    "date_weight": R.DEFAULT_DATE_WEIGHT,
}
Post = Callable[[dict[str, Any], dict[str, Any], list[R.Candidate]], None]


def dump(args: argparse.Namespace) -> dict[str, Any]:
    """Every question with the BM25 and cosine of every turn of its user (read through ``recall``)."""
    import locomo

    captured: dict[str, list[Any]] = {}
    original = R.fuse

    def capture(pool: Any, **kwargs: Any) -> None:
        captured["pool"] = [(c.message, c.bm25, c.cosine) for c in pool]
        original(pool, **kwargs)

    if args.set == "locomo":
        _, qs = locomo.load_locomo(args.data, captions=True)
        items = [
            {
                "user": locomo.user_of("speaker", q["conv"]),
                "question": q["question"],
                "evidence": q["evidence"],
                "kind": locomo.CATEGORIES[q["category"]],
            }
            for q in qs
        ]
    else:
        import devset_longchat

        _, qs = devset_longchat.generate(args.seed, 50)
        items = [{k: q[k] for k in ("user", "question", "evidence", "kind")} for q in qs]
    embedder = locomo.CachingEmbedder(SentenceTransformerEmbedder(), args.embedding_cache)
    embedder.cache_queries = True
    users: dict[str, dict[int, Any]] = {}
    questions = []
    R.fuse = capture  # type: ignore[assignment]
    try:
        with ConversationStorage(data_dir=args.data_dir, embedder=embedder) as store:
            for n, item in enumerate(items):
                store.recall(item["question"], user_id=item["user"], limit=1, candidates=10_000)
                turns = users.setdefault(item["user"], {})
                for m, _, _ in captured["pool"]:
                    turns.setdefault(m.message_id, m)
                questions.append(
                    {
                        **item,
                        "bm25": {m.message_id: b for m, b, _ in captured["pool"]},
                        "cos": {m.message_id: c for m, _, c in captured["pool"]},
                        "qvec": np.asarray(embedder.cache[item["question"]], dtype=np.float64),
                    }
                )
                if n % 200 == 0:
                    print(f"  read {n} of {len(items)}", file=sys.stderr, flush=True)
    finally:
        R.fuse = original  # type: ignore[assignment]
    return {"users": users, "questions": questions}


class Replay:
    """The pools of one data set and recall's ranking over them."""

    def __init__(self, data: dict[str, Any], turn_key: str, vectors: dict[str, Any]) -> None:
        self.questions = data["questions"]
        self.users = {}
        for uid, msgs in data["users"].items():
            at = {(m.session_id, m.message_index): mid for mid, m in msgs.items()}
            by_turn = {m.metadata.get(turn_key): m for m in msgs.values()}
            self.users[uid] = {"msgs": msgs, "at": at, "turn": by_turn}
        self.turn_key = turn_key
        self.vectors = vectors

    def pool(self, q: dict[str, Any], candidates: int = R.DEFAULT_CANDIDATES) -> list[R.Candidate]:
        u = self.users[q["user"]]
        bm, co = q["bm25"], q["cos"]
        lexical = sorted((i for i, b in bm.items() if b > 0), key=lambda i: (-bm[i], i))[:candidates]
        semantic = sorted(co, key=lambda i: (-co[i], i))[:candidates]
        ids = set(lexical) | set(semantic)
        for i in list(ids):
            m = u["msgs"][i]
            for d in (-1, 1):
                j = u["at"].get((m.session_id, (m.message_index or 0) + d))
                if j is not None:
                    ids.add(j)
        return [self.candidate(q, i) for i in ids]

    def candidate(self, q: dict[str, Any], i: int) -> R.Candidate:
        m = self.users[q["user"]]["msgs"][i]
        return R.Candidate(message=m, bm25=q["bm25"].get(i, 0.0), cosine=q["cos"].get(i, 0.0))

    @staticmethod
    def fuse(q: dict[str, Any], pool: list[R.Candidate], **options: float) -> None:
        """``recall.fuse`` with the question's hints, as ``recall`` calls it."""
        o = {**DEFAULTS, **options}
        query = q["question"]
        names = R._pool_speakers(pool)
        R.fuse(
            pool,
            lexical_weight=o["lexical_weight"],
            neighbor_weight=o["neighbor_weight"],
            session_weight=o["session_weight"],
            long_turn_penalty=o["long_turn_penalty"],
            short_turn_penalty=o["short_turn_penalty"] if names_a_speaker(query, names) else 0.0,
            roles=question_roles(query) if o["role_weight"] else (),
            role_weight=o["role_weight"],
            speakers=question_speakers(query, names) if o["speaker_weight"] else (),
            speaker_weight=o["speaker_weight"],
            periods=question_periods(query) if o["date_weight"] else (),
            date_weight=o["date_weight"],
        )

    def rank(
        self, q: dict[str, Any], post: Post | None = None, candidates: int = R.DEFAULT_CANDIDATES, **options: float
    ) -> list[R.Candidate]:
        pool = self.pool(q, candidates)
        self.fuse(q, pool, **options)
        if post is not None:
            post(self.users[q["user"]], q, pool)
        return sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))[:50]

    def metrics(self, q: dict[str, Any], ranked: list[R.Candidate]) -> dict[str, float]:
        u = self.users[q["user"]]
        turns = [c.message.metadata.get(self.turn_key) for c in ranked]
        evidence = q["evidence"]
        ev_sessions = {u["turn"][e].session_id for e in evidence if e in u["turn"]}
        sessions = list(dict.fromkeys(c.message.session_id for c in ranked))
        top = set(turns[:10])
        first = next((i for i, t in enumerate(turns) if t in evidence), None)
        return {
            "all@10": float(evidence <= top),
            "share@10": len(evidence & top) / len(evidence),
            "session all@5": float(ev_sessions <= set(sessions[:5])),
            "MRR": 0.0 if first is None else 1.0 / (first + 1),
        }

    def run(
        self,
        questions: Iterable[dict[str, Any]] | None = None,
        ranker: Callable[[dict[str, Any]], list[R.Candidate]] | None = None,
        **kwargs: Any,
    ) -> dict[str, dict[str, float]]:
        buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for q in questions if questions is not None else self.questions:
            ranked = ranker(q) if ranker is not None else self.rank(q, **kwargs)
            for key, value in self.metrics(q, ranked).items():
                buckets["all"][key].append(value)
                buckets[q["kind"]][key].append(value)
        return {k: {m: statistics.fmean(v) for m, v in ms.items()} for k, ms in buckets.items()}

    def vector(self, m: Any) -> np.ndarray:
        v = np.asarray(self.vectors[embedding_text(m.content, m.metadata)], dtype=np.float64)
        return v / (np.linalg.norm(v) or 1.0)


# --------------------------------------------------------------------------- variants (post-processing)


def rocchio(replay: Replay, top: int, beta: float) -> Post:
    """The query vector moved towards the mean of the first ``top`` vectors; the pool re-scored."""

    def post(u: dict[str, Any], q: dict[str, Any], pool: list[R.Candidate]) -> None:
        first = sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))[:top]
        moved = q["qvec"] / np.linalg.norm(q["qvec"]) + beta * np.mean([replay.vector(c.message) for c in first], 0)
        moved /= np.linalg.norm(moved)
        for c in pool:
            c.cosine = float(replay.vector(c.message) @ moved)
        Replay.fuse(q, pool)

    return post


def best_sessions_in_pool(replay: Replay, n: int) -> Post:
    """Sessions as a first stage: every turn of the ``n`` best sessions joins the pool, then re-fused."""

    def post(u: dict[str, Any], q: dict[str, Any], pool: list[R.Candidate]) -> None:
        ranked = sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))
        best = list(dict.fromkeys(c.message.session_id for c in ranked))[:n]
        have = {c.message.message_id for c in pool}
        pool += [replay.candidate(q, i) for i, m in u["msgs"].items() if m.session_id in best and i not in have]
        Replay.fuse(q, pool)

    return post


def session_cap_for_several(per_session: int) -> Post:
    """At most ``per_session`` turns of a session in the top 10, for questions gathering several facts."""

    def post(u: dict[str, Any], q: dict[str, Any], pool: list[R.Candidate]) -> None:
        if not asks_for_several(q["question"]):
            return
        ranked = sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))
        first: list[R.Candidate] = []
        rest: list[R.Candidate] = []
        seen: dict[str, int] = defaultdict(int)
        for c in ranked:
            keep = len(first) < 10 and seen[c.message.session_id] < per_session
            (first if keep else rest).append(c)
            seen[c.message.session_id] += keep
        for place, c in enumerate(first + rest):
            c.score = float(len(ranked) - place)

    return post


_NOT_NAMES = {"What", "When", "Where", "Who", "Why", "How", "Which", "Did", "Does", "Do", "Is", "Are", "Was", "Were"}
_NOT_NAMES |= {"Would", "Could", "Has", "Have", "Can", "I"}


def capitalised_words(weight: float) -> Post:
    """A turn containing a capitalised word of the question (not a speaker, not a question word) × (1 + w)."""

    def post(u: dict[str, Any], q: dict[str, Any], pool: list[R.Candidate]) -> None:
        speakers = {s.casefold() for s in R._pool_speakers(pool)}
        words = {re.sub(r"'s$", "", w).casefold() for w in re.findall(r"\b[A-Z][\w'-]+", q["question"])}
        words = {w for w in words if w.capitalize() not in _NOT_NAMES and w not in speakers}
        for c in pool:
            text = c.message.content.casefold()
            if any(re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text) for w in words):
                c.score *= 1.0 + weight

    return post


RELATIVE = re.compile(
    r"\b(yesterday|last (week|month|year|weekend|night|summer|winter|spring|fall)"
    r"|\d+ (days|weeks|months|years) ago|recently|this (week|month|year))\b",
    re.IGNORECASE,
)


def relative_time(weight: float, window_days: int | None) -> Post:
    """A question with a relative time: newer turns first (``window_days`` None) or the turns of the last
    ``window_days`` before the user's newest turn × (1 + w)."""

    def post(u: dict[str, Any], q: dict[str, Any], pool: list[R.Candidate]) -> None:
        if not RELATIVE.search(q["question"]):
            return
        times = [c.message.timestamp for c in pool]
        oldest, newest = min(times), max(times)
        now = max(m.timestamp for m in u["msgs"].values())
        for c in pool:
            if window_days is None and newest > oldest:
                c.score *= 1.0 + weight * (c.message.timestamp - oldest) / (newest - oldest)
            elif window_days is not None and now - c.message.timestamp <= timedelta(days=window_days):
                c.score *= 1.0 + weight

    return post


def variants(replay: Replay) -> dict[str, dict[str, Any]]:
    """name -> keyword arguments of :meth:`Replay.run` (the rows of docs/retrieval.md)."""
    return {
        "default": {},
        "round-3 default (short turns undamped)": {"short_turn_penalty": 0.0},
        "default + at most 3 turns of a session in the top 10 for several-facts questions": {
            "post": session_cap_for_several(3),
        },
        "default + at most 2 turns of a session in the top 10 for several-facts questions": {
            "post": session_cap_for_several(2),
        },
        **{
            f"default + every turn of the best {n} sessions in the pool": {"post": best_sessions_in_pool(replay, n)}
            for n in (1, 3, 5)
        },
        **{f"default + Rocchio, top 3, beta {b}": {"post": rocchio(replay, 3, b)} for b in (0.3, 0.6)},
        **{
            f"default + capitalised words of the question x{1 + w:g}": {"post": capitalised_words(w)}
            for w in (0.1, 0.4)
        },
        "default + relative time: newest first 0.3": {"post": relative_time(0.3, None)},
        "default + relative time: last 90 days x1.3": {"post": relative_time(0.3, 90)},
    }


def grid(replay: Replay) -> list[tuple[float, ...]]:
    """Every combination of the existing weights (short turns undamped), best multi-hop share@10 first."""
    multi_hop = [q for q in replay.questions if q["kind"] == "multi-hop"]
    rows = []
    for lw, nw, sw, spk, cand in itertools.product(
        (0.3, 0.4, 0.5, 0.6), (0.2, 0.35, 0.5, 0.7), (0.0, 0.15, 0.3), (0.5, 1.0), (40, 100)
    ):
        r = replay.run(
            multi_hop,
            candidates=cand,
            lexical_weight=lw,
            neighbor_weight=nw,
            session_weight=sw,
            speaker_weight=spk,
            short_turn_penalty=0.0,
        )
        rows.append((r["all"]["share@10"], lw, nw, sw, spk, cand))
    return sorted(rows, reverse=True)


def features(replay: Replay, q: dict[str, Any], candidates: int) -> tuple[list[list[float]], list[float], list[Any]]:
    """20 features per candidate of the default pool, the label (evidence or not), the candidates."""
    pool = replay.pool(q, candidates)
    Replay.fuse(q, pool)
    base = {c.message.message_id: c.score for c in pool}
    top = max(c.bm25 for c in pool) or 1.0
    lo, hi = min(c.cosine for c in pool), max(c.cosine for c in pool)
    span = hi - lo or 1.0
    by_bm25 = {c.message.message_id: i for i, c in enumerate(sorted(pool, key=lambda c: -c.bm25))}
    by_cos = {c.message.message_id: i for i, c in enumerate(sorted(pool, key=lambda c: -c.cosine))}
    at = {(c.message.session_id, c.message.message_index): c for c in pool}
    best: dict[str, float] = defaultdict(float)
    size: dict[str, int] = defaultdict(int)
    for c in pool:
        best[c.message.session_id] = max(best[c.message.session_id], base[c.message.message_id])
        size[c.message.session_id] += 1
    names = {n.casefold() for n in question_speakers(q["question"], R._pool_speakers(pool))}
    periods, roles = question_periods(q["question"]), question_roles(q["question"])
    xs, ys = [], []
    for c in pool:
        m = c.message
        near = [at.get((m.session_id, (m.message_index or 0) + d)) for d in (-1, 1)]
        speaker = str(m.metadata.get("speaker", "")).casefold()
        xs.append(
            [
                base[m.message_id],
                c.bm25 / top,
                (c.cosine - lo) / span,
                c.cosine,
                c.bm25,
                math.log1p(by_bm25[m.message_id]),
                math.log1p(by_cos[m.message_id]),
                *[n.bm25 / top if n else 0.0 for n in near],
                *[(n.cosine - lo) / span if n else 0.0 for n in near],
                best[m.session_id],
                float(size[m.session_id]),
                float(speaker in names),
                float(bool(names) and speaker not in names),
                float(any(p.holds(m.timestamp) for p in periods)) if m.timestamp else 0.0,
                float(m.role in roles),
                math.log1p(len(m.content.split())),
                float("[shares a photo" in m.content),
                float(len(names)),
            ]
        )
        ys.append(float(m.metadata.get(replay.turn_key) in q["evidence"]))
    return xs, ys, pool


def learned(replay: Replay, candidates: int) -> dict[str, dict[str, float]]:
    """A gradient-boosted ranker trained on the pools, cross-validated by user (5 folds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # optional, not a dependency

    data = [(q, *features(replay, q, candidates)) for q in replay.questions]
    users = sorted({q["user"] for q in replay.questions})
    buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for fold in (set(users[i::5]) for i in range(5)):
        train = [d for d in data if d[0]["user"] not in fold]
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15)
        model.fit(np.array([x for d in train for x in d[1]]), np.array([y for d in train for y in d[2]]))
        for q, xs, _, pool in data:
            if q["user"] not in fold:
                continue
            for c, p in zip(pool, model.predict_proba(np.array(xs))[:, 1], strict=True):
                c.score = float(p)
            ranked = sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))[:50]
            for key, value in replay.metrics(q, ranked).items():
                buckets["all"][key].append(value)
                buckets[q["kind"]][key].append(value)
    return {k: {m: statistics.fmean(v) for m, v in ms.items()} for k, ms in buckets.items()}


# --------------------------------------------------------------------------- candidate generation without a model

_FUNCTION_TEXT = """a about above after again against all also am an and any are as at be because been before
    being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just let like me more most my myself
    no nor not now of off on once only or other our ours out over own really same she should so some such than
    that the their theirs them then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself kind kinds type types thing
    things something ways way"""
_FUNCTION_WORDS = frozenset(_FUNCTION_TEXT.split())
_QUESTION_TEXT = (
    "what which who whom whose when where why how did does do is are was were has have had would could can will should"
)
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
_CLAUSE_BREAK = re.compile(
    r",\s*|\s+(?:and|or|but|besides|other than|apart from|except|aside from|in addition to)\s+", re.IGNORECASE
)
_ONLY_A_NAME = re.compile(r"(?:(?:what|which|who|how|do|does|did|have|has)\s+)*[A-Z][a-z]+(?:'s)?(?:\s+both)?")
_ASKED_FOR = re.compile(
    r"\s*(?:what|which)\s+(?:kinds?\s+of\s+|types?\s+of\s+|sorts?\s+of\s+)?(.+?)\s+"
    r"(?:does|did|do|has|have|had|is|are|was|were)\b",
    re.IGNORECASE,
)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][\w'-]*", text)


def _named(question: str, speakers: Iterable[str]) -> list[str]:
    return [s for s in speakers if re.search(r"\b" + re.escape(s) + r"\b", question, re.IGNORECASE)]


def per_speaker(question: str, speakers: Sequence[str]) -> list[str]:
    """A question naming several speakers, once per speaker (the others and "both", "in common" removed)."""
    named = _named(question, speakers)
    if len(named) < 2:
        return []
    out = []
    for keep in named:
        text = question
        for other in (n for n in named if n != keep):
            text = re.sub(
                r"(\s*,\s*|\s+and\s+)?\b" + re.escape(other) + r"('s)?\b(\s+and\b)?", "", text, flags=re.IGNORECASE
            )
        text = re.sub(r"\b(both|in common|together|share|shared)\b", "", text, flags=re.IGNORECASE)
        out.append(re.sub(r"\s+", " ", text).strip())
    return out


def clauses(question: str) -> list[str]:
    """The parts of a question at commas and conjunctions ("…, and who…", "besides…", "other than…")."""
    parts = [p.strip() for p in _CLAUSE_BREAK.split(question.strip().rstrip("?")) if p.strip()]
    parts = [p for p in parts if not _ONLY_A_NAME.fullmatch(p)]
    kept = [p for p in parts if any(w.lower() not in _FUNCTION_WORDS for w in _words(p))]
    return kept if len(kept) >= 2 else []


def names_in_context(question: str, speakers: Sequence[str]) -> list[str]:
    """Each capitalised word of the question that is not a speaker, with its two neighbouring content words."""
    words = _words(question)
    content = [i for i, w in enumerate(words) if w.lower() not in _FUNCTION_WORDS]
    known = {s.casefold() for s in speakers}
    out = []
    for i, w in enumerate(words):
        if i == 0 or not w[0].isupper() or w.lower() in _QUESTION_WORDS or i not in content:
            continue
        if re.sub(r"'s$", "", w).casefold() in known:
            continue
        k = content.index(i)
        out.append(" ".join(words[j] for j in content[max(0, k - 2) : k + 3]))
    return out


def content_words(question: str) -> list[str]:
    """The question without its wh-frame and function words."""
    return [" ".join(w for w in _words(question) if w.lower() not in _FUNCTION_WORDS | _QUESTION_WORDS)]


def asked_for(question: str, speakers: Sequence[str]) -> list[str]:
    """The thing a list question asks for ("video games", "outdoor activities"), with the speaker it names."""
    m = _ASKED_FOR.match(question)
    if not m:
        return []
    thing = m.group(1)
    if len(thing.split()) > 4 or any(w.lower() in _QUESTION_WORDS | {"a", "an", "the"} for w in thing.split()):
        return []
    if _named(thing, speakers):
        return []
    return [" ".join([*_named(question, speakers), thing])]


SUBQUERY_RULES: dict[str, Callable[[str, Sequence[str]], list[str]]] = {
    "speakers": per_speaker,
    "clauses": lambda q, _: clauses(q),
    "names": names_in_context,
    "content words": lambda q, _: content_words(q),
    "asked for": asked_for,
}


def subqueries(question: str, speakers: Sequence[str], rules: Iterable[str]) -> list[str]:
    """The distinct sub-queries the ``rules`` read from ``question`` (never the question itself)."""
    out: list[str] = []
    for rule in rules:
        for text in SUBQUERY_RULES[rule](question, speakers):
            if text and text.strip().casefold() != question.strip().casefold() and text not in out:
                out.append(text)
    return out


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9\[])|\n+")


def sentences(text: str) -> list[str]:
    """A turn's sentences; a photo caption or a fragment of under three words stays with the one before."""
    out: list[str] = []
    for part in (p.strip(" -\t") for p in _SENTENCE_BREAK.split(text)):
        if not part:
            continue
        if out and (part.startswith("[shares a photo") or len(part.split()) < 3):
            out[-1] += " " + part
        else:
            out.append(part)
    return out or [text]


def speakers_of(msgs: dict[int, Any]) -> list[str]:
    return sorted({s for m in msgs.values() if isinstance(s := m.metadata.get("speaker"), str) and s})


def read_generation(args: argparse.Namespace, data: dict[str, Any]) -> bool:
    """Add what ``--generation`` needs to ``data``: every sub-query's BM25 and cosine over the user's turns
    (through ``recall``, as :func:`dump` reads the question's) and the vector of every sentence of a turn
    of two or more. Returns whether anything was added."""
    import locomo

    from ltst_memory.embeddings import SentenceTransformerEmbedder

    signals = data.setdefault("subqueries", {})
    todo = sorted(
        {
            (q["user"], text)
            for q in data["questions"]
            for text in subqueries(q["question"], speakers_of(data["users"][q["user"]]), SUBQUERY_RULES)
        }
        - set(signals)
    )
    vectors = data.setdefault("sentence_vectors", {})
    texts = sorted(
        {
            embedding_text(s, m.metadata)
            for msgs in data["users"].values()
            for m in msgs.values()
            if len(parts := sentences(m.content)) > 1
            for s in parts
        }
        - set(vectors)
    )
    if not todo and not texts:
        return False
    embedder = locomo.CachingEmbedder(SentenceTransformerEmbedder(), args.embedding_cache)
    embedder.cache_queries = True
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        vectors.update(zip(batch, np.asarray(embedder.inner.embed(batch), dtype=np.float32), strict=True))
    captured: dict[str, list[Any]] = {}
    original = R.fuse

    def capture(pool: Any, **kwargs: Any) -> None:
        captured["pool"] = [(c.message.message_id, c.bm25, c.cosine) for c in pool]
        original(pool, **kwargs)

    R.fuse = capture  # type: ignore[assignment]
    try:
        with ConversationStorage(data_dir=args.data_dir, embedder=embedder) as store:
            for n, (user, text) in enumerate(todo):
                store.recall(text, user_id=user, limit=1, candidates=10_000, neighbor_weight=0.0)
                signals[(user, text)] = (
                    {i: b for i, b, _ in captured["pool"] if b > 0},
                    {i: c for i, _, c in captured["pool"]},
                )
                if n % 500 == 0:
                    print(f"  sub-query {n} of {len(todo)}", file=sys.stderr, flush=True)
    finally:
        R.fuse = original  # type: ignore[assignment]
    return True


def _best(signal: dict[int, float], k: int, positive: bool = True) -> list[int]:
    """The ``k`` best turns of one signal (BM25: only those that match, ``positive``), as ``Replay.pool``."""
    return sorted((i for i, v in signal.items() if v > 0 or not positive), key=lambda i: (-signal[i], i))[:k]


def _with_neighbours(u: dict[str, Any], ids: set[int]) -> set[int]:
    out = set(ids)
    for i in ids:
        m = u["msgs"][i]
        for d in (-1, 1):
            j = u["at"].get((m.session_id, (m.message_index or 0) + d))
            if j is not None:
                out.add(j)
    return out


Ranker = Callable[[dict[str, Any]], list[R.Candidate]]


def multi_query(
    replay: Replay, data: dict[str, Any], rules: Sequence[str], mode: str, weight: float = 1.0, vector_leg: bool = False
) -> Ranker:
    """The pool of the question plus the best ``candidates`` of each sub-query's signals (and their
    neighbours); each query's ranking fused as ``recall`` fuses the question's (the question's hints
    throughout), then combined per turn: ``pool`` keeps the question's scores (candidate generation
    only), ``max`` takes max(question, weight × best sub-query), ``sum`` question + weight × best
    sub-query, ``rrf`` reciprocal ranks (k = 60), the sub-queries' mean times ``weight``.
    ``vector_leg``: sub-queries contribute their cosine only."""
    signals = data["subqueries"]

    def rank(q: dict[str, Any]) -> list[R.Candidate]:
        u = replay.users[q["user"]]
        subs = [signals[(q["user"], t)] for t in subqueries(q["question"], speakers_of(u["msgs"]), rules)]
        if vector_leg:
            subs = [({}, cos) for _, cos in subs]
        ids = set(_best(q["bm25"], R.DEFAULT_CANDIDATES)) | set(_best(q["cos"], R.DEFAULT_CANDIDATES, False))
        for bm25, cos in subs:
            ids |= set(_best(bm25, R.DEFAULT_CANDIDATES)) | set(_best(cos, R.DEFAULT_CANDIDATES, False))
        ids = _with_neighbours(u, ids)

        def scores(bm25: dict[int, float], cos: dict[int, float]) -> dict[int, float]:
            pool = [R.Candidate(message=u["msgs"][i], bm25=bm25.get(i, 0.0), cosine=cos.get(i, 0.0)) for i in ids]
            Replay.fuse(q, pool)
            return {c.message.message_id: c.score for c in pool}

        final = scores(q["bm25"], q["cos"])
        if subs and mode != "pool":
            others = [scores(*s) for s in subs]
            if mode == "max":
                final = {i: max(final[i], weight * max(o[i] for o in others)) for i in ids}
            elif mode == "sum":
                final = {i: final[i] + weight * max(o[i] for o in others) for i in ids}
            else:

                def rr(score: dict[int, float]) -> dict[int, float]:
                    order = sorted(score, key=lambda i: (-score[i], i))
                    return {i: 1.0 / (60 + n) for n, i in enumerate(order)}

                first, rest = rr(final), [rr(o) for o in others]
                final = {i: first[i] + weight * sum(r[i] for r in rest) / len(rest) for i in ids}
        pool = [R.Candidate(message=u["msgs"][i], bm25=0.0, cosine=0.0, score=final[i]) for i in ids]
        return sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))[:50]

    return rank


def sentence_cosines(replay: Replay, data: dict[str, Any]) -> None:
    """``q["sentence_cos"]``: every multi-sentence turn's best sentence cosine with the question."""
    vectors = data["sentence_vectors"]
    per_user: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for uid, u in replay.users.items():
        ids, mats = [], []
        for i, m in u["msgs"].items():
            parts = sentences(m.content)
            if len(parts) > 1:
                ids.append(i)
                mats.append(np.stack([vectors[embedding_text(s, m.metadata)] for s in parts]))
        per_user[uid] = (ids, mats)
    for q in replay.questions:
        ids, mats = per_user[q["user"]]
        qv = q["qvec"] / np.linalg.norm(q["qvec"])
        q["sentence_cos"] = {i: float((mat @ qv).max()) for i, mat in zip(ids, mats, strict=True)}


def best_sentence(
    replay: Replay,
    turn_share: float,
    max_words: int | None = R.LONG_TURN_WORDS,
    generate: bool = True,
    never_lower: bool = False,
) -> Ranker:
    """A turn's cosine = ``turn_share`` × its own + (1 − ``turn_share``) × its best sentence's (turns of at
    most ``max_words`` words; ``never_lower``: the larger of that and its own), for the pool
    (``generate``: the vector leg's candidates too) and for fusion."""

    def rank(q: dict[str, Any]) -> list[R.Candidate]:
        u = replay.users[q["user"]]
        cos = dict(q["cos"])
        for i, s in q["sentence_cos"].items():
            if max_words is None or len(u["msgs"][i].content.split()) <= max_words:
                mixed = turn_share * cos[i] + (1.0 - turn_share) * s
                cos[i] = max(cos[i], mixed) if never_lower else mixed
        semantic = _best(cos if generate else q["cos"], R.DEFAULT_CANDIDATES, False)
        ids = set(_best(q["bm25"], R.DEFAULT_CANDIDATES)) | set(semantic)
        ids = _with_neighbours(u, ids)
        pool = [R.Candidate(message=u["msgs"][i], bm25=q["bm25"].get(i, 0.0), cosine=cos[i]) for i in ids]
        Replay.fuse(q, pool)
        return sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))[:50]

    return rank


def generation_variants(replay: Replay, data: dict[str, Any]) -> dict[str, Ranker]:
    """name -> ranker (the rows of docs/retrieval.md, "Candidate generation without a model")."""
    table: dict[str, Ranker] = {}
    for rules in (
        ["speakers"],
        ["clauses"],
        ["speakers", "clauses"],
        ["names"],
        ["content words"],
        ["asked for"],
        list(SUBQUERY_RULES),
    ):
        name = " + ".join(rules) if len(rules) < len(SUBQUERY_RULES) else "all rules"
        table[f"sub-queries ({name}): pool only"] = multi_query(replay, data, rules, "pool")
        table[f"sub-queries ({name}): max, 0.7"] = multi_query(replay, data, rules, "max", 0.7)
        table[f"sub-queries ({name}): max, 1.0"] = multi_query(replay, data, rules, "max", 1.0)
        table[f"sub-queries ({name}): sum, 0.3"] = multi_query(replay, data, rules, "sum", 0.3)
        table[f"sub-queries ({name}): reciprocal rank"] = multi_query(replay, data, rules, "rrf", 1.0)
        table[f"sub-queries ({name}): max, 1.0, vector leg only"] = multi_query(replay, data, rules, "max", 1.0, True)
    for share in (0.4, 0.5, 0.6, 0.7):
        table[f"best sentence, turn share {share}"] = best_sentence(replay, share)
    table["best sentence, turn share 0.5, every turn (long ones too)"] = best_sentence(replay, 0.5, None)
    table["best sentence, turn share 0.5, pool unchanged (re-scoring only)"] = best_sentence(
        replay, 0.5, generate=False
    )
    table["best sentence, turn share 0.5, never lower than the turn's"] = best_sentence(replay, 0.5, never_lower=True)
    table["best sentence alone (turn share 0)"] = best_sentence(replay, 0.0)
    plain, mixed = best_sentence(replay, 1.0), best_sentence(replay, 0.5)
    table["best sentence, turn share 0.5, only for questions that gather several facts"] = lambda q: (
        mixed if asks_for_several(q["question"]) else plain
    )(q)
    return table


def deep_misses(replay: Replay, data: dict[str, Any]) -> None:
    """The multi-hop evidence turns outside the default pool that neither signal ranks among the user's
    first 100 turns: what, if anything, links each to its question."""
    best = best_sentence(replay, 0.5)
    list_question = re.compile(
        r"^\s*(what|which)\s+(kinds?\s+of\s+|types?\s+of\s+)?(\w+\s+){0,2}?\w+s\s+(have|has|had|did|do|does|are|were)\b"
        r"|\bhow\s+many\b|\bwhat\s+(does|did)\s+\w+\s+do\b|\bhobbies\b|\bactivities\b",
        re.IGNORECASE,
    )

    def stems(text: str, names: set[str]) -> set[str]:
        return {
            w.lower()[:5]
            for w in _words(text)
            if len(w) > 2
            and w.lower() not in _FUNCTION_WORDS | _QUESTION_WORDS
            and w.lower().removesuffix("'s") not in names
        }

    rows: list[dict[str, Any]] = []
    for q in replay.questions:
        if q["kind"] != "multi-hop":
            continue
        u = replay.users[q["user"]]
        speakers = speakers_of(u["msgs"])
        names = {s.lower() for s in speakers}
        pool = {c.message.message_id for c in replay.pool(q)}
        by_cos = _best(q["cos"], len(q["cos"]), False)
        by_bm25 = _best(q["bm25"], len(q["bm25"]))
        mixed = {**q["cos"], **{i: 0.5 * q["cos"][i] + 0.5 * s for i, s in q["sentence_cos"].items()}}
        by_mixed = _best(mixed, len(mixed), False)
        subs = [data["subqueries"][(q["user"], t)] for t in subqueries(q["question"], speakers, SUBQUERY_RULES)]
        ranked = [c.message.message_id for c in best(q)][:10]
        for e in sorted(q["evidence"]):
            m = u["turn"][e]
            i = m.message_id
            if i in pool or by_cos.index(i) < 100 or (i in by_bm25 and by_bm25.index(i) < 100):
                continue
            near = [u["at"].get((m.session_id, (m.message_index or 0) + d)) for d in (-1, 1)]
            rows.append(
                {
                    "list question": bool(list_question.search(q["question"])),
                    "two-part question": bool(subqueries(q["question"], speakers, ["speakers", "clauses"])),
                    "a content word in common": bool(stems(q["question"], names) & stems(m.content, names)),
                    "a neighbouring turn in the first 100 of a signal": any(
                        j is not None and (by_cos.index(j) < 100 or (j in by_bm25 and by_bm25.index(j) < 100))
                        for j in near
                    ),
                    "in the first 40 of a sub-query's signal": any(
                        i in _best(bm, 40) or i in _best(cos, 40, False) for bm, cos in subs
                    ),
                    "in the first 40 by best-sentence cosine": by_mixed.index(i) < 40,
                    "in the top 10 with best-sentence cosine": i in ranked,
                }
            )
    print(f"deep multi-hop misses: {len(rows)}")
    for key in rows[0] if rows else ():
        print(f"  {key}: {sum(r[key] for r in rows)}")


def line(name: str, result: dict[str, dict[str, float]]) -> str:
    a = result["all"]
    kinds = "".join(f" | {k} {v['share@10']:.3f}" for k, v in sorted(result.items()) if k != "all")
    return f"{name}: all@10 {a['all@10']:.3f}, share@10 {a['share@10']:.3f}, MRR {a['MRR']:.3f}{kinds}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=("locomo", "longchat"), required=True)
    parser.add_argument("--data", type=Path, help="locomo10.json (--set locomo)")
    parser.add_argument("--seed", type=int, default=20, help="the long-chat set's seed (--set longchat)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the store locomo.py / devset_longchat.py filled")
    parser.add_argument("--embedding-cache", type=Path, required=True, help="their --embedding-cache (vectors)")
    parser.add_argument("--pools", type=Path, required=True, help="pickle of the pools: read if present, else written")
    parser.add_argument("--variants", help="names separated by semicolons (names hold commas; default: all)")
    parser.add_argument("--grid", action="store_true", help="the existing weights tuned on multi-hop (LoCoMo)")
    parser.add_argument("--learned", action="store_true", help="a ranker trained on the pools (needs scikit-learn)")
    parser.add_argument(
        "--generation", action="store_true", help="sub-queries and best-sentence cosines (candidate generation)"
    )
    parser.add_argument("--halves", action="store_true", help="also print conversations 0-4 and 5-9 (LoCoMo)")
    parser.add_argument("--deep-misses", action="store_true", help="what links the deep multi-hop misses (LoCoMo)")
    args = parser.parse_args(argv)
    if args.set == "locomo" and args.data is None:
        parser.error("--set locomo needs --data")
    if args.pools.exists():
        with args.pools.open("rb") as f:
            data = pickle.load(f)  # a file this script wrote
    else:
        data = dump(args)
        with args.pools.open("wb") as f:
            pickle.dump(data, f)
    if (args.generation or args.deep_misses) and read_generation(args, data):
        with args.pools.open("wb") as f:
            pickle.dump(data, f)
    with np.load(args.embedding_cache, allow_pickle=False) as z:
        vectors = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))
    replay = Replay(data, "dia_id" if args.set == "locomo" else "turn", vectors)
    users = sorted({q["user"] for q in replay.questions})
    halves = [("conversations 0-4", set(users[:5])), ("conversations 5-9", set(users[5:]))] if args.halves else []

    def report(name: str, **kwargs: Any) -> None:
        print(line(name, replay.run(**kwargs)), flush=True)
        for label, part in halves:
            print(line(f"  {label}", replay.run([q for q in replay.questions if q["user"] in part], **kwargs)))

    table = variants(replay)
    if args.generation:
        sentence_cosines(replay, data)
        table = {"default": {}, **{name: {"ranker": r} for name, r in generation_variants(replay, data).items()}}
    for name in args.variants.split(";") if args.variants else table:
        report(name, **table[name])
    if args.deep_misses:
        if not args.generation:
            sentence_cosines(replay, data)
        deep_misses(replay, data)
    if args.grid:
        for row in grid(replay)[:5]:
            print("grid (multi-hop share@10, lexical, neighbour, session, speaker, candidates):", row, flush=True)
    if args.learned:
        for candidates in (40, 100):
            print(line(f"learned ranker, {candidates} candidates", learned(replay, candidates)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
