"""Metrics and ablation variants shared by ``benchmarks/locomo.py --compare`` and
``benchmarks/devset_longchat.py`` (issue 20: every ablation on both data sets, measured the same way).

A question is ``{"user", "question", "evidence": {turn ids}, "sessions": {session ids}, "kind"}``;
``turn_of(message)`` and ``session_of(message)`` map a recalled message to those ids. Everything is
measured through ``storage.recall(question, user_id=..., limit=50, **options)``, as a user calls it.

Metrics per question, averaged: ``turn_all@10`` (every evidence turn in the top 10), ``turn_any@10``
(at least one), ``share@10`` (share of evidence turns in the top 10: LoCoMo's usual R@10),
``session_all@5`` (every evidence session among the first 5 distinct sessions of the ranking) and
``MRR`` (first evidence turn, 0 beyond 50).

Variants that are not options of ``recall`` (role-aware ranking, a short-turn boost, adaptive fusion
weights) are measured by replacing ``ltst_memory.recall.fuse`` for the duration of one configuration
(``VARIANTS``): the call path stays ``storage.recall``.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ltst_memory import recall as recall_module

LIMIT = 50
DEFAULT = "default (round-3 default + short turns 0.2 when the question names a speaker)"


def _role_prior(weight: float) -> Callable[..., None]:
    """After fusion, a user's own turn gets ``+weight`` × its score (role-aware ranking)."""

    def post(pool: Sequence[Any]) -> None:
        for c in pool:
            if c.message.role in ("user", "human"):
                c.score *= 1.0 + weight

    return post


def _length_prior(weight: float, words: int = 60) -> Callable[..., None]:
    """Short turns (statements) up, long turns down: ``score × (1 + weight)`` when under ``words``."""

    def post(pool: Sequence[Any]) -> None:
        for c in pool:
            if len(c.message.content.split()) <= words:
                c.score *= 1.0 + weight

    return post


def _session_cap(per_session: float, top: int = 10) -> Callable[..., None]:
    """A session-diversity constraint: the first ``top`` places take at most ``per_session`` turns of
    one session (the best of the others move up); the rest keep their order after them."""

    def post(pool: Sequence[Any]) -> None:
        ranked = sorted(pool, key=lambda c: (-c.score, c.message.message_id or 0))
        first: list[Any] = []
        rest: list[Any] = []
        seen: dict[str, int] = defaultdict(int)
        for c in ranked:
            if len(first) < top and seen[c.message.session_id] < per_session:
                first.append(c)
                seen[c.message.session_id] += 1
            else:
                rest.append(c)
        for place, c in enumerate(first + rest):
            c.score = float(len(ranked) - place)

    return post


def _session_mean(weight: float, best: int = 2) -> Callable[..., None]:
    """Session-first from the mean of a session's ``best`` turn scores instead of its best one (run
    with ``session_weight=0``): every turn adds ``weight ×`` that mean."""

    def post(pool: Sequence[Any]) -> None:
        scores: dict[str, list[float]] = defaultdict(list)
        for c in pool:
            scores[c.message.session_id].append(c.score)
        mean = {s: sum(sorted(v, reverse=True)[:best]) / best for s, v in scores.items()}
        for c in pool:
            c.score += weight * mean[c.message.session_id]

    return post


#: name -> post-processing applied after the library's fuse (None = the library as it is)
VARIANTS: dict[str, Callable[[float], Callable[..., None]]] = {
    "role": _role_prior,
    "short": _length_prior,
    "cap": _session_cap,
    "session-mean2": _session_mean,
}

#: every step of issue 20 off (session-first, long turns, the question's role and dates): the
#: ranking as it was before issue 20
OFF: dict[str, Any] = {
    "session_weight": 0.0,
    "long_turn_penalty": 0.0,
    "role_weight": 0.0,
    "date_weight": 0.0,
    "speaker_weight": 0.0,
    "short_turn_penalty": 0.0,
}
#: the default of issue 20's first round: session-first and long turns, no query analysis
ROUND1: dict[str, Any] = {"role_weight": 0.0, "date_weight": 0.0, "speaker_weight": 0.0, "short_turn_penalty": 0.0}
#: the default of issue 20's second round: the question's role and dates, not its speaker
ROUND2: dict[str, Any] = {"speaker_weight": 0.0, "short_turn_penalty": 0.0}
#: the default of issue 20's third round: the question's speaker, short turns not damped
ROUND3: dict[str, Any] = {"short_turn_penalty": 0.0}

