"""LangChain ``Embeddings`` over an ltst-memory :class:`~ltst_memory.Embedder` (imports langchain-core)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings

from ltst_memory.embeddings import embed_checked

__all__ = ["EmbedderEmbeddings", "as_embeddings"]


class EmbedderEmbeddings(Embeddings):
    """Expose an ltst-memory embedder (``embed``/``dimension``/``model_name``) as LangChain ``Embeddings``.

    The async methods run the model in a worker thread, as :class:`~ltst_memory.AsyncConversationStorage`
    does: embedding is CPU-bound inference, not I/O.
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    @property
    def dimension(self) -> int:
        return int(self.embedder.dimension)

    @property
    def model_name(self) -> str:
        return str(self.embedder.model_name)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed_checked(self.embedder, list(texts)).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]


def as_embeddings(embedding: Any, default_embedder: Any) -> Embeddings:
    """``embedding`` as LangChain ``Embeddings``: itself, a wrapped ltst embedder, or the store's embedder."""
    if embedding is None:
        return EmbedderEmbeddings(default_embedder)
    if isinstance(embedding, Embeddings):
        return embedding
    if all(hasattr(embedding, a) for a in ("embed", "dimension", "model_name")):
        return EmbedderEmbeddings(embedding)
    from ltst_memory.errors import ConfigurationError

    raise ConfigurationError(
        f"embedding must be a LangChain Embeddings or an ltst-memory Embedder, got {type(embedding).__name__}"
    )
