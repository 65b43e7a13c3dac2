"""ltst-memory: long-term / short-term conversation memory on PostgreSQL + pgvector.

Importing this package is cheap: the database driver is imported, but torch and the embedding
model load only on the first embedding.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import Settings
from .embeddings import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from .errors import (
    AccessDeniedError,
    ConfigurationError,
    DatabaseUnavailableError,
    EmbeddingDimensionError,
    EmbeddingError,
    LTSTError,
    MigrationError,
    NotFoundError,
    SessionExistsError,
    SessionNotFoundError,
    StoreClosedError,
    ValidationError,
)
from .models import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    SessionRelationship,
    SessionSummary,
    UserPreference,
)
from .storage import ConversationStorage
from .storage_async import AsyncConversationStorage

try:
    __version__ = version("ltst-memory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AccessDeniedError",
    "AsyncConversationStorage",
    "ConfigurationError",
    "ConversationContext",
    "ConversationMessage",
    "ConversationSession",
    "ConversationStorage",
    "DatabaseUnavailableError",
    "Embedder",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "HashingEmbedder",
    "LTSTError",
    "MigrationError",
    "NotFoundError",
    "SentenceTransformerEmbedder",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionRelationship",
    "SessionSummary",
    "Settings",
    "StoreClosedError",
    "UserPreference",
    "ValidationError",
    "__version__",
]
