"""backstage.testing: inline and capture modes, typed payloads, drain() and the pytest fixtures.

The inline tests need no Redis; the others use the plugin's own
``backstage_redis`` / ``backstage_worker`` fixtures and the real worker.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from backstage import InvalidJobError, PayloadError
from backstage.testing import drain

from .apps import shop
from .apps.shop import Line, Order, Refund


@pytest.fixture
def app(backstage_redis: Any) -> Iterator[Any]:
    backstage_redis.connect(shop.app)
    yield shop.app


# -- inline mode ----------------------------------------------------------------------
def test_inline_runs_typed_jobs_and_follows_next_steps() -> None:
    with shop.app.testing.inline() as run:
        job_id = shop.process_order.enqueue(Order(7, "ada", [Line("a", 2), Line("b", 3)]))
    assert job_id is not None
    first, second = run.jobs
    assert (first.task, first.status, second.task, second.parent) == ("order.process", "done", "order.receipt", job_id)
    assert second.payload == {"order_id": 7, "total_qty": 5}
    assert run.results[second.id] == "receipt 7: 5 items"
    assert run.dead == []


def test_inline_decides_retries_with_the_worker_policy_without_sleeping() -> None:
    with shop.app.testing.inline() as run:
        shop.flaky.enqueue({"succeed_on": 3})
        shop.flaky.enqueue({"succeed_on": 9})
    ok, dead = run.jobs
    # Backoff.exponential(2.0): 2 s after attempt 1, 4 s after attempt 2 — recorded, never slept
    assert [a.outcome for a in ok.attempts] == ["error", "error", "ok"]
    assert [a.retry_in for a in ok.attempts] == [2.0, 4.0, None]
    assert run.results[ok.id] == 3
    assert (dead.status, dead.reason, len(dead.attempts)) == ("dead", "failed", 3)
    assert dead.attempts[-1].error_type == "RuntimeError" and "attempt 3 fails" in (dead.attempts[-1].error_message or "")
    assert run.dead == [dead]


def test_inline_reject_and_retry_requests() -> None:
    with shop.app.testing.inline() as run:
        shop.picky.enqueue({"kind": "bad"})
        shop.picky.enqueue({"kind": "slow"})
    rejected, retried = run.jobs
    assert (rejected.status, rejected.reason, [a.outcome for a in rejected.attempts]) == ("dead", "failed", ["reject"])
    assert [a.retry_in for a in retried.attempts] == [7.5, 7.5, 7.5, 7.5, None]  # Retry(delay=7.5), attempts=5
    assert retried.status == "dead"


def test_inline_handlers_that_enqueue_run_after_the_current_job() -> None:
    with shop.app.testing.inline() as run:
        shop.fanout.enqueue(2)
    assert [j.task for j in run.jobs] == ["fanout", "order.receipt", "order.receipt"]
    assert all(j.status == "done" for j in run.jobs)


def test_inline_payloads_round_trip_through_json() -> None:
    with shop.app.testing.inline() as run:
        with pytest.raises(PayloadError, match="cannot be serialized to JSON"):
            shop.app.enqueue("fanout", {1, 2})
        assert shop.app.enqueue("no.such.task", {"x": 1}) is not None
        assert shop.app.enqueue("order.receipt", {"order_id": 1, "total_qty": 1}, dedupe_key="k") is not None
        assert shop.app.enqueue("order.receipt", {"order_id": 1, "total_qty": 1}, dedupe_key="k") is None
    unknown = run.jobs[0]
    assert (unknown.status, unknown.reason) == ("dead", "unknown-task")


def test_capture_records_without_running(app: Any, backstage_redis: Any) -> None:
    with app.testing.capture() as cap:
        shop.fanout.enqueue(3, priority="urgent", delay=5)
        app.enqueue("order.refund", {"order_id": 1, "amount": "2.5"})
    assert cap.tasks() == ["fanout", "order.refund"]
    assert cap.jobs[0].payload == 3 and cap.jobs[0].options == {"priority": "urgent", "delay": 5}
    assert cap.jobs[1].payload == {"order_id": 1, "amount": 2.5}  # pydantic coerced, then JSON
    assert backstage_redis.client().dbsize() == 0  # nothing ran, nothing was sent


def test_inline_blocks_do_not_nest() -> None:
    with shop.app.testing.inline():
        with pytest.raises(RuntimeError, match="already active"):
            with shop.app.testing.capture():
                pass


# -- typed payloads: checked at enqueue, before anything is written --------------------
@pytest.mark.parametrize("task, payload, field", [
    ("order.process", {"id": "seven", "customer": "ada"}, "'id': expected int, got str"),
    ("order.process", {"id": 7}, "'customer': missing"),
    ("order.process", {"id": 7, "customer": "ada", "lines": [{"sku": "a", "qty": 1.5}]}, "'lines[0].qty'"),
    ("order.process", {"id": 7, "customer": "ada", "colour": "red"}, "'colour': unknown field of Order"),
    ("order.receipt", {"order_id": 1}, "'total_qty': missing"),
    ("order.refund", {"order_id": 1, "amount": "lots"}, "'amount'"),
    ("order.refund", "not a refund", "payload"),
])
def test_typed_payload_errors_name_the_field(app: Any, backstage_redis: Any, task: str, payload: Any,
                                             field: str) -> None:
    with pytest.raises(InvalidJobError, match=field.replace("[", r"\[").replace("]", r"\]")):
        app.enqueue(task, payload)
    with pytest.raises(InvalidJobError):
        app.enqueue_many([(task, payload)])
    assert backstage_redis.client().dbsize() == 0


def test_typed_payload_accepts_instances_and_dicts() -> None:
    codec = shop.process_order.codec
    assert codec is not None and shop.flaky.codec is None  # plain annotations pay nothing
    wire = codec.check(Order(1, "bo", [Line("x", 1)]))
    assert wire == {"id": 1, "customer": "bo", "lines": [{"sku": "x", "qty": 1}], "note": None}
    rebuilt = codec.build(wire)
    assert rebuilt == Order(1, "bo", [Line("x", 1)])
    assert shop.refund.codec is not None and shop.refund.codec.build({"order_id": 2, "amount": 1.0}) == Refund(
        order_id=2, amount=1.0)


# -- the real worker ---------------------------------------------------------------------
def test_drain_runs_typed_jobs_in_the_real_worker(app: Any, backstage_redis: Any) -> None:
    order_id = shop.process_order.enqueue(Order(3, "cy", [Line("a", 4)]))
    refund_id = shop.refund.enqueue(Refund(order_id=3, amount=9.5))
    flaky_id = shop.flaky.enqueue({"succeed_on": 2}, backoff=0.0)
    shop.picky.enqueue({"kind": "bad"})
    result = drain(app, backstage_redis.url, concurrency=2, timeout=60)
    assert result.processed == {"order.process": 1, "order.receipt": 1, "order.refund": 1, "flaky": 1}
    assert result.retried.get("flaky") == 1 and result.dead.get("picky") == 1
    assert [d["reason"] for d in result.dead_letters] == ["failed"]
    client = app.client
    assert client.result(order_id, timeout=5) is None  # returned a Next: the receipt job carries on
    assert client.result(refund_id, timeout=5) == {"type": "Refund", "order_id": 3, "amount": 9.5}
    assert client.result(flaky_id, timeout=5) == 2


def test_backstage_worker_fixture(app: Any, backstage_worker: Any) -> None:
    worker = backstage_worker(app, concurrency=1)
    ids = [shop.send_receipt.enqueue({"order_id": i, "total_qty": i}) for i in range(3)]
    result = worker.drain(timeout=60)
    assert result.processed == {"order.receipt": 3}
    assert [app.client.result(i, timeout=5) for i in ids] == [f"receipt {i}: {i} items" for i in range(3)]
    assert worker.stop() == 0


def test_redis_process_on_a_unix_socket(tmp_path: Any) -> None:
    from backstage import Client
    from backstage.testing import RedisProcess

    server = RedisProcess(tmp_path / "r", unix=True).start()
    try:
        assert server.url.startswith("unix://")
        with Client(server.url, prefix="u") as c:
            c.enqueue("t", {"x": 1})
        assert server.client().xlen("u:default") == 1
        server.flush()
        assert server.client().dbsize() == 0
    finally:
        server.stop()


def test_lists_and_optionals_of_typed_payloads() -> None:
    from backstage import Backstage

    app = Backstage()

    @app.task("batch")
    def batch(orders: list[Order]) -> int:
        assert all(isinstance(o, Order) for o in orders)
        return len(orders)

    @app.task("maybe")
    def maybe(order: Order | None) -> bool:
        return isinstance(order, Order)

    with pytest.raises(InvalidJobError, match=r"payload field '\[1\]\.customer': missing"):
        batch.enqueue([Order(1, "a"), {"id": 2}])  # type: ignore[list-item]
    with app.testing.inline() as run:
        batch.enqueue([Order(1, "a"), Order(2, "b")])
        maybe.enqueue(None)
        maybe.enqueue(Order(3, "c"))
    assert list(run.results.values()) == [2, False, True]


def test_inline_records_delays_without_waiting() -> None:
    import datetime as dt

    with shop.app.testing.inline() as run:
        shop.send_receipt.enqueue({"order_id": 1, "total_qty": 1}, delay=30)
        shop.send_receipt.enqueue({"order_id": 2, "total_qty": 1},
                                  at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    assert run.jobs[0].delay == 30 and 3500 < run.jobs[1].delay <= 3600
    assert all(j.status == "done" for j in run.jobs)
