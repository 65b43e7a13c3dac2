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

OPS = ("append_one", "append_50", "read_last_50", "search_user_top10")
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
    fig, axes = plt.subplots(1, len(OPS), figsize=(4.2 * len(OPS), 3.6))
    for ax, op in zip(axes, OPS, strict=True):
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

    ours = sorted((r["size"], r) for r in results if r["system"] == "ours" and "search_variants" in r)
    if ours:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for name in ours[0][1]["search_variants"]:
            points = [(size, r["search_variants"][name]["p50"]) for size, r in ours]
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_title("one user's top-10 search (1,000 messages) as the table grows")
        ax.set_xlabel("stored messages (all users)")
        ax.set_ylabel("p50 ms, database side")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "user_search_growth.png", dpi=110)


if __name__ == "__main__":
    main()
