"""Celery side: ``celery -A benchmarks.apps.celery_app worker --pool threads -c 8``.

Redis broker from ``$REDIS_URL``; no result backend (Celery's default), so a finished task
costs nothing more than its ack.
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks import body

app = Celery("bench", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.task_default_queue = "bench"


@app.task(name="record")
def record(n: int) -> None:
    body.record(n)
