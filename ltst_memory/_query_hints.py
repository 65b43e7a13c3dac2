"""Query analysis without a model: what a question's wording says about where its answer is.

Pure functions (no I/O), used by :func:`ltst_memory.recall.recall`:

* **who is asked about** (:func:`question_roles`): a question in the first person ("what is *my*
  dog called?", "how many days before … did *I* …") asks about the user's own statements, so the
  ``human`` turns; a question about what the assistant said ("which hotel *did you recommend*?",
  "according to you") asks about ``ai`` turns. A question in the third person ("what did Caroline
  paint?") names nobody's role, and nothing changes. A request to the assistant ("*can you
  suggest* a dinner I could cook?") is first person, not a question about past answers.
* **whose turns** (:func:`question_speakers`): a question that names a speaker stored with the turns
  ("what did *Caroline* paint?") asks about that person's own statements, not about the turns of
  others that address or mention them; and (:func:`names_a_speaker`) a name in the question matches
  every turn of that speaker (the name is embedded and indexed with them), most of all the short ones.
* **now** (:func:`asks_for_latest`): "current", "now", "latest", "these days"… ask for the newest of
  several statements of the same thing, so newer turns among the candidates come first.
* **when** (:func:`question_periods`): explicit dates in the question ("on October 13, 2023",
  "in July 2023", "in June", "in 2022", "2023-05-08") as time periods; a turn dated inside one (or
  up to :data:`PERIOD_SLACK` after it, since people talk about what they did a little later) is
  what the question is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = [
    "PERIOD_SLACK",
    "Period",
    "asks_for_latest",
    "asks_for_several",
    "names_a_speaker",
    "question_periods",
    "question_roles",
    "question_speakers",
]

#: A turn dated up to this long after a named period still counts as being about it.
PERIOD_SLACK = timedelta(days=7)

_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|our|ours)\b", re.IGNORECASE)
# what the assistant said before: "did you recommend", "you suggested", "you told me", "according to you"
_ASSISTANT_SAID = re.compile(
    r"\b(did|have|had)\s+you\b"
    r"|\byou\s+(said|told|suggested|recommended|mentioned|advised|proposed|gave|explained|wrote|named|listed)\b"
    r"|\baccording\s+to\s+you\b",
    re.IGNORECASE,
)

# "what is my current ...", "what am I reading right now", "the latest ...": among turns that state
# the same thing at different times, the newest holds the answer
_LATEST = re.compile(
    r"\b(now|currently|current|latest|newest|nowadays|these\s+days|at\s+the\s+moment|most\s+recent(ly)?|still)\b",
    re.IGNORECASE,
)

# "how many ... have I", "what activities has John done", "which plants do I have", "in what ways",
# "both", "in common": the answer gathers several facts, usually told in different sessions
_SEVERAL = re.compile(
    r"\bhow\s+many\b(?!\s+(days|weeks|months|years|hours|minutes|seconds)\b)"
    r"|\bin\s+total\b|\baltogether\b"
    r"|\b(what|which)\s+(\w+\s+){0,2}?\w+(?<!s)s\s+(have|has|had|did|do|does|are|were)\b"
    r"|\bwhat\s+are\b|\bin\s+what\s+ways\b|\bboth\b|\bin\s+common\b",
    re.IGNORECASE,
)

_MONTHS = {
    name: n
    for n, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# most specific first; each match removes its text so "July 2023" is not also "2023"
_DATE_PATTERNS = (
    re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<mnum>[01]\d)-(?P<day>[0-3]\d)\b"),
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b(?:in|during|of|since|until|before|after|early|mid|late|last)\s+{_MONTH}(?!\w)", re.IGNORECASE),
    re.compile(rf"\b(?:in|during|of|since|until|before|after)\s+{_YEAR}\b", re.IGNORECASE),
)


@dataclass(frozen=True)
class Period:
    """A span of time a question names: ``[start, end)`` as dates; ``start.year == 1`` means "that
    month (or day) in any year" (a month named without a year)."""

    start: date
    end: date

    def holds(self, when: datetime, slack: timedelta = PERIOD_SLACK) -> bool:
        """Whether ``when`` lies in the period or up to ``slack`` after it."""
        if self.start.year == 1:  # a month of any year
            return any(self.start.month == d.month for d in (when.date(), (when - slack).date()))
        day = when.date()
        return self.start <= day < self.end + slack


def question_roles(query: str) -> tuple[str, ...]:
    """The stored roles a question is about (``("ai",)``, ``("human",)``), or ``()`` when its wording
    names none (third person)."""
    if _ASSISTANT_SAID.search(query):
        return ("ai",)
    if _FIRST_PERSON.search(query):
        return ("human",)
    return ()


def _names(query: str, speaker: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(speaker.strip()) + r"(?!\w)", query, re.IGNORECASE) is not None


def names_a_speaker(query: str, speakers: Iterable[str]) -> bool:
    """Whether the question names one of ``speakers`` (or several, or all of them) as a whole word."""
    return any(_names(query, s) for s in speakers if s and s.strip())


def question_speakers(query: str, speakers: Iterable[str]) -> tuple[str, ...]:
    """The ``speakers`` (names stored as ``metadata["speaker"]``) that the question names, as a whole
    word and in any case ("What did *Caroline* paint?", "*Caroline's* dog"); empty when it names none
    or every one of them (then the name tells no speaker's turns apart)."""
    known = {s for s in speakers if s and s.strip()}
    named = tuple(sorted(s for s in known if _names(query, s)))
    return named if len(named) < len(known) else ()


def asks_for_latest(query: str) -> bool:
    """Whether the question asks for the present value of something that may have changed."""
    return _LATEST.search(query) is not None


def asks_for_several(query: str) -> bool:
    """Whether the question gathers several facts (a count, a list, what two people share)."""
    return _SEVERAL.search(query) is not None


def _month_end(year: int, month: int) -> date:
    return date(year + (month == 12), month % 12 + 1, 1)


def question_periods(query: str) -> tuple[Period, ...]:
    """The explicit dates a question names, as periods (empty when it names none)."""
    text = query
    periods: list[Period] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            groups = m.groupdict()
            try:
                year = int(groups["year"]) if groups.get("year") else None
                if groups.get("mnum"):
                    month: int | None = int(groups["mnum"])
                elif groups.get("month"):
                    month = _MONTHS[groups["month"].lower()]
                else:
                    month = None
                day = int(groups["day"]) if groups.get("day") else None
                if year is not None and month is not None and day is not None:
                    start = date(year, month, day)
                    periods.append(Period(start, start + timedelta(days=1)))
                elif year is not None and month is not None:
                    periods.append(Period(date(year, month, 1), _month_end(year, month)))
                elif month is not None:
                    periods.append(Period(date(1, month, 1), _month_end(1, month)))
                elif year is not None:
                    periods.append(Period(date(year, 1, 1), date(year + 1, 1, 1)))
            except ValueError:  # "February 30, 2023": not a date
                continue
        text = pattern.sub(" ", text)
    return tuple(periods)
