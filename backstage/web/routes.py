"""Request handlers of the dashboard: parse and check input, call
:mod:`.data` / :mod:`.deadletters`, render a template.

Read handlers are plain functions (Starlette runs them in its thread pool:
redis-py is blocking); POST handlers read the form, then do their Redis
work in the pool too. Bad input raises :class:`NotFound` (a 404 page).
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Mapping

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..client import Client
from ..errors import ConfigError
from ..ops.dlq import DeadLetters, parse_since
from ..ops.history import build_filter
from ..protocol import wire
from . import deadletters as dl
from .auth import SESSION_COOKIE
from .data import ID_RE, PAGE, NotFound, Store

__all__ = ["Pages"]


def _q(request: Request, name: str, limit: int = 200) -> str:
    v = request.query_params.get(name, "").strip()
    if len(v) > limit:
        raise NotFound(f"query parameter {name!r} is too long")
    return v


def _cursor(request: Request, name: str = "after") -> str | None:
    v = _q(request, name)
    if not v:
        return None
    if not ID_RE.match(v):
        raise NotFound(f"{name}={v!r} is not a cursor (a stream id like 1700000000000-0)")
    return v


def _when(text: str, field: str) -> int | None:
    if not text:
        return None
    try:
        return parse_since(text, wire.now_ms())
    except ConfigError as exc:
        raise NotFound(str(exc).replace("--since", field)) from None


async def form(request: Request) -> dict[str, list[str]]:
    """The urlencoded body of a POST (no multipart: our forms never upload)."""
    body = await request.body()
    if len(body) > 1_000_000:
        raise NotFound("form too large")
    return urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def one(f: Mapping[str, list[str]], name: str) -> str:
    v = f.get(name, [""])
    return v[0].strip() if v else ""


class Pages:
    """The handlers, bound to one :class:`Store` and a ``render`` function."""

    def __init__(self, store: Store, render: Callable[..., Response]) -> None:
        self.store = store
        self.render = render

    # -- overview ------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", {"o": self.store.overview(), "page": "overview"})

    def overview_fragment(self, request: Request) -> Response:
        return self.render(request, "_overview_body.html", {"o": self.store.overview()})

    def overview_json(self, request: Request) -> Response:
        o = self.store.overview()
        return JSONResponse({"queues": o["queues"], "scheduled": o["scheduled"], "workers": o["workers"],
                             "minutes": o["minutes"], "paused": o["paused"], "now": o["now"]})

    # -- queue and job ----------------------------------------------------------------------
    def queue(self, request: Request) -> Response:
        queue = self.store.check_queue(request.path_params["queue"])
        view = _q(request, "view") or "queued"
        ctx: dict[str, Any] = {"queue": queue, "view": view, "page": "overview"}
        if view == "queued":
            ctx["rows"], ctx["next"] = self.store.queued(queue, _cursor(request))
        elif view == "pending":
            ctx["rows"], ctx["next"] = self.store.pending(queue, _cursor(request))
        elif view == "scheduled":
            ctx["rows"], ctx["next"] = self.store.scheduled(queue, _q(request, "after") or None)
        else:
            raise NotFound(f"view={view!r}: use queued, pending or scheduled")
        ctx["stats"] = next((r for r in self.store.overview()["queues"] if r["queue"] == queue), None)
        return self.render(request, "queue.html", ctx)

    def entry(self, request: Request) -> Response:
        queue = self.store.check_queue(request.path_params["queue"])
        return self.render(request, "job.html", {**self.store.entry(queue, request.path_params["entry_id"]),
                                                 "page": "jobs"})

    def job(self, request: Request) -> Response:
        return self.render(request, "job.html", {**self.store.job(request.path_params["job_id"]), "entry": None,
                                                 "page": "jobs"})

    def jobs(self, request: Request) -> Response:
        try:
            flt = build_filter(_q(request, "task"), _q(request, "outcome"), _q(request, "since"), _q(request, "id"),
                               _q(request, "queue"), _q(request, "error"), now_ms=wire.now_ms())
        except ConfigError as exc:
            raise NotFound(str(exc)) from None
        try:
            records, nxt = self.store.jobs(flt, _cursor(request, "before"))
        except ConfigError as exc:
            raise NotFound(str(exc)) from None
        return self.render(request, "jobs.html", {"records": records, "next": nxt, "page": "jobs",
                                                  "total": self.store.history.length(),
                                                  "args": dict(request.query_params)})

    # -- dead letters -----------------------------------------------------------------------
    def _dead_filter(self, get: Any) -> dl.DeadFilter:
        return dl.DeadFilter(task=get("task"), reason=get("reason"), text=get("text"),
                             since_ms=_when(get("since"), "since"), until_ms=_when(get("until"), "until"))

    def _default_dead_queue(self) -> str:
        for row in self.store.overview()["queues"]:
            if row["dead_letters"]:
                return str(row["queue"])
        return "default"

    def dead(self, request: Request) -> Response:
        queue = _q(request, "queue") or self._default_dead_queue()
        queue = self.store.check_queue(queue)
        flt = self._dead_filter(lambda n: _q(request, n))
        dls = DeadLetters(self.store.r, self.store.keys, queue)
        entries, nxt, read = dl.search(dls, flt, _cursor(request, "before"), PAGE)
        return self.render(request, "dead.html", {
            "queue": queue, "entries": entries, "next": nxt, "read": read, "flt": flt, "page": "dead",
            "total": dls.length(), "queues": self.store.queues(), "reasons": dl.reasons(),
            "args": {k: v for k, v in request.query_params.items() if k != "before"}})

    def dead_entry(self, request: Request) -> Response:
        queue = self.store.check_queue(request.path_params["queue"])
        entry_id = request.path_params["entry_id"]
        if not ID_RE.match(entry_id):
            raise NotFound(f"{entry_id!r} is not a dead-letter id (like 1700000000000-0)")
        dls = DeadLetters(self.store.r, self.store.keys, queue)
        e = dls.get(entry_id)
        if e is None:
            raise NotFound(f"no entry {entry_id} in {dls.stream}")
        return self.render(request, "dead_entry.html", {"queue": queue, "e": e, "page": "dead",
                                                        "problem": e.problem(), "target": dls.target_of(e)})

    async def dead_action(self, request: Request) -> Response:
        f = await form(request)
        return await run_in_threadpool(self._dead_action, request, f)

    def _dead_action(self, request: Request, f: dict[str, list[str]]) -> Response:
        queue = self.store.check_queue(one(f, "queue"))
        action, _, scope = one(f, "op").partition(":") if one(f, "op") else (one(f, "action"), "", one(f, "scope"))
        if action not in ("requeue", "delete") or scope not in ("one", "selected", "matching"):
            raise NotFound(f"action={action!r} scope={scope!r}: use requeue/delete and one/selected/matching")
        dls = DeadLetters(self.store.r, self.store.keys, queue)
        flt = self._dead_filter(lambda n: one(f, n))
        if scope == "matching":
            until = one(f, "until_id") or dls.last_id() or ""
            if until and not ID_RE.match(until):
                raise NotFound(f"until_id={until!r} is not a stream id")
            entries = list(dl.matching(dls, flt, until)) if until else []
        else:
            ids = [i for i in f.get("id", []) if i]
            if not ids:
                raise NotFound("select at least one dead letter")
            if len(ids) > 1000:
                raise NotFound("at most 1000 selected entries at once: use 'all matching'")
            entries = dl.load(dls, ids)
            until = ""
        ctx = {"queue": queue, "action": action, "scope": scope, "entries": entries[:PAGE], "count": len(entries),
               "flt": flt, "until_id": until, "form": {k: v for k, v in f.items() if k not in ("csrf", "confirm")},
               "page": "dead"}
        if one(f, "confirm") != "yes":
            return self.render(request, "confirm.html", ctx)
        res = dl.act(dls, action, entries)
        return self.render(request, "done.html", {**ctx, "res": res}, status=500 if res.error else 200)

    # -- workers and cron ---------------------------------------------------------------------
    def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", {**self.store.workers(), "queues": self.store.queues(),
                                                     "page": "workers"})

    async def worker_action(self, request: Request) -> Response:
        f = await form(request)
        return await run_in_threadpool(self._worker_action, request, f)

    def _worker_action(self, request: Request, f: dict[str, list[str]]) -> Response:
        cmd, worker, value = one(f, "cmd"), one(f, "worker") or None, one(f, "value")
        arg: Any = None
        if cmd in ("pause", "resume"):
            arg = self.store.check_queue(value)
        elif cmd == "concurrency":
            if not value.isdigit() or not 1 <= int(value) <= 1024:
                raise NotFound(f"concurrency {value!r}: expected a number of children from 1 to 1024")
            arg = int(value)
        elif cmd != "shutdown":
            raise NotFound(f"cmd={cmd!r}: use pause, resume, concurrency or shutdown")
        if cmd in ("concurrency", "shutdown") and worker is None:
            raise NotFound(f"{cmd}: name the worker")
        # the same path as `backstage control` (Client.control: P:control + replies; an admin user)
        with Client(self.store.cfg.redis_url, prefix=self.store.keys.prefix) as client:
            answers = client.control(cmd, arg, target=worker, timeout=2.0)
        return self.render(request, "control_done.html", {"cmd": cmd, "value": arg, "worker": worker,
                                                          "answers": answers, "page": "workers"})

    def cron(self, request: Request) -> Response:
        return self.render(request, "cron.html", {"entries": self.store.cron(), "page": "cron"})

    # -- login ------------------------------------------------------------------------------
    def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", {"next": _safe_next(_q(request, "next", 2000)), "page": "login"})

    async def login(self, request: Request) -> Response:
        f = await form(request)
        guard = request.app.state.guard
        nxt = _safe_next(one(f, "next"))
        if not guard.credentials_ok(one(f, "user"), one(f, "password")):
            return self.render(request, "login.html", {"next": nxt, "failed": True, "page": "login"}, status=401)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(SESSION_COOKIE, guard.new_session(one(f, "user") or "token"), httponly=True,
                        samesite="strict")
        return resp

    async def logout(self, request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp


def _safe_next(path: str) -> str:
    """Only paths on this site (no //host, no scheme): no open redirect."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def error_page(status: int, message: str) -> HTMLResponse:
    """A bare page for when templates cannot be used."""
    import html

    return HTMLResponse(f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{html.escape(message)}</p>",
                        status_code=status)


