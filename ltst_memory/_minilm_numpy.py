"""A pure-numpy forward pass of BERT-family sentence-transformers models (mean pooling, optional normalize).

Why: importing torch takes seconds and a one-text torch forward pass carries milliseconds of framework
overhead, while the store embeds one short query per search. The model is small (all-MiniLM-L6-v2: six
layers of width 384), so numpy + the BLAS it ships with computes the same vectors (within ~3e-7) faster,
loads in a fraction of a second and never imports torch (figures: docs/benchmarks.md, "Embedding speed").

Only what can be reproduced exactly is accepted (:func:`check_model_dir` says why not otherwise): a local
directory holding ``modules.json`` with ``Transformer`` -> ``Pooling`` (mean) [-> ``Normalize``], a BERT
``config.json`` (absolute positions, exact GELU), ``model.safetensors`` in float32 and a BERT WordPiece
``tokenizer.json`` that agrees with ``tokenizer_config.json``. Everything else stays with
sentence-transformers.

How it differs from the torch path (results do not): texts are tokenized without padding and the tokens
of all texts of a chunk are packed into one ``(tokens, hidden)`` matrix, so the dense layers (QKV, output,
feed-forward, LayerNorm) do no work on padding at all; attention runs per group of equal-length texts
(texts are sorted by length, as sentence-transformers does). Everything is float32; the exact GELU uses a
rational erf evaluated in float32 on cache-sized chunks (numpy has no erf, and scipy's float32 erf, a
scalar loop, is ~3x slower than this and not a dependency).

Private module: the public entry point is ``SentenceTransformerEmbedder(..., backend="numpy")``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ._bert_model_dir import ModelSpec, UnsupportedModelError, check_model_dir

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ModelSpec", "NumpyBertEncoder", "UnsupportedModelError", "check_model_dir"]

logger = logging.getLogger(__name__)

#: Largest number of tokens pushed through the layers at once (bounds the ~25 KB/token of scratch memory).
MAX_CHUNK_TOKENS = 2048
#: Calls with at least this many tokens run their chunks on one thread per CPU (with ``blas_threads=1``).
PARALLEL_TOKENS = 128
#: Attention scores computed per step (floats): 2**18 = 1 MiB, about the L2 cache of one core.
_ATTENTION_SCORES = 1 << 18

# erf(x) ~= x * P(x^2) / Q(x^2) on [-4, 4] (saturating to +-1 beyond), the float32 erf of Eigen/XLA.
# Its approximation error is 6.5e-8; evaluated in float32 Horner rounding brings it to 4.5e-7 (7 ulp near
# 1) against ~0.5 ulp for torch's erf. End to end that is invisible: the sentence vectors differ from
# sentence-transformers' by <= 3e-7 either way (float64 evaluation: 2.8e-7), and float32 is ~1.8x faster.
_ERF_P = tuple(
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_Q = tuple(
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
)
_SQRT_HALF, _FOUR, _MINUS_FOUR, _ONE, _HALF = (np.float32(c) for c in (0.7071067811865476, 4.0, -4.0, 1.0, 0.5))
#: Elements per GELU step: three scratch rows of this length (3 x 128 KiB) stay in the L2 cache.
_GELU_CHUNK = 32_768


#: Names of OpenBLAS' ``openblas_set_num_threads_local`` (0.3.27+) in the builds numpy ships.
_LOCAL_SETTERS = (
    "openblas_set_num_threads_local",
    "scipy_openblas_set_num_threads_local64_",
    "scipy_openblas_set_num_threads_local",
    "openblas_set_num_threads_local64_",
)


def _thread_local_setter(library: Any) -> Callable[[int], int] | None:
    """OpenBLAS' ``openblas_set_num_threads_local`` of a threadpoolctl library controller: sets the
    calling thread's BLAS thread count and returns the previous one (``None`` where it is missing)."""
    if getattr(library, "internal_api", None) != "openblas":
        return None
    dynlib = getattr(library, "dynlib", None)
    for name in _LOCAL_SETTERS:
        function = getattr(dynlib, name, None) if dynlib is not None else None
        if function is not None:
            function.argtypes = [ctypes.c_int]
            function.restype = ctypes.c_int
            return cast("Callable[[int], int]", function)
    return None


