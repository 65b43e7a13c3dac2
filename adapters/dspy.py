"""DSPy adapters: a retriever over conversation memory and a memory wrapper for DSPy programs.

Install with ``pip install -e ".[dspy]"`` (from a checkout). Both take a :class:`~ltst_memory.ConversationStorage`
or an :class:`~ltst_memory.AsyncConversationStorage` (``acall``/``aforward`` use the async one when
given; with only a sync store they run the sync path on the calling thread).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

try:
    import dspy
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the DSPy adapter needs dspy: pip install -e ".[dspy]"') from exc

from ltst_memory.adapters._common import Runner, open_runner

from ltst_memory.errors import AccessDeniedError, ConfigurationError, SessionExistsError
from ltst_memory.models import ConversationMessage, ConversationSession

__all__ = ["LTSTMemory", "LTSTRetriever"]

logger = logging.getLogger(__name__)

#: Owner of sessions created by :class:`LTSTMemory` when no ``user_id`` is given.
DEFAULT_USER_ID = "default"


class _Stores(Runner):
    """The sync and/or async store of an adapter; shared, never copied, by ``dspy.Module.deepcopy``."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Stores:
        return self


def _recall(stores: _Stores, query: str, *, user_id: str | None, session_id: str | None, k: int) -> list:
    """The store's hybrid retrieval path (``recall``)."""
    return stores.call("recall", query, **_scope(user_id, session_id), limit=k)  # type: ignore[no-any-return]


async def _arecall(stores: _Stores, query: str, *, user_id: str | None, session_id: str | None, k: int) -> list:
    return await stores.acall("recall", query, **_scope(user_id, session_id), limit=k)  # type: ignore[no-any-return]


def _scope(user_id: str | None, session_id: str | None) -> dict[str, Any]:
    """``recall``'s scope: the session when one is given, else the user's sessions (unscoped: all)."""
    if session_id is not None:
        return {"user_id": user_id, "session_id": session_id, "scope": "session"}
    return {"user_id": user_id, "scope": "auto" if user_id is None else "user"}


class LTSTRetriever(dspy.Module):
    """Retrieve past conversation turns for a query, like ``dspy.retrievers.Embeddings`` over memory.

    ``forward(query, k=None)`` returns ``dspy.Prediction(passages=[...], scores=[...], messages=[...])``
    (``messages`` are the stored :class:`~ltst_memory.ConversationMessage` objects), best first, from
    ``session_id``'s messages when given, else from all of the user's sessions, by the store's hybrid retrieval
    (``storage.recall``). Use :meth:`as_rm` for ``dspy.configure(rm=...)``/``dspy.Retrieve`` and
    :meth:`as_tool` for ``dspy.ReAct``.

    Scoped to one user: give a store opened with ``storage.for_user(user_id)`` or ``user_id=``; it
    searches only that user's messages (another user's ``session_id`` raises
    :class:`~ltst_memory.AccessDeniedError`). Without a user, construction raises
    :class:`~ltst_memory.ValidationError`; ``unscoped=True`` searches every user's messages.
    """

    def __init__(
        self,
        storage: Any,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        k: int = 5,
        async_storage: Any = None,
        unscoped: bool = False,
    ) -> None:
        super().__init__()
        self._stores = open_runner(
            storage, async_storage, user_id=user_id, unscoped=unscoped, what="LTSTRetriever", runner_class=_Stores
        )
        self.user_id = self._stores.user_id
        self.session_id = session_id
        self.k = k

    @staticmethod
    def _prediction(hits: list[tuple[ConversationMessage, float]]) -> dspy.Prediction:
        return dspy.Prediction(
            passages=[m.content for m, _ in hits],
            scores=[float(s) for _, s in hits],
            messages=[m for m, _ in hits],
        )

    def forward(self, query: str, k: int | None = None) -> dspy.Prediction:
        hits = _recall(self._stores, query, user_id=self.user_id, session_id=self.session_id, k=k or self.k)
        return self._prediction(hits)

    async def aforward(self, query: str, k: int | None = None) -> dspy.Prediction:
        hits = await _arecall(self._stores, query, user_id=self.user_id, session_id=self.session_id, k=k or self.k)
        return self._prediction(hits)

    def as_rm(self) -> Callable[..., list[dspy.dsp.utils.dotdict]]:
        """A retrieval model for ``dspy.configure(rm=...)``: ``rm(query, k)`` returns objects with
        ``long_text`` (and ``score``, ``message``), which is what ``dspy.Retrieve`` reads."""

        def rm(query: str, k: int | None = None, **kwargs: Any) -> list[dspy.dsp.utils.dotdict]:
            prediction = self(query=query, k=k)
            return [
                dspy.dsp.utils.dotdict(long_text=p, score=s, message=m)
                for p, s, m in zip(prediction.passages, prediction.scores, prediction.messages, strict=True)
            ]

        return rm

    def as_tool(self, name: str = "search_memory") -> dspy.Tool:
        """A ``dspy.Tool`` that searches the memory, for ``dspy.ReAct(signature, tools=[...])``."""

        def search_memory(query: str) -> list[str]:
            """Search the conversation memory; returns the most relevant past messages."""
            return list(self(query=query).passages)

        return dspy.Tool(search_memory, name=name, desc="Search long-term conversation memory for a query.")


