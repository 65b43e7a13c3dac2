"""Every module that declares store operations (``@operation``), imported so the registry
(:data:`ltst_memory._kernel.REGISTRY`) is complete before the stores or the code generator read it.
A new module of operations is added here."""

from . import _ops, bulk, crypto, privacy, recall, rehydrate, retention, stats, summarize

__all__ = ["_ops", "bulk", "crypto", "privacy", "recall", "rehydrate", "retention", "stats", "summarize"]
