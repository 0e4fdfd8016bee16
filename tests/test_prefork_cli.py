"""backstage-prefork start-up errors: clear messages and distinct exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys

from .redis_server import free_port
from .workers import BIN, TESTS


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
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


def test_missing_module_is_one_line_with_the_directory_and_a_hint():
    out = run("apps.does_not_exist")
    assert out.returncode == 3
    [line] = out.stderr.strip().splitlines()
    assert "cannot import 'apps.does_not_exist': no module named 'apps.does_not_exist'" in line
    assert f"current directory {TESTS}" in line and "PYTHONPATH" in line and "myapp/tasks.py" in line
    assert "Traceback" not in out.stderr


def test_app_given_as_a_file_path(redis_url, prefix, tmp_path):
    out = run("apps/no_app.py")  # apps/ and tests/ are packages: imported as tests.apps.no_app
    assert out.returncode == 3 and "module 'tests.apps.no_app' holds no Backstage app" in out.stderr
    out = run("apps/nothing_here.py")
    assert out.returncode == 3 and "no such Python file" in out.stderr
    # a loose file outside any package, given by absolute path, from elsewhere
    (tmp_path / "loose.py").write_text("from backstage import Backstage\napp = Backstage('redis://127.0.0.1:1/0')\n")
    out = run(f"{tmp_path / 'loose.py'}:nope")
    assert out.returncode == 3 and "module 'loose' has no attribute 'nope'" in out.stderr


def test_import_error_inside_the_app_keeps_its_traceback(tmp_path):
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    out = run(str(tmp_path / "broken.py"))
    assert out.returncode == 3
    assert "could not import" in out.stderr and "not_installed_anywhere" in out.stderr and "Traceback" in out.stderr


def test_option_typo_is_named_with_the_close_option():
    out = run("--concurency", "2", "apps.jobs")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "usage: backstage-prefork [options] module[:attr]",
        "backstage-prefork: error: unknown option --concurency (did you mean --concurrency?); "
        "see backstage-prefork --help"]
    out = run("--max-task-per-child=3", "apps.jobs")
    assert out.returncode == 2 and "did you mean --max-tasks-per-child?" in out.stderr


def test_version():
    from backstage import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"backstage-prefork {__version__}"


def test_wait_for_redis_waits_then_starts(tmp_path, prefix):
    from .redis_server import RedisServer

    server = RedisServer(tmp_path / "late")  # its port is chosen now; it starts later
    env = dict(BT_REDIS_URL=server.url, BT_PREFIX=prefix, PYTHONPATH=str(TESTS))
    import os

    proc = subprocess.Popen([str(BIN), "-c", "1", "--wait-for-redis", "30", "apps.jobs"], cwd=str(TESTS),
                            env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "waiting up to 30s for Redis" in line:
                break
        assert "master started" not in "".join(seen)
        server.start()
        for line in proc.stdout:
            if "master started" in line:
                break
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        server.stop()


def test_without_wait_for_redis_exit_code_4_at_once():
    out = run("--redis-url", f"redis://127.0.0.1:{free_port()}/0", "apps.jobs")
    assert out.returncode == 4 and "waiting" not in out.stderr


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


def test_reload_restarts_the_worker_with_the_changed_code(redis_url, prefix, tmp_path):
    import os

    import redis as redis_py

    from backstage import Client

    from .helpers import wait_until

    app_file = tmp_path / "devapp.py"
    source = (
        "import os\n"
        "from backstage import Backstage\n"
        "app = Backstage(os.environ['BT_REDIS_URL'], prefix=os.environ['BT_PREFIX'])\n"
        "@app.task('version')\n"
        "def version(p):\n"
        "    app.client.redis.rpush(app.prefix + ':versions', 'VERSION')\n"
    )
    app_file.write_text(source.replace("VERSION", "v1"))
    env = dict(os.environ, BT_REDIS_URL=redis_url, BT_PREFIX=prefix)
    env.pop("PYTHONPATH", None)
    log = open(tmp_path / "reload.log", "wb")
    proc = subprocess.Popen([str(BIN), "--reload", "-c", "1", "devapp"], cwd=str(tmp_path), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    r = redis_py.Redis.from_url(redis_url)
    client = Client(redis_url, prefix=prefix)
    text = lambda: (tmp_path / "reload.log").read_text()  # noqa: E731
    try:
        client.enqueue("version")
        wait_until(lambda: r.lrange(f"{prefix}:versions", 0, -1) == [b"v1"], 30, message=text)
        app_file.write_text(source.replace("VERSION", "v2"))
        wait_until(lambda: "devapp.py changed: restarting the worker" in text(), 30, message=text)
        wait_until(lambda: text().count("master started") == 2, 30, message=text)
        client.enqueue("version")
        wait_until(lambda: r.lrange(f"{prefix}:versions", 0, -1) == [b"v1", b"v2"], 30, message=text)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: passed on once, so the worker stops gracefully
        assert proc.wait(30) == 0, text()
        assert "master stopped" in text() and "stopping now" not in text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        client.close()
        r.close()


def test_reload_without_watchfiles_says_how_to_get_it(tmp_path):
    import os

    # a site directory that hides watchfiles (the test extra installs it)
    (tmp_path / "watchfiles.py").write_text("raise ImportError('hidden for this test')\n")
    out = run("--reload", "apps.jobs", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{TESTS}"})
    assert out.returncode == 2 and "--reload needs watchfiles: pip install 'backstage[reload]'" in out.stderr
