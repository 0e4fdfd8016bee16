"""The Starlette application: routes, the auth/CSRF/read-only gate, error pages.

:func:`create_app` builds it from a :class:`DashboardConfig`; the CLI serves
it with uvicorn. Errors never show a traceback: bad input is a 404 page, a
Redis outage a banner (503), anything else a plain 500 page (and a log line).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import jinja2
import redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import __version__
from ..connections import redis_conn
from ..errors import BackstageError, BrokerError
from .auth import CSRF_COOKIE, SESSION_COOKIE, Guard
from .charts import per_minute_svg
from .config import DashboardConfig
from .data import NotFound, Store, fmt_age, fmt_ms, pretty_json
from .routes import Pages, error_page, form, one

__all__ = ["create_app"]

log = logging.getLogger("backstage.web")
HERE = Path(__file__).resolve().parent
_OPEN = ("/login", "/static/")
_ACTIONS = ("/dead/action", "/workers/action")


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(ms=fmt_ms, age=fmt_age, pretty=pretty_json, chart=per_minute_svg)
    return Jinja2Templates(env=env)


class Gate(BaseHTTPMiddleware):
    """Login, read-only mode and CSRF, before any handler runs."""

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        app = request.app
        guard: Guard = app.state.guard
        path = request.url.path
        nonce = request.cookies.get(CSRF_COOKIE)
        fresh = nonce is None or len(nonce) > 64
        if fresh:
            nonce = guard.new_nonce()
        request.state.csrf = guard.csrf_token(nonce or "")
        resp = await self._check(request, guard, path, nonce or "", fresh)
        if resp is None:
            resp = await call_next(request)
        if fresh:
            resp.set_cookie(CSRF_COOKIE, nonce or "", httponly=True, samesite="strict")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        return resp

    async def _check(self, request: Request, guard: Guard, path: str, nonce: str, fresh: bool) -> Response | None:
        if not path.startswith(_OPEN) and not guard.allowed(request.headers.get("authorization"),
                                                            request.cookies.get(SESSION_COOKIE)):
            if request.method == "GET" and "authorization" not in request.headers and not path.startswith("/api/"):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return JSONResponse({"error": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="backstage"'})
        if request.method == "POST":
            if path in _ACTIONS and not guard.cfg.allow_actions:
                return await app_render(request, "refused.html", {
                    "page": "", "why": "This dashboard is read-only: start it with --allow-actions to requeue, "
                                       "delete or control workers."}, 403)
            token = one(await form(request), "csrf")
            if fresh or not guard.csrf_ok(nonce, token):
                return await app_render(request, "refused.html", {
                    "page": "", "why": "The form's CSRF token is missing or does not match this browser: "
                                       "reload the page and try again."}, 403)
        return None


async def app_render(request: Request, name: str, ctx: dict[str, Any], status: int) -> Response:
    return request.app.state.render(request, name, ctx, status=status)  # type: ignore[no-any-return]


def create_app(cfg: DashboardConfig, store: Store | None = None) -> Starlette:
    """The dashboard as an ASGI app (serve it with uvicorn)."""
    store = store or Store(cfg)
    templates = _templates()

    def render(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
        base = {"cfg": cfg, "version": __version__, "csrf": getattr(request.state, "csrf", ""),
                "banner": None, "prefix": store.keys.prefix, "where": store.where}
        return templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)

    pages = Pages(store, render)

    async def not_found(request: Request, exc: Exception) -> Response:
        msg = str(exc) if isinstance(exc, NotFound) else "no such page"
        if isinstance(exc, HTTPException) and exc.status_code != 404:
            return render(request, "error.html", {"page": "", "status": exc.status_code, "message": exc.detail},
                          exc.status_code)
        return render(request, "error.html", {"page": "", "status": 404, "message": msg}, 404)

    async def outage(request: Request, exc: Exception) -> Response:
        text = str(redis_conn.translate(exc, store.where)) if isinstance(exc, redis.RedisError) else str(exc)
        log.warning("redis error on %s: %s", request.url.path, text)
        if request.url.path.startswith(("/api/", "/fragment/")):
            return JSONResponse({"error": text}, status_code=503)
        return render(request, "error.html", {"page": "", "status": 503, "message": "", "banner": text}, 503)

    async def bad_input(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", {"page": "", "status": 400, "message": str(exc)}, 400)

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("error on %s", request.url.path)
        return error_page(500, "the dashboard hit an error; its log has the details")

    routes = [
        Route("/", pages.overview), Route("/fragment/overview", pages.overview_fragment),
        Route("/api/overview", pages.overview_json),
        Route("/queues/{queue}", pages.queue), Route("/queues/{queue}/entries/{entry_id}", pages.entry),
        Route("/jobs", pages.jobs), Route("/jobs/{job_id}", pages.job),
        Route("/dead", pages.dead), Route("/dead/action", pages.dead_action, methods=["POST"]),
        Route("/dead/{queue}/{entry_id}", pages.dead_entry),
        Route("/workers", pages.workers), Route("/workers/action", pages.worker_action, methods=["POST"]),
        Route("/cron", pages.cron),
        Route("/login", pages.login_page), Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Gate)], exception_handlers={
        NotFound: not_found, HTTPException: not_found, redis.RedisError: outage, BrokerError: outage, BackstageError: bad_input,
        Exception: crash,
    })
    app.state.guard = Guard(cfg)
    app.state.render = render
    app.state.store = store
    return app
