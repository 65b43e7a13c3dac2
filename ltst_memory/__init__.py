"""ltst-memory: long-term / short-term conversation memory on PostgreSQL + pgvector.

Importing this package is cheap: the database driver is imported, but torch and the embedding
model load only on the first embedding.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .bulk import AsyncEmbeddingWorker, BulkResult, EmbeddingWorker
from .config import Settings
from .crypto import EncryptionError, EncryptionKeyError
from .embeddings import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from .errors import (
    AccessDeniedError,
    ConfigurationError,
    DatabaseError,
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
from .rehydrate import ContextItem, RehydrationResult
from .retention import AsyncRetentionSweeper, RetentionPolicy, RetentionSweeper
from .scoped import AsyncUserScopedStorage, UserScopedStorage
from .storage import ConversationStorage
from .storage_async import AsyncConversationStorage
from .tokens import estimate_tokens

try:
    __version__ = version("ltst-memory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AccessDeniedError",
    "AsyncConversationStorage",
    "AsyncEmbeddingWorker",
    "AsyncRetentionSweeper",
    "AsyncUserScopedStorage",
    "BulkResult",
    "ConfigurationError",
    "ContextItem",
    "ConversationContext",
    "ConversationMessage",
    "ConversationSession",
    "ConversationStorage",
    "DatabaseError",
    "DatabaseUnavailableError",
    "Embedder",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "EmbeddingWorker",
    "EncryptionError",
    "EncryptionKeyError",
    "HashingEmbedder",
    "LTSTError",
    "MigrationError",
    "NotFoundError",
    "RehydrationResult",
    "RetentionPolicy",
    "RetentionSweeper",
    "SentenceTransformerEmbedder",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionRelationship",
    "SessionSummary",
    "Settings",
    "StoreClosedError",
    "UserPreference",
    "UserScopedStorage",
    "ValidationError",
    "__version__",
    "estimate_tokens",
]
