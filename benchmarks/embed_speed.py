"""Embedding speed of the two backends of SentenceTransformerEmbedder (numpy and torch), same model.

    HF_HUB_OFFLINE=1 python benchmarks/embed_speed.py [--data locomo10.json] [--repeats 3] [--json out.json]

Measured per backend: load time (constructor + first one-text embedding, in a fresh process, so the
torch figure includes importing torch), single-query latency (p50/p95 over ``--queries`` one-text
calls), batch throughput of short texts (``embed()`` calls of ``--batch-size`` texts) and of long
texts (one call of ``--batch-size`` texts of 256+ tokens, truncated by the model to 256), and the
process's peak RSS. With
``--data`` the queries are LoCoMo's questions, the short texts its chat turns and the long texts runs
of 12 consecutive turns; without, synthetic ones.

``--sizes 2 8 32 256`` also times the short texts in calls of those sizes (at least 64 texts each).
``--naive-numpy`` adds a third contender: the numpy backend with ``blas_threads=None``, i.e. OpenBLAS'
own threading (all cores for every product) and no chunk-level threads, to show why the default holds
BLAS at one thread.

Every (repeat, backend) pair runs in its own fresh process, the backends alternating (numpy, torch,
torch, numpy, ...), so both see the same machine conditions; the load average is recorded with each
run. The report also gives the largest difference between the two backends' vectors of the batch texts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKENDS = ("numpy", "torch")
NAIVE = "numpy-blas_threads=None"


def workload(data: str | None, queries: int, batch_texts: int, long_texts: int) -> tuple[list[str], ...]:
    """``(queries, short texts, long texts)``: from LoCoMo, or synthetic."""
    if data:
        conversations = json.loads(Path(data).read_text(encoding="utf-8"))
        questions = [str(qa["question"]) for conv in conversations for qa in conv["qa"]]
        turns = [
            str(turn["text"])
            for conv in conversations
            for key, session in conv["conversation"].items()
            if key.startswith("session_") and isinstance(session, list)
            for turn in session
        ]
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from _common import WORDS, texts

        questions = [
            f"what did we say about the {WORDS[i % len(WORDS)]} and {WORDS[(7 * i) % len(WORDS)]}?"
            for i in range(queries)
        ]
        turns = texts(max(batch_texts, 12 * long_texts))
    longs = [" ".join(turns[i : i + 12]) for i in range(0, 12 * long_texts, 12)]
    return questions[:queries], turns[:batch_texts], longs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def worker(args: argparse.Namespace) -> None:
    """One backend, one fresh process: print a JSON line with its timings."""
    queries, batch, longs = workload(args.data, args.queries, args.batch_texts, args.batch_size)
    from ltst_memory.embeddings import SentenceTransformerEmbedder

    backend = "numpy" if args.worker == NAIVE else args.worker
    blas_threads = None if args.worker == NAIVE else 1
    start = time.perf_counter()
    embedder = SentenceTransformerEmbedder(
        "all-MiniLM-L6-v2", backend=backend, batch_size=args.batch_size, blas_threads=blas_threads
    )
    embedder.embed(["warm-up"])
    load_s = time.perf_counter() - start
    assert embedder.backend == backend

    for query in queries[:10]:  # warm caches
        embedder.embed([query])
    single = []
    for query in queries:
        t0 = time.perf_counter()
        embedder.embed([query])
        single.append((time.perf_counter() - t0) * 1e3)

    embedder.embed(batch[: args.batch_size])
    vectors = []
    t0 = time.perf_counter()
    for i in range(0, len(batch), args.batch_size):
        vectors.append(embedder.embed(batch[i : i + args.batch_size]))
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors.append(embedder.embed(longs))
    long_s = time.perf_counter() - t0
    per_size = {}
    for size in args.sizes:
        t0 = time.perf_counter()
        texts = batch[: max(size, 64)]
        for i in range(0, len(texts), size):
            embedder.embed(texts[i : i + size])
        per_size[str(size)] = len(texts) / (time.perf_counter() - t0)
    if args.vectors:
        import numpy as np

        np.save(args.vectors, np.concatenate(vectors))
    print(
        json.dumps(
            {
                "backend": args.worker,
                "load_s": load_s,
                "single_p50_ms": statistics.median(single),
                "single_p95_ms": percentile(single, 0.95),
                "batch_texts_per_s": len(batch) / batch_s,
                "long_texts_per_s": len(longs) / long_s,
                "texts_per_s_by_call_size": per_size,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "loadavg_1m": os.getloadavg()[0],
            }
        )
    )


def run_one(args: argparse.Namespace, backend: str, vectors: str | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", backend, "--queries", str(args.queries)]
    cmd += ["--batch-texts", str(args.batch_texts), "--batch-size", str(args.batch_size)]
    cmd += ["--sizes", *map(str, args.sizes)]
    if args.data:
        cmd += ["--data", args.data]
    if vectors:
        cmd += ["--vectors", vectors]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="LoCoMo locomo10.json (questions as queries, turns as batch texts)")
    parser.add_argument("--queries", type=int, default=200, help="one-text calls timed per run")
    parser.add_argument("--batch-texts", type=int, default=640, help="texts embedded in batches per run")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per embed() call")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[], help="also time the short texts in calls of these sizes"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend, alternating backends")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--naive-numpy", action="store_true", help="also run numpy with OpenBLAS' own threads")
    parser.add_argument("--worker", choices=(*BACKENDS, NAIVE), help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import numpy as np

    contenders = (*BACKENDS, NAIVE) if args.naive_numpy else BACKENDS
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {b: str(Path(tmp) / f"{b}.npy") for b in BACKENDS}
        for repeat in range(args.repeats):
            order = contenders if repeat % 2 == 0 else contenders[::-1]
            for backend in order:
                run = run_one(args, backend, paths.get(backend) if repeat == 0 else None)
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"run {repeat} {backend}: load {run['load_s']:.2f} s, single p50 {run['single_p50_ms']:.2f} ms"
                    f" p95 {run['single_p95_ms']:.2f} ms, batch {run['batch_texts_per_s']:.0f} texts/s,"
                    f" long {run['long_texts_per_s']:.1f} texts/s (load avg {run['loadavg_1m']:.1f})",
                    flush=True,
                )
        parity = float(np.abs(np.load(paths["numpy"]) - np.load(paths["torch"])).max())

    keys = ("load_s", "single_p50_ms", "single_p95_ms", "batch_texts_per_s", "long_texts_per_s", "peak_rss_mb")
    summary = {b: {k: statistics.median(r[k] for r in runs if r["backend"] == b) for k in keys} for b in contenders}
    report = {
        "command": " ".join(["python", *sys.argv]),
        "data": "locomo" if args.data else "synthetic",
        "queries": args.queries,
        "batch_texts": args.batch_texts,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "median": summary,
        "max_abs_diff_numpy_vs_torch": parity,
        "runs": runs,
    }
    print()
    print("| backend | load s | single p50 ms | single p95 ms | batch texts/s | long texts/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for b in contenders:
        m = summary[b]
        print(
            f"| {b} | {m['load_s']:.2f} | {m['single_p50_ms']:.2f} | {m['single_p95_ms']:.2f} |"
            f" {m['batch_texts_per_s']:.0f} | {m['long_texts_per_s']:.1f} | {m['peak_rss_mb']:.0f} |"
        )
    if args.sizes:
        by_size = {
            b: {
                str(n): statistics.median(r["texts_per_s_by_call_size"][str(n)] for r in runs if r["backend"] == b)
                for n in args.sizes
            }
            for b in contenders
        }
        report["median_texts_per_s_by_call_size"] = by_size
        print("\n| backend (texts/s) | " + " | ".join(f"{n} per call" for n in args.sizes) + " |")
        print("|---|" + "---|" * len(args.sizes))
        for b in contenders:
            print(f"| {b} | " + " | ".join(f"{by_size[b][str(n)]:.0f}" for n in args.sizes) + " |")
    print(f"\nmax |numpy - torch| over the vectors of all batch texts: {parity:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
