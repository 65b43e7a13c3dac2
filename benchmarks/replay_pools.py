"""Replay recall's ranking over stored candidate pools: variants that are not options of ``recall``.

    python benchmarks/replay_pools.py --set locomo --data /path/to/locomo10.json --data-dir DIR \\
        --embedding-cache E.npz --pools pools.pkl [--variants a,b] [--grid] [--learned]
    python benchmarks/replay_pools.py --set longchat --data-dir DIR2 --embedding-cache E2.npz --pools pools2.pkl

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
from collections.abc import Callable, Iterable
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

    def run(self, questions: Iterable[dict[str, Any]] | None = None, **kwargs: Any) -> dict[str, dict[str, float]]:
        buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for q in questions if questions is not None else self.questions:
            for key, value in self.metrics(q, self.rank(q, **kwargs)).items():
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
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    parser.add_argument("--grid", action="store_true", help="the existing weights tuned on multi-hop (LoCoMo)")
    parser.add_argument("--learned", action="store_true", help="a ranker trained on the pools (needs scikit-learn)")
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
    with np.load(args.embedding_cache, allow_pickle=False) as z:
        vectors = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))
    replay = Replay(data, "dia_id" if args.set == "locomo" else "turn", vectors)
    table = variants(replay)
    for name in args.variants.split(",") if args.variants else table:
        print(line(name, replay.run(**table[name])), flush=True)
    if args.grid:
        for row in grid(replay)[:5]:
            print("grid (multi-hop share@10, lexical, neighbour, session, speaker, candidates):", row, flush=True)
    if args.learned:
        for candidates in (40, 100):
            print(line(f"learned ranker, {candidates} candidates", learned(replay, candidates)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
