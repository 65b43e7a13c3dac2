"""recall's lexical leg: the BM25 scores of its two statements (the lexical leg's best matches, then every
candidate of the vector leg's pool) against Okapi BM25 computed here in Python from the stored
tsvectors, on both plans (a small scope read row by row, a large one through the full-text index),
with repeated words (tf > 1) and speaker names (weight A)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from pgvector.psycopg import register_vector

from ltst_memory import ConversationMessage, ConversationSession
from ltst_memory import _recall_queries as rq
from ltst_memory.recall import BM25_B, BM25_K1

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)

TURNS = [
    ("Caroline", "I paint every morning: paint, paint and paint again by the lake."),
    ("Melanie", "The lake was frozen, so we skated on the lake."),
    ("Caroline", "Sunrise over the lake is what I paint most."),
    ("Melanie", "My sister bought a painting of a sunrise."),
    ("Caroline", "Caroline here: the gallery called about my sunrise series."),
    ("Melanie", "We went hiking and saw nothing but fog."),
    ("Caroline", "Painting the lake at sunrise, sunrise after sunrise."),
    ("Melanie", "Budget meeting moved to Friday."),
]
QUESTION = "Did Caroline paint the lake at sunrise?"

_LEXEME = re.compile(r"'((?:[^']|'')*)'(?::([0-9A-D,]+))?")


def _term_counts(tsv: str) -> dict[str, int]:
    """Each lexeme of a tsvector (as text) and its number of positions."""
    return {m.group(1).replace("''", "'"): len((m.group(2) or "x").split(",")) for m in _LEXEME.finditer(tsv)}


def _okapi(docs: dict[int, dict[str, int]], query_terms: set[str]) -> dict[int, float]:
    """Okapi BM25 of each message (id: term counts) for ``query_terms``, as the docs define it:
    idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf = positions of the lexeme, length = distinct lexemes."""
    n = len(docs)
    avgdl = max(sum(len(d) for d in docs.values()) / n, 1.0)
    df = {t: sum(t in d for d in docs.values()) for t in query_terms}
    scores = {}
    for message_id, d in docs.items():
        matched = [t for t in query_terms if t in d]
        if matched:
            scores[message_id] = sum(
                math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                * d[t]
                * (BM25_K1 + 1)
                / (d[t] + BM25_K1 * (1 - BM25_B + BM25_B * len(d) / avgdl))
                for t in matched
            )
    return scores


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "full-text index"])
def test_candidate_bm25_scores_are_okapi_bm25_of_the_stored_words(store, database_dsn, scan):
    for user in ("u1", "u2"):
        store.create_session(ConversationSession(session_id=f"{user}-a", user_id=user))
        store.create_session(ConversationSession(session_id=f"{user}-b", user_id=user))
    for user, turns in (("u1", TURNS), ("u2", TURNS[::3])):  # another user's words count for nothing
        for i, (speaker, text) in enumerate(turns):
            store.store_message(
                ConversationMessage(
                    session_id=f"{user}-{'ab'[i % 2]}",
                    role="human" if i % 2 == 0 else "ai",
                    content=text,
                    metadata={"speaker": speaker},
                    timestamp=T0 + timedelta(minutes=i),
                )
            )
    candidates = 3
    with psycopg.connect(database_dsn) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT message_id, search_tsv::text FROM conversation_messages WHERE user_id = 'u1'"
        ).fetchall()
        terms = {r[0] for r in conn.execute("SELECT unnest(tsvector_to_array(to_tsvector('english', %s)))", [QUESTION])}
        docs = {message_id: _term_counts(tsv) for message_id, tsv in rows}
        assert any(d.get(t, 0) > 1 for d in docs.values() for t in terms), "a question word repeated in a message"
        expected = _okapi(docs, terms)
        params = {
            "query": QUESTION,
            "k1": BM25_K1,
            "b": BM25_B,
            "candidates": candidates,
            "embedding": store.embedder.embed(["an unrelated sentence about tax forms"])[0],
            "user_id": "u1",
            "stats_user": "u1",
        }
        lexical = rq.lexical_sql(scope=rq.SCOPE_USER, filters="", all_users=False, scan=scan)
        top = conn.execute(lexical, params).fetchall()  # the lexical leg, run before the vector is known
        known = rq.lexical_pool_sql(scope=rq.SCOPE_USER, filters="", all_users=False, with_neighbors=False, scan=scan)
        first = {r[0]: r[1] for r in conn.execute(f"SELECT message_id, bm25 FROM ({known}) AS c", params)}
        params["known_ids"] = list(first)
        sql = rq.vector_sql(
            scope=rq.SCOPE_USER, filters="", all_users=False, with_embedding=False, with_neighbors=False, scan=scan
        )
        second = conn.execute(f"SELECT message_id, bm25 FROM ({sql}) AS c", params).fetchall()
    best = sorted(expected, key=lambda m: (-expected[m], m))[:candidates]
    assert [message_id for message_id, _ in top] == best, "the lexical leg keeps the best BM25 matches, in order"
    assert len(expected) > candidates  # so "the best" is a choice
    for message_id, score in top:
        assert score == pytest.approx(expected[message_id], rel=1e-9, abs=1e-12), message_id
    assert set(first) == set(best), "the first statement's candidates are the lexical leg's rows"
    assert {m for m, score in second if score is None} == set(best), "the second one gives their cosine only"
    got = {**first, **{m: score for m, score in second if score is not None}}
    assert set(got) - set(best), "and the nearest rows"
    for message_id, score in got.items():  # every candidate's BM25, the nearest rows' too (0: no word matched)
        assert score == pytest.approx(expected.get(message_id, 0.0), rel=1e-9, abs=1e-12), message_id
