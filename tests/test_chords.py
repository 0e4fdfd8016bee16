"""Groups and chords through the real worker: results in order, failure
policies, a chord returned by a chain step, and a 1,000-member chord that
survives children and a master killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import threading

import orjson
import pytest

from backstage import Chord, Group, InvalidJobError, Job

from .helpers import wait_until


def ledger(r, keys, kind: str) -> list[dict]:
    return [e for e in map(orjson.loads, r.lrange(f"{keys.prefix}:ledger", 0, -1)) if e["kind"] == kind]


def test_chord_callback_gets_the_results_in_member_order(client, r, keys, start_worker):
    cid = client.enqueue_chord([("double", {"n": i}) for i in range(20)], callback=Job("merge", {"tag": "x"}, result_ttl=60))
    assert client.status(cid) == "waiting"  # the callback keeps a status (result_ttl)
    assert client.group_status(cid) == {"id": cid, "state": "running", "total": 20, "done": 0, "failed": 0,
                                        "pending": 20}
    w = start_worker("-c", "2", app="apps.flows")
    assert client.result(cid, timeout=30) == {"n": 20, "failures": 0}
    [merge] = ledger(r, keys, "merge")
    assert merge["payload"] == {"chord": cid, "payload": {"tag": "x"}, "results": [2 * i for i in range(20)],
                                "failures": []}
    assert merge["job"] == cid
    assert client.group_status(cid)["state"] == "done" and client.group_status(cid)["done"] == 20
    assert 0 < r.pttl(keys.chord(cid)) <= 86400_000
    assert "Traceback" not in w.log()


def test_group_status_counts_and_a_handler_returning_a_group(client, r, keys, start_worker):
    gid = client.enqueue_group([Job("record", {"i": 0}), ("record", {"i": 1}), ("boom", 2)], group_id="g-1", ttl=60)
    assert gid == "g-1"
    with pytest.raises(Exception, match="exists already"):
        client.enqueue_group([("record", {})], group_id="g-1")
    client.enqueue("fan.group", {"n": 5, "id": "g-2"})
    start_worker("-c", "2", app="apps.flows")
    wait_until(lambda: client.group_status("g-1")["pending"] == 0, 20)
    assert client.group_status("g-1") == {"id": "g-1", "state": "failed", "total": 3, "done": 2, "failed": 1,
                                          "pending": 0}
    assert 0 < r.pttl(keys.chord("g-1")) <= 60_000
    wait_until(lambda: (client.group_status("g-2") or {}).get("state") == "done", 20)
    assert client.group_status("g-2")["done"] == 5


def test_chord_nested_in_a_chain(client, r, keys, start_worker):
    client.enqueue("chain.start", {"n": 7})
    start_worker("-c", "2", app="apps.flows")
    [merge] = wait_until(lambda: ledger(r, keys, "merge"), 20)
    p = merge["payload"]
    assert p["results"] == [2 * i for i in range(7)] and p["payload"] == {"from": "fan.out"}
    assert client.result(p["chord"], timeout=10) == {"n": 7, "failures": 0}


def test_dead_lettered_member_with_the_callback_policy(client, r, keys, start_worker):
    cid = client.enqueue_chord([("double", {"n": 1}), ("boom", "x"), ("double", {"n": 3})],
                               callback=Job("merge", None, result_ttl=60), on_failure="callback")
    start_worker("-c", "2", app="apps.flows")
    assert client.result(cid, timeout=30) == {"n": 3, "failures": 1}
    [merge] = ledger(r, keys, "merge")
    assert merge["payload"]["results"] == [2, None, 6]
    [f] = merge["payload"]["failures"]
    assert f["index"] == 1 and f["reason"] == "failed" and f["errorType"] == "ValueError"
    assert "boom x" in f["errorMessage"]
    assert r.xlen(keys.dead_letter("default")) == 1  # the member itself


def test_dead_lettered_member_with_the_dead_letter_policy(client, r, keys, start_worker):
    cid = client.enqueue_chord([("double", {"n": 1}), ("boom", "y")], callback=Job("merge", {"k": 1}, result_ttl=60),
                               on_failure="dead-letter", queue="low")
    start_worker("-c", "2", app="apps.flows")
    wait_until(lambda: client.status(cid) == "dead", 20)
    assert not ledger(r, keys, "merge")
    [(_, dl)] = r.xrange(keys.dead_letter("default"), "-", "+")  # the callback's queue: default
    assert dl[b"taskName"] == b"merge" and dl[b"errorType"] == b"ChordFailed" and dl[b"reason"] == b"failed"
    payload = orjson.loads(dl[b"payload"])
    assert payload["results"] == [2, None] and payload["failures"][0]["index"] == 1
    assert r.xlen(keys.dead_letter("low")) == 1  # the failed member
    assert client.group_status(cid)["state"] == "failed"


@pytest.mark.parametrize("call, words", [
    (lambda c: c.enqueue_group([]), "at least one member"),
    (lambda c: c.enqueue_group([("t", 1)], delay=1), "no delay"),
    (lambda c: c.enqueue_group([Job("t", 1, unique=True, job_id="a")]), "member 0"),
    (lambda c: c.enqueue_group([("t", 1)], ttl=0), "ttl=0"),
    (lambda c: c.enqueue_group([("t", 1)], group_id="a b"), "group_id='a b'"),
    (lambda c: c.enqueue_chord([("t", 1)], callback=("m", 1), on_failure="ignore"), "on_failure='ignore'"),
    (lambda c: c.enqueue_chord([("t", 1)], callback="m"), "callback='m'"),
    (lambda c: Chord([("t", 1)]), "callback="),
    (lambda c: Group([1]), "Group: expected"),
])
def test_bad_groups_are_refused_by_name(client, call, words):
    with pytest.raises(InvalidJobError) as info:
        call(client)
    assert words in str(info.value)


def test_chord_of_1000_survives_sigkilled_children_and_a_master(client, r, keys, start_worker):
    args = ("-c", "2", "--idle-timeout", "1", "--max-deliveries", "50")
    a = start_worker(*args, app="apps.flows")
    b = start_worker(*args, app="apps.flows")
    a.wait_children(2)
    b.wait_children(2)
    n = 1000
    cid = client.enqueue_chord([("noop", {"i": i}) for i in range(n)], callback=("merge", None))
    live = [a, b]
    stop = threading.Event()
    kills = [0]

    def killer() -> None:  # a child of a live master SIGKILLed every 0.5 s
        rng = random.Random(16)
        while not stop.wait(0.5):
            kids = [k for w in list(live) for k in w.children()]
            if kids:
                try:
                    os.kill(rng.choice(kids).pid, signal.SIGKILL)
                    kills[0] += 1
                except ProcessLookupError:
                    pass

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        wait_until(lambda: client.group_status(cid)["done"] >= 100, 60)
        live.remove(a)
        a.kill()  # its pending members are reclaimed after --idle-timeout
        at_kill = client.group_status(cid)
        print("at the master's kill:", at_kill)
        c = start_worker(*args, app="apps.flows")
        live.append(c)
        wait_until(lambda: client.group_status(cid)["pending"] == 0, 90,
                   message=lambda: f"{client.group_status(cid)}; {b.log()[-1500:]}")
    finally:
        stop.set()  # the callback itself runs undisturbed: its runs are its enqueues
        t.join(5)
    [merge] = wait_until(lambda: ledger(r, keys, "merge"), 30)
    assert merge["payload"]["results"] == [{"i": i} for i in range(n)]
    assert merge["payload"]["failures"] == []
    st = client.group_status(cid)
    assert st == {"id": cid, "state": "done", "total": n, "done": n, "failed": 0, "pending": 0}
    wait_until(lambda: r.xpending(keys.stream("default"), "backstage-workers")["pending"] == 0, 30)
    assert len(ledger(r, keys, "merge")) == 1  # enqueued exactly once
    assert kills[0] >= 1 and at_kill["pending"] > 0
    print("children killed:", kills[0], "reclaimed:", b.log().count("reclaim") + c.log().count("reclaim"))


def test_groups_and_chords_in_inline_mode() -> None:
    from backstage import Backstage

    app = Backstage()

    @app.task("double")
    def double(p: dict) -> int:
        return p["n"] * 2

    @app.task("boom")
    def boom(p: object) -> None:
        raise ValueError("no")

    @app.task("merge")
    def merge(p: dict) -> dict:
        return {"results": p["results"], "failures": [f["index"] for f in p["failures"]]}

    @app.task("fan")
    def fan(p: dict) -> Chord:
        return Chord([("double", {"n": i}) for i in range(p["n"])] + [("boom", None)], callback=("merge", None))

    with app.testing.inline() as run:
        cid = app.enqueue_chord([("double", {"n": 1}), ("double", {"n": 2})], callback=("merge", {}))
        app.enqueue("fan", {"n": 2})
        app.enqueue_group([("double", {"n": 5})], group_id="g")
    merges = run.by_task("merge")
    assert [m.result for m in merges] == [{"results": [2, 4], "failures": []},
                                          {"results": [0, 2, None], "failures": [2]}]
    assert merges[0].payload["chord"] == cid and run.groups["g"]["done"] == 1
    with app.testing.capture() as cap:
        app.enqueue_chord([("double", {"n": 1})], callback=("merge", {}))
    assert cap.tasks() == ["double", "merge"]


def test_member_dead_lettered_by_the_reclaimer_still_ends_its_chord(client, r, keys, start_worker):
    """A member that takes its whole worker down is dead-lettered by another
    master's reclaimer (max-deliveries): it counts as failed, the callback runs."""
    args = ("-c", "1", "--idle-timeout", "1", "--max-deliveries", "1")
    a = start_worker(*args, app="apps.flows")
    b = start_worker(*args, app="apps.flows")
    a.wait_children(1)
    b.wait_children(1)
    cid = client.enqueue_chord([("double", {"n": 4}), ("kill.master", None)], callback=Job("merge", {}, result_ttl=60),
                               group_id="poison", queue="default")
    out = client.result(cid, timeout=30)
    [merge] = ledger(r, keys, "merge")
    failures = {f["index"]: f for f in merge["payload"]["failures"]}
    # the poison member always fails; the other one too if it was still pending on the
    # master that died (--max-deliveries 1 dead-letters whatever that master held)
    assert 1 in failures and out == {"n": 2, "failures": len(failures)}
    assert all(f["reason"] == "max-deliveries" and f["errorType"] == "MaxDeliveries" for f in failures.values())
    assert merge["payload"]["results"] == [None if 0 in failures else 8, None]
    assert (a.proc.poll() is None) != (b.proc.poll() is None)  # one master was taken down
