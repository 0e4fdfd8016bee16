"""Time from a master's kill -9 to its orphaned job running, behind a deep backlog."""
import pathlib, sys, tempfile, time, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import orjson
from tests.redis_server import RedisServer
from tests.workers import Worker
from backstage import Client

d = pathlib.Path(tempfile.mkdtemp())
srv = RedisServer(d / "r").start()
prefix = "ob" + uuid.uuid4().hex[:8]
r = srv.client()
c = Client(srv.url, prefix=prefix)
def ledger():
    return [orjson.loads(x) for x in r.lrange(f"{prefix}:ledger", 0, -1)]
try:
    dead = Worker(srv.url, prefix, d / "dead.log", "-c", "1", "--heartbeat-interval", "0.3", app="apps.hostile")
    c.enqueue("h.sleep", {"tag": "orphan", "s": 600, "then": 0.0})
    while not ledger(): time.sleep(0.05)
    dead.cleanup(); t_kill = time.time()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 11000
    c.enqueue_many([("h.sleep", {"tag": "b", "s": 0.002}) for _ in range(n)])
    w = Worker(srv.url, prefix, d / "w.log", "-c", "2", "--idle-timeout", "2", app="apps.hostile")
    while True:
        done = [e for e in ledger() if e["kind"] == "done"]
        o = [e for e in done if e["payload"]["tag"] == "orphan"]
        if o:
            print(f"orphan ran {o[0]['t'] - t_kill:.1f} s after the kill; backlog jobs done before it: "
                  f"{sum(1 for e in done if e['payload']['tag'] == 'b' and e['t'] < o[0]['t'])} of {n}")
            break
        if time.time() - t_kill > 240: print("no orphan after 240 s"); break
        time.sleep(0.2)
    w.cleanup()
finally:
    srv.stop()