class _BlasThreads:
    """The BLAS thread count held while :meth:`NumpyBertEncoder.encode` runs; re-entrant.

    OpenBLAS splits every product between its threads and spin-waits for them: on a 2-core machine
    where another process keeps one core busy, a 12-token query then took 30-400 ms instead of ~12 ms
    on one thread, and the small per-head attention products of long texts were 4x slower. So the
    encoder holds BLAS at one thread by default and parallelizes itself, one chunk of texts per thread
    (see ``encode``). numpy has no API for the BLAS thread count; threadpoolctl (installed with
    sentence-transformers, through scikit-learn) has. Without it this is a no-op.

    With OpenBLAS 0.3.27 or later the count is set for the calling thread only
    (``openblas_set_num_threads_local``): the process-wide ``openblas_set_num_threads`` that
    threadpoolctl calls has no effect on a thread other than the main one (measured with numpy's
    OpenBLAS 0.3.31: set to 1 from a worker thread, BLAS kept 2 threads in that worker, and a query
    embedded there — as the async store and the sync store's embedding ahead do — took 20-45x as long
    on a busy machine). Other BLAS libraries get the process-wide count while an encode runs (other
    threads of the process that use BLAS meanwhile get it too, a speed effect only; concurrent encodes
    asking for different counts get the first one's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[tuple[Any, int]] = []
        self._libraries: list[Any] | None = None
        self._process_wide: list[Any] = []
        self._local: list[Callable[[int], int]] = []

    def find_libraries(self) -> list[Any]:
        """The BLAS libraries loaded in the process (looked up once)."""
        if self._libraries is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                libraries: list[Any] = []
            else:
                libraries = list(ThreadpoolController().select(user_api="blas").lib_controllers)
            for library in libraries:
                setter = _thread_local_setter(library)
                if setter is None:
                    self._process_wide.append(library)
                else:
                    self._local.append(setter)
            self._libraries = libraries
        return self._libraries

    @contextmanager
    def limit(self, threads: int | None) -> Iterator[None]:
        """Run the block with every BLAS library on ``threads`` threads (``None``: leave them alone):
        in the calling thread where the library can, else process-wide."""
        if threads is None:
            yield
            return
        self.find_libraries()
        previous = [setter(threads) for setter in self._local]
        try:
            if self._process_wide:
                with self._process_wide_limit(threads):
                    yield
            else:
                yield
        finally:
            for setter, count in zip(self._local, previous, strict=True):
                setter(count)

    @contextmanager
    def _process_wide_limit(self, threads: int) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = [(lib, lib.num_threads) for lib in self._process_wide]
                for lib, current in self._saved:
                    if current != threads:
                        lib.set_num_threads(threads)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for lib, previous in self._saved:
                        if previous != threads:
                            lib.set_num_threads(previous)
                    self._saved = []


_blas_threads = _BlasThreads()


@dataclass(frozen=True)
class _Layer:
    w_qkv: NDArray[np.float32]  # (hidden, 3*hidden), columns q | k | v
    b_qkv: NDArray[np.float32]
    w_out: NDArray[np.float32]  # (hidden, hidden)
    b_out: NDArray[np.float32]
    ln1_w: NDArray[np.float32]
    ln1_b: NDArray[np.float32]
    w_in: NDArray[np.float32]  # (hidden, intermediate)
    b_in: NDArray[np.float32]
    w_ffn_out: NDArray[np.float32]  # (intermediate, hidden)
    b_ffn_out: NDArray[np.float32]
    ln2_w: NDArray[np.float32]
    ln2_b: NDArray[np.float32]


def _load_tokenizer(spec: ModelSpec) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(spec.transformer_dir / "tokenizer.json"))
    tokenizer.no_padding()  # tokenizer.json of MiniLM pads every text to 128 tokens
    tokenizer.enable_truncation(max_length=spec.max_seq_length)  # counts [CLS] and [SEP], like transformers
    return tokenizer


def _load_weights(spec: ModelSpec) -> tuple[dict[str, NDArray[np.float32]], list[_Layer]]:
    from safetensors.numpy import load_file

    raw = load_file(str(spec.transformer_dir / "model.safetensors"))
    anchor = "embeddings.word_embeddings.weight"
    prefixes = [key[: -len(anchor)] for key in raw if key.endswith(anchor)]
    if len(prefixes) != 1:
        raise UnsupportedModelError("model.safetensors has no single BERT embedding table")
    prefix = prefixes[0]

    def get(name: str) -> NDArray[np.float32]:
        try:
            value = raw[prefix + name]
        except KeyError:
            raise UnsupportedModelError(f"model.safetensors lacks {prefix}{name}") from None
        if value.dtype != np.float32:
            raise UnsupportedModelError(f"{prefix}{name} is {value.dtype}, not float32")
        return value

    def linear(name: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        # torch Linear stores (out, in); keep (in, out) C-contiguous so every product is a plain x @ W
        return np.ascontiguousarray(get(name + ".weight").T), get(name + ".bias")

    h = spec.hidden_size
    embeddings = {
        "word": get("embeddings.word_embeddings.weight"),
        "position": get("embeddings.position_embeddings.weight"),
        "type0": get("embeddings.token_type_embeddings.weight")[0].copy(),
        "ln_w": get("embeddings.LayerNorm.weight"),
        "ln_b": get("embeddings.LayerNorm.bias"),
    }
    if embeddings["word"].shape[1] != h or embeddings["position"].shape[0] < spec.max_seq_length:
        raise UnsupportedModelError("embedding tables do not match config.json")
    layers = []
    for i in range(spec.num_layers):
        base = f"encoder.layer.{i}."
        qkv = [linear(base + f"attention.self.{part}") for part in ("query", "key", "value")]
        w_out, b_out = linear(base + "attention.output.dense")
        w_in, b_in = linear(base + "intermediate.dense")
        w_ffn, b_ffn = linear(base + "output.dense")
        # fold attention's 1/sqrt(head_dim) into the query projection (saves a pass over the scores)
        scale = np.float32(1.0 / np.sqrt(h // spec.num_heads))
        (w_q, b_q), *kv = qkv
        qkv = [(w_q * scale, b_q * scale), *kv]
        layer = _Layer(
            w_qkv=np.ascontiguousarray(np.concatenate([w for w, _ in qkv], axis=1)),
            b_qkv=np.concatenate([b for _, b in qkv]),
            w_out=w_out,
            b_out=b_out,
            ln1_w=get(base + "attention.output.LayerNorm.weight"),
            ln1_b=get(base + "attention.output.LayerNorm.bias"),
            w_in=w_in,
            b_in=b_in,
            w_ffn_out=w_ffn,
            b_ffn_out=b_ffn,
            ln2_w=get(base + "output.LayerNorm.weight"),
            ln2_b=get(base + "output.LayerNorm.bias"),
        )
        if layer.w_qkv.shape != (h, 3 * h) or layer.w_in.shape != (h, spec.intermediate_size):
            raise UnsupportedModelError(f"layer {i} weights do not match config.json")
        layers.append(layer)
    return embeddings, layers


def _layer_norm(x: NDArray[np.float32], weight: NDArray[np.float32], bias: NDArray[np.float32], eps: float) -> None:
    """LayerNorm over the last axis of a 2-D array, in place (float32 throughout, like torch on CPU)."""
    n = np.float32(x.shape[-1])
    mean = np.add.reduce(x, axis=-1, keepdims=True)  # ufunc calls, not .mean(): this runs 13x per query
    mean /= n
    x -= mean
    var = np.einsum("ij,ij->i", x, x)[:, None]
    var /= n
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias


def _gelu(x: NDArray[np.float32]) -> None:
    """Exact GELU ``x * (1 + erf(x / sqrt 2)) / 2``, in place on a C-contiguous float32 array."""
    flat = x.reshape(-1)
    n = flat.size
    size = min(n, _GELU_CHUNK)
    u = np.empty(size, np.float32)
    u2 = np.empty(size, np.float32)
    acc = np.empty(size, np.float32)
    p0, p1, *p_rest = _ERF_P
    q0, q1, *q_rest = _ERF_Q
    for start in range(0, n, size):
        chunk = flat[start : start + size]
        m = chunk.size
        cu, cu2, cacc = u[:m], u2[:m], acc[:m]
        np.multiply(chunk, _SQRT_HALF, out=cu)
        np.maximum(cu, _MINUS_FOUR, out=cu)
        np.minimum(cu, _FOUR, out=cu)
        np.multiply(cu, cu, out=cu2)
        np.multiply(cu2, p0, out=cacc)  # Horner's scheme in x^2
        cacc += p1
        for c in p_rest:
            cacc *= cu2
            cacc += c
        cu *= cacc  # x * P(x^2)
        np.multiply(cu2, q0, out=cacc)
        cacc += q1
        for c in q_rest:
            cacc *= cu2
            cacc += c
        cu /= cacc  # erf
        cu += _ONE
        cu *= _HALF
        chunk *= cu


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _chunks(lengths: NDArray[np.int64], workers: int) -> list[NDArray[np.intp]]:
    """Text indices, longest first (as sentence-transformers sorts), cut into runs of similar token count.

    At least ``workers`` runs when there are enough texts, each of at most :data:`MAX_CHUNK_TOKENS`
    tokens (a text longer than that alone), so that every worker gets a similar share.
    """
    order = np.argsort(-lengths, kind="stable")
    total = int(lengths.sum())
    count = max(workers, -(-total // MAX_CHUNK_TOKENS))
    count = min(count, len(order))
    target = -(-total // count)
    chunks: list[NDArray[np.intp]] = []
    begin, tokens = 0, 0
    for position, index in enumerate(order.tolist()):
        if position > begin and tokens + int(lengths[index]) > target:
            chunks.append(order[begin:position])
            begin, tokens = position, 0
        tokens += int(lengths[index])
    chunks.append(order[begin:])
    return chunks


class NumpyBertEncoder:
    """Sentence embeddings from a supported model directory (see :func:`check_model_dir`), in numpy."""

    def __init__(self, path: str | Path, *, blas_threads: int | None = 1) -> None:
        if blas_threads is not None and blas_threads < 1:
            raise ValueError("blas_threads must be None or at least 1")
        self.blas_threads = blas_threads
        self.spec = check_model_dir(path)
        self._tokenizer = _load_tokenizer(self.spec)
        self._emb, self._layers = _load_weights(self.spec)
        self._head_dim = self.spec.hidden_size // self.spec.num_heads
        _blas_threads.find_libraries()  # now, not during the first query

    @property
    def dimension(self) -> int:
        """Size of the sentence vectors."""
        return self.spec.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[NDArray[np.int64]]:
        """Token ids of each text, with [CLS]/[SEP], truncated to ``max_seq_length``, unpadded."""
        tokenizer = self._tokenizer
        encodings = [tokenizer.encode(texts[0])] if len(texts) == 1 else tokenizer.encode_batch(list(texts))
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def encode(self, texts: Sequence[str], *, normalize: bool = True) -> NDArray[np.float32]:
        """One float32 vector per text (L2-normalized when ``normalize`` or the model says so).

        Texts are sorted by token count and packed into chunks of at most :data:`MAX_CHUNK_TOKENS`
        tokens. With ``blas_threads=1`` (the default) BLAS runs single-threaded and, when there are at
        least :data:`PARALLEL_TOKENS` tokens, the chunks run on one thread per CPU (numpy releases the
        GIL in every heavy step); otherwise the chunks run one after the other on BLAS' threads.
        """
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        parallel = self.blas_threads == 1 and int(lengths.sum()) >= PARALLEL_TOKENS
        workers = _usable_cpus() if parallel else 1
        chunks = _chunks(lengths, workers)

        def run(chunk: NDArray[np.intp]) -> NDArray[np.float32]:
            with _blas_threads.limit(self.blas_threads):  # a worker thread's own count (OpenBLAS >= 0.3.27)
                return self._forward([ids[i] for i in chunk])

        with _blas_threads.limit(self.blas_threads):
            if workers == 1 or len(chunks) == 1:
                for chunk in chunks:
                    out[chunk] = run(chunk)
            else:
                with ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix="ltst-embed") as pool:
                    for chunk, vectors in zip(chunks, pool.map(run, chunks), strict=True):
                        out[chunk] = vectors
        if normalize or self.spec.normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
            np.maximum(norms, np.float32(1e-12), out=norms)  # torch.nn.functional.normalize's eps
            out /= norms
        return out

    def _forward(self, ids: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        """Mean-pooled last hidden states of sequences sorted by decreasing length."""
        spec, emb = self.spec, self._emb
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        starts = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        total = int(lengths.sum())
        flat_ids = np.concatenate(ids) if len(ids) > 1 else ids[0]
        positions = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)

        h = emb["word"][flat_ids]
        h += emb["position"][positions]
        h += emb["type0"]
        _layer_norm(h, emb["ln_w"], emb["ln_b"], spec.layer_norm_eps)

        # runs of equal length: (first token, number of sequences, length)
        groups: list[tuple[int, int, int]] = []
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            if groups and groups[-1][2] == length:
                first, count, _ = groups[-1]
                groups[-1] = (first, count + 1, length)
            else:
                groups.append((start, 1, length))

        hidden, inter = spec.hidden_size, spec.intermediate_size
        qkv = np.empty((total, 3 * hidden), np.float32)
        ctx = np.empty((total, hidden), np.float32)
        mid = np.empty((total, inter), np.float32)
        for layer in self._layers:
            np.matmul(h, layer.w_qkv, out=qkv)
            qkv += layer.b_qkv
            self._attention(qkv, ctx, groups)
            residual = h
            h = ctx @ layer.w_out
            h += layer.b_out
            h += residual
            _layer_norm(h, layer.ln1_w, layer.ln1_b, spec.layer_norm_eps)
            np.matmul(h, layer.w_in, out=mid)
            mid += layer.b_in
            _gelu(mid)
            residual = h
            h = mid @ layer.w_ffn_out
            h += layer.b_ffn_out
            h += residual
            _layer_norm(h, layer.ln2_w, layer.ln2_b, spec.layer_norm_eps)

        pooled = np.add.reduceat(h, starts, axis=0)
        pooled /= lengths[:, None].astype(np.float32)
        return pooled

    def _attention(
        self, qkv: NDArray[np.float32], ctx: NDArray[np.float32], groups: list[tuple[int, int, int]]
    ) -> None:
        """Softmax attention of each sequence over itself (no padding, hence no mask), into ``ctx``.

        Equal-length sequences go through batched matmuls together, at most ``_ATTENTION_SCORES``
        scores at a time: one (heads, length, length) block of a 256-token text is already 3 MB, and
        a freshly allocated block of 16 of them (50 MB) is page-faulted and written at memory speed,
        which made attention 20x slower than the same work in small steps.
        """
        nh, hd = self.spec.num_heads, self._head_dim
        for first, count, length in groups:
            step = max(1, _ATTENTION_SCORES // (nh * length * length))
            for offset in range(0, count, step):
                n = min(step, count - offset)
                start = first + offset * length
                stop = start + n * length
                block = qkv[start:stop].reshape(n, length, 3, nh, hd)
                q = block[:, :, 0].transpose(0, 2, 1, 3)  # (n, heads, length, head_dim) views
                k = block[:, :, 1].transpose(0, 2, 3, 1)
                v = block[:, :, 2].transpose(0, 2, 1, 3)
                scores = np.matmul(q, k)
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                total = scores.sum(axis=-1, keepdims=True)
                weighted = np.matmul(scores, v)
                weighted /= total  # normalise the (length, head_dim) result, not the (length, length) weights
                ctx[start:stop].reshape(n, length, nh, hd)[...] = weighted.transpose(0, 2, 1, 3)
