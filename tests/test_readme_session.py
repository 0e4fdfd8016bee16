"""The README's unmarked Python examples run as shown, as one session.

``tests/test_readme.py`` runs the blocks marked ``<!-- example: … -->`` one
by one. The other ```python blocks (the core sections) are one session: they run in order, in one
namespace, against a private redis-server (its URL replaces
``redis://localhost:6379/0``), while a real ``backstage-prefork`` serves the
app the README builds (its imports, ``app = ...``, task and hook
definitions and ``app.cron(...)`` lines, picked out of the same blocks), so
``client.result(...)`` gets an answer and every job the README sends has a
handler. A block preceded by ``<!-- readme-test: skip (why) -->`` is not run
(a Cluster or a TLS server it names), nor is a marked one (test_readme.py's).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import redis

from .helpers import wait_until
from .redis_server import RedisServer
from .workers import BIN

README = Path(__file__).resolve().parent.parent / "README.md"
URL = "redis://localhost:6379/0"
_BLOCK = re.compile(r"(<!-- (?:readme-test: skip|example:)[^>]*-->\n)?```python\n(.*?)```", re.S)


def blocks() -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of each python block; skipped: marked."""
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 1, m[2], m[1] is not None) for m in _BLOCK.finditer(text)]


def app_module(code: str) -> str:
    """The definitions of ``code``: what a worker imports (no enqueues, no client calls)."""
    keep = []
    for node in ast.parse(code).body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef)):
            keep.append(node)
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["app"]:
            keep.append(node)
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and ast.unparse(node.value.func) == "app.cron"):
            keep.append(node)
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def test_every_python_block_is_found() -> None:
    found = blocks()
    assert len(found) >= 8
    assert README.read_text().count("<!-- readme-test: skip") == 2  # the Cluster and the TLS examples
    assert sum(not skipped for _, _, skipped in found) >= 8


def test_readme_python_examples_run(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    worker: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "worker.log"
    r = server.client()
    try:
        runnable = [(line, code.replace(URL, server.url)) for line, code, skipped in blocks() if not skipped]
        (tmp_path / "readme_app.py").write_text("\n".join(app_module(code) for _, code in runnable) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKSTAGE_")}
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([str(BIN), "-c", "1", "--heartbeat-interval", "0.3", "readme_app"],
                                      cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: r.zcard("backstage:workers") == 1, 20, message=lambda: log_path.read_text())
        namespace: dict[str, Any] = {"__name__": "readme"}
        for line, code in runnable:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - our README
            except Exception as exc:
                raise AssertionError(f"the README example at line {line} failed: {exc!r}\n"
                                     f"{log_path.read_text()[-2000:]}") from exc
        # the examples really ran, a worker included
        assert namespace["client"].result(namespace["job"], timeout=5) == {"url": "https://cdn.example/7.png"}
        # the last example shut the worker down, gracefully
        assert worker.wait(60) == 0, log_path.read_text()[-3000:]
        log = log_path.read_text()
        assert "does not define" not in log  # every cron entry names a task the README defines
        for key in r.scan_iter(match="backstage:*:dead-letter"):
            reasons = [f[b"reason"] for _, f in r.xrange(key)]
            assert b"unknown-task" not in reasons, (key, r.xrange(key))
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        with contextlib.suppress(redis.RedisError):
            r.close()
        server.kill()
