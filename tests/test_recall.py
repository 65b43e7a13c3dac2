"""Hybrid retrieval (storage.recall): quality with the real model, scope rules, filters, options."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest
from _helpers import TERM_STATS_KEPT, USER_STATS_KEPT, speaker_turns

from ltst_memory import (
    AccessDeniedError,
    ConversationMessage,
    ConversationSession,
    SessionNotFoundError,
    SessionRelationship,
    ValidationError,
)
from ltst_memory.recall import Candidate, embedding_text, explain_scores, fuse

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)

OLD_SESSION = [
    ("Caroline", "Hey Mel! Good to see you! How have you been?"),
    ("Melanie", "Swamped with the kids and work. What's up with you?"),
    ("Caroline", "I went to a support group yesterday and it was so powerful."),
    ("Melanie", "That's great. I love painting landscapes in my free time."),
    ("Caroline", "Last spring I adopted a beagle puppy and named him Biscuit."),
    ("Melanie", "How lovely! My kids have been begging for a pet."),
    ("Caroline", "I'm thinking about studying psychology next year."),
    ("Melanie", "Yeah, I painted that lake sunrise last year! It's special to me."),
]
NEW_SESSION = [
    ("Caroline", "Morning! The weather is finally warm."),
    ("Melanie", "Finally! We're heading to the beach this weekend."),
]


def _load(store, user_id: str = "u1", prefix: str = "") -> None:
    store.create_session(ConversationSession(session_id=f"{prefix}old", user_id=user_id))
    store.create_session(ConversationSession(session_id=f"{prefix}new", user_id=user_id))
    store.store_messages(speaker_turns(f"{prefix}old", OLD_SESSION, T0))
    store.store_messages(speaker_turns(f"{prefix}new", NEW_SESSION, T0 + timedelta(days=60)))


# --------------------------------------------------------------------------- quality (real model)


def test_paraphrased_question_finds_a_fact_from_an_old_session(semantic_store):
    _load(semantic_store)
    # No word in common with "Last spring I adopted a beagle puppy and named him Biscuit." but the speaker.
    for question in ("What breed is Caroline's dog?", "Does Caroline own any animals?"):
        hits = semantic_store.recall(question, user_id="u1", limit=3)
        assert hits, "recall returned nothing"
        assert "beagle" in hits[0][0].content, question
        assert hits[0][0].session_id == "old"
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)


def test_question_naming_a_speaker_ranks_that_speakers_turn_first(semantic_store):
    _load(semantic_store)
    hits = semantic_store.recall("What did Melanie paint last year?", user_id="u1", limit=5)
    assert hits[0][0].content.startswith("Yeah, I painted that lake sunrise")
    assert hits[0][0].metadata["speaker"] == "Melanie"


def test_hybrid_beats_either_signal_alone_on_a_mixed_query(semantic_store):
    _load(semantic_store)
    # "Caroline" only matches by words (speaker); "studies" / "university" only by meaning.
    query = "What does Caroline want to study at university?"
    hybrid = semantic_store.recall(query, user_id="u1", limit=1)
    assert "psychology" in hybrid[0][0].content


def test_embedding_text_hook_puts_the_speaker_in_the_embedded_text(semantic_store, minilm):
    _load(semantic_store)
    stored = semantic_store.get_messages("old", limit=1)[0]
    with psycopg.connect(semantic_store.pool.conninfo) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        (vector,) = conn.execute(
            "SELECT embedding FROM conversation_messages WHERE message_id = %s", (stored.message_id,)
        ).fetchone()
    expected = minilm.embed([f"Caroline: {OLD_SESSION[0][1]}"])[0]
    got = np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector)
    assert np.allclose(got, expected, atol=1e-5)
    assert embedding_text("hi", {}) == "hi"
    assert embedding_text("hi", {"speaker": "  Ann "}) == "Ann: hi"
    assert embedding_text("hi", {"speaker": 3}) == "hi"


# --------------------------------------------------------------------------- scope


def test_one_users_memory_never_appears_in_anothers_recall(store):
    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    for query in ("beagle puppy Biscuit", "painting landscapes", "support group"):
        hits = store.recall(query, user_id="u1", limit=50)
        assert hits
        assert {m.user_id for m, _ in hits} == {"u1"}
        assert {m.session_id for m, _ in hits} <= {"a-old", "a-new"}


def test_session_scope_and_access_checks(store):
    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    hits = store.recall("beach weekend", session_id="a-new", limit=20)
    assert hits and {m.session_id for m, _ in hits} == {"a-new"}
    hits = store.recall("beagle", user_id="u1", session_id="a-new", scope="session", limit=20)
    assert all(m.session_id == "a-new" for m, _ in hits)
    with pytest.raises(AccessDeniedError):
        store.recall("beagle", user_id="u1", session_id="b-old")
    with pytest.raises(SessionNotFoundError):
        store.recall("beagle", session_id="nope")
    # scope="user" with only a session: the session owner's sessions
    hits = store.recall("beagle Biscuit", session_id="a-new", scope="user", limit=5)
    assert hits[0][0].session_id == "a-old"


def test_related_scope_covers_linked_sessions_only(store):
    _load(store, "u1")
    store.create_session(ConversationSession(session_id="other", user_id="u1"))
    store.store_messages(speaker_turns("other", [("Caroline", "Biscuit the beagle chewed my shoes")], T0))
    before = {m.session_id for m, _ in store.recall("beagle Biscuit", session_id="new", scope="related", limit=50)}
    assert before == {"new"}
    store.store_relationship(SessionRelationship(source_session_id="new", target_session_id="old"))
    hits = store.recall("beagle Biscuit", session_id="new", scope="related", limit=50)
    assert {m.session_id for m, _ in hits} == {"new", "old"}
    assert hits[0][0].session_id == "old"


def test_unscoped_recall_searches_everything(store):
    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    users = {m.user_id for m, _ in store.recall("beagle puppy Biscuit", limit=10)}
    assert users == {"u1", "u2"}


# --------------------------------------------------------------------------- filters and options


def test_filters_metadata_time_roles_and_exclusions(store):
    _load(store)
    hits = store.recall("painting", user_id="u1", metadata={"speaker": "Caroline"}, limit=20)
    assert hits and all(m.metadata["speaker"] == "Caroline" for m, _ in hits)
    since = T0 + timedelta(days=30)
    hits = store.recall("weekend beach weather", user_id="u1", since=since, limit=20)
    assert hits and all(m.timestamp >= since for m, _ in hits)
    hits = store.recall("weekend beach weather", user_id="u1", until=since, limit=20)
    assert all(m.timestamp < since for m, _ in hits)
    hits = store.recall("painting", user_id="u1", roles=["assistant"], limit=20)
    assert hits and all(m.role == "ai" for m, _ in hits)
    first = store.recall("beagle", user_id="u1", limit=1)[0][0]
    again = store.recall("beagle", user_id="u1", limit=20, exclude_message_ids=[first.message_id])
    assert first.message_id not in {m.message_id for m, _ in again}


def test_expand_neighbors_returns_the_turns_around_a_hit(store):
    _load(store)
    hits = store.recall("beagle Biscuit", user_id="u1", limit=3, expand_neighbors=1, neighbor_weight=0.0)
    indexes = [m.message_index for m, _ in hits]
    assert indexes == [3, 4, 5]
    assert hits[1][1] >= hits[0][1] and hits[1][1] >= hits[2][1]


def test_mmr_removes_near_duplicates(store):
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    dupes = ["I love my beagle Biscuit so much"] * 3 + ["Biscuit the beagle needs a vet visit for his ear"]
    store.store_messages([ConversationMessage(session_id="s", role="human", content=t) for t in dupes])
    plain = store.recall("beagle Biscuit", user_id="u", limit=2)
    assert {m.content for m, _ in plain} == {dupes[0]}
    diverse = store.recall("beagle Biscuit", user_id="u", limit=2, mmr=0.5)
    assert {m.content for m, _ in diverse} == {dupes[0], dupes[3]}


def test_recency_weighting_prefers_newer_turns(store):
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    now = datetime.now(timezone.utc)
    store.store_messages(
        [
            ConversationMessage(
                session_id="s",
                role="human",
                content="my favourite tea is green tea",
                timestamp=now - timedelta(days=400),
            ),
            ConversationMessage(
                session_id="s", role="human", content="my favourite tea is black tea", timestamp=now - timedelta(days=1)
            ),
        ]
    )
    hits = store.recall("favourite tea", user_id="u", limit=2, recency_weight=0.5, recency_half_life_days=30)
    assert "black" in hits[0][0].content


def test_invalid_arguments_raise_validation_errors(store):
    _load(store)
    for kwargs in (
        {"limit": 0},
        {"scope": "everything"},
        {"lexical_weight": 1.5},
        {"mmr": -0.1},
        {"roles": ["robot"]},
        {"since": datetime(2023, 1, 1)},
        {"exclude_message_ids": ["x"]},
        {"session_weight": 1.5},
        {"long_turn_penalty": -0.1},
        {"long_turn_penalty": True},
        {"short_turn_penalty": 1.5},
        {"short_turn_penalty": None},
        {"role_weight": 2},
        {"date_weight": -0.5},
        {"latest_weight": "0.3"},
        {"spread_weight": float("nan")},
    ):
        with pytest.raises(ValidationError):
            store.recall("beagle", user_id="u1", **kwargs)
    with pytest.raises(ValidationError):
        store.recall("   ", user_id="u1")
    with pytest.raises(ValidationError):
        store.recall("beagle", scope="session")


def test_term_statistics_stay_exact_after_writes_and_deletes(store):
    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    store.delete_session("a-old")
    with psycopg.connect(store.pool.conninfo) as conn:
        kept = conn.execute(TERM_STATS_KEPT).fetchall()
        truth = conn.execute(
            "SELECT m.user_id, t.lexeme, count(*) FROM conversation_messages m, unnest(m.search_tsv) t "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        totals = [r[:2] for r in conn.execute(USER_STATS_KEPT).fetchall()]
    assert kept == truth
    assert totals == [("u1", len(NEW_SESSION)), ("u2", len(OLD_SESSION) + len(NEW_SESSION))]


def test_fuse_is_pure_and_uses_neighbours():
    def cand(index: int, bm25: float, cosine: float) -> Candidate:
        return Candidate(
            ConversationMessage(session_id="s", role="human", content="x", message_index=index), bm25, cosine
        )

    pool = [cand(0, 10.0, 0.2), cand(1, 0.0, 0.3), cand(5, 0.0, 0.25)]
    fuse(pool, lexical_weight=0.5, neighbor_weight=0.0)
    assert [round(c.score, 3) for c in pool] == [0.5, 0.5, 0.25]
    fuse(pool, lexical_weight=0.5, neighbor_weight=0.5)
    # adjacent turns 0 and 1 inherit half of each other's score; turn 5 has no neighbour in the pool
    assert [round(c.score, 3) for c in pool] == [0.75, 0.75, 0.25]
    fuse(pool, lexical_weight=1.0, neighbor_weight=0.0)
    assert [round(c.score, 3) for c in pool] == [1.0, 0.0, 0.0]
    no_words = [cand(0, 0.0, 0.1), cand(1, 0.0, 0.3)]
    fuse(no_words, lexical_weight=1.0, neighbor_weight=0.0)  # no word matched: meaning decides
    assert [c.score for c in no_words] == [0.0, 1.0]


def test_fuse_damps_long_turns_and_adds_the_best_score_of_the_session():
    def cand(session: str, index: int, bm25: float, words: int) -> Candidate:
        text = " ".join(["word"] * words)
        return Candidate(
            ConversationMessage(session_id=session, role="user", content=text, message_index=index), bm25, 0.5
        )

    pool = [cand("a", 0, 10.0, 200), cand("b", 0, 8.0, 12), cand("b", 5, 2.0, 12), cand("c", 0, 2.0, 12)]
    fuse(pool, lexical_weight=1.0, neighbor_weight=0.0)
    assert [round(c.score, 3) for c in pool] == [1.0, 0.8, 0.2, 0.2]
    fuse(pool, lexical_weight=1.0, neighbor_weight=0.0, long_turn_penalty=0.5)
    # the 200-word turn is divided by 1.5: the short statement now leads
    assert [round(c.score, 3) for c in pool] == [0.667, 0.8, 0.2, 0.2]
    fuse(pool, lexical_weight=1.0, neighbor_weight=0.0, long_turn_penalty=0.5, session_weight=0.5)
    # each turn adds half of its session's best score: b's weak turn now passes c's equal one
    assert [round(c.score, 3) for c in pool] == [1.0, 1.2, 0.6, 0.3]
    for c in pool:  # explain_scores' parts still add up: the session share counts as inherited
        p = c.parts
        assert p is not None and p.words + p.meaning + p.neighbour + p.recency == pytest.approx(c.score)
    assert pool[0].parts is not None and pool[0].parts.words == pytest.approx(1.0 / 1.5)


_LONG_ANSWER = (
    "Choosing a name is fun, and there are a few things to keep in mind before you decide. "
    "Short names of one or two syllables are easiest for a dog to learn and for you to call across a park. "
    "Avoid anything that sounds like a command such as sit, stay or no, because the animal will confuse them. "
    "Many owners pick something from food, places, mythology or a favourite film character. "
    "Say it in a happy voice and reward the animal with a treat whenever it looks at you. "
    "Within a week or two most puppies respond reliably, older rescues may take a little longer. "
    "Keep training sessions under ten minutes and end each one on a success. "
    "It also helps if everyone in the household uses exactly the same word and tone. "
    "Nicknames are fine later, once the main one is firmly learned. "
    "A tag with your phone number on the collar matters more than any clever choice. "
    "Register the microchip with your current address as soon as possible. "
    "Finally, remember that consistency and patience matter far more than the word itself, "
    "and that a relaxed, well exercised companion learns everything faster."
)


def test_a_short_statement_of_the_user_outranks_long_answers_on_the_topic(semantic_store):
    """A user's one-line fact is found among long assistant answers that repeat the question's words."""
    semantic_store.create_session(ConversationSession(session_id="names", user_id="u"))
    semantic_store.create_session(ConversationSession(session_id="walk", user_id="u"))
    semantic_store.store_messages(
        [
            ConversationMessage(session_id="names", role="user", content="We are getting a puppy soon, any advice?"),
            ConversationMessage(session_id="names", role="assistant", content=_LONG_ANSWER),
            ConversationMessage(session_id="names", role="user", content="And if it ignores me?"),
            ConversationMessage(session_id="names", role="assistant", content="Be patient. " + _LONG_ANSWER),
        ]
    )
    semantic_store.store_messages(
        [
            ConversationMessage(
                session_id="walk", role="user", content="Our new dog is a greyhound, we called her Juniper."
            ),
            ConversationMessage(session_id="walk", role="assistant", content="Congratulations on the adoption!"),
        ]
    )

    def rank_of_statement(**options: float) -> tuple[int, int]:
        """(rank of the Juniper statement, rank of the first long answer) in the ranking."""
        hits = semantic_store.recall("What is the name of my dog?", user_id="u", limit=6, **options)
        texts = [m.content for m, _ in hits]
        statement = next(i for i, t in enumerate(texts) if "Juniper" in t)
        return statement, next(i for i, t in enumerate(texts) if len(t.split()) > 150)

    statement, long_answer = rank_of_statement()
    assert statement < long_answer
    statement, long_answer = rank_of_statement(long_turn_penalty=0.0, session_weight=0.0, role_weight=0.0)
    assert long_answer < statement  # the ranking before long turns were damped buried the fact


async def test_async_recall_matches_sync(astore):
    await astore.create_session(ConversationSession(session_id="s", user_id="u"))
    await astore.store_messages(speaker_turns("s", OLD_SESSION, T0))
    hits = await astore.recall("beagle Biscuit", user_id="u", limit=2)
    assert "beagle" in hits[0][0].content


def test_small_scope_scan_and_index_paths_rank_alike(store, database_dsn):
    """Small scopes are read directly, large ones through GIN + HNSW: the ranking must not depend on it."""
    from ltst_memory import ConversationStorage, Settings

    _load(store, "u1", "a-")
    _load(store, "u2", "b-")
    store.store_relationship(SessionRelationship("a-new", "a-old", "continuation"))
    settings = Settings.from_env(dsn=database_dsn, exact_search_max_rows=0)  # every scope via the indexes
    with ConversationStorage(settings=settings, embedder=store.embedder) as indexed:
        for query, kwargs in (
            ("beagle puppy Biscuit", {"user_id": "u1"}),
            ("painting landscapes lake", {"session_id": "a-old", "scope": "session"}),
            ("weekend beach", {"session_id": "a-new", "scope": "related"}),
            ("support group", {"user_id": "u1", "metadata": {"speaker": "Caroline"}}),
        ):
            scanned = store.recall(query, limit=5, **kwargs)
            via_index = indexed.recall(query, limit=5, **kwargs)
            assert scanned, query
            assert [m.message_id for m, _ in scanned] == [m.message_id for m, _ in via_index], query
            assert [round(s, 6) for _, s in scanned] == [round(s, 6) for _, s in via_index], query


def test_score_parts_add_up_to_the_score():
    """fuse records each candidate's parts (words, meaning, neighbour, recency) summing to its score."""
    now = datetime(2026, 1, 31, tzinfo=timezone.utc)
    pool = [
        Candidate(ConversationMessage("s", "human", "a", message_index=i, timestamp=now - timedelta(days=d)), b, c)
        for i, (b, c, d) in enumerate([(2.0, 0.9, 1), (0.0, 0.5, 10), (1.0, 0.1, 60)])
    ]
    fuse(pool, lexical_weight=0.4, neighbor_weight=0.3, recency_weight=0.2, now=now)
    for c in pool:
        p = c.parts
        assert p is not None and p.words + p.meaning + p.neighbour + p.recency == pytest.approx(c.score)
        assert (p.bm25, p.cosine) == (c.bm25, c.cosine)
    assert pool[1].parts.words == 0 and pool[1].parts.neighbour > 0  # no word match; next to a strong turn
    assert pool[0].parts.words == pytest.approx(0.4 * 0.8)  # the best BM25, scaled by 1 - recency_weight


