"""The local web inspector of ``ltst serve``: what the memory holds, and why a prompt came out as it did.

:func:`create_app` returns a Starlette application over a :class:`~ltst_memory.ConversationStorage`:
users → sessions → messages (paged, with roles, timestamps, metadata and branches), search and
``recall`` with each hit's score parts, the ``rehydrate`` result section by section with token counts,
editable context and preferences (sensitive values masked), erasing a session or a user after a
typed confirmation. Every request needs the access token (``?token=`` once, then a cookie; or the
``X-LTST-Token`` header). Needs ``pip install 'ltst-memory[serve]'``; see docs/inspector.md.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
