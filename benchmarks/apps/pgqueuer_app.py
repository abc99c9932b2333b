"""pgqueuer side: ``python -m benchmarks.apps.pgqueuer_app``.

An async entrypoint (pgqueuer's native kind: it runs on the event loop, no thread hop) with
the shared body. The DSN is ``$PGQUEUER_BENCH_DSN``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from pgqueuer import Job, PgQueuer, PsycopgDriver

from benchmarks import body


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    conn = await psycopg.AsyncConnection.connect(os.environ["PGQUEUER_BENCH_DSN"],
                                                 autocommit=True)
    pgq = PgQueuer(PsycopgDriver(conn))

    @pgq.entrypoint("record")
    async def record(job: Job) -> None:
        body.record(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await conn.close()


if __name__ == "__main__":
    # ``pgq run`` of this pgqueuer release fails in its log set-up with the installed
    # typer; ``pgqueuer.run`` is the documented programmatic twin with the same defaults.
    import asyncio

    import pgqueuer

    asyncio.run(pgqueuer.run(create_pgqueuer))