def test_explain_scores_collects_parts_of_recall_only_inside_the_block(store):
    store.create_session(ConversationSession("s1", "u1"))
    store.store_messages([ConversationMessage("s1", "human", "We eat at the vegetarian place."),
                          ConversationMessage("s1", "ai", "Noted, vegetarian it is.")])  # fmt: skip
    with explain_scores() as parts:
        hits = store.recall("vegetarian place", user_id="u1")
    assert hits and set(parts) == {m.message_id for m, _ in hits}
    for message, score in hits:
        p = parts[message.message_id]
        assert p.words + p.meaning + p.neighbour + p.recency == pytest.approx(score)
    store.recall("vegetarian place", user_id="u1")
    assert set(parts) == {m.message_id for m, _ in hits}  # nothing collected after the block


# --------------------------------------------------------------------------- query analysis


def test_question_wording_names_the_role_the_dates_and_the_present():
    from datetime import date

    from ltst_memory._query_hints import asks_for_latest, asks_for_several, question_periods, question_roles

    assert question_roles("What is my dog called?") == ("human",)
    assert question_roles("How many days before the trip did I book the flights?") == ("human",)
    assert question_roles("Which hotel in Kyoto did you recommend to me?") == ("ai",)
    assert question_roles("How much should I drink on long runs, according to you?") == ("ai",)
    # a request to the assistant is about the user's own situation, not about a past answer
    assert question_roles("Can you suggest a dinner I could cook this weekend?") == ("human",)
    assert question_roles("What did Caroline paint?") == ()
    assert question_roles("Did the US team win?") == ()

    (day,) = question_periods("What painting did Melanie show on October 13, 2023?")
    assert (day.start, day.end) == (date(2023, 10, 13), date(2023, 10, 14))
    assert question_periods("Who did Maria have dinner with on 3 May, 2023?")[0].start == date(2023, 5, 3)
    (month,) = question_periods("What did they paint in July 2023?")
    assert (month.start, month.end) == (date(2023, 7, 1), date(2023, 8, 1))
    (december,) = question_periods("What class did she start in December 2023?")
    assert december.end == date(2024, 1, 1)
    (june,) = question_periods("When did Melanie go camping in June?")
    assert june.holds(datetime(2021, 6, 20, tzinfo=timezone.utc))
    assert june.holds(datetime(2021, 7, 3, tzinfo=timezone.utc))  # told a few days later
    assert not june.holds(datetime(2021, 8, 3, tzinfo=timezone.utc))
    assert question_periods("What may I cook?") == ()
    assert question_periods("Anything on February 30, 2023?") == ()  # not a date
    assert [p.start for p in question_periods("between 2023-05-08 and 2023-06-01")] == [
        date(2023, 5, 8),
        date(2023, 6, 1),
    ]

    assert asks_for_several("How many musical instruments am I playing these days?")
    assert asks_for_several("What activities has Melanie done with her family?")
    assert asks_for_several("What do Jon and Gina both have in common?")
    assert not asks_for_several("How many days before the trip did I book the flights?")
    assert not asks_for_several("What is my dog called?")

    assert asks_for_latest("What is my current 5k personal best?")
    assert asks_for_latest("What book am I reading right now?")
    assert not asks_for_latest("What book did I read in May?")