#: name -> (recall keyword arguments, variant name or None, variant weight)
CONFIGS: dict[str, tuple[dict[str, Any], str | None, float]] = {
    "BM25 alone": ({"lexical_weight": 1.0, "neighbor_weight": 0.0, **OFF}, None, 0.0),
    "vector alone": ({"lexical_weight": 0.0, "neighbor_weight": 0.0, **OFF}, None, 0.0),
    "score fusion": ({"neighbor_weight": 0.0, **OFF}, None, 0.0),
    "+ neighbours (previous default)": (OFF, None, 0.0),
    "previous default, lexical 0.3": ({"lexical_weight": 0.3, **OFF}, None, 0.0),
    "previous default, lexical 0.7": ({"lexical_weight": 0.7, **OFF}, None, 0.0),
    "previous default, 100 candidates": ({"candidates": 100, **OFF}, None, 0.0),
    "previous default + role-aware (user turns x1.3)": (OFF, "role", 0.3),
    "previous default + short turns x1.3 (<= 60 words)": (OFF, "short", 0.3),
    "previous default + adaptive fusion weight": (OFF, "adaptive", 1.0),
    "previous default + session-first 0.15": ({**OFF, "session_weight": 0.15}, None, 0.0),
    "previous default + session-first 0.3": ({**OFF, "session_weight": 0.3}, None, 0.0),
    "previous default + long turns /1.5": ({**OFF, "long_turn_penalty": 0.5}, None, 0.0),
    "round-1 default (long turns /1.5 + session-first 0.15)": (ROUND1, None, 0.0),
    "round-1 default, long_turn_penalty 0.3": ({**ROUND1, "long_turn_penalty": 0.3}, None, 0.0),
    "round-1 default, long_turn_penalty 1.0": ({**ROUND1, "long_turn_penalty": 1.0}, None, 0.0),
    "round-1 default, session_weight 0.1": ({**ROUND1, "session_weight": 0.1}, None, 0.0),
    "round-1 default, session_weight 0.25": ({**ROUND1, "session_weight": 0.25}, None, 0.0),
    "round-1 default + question's role 0.15": ({**ROUND1, "role_weight": 0.15}, None, 0.0),
    "round-1 default + question's role 0.3": ({**ROUND1, "role_weight": 0.3}, None, 0.0),
    "round-1 default + question's role 0.5": ({**ROUND1, "role_weight": 0.5}, None, 0.0),
    "round-1 default + question's dates 0.15": ({**ROUND1, "date_weight": 0.15}, None, 0.0),
    "round-1 default + question's dates 0.3": ({**ROUND1, "date_weight": 0.3}, None, 0.0),
    "round-1 default + question's dates 0.5": ({**ROUND1, "date_weight": 0.5}, None, 0.0),
    "round-2 default (+ question's role 0.3 and dates 0.3)": (ROUND2, None, 0.0),
    "round-2 default + latest 0.15": ({**ROUND2, "latest_weight": 0.15}, None, 0.0),
    "round-2 default + latest 0.3": ({**ROUND2, "latest_weight": 0.3}, None, 0.0),
    "round-2 default + spread 0.2": ({**ROUND2, "spread_weight": 0.2}, None, 0.0),
    "round-2 default + spread 0.4": ({**ROUND2, "spread_weight": 0.4}, None, 0.0),
    "round-2 default + query expansion (3 words of the top 3 hits)": (ROUND2, "prf", 3.0),
    "round-2 default + passages (BM25 of the best 3 sentences of a long turn)": (ROUND2, "passages", 0.0),
    "round-2 default + passages, long turns undamped": ({**ROUND2, "long_turn_penalty": 0.0}, "passages", 0.0),
    "round-2 default + question's speaker 0.3": ({**ROUND3, "speaker_weight": 0.3}, None, 0.0),
    "round-3 default (round-2 default + question's speaker 0.5)": (ROUND3, None, 0.0),
    "round-2 default + question's speaker 0.7": ({**ROUND3, "speaker_weight": 0.7}, None, 0.0),
    "round-2 default + question's speaker 1.0": ({**ROUND3, "speaker_weight": 1.0}, None, 0.0),
    "round-3 default + neighbours 0.5": ({**ROUND3, "neighbor_weight": 0.5}, None, 0.0),
    "round-3 default + session-first 0.3": ({**ROUND3, "session_weight": 0.3}, None, 0.0),
    "round-3 default + 100 candidates": ({**ROUND3, "candidates": 100}, None, 0.0),
    "round-3 default + lexical 0.4": ({**ROUND3, "lexical_weight": 0.4}, None, 0.0),
    "round-3 default + lexical 0.3": ({**ROUND3, "lexical_weight": 0.3}, None, 0.0),
    "round-3 default + two-hop 0.3 (3 words of the top 3 hits)": (ROUND3, "twohop:0.3", 3.0),
    "round-3 default + two-hop 0.6 (3 words of the top 3 hits)": (ROUND3, "twohop:0.6", 3.0),
    "round-3 default + adaptive fusion weight": (ROUND3, "adaptive", 1.0),
    "round-3 default + adaptive fusion weight 0.5": (ROUND3, "adaptive", 0.5),
    "round-3 default + short turns 0.1": ({"short_turn_penalty": 0.1}, None, 0.0),
    DEFAULT: ({}, None, 0.0),
    "round-3 default + short turns 0.3": ({"short_turn_penalty": 0.3}, None, 0.0),
    "default + at most 2 turns of a session in the top 10": ({}, "cap", 2.0),
    "default + at most 3 turns of a session in the top 10": ({}, "cap", 3.0),
    "default + session-first from the mean of a session's best 2 turns": (
        {"session_weight": 0.0},
        "session-mean2",
        0.15,
    ),
}


