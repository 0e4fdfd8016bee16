"""The README's workflow example producer: run it with studio.py's worker running."""

from backstage import JobFailed
from studio import app

client = app.client

# a chord from the producer: members and state written in one atomic call
chord = client.enqueue_chord([("image.resize", {"id": i, "px": 800}) for i in range(3)],
                             callback=("report.merge", {"title": "summer"}))
assert client.result(chord, timeout=30) == {"title": "summer", "images": 3, "failed": 0}   # chord id = callback's job id
assert client.group_status(chord)["done"] == 3   # {"id", "state", "total", "done", "failed", "pending"}

gid = client.enqueue_group([("image.resize", {"id": i, "px": 64}) for i in range(5)])   # no callback

# progress: client.status(job, detail=True) while it runs (and after)
job = client.enqueue("video.encode", {"id": 9})
assert client.result(job, timeout=30) == "encoded"
st = client.status(job, detail=True)
assert (st.status, st.progress, st.progress_message) == ("done", 1.0, "frame 100")

# producer-chosen ids; unique=True refuses a second job while the first is queued or running
assert client.enqueue("video.encode", {"id": 42}, job_id="order-42", unique=True, delay=60) == "order-42"
assert client.enqueue("video.encode", {"id": 42}, job_id="order-42", unique=True) is None

# cancel: a queued or scheduled job never starts, a running one has its child killed
assert client.cancel("order-42")["status"] == "scheduled"
job = client.enqueue("cpu.crunch", {})
client.cancel(job)   # wherever it is by now: queued, or running (its child is killed)
try:
    client.result(job, timeout=10)
except JobFailed as exc:
    assert exc.reason == "cancelled"