def _chat(store, session_id: str, when: datetime, turns: list[tuple[str, str]]) -> None:
    store.create_session(ConversationSession(session_id=session_id, user_id="u"))
    store.store_messages(
        [
            ConversationMessage(session_id=session_id, role=role, content=text, timestamp=when + timedelta(minutes=i))
            for i, (role, text) in enumerate(turns)
        ]
    )


def test_a_question_in_the_first_person_prefers_what_the_user_said(store):
    _chat(
        store,
        "s",
        T0,
        [
            ("user", "I ride a gravel bike to work."),
            ("assistant", "Ride a gravel bike to work."),
            ("user", "The weather is lovely today, sunny and warm."),
        ],
    )

    def first(question: str, **options: float) -> str:
        return store.recall(question, user_id="u", limit=4, neighbor_weight=0.0, session_weight=0.0, **options)[0][
            0
        ].role

    assert first("Which bike do I ride to work?") == "human"
    assert first("Which bike did you recommend I ride to work?") == "ai"
    # the question's role decides: without it, both questions get the same first turn
    assert first("Which bike do I ride to work?", role_weight=0.0) == first(
        "Which bike did you recommend I ride to work?", role_weight=0.0
    )


def test_a_question_naming_a_speaker_reads_the_speaker_it_names():
    from ltst_memory._query_hints import question_speakers

    people = ("Caroline", "Melanie")
    assert question_speakers("What did Caroline paint?", people) == ("Caroline",)
    assert question_speakers("Which breed is caroline's dog?", people) == ("Caroline",)
    assert question_speakers("What did Mel paint?", people) == ()  # a whole name, not a part of one
    assert question_speakers("What do Caroline and Melanie both like?", people) == ()  # everyone: no preference
    assert question_speakers("What did they paint?", people) == ()
    assert question_speakers("What did Caroline paint?", ("Caroline",)) == ()  # the only speaker


