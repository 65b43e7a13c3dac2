"""Plot the peer benchmark's results (needs matplotlib; run it with the peers' virtualenv if the
project's Python has none):

    /tmp/peers-venv/bin/python benchmarks/plot_peers.py docs/benchmarks/peers.json docs/benchmarks/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer_ops import OPS, SEARCHES

LABELS = {
    "ours": "ltst-memory",
    "lc_history": "langchain-postgres chat history",
    "lc_vectorstore": "langchain-postgres PGVectorStore",
    "langgraph": "LangGraph PostgresStore",
}

COLORS = {"ours": "tab:blue", "lc_history": "tab:orange", "lc_vectorstore": "tab:green", "langgraph": "tab:red"}


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = [r for r in json.loads(source.read_text())["results"] if "error" not in r]
    systems = [s for s in LABELS if any(r["system"] == s for r in results)]
    columns = -(-len(OPS) // 2)
    fig, grid = plt.subplots(2, columns, figsize=(4.2 * columns, 7.2))
    axes = list(grid.flat)
    for ax in axes[len(OPS) :]:
        ax.set_visible(False)
    for ax, op in zip(axes, OPS, strict=False):
        for system in systems:
            points = sorted(
                (r["size"], r[op]["p50"]) for r in results if r["system"] == system and isinstance(r.get(op), dict)
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=LABELS[system], color=COLORS[system])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{op} (p50)")
        ax.set_xlabel("stored messages")
        ax.set_ylabel("ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "peers_latency.png", dpi=110)

    fig, grid = plt.subplots(1, len(SEARCHES), figsize=(4.2 * len(SEARCHES), 3.6))
    for ax, op in zip(grid, SEARCHES, strict=True):
        for system in systems:
            points = sorted(
                (r["size"], r[op]["recall_at_10"])
                for r in results
                if r["system"] == system and isinstance(r.get(op), dict)
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=LABELS[system], color=COLORS[system])
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{op}: recall@10")
        ax.set_xlabel("stored messages")
        ax.grid(True, which="both", alpha=0.3)
    grid[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "peers_recall.png", dpi=110)


if __name__ == "__main__":
    main()
