"""Token counting for context budgets: offline by default, any ``count_tokens(text) -> int`` welcome.

The default, :func:`estimate_tokens`, needs no download and errs on the side of *more* tokens than
a BPE tokenizer such as OpenAI's ``cl100k_base`` would count for English chat text (a word is one
token plus one per further 6 characters; every punctuation mark and symbol is one), so a prompt
that fits its estimate fits the model. For exact counts pass your tokenizer, e.g.
:func:`tiktoken_counter` (needs the ``tiktoken`` package and its encoding files).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

__all__ = ["TokenCounter", "estimate_tokens", "resolve_counter", "tiktoken_counter"]

#: A function that returns the number of tokens of a text.
TokenCounter = Callable[[str], int]

_PIECE = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """An offline, slightly pessimistic token count of ``text`` (no model or download needed).

    Words count ``1 + len(word) // 6`` tokens, runs of digits one token per 3 digits, and every
    other non-space character one token.
    """
    if not text:
        return 0
    total = 0
    for piece in _PIECE.findall(text):
        if piece[0].isdigit():
            total += (len(piece) + 2) // 3
        elif piece[0].isalpha():
            total += 1 + len(piece) // 6
        else:
            total += 1
    return total


def tiktoken_counter(encoding: str = "cl100k_base") -> TokenCounter:
    """A counter backed by ``tiktoken`` (``pip install tiktoken``; the encoding is downloaded once)."""
    try:
        import tiktoken
    except ImportError:
        from .errors import ConfigurationError

        raise ConfigurationError("tiktoken is not installed: pip install tiktoken") from None
    enc = tiktoken.get_encoding(encoding)

    def count(text: str) -> int:
        return len(enc.encode(text, disallowed_special=()))

    return count


def resolve_counter(count_tokens: TokenCounter | None) -> TokenCounter:
    """``count_tokens`` checked to be callable, or the offline estimator, memoised per text."""
    if count_tokens is None:
        return _cached_estimate
    if not callable(count_tokens):
        from .errors import ValidationError

        raise ValidationError("count_tokens must be a callable text -> int")
    return functools.partial(_checked_count, count_tokens)


def _checked_count(count_tokens: TokenCounter, text: str) -> int:
    """``count_tokens(text)``, refused with ValidationError unless it is a non-negative int."""
    value = count_tokens(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        from .errors import ValidationError
        from .models import short_repr

        raise ValidationError(f"count_tokens must return a non-negative int, got {short_repr(value)}")
    return value


@functools.lru_cache(maxsize=65_536)
def _cached_estimate(text: str) -> int:
    return estimate_tokens(text)
