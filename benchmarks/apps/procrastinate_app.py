"""procrastinate side: ``procrastinate --app benchmarks.apps.procrastinate_app.app worker``.

A sync task (run by procrastinate in a thread, as a sync web stack's task would be) with
the shared body. The DSN is ``$PROCRASTINATE_BENCH_DSN``.
"""

from __future__ import annotations

import os

import procrastinate

from benchmarks import body

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("PROCRASTINATE_BENCH_DSN", "")),
)


@app.task(name="record")
def record(n: int) -> None:
    body.record(n)
