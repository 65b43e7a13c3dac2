"""rehydrate's relevance floor on LoCoMo with every conversation under one user.

    HF_HUB_OFFLINE=1 python benchmarks/rehydrate_floor.py --data /path/to/locomo10.json [--floors none,0.2,0.3]

The ten LoCoMo conversations are stored as the sessions of a single user, so for each question the
nine other conversations are memory that does not belong to it: unrelated sessions of the same
user. Each question is rehydrated (2,000 tokens, ``memory_limit=100``) into an empty session of that
user; reported per floor (``memory_min_similarity``): the share of evidence turns that reach the
prompt, and the share of memory lines that come from another conversation (filler). Needs the
real all-MiniLM-L6-v2 (the floor is a cosine of that model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from locomo import load_locomo

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage

USER = "locomo-one-user"


def ingest(store: ConversationStorage, conversations: list[dict[str, Any]]) -> None:
    if store.get_user_sessions(USER, limit=1):
        return
    for conv in conversations:
        for name, date, turns in conv["sessions"]:
            sid = f"{conv['id']}/{name}"
            store.create_session(ConversationSession(sid, USER, f"{conv['id']} {name}"))
            store.store_messages(
                [
                    ConversationMessage(
                        sid,
                        "human" if turn["speaker"] == conv["speakers"][0] else "ai",
                        turn["text"],
                        metadata={"speaker": turn["speaker"], "dia_id": turn["dia_id"], "conv": conv["id"]},
                        timestamp=date + timedelta(seconds=i),
                    )
                    for i, turn in enumerate(turns)
                ]
            )
        print(f"  stored {conv['id']}", file=sys.stderr, flush=True)
    store.create_session(ConversationSession(f"{USER}/ask", USER))


def measure(store: ConversationStorage, questions: list[dict[str, Any]], floor: float | None) -> dict[str, float]:
    share, foreign, lines, latencies = 0.0, 0, 0, []
    for q in questions:
        started = time.perf_counter()
        result = store.rehydrate(
            f"{USER}/ask", q["question"], token_budget=2000, memory_limit=100, memory_min_similarity=floor
        )
        latencies.append(time.perf_counter() - started)
        mine = [i.message for i in result.memories if i.message is not None]
        present = {(m.metadata.get("conv"), m.metadata.get("dia_id")) for m in mine}
        share += len({(q["conv"], d) for d in q["evidence"]} & present) / len(q["evidence"])
        foreign += sum(m.metadata.get("conv") != q["conv"] for m in mine)
        lines += len(mine)
    latencies.sort()
    n = len(questions)
    return {
        "evidence_share": share / n,
        "foreign_memory_share": foreign / max(lines, 1),
        "memories_per_question": lines / n,
        "p50_ms": 1000 * statistics.median(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="path to locomo10.json")
    parser.add_argument("--data-dir", type=Path, help="embedded server directory (kept, so a rerun skips loading)")
    parser.add_argument("--floors", default="none,0.2,0.3", help="comma-separated memory_min_similarity values")
    parser.add_argument("--limit-questions", type=int, help="only the first N questions")
    args = parser.parse_args()
    conversations, questions = load_locomo(args.data, captions=True)
    if args.limit_questions:
        questions = questions[: args.limit_questions]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ltst-floor-"))
    print(
        "| `memory_min_similarity` | evidence turns in the prompt | memory lines from other conversations "
        "| memory lines per question | p50 ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    with ConversationStorage(data_dir=data_dir, warm=True) as store:
        ingest(store, conversations)
        for text in args.floors.split(","):
            floor = None if text.strip().lower() == "none" else float(text)
            r = results[str(floor)] = measure(store, questions, floor)
            print(
                f"| {floor} | {100 * r['evidence_share']:.1f} % | {100 * r['foreign_memory_share']:.1f} % "
                f"| {r['memories_per_question']:.1f} | {r['p50_ms']:.0f} |",
                flush=True,
            )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
