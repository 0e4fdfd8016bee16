"""The `backstage` operator CLI as a subprocess against a real redis-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from .redis_server import free_port

BIN = Path(sys.executable).with_name("backstage")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=30)


def test_enqueue_then_inspect(redis_url, prefix, r, keys):
    out = run("enqueue", "report.build", '{"kind": "daily"}', "--queue", "reports", "--redis-url", redis_url,
              "--prefix", prefix, "--json")
    assert out.returncode == 0, out.stderr
    job_id = orjson.loads(out.stdout)["job_id"]
    (_, fields), = r.xrange(keys.stream("reports"))
    assert fields[b"jobId"].decode() == job_id and fields[b"payload"] == b'{"kind":"daily"}'

    table = run("inspect", "--redis-url", redis_url, "--prefix", prefix)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "LENGTH", "PENDING"]
    assert any(line.split()[:2] == ["reports", "1"] for line in lines)

    data = orjson.loads(run("inspect", "--redis-url", redis_url, "--prefix", prefix, "--json").stdout)
    assert {q["queue"]: q["length"] for q in data["queues"]} == {"urgent": 0, "default": 0, "low": 0, "reports": 1}


def test_python_dash_m_is_the_same(redis_url, prefix):
    out = subprocess.run([sys.executable, "-m", "backstage", "inspect", "--redis-url", redis_url,
                          "--prefix", prefix, "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and orjson.loads(out.stdout)["prefix"] == prefix


def test_errors_are_one_line_and_nonzero(redis_url, prefix):
    bad_json = run("enqueue", "t", "{nope", "--redis-url", redis_url, "--prefix", prefix)
    assert bad_json.returncode == 1
    assert bad_json.stderr.startswith("backstage: payload is not valid JSON") and "Traceback" not in bad_json.stderr
    bad_queue = run("enqueue", "t", "--queue", "a:b", "--redis-url", redis_url, "--prefix", prefix)
    assert bad_queue.returncode == 1 and "invalid queue name 'a:b'" in bad_queue.stderr
    port = free_port()
    down = run("inspect", "--redis-url", f"redis://:pw123@127.0.0.1:{port}/0")
    assert down.returncode == 1
    assert f"127.0.0.1:{port}" in down.stderr and "pw123" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_option_typos_and_subcommand_usage():
    out = run("inspect", "--foo")
    assert out.returncode == 2
    assert out.stderr.startswith("usage: backstage inspect") and "unknown option --foo" in out.stderr
    out = run("inspect", "--prefx", "x")
    assert out.returncode == 2 and "unknown option --prefx (did you mean --prefix?)" in out.stderr
    out = run("dlq", "list", "default", "--taks", "x")
    assert out.returncode == 2
    assert out.stderr.startswith("usage: backstage dlq list") and "did you mean --task?" in out.stderr
    from backstage import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"backstage {__version__}"


def test_inspect_counts_live_consumers_and_shows_persistence(redis_url, prefix, r, keys):
    stream = keys.stream("default")
    r.xgroup_create(stream, "backstage-workers", id="$", mkstream=True)
    for name in ("live-1", "stopped-1", "stopped-2"):
        r.xgroup_createconsumer(stream, "backstage-workers", name)
    r.zadd(f"{prefix}:workers", {"live-1": 10**13})  # only live-1 heartbeats
    data = orjson.loads(run("inspect", "--redis-url", redis_url, "--prefix", prefix, "--json").stdout)
    row = next(q for q in data["queues"] if q["queue"] == "default")
    assert (row["consumers"], row["stale_consumers"]) == (1, ["stopped-1", "stopped-2"])
    assert data["persistence"]["aof"] is False and data["persistence"]["maxmemory_policy"]
    table = run("inspect", "--redis-url", redis_url, "--prefix", prefix)
    assert table.returncode == 0
    assert "stale consumers: stopped-1, stopped-2 (stopped workers" in table.stdout
    assert "redis: AOF off" in table.stdout and "warning: Redis at" in table.stdout and "appendonly yes" in table.stdout


def test_job_without_status_says_how_to_keep_one(redis_url, prefix):
    out = run("job", "nope-1", "--redis-url", redis_url, "--prefix", prefix)
    assert out.returncode == 1 and "no status kept for job nope-1" in out.stderr and "result_ttl" in out.stderr