def test_a_question_naming_a_speaker_prefers_that_speakers_own_turns(store):
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.store_messages(
        speaker_turns(
            "s",
            [
                ("Caroline", "I paint sunrises over the lake."),
                ("Melanie", "Caroline, you paint well, Caroline!"),
                ("Caroline", "The weather was lovely, warm and sunny."),
            ],
            T0,
        )
    )

    def first(question: str, **options: float) -> str:
        hits = store.recall(question, user_id="u", limit=3, neighbor_weight=0.0, session_weight=0.0, **options)
        return hits[0][0].metadata["speaker"]

    assert first("What did Caroline paint?") == "Caroline"
    assert first("What did Caroline paint?", speaker_weight=0.0) == "Melanie"  # the name's words alone
    assert first("What did Melanie paint?") == "Melanie"


SPRING = [
    ("Caroline", "Hey Mel, long time no see!"),
    ("Melanie", "Caroline! So good to hear from you."),
    ("Caroline", "Last weekend I went hiking in the mountains with my cousins and we camped two nights by a lake."),
    ("Melanie", "Sounds amazing, Caroline!"),
    ("Caroline", "Haha, it really was."),
    ("Melanie", "Thanks for sharing, Caroline!"),
]
SUMMER = [
    ("Caroline", "Hi Melanie! Guess what?"),
    ("Melanie", "What is it, Caroline?"),
    ("Caroline", "I signed up for a weekly pottery class at the community centre, and shaping clay calms me down."),
    ("Melanie", "Caroline, that's so cool!"),
    ("Caroline", "Yes, totally!"),
    ("Melanie", "Have fun, Caroline!"),
]


