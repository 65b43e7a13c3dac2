"""A second retrieval development set, shaped like long user-assistant chats (issue 20), and its evaluation.

    python benchmarks/devset_longchat.py [--seed 20] [--data-dir DIR | --dsn URL] [--out results.json]

Generated at run time from templates (``benchmarks/_longchat_data.py``) with a seeded
``random.Random``: nothing is downloaded and nothing generated is written to the repository. Shape:

* one user per question, ``--sessions`` sessions each (50), 10 turns a session (about 500 turns a user);
* user-assistant chats, ``role`` user / assistant, no speaker names in metadata;
* user turns are short requests; assistant turns are long (120-400 words), built from sentences on
  the session's topic (pets, running, cooking, travel, money, music, health, home, work, books,
  tech, hobbies), so distractor sessions talk about the same things as the questions;
* most sessions are unrelated distractors; the evidence sits in 1-3 sessions, usually as one short
  statement of the user prefixed to a request;
* six kinds of question, 8 of each (48): ``user-fact`` (stated once), ``assistant-fact`` (a
  recommendation inside a long assistant answer), ``preference`` (the question asks for advice, the
  evidence is the stated preference), ``update`` (an older and a newer value; both turns are
  evidence), ``aggregate`` (three sessions), ``temporal`` (two dated events, "how many days
  between...").

Sessions are dated over about ten months (timestamps on every turn). The same ``--seed`` gives the
same data. Each configuration of ``_retrieval_eval.CONFIGS`` is measured through
``storage.recall(question, user_id=..., limit=50)``; see that module for the metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _longchat_data as data
import _retrieval_eval as ev
from locomo import CachingEmbedder

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage
from ltst_memory.embeddings import SentenceTransformerEmbedder

TURNS_PER_SESSION = 10
START = datetime(2024, 1, 8, tzinfo=timezone.utc)


def _assistant_turn(rng: random.Random, topic: str, fact: str | None = None) -> str:
    """A long answer on ``topic`` (120-400 words), with ``fact`` somewhere in its middle."""
    own = data.TOPICS[topic][1]
    other = data.TOPICS[rng.choice([t for t in data.TOPICS if t != topic])][1]
    sentences = rng.sample(own, rng.randint(7, min(13, len(own)))) + rng.sample(other, rng.randint(1, 4))
    sentences += rng.sample(data.GENERIC, rng.randint(2, 4))
    body = sentences[1:-1]
    rng.shuffle(body)
    if fact is not None:
        body.insert(rng.randint(2, max(2, len(body) - 2)), fact)
    sentences = [sentences[0], *body, sentences[-1]]
    if rng.random() < 0.4:  # a list in the middle, as assistants write
        cut = rng.randint(2, 4)
        return (
            " ".join(sentences[:cut])
            + "\n\n"
            + "\n".join(f"- {s}" for s in sentences[cut:-2])
            + "\n\n"
            + " ".join(sentences[-2:])
        )
    return " ".join(sentences)


def _session(rng: random.Random, topic: str) -> list[tuple[str, str]]:
    """``(role, text)`` turns of one chat about ``topic``."""
    requests, _ = data.TOPICS[topic]
    asks = [rng.choice(requests), *rng.sample(data.FOLLOW_UPS, TURNS_PER_SESSION // 2 - 1)]
    if rng.random() < 0.5:
        asks[rng.randint(1, len(asks) - 1)] = rng.choice([r for r in requests if r != asks[0]])
    turns: list[tuple[str, str]] = []
    for ask in asks:
        turns.append(("user", ask))
        turns.append(("assistant", _assistant_turn(rng, topic)))
    return turns


def generate(
    seed: int = 20, sessions: int = 50, pool_per_topic: int = 25
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(users, questions)``: each user ``{"id", "sessions": [(session_id, date, [(role, text, turn_id)])]}``,
    each question ``{"user", "question", "evidence", "sessions", "kind"}``. Deterministic in ``seed``."""
    rng = random.Random(seed)
    pool = [(topic, _session(rng, topic)) for topic in data.TOPICS for _ in range(pool_per_topic)]
    specs: list[tuple[str, list[str | tuple[str, str, str]], str]] = []
    specs += [("user-fact", [say], ask) for say, ask in data.USER_FACTS]
    specs += [("assistant-fact", [(topic, request, fact)], ask) for topic, request, fact, ask in data.ASSISTANT_FACTS]
    specs += [("preference", [say], ask) for say, ask in data.PREFERENCES]
    specs += [("update", list(says), ask) for says, ask in data.UPDATES]
    specs += [("aggregate", list(says), ask) for says, ask in data.AGGREGATES]
    specs += [("temporal", list(says), ask) for says, ask in data.TEMPORAL]
    users, questions = [], []
    for n, (kind, says, ask) in enumerate(specs):
        user = f"longchat-{seed}-{n:02d}"
        picked = rng.sample(range(len(pool)), sessions)
        chats: list[tuple[str, list[tuple[str, str]], int | None]] = []  # topic, turns, evidence turn index
        for i in picked[len(says) :]:
            chats.append((pool[i][0], list(pool[i][1]), None))
        evidence_chats = []
        for j, say in enumerate(says):
            if isinstance(say, tuple):  # the assistant states the fact in a long answer to a request
                topic, request, fact = say
                turns = _session(rng, topic)
                turns[0] = ("user", request)
                turns[1] = ("assistant", _assistant_turn(rng, topic, fact))
                evidence_chats.append((topic, turns, 1))
            else:  # the user states it, in front of a request of an otherwise ordinary chat
                topic, turns = pool[picked[j]][0], list(pool[picked[j]][1])
                at = 2 * rng.randint(0, TURNS_PER_SESSION // 2 - 1)
                turns[at] = ("user", say if rng.random() < 0.3 else f"{say} {turns[at][1]}")
                evidence_chats.append((topic, turns, at))
        # dates: one chat every ~6 days on average; the evidence chats keep their order
        days = sorted(rng.sample(range(300), sessions))
        slots = sorted(rng.sample(range(sessions), len(says)))
        order = list(range(len(chats)))
        rng.shuffle(order)
        placed: list[tuple[str, list[tuple[str, str]], int | None]] = []
        rest = iter(chats[i] for i in order)
        ev_iter = iter(evidence_chats)
        for s in range(sessions):
            placed.append(next(ev_iter) if s in slots else next(rest))
        user_sessions, evidence, ev_sessions = [], set(), set()
        for s, ((_, turns, at), day) in enumerate(zip(placed, days, strict=True)):
            sid = f"{user}/s{s:02d}"
            date = START + timedelta(days=day, hours=rng.randint(8, 21), minutes=rng.randint(0, 59))
            user_sessions.append((sid, date, [(role, text, f"{sid}#{i}") for i, (role, text) in enumerate(turns)]))
            if at is not None:
                evidence.add(f"{sid}#{at}")
                ev_sessions.add(sid)
        users.append({"id": user, "sessions": user_sessions})
        questions.append({"user": user, "question": ask, "evidence": evidence, "sessions": ev_sessions, "kind": kind})
    return users, questions


def ingest(store: ConversationStorage, users: list[dict[str, Any]]) -> float:
    """Store every user's chats (skipped when the last user is already stored); seconds spent."""
    if store.get_user_sessions(users[-1]["id"], limit=1):
        return 0.0
    started = time.perf_counter()
    for u in users:
        for sid, date, turns in u["sessions"]:
            if store.get_session(sid) is None:
                store.create_session(ConversationSession(session_id=sid, user_id=u["id"]))
                store.store_messages(
                    [
                        ConversationMessage(
                            session_id=sid,
                            role=role,
                            content=text,
                            metadata={"turn": turn_id},
                            timestamp=date + timedelta(minutes=2 * i),
                        )
                        for i, (role, text, turn_id) in enumerate(turns)
                    ]
                )
        print(f"  stored {u['id']}", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def describe(users: list[dict[str, Any]], questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Size and shape of the generated set."""
    turns = [t for u in users for _, _, ts in u["sessions"] for t in ts]
    words = [len(text.split()) for role, text, _ in turns if role == "assistant"]
    user_words = [len(text.split()) for role, text, _ in turns if role == "user"]
    return {
        "questions": len(questions),
        "users": len(users),
        "sessions": sum(len(u["sessions"]) for u in users),
        "turns": len(turns),
        "assistant_words_mean": round(sum(words) / len(words)),
        "assistant_words_max": max(words),
        "user_words_mean": round(sum(user_words) / len(user_words)),
        "unique_texts": len({text for _, text, _ in turns}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=50, help="sessions per user (question)")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: an embedded server in --data-dir)")
    parser.add_argument("--data-dir", type=Path, help="embedded server directory (kept, so a rerun skips loading)")
    parser.add_argument("--configs", help="comma-separated configuration names (default: all of _retrieval_eval)")
    parser.add_argument("--embedding-cache", type=Path, help="an .npz file of text embeddings, read and written")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    args = parser.parse_args(argv)

    users, questions = generate(args.seed, args.sessions)
    shape = describe(users, questions)
    print(f"long-chat set: {json.dumps(shape)}", file=sys.stderr)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ltst-longchat-"))
    kwargs: dict[str, Any] = {"dsn": args.dsn} if args.dsn else {"data_dir": data_dir}
    embedder = CachingEmbedder(SentenceTransformerEmbedder(), args.embedding_cache)
    output: dict[str, Any] = {"shape": shape}
    with ConversationStorage(**kwargs, embedder=embedder) as store:
        store.embedder.embed(["warm up"])
        embedder.cache_queries = True  # each question is embedded once, by the first configuration
        seconds = ingest(store, users)
        if seconds:
            output["ingest_seconds"] = seconds
            print(f"ingested in {seconds:.0f} s", file=sys.stderr)
            embedder.save()
        names = args.configs.split(",") if args.configs else None
        results = ev.run_configs(
            store,
            questions,
            lambda m: m.metadata.get("turn"),
            lambda m: m.session_id,
            names,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    output["recall"] = results
    print(ev.table(results))
    print()
    print(ev.kind_table(results.get(ev.DEFAULT) or next(iter(results.values()))))
    if args.out:
        args.out.write_text(json.dumps(output, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
