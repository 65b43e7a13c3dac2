"""Helpers shared by the benchmark scripts: a private embedded server, synthetic data, timing."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ltst_memory.embeddings import HashingEmbedder

_WORD_TEXT = (
    "trip paris dinner budget meeting project deadline python bug deploy garden tomato recipe pasta "
    "birthday gift sister concert ticket flight hotel museum coffee running marathon knee doctor "
    "insurance mortgage interest rate painting guitar lesson school daughter soccer weekend hiking "
    "camera lens photo cat vet allergy movie novel chapter editor invoice client contract salary raise"
)
WORDS = tuple(_WORD_TEXT.split(" "))


def with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def server(dsn: str | None = None) -> Iterator[str]:
    """An admin DSN: the given one, or a private embedded PostgreSQL started for this run."""
    if dsn:
        yield dsn
        return
    from ltst_memory._connection import acquire_embedded, release_embedded

    data_dir = Path(tempfile.mkdtemp(prefix="ltst-bench-"))
    try:
        yield with_db(acquire_embedded(data_dir), "postgres")
    finally:
        release_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)  # a benchmark's server is throw-away


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_db(admin_dsn, name)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), size=(n, 12))
    return [f"message {i}: " + " ".join(WORDS[j] for j in row) for i, row in enumerate(picks)]


def clustered_vectors(n: int, dim: int = 384, centers: int = 2_000, seed: int = 0, base: Any = None) -> np.ndarray:
    """Unit vectors around ``centers`` topic centroids (like sentence embeddings, unlike uniform noise).

    With ``base`` (e.g. real MiniLM vectors of a few thousand texts) the centroids are those vectors.
    """
    rng = np.random.default_rng(seed)
    if base is None:
        base = rng.standard_normal((centers, dim)).astype(np.float32)
    base = np.asarray(base, dtype=np.float32)
    base = base / np.linalg.norm(base, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        idx = rng.integers(0, len(base), size=stop - start)
        chunk = base[idx] + 0.35 * rng.standard_normal((stop - start, dim)).astype(np.float32) / np.sqrt(dim)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/mean in milliseconds of ``samples`` given in seconds."""
    ms = sorted(s * 1000 for s in samples)
    return {
        "n": len(ms),
        "p50": statistics.median(ms),
        "p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "mean": statistics.fmean(ms),
    }


def timed(fn: Callable[[int], Any], n: int, warmup: int = 5) -> dict[str, float]:
    for i in range(warmup):
        fn(-1 - i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def machine() -> str:
    import platform

    load = os.getloadavg()
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, load avg {load[0]:.1f}"


class PeersModelEmbedder(HashingEmbedder):
    """Opens a store of all-MiniLM-L6-v2 vectors (a data dir ``peers.py`` loaded) without loading the
    model: the benchmarks that use it give every vector they store (a question is embedded by hashing)."""

    model_name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        super().__init__(384)


def unit_vectors(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    """``n`` random float32 vectors of length 1 drawn from ``rng``."""
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


class PrecomputedEmbedder:
    """An embedder that returns the vector stored for each text in ``table``: nothing is embedded
    while timing (the database work is what the benchmarks compare)."""

    model_name = "precomputed"

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension
        self.table: dict[str, np.ndarray] = {}

    def embed(self, items: Any) -> np.ndarray:
        return np.stack([self.table[t] for t in items])