def _peakedness(values: Sequence[float]) -> float:
    """How far the best value stands out of the next nine: (best - median of top 10) / (best - lowest)."""
    top = sorted(values, reverse=True)
    if len(top) < 2 or top[0] - top[-1] <= 1e-12:
        return 0.0
    return (top[0] - statistics.median(top[:10])) / (top[0] - top[-1])


def adaptive_lexical_weight(candidates: Sequence[Any], base: float, strength: float) -> float:
    """Fusion weight that follows how peaked each signal is over the pool (clipped to 0.2-0.8)."""
    lexical = _peakedness([c.bm25 for c in candidates])
    semantic = _peakedness([c.cosine for c in candidates])
    return min(0.8, max(0.2, base + strength * (lexical - semantic)))


_STOP_WORDS = """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just let like me more most my
    myself no nor not now of off on once only or other our ours out over own really same she should so some
    such than that the their theirs them then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself"""
_STOP = frozenset(_STOP_WORDS.split())


def expansion_words(query: str, texts: Sequence[str], n: int) -> list[str]:
    """Pseudo-relevance feedback on the query text: the ``n`` words found in most of ``texts`` (the top
    hits of a first recall), then most often, that are neither stop words nor in the query."""
    import re

    asked = {w.lower() for w in re.findall(r"[A-Za-z']+", query)}
    docs: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for text in texts:
        words = [w.lower() for w in re.findall(r"[A-Za-z']{3,}", text)]
        for w in set(words):
            docs[w] += 1
        for w in words:
            counts[w] += 1
    ranked = sorted((w for w in docs if w not in _STOP and w not in asked), key=lambda w: (-docs[w], -counts[w], w))
    return ranked[:n]


