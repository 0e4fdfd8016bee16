"""backstage-prefork start-up errors: clear messages and distinct exit codes."""

from __future__ import annotations

import subprocess
import sys

from .redis_server import free_port
from .workers import BIN, TESTS


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    import os

    full = dict(os.environ, PYTHONPATH=str(TESTS), **(env or {}))
    return subprocess.run([str(BIN), *args], env=full, cwd=str(TESTS), capture_output=True, text=True, timeout=timeout)


def test_help_documents_signals_and_exit_codes():
    out = run("--help")
    assert out.returncode == 0
    for word in ("TERM, INT", "QUIT", "HUP", "TTIN", "exit codes", "--max-memory-per-child"):
        assert word in out.stdout


def test_module_without_app():
    out = run("apps.no_app")
    assert out.returncode == 3
    assert "holds no Backstage app" in out.stderr


def test_module_with_two_apps_lists_them():
    out = run("apps.two_apps")
    assert out.returncode == 3
    assert "several Backstage apps (one, two)" in out.stderr
    assert "apps.two_apps:one" in out.stderr


def test_missing_module():
    out = run("apps.does_not_exist")
    assert out.returncode == 3
    assert "could not import 'apps.does_not_exist'" in out.stderr
    assert "ModuleNotFoundError" in out.stderr


def test_bad_option_value(redis_url):
    out = run("-c", "0", "apps.jobs", env={"BT_REDIS_URL": redis_url})
    assert out.returncode == 2
    assert "concurrency=0" in out.stderr
    out = run("apps.jobs", env={"BT_REDIS_URL": redis_url, "BACKSTAGE_QUEUES": "default,bad:name"})
    assert out.returncode == 2 and "bad:name" in out.stderr


def test_redis_unreachable_names_endpoint_not_password():
    port = free_port()
    out = run("--redis-url", f"redis://:hunter2@127.0.0.1:{port}/0", "apps.jobs")
    assert out.returncode == 4
    assert f"127.0.0.1:{port}" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


def test_child_that_cannot_boot_stops_the_master(redis_url, prefix):
    out = run("-c", "2", "apps.jobs", env={"BT_REDIS_URL": redis_url, "BT_PREFIX": prefix, "BT_BOOT_FAIL": "1"})
    assert out.returncode == 3, out.stderr
    assert "could not boot" in out.stderr
    assert "database is not reachable (on purpose)" in out.stderr
    assert out.stderr.count("Traceback") <= 2  # one per child at most: no respawn storm
