"""The README's workflow example runs: ``examples/workflows/studio.py`` under the
real backstage-prefork and ``producer.py`` against it, on a Redis of its own
(the example uses the default prefix). ``tests/test_readme.py`` checks the
README blocks are these files verbatim."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from .redis_server import RedisServer
from .workers import Worker

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "workflows"


def test_readme_workflow_example_runs(aof_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BACKSTAGE_REDIS_URL", aof_server.url)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    w = Worker(aof_server.url, "backstage", tmp_path / "worker.log", "-c", "2", app="studio",
               env={"PYTHONPATH": str(EXAMPLE), "BACKSTAGE_REDIS_URL": aof_server.url})
    try:
        w.wait_children(2)
        runpy.run_path(str(EXAMPLE / "producer.py"))
        assert "Traceback" not in w.log(), w.log()[-3000:]
    finally:
        w.cleanup()
        sys.modules.pop("studio", None)