# Passages of long turns, scored at query time for the words only (no schema, no vector per passage):
# a turn of more than LONG_TURN_WORDS words takes the BM25 of its best window of three sentences
# (same term statistics) instead of the whole turn's.
_PASSAGE_BM25 = """CASE WHEN b.score IS NOT NULL
            AND array_length(regexp_split_to_array(btrim(m.content), '\\s+'), 1) > {words}
       THEN coalesce((
           SELECT max(ps.score) FROM (
               SELECT sum(i.idf * (f.tf * (%(k1)s + 1.0))
                          / (f.tf + %(k1)s * (1.0 - %(b)s + %(b)s * length(pv.tsv) / tt.avgdl))) AS score
               FROM (
                   SELECT (s.n - 1) / 3 AS p, to_tsvector('english', string_agg(s.sentence, ' ' ORDER BY s.n)) AS tsv
                   FROM regexp_split_to_table(m.content, '(?<=[.!?])\\s+|\\n+') WITH ORDINALITY AS s(sentence, n)
                   GROUP BY (s.n - 1) / 3
               ) AS pv
               CROSS JOIN LATERAL unnest(pv.tsv) AS u(lexeme, positions, weights)
               JOIN idf AS i ON i.term = u.lexeme
               CROSS JOIN totals AS tt
               CROSS JOIN LATERAL (SELECT coalesce(array_length(u.positions, 1), 1)::float8 AS tf) AS f
               GROUP BY pv.p
           ) AS ps), 0.0)
       ELSE coalesce(b.score, 0.0) END AS bm25"""


