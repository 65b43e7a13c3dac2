"""Import / export speed of a ChatGPT ``conversations.json``, through the public API.

    python benchmarks/import_speed.py --conversations 100 --turns 50

Generates a ChatGPT export (linear conversations of ``--turns`` messages), imports it into a fresh
database of a private embedded PostgreSQL with the deterministic hashing embedder (model time left
out: add the embedder's own time, see docs/benchmarks.md "Embedding speed"), imports it again (adds
nothing), and exports every session of the user with embeddings. Prints one JSON line of timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database, server, texts

from ltst_memory import ConversationStorage
from ltst_memory.config import Settings
from ltst_memory.embeddings import HashingEmbedder
from ltst_memory.io import export_records, import_file


def chatgpt_export(conversations: int, turns: int) -> list[dict[str, object]]:
    """``conversations`` linear ChatGPT conversations of ``turns`` user/assistant messages."""
    words = texts(conversations * turns, seed=7)
    out: list[dict[str, object]] = []
    for c in range(conversations):
        start = 1_709_280_000.0 + c * 86_400
        mapping: dict[str, object] = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
        for t in range(turns):
            node = f"m{t}"
            mapping[node] = {
                "id": node,
                "message": {
                    "id": node,
                    "author": {"role": "user" if t % 2 == 0 else "assistant", "name": None, "metadata": {}},
                    "create_time": start + t * 30,
                    "content": {"content_type": "text", "parts": [words[c * turns + t]]},
                    "metadata": {},
                },
                "parent": "root" if t == 0 else f"m{t - 1}",
                "children": [f"m{t + 1}"] if t + 1 < turns else [],
            }
        out.append(
            {
                "title": f"conversation {c}",
                "create_time": start,
                "update_time": start + turns * 30,
                "conversation_id": f"00000000-0000-4000-8000-{c:012d}",
                "current_node": f"m{turns - 1}",
                "mapping": mapping,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--dsn", help="an admin DSN (default: a private embedded server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, server(args.dsn) as admin:
        path = Path(tmp) / "conversations.json"
        path.write_text(json.dumps(chatgpt_export(args.conversations, args.turns)))
        dsn = fresh_database(admin, "ltst_bench_import")
        settings = Settings.from_env(dsn=dsn)
        with ConversationStorage(settings=settings, embedder=HashingEmbedder(384)) as store:
            t0 = time.perf_counter()
            first = import_file(store, path, format="chatgpt", user_id="alice")
            t1 = time.perf_counter()
            again = import_file(store, path, format="chatgpt", user_id="alice")
            t2 = time.perf_counter()
            records = sum(1 for _ in export_records(store, user_id="alice", embeddings=True))
            t3 = time.perf_counter()
        messages = args.conversations * args.turns
        print(
            json.dumps(
                {
                    "messages": messages,
                    "import_s": round(t1 - t0, 2),
                    "import_msg_per_s": round(messages / (t1 - t0)),
                    "first": str(first),
                    "reimport_s": round(t2 - t1, 2),
                    "again": str(again),
                    "export_s": round(t3 - t2, 2),
                    "export_records": records,
                }
            )
        )


if __name__ == "__main__":
    main()
