"""LangChain adapters: a chat message history and a vector store (with its retriever) on ltst-memory.

Install with ``pip install -e ".[langchain]"`` (from a checkout). Sync and async: see
:mod:`ltst_memory.adapters._common` (async methods use an
:class:`~ltst_memory.AsyncConversationStorage` when given one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
    from pydantic import model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LangChain adapter needs langchain-core: pip install -e ".[langchain]"') from exc

from ltst_memory._uuid7 import uuid7
from ltst_memory.errors import ValidationError
from ltst_memory.models import ConversationMessage, check_id

from . import _langchain_ops as lc_ops
from ._common import Opaque, open_runner
from ._embeddings import as_embeddings

__all__ = ["LTSTChatMessageHistory", "LTSTVectorStore", "LTSTVectorStoreRetriever", "from_stored", "to_stored"]

logger = logging.getLogger(__name__)

#: Owner of sessions created by the chat history when no ``user_id`` is given.
DEFAULT_USER_ID = "default"
#: ``metadata`` key holding the serialized LangChain message.
METADATA_KEY = "langchain_message"

_ROLES = {"human": "human", "ai": "ai", "system": "system", "tool": "tool", "function": "tool"}


# --------------------------------------------------------------------------- messages


def _render(message: BaseMessage) -> str:
    """A non-empty text for the ``content`` column: the text, else the tool calls, else a marker."""
    text = message.text if isinstance(message.text, str) else str(message.content)
    if text.strip():
        return text
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return "\n".join(f"[tool call] {c.get('name')}({c.get('args')})" for c in calls)
    if message.content and not isinstance(message.content, str):  # non-text content blocks (images, ...)
        return str(message.content)
    return f"[empty {message.type} message]"


def to_stored(message: BaseMessage, session_id: str) -> ConversationMessage:
    """A LangChain message as a :class:`~ltst_memory.ConversationMessage`; :func:`from_stored` inverts it.

    The searchable text goes to ``content``; the whole message (type, content blocks, id, name,
    additional_kwargs, response_metadata, tool calls, ...) is kept in ``metadata`` so it comes back exactly.
    """
    if not isinstance(message, BaseMessage):
        raise TypeError(f"expected a LangChain BaseMessage, got {type(message).__name__}")
    role = _ROLES.get(message.type.removesuffix("MessageChunk").lower())  # "AIMessageChunk" -> "ai"
    if role is None:  # ChatMessage: a free-form role
        free = str(getattr(message, "role", "")).lower()
        role = _ROLES.get(free) or {"user": "human", "assistant": "ai"}.get(free, "system")
    return ConversationMessage(
        session_id=session_id,
        role=role,
        content=_render(message),
        message_type=message.type,
        metadata={METADATA_KEY: message_to_dict(message)},
    )


def from_stored(stored: ConversationMessage) -> BaseMessage:
    """The LangChain message for a stored message (also for messages stored without this adapter)."""
    data = (stored.metadata or {}).get(METADATA_KEY)
    if isinstance(data, dict):
        return messages_from_dict([data])[0]
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    extra = {"id": str(stored.message_uuid)} if stored.message_uuid else {}
    if stored.role == "ai":
        return AIMessage(content=stored.content, **extra)
    if stored.role == "system":
        return SystemMessage(content=stored.content, **extra)
    if stored.role == "tool":
        tool_call_id = str((stored.metadata or {}).get("tool_call_id", ""))
        return ToolMessage(content=stored.content, tool_call_id=tool_call_id, **extra)
    return HumanMessage(content=stored.content, **extra)


# --------------------------------------------------------------------------- chat history


class LTSTChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat history kept in one ltst-memory session (any session id string).

    Scoped to one user: give a store opened with ``storage.for_user(user_id)`` or ``user_id=``; the
    session is created for that user when absent, and a session of another user raises
    :class:`~ltst_memory.AccessDeniedError` (nothing is read or cleared). Without a user, construction
    raises :class:`~ltst_memory.ValidationError`; ``unscoped=True`` asks for the administrative view
    (any session, whoever owns it; a new session is owned by ``"default"``). Every message type
    round-trips exactly; ``add_messages`` stores a batch in one transaction with one embedding call, so
    the messages are searchable with ``storage.search_messages``/``recall`` like any other.

    Note: langchain-core 1.6+ marks ``BaseChatMessageHistory`` as deprecated in favour of LangGraph
    persistence (see :mod:`ltst_memory.adapters.langgraph`); it still works and is not removed before 2.0.
    """

    def __init__(
        self,
        storage: Any,
        session_id: str,
        *,
        user_id: str | None = None,
        async_storage: Any = None,
        unscoped: bool = False,
    ) -> None:
        self._runner = open_runner(
            storage, async_storage, user_id=user_id, unscoped=unscoped, what="LTSTChatMessageHistory"
        )
        self.session_id = check_id("session_id", session_id)
        self._requested_user = self._runner.user_id
        self.user_id: str | None = None
        if self._runner.sync is not None:
            self._ensure()

    def _ensure(self) -> None:
        if self.user_id is None:
            args = (self.session_id, self._requested_user, DEFAULT_USER_ID)
            self.user_id = self._runner.run(lc_ops.ensure_session, *args)
            self._runner.invalidate(self.session_id)  # the session may have just been created

    async def _aensure(self) -> None:
        if self.user_id is None:
            args = (self.session_id, self._requested_user, DEFAULT_USER_ID)
            self.user_id = await self._runner.arun(lc_ops.ensure_session, *args)
            self._runner.invalidate(self.session_id)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the session, oldest first."""
        self._ensure()
        return [from_stored(m) for m in self._runner.run(lc_ops.all_messages, self.session_id)]

    async def aget_messages(self) -> list[BaseMessage]:
        await self._aensure()
        return [from_stored(m) for m in await self._runner.arun(lc_ops.all_messages, self.session_id)]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store ``messages`` in order, in one transaction."""
        self._ensure()
        stored = [to_stored(m, self.session_id) for m in messages]
        if stored:
            self._runner.call("store_messages", stored)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self._aensure()
        stored = [to_stored(m, self.session_id) for m in messages]
        if stored:
            await self._runner.acall("store_messages", stored)

    def clear(self) -> None:
        """Delete the session's messages (the session and its context stay)."""
        self._ensure()
        self._runner.run(lc_ops.clear_messages, self.session_id)
        self._runner.invalidate(self.session_id)

    async def aclear(self) -> None:
        await self._aensure()
        await self._runner.arun(lc_ops.clear_messages, self.session_id)
        self._runner.invalidate(self.session_id)