def test_a_question_naming_a_speaker_gets_what_they_told_in_two_sessions_not_their_short_replies(semantic_store):
    semantic_store.create_session(ConversationSession(session_id="spring", user_id="u"))
    semantic_store.create_session(ConversationSession(session_id="summer", user_id="u"))
    semantic_store.store_messages(speaker_turns("spring", SPRING, T0))
    semantic_store.store_messages(speaker_turns("summer", SUMMER, T0 + timedelta(days=40)))
    question = "What activities does Caroline do?"

    def top3(**options: float) -> list[str]:
        return [m.content for m, _ in semantic_store.recall(question, user_id="u", limit=3, **options)]

    found = top3()
    assert any("hiking" in text for text in found) and any("pottery" in text for text in found), found
    # without the step, a two-word reply of hers ("Yes, totally!") comes first and the hike is not in the top 3:
    # her name, embedded and indexed with every turn of hers, is most of what both signals see of a short one
    undamped = top3(short_turn_penalty=0.0)
    assert len(undamped[0].split()) < 5 and not any("hiking" in text for text in undamped), undamped


def test_short_turns_are_damped_only_when_the_question_names_a_speaker(store):
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.store_messages(speaker_turns("s", SPRING, T0))

    def ranking(question: str, **options: float) -> list[tuple[str, float]]:
        hits = store.recall(question, user_id="u", limit=6, neighbor_weight=0.0, session_weight=0.0, **options)
        return [(m.content, s) for m, s in hits]

    for unnamed in ("Where did they camp?", "Who went hiking in the mountains?"):
        assert ranking(unnamed) == ranking(unnamed, short_turn_penalty=0.0)
    named = dict(ranking("Where did Caroline camp?", short_turn_penalty=0.5))
    plain = dict(ranking("Where did Caroline camp?", short_turn_penalty=0.0))
    for text, score in named.items():  # each turn times the square root of its share of 40 words
        assert score == pytest.approx(plain[text] * (min(len(text.split()), 40) / 40) ** 0.5), text


