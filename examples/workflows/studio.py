"""The README's workflow example app (run: backstage-prefork studio, from this folder)."""

from backstage import Backstage, Chord, current_job

app = Backstage()   # $BACKSTAGE_REDIS_URL


@app.task("image.resize")
def resize(p):
    return {"id": p["id"], "px": p["px"] // 2}


@app.task("report.merge", result_ttl=3600)
def merge(p):
    # p == {"chord": <id>, "payload": <the callback's payload>,
    #       "results": [<each member's return value, in order; None if it failed>],
    #       "failures": [{"index", "reason", "errorType", "errorMessage"}, ...]}
    return {"title": p["payload"]["title"], "images": len(p["results"]), "failed": len(p["failures"])}


@app.task("album.publish")
def publish(p):   # a step that fans out: the chord is written with this job's ack
    return Chord([("image.resize", {"id": i, "px": 800}) for i in p["ids"]],
                 callback=("report.merge", {"title": p["title"]}))


@app.task("video.encode", result_ttl=3600)
def encode(p):
    job = current_job()   # job_id, task, attempt, queue, deadline (epoch s, or None)
    for frame in range(1, 101):
        ...               # a slice of the work
        job.progress(frame / 100, f"frame {frame}")   # cheap in a tight loop (coalesced)
    return "encoded"


@app.task("cpu.crunch", result_ttl=3600)
def crunch(p):
    while True:   # only a cancel (or a time limit) stops this one
        pass