# --------------------------------------------------------------------------- vector store


class LTSTVectorStore(VectorStore):
    """A LangChain vector store in ltst-memory's database (table ``ltst_documents``).

    Scoped to one user: give a store opened with ``storage.for_user(user_id)`` or ``user_id=``; the
    adapter then reads, searches, writes and deletes only that user's documents (two users' collections
    of the same name are apart). Without a user, construction raises
    :class:`~ltst_memory.ValidationError`; ``unscoped=True`` asks for the administrative view (every
    user's documents; its writes are shared rows that no user-scoped adapter sees).

    ``embedding`` is any LangChain ``Embeddings`` (any dimension) or an ltst-memory ``Embedder``; by
    default the store's own embedder. Documents live in ``collection_name``; each collection records
    the dimension of its vectors on first write and refuses others, and searches never cross
    collections. Ids are strings; metadata comes back exactly as given; ``filter=`` takes a dict of
    field values or operators (``$eq $ne $gt $gte $lt $lte $in $nin $like $ilike $between $exists
    $and $or $not``; dotted keys are JSON paths). Search is exact within the collection, so a filter
    never returns fewer than ``k`` documents when ``k`` match. ``distance_strategy`` is ``"cosine"``
    (default), ``"euclidean"`` or ``"max_inner_product"``; ``similarity_search_with_score`` returns the
    distance (lower is closer; pgvector's negative inner product for ``max_inner_product``), like
    langchain-postgres, and ``similarity_search_with_relevance_scores`` LangChain's relevance for that
    strategy (cosine: ``1 - distance / 2``, in [0, 1]). Keyword arguments a method does not support raise
    :class:`~ltst_memory.ValidationError` instead of being ignored.
    """

    def __init__(
        self,
        storage: Any,
        embedding: Any = None,
        *,
        collection_name: str = "langchain",
        user_id: str | None = None,
        unscoped: bool = False,
        distance_strategy: str = "cosine",
        async_storage: Any = None,
    ) -> None:
        self._runner = open_runner(storage, async_storage, user_id=user_id, unscoped=unscoped, what="LTSTVectorStore")
        self._embeddings = as_embeddings(embedding, self._runner.embedder)
        self.collection_name = lc_ops.check_collection(collection_name)
        if distance_strategy not in lc_ops.DISTANCES:
            raise ValidationError(
                f"unknown distance_strategy {distance_strategy!r}; use one of {sorted(lc_ops.DISTANCES)}"
            )
        self.distance_strategy = distance_strategy

    @property
    def user_id(self) -> str | None:
        """The user whose documents this store reads and writes (``None`` when unscoped)."""
        return self._runner.user_id

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    @property
    def _model_name(self) -> str:
        return str(getattr(self._embeddings, "model_name", None) or type(self._embeddings).__name__)

    def _select_relevance_score_fn(self) -> Any:
        """LangChain's relevance in [0, 1] for the distance strategy (cosine: ``1 - distance / 2``)."""
        if self.distance_strategy == "euclidean":
            return self._euclidean_relevance_score_fn
        if self.distance_strategy == "max_inner_product":
            return self._max_inner_product_relevance_score_fn
        return _relevance

    def _scope(self) -> tuple[str | None, str]:
        return self._runner.user_id, self.collection_name

    # ---- writing

    @staticmethod
    def _prepare(
        texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: Sequence[str | None] | None
    ) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        if isinstance(texts, str):
            raise ValidationError("texts must be a list of strings, got one string")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValidationError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValidationError(f"got {len(ids)} ids for {len(texts)} texts")
        if metadatas is not None and not all(isinstance(m, dict) for m in metadatas):
            raise ValidationError("every metadata must be a dict")
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in texts]
        id_list = [str(i) if i is not None else str(uuid7()) for i in (ids or [None] * len(texts))]
        return texts, metas, id_list

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store ``texts`` (replacing documents with the same ids) in one transaction."""
        _no_options("add_texts", kwargs)
        texts, metas, id_list = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = self._embeddings.embed_documents(texts)
        args = (*self._scope(), id_list, texts, Opaque(metas), vectors, self._model_name)
        return self._runner.run(lc_ops.upsert_documents, *args)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        _no_options("aadd_texts", kwargs)
        texts, metas, id_list = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = await self._embeddings.aembed_documents(texts)
        args = (*self._scope(), id_list, texts, Opaque(metas), vectors, self._model_name)
        return await self._runner.arun(lc_ops.upsert_documents, *args)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id for d in documents]
        _no_options("add_documents", kwargs)
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None) or [d.id for d in documents]
        _no_options("aadd_documents", kwargs)
        return await self.aadd_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids)

    def _delete_plan(self, ids: list[str] | None, kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]] | None:
        filter = kwargs.pop("filter", None)
        _no_options("delete", kwargs)
        if ids is not None and filter is not None:
            raise ValidationError("delete() takes ids or filter=, not both")
        if filter is not None:
            return lc_ops.delete_documents_where, (*self._scope(), Opaque(filter))
        if ids is None:
            return None
        if isinstance(ids, str):
            raise ValidationError("ids must be a list of ids, got one string")
        return lc_ops.delete_documents, (*self._scope(), list(ids))

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (unknown ids are ignored) or, with ``filter=``, the documents whose
        metadata matches the filter. Returns ``True`` when the deletion ran (whether or not a document
        matched). ``delete()`` with neither deletes nothing and returns ``False``; see
        :meth:`delete_collection`. Other keyword arguments raise :class:`~ltst_memory.ValidationError`."""
        plan = self._delete_plan(ids, kwargs)
        if plan is None:
            return False
        self._runner.run(plan[0], *plan[1])
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        plan = self._delete_plan(ids, kwargs)
        if plan is None:
            return False
        await self._runner.arun(plan[0], *plan[1])
        return True

    def delete_collection(self) -> None:
        """Delete this collection and all its documents (of this store's user)."""
        self._runner.run(lc_ops.delete_collection, *self._scope())

    async def adelete_collection(self) -> None:
        await self._runner.arun(lc_ops.delete_collection, *self._scope())

    # ---- reading

    @staticmethod
    def _document(row: dict[str, Any]) -> Document:
        return Document(id=row["document_id"], page_content=row["content"], metadata=row["metadata"])

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        rows = self._runner.run(lc_ops.get_documents, *self._scope(), list(ids))
        return [self._document(r) for r in rows]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        rows = await self._runner.arun(lc_ops.get_documents, *self._scope(), list(ids))
        return [self._document(r) for r in rows]

    def _search_args(
        self, embedding: Any, k: int, filter: Any, kwargs: dict[str, Any], *, with_vectors: bool = False
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        _no_options("similarity search", kwargs)
        args = (*self._scope(), embedding, k, Opaque(filter))
        return args, {"distance": self.distance_strategy, "with_vectors": with_vectors}

    def similarity_search_by_vector_with_score(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Nearest documents to ``embedding`` with their distance (see the class docstring)."""
        args, options = self._search_args(embedding, k, filter, kwargs)
        rows = self._runner.run(lc_ops.search_documents, *args, **options)
        return [(self._document(r), float(r["distance"])) for r in rows]

    async def asimilarity_search_by_vector_with_score(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        args, options = self._search_args(embedding, k, filter, kwargs)
        rows = await self._runner.arun(lc_ops.search_documents, *args, **options)
        return [(self._document(r), float(r["distance"])) for r in rows]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        _no_options("similarity_search_with_score", kwargs)
        return self.similarity_search_by_vector_with_score(self._embeddings.embed_query(query), k, filter)

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        _no_options("asimilarity_search_with_score", kwargs)
        vector = await self._embeddings.aembed_query(query)
        return await self.asimilarity_search_by_vector_with_score(vector, k, filter)

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        _no_options("similarity_search", kwargs)
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        _no_options("asimilarity_search", kwargs)
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        _no_options("similarity_search_by_vector", kwargs)
        return [doc for doc, _ in self.similarity_search_by_vector_with_score(embedding, k, filter)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        _no_options("asimilarity_search_by_vector", kwargs)
        return [doc for doc, _ in await self.asimilarity_search_by_vector_with_score(embedding, k, filter)]

    @staticmethod
    def _mmr(query: Sequence[float], rows: list[dict[str, Any]], k: int, lambda_mult: float) -> list[Document]:
        import numpy as np

        from ltst_memory._queries import to_vector

        if not rows:
            return []
        vectors = np.array([to_vector(r["embedding"]) for r in rows], dtype=np.float32)
        picked = maximal_marginal_relevance(np.asarray(query, dtype=np.float32), vectors, lambda_mult, k)
        return [LTSTVectorStore._document(rows[i]) for i in picked]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k`` nearest."""
        args, options = self._search_args(embedding, _mmr_fetch(k, fetch_k), filter, kwargs, with_vectors=True)
        return self._mmr(embedding, self._runner.run(lc_ops.search_documents, *args, **options), k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        args, options = self._search_args(embedding, _mmr_fetch(k, fetch_k), filter, kwargs, with_vectors=True)
        rows = await self._runner.arun(lc_ops.search_documents, *args, **options)
        return self._mmr(embedding, rows, k, lambda_mult)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _no_options("max_marginal_relevance_search", kwargs)
        vector = self._embeddings.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _no_options("amax_marginal_relevance_search", kwargs)
        vector = await self._embeddings.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    # ---- construction

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        storage: Any = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> LTSTVectorStore:
        """Create a store on ``storage`` (required keyword; with ``user_id=`` or ``unscoped=True`` as for
        the constructor) and add ``texts``."""
        if storage is None:
            raise ValidationError("LTSTVectorStore.from_texts needs storage=ConversationStorage(...)")
        store = cls(storage, embedding, collection_name=collection_name, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        storage: Any = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> LTSTVectorStore:
        if storage is None:
            raise ValidationError("LTSTVectorStore.afrom_texts needs storage=...")
        store = cls(storage, embedding, collection_name=collection_name, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    def as_retriever(self, **kwargs: Any) -> LTSTVectorStoreRetriever:
        """A retriever on this store (same user); ``k=`` may be given directly (as well as in ``search_kwargs``)."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return LTSTVectorStoreRetriever(vectorstore=self, tags=tags, **kwargs)


def _no_options(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments a method does not support (rather than ignore them)."""
    if kwargs:
        raise ValidationError(f"LTSTVectorStore.{method} does not support {', '.join(sorted(map(str, kwargs)))}")


def _mmr_fetch(k: Any, fetch_k: Any) -> int:
    for name, value in (("k", k), ("fetch_k", fetch_k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{name} must be an integer, got {value!r}")
    return max(fetch_k, k)


def _relevance(distance: float) -> float:
    return 1.0 - distance / 2.0


class LTSTVectorStoreRetriever(VectorStoreRetriever):
    """``VectorStoreRetriever`` that also takes the number of results as ``k=`` (constructor or ``invoke``)."""

    k: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _k_into_search_kwargs(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("k") is not None:
            values = dict(values)
            values["search_kwargs"] = {**values.get("search_kwargs", {}), "k": values["k"]}
        return values
