"""Producer-chosen job ids and ``unique=True``, through the real worker."""

from __future__ import annotations

import pytest

from backstage import InvalidJobError, Job

from .helpers import wait_until


def test_job_id_is_the_producers(client, r, keys):
    assert client.enqueue("record", {"a": 1}, job_id="order-42") == "order-42"
    [(_, fields)] = r.xrange(keys.stream("default"))
    assert fields[b"jobId"] == b"order-42" and b"unique" not in fields
    assert client.enqueue_many([Job("record", 2, job_id="order-43")]) == ["order-43"]


@pytest.mark.parametrize("kwargs, words", [
    ({"job_id": "has space"}, ("job_id='has space'", "no spaces")),
    ({"job_id": ""}, ("job_id=''",)),
    ({"job_id": 'q"uote'}, ("job_id=",)),
    ({"unique": True}, ("unique=True needs a job_id",)),
    ({"job_id": "a", "unique": True, "dedupe_key": "k"}, ("dedupe_key= or unique=True",)),
])
def test_bad_job_ids_are_refused_by_name(client, kwargs, words):
    with pytest.raises(InvalidJobError) as info:
        client.enqueue("record", None, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_unique_refuses_a_second_job_until_the_first_settles(client, r, keys, start_worker):
    r.set(f"{keys.prefix}:hold:u1", 1)
    assert client.enqueue("hold", {"k": "u1"}, job_id="order-7", unique=True) == "order-7"
    assert client.enqueue("hold", {"k": "u1"}, job_id="order-7", unique=True) is None  # queued
    assert client.enqueue("hold", {"k": "u1"}, job_id="order-7", delay=5, unique=True) is None
    assert r.exists(keys.unique("order-7"))
    w = start_worker("-c", "1", app="apps.flows")
    wait_until(lambda: r.llen(f"{keys.prefix}:ledger") >= 1, 20, message=lambda: w.log()[-2000:])
    assert client.enqueue("hold", {"k": "u1"}, job_id="order-7", unique=True) is None  # running
    r.delete(f"{keys.prefix}:hold:u1")
    # released in the same settle call as the ack
    wait_until(lambda: not r.exists(keys.unique("order-7")), 20, message=lambda: w.log()[-2000:])
    assert r.xpending(keys.stream("default"), "backstage-workers")["pending"] == 0
    assert client.enqueue("record", {"again": True}, job_id="order-7", unique=True) == "order-7"


def test_unique_scheduled_job_keeps_its_id_until_it_ran(client, r, keys, start_worker):
    assert client.enqueue("record", 1, job_id="s-1", unique=True, delay=0.3, result_ttl=60) == "s-1"
    assert client.enqueue("record", 1, job_id="s-1", unique=True) is None
    start_worker("-c", "1", app="apps.flows")
    wait_until(lambda: client.status("s-1") == "done", 20)
    assert not r.exists(keys.unique("s-1"))


def test_unique_job_dead_lettered_frees_its_id(client, r, keys, start_worker):
    assert client.enqueue("boom", 1, job_id="b-1", unique=True) == "b-1"
    start_worker("-c", "1", app="apps.flows")
    wait_until(lambda: r.xlen(keys.dead_letter("default")) == 1, 20)
    wait_until(lambda: not r.exists(keys.unique("b-1")), 5)
