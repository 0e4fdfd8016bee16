"""Django's Tasks framework on Backstage, with the real example project
(examples/django_project, SQLite) and the real ``manage.py backstage_worker``."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from .helpers import wait_until

django = pytest.importorskip("django")
PROJECT = Path(__file__).resolve().parents[1] / "examples" / "django_project"


@pytest.fixture(scope="module")
def project(backstage_redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {"EXAMPLE_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
           "BACKSTAGE_REDIS_URL": backstage_redis_server.url, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the settings module reads them once, at django.setup()
    sys.path.insert(0, str(PROJECT))
    try:
        django.setup()
    finally:
        # never leak them: later tests' workers would read BACKSTAGE_REDIS_URL
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    yield env
    sys.path.remove(str(PROJECT))


@pytest.fixture
def worker(project: dict[str, str], backstage_redis: Any, tmp_path: Path) -> Iterator[Any]:
    log = open(tmp_path / "worker.log", "wb")
    env = {**os.environ, **project, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, str(PROJECT / "manage.py"), "backstage_worker", "-c", "1"],
                            cwd=str(PROJECT), env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc, tmp_path / "worker.log"
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def test_view_enqueues_on_commit_and_the_worker_runs_it(project: Any, backstage_redis: Any, worker: Any) -> None:
    from django.test import Client
    from shop.models import Order
    from shop.tasks import explode, fulfil_order

    http = Client()
    resp = http.post("/orders", {"customer": "ada"})
    assert resp.status_code == 201, resp.content
    result_id = resp.json()["result_id"]
    failing = explode.enqueue("boom")

    proc, log = worker

    def finished() -> Any:
        assert proc.poll() is None, log.read_text()
        r = fulfil_order.get_result(result_id)
        return r if r.is_finished else None

    done = wait_until(finished, 30, message=lambda: log.read_text()[-3000:])
    assert str(done.status) == "SUCCESSFUL" and done.attempts == 1
    assert done.return_value == {"order": resp.json()["order"], "customer": "ada"}
    assert Order.objects.get(pk=resp.json()["order"]).fulfilled  # the child saw the committed row
    assert http.get(f"/orders/{result_id}").json() == {
        "status": "SUCCESSFUL", "attempts": 1, "return_value": {"order": resp.json()["order"], "customer": "ada"}}

    failed = wait_until(lambda: (lambda r: r if r.is_finished else None)(explode.get_result(failing.id)), 30)
    assert str(failed.status) == "FAILED"
    assert failed.errors[0].exception_class_path == "builtins.ValueError"
    assert "boom" in failed.errors[0].traceback
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()


def test_rolled_back_transaction_enqueues_nothing(project: Any, backstage_redis: Any) -> None:
    from django.test import Client
    from shop.models import Order

    before = Order.objects.count()
    resp = Client().post("/orders", {"customer": "bob", "declined": "1"})
    assert resp.status_code == 402
    assert Order.objects.count() == before
    assert backstage_redis.client().keys("djexample:*") == []


def test_priority_queue_and_run_after_map_onto_backstage(project: Any, backstage_redis: Any) -> None:
    from backstage.contrib.django.compat import TaskResultDoesNotExist
    from shop.tasks import fulfil_order, send_receipt

    r = backstage_redis.client()
    urgent = fulfil_order.enqueue(1)
    low = fulfil_order.using(priority=-5).enqueue(2)
    email = send_receipt.enqueue(3)
    later = send_receipt.using(run_after=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).enqueue(4)
    assert [e[1][b"jobId"].decode() for e in r.xrange("djexample:urgent")] == [urgent.id]
    assert [e[1][b"jobId"].decode() for e in r.xrange("djexample:low")] == [low.id]
    assert [e[1][b"jobId"].decode() for e in r.xrange("djexample:emails")] == [email.id]
    assert r.zcard("djexample:scheduled") == 1
    assert str(send_receipt.get_result(later.id).status) == "READY"
    assert str(urgent.status) == "READY" and urgent.args == [1]
    with pytest.raises(TaskResultDoesNotExist):
        fulfil_order.get_result("no-such-id")


DJANGO6_PYTHON = Path(__file__).resolve().parents[1] / ".venvs" / "django6" / "bin" / "python"


def test_the_same_tests_on_django_6_tasks_framework() -> None:
    """Django 6 has the Tasks framework built in (``django.tasks``) and needs
    Python 3.12+; ``./scripts/test`` makes ``.venvs/django6`` when this machine
    has such a Python. The tests above run there too, against ``django.tasks``."""
    if not DJANGO6_PYTHON.exists():
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        found = [*pyenv.glob("3.1[2-9]*/bin/python"), *filter(None, map(shutil.which, ("python3.12", "python3.13")))]
        if found:
            pytest.fail(f".venvs/django6 is missing although {found[0]} is here: run ./scripts/test, which makes it")
        pytest.skip("no Python 3.12+ on this machine for Django 6")
    check = subprocess.run([str(DJANGO6_PYTHON), "-c", "import django, django.tasks; print(django.VERSION[0])"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and int(check.stdout) >= 6, check.stderr
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    run = subprocess.run([str(DJANGO6_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "not test_the_same_tests_on_django_6"],
                         capture_output=True, text=True, timeout=300, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, run.stdout[-500:]
