"""Cancellation: the ``P:cancel:<id>`` and ``P:cancels`` families (ours).

A cancel is written by ``cancel.lua`` (producers: :meth:`Client.cancel`):
``P:cancel:<id>`` (a string with the cancel's TTL) and the id in the sorted
set ``P:cancels`` (score: expiry ms). Masters read ``P:cancels`` on their
housekeeping tick (:meth:`MasterBroker.cancelled_ids`, one ZRANGEBYSCORE)
and carry the cancel out: a fetched job never starts, a running one has its
child killed; ``promote.lua`` drops a cancelled scheduled member. Carrying
it out removes both keys in the same Lua call as the job's ack
(``settle.lua`` op ``n``), so an id reused later is not cancelled again.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidJobError
from .protocol.keys import Keys
from .protocol.wire import now_ms

__all__ = ["DEFAULT_TTL", "cancel_args", "answer"]

#: Seconds a cancel waits in Redis to be carried out (a worker may be down meanwhile).
DEFAULT_TTL = 86400.0


def cancel_args(keys: Keys, job_id: str, ttl_ms: int) -> tuple[list[Any], list[Any]]:
    """(KEYS, ARGV) of cancel.lua for ``job_id`` (a job, group or chord)."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJobError(f"cancel: job_id={job_id!r}: expected a non-empty string")
    return ([keys.cancel(job_id), keys.cancels, keys.result(job_id), keys.chord(job_id)],
            [now_ms(), ttl_ms, job_id, keys.cancel(""), keys.result("")])


def answer(reply: Any) -> dict[str, Any]:
    """``{"status": <status before or None>, "members": <chord members cancelled>}`` from cancel.lua's reply."""
    before, members = reply
    st = before.decode() if isinstance(before, bytes) else before
    return {"status": st or None, "members": int(members)}
