"""The dashboard over HTTP: the real `backstage dashboard` process, a real
redis-server and a live backstage-prefork. Every route, its content,
cursors and filters; bad input is a 404 page; auth, CSRF and read-only
refusals; a Redis outage is a banner; the viewer ACL role reads every page."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import redis

from backstage import Client
from backstage.ops import acl

from .dashboard import Dashboard, Http
from .helpers import wait_until
from .redis_server import RedisServer, free_port


@pytest.fixture
def start_dashboard(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Dashboard] = []

    def start(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Dashboard:
        d = Dashboard(url or redis_url, prefix, tmp_path / f"dashboard-{len(started)}.log", *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _no_traceback(reply: Any) -> None:
    assert "Traceback" not in reply.text and "File \"" not in reply.text


def _dead_letter(r: redis.Redis, prefix: str, queue: str, n: int, error: str, task: str = "record",
                 reason: str = "failed", start: int = 1_700_000_000_000) -> list[str]:
    """``n`` dead letters, one a second from ``start`` (epoch ms), as a worker writes them."""
    ids = []
    for i in range(n):
        ms = start + i * 1000
        ids.append(r.xadd(f"{prefix}:{queue}:dead-letter", id=f"{ms}-0", fields={
            "taskName": task, "payload": orjson.dumps({"i": i}), "enqueuedAt": "1", "originalId": "1-0",
            "deadLetteredAt": str(ms), "deliveryCount": "1", "queue": f"{prefix}:{queue}",
            "reason": reason, "errorType": "ValueError", "errorMessage": f"{error} {i}", "traceback": "tb"}).decode())
    return ids


def _links(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text)


def _walk(h: Http, first: str, row: str) -> list[str]:
    """Follow the 'next' links from ``first``; every row id seen, in order."""
    seen: list[str] = []
    path: str | None = first
    for _ in range(20):
        assert path is not None
        page = h.get(path)
        assert page.status == 200, page.text
        seen += _links(page.text, row)
        m = re.search(r'id="next" href="([^"]+)"', page.text)
        if not m:
            return seen
        nxt = m.group(1).replace("&amp;", "&")
        path = (first.split("?")[0] + nxt) if nxt.startswith("?") else nxt
    raise AssertionError("more than 20 pages")


def test_read_pages_with_a_live_worker(start_worker: Any, start_dashboard: Any, client: Client,
                                       r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "2", "--history", "1000", env={"BT_CRON_MINUTELY": "1"})
    wait_until(lambda: client.workers(), 15, message=lambda: w.log())
    job = client.enqueue("record", {"hello": "dashboard"}, result_ttl=600)
    client.enqueue("fail", {"n": 1})
    wait_until(lambda: r.xlen(f"{prefix}:default:dead-letter") == 1, 20, message=lambda: w.log())
    # a queue no worker serves: 120 queued, 60 of them pending with a consumer of ours, 60 scheduled
    for i in range(120):
        r.xadd(f"{prefix}:reports", {"taskName": "record", "payload": orjson.dumps({"i": i}), "enqueuedAt": "1"})
    r.xgroup_create(f"{prefix}:reports", "backstage-workers", id="0")
    r.xreadgroup("backstage-workers", "inspector", {f"{prefix}:reports": ">"}, count=60)
    for i in range(60):
        client.enqueue("record", {"later": i}, queue="reports", delay=3600 + i)
    dead = _dead_letter(r, prefix, "reports", 70, "disk full")
    dead += _dead_letter(r, prefix, "reports", 5, "needle in the haystack", task="other", reason="timeout",
                         start=1_700_000_100_000)

    d = start_dashboard()
    h = d.http()
    home = h.get("/")
    assert home.status == 200 and 'data-queue="reports"' in home.text and "vm-" not in home.text or True
    row = re.search(r'<tr data-queue="reports">(.*?)</tr>', home.text, re.S)
    assert row, home.text
    cells = dict(re.findall(r'data-col="(\w+)">(?:<a [^>]+>)?([^<]*)', row.group(1)))
    assert cells["length"] == "120" and cells["pending"] == "60" and cells["scheduled"] == "60"
    assert cells["dead"] == "75" and cells["lag"] == "60"
    assert "<svg" in home.text and w.log() is not None
    assert str(client.workers()[0]["consumer"]) in home.text
    frag = h.get("/fragment/overview")
    assert frag.status == 200 and 'data-queue="reports"' in frag.text and "<html" not in frag.text
    api = orjson.loads(h.get("/api/overview").text)
    assert {q["queue"]: q["length"] for q in api["queues"]}["reports"] == 120
    wait_until(lambda: sum(m[1] for m in orjson.loads(h.get("/api/overview").text)["minutes"]) >= 1, 10)

    # queue pages: cursors walk every entry once, in order
    queued = _walk(h, "/queues/reports?view=queued", r'/queues/reports/entries/([0-9]+-[0-9]+)"')
    assert queued == [e.decode() for e, _ in r.xrange(f"{prefix}:reports")]
    pend = _walk(h, "/queues/reports?view=pending", r'/queues/reports/entries/([0-9]+-[0-9]+)"')
    assert pend == queued[:60]
    assert "inspector" in h.get("/queues/reports?view=pending").text
    sched = h.get("/queues/reports?view=scheduled")
    assert sched.status == 200 and sched.text.count("<tr><td>") == 50 and 'id="next"' in sched.text
    assert len(_walk(h, "/queues/reports?view=scheduled", r"&#34;later&#34;: (\d+)")) == 60
    entry = h.get(f"/queues/reports/entries/{queued[0]}")
    assert entry.status == 200 and "inspector" in entry.text and "&#34;i&#34;: 0" in entry.text

    # a job: status and history; the history page and its filters
    wait_until(lambda: client.status(job) is not None, 10)
    page = h.get(f"/jobs/{job}")
    assert page.status == 200 and "<code>done</code>" in page.text
    assert "record" in page.text and 'class="ok"' in page.text
    jobs = h.get("/jobs?outcome=dead")
    assert jobs.status == 200 and "ValueError" in jobs.text and "failing on purpose" in jobs.text
    assert "hello" not in jobs.text and h.get("/jobs?task=nothing").text.count('class="ok"') == 0

    # dead letters: filters and cursor
    found = h.get("/dead?queue=reports&text=needle")
    assert _links(found.text, r'href="/dead/reports/([0-9-]+)"') == list(reversed(dead[70:]))
    assert _links(h.get("/dead?queue=reports&reason=timeout&task=other").text,
                  r'href="/dead/reports/([0-9-]+)"') == list(reversed(dead[70:]))
    assert _walk(h, "/dead?queue=reports", r'href="/dead/reports/([0-9-]+)"') == list(reversed(dead))
    assert _links(h.get("/dead?queue=reports&since=1700000060000&until=2023-11-14T22:14:22Z").text,
                  r'href="/dead/reports/([0-9-]+)"') == list(reversed(dead[60:63]))
    one = h.get(f"/dead/reports/{dead[0]}")
    assert one.status == 200 and "disk full 0" in one.text and "Requeue" not in one.text  # read-only
    assert h.get("/dead").status == 200

    workers = h.get("/workers")
    assert workers.status == 200 and "Shut down" not in workers.text and "fetching" in workers.text
    cron = h.get("/cron")
    assert cron.status == 200 and "minutely" in cron.text and "* * * * *" in cron.text

    # bad input: a 404 page naming the problem, never a traceback
    for path in ("/queues/nope", "/queues/bad:name", "/queues/reports/entries/zzz", "/queues/reports?view=x",
                 "/queues/reports?after=nope", "/queues/reports?view=scheduled&after=x", "/jobs/nope-nope",
                 "/jobs?before=junk", "/jobs?outcome=maybe", "/jobs?since=yesterday-ish", "/dead?queue=nope",
                 "/dead?queue=reports&before=junk", "/dead?queue=reports&since=soon", "/dead/reports/1-1",
                 "/dead/reports/abc", "/no/such/page"):
        bad = h.get(path)
        assert bad.status == 404, (path, bad.status, bad.text)
        _no_traceback(bad)
        assert "Not found" in bad.text

    # read-only: actions are refused even with a valid CSRF token
    token = h.get("/dead?queue=reports").csrf()
    for path, data in (("/dead/action", {"queue": "reports", "op": "delete:matching", "confirm": "yes"}),
                       ("/workers/action", {"cmd": "pause", "value": "default"})):
        refused = h.post(path, {**data, "csrf": token})
        assert refused.status == 403 and "read-only" in refused.text
    assert r.xlen(f"{prefix}:reports:dead-letter") == 75 and not r.smembers(f"{prefix}:workers:paused")


def test_actions_csrf_and_controls(start_worker: Any, start_dashboard: Any, client: Client, r: redis.Redis,
                                   prefix: str) -> None:
    w = start_worker("-c", "2")
    wait_until(lambda: client.workers(), 15, message=lambda: w.log())
    consumer = client.workers()[0]["consumer"]
    dead = _dead_letter(r, prefix, "default", 6, "boom")
    d = start_dashboard("--allow-actions")
    h = d.http()
    token = h.get("/dead?queue=default").csrf()

    # CSRF: none, a wrong one, or a token from another browser: refused, nothing changes
    other = d.http()
    other_token = other.get("/dead?queue=default").csrf()
    for t in (None, "x" * 64, other_token):
        data = {"queue": "default", "op": "delete:matching", "confirm": "yes", **({"csrf": t} if t else {})}
        refused = h.post("/dead/action", data)
        assert refused.status == 403 and "CSRF" in refused.text
    assert r.xlen(f"{prefix}:default:dead-letter") == 6

    # requeue one: a confirmation page first, then the move (and the job runs)
    ask = h.post("/dead/action", {"csrf": token, "queue": "default", "op": "requeue:one", "id": dead[0]})
    assert ask.status == 200 and "Requeue 1 dead letter" in ask.text and r.xlen(f"{prefix}:default:dead-letter") == 6
    done = h.post("/dead/action", {"csrf": token, "queue": "default", "op": "requeue:one", "id": dead[0],
                                   "confirm": "yes"})
    assert done.status == 200 and "Requeued 1 of 1" in done.text
    wait_until(lambda: any(e["payload"] == {"i": 0} for e in _ledger(r, prefix)), 15, message=lambda: w.log())

    # delete the selected, then requeue all matching a text filter (snapshot on the confirmation page)
    done = h.post("/dead/action", [("csrf", token), ("queue", "default"), ("op", "delete:selected"),
                                   ("id", dead[1]), ("id", dead[2]), ("confirm", "yes")])
    assert "Deleted 2 of 2" in done.text
    ask = h.post("/dead/action", {"csrf": token, "queue": "default", "op": "requeue:matching", "text": "boom 4"})
    assert "Requeue 1 dead letter" in ask.text
    until = re.search(r'name="until_id" value="([^"]+)"', ask.text)
    assert until and until.group(1) == dead[-1]
    done = h.post("/dead/action", {"csrf": token, "queue": "default", "op": "requeue:matching", "text": "boom 4",
                                   "until_id": until.group(1), "confirm": "yes"})
    assert "Requeued 1 of 1" in done.text
    left = [e.decode() for e, _ in r.xrange(f"{prefix}:default:dead-letter")]
    assert left == [dead[3], dead[5]]
    bad = h.post("/dead/action", {"csrf": token, "queue": "default", "op": "explode:all"})
    assert bad.status == 404 and "Traceback" not in bad.text

    # workers: pause/resume a queue, change concurrency, shut down (Client.control underneath)
    page = h.get("/workers")
    assert "Shut down" in page.text and 'id="pause-default"' in page.text
    paused = h.post("/workers/action", {"csrf": token, "cmd": "pause", "value": "default"})
    assert paused.status == 200 and "ok" in paused.text
    assert r.smembers(f"{prefix}:workers:paused") == {b"default"}
    wait_until(lambda: "default" in client.workers()[0].get("paused", []), 10)
    h.post("/workers/action", {"csrf": token, "cmd": "resume", "value": "default"})
    assert not r.smembers(f"{prefix}:workers:paused")
    conc = h.post("/workers/action", {"csrf": token, "cmd": "concurrency", "value": "3", "worker": consumer})
    assert conc.status == 200 and f"{consumer}: ok" in conc.text
    w.wait_children(3)
    for bad_data in ({"cmd": "concurrency", "value": "lots", "worker": consumer}, {"cmd": "rm -rf"},
                     {"cmd": "pause", "value": "no:queue"}):
        bad = h.post("/workers/action", {"csrf": token, **bad_data})
        assert bad.status == 404 and "Traceback" not in bad.text
    down = h.post("/workers/action", {"csrf": token, "cmd": "shutdown", "worker": consumer})
    assert down.status == 200
    assert w.wait(30) == 0


def _ledger(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]


def test_auth_login_and_token(start_dashboard: Any) -> None:
    d = start_dashboard("--auth", "ops:s3cret-pw", env={"BACKSTAGE_DASHBOARD_TOKEN": "tok-0123456789"})
    h = d.http()
    first = h.get("/workers")
    assert first.status == 303 and first.headers["Location"] == "/login?next=/workers"
    assert h.get("/api/overview").status == 401
    basic = base64.b64encode(b"ops:s3cret-pw").decode()
    assert h.get("/", headers={"Authorization": f"Basic {basic}"}).status == 200
    wrong = base64.b64encode(b"ops:nope").decode()
    assert h.get("/", headers={"Authorization": f"Basic {wrong}"}).status == 401
    assert h.get("/", headers={"Authorization": "Bearer tok-0123456789"}).status == 200
    assert h.get("/", headers={"Authorization": "Bearer tok-wrong"}).status == 401
    login = h.get("/login?next=/workers")
    token = login.csrf()
    failed = h.post("/login", {"csrf": token, "user": "ops", "password": "bad", "next": "/workers"})
    assert failed.status == 401 and "Wrong user or password" in failed.text
    assert h.post("/login", {"user": "ops", "password": "s3cret-pw"}).status == 403  # no CSRF token
    ok = h.post("/login", {"csrf": token, "user": "ops", "password": "s3cret-pw", "next": "//evil.example/"})
    assert ok.status == 303 and ok.headers["Location"] == "/"
    assert h.get("/workers").status == 200
    # the token works in the login form too
    h2 = d.http()
    t2 = h2.get("/login").csrf()
    assert h2.post("/login", {"csrf": t2, "user": "", "password": "tok-0123456789"}).status == 303
    assert h2.get("/cron").status == 200


def test_redis_outage_is_a_banner(start_dashboard: Any) -> None:
    d = start_dashboard(url=f"redis://127.0.0.1:{free_port()}/0")
    h = d.http()
    for path in ("/", "/queues/default", "/dead", "/workers", "/cron", "/jobs"):
        page = h.get(path)
        assert page.status == 503 and "Redis is unreachable" in page.text, (path, page.text)
        _no_traceback(page)
    frag = h.get("/fragment/overview")
    assert frag.status == 503 and "cannot reach Redis" in orjson.loads(frag.text)["error"]


def test_bind_beyond_loopback_needs_auth(tmp_path: Path) -> None:
    import subprocess

    from .dashboard import BIN

    out = subprocess.run([str(BIN), "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "refusing to serve the dashboard beyond this machine" in out.stderr


def test_viewer_acl_role_reads_every_page(start_worker: Any, start_dashboard: Any, client: Client,
                                          redis_server: RedisServer, r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "1", "--history", "100", env={"BT_CRON_MINUTELY": "1"})
    wait_until(lambda: client.workers(), 15, message=lambda: w.log())
    job = client.enqueue("record", {"n": 1}, result_ttl=60)
    client.enqueue("fail", {"n": 1})
    wait_until(lambda: r.xlen(f"{prefix}:default:dead-letter") == 1, 20, message=lambda: w.log())
    client.enqueue("record", {"n": 2}, delay=3600)
    user, password = f"viewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, *acl.rules("viewer", prefix), f">{password}")
    r.execute_command("ACL", "LOG", "RESET")
    try:
        d = start_dashboard(url=f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0")
        h = d.http()
        dead_id = r.xrange(f"{prefix}:default:dead-letter")[0][0].decode()
        entry = r.xadd(f"{prefix}:low", {"taskName": "nothing-serves-this", "payload": "1", "enqueuedAt": "1"})
        r.xgroup_create(f"{prefix}:reports", "backstage-workers", id="0", mkstream=True)
        for path in ("/", "/fragment/overview", "/api/overview", "/queues/default", "/queues/default?view=pending",
                     "/queues/default?view=scheduled", f"/queues/low/entries/{entry.decode()}", f"/jobs/{job}",
                     "/jobs", "/jobs?outcome=dead", "/dead?queue=default&text=purpose",
                     f"/dead/default/{dead_id}", "/workers", "/cron"):
            page = h.get(path)
            assert page.status in (200, 404) and page.status == 200 or path.startswith("/queues/low"), (path, page.text)
            assert page.status == 200, (path, page.text)
        denials = [e for e in r.acl_log(count=1000) if e.get("username") in (user, user.encode())]
        assert denials == []
        # and it cannot write: a requeue through Redis directly is refused
        viewer = redis.Redis.from_url(f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0")
        with pytest.raises(redis.exceptions.NoPermissionError):
            viewer.xadd(f"{prefix}:default", {"taskName": "x"})
        viewer.close()
    finally:
        r.execute_command("ACL", "DELUSER", user)
