"""Routes, access token and error pages of the inspector (server-rendered Jinja2, a little htmx)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._present import MASK, error_status, jsonable, recall_view, rehydration_view
from ..errors import ConfigurationError, LTSTError, ValidationError
from ..models import ConversationContext, UserPreference, check_id
from . import _queries

__all__ = ["TOKEN_COOKIE", "TOKEN_HEADER", "create_app"]

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "ltst_token"
TOKEN_HEADER = "x-ltst-token"
PAGE_SIZE = 50
_HERE = Path(__file__).parent


class TokenGate:
    """Refuse every request without the token (401); ``?token=`` on a first visit sets a cookie."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _ok(self, value: str | None) -> bool:
        return value is not None and secrets.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and self._ok(given):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        if self._ok(request.headers.get(TOKEN_HEADER)) or self._ok(request.cookies.get(TOKEN_COOKIE)):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "401 Unauthorized: open the address with ?token=… that `ltst serve` printed "
            f"(or send the {TOKEN_HEADER} header).",
            status_code=401,
        )
        await response(scope, receive, send)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(form: Any, name: str, default: float) -> float:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number, got {raw[:40]!r}") from None


def create_app(storage: Any, *, token: str) -> Starlette:
    """The inspector over ``storage`` (a sync :class:`~ltst_memory.ConversationStorage`, owned by the
    caller), reachable only with ``token``. Serve it on 127.0.0.1 (``ltst serve`` does)."""
    if not isinstance(token, str) or len(token) < 16:
        raise ValidationError("the inspector's token must be a string of at least 16 characters")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["json"] = lambda v: json.dumps(jsonable(v), ensure_ascii=False, sort_keys=True)
    env.filters["ts"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v is not None else "—"
    env.globals["MASK"] = MASK

    def keyring_set() -> bool:
        from ..crypto import Keyring

        return Keyring.configured() is not None

    def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        fragment = request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"
        html = env.get_template(name).render(request=request, fragment=fragment, **values)
        return HTMLResponse(html, status_code=status)

    def handler(function: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def wrapped(request: Request) -> Response:
            try:
                return function(request)
            except LTSTError as exc:
                status = 400 if isinstance(exc, ConfigurationError) else error_status(exc)
                logger.info("inspector: %s %s -> %s %s", request.method, request.url.path, status, type(exc).__name__)
                return render(request, "error.html", status=status, error=type(exc).__name__, message=str(exc))

        wrapped.__name__ = function.__name__
        return wrapped

    def users(request: Request) -> Response:
        page = _int(request, "page", 1, 1, 1_000_000)
        rows = storage._run(_queries.list_users(storage._core, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE))
        return render(request, "users.html", users=rows[:PAGE_SIZE], page=page, more=len(rows) > PAGE_SIZE,
                      erased=request.query_params.get("erased"))  # fmt: skip

    def user(request: Request) -> Response:
        user_id = check_id("user_id", request.path_params["user_id"])
        scoped = storage.for_user(user_id)
        sessions = scoped.get_user_sessions(user_id, limit=_int(request, "limit", 100, 1, 10_000))
        summaries = {s.session_id: scoped.get_session_summary(s.session_id) for s in sessions}
        preferences = scoped.get_preferences(user_id)
        reveal = request.query_params.get("reveal") == "1" and keyring_set()
        sensitive = storage._run(_queries.sensitive_preferences(storage._core, user_id))
        return render(request, "user.html", user_id=user_id, sessions=sessions, summaries=summaries,
                      preferences=[p for p in preferences if not p.is_sensitive],
                      revealed={p.preference_key: p for p in preferences if p.is_sensitive} if reveal else {},
                      sensitive=sensitive, can_reveal=keyring_set(), reveal=reveal)  # fmt: skip

    def session(request: Request) -> Response:
        session_id = check_id("session_id", request.path_params["session_id"])
        found = storage.get_session(session_id)
        if found is None:
            from ..errors import SessionNotFoundError

            raise SessionNotFoundError(session_id)
        page = _int(request, "page", 1, 1, 1_000_000)
        summary = storage.get_session_summary(session_id)
        messages = storage.get_messages(session_id, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        pages = max(1, -(-summary.total_messages // PAGE_SIZE))
        return render(request, "session.html", session=found, summary=summary, messages=messages, page=page,
                      pages=pages, context=storage.get_context(session_id),
                      related=storage.get_related_sessions(session_id))  # fmt: skip

    def recall(request: Request) -> Response:
        user_id = check_id("user_id", request.path_params["user_id"])
        query = request.query_params.get("q", "")
        mode = request.query_params.get("mode", "recall")
        if mode not in ("recall", "search"):
            raise ValidationError(f"mode must be recall or search, got {mode[:40]!r}")
        session_id = request.query_params.get("session") or None
        limit = _int(request, "limit", 10, 1, 200)
        hits: list[dict[str, Any]] | None = None
        if query:
            scoped = storage.for_user(user_id)
            if mode == "recall":
                from ..recall import explain_scores

                with explain_scores() as parts:
                    found = scoped.recall(query, user_id=user_id, session_id=session_id, limit=limit)
                hits = recall_view(found, parts)
            else:
                pairs = scoped.search_messages(query, session_id=session_id, limit=limit, user_id=user_id)
                hits = [{"message": jsonable(m), "score": float(s), "parts": None} for m, s in pairs]
        return render(request, "recall.html", user_id=user_id, query=query, mode=mode, session_id=session_id or "",
                      limit=limit, hits=hits)  # fmt: skip

    def rehydrate(request: Request) -> Response:
        session_id = check_id("session_id", request.path_params["session_id"])
        query = request.query_params.get("q") or None
        budget = _int(request, "budget", 2000, 1, 1_000_000)
        found = storage.get_session(session_id)
        if found is None:
            from ..errors import SessionNotFoundError

            raise SessionNotFoundError(session_id)
        result = storage.for_user(found.user_id).rehydrate(session_id, query, token_budget=budget)
        return render(request, "rehydrate.html", session=found, query=query or "", budget=budget,
                      result=rehydration_view(result))  # fmt: skip

    def _save_context(request: Request, form: Any) -> Response:
        session_id = check_id("session_id", request.path_params["session_id"])
        found = storage.get_session(session_id)
        if found is None:
            from ..errors import SessionNotFoundError

            raise SessionNotFoundError(session_id)
        storage.for_user(found.user_id).store_context(ConversationContext(
            session_id=session_id, context_type=str(form.get("context_type") or ""),
            context_key=str(form.get("context_key") or ""), context_value=str(form.get("context_value") or ""),
            relevance_score=_float(form, "relevance_score", 0.5),
        ))  # fmt: skip
        return RedirectResponse(f"/sessions/{session_id}#context", status_code=303)

    def _save_preference(request: Request, form: Any) -> Response:
        user_id = check_id("user_id", request.path_params["user_id"])
        raw = str(form.get("preference_value") or "")
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValidationError(
                'preference_value must be JSON: "text" in double quotes, a number, true/false, a list or an object'
            ) from None
        storage.for_user(user_id).store_preference(UserPreference(
            user_id=user_id, preference_key=str(form.get("preference_key") or ""), preference_value=value,
            preference_type=str(form.get("preference_type") or "general"),
            confidence_score=_float(form, "confidence_score", 1.0), is_sensitive=form.get("is_sensitive") == "on",
        ))  # fmt: skip
        return RedirectResponse(f"/users/{user_id}#preferences", status_code=303)

    def _erase_user(request: Request, form: Any) -> Response:
        user_id = check_id("user_id", request.path_params["user_id"])
        if form.get("confirm") != user_id:
            raise ValidationError(f"type the user id {user_id!r} to confirm the erase; nothing was deleted")
        storage.delete_user(user_id)
        return RedirectResponse(f"/?erased={user_id}", status_code=303)

    def _erase_session(request: Request, form: Any) -> Response:
        session_id = check_id("session_id", request.path_params["session_id"])
        if form.get("confirm") != session_id:
            raise ValidationError(f"type the session id {session_id!r} to confirm the delete; nothing was deleted")
        found = storage.get_session(session_id)
        user_id = found.user_id if found is not None else None
        storage.delete_session(session_id)
        return RedirectResponse(f"/users/{user_id}" if user_id else "/", status_code=303)

    def _delete_message(request: Request, form: Any) -> Response:
        raw = request.path_params["message_id"]
        if not raw.isdigit():
            raise ValidationError(f"message_id must be a positive whole number, got {raw[:40]!r}")
        gone = storage.delete_message(int(raw))
        return RedirectResponse(f"/sessions/{gone['session_id']}", status_code=303)

    async def _in_thread(request: Request, function: Callable[[Request, Any], Response], form: Any) -> Response:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(handler(lambda r: function(r, form)), request)

    def posting(function: Callable[[Request, Any], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            form = await request.form()
            return await _in_thread(request, function, form)

        return endpoint

    routes = [
        Route("/", handler(users)),
        Route("/users/{user_id:path}/recall", handler(recall)),
        Route("/users/{user_id:path}/preferences", posting(_save_preference), methods=["POST"]),
        Route("/users/{user_id:path}/erase", posting(_erase_user), methods=["POST"]),
        Route("/users/{user_id:path}", handler(user)),
        Route("/sessions/{session_id:path}/rehydrate", handler(rehydrate)),
        Route("/sessions/{session_id:path}/context", posting(_save_context), methods=["POST"]),
        Route("/sessions/{session_id:path}/erase", posting(_erase_session), methods=["POST"]),
        Route("/sessions/{session_id:path}", handler(session)),
        Route("/messages/{message_id}/delete", posting(_delete_message), methods=["POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
        Middleware(TokenGate, token=token),
    ]
    return Starlette(routes=routes, middleware=middleware)
