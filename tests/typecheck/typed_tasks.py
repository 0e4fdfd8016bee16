"""Checked by mypy in the suite (tests/test_typing.py), never run.

A line marked with an "E:" comment must get a mypy error containing the
text after it; every other line must type-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from backstage import Backstage, Task

app = Backstage("redis://localhost:6379/0")


@dataclass
class Order:
    id: int
    customer: str


class Receipt(TypedDict):
    order_id: int


@app.task("order.process", attempts=3)
def process_order(order: Order) -> int:
    return order.id


@app.task
def send_receipt(receipt: Receipt) -> None:
    pass


@app.task("order.async")
async def process_async(order: Order) -> str:
    return order.customer


# the decorated object is a Task that keeps the handler's types
t: Task[Order, int] = process_order
job_id: str | None = process_order.enqueue(Order(1, "ada"))
process_order.enqueue(Order(1, "ada"), delay=5.0, priority="urgent", dedupe_key="order-1")
doubled: int = process_order(Order(1, "ada")) * 2
send_receipt.enqueue({"order_id": 1})
process_async.enqueue(Order(2, "bo"))

process_order.enqueue({"id": 1})  # E: Argument 1 to "enqueue" of "Task" has incompatible type
process_order.enqueue("1")  # E: Argument 1 to "enqueue" of "Task" has incompatible type "str"
process_order.enqueue(Order(1, "ada"), delay="soon")  # E: Argument "delay" to "enqueue" of "Task"
process_order.enqueue(Order(1, "ada"), colour="red")  # E: Unexpected keyword argument "colour"
send_receipt.enqueue({"order": 1})  # E: Extra key "order" for TypedDict "Receipt"
name: str = process_order(Order(1, "ada"))  # E: Incompatible types in assignment
wrong_id: int = process_order.enqueue(Order(1, "ada"))  # E: Incompatible types in assignment
