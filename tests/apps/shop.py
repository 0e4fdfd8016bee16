"""A typed app for the testing-mode, typed-task and real-worker tests.

Payloads are a dataclass, a TypedDict and a pydantic model; each handler
checks that it got its own type back (rebuilt in the child) and returns
something the test reads through ``result()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypedDict

import pydantic

from backstage import Backoff, Backstage, Next, Reject, Retry
from backstage.prefork.child import current_job

app = Backstage(os.environ.get("BACKSTAGE_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix="shop")


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    id: int
    customer: str
    lines: list[Line] = field(default_factory=list)
    note: str | None = None


class Receipt(TypedDict):
    order_id: int
    total_qty: int


class Refund(pydantic.BaseModel):
    order_id: int
    amount: float


@app.task("order.process", result_ttl=60)
def process_order(order: Order) -> Next:
    if not isinstance(order, Order) or not all(isinstance(x, Line) for x in order.lines):
        raise TypeError(f"expected an Order of Lines, got {order!r}")
    receipt: Receipt = {"order_id": order.id, "total_qty": sum(x.qty for x in order.lines)}
    return Next("order.receipt", payload=receipt)


@app.task("order.receipt", result_ttl=60)
def send_receipt(receipt: Receipt) -> str:
    if not isinstance(receipt, dict) or set(receipt) != {"order_id", "total_qty"}:
        raise TypeError(f"expected a Receipt, got {receipt!r}")
    return f"receipt {receipt['order_id']}: {receipt['total_qty']} items"


@app.task("order.refund", result_ttl=60)
def refund(r: Refund) -> dict[str, object]:
    if not isinstance(r, Refund):
        raise TypeError(f"expected a Refund, got {r!r}")
    return {"type": type(r).__name__, "order_id": r.order_id, "amount": r.amount}


@app.task("flaky", attempts=3, backoff=Backoff.exponential(2.0), result_ttl=60)
def flaky(p: dict[str, int]) -> int:
    job = current_job()
    attempt = job.attempt if job else 1
    if attempt < p["succeed_on"]:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@app.task("picky", attempts=5)
def picky(p: dict[str, str]) -> None:
    if p.get("kind") == "bad":
        raise Reject("bad kind")
    raise Retry(delay=7.5)


@app.task("fanout")
def fanout(n: int) -> None:
    for i in range(n):
        app.enqueue("order.receipt", {"order_id": i, "total_qty": i})