def test_short_turn_penalty_in_fuse_scales_by_the_share_of_short_turn_words():
    from ltst_memory.recall import SHORT_TURN_WORDS

    def candidate(i: int, words: int) -> Candidate:
        text = " ".join(["word"] * words)
        message = ConversationMessage(session_id="s", role="human", content=text, message_index=i, message_id=i)
        return Candidate(message=message, bm25=1.0, cosine=0.5)

    pool = [candidate(0, 4), candidate(1, SHORT_TURN_WORDS // 2), candidate(2, SHORT_TURN_WORDS)]
    fuse(pool, lexical_weight=1.0, neighbor_weight=0.0, short_turn_penalty=0.5)
    assert [c.score for c in pool] == pytest.approx([(4 / SHORT_TURN_WORDS) ** 0.5, 0.5**0.5, 1.0])
    assert sum(p for p in (pool[0].parts.words, pool[0].parts.meaning)) == pytest.approx(pool[0].score)


def test_names_a_speaker_reads_any_stored_name_the_question_names():
    from ltst_memory._query_hints import names_a_speaker

    people = ("Caroline", "Melanie")
    assert names_a_speaker("What did Caroline paint?", people)
    assert names_a_speaker("What do Caroline and Melanie both like?", people)  # everyone counts here
    assert not names_a_speaker("What did Mel paint?", people)
    assert not names_a_speaker("What did they paint?", people)
    assert not names_a_speaker("What did Caroline paint?", ())


def test_a_date_in_the_question_prefers_turns_of_that_time(store):
    _chat(store, "march", datetime(2023, 3, 14, 18, tzinfo=timezone.utc), [("user", "We cooked a mushroom risotto.")])
    _chat(store, "july", datetime(2023, 7, 2, 18, tzinfo=timezone.utc), [("user", "We cooked a mushroom risotto!")])
    for question, session in (
        ("What did they cook in March 2023?", "march"),
        ("What did they cook on July 1, 2023?", "july"),
        ("What did they cook in March?", "march"),
    ):
        hits = store.recall(question, user_id="u", limit=2)
        assert hits[0][0].session_id == session, question
    undated = store.recall("What did they cook?", user_id="u", limit=2, date_weight=0.0)
    dated = store.recall("What did they cook in July 2023?", user_id="u", limit=2, date_weight=0.0)
    assert [m.session_id for m, _ in undated] == [m.session_id for m, _ in dated]  # off: the date changes nothing


def test_asking_for_the_current_value_prefers_the_newest_statement(store):
    _chat(store, "jan", datetime(2024, 1, 10, tzinfo=timezone.utc), [("user", "My commute is 25 minutes by bus.")])
    _chat(store, "jun", datetime(2024, 6, 10, tzinfo=timezone.utc), [("user", "My commute is 50 minutes by train.")])
    _chat(store, "mar", datetime(2024, 3, 10, tzinfo=timezone.utc), [("user", "Rainy day, commute was slow.")])
    current = store.recall("How long is my commute now?", user_id="u", limit=3, latest_weight=0.5)
    assert "50 minutes" in current[0][0].content
    ids = {m.content: s for m, s in store.recall("How long is my commute?", user_id="u", limit=3, latest_weight=0.5)}
    plain = {m.content: s for m, s in store.recall("How long is my commute?", user_id="u", limit=3)}
    assert ids == plain  # without "now"/"current" in the question, the option changes nothing


def test_a_question_gathering_several_facts_can_spread_over_sessions(store):
    _chat(
        store,
        "guitar",
        datetime(2024, 2, 1, tzinfo=timezone.utc),
        [
            ("user", "I started guitar lessons, my first musical instrument."),
            ("user", "The guitar teacher says musical instrument practice needs patience."),
            ("user", "A guitar is a musical instrument with six strings."),
        ],
    )
    _chat(store, "piano", datetime(2024, 3, 1, tzinfo=timezone.utc), [("user", "I practise the piano every morning.")])
    question = "How many musical instruments do I play?"

    def sessions(**options: float) -> list[str]:
        hits = store.recall(question, user_id="u", limit=3, neighbor_weight=0.0, session_weight=0.0, **options)
        return [m.session_id for m, _ in hits]

    assert sessions() == ["guitar", "guitar", "guitar"]
    assert "piano" in sessions(spread_weight=0.5)  # the second and third guitar turns step back
    one = store.recall("Which musical instrument did I start?", user_id="u", limit=3, spread_weight=0.5)
    assert [m.session_id for m, _ in one] == [
        m.session_id for m, _ in store.recall("Which musical instrument did I start?", user_id="u", limit=3)
    ]  # a question about one fact is not spread
