"""Retrieval quality of ltst-memory on LoCoMo (evidence Recall@k, MRR), with an ablation of each idea.

    python benchmarks/locomo.py --data /path/to/locomo10.json [--dsn URL | --data-dir DIR] [--rehydrate]

LoCoMo (Maharana et al., ACL 2024; CC BY-NC 4.0) is not part of this repository: pass its path. Each
conversation becomes one user; each LoCoMo session a ``ConversationSession``; each turn a message
whose timestamp is the session's date and whose ``metadata`` holds ``{"speaker": ..., "dia_id": ...}``
(an image turn's BLIP caption is appended as ``[shares a photo: ...]`` unless ``--no-captions``).
For every question of categories 1-4 with evidence, the user's messages are ranked with
``storage.recall(question, user_id=...)`` and the evidence turns are looked up in the ranking.

Recall@k is the share of a question's evidence turns found in the top k, averaged over questions;
MRR uses the rank of the first evidence turn. Latency is per ``recall`` call; for the default
configuration (run first) it includes the query embedding, for the others the question's embedding
is cached, so their latency is the database part only. ``--ablation`` also loads a copy without
speaker names (neither in the words nor in the embedded text) and runs the configurations of the
ablation table in docs/retrieval.md.
``--rehydrate`` measures the share of questions whose evidence reaches the rehydrated context at
``--budget`` tokens (2,000 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
from ltst_memory.embeddings import SentenceTransformerEmbedder

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (1, 5, 10, 20)
DEFAULT = "+ short turns damped when the question names a speaker (default)"

#: the steps of issue 20 off (session-first, long turns, the question's role and dates): the ranking
#: as it was before issue 20
_OFF = {
    "session_weight": 0.0,
    "long_turn_penalty": 0.0,
    "role_weight": 0.0,
    "date_weight": 0.0,
    "speaker_weight": 0.0,
    "short_turn_penalty": 0.0,
}

#: name -> (dataset copy, recall keyword arguments)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "vector, plain text": ("plain", {"lexical_weight": 0.0, "neighbor_weight": 0.0, **_OFF}),
    "BM25, plain text": ("plain", {"lexical_weight": 1.0, "neighbor_weight": 0.0, **_OFF}),
    "hybrid, plain text": ("plain", {"neighbor_weight": 0.0, **_OFF}),
    "vector, speaker in text": ("speaker", {"lexical_weight": 0.0, "neighbor_weight": 0.0, **_OFF}),
    "BM25, speaker in text": ("speaker", {"lexical_weight": 1.0, "neighbor_weight": 0.0, **_OFF}),
    "hybrid (score fusion)": ("speaker", {"neighbor_weight": 0.0, **_OFF}),
    "hybrid + neighbours": ("speaker", _OFF),
    "hybrid + neighbours + session-first, long turns damped": (
        "speaker",
        {"role_weight": 0.0, "date_weight": 0.0, "speaker_weight": 0.0, "short_turn_penalty": 0.0},
    ),
    "+ the question's dates and role": ("speaker", {"speaker_weight": 0.0, "short_turn_penalty": 0.0}),
    "+ the question's speaker": ("speaker", {"short_turn_penalty": 0.0}),
    DEFAULT: ("speaker", {}),
    "default + MMR 0.7": ("speaker", {"mmr": 0.7}),
    "default + recency 0.1": ("speaker", {"recency_weight": 0.1, "recency_half_life_days": 90}),
}


class CachingEmbedder:
    """Wraps an embedder with a text -> vector cache, optionally persisted (``--embedding-cache``).

    Embedding LoCoMo's 5,882 turns takes minutes on two CPU cores, so reruns reuse the vectors.
    Single texts (the questions) are only served from the cache once ``cache_queries`` is set: the
    first configuration measured pays for every query embedding.
    """

    def __init__(self, inner: Any, path: Path | None = None) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.path = path
        self.cache: dict[str, Any] = {}
        self.cache_queries = False
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as data:
                self.cache = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))

    def embed(self, texts: list[str]) -> Any:
        if len(texts) == 1 and not self.cache_queries:
            return self.inner.embed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self.cache[text] = vector
        return np.stack([self.cache[t] for t in texts])

    def save(self) -> None:
        if self.path is not None and self.cache:
            texts = list(self.cache)
            np.savez(self.path, texts=np.array(texts), vectors=np.stack([self.cache[t] for t in texts]))


def parse_date(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def load_locomo(path: Path, captions: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(conversations, questions)``; each conversation ``{"id", "sessions": [(name, date, turns)]}``."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    conversations, questions = [], []
    for sample in raw:
        conv = sample["conversation"]
        sessions = []
        numbers = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
        for n in numbers:
            turns = []
            for turn in conv[f"session_{n}"]:
                text = turn["text"]
                if captions and turn.get("blip_caption"):
                    text = f"{text} [shares a photo: {turn['blip_caption']}]"
                turns.append({"speaker": turn["speaker"], "dia_id": turn["dia_id"], "text": text})
            sessions.append((f"session_{n}", parse_date(conv[f"session_{n}_date_time"]), turns))
        conversations.append(
            {"id": sample["sample_id"], "speakers": (conv["speaker_a"], conv["speaker_b"]), "sessions": sessions}
        )
        known = {t["dia_id"] for _, _, turns in sessions for t in turns}
        for qa in sample["qa"]:
            if qa.get("category") not in CATEGORIES:
                continue
            evidence = set()
            for item in qa.get("evidence", []):
                for part in re.split(r"[;,\s]+", item):
                    m = re.fullmatch(r"D:?(\d+):0*(\d+)", part.strip())
                    if m and f"D{m.group(1)}:{m.group(2)}" in known:
                        evidence.add(f"D{m.group(1)}:{m.group(2)}")
            if evidence:
                questions.append(
                    {
                        "conv": sample["sample_id"],
                        "question": qa["question"],
                        "evidence": evidence,
                        "category": qa["category"],
                    }
                )
    return conversations, questions


def user_of(copy: str, conv_id: str) -> str:
    return f"locomo-{copy}-{conv_id}"


def ingest(store: ConversationStorage, conversations: list[dict[str, Any]], copy: str) -> float:
    """Store one copy of the data set; return seconds spent (0 when already stored)."""
    if store.get_user_sessions(user_of(copy, conversations[-1]["id"]), limit=1):
        return 0.0
    started = time.perf_counter()
    for conv in conversations:
        user = user_of(copy, conv["id"])
        for name, date, turns in conv["sessions"]:
            sid = f"{user}/{name}"
            if store.get_session(sid) is None:
                store.create_session(
                    ConversationSession(session_id=sid, user_id=user, session_name=f"{name} {date:%Y-%m-%d}")
                )
            messages = []
            for i, turn in enumerate(turns):
                key = "speaker" if copy == "speaker" else "who"  # the plain copy hides the name from ranking
                messages.append(
                    ConversationMessage(
                        session_id=sid,
                        role="human" if turn["speaker"] == conv["speakers"][0] else "ai",
                        content=turn["text"],
                        metadata={key: turn["speaker"], "dia_id": turn["dia_id"]},
                        timestamp=date + timedelta(seconds=i),
                    )
                )
            store.store_messages(messages)
        if store.get_session(f"{user}/ask") is None:  # an empty session to rehydrate questions into
            store.create_session(ConversationSession(session_id=f"{user}/ask", user_id=user))
        print(f"  stored {conv['id']} ({copy})", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def evaluate(
    store: ConversationStorage, questions: list[dict[str, Any]], copy: str, options: dict[str, Any]
) -> dict[str, Any]:
    per_cat: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    latencies = []
    for q in questions:
        started = time.perf_counter()
        hits = store.recall(q["question"], user_id=user_of(copy, q["conv"]), limit=max(KS), **options)
        latencies.append(time.perf_counter() - started)
        ranked = [m.metadata.get("dia_id") for m, _ in hits]
        for bucket in (per_cat[q["category"]], per_cat["all"]):
            for k in KS:
                bucket[f"R@{k}"].append(len(q["evidence"] & set(ranked[:k])) / len(q["evidence"]))
            first = next((i for i, d in enumerate(ranked) if d in q["evidence"]), None)
            bucket["MRR"].append(0.0 if first is None else 1.0 / (first + 1))
    result = {str(cat): {m: statistics.fmean(v) for m, v in metrics.items()} for cat, metrics in per_cat.items()}
    latencies.sort()
    result["latency_ms"] = {
        "p50": 1000 * latencies[len(latencies) // 2],
        "p95": 1000 * latencies[int(len(latencies) * 0.95)],
    }
    result["n"] = len(questions)
    return result


def rehydration_coverage(
    store: ConversationStorage, questions: list[dict[str, Any]], budget: int, floor: float | None = 0.2
) -> dict[str, float]:
    any_found = all_found = share = 0.0
    tokens, latencies = [], []
    for q in questions:
        user = user_of("speaker", q["conv"])
        started = time.perf_counter()
        result = store.rehydrate(
            f"{user}/ask", q["question"], token_budget=budget, memory_limit=100, memory_min_similarity=floor
        )
        latencies.append(time.perf_counter() - started)
        present = {i.message.metadata.get("dia_id") for i in result.memories if i.message is not None}
        found = len(q["evidence"] & present)
        any_found += found > 0
        all_found += found == len(q["evidence"])
        share += found / len(q["evidence"])
        tokens.append(result.tokens_used)
    n = len(questions)
    latencies.sort()
    return {
        "evidence_share": share / n,
        "any_evidence": any_found / n,
        "all_evidence": all_found / n,
        "mean_tokens": statistics.fmean(tokens),
        "p50_ms": 1000 * latencies[n // 2],
        "p95_ms": 1000 * latencies[int(n * 0.95)],
    }


def compare(store: ConversationStorage, questions: list[dict[str, Any]], names: str | None) -> dict[str, Any]:
    """The configurations of ``_retrieval_eval`` on the speaker copy, with its metrics (turn-level
    all/any evidence in the top 10, session-level all evidence in the top 5, MRR)."""
    import _retrieval_eval as ev

    items = [
        {
            "user": user_of("speaker", q["conv"]),
            "question": q["question"],
            "evidence": q["evidence"],
            "sessions": {f"{user_of('speaker', q['conv'])}/session_{d[1:].split(':')[0]}" for d in q["evidence"]},
            "kind": CATEGORIES[q["category"]],
        }
        for q in questions
    ]
    results = ev.run_configs(
        store,
        items,
        lambda m: m.metadata.get("dia_id"),
        lambda m: m.session_id,
        names.split(",") if names else None,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(ev.table(results))
    print()
    print(ev.kind_table(results.get(ev.DEFAULT) or next(iter(results.values()))))
    print()
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| configuration | R@1 | R@5 | R@10 | R@20 | MRR | p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in sorted(results.items(), key=lambda kv: list(CONFIGS).index(kv[0])):
        a = r["all"]
        lines.append(
            f"| {name} | {a['R@1']:.3f} | {a['R@5']:.3f} | {a['R@10']:.3f} | {a['R@20']:.3f} | {a['MRR']:.3f} "
            f"| {r['latency_ms']['p50']:.0f} | {r['latency_ms']['p95']:.0f} |"
        )
    return "\n".join(lines)


def category_table(result: dict[str, Any]) -> str:
    lines = ["| category | n | R@1 | R@5 | R@10 | R@20 | MRR |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cat, name in CATEGORIES.items():
        r = result.get(str(cat))
        if r:
            lines.append(
                f"| {cat} {name} | {r['count']} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} "
                f"| {r['R@20']:.3f} | {r['MRR']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="path to locomo10.json")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: an embedded server in --data-dir)")
    parser.add_argument("--data-dir", type=Path, help="embedded server directory (kept, so a rerun skips loading)")
    parser.add_argument("--no-captions", action="store_true", help="do not append image captions to turns")
    parser.add_argument("--ablation", action="store_true", help="run every configuration of the ablation table")
    parser.add_argument("--rehydrate", action="store_true", help="also measure evidence coverage of rehydrate()")
    parser.add_argument("--budget", type=int, default=2_000, help="token budget for --rehydrate")
    parser.add_argument(
        "--memory-floor",
        default="0.2",
        help="rehydrate's memory_min_similarity, or a comma-separated list to compare ('none' = off)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the configurations of _retrieval_eval (issue 20's metrics, as on the long-chat set)",
    )
    parser.add_argument("--compare-configs", help="comma-separated names of those configurations (default: all)")
    parser.add_argument("--limit-questions", type=int, help="only the first N questions (quick runs)")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument("--embedding-cache", type=Path, help="an .npz file of text embeddings, read and written")
    args = parser.parse_args(argv)

    conversations, questions = load_locomo(args.data, captions=not args.no_captions)
    if args.limit_questions:
        questions = questions[: args.limit_questions]
    print(f"LoCoMo: {len(conversations)} conversations, {len(questions)} questions (categories 1-4)", file=sys.stderr)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ltst-locomo-"))
    kwargs: dict[str, Any] = {"dsn": args.dsn} if args.dsn else {"data_dir": data_dir}
    output: dict[str, Any] = {"questions": len(questions)}
    embedder = CachingEmbedder(SentenceTransformerEmbedder(), args.embedding_cache)
    with ConversationStorage(**kwargs, embedder=embedder) as store:
        store.embedder.embed(["warm up"])
        copies = ("speaker", "plain") if args.ablation else ("speaker",)
        for copy in copies:
            seconds = ingest(store, conversations, copy)
            if seconds:
                output[f"ingest_seconds_{copy}"] = seconds
                print(f"ingested {copy} copy in {seconds:.0f} s", file=sys.stderr)
                embedder.save()
        default = DEFAULT
        configs = {default: CONFIGS[default]}  # first, so its latency includes the query embedding
        if args.ablation:
            configs.update({k: v for k, v in CONFIGS.items() if k != default})
        results = {}
        for name, (copy, options) in configs.items():
            results[name] = evaluate(store, questions, copy, options)
            embedder.cache_queries = True  # later configurations reuse the query embeddings
            counts = defaultdict(int)
            for q in questions:
                counts[str(q["category"])] += 1
            for cat, n in counts.items():
                results[name][cat]["count"] = n
            print(f"{name}: {json.dumps({k: round(v, 3) for k, v in results[name]['all'].items()})}", file=sys.stderr)
        output["recall"] = results
        if args.compare:
            output["compare"] = compare(store, questions, args.compare_configs)
        print(table(results))
        print()
        print(category_table(results[DEFAULT]))
        if args.rehydrate:
            output["rehydrate"] = {}
            for text in args.memory_floor.split(","):
                floor = None if text.strip().lower() == "none" else float(text)
                coverage = rehydration_coverage(store, questions, args.budget, floor)
                output["rehydrate"][str(floor)] = {"budget": args.budget, **coverage}
                print()
                print(
                    f"rehydrate at {args.budget} tokens, memory floor {floor}: "
                    + json.dumps({k: round(v, 3) for k, v in coverage.items()})
                )
    if args.out:
        args.out.write_text(json.dumps(output, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
