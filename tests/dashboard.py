"""Run the real ``backstage dashboard`` as a subprocess, and talk HTTP to it
(urllib with a cookie jar, so sessions and CSRF cookies work as in a browser)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .helpers import wait_until
from .redis_server import free_port

BIN = Path(sys.executable).with_name("backstage")


@dataclass
class Reply:
    status: int
    text: str
    headers: Any
    url: str

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, f"no CSRF token on the page:\n{self.text[:2000]}"
        return m.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Http:
    """A browser-like HTTP client: keeps cookies; redirects are returned, not followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, method: str, path: str, data: dict[str, Any] | list[tuple[str, str]] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=20) as resp:
                return Reply(resp.status, resp.read().decode(), resp.headers, resp.url)
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(), exc.headers, exc.url)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: Any, **kw: Any) -> Reply:
        return self.request("POST", path, data, **kw)


class Dashboard:
    """One ``backstage dashboard`` process on a free port."""

    def __init__(self, url: str, prefix: str, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen([str(BIN), "dashboard", "--port", str(self.port), "--redis-url", url,
                                      "--prefix", prefix, "--refresh", "0.5", *args],
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._up, 20, interval=0.05, message=lambda: f"the dashboard to listen; log:\n{self.log()}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the dashboard exited {self.proc.returncode}:\n{self.log()}")
        try:
            urllib.request.urlopen(self.base + "/static/app.js", timeout=2).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self) -> Http:
        return Http(self.base)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
