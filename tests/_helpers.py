"""Small builders shared by several test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from ltst_memory import ConversationMessage


def speaker_turns(session_id: str, turns: list[tuple[str, str]], start: datetime) -> list[ConversationMessage]:
    """Alternating human/ai messages with the speaker's name in metadata, one minute apart."""
    return [
        ConversationMessage(
            session_id=session_id,
            role="human" if i % 2 == 0 else "ai",
            content=text,
            metadata={"speaker": speaker},
            timestamp=start + timedelta(minutes=i),
        )
        for i, (speaker, text) in enumerate(turns)
    ]
