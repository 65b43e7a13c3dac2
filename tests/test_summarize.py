"""Session compaction: extractive and LLM summaries written where rehydration reads them."""

from __future__ import annotations

import pytest

from ltst_memory import ConversationMessage, ConversationSession, SessionNotFoundError, ValidationError
from ltst_memory.summarize import extractive_summary
from ltst_memory.tokens import estimate_tokens, resolve_counter

TURNS = [
    ("Caroline", "Hey Mel! Good to see you!"),
    ("Melanie", "Hi! Thanks, you too."),
    ("Caroline", "I adopted a beagle named Biscuit from the Riverside shelter in April."),
    ("Melanie", "Biscuit is such a cute name for a beagle! Is the shelter far from you?"),
    ("Caroline", "The Riverside shelter is close, and Biscuit already knows three tricks."),
    ("Melanie", "Ok cool."),
    ("Caroline", "Bye!"),
]


def _load(store) -> None:
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.store_messages(
        [
            ConversationMessage(session_id="s", role="human", content=text, metadata={"speaker": speaker})
            for speaker, text in TURNS
        ]
    )


def test_extractive_summary_is_written_to_both_places_and_used_by_rehydrate(store):
    _load(store)
    summary = store.summarize_session("s", max_sentences=2)
    assert "Biscuit" in summary and "Riverside" in summary
    assert "Bye" not in summary and "Ok cool" not in summary
    assert summary.startswith("Caroline: ")
    assert store.get_session("s").context_summary == summary
    assert store.get_session_summary("s").summary == summary
    result = store.rehydrate("s", "beagle", token_budget=1_000)
    assert [item.text for item in result.summary] == [summary]


def test_llm_summarizer_gets_the_transcript(store):
    _load(store)
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "  Caroline adopted Biscuit.  "

    assert store.summarize_session("s", summarizer=llm, max_words=50) == "Caroline adopted Biscuit."
    assert len(prompts) == 1 and "at most 50 words" in prompts[0]
    assert "Caroline: I adopted a beagle named Biscuit" in prompts[0]
    assert store.get_session_summary("s").summary == "Caroline adopted Biscuit."


def test_given_summary_empty_session_and_errors(store):
    _load(store)
    assert store.summarize_session("s", summary="written by hand") == "written by hand"
    assert store.get_session("s").context_summary == "written by hand"
    store.create_session(ConversationSession(session_id="empty", user_id="u"))
    assert store.summarize_session("empty") == ""
    with pytest.raises(SessionNotFoundError):
        store.summarize_session("missing")
    with pytest.raises(ValidationError):
        store.summarize_session("s", summarizer="not callable")
    with pytest.raises(ValidationError):
        store.summarize_session("s", summarizer=lambda prompt: 42)
    assert store.get_session("s").context_summary == "written by hand"  # failed calls wrote nothing


def test_extractive_summary_pure():
    messages = [ConversationMessage(session_id="s", role="human", content=t) for _, t in TURNS]
    assert extractive_summary([]) == ""
    text = extractive_summary(messages, max_sentences=1, max_chars=200)
    assert "Biscuit" in text and len(text) <= 200


def test_token_estimator():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("2023") == 2
    assert estimate_tokens("internationalization") == 4
    assert resolve_counter(None)("a b c") == 3
    assert resolve_counter(len)("abc") == 3
    with pytest.raises(ValidationError):
        resolve_counter(3)  # type: ignore[arg-type]
