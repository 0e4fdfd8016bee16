"""current_job() and progress reports, through the real worker."""

from __future__ import annotations

import pytest

from backstage import InvalidJobError, JobContext, current_job
from backstage.context import ProgressReporter

from .helpers import wait_until


def test_progress_visible_while_running_and_coalesced(client, r, keys, start_worker):
    r.set(f"{keys.prefix}:hold:p1", 1)
    job = client.enqueue("steps", {"k": "p1"}, job_id="resize-1", timeout=60)
    w = start_worker("-c", "1", app="apps.flows")
    # 1,000 reports in a tight loop: the first leaves at once, the last is held and
    # flushed when the job ends; the status shows one while the job still runs
    st = wait_until(lambda: (s := client.status(job, detail=True)) and s.progress is not None and s, 20,
                    message=lambda: w.log()[-2000:])
    assert st.status == "running" and st.progress == pytest.approx(0.001) and st.progress_message == "step 1"
    [start] = [e for e in map(__import__("orjson").loads, r.lrange(f"{keys.prefix}:ledger", 0, -1))
               if e["kind"] == "steps-start"]
    assert start["task"] == "steps" and start["queue"] == "default" and start["attempt"] == 1
    assert start["deadline"] is not None and start["deadline"] > start["t"] + 50
    r.delete(f"{keys.prefix}:hold:p1")
    assert client.result(job, timeout=20) == "finished"
    final = client.status(job, detail=True)
    assert final is not None and final.status == "done"
    assert final.progress == 1.0 and final.progress_message == "step 1000"  # flushed at the end


def test_reporter_coalesces_last_value_wins() -> None:
    sent: list[tuple[float, str | None]] = []
    now = [0.0]
    rep = ProgressReporter(lambda f, m: sent.append((f, m)), interval=0.5, clock=lambda: now[0])
    for i in range(100):
        rep.report(i / 100, f"s{i}")
    assert sent == [(0.0, "s0")]
    now[0] = 0.6
    rep.report(0.5, "half")
    rep.report(0.6, "more")
    rep.flush()
    assert sent == [(0.0, "s0"), (0.5, "half"), (0.6, "more")]
    rep.flush()
    assert len(sent) == 3


@pytest.mark.parametrize("args, words", [((1.5,), "from 0 to 1"), ((True,), "fraction=True"),
                                          ((0.5, 3), "message=3")])
def test_progress_checks_its_arguments(args, words) -> None:
    ctx = JobContext("j", "t", 1, 0)
    with pytest.raises(InvalidJobError) as info:
        ctx.progress(*args)
    assert words in str(info.value)


def test_current_job_outside_a_handler_is_none() -> None:
    assert current_job() is None