@contextmanager
def passages() -> Iterator[None]:
    """Score long turns by their best passage (BM25 only), by rewriting recall's candidate SQL."""
    from ltst_memory import _recall_queries as rq

    originals = {name: getattr(rq, name) for name in ("lexical_pool_sql", "vector_sql")}

    def rewritten(original: Any) -> Any:
        def statement(**kwargs: Any) -> str:
            sql = original(**kwargs)
            column = "coalesce(b.score, 0.0) AS bm25"
            assert column in sql
            return str(sql.replace(column, _PASSAGE_BM25.format(words=recall_module.LONG_TURN_WORDS)))

        return statement

    for name, original in originals.items():
        setattr(rq, name, rewritten(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(rq, name, original)


@contextmanager
def variant(name: str | None, weight: float) -> Iterator[None]:
    """Replace ``recall.fuse`` by the library's fuse followed by the variant's post-processing."""
    if name is None:
        yield
        return
    if name == "passages":
        with passages():
            yield
        return
    original = recall_module.fuse
    post = VARIANTS[name](weight) if name != "adaptive" else (lambda pool: None)

    def fuse(candidates: Sequence[Any], **kwargs: Any) -> None:
        if name == "adaptive" and candidates:
            kwargs["lexical_weight"] = adaptive_lexical_weight(candidates, kwargs["lexical_weight"], weight)
        original(candidates, **kwargs)
        post(candidates)

    recall_module.fuse = fuse  # type: ignore[assignment]
    try:
        yield
    finally:
        recall_module.fuse = original  # type: ignore[assignment]


def two_hop(store: Any, question: str, user: str, options: dict[str, Any], n: int, weight: float) -> list[Any]:
    """Two-hop retrieval: recall, take ``n`` salient words of the top 3 hits, recall again with them
    appended, and fuse the two rankings: ``score / best`` of the first plus ``weight ×`` that of the
    second (a turn found only by the second hop gets only the second part)."""
    first = store.recall(question, user_id=user, limit=LIMIT, **options)
    if not first:
        return first
    words = expansion_words(question, [m.content for m, _ in first[:3]], n)
    second = store.recall(question + " " + " ".join(words), user_id=user, limit=LIMIT, **options)
    fused: dict[Any, list[Any]] = {}
    for hits, w in ((first, 1.0), (second, weight)):
        top = max(s for _, s in hits) or 1.0
        for m, s in hits:
            entry = fused.setdefault(m.message_id, [m, 0.0])
            entry[1] += w * s / top
    return [(m, s) for m, s in sorted(fused.values(), key=lambda e: -e[1])][:LIMIT]


def evaluate(
    store: Any,
    questions: Sequence[dict[str, Any]],
    turn_of: Callable[[Any], Any],
    session_of: Callable[[Any], Any],
    options: dict[str, Any],
    expand: int = 0,
    second_hop: float = 0.0,
) -> dict[str, Any]:
    """Metrics of one configuration, overall (``"all"``) and per question ``kind``. ``expand`` > 0:
    recall twice, the second time with ``expand`` words of the first top 3 appended to the question
    (:func:`expansion_words`)."""
    buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies = []
    for q in questions:
        started = time.perf_counter()
        question = q["question"]
        if expand and second_hop:
            hits = two_hop(store, question, q["user"], options, expand, second_hop)
        elif expand:
            first = store.recall(question, user_id=q["user"], limit=3, **options)
            question += " " + " ".join(expansion_words(question, [m.content for m, _ in first], expand))
            hits = store.recall(question, user_id=q["user"], limit=LIMIT, **options)
        else:
            hits = store.recall(question, user_id=q["user"], limit=LIMIT, **options)
        latencies.append(time.perf_counter() - started)
        turns = [turn_of(m) for m, _ in hits]
        sessions: list[Any] = []
        for m, _ in hits:
            s = session_of(m)
            if s not in sessions:
                sessions.append(s)
        evidence = q["evidence"]
        top10 = set(turns[:10])
        first = next((i for i, t in enumerate(turns) if t in evidence), None)
        values = {
            "turn_all@10": float(evidence <= top10),
            "turn_any@10": float(bool(evidence & top10)),
            "share@10": len(evidence & top10) / len(evidence),
            "session_all@5": float(q["sessions"] <= set(sessions[:5])),
            "MRR": 0.0 if first is None else 1.0 / (first + 1),
        }
        for key in ("all", str(q["kind"])):
            for metric, value in values.items():
                buckets[key][metric].append(value)
    result: dict[str, Any] = {
        key: {"n": len(m["MRR"]), **{k: statistics.fmean(v) for k, v in m.items()}} for key, m in buckets.items()
    }
    latencies.sort()
    result["latency_ms"] = {
        "p50": 1000 * latencies[len(latencies) // 2],
        "p95": 1000 * latencies[int(len(latencies) * 0.95)],
    }
    return result


def run_configs(
    store: Any,
    questions: Sequence[dict[str, Any]],
    turn_of: Callable[[Any], Any],
    session_of: Callable[[Any], Any],
    names: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, Any]]:
    """Every configuration of ``CONFIGS`` (or ``names``), one after the other."""
    results = {}
    for name in names or list(CONFIGS):
        options, var, weight = CONFIGS[name]
        if var == "prf":
            results[name] = evaluate(store, questions, turn_of, session_of, options, expand=int(weight))
        elif var is not None and var.startswith("twohop"):
            hop = float(var.split(":")[1])
            results[name] = evaluate(
                store, questions, turn_of, session_of, options, expand=int(weight), second_hop=hop
            )
        else:
            with variant(var, weight):
                results[name] = evaluate(store, questions, turn_of, session_of, options)
        a = results[name]["all"]
        log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in a.items() if k != "n"))
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of the overall metrics of each configuration."""
    lines = [
        "| configuration | turn all@10 | turn any@10 | share@10 | session all@5 | MRR | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        a = r["all"]
        lines.append(
            f"| {name} | {a['turn_all@10']:.3f} | {a['turn_any@10']:.3f} | {a['share@10']:.3f} "
            f"| {a['session_all@5']:.3f} | {a['MRR']:.3f} | {r['latency_ms']['p95']:.0f} |"
        )
    return "\n".join(lines)


def kind_table(result: dict[str, Any]) -> str:
    """A markdown table of one configuration per question kind."""
    lines = [
        "| kind | n | turn all@10 | turn any@10 | share@10 | session all@5 | MRR |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in sorted(result.items()):
        if key in ("all", "latency_ms"):
            continue
        lines.append(
            f"| {key} | {r['n']} | {r['turn_all@10']:.3f} | {r['turn_any@10']:.3f} | {r['share@10']:.3f} "
            f"| {r['session_all@5']:.3f} | {r['MRR']:.3f} |"
        )
    return "\n".join(lines)
