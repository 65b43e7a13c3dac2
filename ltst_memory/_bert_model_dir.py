"""What a local sentence-transformers directory must hold for the numpy backend to reproduce it exactly.

:func:`check_model_dir` reads only the small JSON files (no weights), so choosing a backend is cheap;
it raises :class:`UnsupportedModelError` with the reason for anything else, and the embedder then
uses sentence-transformers. Private module, used by ``ltst_memory._minilm_numpy``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelSpec", "UnsupportedModelError", "check_model_dir"]

_ST_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Normalize": "sentence_transformers.models.Normalize",
}
_LEGACY_POOLING_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
#: sentence_bert_config.json keys that may be present with these neutral values.
_NEUTRAL_ST_CONFIG: dict[str, tuple[Any, ...]] = {
    "do_lower_case": (False,),  # True makes sentence-transformers add a Lowercase normalizer: not reproduced
    "model_args": ({}, None),
    "tokenizer_args": ({}, None),
    "config_args": ({}, None),
    "cache_dir": (None,),
    "tokenizer_name_or_path": (None,),
    "backend": ("torch",),
    "transformer_task": ("feature-extraction",),
    "processing_kwargs": ({}, None),
}


class UnsupportedModelError(Exception):
    """The model directory is not one this backend reproduces exactly (the message says why)."""


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`check_model_dir` read from a supported model directory."""

    root: Path
    transformer_dir: Path
    max_seq_length: int
    normalize: bool
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnsupportedModelError(f"{path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"cannot read {path}: {exc}") from None


def _module_kind(type_name: str) -> str | None:
    """``Transformer``/``Pooling``/``Normalize`` for sentence-transformers' own module classes."""
    if not type_name.startswith("sentence_transformers."):
        return None
    last = type_name.rsplit(".", 1)[-1]
    return last if last in _ST_TYPES else None


def _check_pooling(config: dict[str, Any], hidden: int) -> None:
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension", hidden))
    if dim != hidden:
        raise UnsupportedModelError(f"pooling dimension {dim} differs from the hidden size {hidden}")
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
        if modes != ["mean"]:
            raise UnsupportedModelError(f"pooling mode {mode!r} is not plain mean pooling")
    else:
        if config.get("pooling_mode_mean_tokens") is not True:
            raise UnsupportedModelError("pooling is not mean pooling")
        other = [key for key in _LEGACY_POOLING_KEYS if config.get(key)]
        if other:
            raise UnsupportedModelError(f"pooling also uses {', '.join(other)}")


def _token(value: Any) -> Any:
    """A special token of tokenizer_config.json: a string, or a serialized AddedToken."""
    return value.get("content") if isinstance(value, dict) else value


def _check_tokenizer(directory: Path) -> None:
    """``tokenizer.json`` must be exactly the BERT WordPiece tokenizer ``tokenizer_config.json`` describes.

    transformers 4 tokenizes with ``tokenizer.json`` as is; transformers 5 rebuilds a ``BertTokenizer``
    from the vocabulary and ``tokenizer_config.json`` (do_lower_case, strip_accents, ...). This backend
    reads ``tokenizer.json``, so it accepts only files on which the two agree.
    """
    config = _read_json(directory / "tokenizer_config.json")
    if config.get("tokenizer_class") not in ("BertTokenizer", "BertTokenizerFast"):
        raise UnsupportedModelError(f"tokenizer_class {config.get('tokenizer_class')!r} is not a BERT tokenizer")
    special = {
        name: _token(config.get(name, default))
        for name, default in (
            ("unk_token", "[UNK]"),
            ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"),
            ("cls_token", "[CLS]"),
            ("mask_token", "[MASK]"),
        )
    }
    tokenizer = _read_json(directory / "tokenizer.json")
    normalizer = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
        "strip_accents": config.get("strip_accents"),
        "lowercase": config.get("do_lower_case", True),
    }
    if tokenizer.get("normalizer") != normalizer:
        raise UnsupportedModelError("tokenizer.json's normalizer disagrees with tokenizer_config.json")
    if (tokenizer.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        raise UnsupportedModelError("tokenizer.json's pre-tokenizer is not BertPreTokenizer")
    model = tokenizer.get("model") or {}
    if (
        model.get("type") != "WordPiece"
        or model.get("unk_token") != special["unk_token"]
        or model.get("continuing_subword_prefix", "##") != "##"
        or model.get("max_input_chars_per_word", 100) != 100
    ):
        raise UnsupportedModelError("tokenizer.json's model is not the standard BERT WordPiece")
    if not {t.get("content") for t in tokenizer.get("added_tokens", [])} <= set(special.values()):
        raise UnsupportedModelError("tokenizer.json adds tokens of its own")
    post = tokenizer.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        pieces: list[dict[str, Any]] = post.get("single", [])
        template = [_first_value(piece).get("id") for piece in pieces]
    elif post.get("type") == "BertProcessing":
        template = [post.get("cls", [None])[0], "A", post.get("sep", [None])[0]]
    else:
        template = []
    if template != [special["cls_token"], "A", special["sep_token"]]:
        raise UnsupportedModelError("tokenizer.json does not frame a text as [CLS] text [SEP]")


def check_model_dir(path: str | Path) -> ModelSpec:
    """Read and validate a local sentence-transformers model directory.

    Raises :class:`UnsupportedModelError` unless the directory is a BERT encoder with mean pooling
    (optionally followed by normalization) stored as float32 safetensors with a ``tokenizer.json``.
    """
    root = Path(path)
    if not root.is_dir():
        raise UnsupportedModelError(f"{path} is not a local directory")
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        raise UnsupportedModelError("modules.json is not a list")
    kinds = [_module_kind(str(m.get("type", ""))) if isinstance(m, dict) else None for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedModelError(f"module pipeline {[m.get('type') for m in modules]} is not Transformer-Pooling")
    transformer_dir = root / str(modules[0].get("path", ""))
    pooling_dir = root / str(modules[1].get("path", ""))

    st_config = _read_json(transformer_dir / "sentence_bert_config.json")
    max_seq_length = st_config.get("max_seq_length")
    for key, value in st_config.items():
        if key == "max_seq_length":
            continue
        if key not in _NEUTRAL_ST_CONFIG or value not in _NEUTRAL_ST_CONFIG[key]:
            raise UnsupportedModelError(f"sentence_bert_config.json sets {key}={value!r}")

    config = _read_json(transformer_dir / "config.json")
    if config.get("model_type") != "bert":
        raise UnsupportedModelError(f"model_type {config.get('model_type')!r} is not 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(f"activation {config.get('hidden_act')!r} is not exact GELU")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModelError("position embeddings are not absolute")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise UnsupportedModelError("decoder BERT configurations are not supported")
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        intermediate = int(config["intermediate_size"])
        max_positions = int(config["max_position_embeddings"])
        eps = float(config.get("layer_norm_eps", 1e-12))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedModelError(f"config.json lacks a usable {exc}") from None
    if hidden % heads:
        raise UnsupportedModelError("hidden size is not a multiple of the number of heads")
    if not isinstance(max_seq_length, int) or not 2 <= max_seq_length <= max_positions:
        raise UnsupportedModelError(f"max_seq_length {max_seq_length!r} is not in [2, {max_positions}]")

    _check_pooling(_read_json(pooling_dir / "config.json"), hidden)
    _check_tokenizer(transformer_dir)
    if not (transformer_dir / "model.safetensors").is_file():
        raise UnsupportedModelError("model.safetensors is missing")
    return ModelSpec(
        root=root,
        transformer_dir=transformer_dir,
        max_seq_length=max_seq_length,
        normalize=kinds[-1] == "Normalize",
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=intermediate,
        layer_norm_eps=eps,
    )


def _first_value(piece: dict[str, Any]) -> dict[str, Any]:
    """The first value of a template piece (``{"SpecialToken": {...}}`` -> ``{...}``), or ``{}``."""
    value: Any = next(iter(piece.values()), {})
    return value if isinstance(value, dict) else {}
