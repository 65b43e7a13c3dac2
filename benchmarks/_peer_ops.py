"""The operations `peers.py` times and `plot_peers.py` draws, in one place (no imports: the plot runs
in the peers' virtualenv)."""

OPS = (
    "append_one",
    "append_one_warm",
    "append_50",
    "read_last_50",
    "search_user_top10",
    "search_mid_user",
    "search_big_user",
    "search_unscoped",
    "rehydrate",
)
SEARCHES = ("search_user_top10", "search_mid_user", "search_big_user", "search_unscoped")
