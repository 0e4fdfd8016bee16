"""Largest child RSS with --max-memory-per-child 200 and a handler that keeps 50 MB per job."""
import pathlib, sys, tempfile, time, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import orjson
from tests.redis_server import RedisServer
from tests.workers import Worker
from backstage import Client

d = pathlib.Path(tempfile.mkdtemp())
srv = RedisServer(d / "r").start()
prefix = "mb" + uuid.uuid4().hex[:8]
r = srv.client(); c = Client(srv.url, prefix=prefix)
try:
    c.enqueue_many([("h.grow", {"i": i, "mb": 50}) for i in range(20)])
    w = Worker(srv.url, prefix, d / "w.log", "-c", "1", "--max-memory-per-child", "200", app="apps.hostile")
    t0 = time.time()
    while r.llen(f"{prefix}:ledger") < 40 and time.time() - t0 < 120: time.sleep(0.05)
    led = [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]
    print(f"max RSS at a job's end: {max(e['rss'] for e in led if e['kind'] == 'done') / 2**20:.0f} MB; "
          f"at a job's start: {max(e['rss'] for e in led if e['kind'] == 'start') / 2**20:.0f} MB; "
          f"children used: {len({e['pid'] for e in led})}")
    w.cleanup()
finally:
    srv.stop()
