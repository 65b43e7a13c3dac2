"""Side-by-side benchmark: ltst-memory vs langchain-postgres and LangGraph's PostgresStore.

    # once: the peers live in their own virtualenv (langchain-postgres pins pgvector<0.4)
    python -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install langchain-postgres langgraph-checkpoint-postgres 'psycopg[binary]' numpy matplotlib
    # run (system Python, ltst-memory installed):
    HF_HUB_OFFLINE=1 python benchmarks/peers.py --sizes 10000 100000 --peer-python /tmp/peers-venv/bin/python \
        --out docs/benchmarks/peers.json

One private embedded PostgreSQL (PG 18 + pgvector 0.8) serves every system, each in its own database.
The data set is generated once: synthetic chat texts and, for each, a 384-d unit vector clustered
around real all-MiniLM-L6-v2 vectors of 2,000 of the texts (vector indexes behave as on real
embeddings); sessions hold 100 messages; one user owns 10 % of the messages (at most 100,000), one 1 %
(at most 10,000), every other user 1,000. It prints a table per size and the goals of issue 18.
With ``--repeat R`` every size runs R rounds, each running every system once in turn, so that a slower
or faster spell of a shared machine reaches all of them: the table shows each figure's median over the
rounds, and each goal's ratio also round by round. ``append_one`` times the first appends after the
load (and the searches); ``append_one_warm`` the same call again after 200 more, untimed.
Each system runs in its own process (``peer_side.py``) so its peak RSS is its own. Nothing is
embedded during the timed operations but rehydrate's question (ours, MiniLM, counted in): every
system gets the same precomputed vectors, so the database work is what is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clustered_vectors, fresh_database, machine, server, texts
from _peer_ops import OPS, SEARCHES

HERE = Path(__file__).resolve().parent
PEERS = ("lc_history", "lc_vectorstore", "langgraph")
VECTOR_PEERS = ("lc_vectorstore", "langgraph")


def make_data(directory: Path, size: int, probes: int = 200) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ltst_memory.embeddings import SentenceTransformerEmbedder

    directory.mkdir(parents=True, exist_ok=True)
    corpus = texts(size)
    base = SentenceTransformerEmbedder("all-MiniLM-L6-v2").embed(corpus[:2_000])
    np.save(directory / "vectors.npy", clustered_vectors(size, base=base, seed=1))
    np.save(directory / "probe.npy", clustered_vectors(probes, base=base, seed=2))
    (directory / "texts.json").write_text(json.dumps(corpus))


def run_side(python: str, system: str, dsn: str, data: Path, size: int, n: int) -> dict[str, object]:
    cmd = [python, str(HERE / "peer_side.py"), "--system", system, "--dsn", dsn, "--data", str(data)]
    cmd += ["--size", str(size), "--n", str(n)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"[{system} @ {size}] FAILED:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {"system": system, "size": size, "error": proc.stderr[-1000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[{system} @ {size}] done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return result  # type: ignore[no-any-return]


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's repeated runs at one size as one result: each timed operation's p50, p95 and ops/s
    the median over the runs (their p50s kept in ``p50_runs``), recall the lowest and short results the
    most of any run, sizes and times the median."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {"system": runs[0]["system"], "size": runs[0]["size"], "repeats": len(runs)}
    for key, first in runs[0].items():
        if key in out:
            continue
        values = [r.get(key) for r in runs]
        if isinstance(first, dict) and "p50" in first:
            ops = [v for v in values if isinstance(v, dict)]
            merged: dict[str, Any] = {k: float(np.median([o[k] for o in ops])) for k in ("p50", "p95", "ops_per_s")}
            merged["p50_runs"] = [float(o["p50"]) for o in ops]
            if "recall_at_10" in first:
                merged["recall_at_10"] = min(float(o["recall_at_10"]) for o in ops)
                merged["short_results"] = max(int(o["short_results"]) for o in ops)
            out[key] = merged
        elif key == "search_short_results":
            out[key] = max(int(v) for v in values if v is not None)
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out[key] = float(np.median([float(v) for v in values if v is not None]))
        else:
            out[key] = first
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for size in sorted({int(r["size"]) for r in results}):
        rows = {r["system"]: r for r in results if r["size"] == size and "error" not in r}
        lines.append(f"\n#### {size:,} stored messages\n")
        lines.append("| operation | " + " | ".join(["ours", *PEERS]) + " | ours vs fastest peer (p50) |")
        lines.append("|---|" + "---|" * (len(PEERS) + 2))
        for op in OPS:
            cells = []
            peer_p50 = []
            for system in ("ours", *PEERS):
                value = rows.get(system, {}).get(op)
                if isinstance(value, dict):
                    cells.append(f"{value['p50']:.2f} / {value['p95']:.2f}")
                    if system != "ours":
                        peer_p50.append(value["p50"])
                else:
                    cells.append("—")
            ours = rows.get("ours", {}).get(op)
            ratio = f"{min(peer_p50) / ours['p50']:.1f}× faster" if isinstance(ours, dict) and peer_p50 else "—"
            if isinstance(ours, dict) and peer_p50 and min(peer_p50) < ours["p50"]:
                ratio = f"{ours['p50'] / min(peer_p50):.1f}× SLOWER"
            lines.append(f"| {op} (p50 / p95 ms) | " + " | ".join(cells) + f" | {ratio} |")
        for key, label in (
            ("search_short_results", "user searches returning < 10 rows"),
            ("peak_rss_mb", "client peak RSS (MB)"),
            ("bytes", "on-disk MB per 1M messages"),
            ("load_s", "load time (s)"),
        ):
            cells = []
            for system in ("ours", *PEERS):
                value = rows.get(system, {}).get(key)
                if value is None:
                    cells.append("—")
                elif key == "bytes":
                    cells.append(f"{float(value) / size * 1e6 / 2**20:,.0f}")
                else:
                    cells.append(f"{float(value):,.0f}" if key != "search_short_results" else str(value))
            lines.append(f"| {label} | " + " | ".join(cells) + " | |")
        for op in SEARCHES:
            cells = []
            for system in ("ours", *PEERS):
                value = rows.get(system, {}).get(op)
                cells.append(
                    f"{value['recall_at_10']:.3f} ({value['short_results']} short)" if isinstance(value, dict) else "—"
                )
            lines.append(f"| {op}: recall@10 (calls with < 10 rows) | " + " | ".join(cells) + " | |")
        lines.append("")
        lines.extend(goals(rows, size))
    return "\n".join(lines)


def _p(rows: dict[str, Any], system: str, op: str, key: str = "p50") -> float | None:
    value = rows.get(system, {}).get(op)
    return float(value[key]) if isinstance(value, dict) else None


def goals(rows: dict[str, Any], size: int) -> list[str]:
    """The issue's goals (issue 18) as measured in this run, one line each."""
    out = []

    def ratio(op: str, peers: tuple[str, ...], target: float, *, inverse: bool = False) -> None:
        ours = _p(rows, "ours", op)
        theirs = [v for v in (_p(rows, peer, op) for peer in peers) if v is not None]
        if ours is None or not theirs:
            return
        value = ours / min(theirs) if inverse else min(theirs) / ours
        verdict = "met" if (value <= target if inverse else value >= target) else "NOT met"
        what = f"ours / {'/'.join(peers)}" if inverse else f"fastest of {'/'.join(peers)} / ours"
        spread = ""
        runs = [rows.get(s, {}).get(op, {}).get("p50_runs") for s in ("ours", *peers)]
        if isinstance(runs[0], list) and any(isinstance(r, list) for r in runs[1:]):
            # round by round: ours against the fastest peer of the same round that has rounds (a result
            # without them, such as a kept earlier run, counts in the median ratio only)
            per_round = [
                (o / min(p) if inverse else min(p) / o)
                for o, *p in zip(*[r for r in runs if isinstance(r, list)], strict=False)
            ]
            spread = f", rounds {min(per_round):.2f}-{max(per_round):.2f}"
        out.append(
            f"- {op}: {what} (p50) = {value:.2f}{spread} (goal {'<=' if inverse else '>='} {target:g}): {verdict}"
        )

    ratio("append_one", VECTOR_PEERS, 3)
    ratio("append_one", ("lc_history",), 2, inverse=True)
    ratio("append_one_warm", VECTOR_PEERS, 3)  # (the same call after append_one's and 200 more)
    ratio("append_one_warm", ("lc_history",), 2, inverse=True)
    ratio("append_50", VECTOR_PEERS, 3)
    ratio("read_last_50", ("lc_history", "langgraph"), 2)
    limits = {"search_mid_user": (1.0, 5.0), "search_big_user": (0.99, 10.0), "search_unscoped": (0.95, 50.0)}
    for op, (recall_goal, p95_goal) in limits.items():
        value = rows.get("ours", {}).get(op)
        if isinstance(value, dict):
            users = {"search_mid_user": "a user of 1 %", "search_big_user": "a user of 10 %"}.get(op, "every user")
            met = value["recall_at_10"] >= recall_goal and value["p95"] <= p95_goal
            out.append(
                f"- {op} ({users} of {size:,}): recall@10 {value['recall_at_10']:.3f}, p95 {value['p95']:.2f} ms "
                f"(goal >= {recall_goal} and <= {p95_goal:g} ms at 1M): {'met' if met else 'NOT met'}"
            )
    rehydrate = _p(rows, "ours", "rehydrate", "p95")
    if rehydrate is not None:
        out.append(
            f"- rehydrate incl. MiniLM query embedding: p95 {rehydrate:.2f} ms (goal <= 30): "
            f"{'met' if rehydrate <= 30 else 'NOT met'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--systems", nargs="+", default=["ours", *PEERS])
    parser.add_argument(
        "--skip", nargs="*", default=[], metavar="SYSTEM@SIZE", help="pairs not to run, e.g. langgraph@1000000"
    )
    parser.add_argument("--peer-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--n", type=int, default=200, help="timed calls per operation")
    parser.add_argument("--data", type=Path, default=Path("/tmp/ltst-peers-data"))
    parser.add_argument("--dsn", help="superuser DSN of a server to use instead of a private embedded one")
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per size, each running every system once in turn; the table reports each figure's "
        "median over the rounds and the goals the range of the round-by-round ratios",
    )
    args = parser.parse_args()

    if not (args.data / "vectors.npy").exists() or len(np.load(args.data / "vectors.npy", mmap_mode="r")) < max(
        args.sizes
    ):
        make_data(args.data, max(args.sizes))
    runs: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    with server(args.dsn) as admin:
        for size in args.sizes:
            for _ in range(args.repeat):
                for system in args.systems:
                    if f"{system}@{size}" in args.skip:
                        continue
                    dsn = fresh_database(admin, f"peer_{system}_{size}")
                    python = sys.executable if system == "ours" else args.peer_python
                    runs.append(run_side(python, system, dsn, args.data, size, args.n))
                    fresh_database(admin, f"peer_{system}_{size}")  # drop the data, keep the disk small
                    results = [
                        combine(same)
                        for key in dict.fromkeys((r["system"], r["size"]) for r in runs)
                        if (same := [r for r in runs if (r["system"], r["size"]) == key and "error" not in r])
                    ] + [r for r in runs if "error" in r]
                    if args.out:
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        report = {"machine": machine(), "repeat": args.repeat, "results": results}
                        if args.repeat > 1:
                            report["runs"] = runs
                        args.out.write_text(json.dumps(report, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
