"""The real-vector users of ``benchmarks/user_index.py``: their texts, queries, and MiniLM vectors
(embedded once, cached as .npy files). Two mixes of a large user's history:

* ``templated``: the 5,882 LoCoMo turns (text only) and 94,118 synthetic 12-word chat lines
  (``_common.texts``, seed 77): 100,000 messages, most of them alike (one vocabulary of 60 words);
* ``turns``: real conversational turns only: LoCoMo's turns as the store embeds them ("speaker: text")
  and the distinct turns of the long-chat development set (``devset_longchat.generate``) for seeds
  20, 21, ...: short requests and long assistant answers.

Queries of each: 300 LoCoMo questions, and 100 chat lines (``templated``: other synthetic lines,
seed 78) or the long-chat questions of the seeds used (``turns``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LOCOMO = Path("/work/shared/locomo/locomo10.json")


def locomo(path: Path, speaker: bool) -> tuple[list[str], list[str]]:
    """LoCoMo's turns (with ``"speaker: "`` in front when ``speaker``) and its first 300 questions."""
    data = json.loads(path.read_text())
    turns: list[str] = []
    for conv in data:
        c = conv["conversation"]
        for key, value in c.items():
            if key.startswith("session_") and isinstance(value, list):
                for t in value:
                    if t.get("text"):
                        turns.append(f"{t['speaker']}: {t['text']}" if speaker else t["text"])
    questions = [str(q["question"]) for conv in data for q in conv["qa"]][:300]
    return turns, questions


def corpus(mix: str, locomo_path: Path, seeds: int = 8) -> tuple[list[str], list[str], int]:
    """``(texts, queries, locomo_queries)``: the user's messages, the queries, and how many of the
    queries (the first ones) are LoCoMo questions."""
    from _common import texts

    if mix == "templated":
        turns, questions = locomo(locomo_path, speaker=False)
        return turns + texts(100_000 - len(turns), seed=77), questions + texts(100, seed=78), len(questions)
    if mix == "turns":
        import devset_longchat

        turns, questions = locomo(locomo_path, speaker=True)
        seen = dict.fromkeys(turns)
        chat_questions: list[str] = []
        for seed in range(20, 20 + seeds):
            users, asked = devset_longchat.generate(seed)
            for u in users:
                for _, _, ts in u["sessions"]:
                    seen.update((text, None) for _, text, _ in ts)
            chat_questions += [str(q["question"]) for q in asked]
        return list(seen), questions + list(dict.fromkeys(chat_questions)), len(questions)
    raise ValueError(mix)


def vectors(mix: str, cache: Path, locomo_path: Path = LOCOMO) -> tuple[np.ndarray, np.ndarray, int]:
    """``(message vectors, query vectors, locomo_queries)`` of ``mix``, embedded with all-MiniLM-L6-v2
    (numpy backend) on the first call and read from ``cache`` after."""
    cache.mkdir(parents=True, exist_ok=True)
    texts_, queries, n_locomo = corpus(mix, locomo_path)
    vec_path, q_path = cache / f"{mix}-vectors.npy", cache / f"{mix}-queries.npy"
    if vec_path.exists() and q_path.exists():
        v, q = np.load(vec_path), np.load(q_path)
        if len(v) == len(texts_) and len(q) == len(queries):
            return v, q, n_locomo
    from ltst_memory.embeddings import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    started = time.perf_counter()
    parts = []
    for i in range(0, len(texts_), 1024):
        parts.append(model.embed(texts_[i : i + 1024]))
        print(
            f"  {mix}: embedded {i + len(parts[-1]):,} / {len(texts_):,} in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    v = np.concatenate(parts).astype(np.float32)
    q = model.embed(queries).astype(np.float32)
    np.save(q_path, q)
    np.save(vec_path, v)
    return v, q, n_locomo


if __name__ == "__main__":
    for name in sys.argv[1:] or ["turns", "templated"]:
        v, q, n = vectors(name, Path("/tmp/userindex"))
        print(name, v.shape, q.shape, n)