class LTSTMemory(dspy.Module):
    """Give a DSPy program conversation memory that persists in ltst-memory.

    Before each call it fills the program's ``context_field`` (if the signature has it) with the
    rehydrated memory of the session (``storage.rehydrate(...).to_prompt()``: preferences, context,
    summaries, relevant older turns) and its ``dspy.History`` field with the recent turns, in the
    signature-keyed form DSPy requires (``{input_field: ..., output_field: ...}``). After the call it
    stores the turn (the input as a ``human`` message, the output as an ``ai`` message) in one
    transaction. Fields are detected from the program's first predictor when not given.

    Scoped to one user: give a store opened with ``storage.for_user(user_id)`` or ``user_id=``; the
    session is created for that user, and another user's session raises
    :class:`~ltst_memory.AccessDeniedError`. Without a user, construction raises
    :class:`~ltst_memory.ValidationError`; ``unscoped=True`` adopts any session (a new one is owned by
    ``"default"``).
    """

    def __init__(
        self,
        program: dspy.Module,
        storage: Any,
        *,
        session_id: str,
        user_id: str | None = None,
        input_field: str | None = None,
        output_field: str | None = None,
        context_field: str | None = "context",
        history_field: str | None = None,
        token_budget: int = 1500,
        history_turns: int = 6,
        async_storage: Any = None,
        unscoped: bool = False,
    ) -> None:
        super().__init__()
        self.program = program
        self._stores = open_runner(
            storage, async_storage, user_id=user_id, unscoped=unscoped, what="LTSTMemory", runner_class=_Stores
        )
        self.session_id = session_id
        self.user_id = self._stores.user_id
        self.token_budget = token_budget
        self.history_turns = history_turns
        inputs, outputs, history = _signature_fields(program)
        self.history_field = history_field or history
        self.context_field = context_field if context_field in inputs else None
        special = {self.history_field, self.context_field}
        self.input_field = input_field or next((f for f in inputs if f not in special), None)
        self.output_field = output_field or next((f for f in reversed(outputs) if f != "reasoning"), None)
        if self.input_field is None or self.output_field is None:
            raise ConfigurationError("cannot tell the program's input/output fields; pass input_field=/output_field=")
        self._ready = False
        if self._stores.sync is not None:
            self._check_owner(self._stores.call("get_session", session_id))
            self._ready = True

    # ------------------------------------------------------------------ session

    def _check_owner(self, session: Any) -> None:
        """Create the session when ``session`` is None; refuse a session of another user."""
        if session is None:
            owner = self.user_id or DEFAULT_USER_ID
            with contextlib.suppress(SessionExistsError):  # created concurrently
                self._stores.call("create_session", ConversationSession(self.session_id, owner))
        elif self.user_id is not None and session.user_id != self.user_id:
            raise AccessDeniedError(f"session {self.session_id!r} belongs to another user")

    async def _aensure(self) -> None:
        if self._ready:
            return
        session = await self._stores.acall("get_session", self.session_id)
        if session is None:
            owner = self.user_id or DEFAULT_USER_ID
            with contextlib.suppress(SessionExistsError):
                await self._stores.acall("create_session", ConversationSession(self.session_id, owner))
        elif self.user_id is not None and session.user_id != self.user_id:
            raise AccessDeniedError(f"session {self.session_id!r} belongs to another user")
        self._ready = True

    # ------------------------------------------------------------------ memory in and out

    def _history(self, recent: list[ConversationMessage]) -> dspy.History:
        """Recent (human, ai) pairs as signature-keyed dicts."""
        turns: list[dict[str, str]] = []
        pending: str | None = None
        for m in recent:
            if m.role == "human":
                pending = m.content
            elif m.role == "ai" and pending is not None:
                turns.append({self.input_field: pending, self.output_field: m.content})  # type: ignore[dict-item]
                pending = None
        return dspy.History(messages=turns[-self.history_turns :] if self.history_turns else [])

    def _rehydrate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"token_budget": self.token_budget}
        if self.history_field:  # recent turns go to the History field, not twice into the prompt
            kwargs.update(recent_turns=0, min_recent_turns=0)
        return kwargs

    def _context(self, query: str) -> str:
        """The session's rehydrated memory (``rehydrate``) as prompt text."""
        return str(self._stores.call("rehydrate", self.session_id, query, **self._rehydrate_kwargs()).to_prompt())

    async def _acontext(self, query: str) -> str:
        result = await self._stores.acall("rehydrate", self.session_id, query, **self._rehydrate_kwargs())
        return str(result.to_prompt())

    def _turn(self, query: str, prediction: Any) -> list[ConversationMessage]:
        answer = str(getattr(prediction, self.output_field))  # type: ignore[arg-type]
        meta = {"dspy": {"field": self.input_field}}
        return [
            ConversationMessage(session_id=self.session_id, role="human", content=query, metadata=meta),
            ConversationMessage(
                session_id=self.session_id,
                role="ai",
                content=answer if answer.strip() else "[empty answer]",
                metadata={"dspy": {"field": self.output_field}},
            ),
        ]

    def _inputs(self, kwargs: dict[str, Any]) -> str:
        if self.input_field not in kwargs:
            raise TypeError(f"missing input field {self.input_field!r}")
        return str(kwargs[self.input_field])

    def forward(self, **kwargs: Any) -> dspy.Prediction:
        """Call the program with memory filled in, store the turn, return the program's prediction."""
        query = self._inputs(kwargs)
        if self.history_field and self.history_field not in kwargs:
            recent = self._stores.call("get_recent_messages", self.session_id, limit=self.history_turns * 2 + 1)
            kwargs[self.history_field] = self._history(recent)
        if self.context_field and self.context_field not in kwargs:
            kwargs[self.context_field] = self._context(query)
        prediction = self.program(**kwargs)
        self._stores.call("store_messages", self._turn(query, prediction))
        return prediction

    async def aforward(self, **kwargs: Any) -> dspy.Prediction:
        await self._aensure()
        query = self._inputs(kwargs)
        if self.history_field and self.history_field not in kwargs:
            limit = self.history_turns * 2 + 1
            recent = await self._stores.acall("get_recent_messages", self.session_id, limit=limit)
            kwargs[self.history_field] = self._history(recent)
        if self.context_field and self.context_field not in kwargs:
            kwargs[self.context_field] = await self._acontext(query)
        prediction = await self.program.acall(**kwargs)
        await self._stores.acall("store_messages", self._turn(query, prediction))
        return prediction


def _signature_fields(program: Any) -> tuple[list[str], list[str], str | None]:
    """(input fields, output fields, the dspy.History input field) of the program's first predictor."""
    signature = getattr(program, "signature", None)
    if signature is None:
        predictors = program.predictors() if hasattr(program, "predictors") else []
        signature = predictors[0].signature if predictors else None
    if signature is None:
        return [], [], None
    inputs = list(signature.input_fields)
    outputs = list(signature.output_fields)
    history = next((n for n, f in signature.input_fields.items() if f.annotation is dspy.History), None)
    return inputs, outputs, history
